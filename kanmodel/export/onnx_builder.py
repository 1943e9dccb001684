"""A small accumulator of ONNX nodes and initialisers with unique names.

Both exporters (spline and formula graphs) build their graphs through it so that
node and tensor names never collide and constants are stored once.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
# IR 8 is what opset 17 was released with: the oldest onnxruntime that runs opset 17
# also loads it.
IR_VERSION = 8


class GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._counts: dict[str, int] = {}

    def fresh(self, stem: str) -> str:
        count = self._counts.get(stem, 0)
        self._counts[stem] = count + 1
        return f"{stem}_{count}"

    def const(self, value, stem: str = "c", dtype=np.float32) -> str:
        """Store `value` as an initialiser of `dtype`; returns its name."""
        name = self.fresh(stem)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], stem: str | None = None,
           output: str | None = None, **attributes) -> str:
        """Append one node with a single output; returns the output's name."""
        out = output or self.fresh(stem or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.fresh("n_" + op_type), **attributes))
        return out

    def model(self, graph_name: str, inputs: list[onnx.ValueInfoProto],
              outputs: list[onnx.ValueInfoProto], metadata: dict[str, str],
              doc: str = "") -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, graph_name, inputs, outputs, self.initializers, doc_string=doc)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="kanserve", ir_version=IR_VERSION)
        helper.set_model_props(model, metadata)
        onnx.checker.check_model(model, full_check=True)
        return model


def batch_tensor(name: str, width: int, elem_type=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    """A (batch, width) value info with a dynamic batch axis."""
    return helper.make_tensor_value_info(name, elem_type, ["batch", width])
