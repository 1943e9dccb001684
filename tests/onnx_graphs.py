"""Tiny ONNX graphs built with onnx.helper for the serving tests (no torch needed)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def affine_model(weight: np.ndarray, bias: np.ndarray, input_name: str = "x",
                 output_name: str = "y", metadata: dict[str, str] | None = None) -> bytes:
    """y = x @ weight + bias; x: (batch, n_in) float32 -> y: (batch, n_out);
    `metadata`: ONNX metadata props (as the exporter writes them)."""
    n_in, n_out = weight.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", [input_name, "W"], ["xw"]),
         helper.make_node("Add", ["xw", "b"], [output_name])],
        "affine",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", n_out])],
        initializer=[numpy_helper.from_array(weight.astype(np.float32), "W"),
                     numpy_helper.from_array(bias.astype(np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    return model.SerializeToString()
