"""The formula generator's grammar: what it accepts, computes, and refuses (without eval)."""
from __future__ import annotations

import builtins

import numpy as np
import pytest

from service.datasets.formula_data import DataError, generate
from service.formula_grammar import FormulaError, parse_formula
from service.schemas.jobspec import FormulaSource


def test_evaluates_with_numpy_like_the_math():
    x0, x1 = np.linspace(-1, 1, 7), np.linspace(0.5, 2, 7)
    cases = {
        "exp(sin(pi*x0) + x1**2)": np.exp(np.sin(np.pi * x0) + x1 ** 2),
        "-x0 / (1 + x1) - 2.5e-1": -x0 / (1 + x1) - 0.25,
        "max(x0, 0) * sqrt(abs(x1)) + min(x0, x1)": np.maximum(x0, 0) * np.sqrt(np.abs(x1)) + np.minimum(x0, x1),
        "log(x1) + tanh(x0) + e": np.log(x1) + np.tanh(x0) + np.e,
        "3": np.full(7, 3.0),
        "+".join(["x0"] * 150): 150 * x0,  # long sums are fine
    }
    for text, expected in cases.items():
        np.testing.assert_allclose(parse_formula(text).evaluate({"x0": x0, "x1": x1}), expected, rtol=1e-12)
    assert parse_formula("exp(sin(pi*x0) + x1**2)").variables == {"x0", "x1"}


REJECTED = [
    ("__import__('os').system('ls')", "not allowed"),
    ("x0.__class__", "Attribute"),
    ("open('/etc/passwd')", "'open' is not allowed"),
    ("(lambda: 1)()", "not allowed"),
    ("[x0 for x0 in range(9)]", "ListComp"),
    ("x0 if x1 else 2", "IfExp"),
    ("x0 % 2", "Mod"),
    ("x0 < 1", "Compare"),
    ("'text'", "only numbers"),
    ("True + x0", "only numbers"),
    ("sin(x0, x1)", "1 argument"),
    ("sin(x=x0)", "keyword"),
    ("sin", "must be called"),
    ("_secret + 1", "may not start with '_'"),
    ("x0 +", "not a valid expression"),
    ("", "empty"),
    ("x0+" * 250 + "1", "nested too deeply"),
    ("(" * 300 + "x0" + ")" * 300, "too many nested parentheses"),
    ("x0" * 600, "longer than 1000"),
]


@pytest.mark.parametrize("text, words", REJECTED, ids=[r[0][:30] or "empty" for r in REJECTED])
def test_rejects_everything_outside_the_grammar(text, words, monkeypatch):
    def forbidden(*_args, **_kwargs):
        raise AssertionError("eval/exec must never run")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    with pytest.raises(FormulaError) as error:
        parse_formula(text)
    assert words in str(error.value)


def test_huge_powers_give_inf_not_a_hang_and_generation_names_the_sample():
    assert np.isinf(parse_formula("9**9**9**9").evaluate({})).all()
    X, y = generate(FormulaSource(formula="x0 * 2", ranges={"x0": [1, 2]}, n_samples=10, seed=3))
    assert X.shape == (10, 1) and y.shape == (10, 1) and np.allclose(y[:, 0], 2 * X[:, 0])
    assert ((1 <= X) & (X <= 2)).all()
    with pytest.raises(DataError, match="non-finite value .* x0="):
        generate(FormulaSource(formula="log(x0)", ranges={"x0": [-1, 1]}, n_samples=50))


def test_generation_is_seeded():
    source = FormulaSource(formula="x0 + x1", ranges={"x0": [-1, 1], "x1": [0, 1]}, n_samples=20, seed=5,
                           noise=0.1)
    first, second = generate(source), generate(source)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.allclose(first[1][:, 0], first[0].sum(1))  # noise was added
