"""`formula_to_onnx`: closed-form formulas (sympy trees) as an ONNX graph.

The graph computes in float64 (a formula is a handful of scalar ops per row, so
precision is free: a result that is a small difference of large terms keeps its
relative precision) and returns float32 like the spline graph. onnxruntime has
no float64 kernels for tan, the hyperbolic functions and their inverses, atan,
asin, acos and erf: the first ones are written with float64 exp/log/sin/cos,
the inverse trigonometric functions take the float32 kernel's value and one
float64 Newton step (float32 error squared: ~1e-14), and erf stays float32
(relative error ~1e-7).
"""

from __future__ import annotations

import numpy as np
import sympy
from onnx import TensorProto

from kanmodel.export.metadata import column_names, model_props
from kanmodel.export.onnx_builder import GraphBuilder, batch_tensor
from kanmodel.export.spline_graph import INPUT, OUTPUT, PROBABILITIES


class FormulaExportError(ValueError):
    """A formula holds something that has no ONNX translation."""


# sympy function -> ONNX op with a float64 kernel in onnxruntime
_UNARY = {
    sympy.exp: "Exp", sympy.log: "Log", sympy.sin: "Sin", sympy.cos: "Cos", sympy.tanh: "Tanh",
    sympy.Abs: "Abs", sympy.sign: "Sign", sympy.floor: "Floor", sympy.ceiling: "Ceil",
}
# functions written with other float64 ops (see _Translator._composite)
_COMPOSITE = (sympy.tan, sympy.sinh, sympy.cosh, sympy.asinh, sympy.acosh, sympy.atanh,
              sympy.atan, sympy.asin, sympy.acos, sympy.erf)
_VARIADIC = {sympy.Min: "Min", sympy.Max: "Max"}


def supported_functions() -> list[str]:
    functions = [*_UNARY, *_COMPOSITE, *_VARIADIC]
    return sorted([f.__name__ for f in functions] + ["sqrt", "Pow"])


def formula_to_onnx(formulas, variables=None, name: str = "formula", version=1,
                    output_names=None, task: str = "regression") -> bytes:
    """Formulas -> ONNX bytes with input "input" (batch, n_vars) and output
    "output" (batch, n_formulas), one column per formula (for classification the
    formulas are logits and "probabilities" is their softmax).

    formulas: one or a list of sympy expressions or objects with `.expr`
    (kanmodel.symbolic.Formula). variables: the input columns in order, as names
    or sympy symbols; defaults to the first formula's `.variables`, else the free
    symbols sorted by name.
    """
    items = formulas if isinstance(formulas, (list, tuple)) else [formulas]
    if not items:
        raise FormulaExportError("formulas: at least one formula is required")
    exprs = [_as_expr(item, index) for index, item in enumerate(items)]
    names = _variable_names(items, exprs, variables)
    output_names = column_names(output_names, len(exprs), "y", "output_names")

    g = GraphBuilder()
    translator = _Translator(g, names)
    columns = [translator.column(expr, index) for index, expr in enumerate(exprs)]
    stacked = columns[0] if len(columns) == 1 else g.op("Concat", columns, "stacked", axis=1)
    g.op("Cast", [stacked], output=OUTPUT, to=TensorProto.FLOAT)
    outputs = [batch_tensor(OUTPUT, len(exprs))]
    if task == "classification":
        g.op("Softmax", [OUTPUT], output=PROBABILITIES, axis=-1)
        outputs.append(batch_tensor(PROBABILITIES, len(exprs)))
    props = model_props(name=name, version=version, task=task, kind="formula", input_names=names,
                        output_names=output_names,
                        extra={"formulas": "; ".join(str(e) for e in exprs)})
    return g.model(str(name), [batch_tensor(INPUT, len(names))], outputs, props,
                   doc="closed-form formulas exported by kanserve").SerializeToString()


