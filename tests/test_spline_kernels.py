"""The compiled CPU kernels of the layer op (kanmodel/csrc/spline_kernels.cpp): against
scipy, against the op's torch path, gradcheck through them, and the switch between paths."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.interpolate import BSpline
from torch.func import functional_call

from kanmodel import spline_op
from kanmodel.grid import data_knots, uniform_knots
from kanmodel.layer import KANLayer

torch.set_num_threads(1)

needs_kernels = pytest.mark.skipif(spline_op.kernels is None,
                                   reason=f"extension not built: {spline_op.kernel_import_error}")
BASE_CODES = {"zero": 0, "identity": 1, "silu": 2}


def knots_for(k: int, uniform: bool, n_in: int = 3, grid_size: int = 6, dtype=torch.float64):
    if uniform:
        return uniform_knots(n_in, grid_size, k, -1.0, 2.0, dtype=dtype)
    samples = torch.from_numpy(np.random.default_rng(k).standard_normal((300, n_in)) ** 3)
    return data_knots(samples, grid_size, k, grid_eps=0.02).to(dtype)


def probe_points(knots: torch.Tensor, k: int, n: int = 40, ends: bool = True) -> torch.Tensor:
    """(n (+ 2), in): random points inside and outside the domain (and both ends exactly)."""
    grid_size = knots.shape[1] - 2 * k - 1
    low, high = knots[:, k], knots[:, grid_size + k]
    generator = torch.Generator().manual_seed(k)
    levels = torch.rand(n, knots.shape[0], generator=generator, dtype=torch.float64) * 1.6 - 0.3
    points = (low + (high - low) * levels).to(knots.dtype)
    return torch.cat([points, low[None], high[None]]) if ends else points


def scipy_table(knots_row: np.ndarray, k: int, x: np.ndarray, nu: int = 0) -> np.ndarray:
    """(len(x), G + k): B_b(clamp(x)) or its derivative; extrapolate=True so that the right
    end of the domain belongs to the last interval, as in the layer."""
    n_basis = len(knots_row) - k - 1
    clamped = np.clip(x, knots_row[k], knots_row[n_basis])
    spline = BSpline(knots_row, np.eye(n_basis), k, extrapolate=True)
    return spline.derivative(nu)(clamped) if nu else spline(clamped)


@needs_kernels
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_extended_basis_and_input_grad_match_scipy(k, uniform, dtype):
    knots = knots_for(k, uniform, dtype=dtype)
    x = probe_points(knots, k)
    n_in, n_basis = knots.shape[0], knots.shape[1] - k - 1
    gate = torch.sigmoid(x)
    dense = spline_op.kernels.extended_basis(x, knots, k, uniform, BASE_CODES["silu"], gate)
    dense = dense.view(len(x), n_in, n_basis + 1)
    # The input gradient from grad_out (batch, out) and the extended weight, given either as
    # the product grad_out @ weight or as the two factors (the kernel forms the product).
    generator = torch.Generator().manual_seed(0)
    grad_out = torch.randn(len(x), 3, dtype=dtype, generator=generator)
    weight = torch.randn(3, n_in * (n_basis + 1), dtype=dtype, generator=generator)
    upstream = grad_out @ weight
    grad = spline_op.kernels.input_grad(x, knots, k, uniform, BASE_CODES["silu"], gate, upstream, None)
    direct = spline_op.kernels.input_grad(x, knots, k, uniform, BASE_CODES["silu"], gate, grad_out,
                                          weight.t().contiguous())
    torch.testing.assert_close(direct, grad)
    upstream = upstream.view(len(x), n_in, n_basis + 1).double().numpy()
    tolerance = 1e-12 if dtype == torch.float64 else 2e-5
    for i in range(n_in):
        row, points = knots[i].double().numpy(), x[:, i].double().numpy()
        values = scipy_table(row, k, points)
        np.testing.assert_allclose(dense[:, i, :n_basis].double().numpy(), values, atol=tolerance, rtol=0)
        silu = points / (1 + np.exp(-points))
        np.testing.assert_allclose(dense[:, i, n_basis].double().numpy(), silu, rtol=tolerance)
        inside = (points >= row[k]) & (points <= row[n_basis])
        slopes = scipy_table(row, k, points, nu=1) * inside[:, None]
        sigmoid = 1 / (1 + np.exp(-points))
        expected = (slopes * upstream[:, i, :n_basis]).sum(1) \
            + upstream[:, i, n_basis] * sigmoid * (1 + points * (1 - sigmoid))
        scale = np.abs(slopes).max()
        np.testing.assert_allclose(grad[:, i].double().numpy() / scale, expected / scale,
                                   atol=10 * tolerance, rtol=0)


def make_layer(k: int, uniform: bool, base: str, dtype, n_in=3, n_out=4, seed=0) -> KANLayer:
    generator = torch.Generator().manual_seed(seed)
    layer = KANLayer(n_in, n_out, grid_size=5, k=k, base=base, generator=generator, dtype=dtype)
    with torch.no_grad():
        layer.coef.normal_(generator=generator)
        layer.bias.normal_(generator=generator)
        layer.spline_weight.uniform_(0.5, 1.5, generator=generator)
        layer.mask[0, 1] = 0.0
    layer.set_knots(knots_for(k, uniform, n_in, 5, dtype), uniform)
    return layer


def run_both_paths(layer, x, monkeypatch):
    """-> (kernel path, torch path): output and gradients of x and every parameter."""
    names = ["coef", "spline_weight", "base_weight", "bias"]
    upstream = torch.randn(len(x), layer.out_features, dtype=x.dtype,
                           generator=torch.Generator().manual_seed(1))
    results = []
    for use in (True, False):
        monkeypatch.setattr(spline_op, "use_kernels", use)
        inputs = x.detach().clone().requires_grad_()
        out = layer(inputs)
        grads = torch.autograd.grad(out, [inputs] + [getattr(layer, n) for n in names], upstream,
                                    allow_unused=True, materialize_grads=True)
        results.append((out, *grads))
    return results


@needs_kernels
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n_out", [4, 20])                   # input gradient: dots, matmul
def test_kernel_path_matches_the_torch_path(k, uniform, dtype, n_out, monkeypatch):
    assert (n_out <= spline_op._DIRECT_OUTPUTS) == (n_out == 4)
    for base in ["silu", "identity", "zero"]:
        layer = make_layer(k, uniform, base, dtype, n_out=n_out)
        # Not on the domain's ends: there the torch path's knot coordinate may round
        # outside and give the outside derivative 0 (the ends are checked against scipy).
        x = probe_points(layer.knots, k, n=300, ends=False)
        kernel, reference = run_both_paths(layer, x, monkeypatch)
        # float32: the paths round differently (input gradients, sums over the outputs of
        # terms of size ~3, agree to a few 1e-5).
        tolerance = {} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}
        for name, got, want in zip(["out", "x", "coef", "spline_weight", "base_weight", "bias"],
                                   kernel, reference):
            torch.testing.assert_close(got, want, **tolerance, msg=lambda m: f"{name} ({base}): {m}")


@needs_kernels
def test_large_batches_split_across_threads_match_the_torch_path(monkeypatch):
    """Past the kernels' grain the rows are split across threads (and tiles end mid-row)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        layer = make_layer(3, True, "silu", torch.float64, n_in=7, n_out=3)
        x = probe_points(layer.knots, 3, n=5001, ends=False)
        kernel, reference = run_both_paths(layer, x, monkeypatch)
    finally:
        torch.set_num_threads(threads)
    for got, want in zip(kernel, reference):
        torch.testing.assert_close(got, want)


