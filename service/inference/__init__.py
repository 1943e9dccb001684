"""Inference in the gateway: onnxruntime over stored ONNX bytes (never torch or kanmodel)."""

from service.inference.onnx_predictor import (
    ModelLoadError,
    OnnxPredictor,
    PredictorError,
    PredictorInputError,
)

__all__ = ["OnnxPredictor", "PredictorError", "PredictorInputError", "ModelLoadError"]