def _as_expr(item, index: int) -> sympy.Expr:
    expr = getattr(item, "expr", item)
    try:
        expr = sympy.sympify(expr)
    except (sympy.SympifyError, TypeError) as error:
        raise FormulaExportError(f"formula {index}: not a sympy expression ({error})") from error
    if not isinstance(expr, sympy.Expr):
        raise FormulaExportError(f"formula {index}: {expr!r} is not an expression")
    return expr


def _variable_names(items, exprs, variables) -> list[str]:
    if variables is None:
        variables = getattr(items[0], "variables", None)
    if variables is None:
        free = set().union(*(e.free_symbols for e in exprs))
        variables = sorted(free, key=lambda s: s.name)
    names = [str(v) for v in variables]
    if len(set(names)) != len(names):
        raise FormulaExportError(f"variables: names must be distinct, got {names}")
    for index, expr in enumerate(exprs):
        unknown = sorted(s.name for s in expr.free_symbols if s.name not in names)
        if unknown:
            raise FormulaExportError(f"formula {index}: symbols {unknown} are not among the variables {names}")
    if not names:
        raise FormulaExportError("variables: a formula graph needs at least one input column")
    return names


class _Translator:
    """sympy tree -> nodes producing float64 (batch, 1) or scalar tensors."""

    def __init__(self, g: GraphBuilder, names: list[str]) -> None:
        self.g = g
        self.index = {n: i for i, n in enumerate(names)}
        self.x = g.op("Cast", [INPUT], "x64", to=TensorProto.DOUBLE)
        self.cache: dict[sympy.Expr, str] = {}
        self.formula = 0

    def column(self, expr: sympy.Expr, formula: int) -> str:
        """A (batch, 1) float64 column evaluating expr."""
        self.formula = formula
        out = self.node(expr)
        if not expr.free_symbols:  # a constant still needs one value per row
            zeros = self.g.op("Mul", [self.node(sympy.Symbol(next(iter(self.index)))), self.const(0.0)])
            out = self.g.op("Add", [zeros, out], "constant_column")
        return out

    def const(self, value: float) -> str:
        return self.g.const(np.float64(value), "k", np.float64)

    def fail(self, what: str) -> FormulaExportError:
        return FormulaExportError(f"formula {self.formula}: {what} has no ONNX export "
                                  f"(supported: {', '.join(supported_functions())}, numbers, pi, E)")

    def node(self, expr: sympy.Expr) -> str:
        if expr not in self.cache:
            self.cache[expr] = self._build(expr)
        return self.cache[expr]

    def _build(self, expr: sympy.Expr) -> str:
        g = self.g
        if expr.is_Symbol:
            return g.op("Gather", [self.x, g.const([self.index[expr.name]], "column", np.int64)],
                        "var", axis=1)
        if expr.is_number:
            value = complex(expr.evalf(30))
            if value.imag != 0 or not np.isfinite(value.real):
                raise self.fail(f"the number {expr}")
            return self.const(value.real)
        if expr.is_Add:
            return self._fold("Add", [self.node(a) for a in expr.args])
        if expr.is_Mul:
            return self._product(expr)
        if expr.is_Pow:
            return self._power(expr.base, expr.exp)
        func = type(expr)
        if func in _UNARY and len(expr.args) == 1:
            return g.op(_UNARY[func], [self.node(expr.args[0])])
        if func in _COMPOSITE and len(expr.args) == 1:
            return self._composite(func, self.node(expr.args[0]))
        if func in _VARIADIC:
            return g.op(_VARIADIC[func], [self.node(a) for a in expr.args])
        raise self.fail(f"{func.__name__}")

    def _composite(self, func, x: str) -> str:
        g, c = self.g, self.const
        if func is sympy.tan:
            return g.op("Div", [g.op("Sin", [x]), g.op("Cos", [x])])
        if func in (sympy.sinh, sympy.cosh):
            up, down = g.op("Exp", [x]), g.op("Exp", [g.op("Neg", [x])])
            both = g.op("Sub" if func is sympy.sinh else "Add", [up, down])
            return g.op("Mul", [both, c(0.5)])
        if func is sympy.asinh:  # sign(x) log(|x| + sqrt(x^2 + 1)): no cancellation for x < 0
            size = g.op("Abs", [x])
            root = g.op("Sqrt", [g.op("Add", [g.op("Mul", [size, size]), c(1.0)])])
            return g.op("Mul", [g.op("Sign", [x]), g.op("Log", [g.op("Add", [size, root])])])
        if func is sympy.acosh:  # NaN below 1, like numpy
            root = g.op("Sqrt", [g.op("Sub", [g.op("Mul", [x, x]), c(1.0)])])
            return g.op("Log", [g.op("Add", [x, root])])
        if func is sympy.atanh:
            ratio = g.op("Div", [g.op("Add", [c(1.0), x]), g.op("Sub", [c(1.0), x])])
            return g.op("Mul", [g.op("Log", [ratio]), c(0.5)])
        if func is sympy.erf:
            return self._float32_kernel("Erf", x)
        return self._newton_inverse(func, x)

    def _float32_kernel(self, op: str, x: str) -> str:
        as32 = self.g.op("Cast", [x], to=TensorProto.FLOAT)
        return self.g.op("Cast", [self.g.op(op, [as32])], to=TensorProto.DOUBLE)

    def _newton_inverse(self, func, x: str) -> str:
        """atan/asin/acos: float32 kernel, then one float64 Newton step on the
        forward function. Where the step would divide by ~0 (asin, acos at +-1)
        the float32 value is kept: there the function is flat in relative terms."""
        g, c = self.g, self.const
        op = {sympy.atan: "Atan", sympy.asin: "Asin", sympy.acos: "Acos"}[func]
        y = self._float32_kernel(op, x)
        sin, cos = g.op("Sin", [y]), g.op("Cos", [y])
        if func is sympy.atan:  # f(y) = tan y - x: y -= (sin y cos y - x cos^2 y)
            residual = g.op("Sub", [g.op("Mul", [sin, cos]), g.op("Mul", [x, g.op("Mul", [cos, cos])])])
            return g.op("Sub", [y, residual])
        if func is sympy.asin:  # f(y) = sin y - x, f' = cos y
            slope, residual = cos, g.op("Sub", [sin, x])
        else:                    # f(y) = cos y - x, f' = -sin y
            slope, residual = g.op("Neg", [sin]), g.op("Sub", [cos, x])
        steep = g.op("Greater", [g.op("Abs", [slope]), c(1e-4)])
        safe_slope = g.op("Where", [steep, slope, c(1.0)])
        stepped = g.op("Sub", [y, g.op("Div", [residual, safe_slope])])
        return g.op("Where", [steep, stepped, y])

    def _fold(self, op: str, terms: list[str]) -> str:
        out = terms[0]
        for term in terms[1:]:
            out = self.g.op(op, [out, term])
        return out

    def _product(self, expr: sympy.Expr) -> str:
        """Factors with negative exponents go to one denominator: a*b/(c*d)."""
        numerator, denominator = [], []
        for factor in expr.args:
            if factor.is_Pow and factor.exp.is_number and factor.exp.is_negative:
                inverted = factor.base ** (-factor.exp)
                denominator.append(self.node(inverted))
            else:
                numerator.append(self.node(factor))
        top = self._fold("Mul", numerator) if numerator else self.const(1.0)
        if not denominator:
            return top
        return self.g.op("Div", [top, self._fold("Mul", denominator)])

    def _power(self, base: sympy.Expr, exponent: sympy.Expr) -> str:
        g = self.g
        if base == sympy.E:
            return g.op("Exp", [self.node(exponent)])
        if exponent.is_number and exponent.is_negative:
            return g.op("Div", [self.const(1.0), self._power(base, -exponent)])
        b = self.node(base)
        if exponent == sympy.Rational(1, 2):
            return g.op("Sqrt", [b])
        if exponent == 2:
            return g.op("Mul", [b, b])
        return g.op("Pow", [b, self.node(exponent)])