@needs_kernels
@pytest.mark.parametrize("uniform", [True, False])
def test_empty_batch_and_non_contiguous_input(uniform, monkeypatch):
    monkeypatch.setattr(spline_op, "use_kernels", True)
    layer = make_layer(3, uniform, "silu", torch.float64)
    empty = torch.zeros(0, 3, dtype=torch.float64, requires_grad=True)
    out = layer(empty)
    assert out.shape == (0, 4)
    out.sum().backward()
    assert empty.grad.shape == (0, 3) and layer.coef.grad.abs().max() == 0
    x = probe_points(layer.knots, 3, ends=False)
    transposed = x.t().contiguous().t()                        # same values, column-major
    assert not transposed.is_contiguous()
    kernel, reference = run_both_paths(layer, transposed, monkeypatch)
    for got, want in zip(kernel, reference):
        torch.testing.assert_close(got, want)


@needs_kernels
@pytest.mark.parametrize("uniform", [True, False])
def test_infinite_and_nan_inputs_stay_in_bounds(uniform, monkeypatch):
    """inf is clamped onto the domain's end; NaN gives NaN in its own row only (its
    interval is kept inside the table, no write goes astray)."""
    monkeypatch.setattr(spline_op, "use_kernels", True)
    layer = make_layer(3, uniform, "zero", torch.float64)
    low, high = layer.knots[:, 3], layer.knots[:, 5 + 3]
    x = torch.stack([torch.full((3,), float("inf")), torch.full((3,), -float("inf")),
                     torch.full((3,), float("nan")), (low + high) / 2]).double()
    expected = layer(torch.stack([high, low, low, (low + high) / 2]))
    out = layer(x)
    torch.testing.assert_close(out[[0, 1, 3]], expected[[0, 1, 3]])
    assert out[2].isnan().all()


