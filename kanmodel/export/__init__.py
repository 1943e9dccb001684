"""ONNX export of trained KANs (spline network graphs) and of their formulas."""

from kanmodel.export.formula_graph import FormulaExportError, formula_to_onnx
from kanmodel.export.spline_graph import to_onnx

__all__ = ["to_onnx", "formula_to_onnx", "FormulaExportError"]
