"""A small whitelisted expression language for the formula data generator.

Grammar: numbers, variable names, ``+ - * / **``, unary minus/plus, parentheses,
the constants ``pi`` and ``e``, and calls of the named functions in ``FUNCTIONS``.
Python's ``ast`` only tokenises and parses; every node is checked against the
whitelist and the tree is evaluated by this module with numpy. Nothing the user
wrote ever reaches ``eval``, ``exec`` or ``sympify``.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass

import numpy as np

MAX_LENGTH = 1_000
# Checking and evaluating recurse once per level: stay far below Python's recursion limit.
MAX_DEPTH = 200

FUNCTIONS: dict[str, tuple[np.ufunc | object, int]] = {
    "sin": (np.sin, 1), "cos": (np.cos, 1), "tan": (np.tan, 1),
    "arcsin": (np.arcsin, 1), "arccos": (np.arccos, 1), "arctan": (np.arctan, 1),
    "sinh": (np.sinh, 1), "cosh": (np.cosh, 1), "tanh": (np.tanh, 1),
    "arctanh": (np.arctanh, 1), "exp": (np.exp, 1), "log": (np.log, 1),
    "sqrt": (np.sqrt, 1), "abs": (np.abs, 1), "sign": (np.sign, 1),
    "min": (np.minimum, 2), "max": (np.maximum, 2),
}
CONSTANTS = {"pi": np.pi, "e": np.e}
_BINARY = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply,
           ast.Div: np.divide, ast.Pow: np.power}
_UNARY = {ast.USub: np.negative, ast.UAdd: np.positive}


class FormulaError(ValueError):
    """The text is not in the grammar; the message says what and where."""


@dataclass(frozen=True)
class ParsedFormula:
    text: str
    tree: ast.expr
    variables: frozenset[str]

    def evaluate(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """Evaluate on named columns, each (n,), returning (n,) float64."""
        n = len(next(iter(columns.values()))) if columns else 1
        with np.errstate(all="ignore"):  # callers check finiteness and name the culprit
            value = _evaluate(self.tree, columns)
        return np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)).copy()


def parse_formula(text: str) -> ParsedFormula:
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("formula is empty")
    if len(text) > MAX_LENGTH:
        raise FormulaError(f"formula is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise FormulaError(f"formula is not a valid expression: {exc.msg} at column {exc.offset}") from None
    except (RecursionError, MemoryError, ValueError):
        raise FormulaError("formula is nested too deeply") from None
    variables: set[str] = set()
    _check(tree.body, variables, depth=0)
    return ParsedFormula(text=text, tree=tree.body, variables=frozenset(variables))


def _describe(node: ast.AST) -> str:
    segment = f" at column {node.col_offset + 1}" if hasattr(node, "col_offset") else ""
    return f"{type(node).__name__}{segment}"


def _check(node: ast.AST, variables: set[str], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise FormulaError("formula is nested too deeply")
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise FormulaError(f"only numbers are allowed as constants, got {node.value!r}")
        return
    if isinstance(node, ast.Name):
        if node.id in FUNCTIONS:
            raise FormulaError(f"function '{node.id}' must be called, e.g. {node.id}(x0)")
        if node.id.startswith("_"):
            raise FormulaError(f"name '{node.id}' is not allowed (names may not start with '_')")
        if node.id not in CONSTANTS:
            variables.add(node.id)
        return
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        _check(node.left, variables, depth + 1)
        _check(node.right, variables, depth + 1)
        return
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        _check(node.operand, variables, depth + 1)
        return
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            allowed = ", ".join(sorted(FUNCTIONS))
            raise FormulaError(f"function '{name}' is not allowed; allowed functions: {allowed}")
        if node.keywords:
            raise FormulaError(f"function '{node.func.id}' takes no keyword arguments")
        arity = FUNCTIONS[node.func.id][1]
        if len(node.args) != arity:
            raise FormulaError(f"function '{node.func.id}' takes {arity} argument(s), got {len(node.args)}")
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise FormulaError("starred arguments are not allowed")
            _check(arg, variables, depth + 1)
        return
    if isinstance(node, ast.BinOp):
        raise FormulaError(f"operator {type(node.op).__name__} is not allowed; use + - * / **")
    raise FormulaError(f"{_describe(node)} is not allowed in a formula")


def _evaluate(node: ast.expr, columns: dict[str, np.ndarray]):
    if isinstance(node, ast.Constant):
        return np.float64(node.value)  # never Python ints: 9**9**9 must not become a bignum
    if isinstance(node, ast.Name):
        if node.id in columns:
            return columns[node.id]
        return np.float64(CONSTANTS[node.id])
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_evaluate(node.left, columns), _evaluate(node.right, columns))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_evaluate(node.operand, columns))
    function = FUNCTIONS[node.func.id][0]
    return function(*(_evaluate(arg, columns) for arg in node.args))