@needs_kernels
@pytest.mark.parametrize("k, uniform, base", [(3, True, "silu"), (3, False, "silu"),
                                              (2, True, "identity"), (4, False, "zero")])
def test_gradcheck_through_the_kernels(k, uniform, base, monkeypatch):
    monkeypatch.setattr(spline_op, "use_kernels", True)
    layer = make_layer(k, uniform, base, torch.float64, n_in=3, n_out=2)
    x = probe_points(layer.knots, k, n=10, ends=False)         # off the domain's ends (kinks)
    names = ["coef", "spline_weight", "base_weight", "bias"]
    params = [getattr(layer, n).detach().clone().requires_grad_() for n in names]

    def run(x, *values):
        return functional_call(layer, dict(zip(names, values)), (x,))

    assert torch.autograd.gradcheck(run, (x.clone().requires_grad_(), *params))


def test_disabled_kernels_use_the_torch_path(monkeypatch):
    """With the kernels switched off the op never touches them (and still works)."""
    class Unavailable:
        def __getattr__(self, name):
            raise AssertionError(f"kernels.{name} called on the torch path")

    monkeypatch.setattr(spline_op, "use_kernels", False)
    monkeypatch.setattr(spline_op, "kernels", Unavailable())
    layer = make_layer(3, True, "silu", torch.float64)
    x = probe_points(layer.knots, 3).requires_grad_()
    layer(x).sum().backward()
    assert x.grad.abs().max() > 0


def test_kernels_apply_only_to_cpu_float_inputs_of_a_supported_order(monkeypatch):
    monkeypatch.setattr(spline_op, "use_kernels", True)
    monkeypatch.setattr(spline_op, "kernels", type("Kernels", (), {"MAX_ORDER": 15}))
    x, knots = torch.zeros(2, 3), torch.zeros(3, 12)
    assert spline_op._kernels_apply(x, knots, 3)
    assert not spline_op._kernels_apply(x, knots, 16)
    assert not spline_op._kernels_apply(x.half(), knots.half(), 3)
    assert not spline_op._kernels_apply(x, knots.double(), 3)
    monkeypatch.setattr(spline_op, "use_kernels", False)
    assert not spline_op._kernels_apply(x, knots, 3)


def test_environment_variable_disables_the_kernels():
    code = "from kanmodel import spline_op; print(spline_op.use_kernels)"
    env = dict(os.environ, KANMODEL_DISABLE_KERNELS="1")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.skipif(os.environ.get("KANMODEL_REQUIRE_KERNELS") != "1",
                    reason="KANMODEL_REQUIRE_KERNELS=1 not set (make test sets it)")
def test_kernels_are_built_when_required():
    assert spline_op.kernels is not None, f"extension not importable: {spline_op.kernel_import_error}"
    assert spline_op.use_kernels
