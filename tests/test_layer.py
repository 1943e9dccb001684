"""KANLayer / KAN forward: gradients, out-of-grid rule, dtypes, masks."""
import pytest
import torch
from torch.func import functional_call

import kanmodel
from kanmodel import spline_op
from kanmodel.grid import data_knots
from kanmodel.layer import KANLayer

torch.set_num_threads(1)

# The layer op has two implementations: the compiled CPU kernels where they were built,
# and the torch path, which CUDA, other dtypes and a missing extension still use. Every
# test here runs on each (the kernels alone would leave the torch path's per-plane,
# empty-batch and index-cache branches, which these tests were written for, untested).
LAYER_OP_PATHS = ["torch"] + (["kernels"] if spline_op.use_kernels else [])


@pytest.fixture(autouse=True, params=LAYER_OP_PATHS)
def layer_op_path(request, monkeypatch):
    monkeypatch.setattr(spline_op, "use_kernels", request.param == "kernels")
    return request.param


def make_layer(uniform: bool, dtype=torch.float64, seed=0) -> KANLayer:
    generator = torch.Generator().manual_seed(seed)
    layer = KANLayer(3, 2, grid_size=4, k=3, generator=generator, dtype=dtype)
    with torch.no_grad():
        layer.coef.normal_(generator=generator)
        layer.spline_weight.uniform_(0.5, 1.5, generator=generator)
    if not uniform:
        samples = torch.randn(200, 3, generator=generator, dtype=dtype) ** 3
        layer.set_knots(data_knots(samples, 4, 3, grid_eps=0.02), uniform=False)
    return layer


def points_avoiding_the_domain_edges(layer: KANLayer, n: int = 12) -> torch.Tensor:
    """Inputs inside and outside the grid but never on its edges (a kink of the clamp)."""
    generator = torch.Generator().manual_seed(1)
    low, high = layer.knots[:, layer.k], layer.knots[:, layer.grid_size + layer.k]
    levels = torch.rand(n, layer.in_features, generator=generator, dtype=torch.float64) * 1.6 - 0.3
    levels = torch.where((levels - 0.0).abs() < 0.02, levels + 0.05, levels)
    levels = torch.where((levels - 1.0).abs() < 0.02, levels + 0.05, levels)
    return (low + (high - low) * levels).to(layer.coef.dtype)


@pytest.mark.parametrize("uniform", [True, False])
def test_gradcheck_inputs_and_parameters(uniform):
    layer = make_layer(uniform)
    x = points_avoiding_the_domain_edges(layer).requires_grad_()
    names = ["coef", "base_weight", "spline_weight", "bias"]
    params = [getattr(layer, n).detach().clone().requires_grad_() for n in names]

    def run(x, *values):
        return functional_call(layer, dict(zip(names, values)), (x,))

    assert torch.autograd.gradcheck(run, (x, *params))


def test_forward_equals_sum_of_edge_activations():
    for uniform in (True, False):
        layer = make_layer(uniform)
        x = points_avoiding_the_domain_edges(layer, 40)
        edges = layer.edge_activations(x)
        assert edges.shape == (40, 2, 3)
        torch.testing.assert_close(layer(x), edges.sum(-1) + layer.bias)


def test_outside_the_grid_the_spline_is_clamped_and_the_base_is_not():
    layer = make_layer(uniform=False)
    k, g = layer.k, layer.grid_size
    low, high = layer.knots[:, k], layer.knots[:, g + k]
    far_out = torch.stack([low - 5.0, high + 5.0])          # (2, in)
    at_edge = torch.stack([low, high])
    spline_far = layer.spline_values(far_out)
    torch.testing.assert_close(spline_far, layer.spline_values(at_edge))
    assert spline_far.abs().min() > 0                       # not a silent zero
    base_far = torch.nn.functional.silu(far_out).unsqueeze(1) * layer.base_weight
    expected = base_far + layer.spline_weight * spline_far
    torch.testing.assert_close(layer.edge_activations(far_out), expected)
    torch.testing.assert_close(layer(far_out), expected.sum(-1) + layer.bias)
    # The fast path agrees with the edge path, and the spline gradient outside is zero.
    x = far_out.clone().requires_grad_()
    spline_only = layer(x) - torch.nn.functional.silu(x) @ layer.base_weight.t()
    (grad,) = torch.autograd.grad(spline_only.sum(), x)
    torch.testing.assert_close(grad, torch.zeros_like(grad))


def test_mask_removes_an_edge():
    layer = make_layer(uniform=True)
    x = points_avoiding_the_domain_edges(layer, 20)
    before = layer(x)
    layer.mask[1, 2] = 0.0
    after = layer(x)
    torch.testing.assert_close(after[:, 0], before[:, 0])
    removed = layer.edge_activations(x)[:, 1, 2]
    assert removed.abs().max() == 0
    layer.mask[1, 2] = 1.0
    expected = before[:, 1] - layer.edge_activations(x)[:, 1, 2]
    torch.testing.assert_close(after[:, 1], expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_model_dtype_follows_the_module(dtype):
    model = kanmodel.KAN([3, 4, 2], grid=5).to(dtype)
    x = torch.randn(16, 3, dtype=dtype)
    out = model(x)
    assert out.dtype == dtype and out.shape == (16, 2)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == dtype for p in model.parameters())


def test_float32_and_float64_models_agree():
    model = kanmodel.KAN([3, 4, 2], grid=5, seed=3)
    x = torch.randn(64, 3) * 2
    model.update_grid(x)
    out32 = model(x)
    out64 = model.double()(x.double())
    torch.testing.assert_close(out32.double(), out64, atol=1e-5, rtol=1e-5)


def test_standardisation_is_applied_to_raw_inputs_and_outputs():
    model = kanmodel.KAN([2, 3, 1], grid=5, seed=0)
    x = torch.randn(50, 2) * torch.tensor([10.0, 0.1]) + torch.tensor([100.0, -3.0])
    y = torch.randn(50, 1) * 7 + 40
    model.set_standardisation(x, y)
    torch.testing.assert_close(model.in_shift, x.mean(0))
    torch.testing.assert_close(model.out_scale, y.std(0, unbiased=False))
    z = (x - model.in_shift) / model.in_scale
    expected = model.forward_standardised(z) * model.out_scale + model.out_shift
    torch.testing.assert_close(model(x), expected)
    activations = model.activations(x)
    torch.testing.assert_close(activations[0][0], z)
    assert [a[1].shape for a in activations] == [(50, 3, 2), (50, 1, 3)]


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="width"):
        kanmodel.KAN([3])
    with pytest.raises(ValueError, match="base"):
        kanmodel.KAN([2, 1], base="relu6")
    with pytest.raises(ValueError, match="task"):
        kanmodel.KAN([2, 1], task="ranking")
    model = kanmodel.KAN([2, 1])
    with pytest.raises(ValueError, match=r"shape \(batch, 2\)"):
        model(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="NaN"):
        model.update_grid(torch.tensor([[0.0, float("nan")]]))


def test_forward_follows_every_change_of_the_knots():
    layer = make_layer(uniform=True, dtype=torch.float32)
    x = points_avoiding_the_domain_edges(layer, 30)
    layer(x)                                  # fills the cached grid coordinates

    def general_path():
        layer.uniform = False
        try:
            return layer(x)
        finally:
            layer.uniform = True

    with torch.no_grad():
        layer.knots.mul_(1.5)                 # in place
    torch.testing.assert_close(layer(x), general_path())
    layer.set_knots(layer.knots * 0.5, uniform=True)      # replaced
    torch.testing.assert_close(layer(x), general_path())
    expected = general_path().double()
    layer.double()                            # dtype move
    out = layer(x.double())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_both_basis_paths_of_the_layer_match_the_dense_basis(k):
    from kanmodel.basis import dense_basis

    generator = torch.Generator().manual_seed(k)
    samples = torch.randn(300, 3, generator=generator, dtype=torch.float64) ** 3
    x = torch.randn(50, 3, generator=generator, dtype=torch.float64) * 3   # some outside
    for grid_eps, uniform in [(1.0, True), (0.02, False)]:
        layer = KANLayer(3, 2, grid_size=6, k=k, base="zero", dtype=torch.float64, generator=generator)
        with torch.no_grad():
            layer.coef.normal_(generator=generator)
            layer.bias.normal_(generator=generator)
        layer.set_knots(data_knots(samples, 6, k, grid_eps), uniform)
        clamped = torch.clamp(x, layer.knots[:, k], layer.knots[:, 6 + k])
        basis = dense_basis(clamped, layer.knots, k, uniform)           # (batch, G + k, in)
        weight = layer.coef * layer.spline_weight.unsqueeze(-1)
        expected = torch.einsum("bni,oin->bo", basis, weight) + layer.bias
        torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("base", ["silu", "identity", "zero"])
def test_gradcheck_every_base_function(base):
    generator = torch.Generator().manual_seed(0)
    layer = KANLayer(2, 3, grid_size=3, k=2, base=base, dtype=torch.float64, generator=generator)
    x = points_avoiding_the_domain_edges(layer, 6).requires_grad_()
    names = ["coef", "base_weight", "spline_weight", "bias"]
    params = [getattr(layer, n).detach().clone().requires_grad_() for n in names]

    def run(x, *values):
        return functional_call(layer, dict(zip(names, values)), (x,))

    assert torch.autograd.gradcheck(run, (x, *params))



def reference_layer(layer: KANLayer, x: torch.Tensor) -> torch.Tensor:
    """The layer written with autograd over the full basis table (dense_basis)."""
    from kanmodel.basis import clamp_to_domain, dense_basis

    basis = dense_basis(clamp_to_domain(x, layer.knots, layer.k), layer.knots, layer.k, layer.uniform)
    weight = layer.coef * (layer.spline_weight * layer.mask).unsqueeze(-1)
    spline = torch.einsum("bni,oin->bo", basis, weight)
    return spline + layer.base_fn(x) @ (layer.base_weight * layer.mask).t() + layer.bias


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("n_out", [3, 40])
def test_large_layers_match_the_autograd_reference(k, uniform, n_out):
    """Batches big enough for the per-plane paths of the layer op (closed-form cubic,
    one scatter per basis plane, thin-output matmul), values and all gradients."""
    generator = torch.Generator().manual_seed(k)
    layer = KANLayer(9, n_out, grid_size=7, k=k, dtype=torch.float64, generator=generator)
    with torch.no_grad():
        layer.coef.normal_(generator=generator)
        layer.bias.normal_(generator=generator)
        layer.spline_weight.uniform_(0.5, 1.5, generator=generator)
        layer.mask[0, 1] = 0.0
    if not uniform:
        samples = torch.randn(500, 9, generator=generator, dtype=torch.float64) ** 3
        layer.set_knots(data_knots(samples, 7, k, grid_eps=0.02), uniform=False)
    x = points_avoiding_the_domain_edges(layer, 4000).requires_grad_()
    assert x.numel() * (k + 1) > 32768
    upstream = torch.randn(4000, n_out, generator=generator, dtype=torch.float64)
    params = [x, layer.coef, layer.spline_weight, layer.base_weight, layer.bias]
    ours = layer(x)
    expected = reference_layer(layer, x)
    torch.testing.assert_close(ours, expected)
    grads = torch.autograd.grad(ours, params, upstream)
    expected_grads = torch.autograd.grad(expected, params, upstream)
    for name, got, want in zip(["x", "coef", "spline_weight", "base_weight", "bias"], grads, expected_grads):
        torch.testing.assert_close(got, want, msg=name)
    assert grads[0][(x.detach() < layer.knots[:, k]) | (x.detach() > layer.knots[:, 7 + k])].abs().max() > 0
    transposed = x.detach().t().contiguous().t()               # same values, column-major
    torch.testing.assert_close(layer(transposed), ours)


@pytest.mark.parametrize("uniform", [True, False])
def test_a_batch_past_the_cached_index_size_matches_the_reference(uniform):
    layer = make_layer(uniform)
    x = points_avoiding_the_domain_edges(layer, 90000)         # 270000 (row, input) pairs
    torch.testing.assert_close(layer(x), reference_layer(layer, x))


@pytest.mark.parametrize("uniform", [True, False])
def test_an_empty_batch_gives_empty_outputs_and_zero_gradients(uniform):
    layer = make_layer(uniform)
    x = torch.zeros(0, 3, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    assert out.shape == (0, 2)
    out.sum().backward()
    assert x.grad.shape == (0, 3) and layer.coef.grad.abs().max() == 0


@pytest.mark.parametrize("dtype, shift, spread, grid_eps", [(torch.float64, 0.0, 1.0, 0.0),
                                                            (torch.float32, 0.0, 1.0, 0.0),
                                                            (torch.float32, 30000.0, 0.0005, 0.5)])
def test_interval_lookup_agrees_with_searchsorted(dtype, shift, spread, grid_eps):
    """Clustered knots (several per lookup cell before refinement), every knot itself and
    both ends, and a narrow domain far from 0 where float32 rounds the cell coordinate."""
    from kanmodel.basis import interval_table

    generator = torch.Generator().manual_seed(0)
    k, grid_size = 3, 12
    samples = torch.randn(2000, 4, generator=generator, dtype=torch.float64) ** 5 * spread + shift
    knots = data_knots(samples, grid_size, k, grid_eps=grid_eps).to(dtype)
    table = interval_table(knots, k)
    inner = knots[:, k: grid_size + k + 1]
    x = torch.cat([torch.rand(3000, 4, generator=generator, dtype=dtype) * (inner[:, -1] - inner[:, 0])
                   + inner[:, 0], inner.t(),                   # every knot, and the values next to it
                   torch.nextafter(inner, inner + 1).t()[:-1], torch.nextafter(inner, inner - 1).t()[1:]])
    expected = (torch.searchsorted(inner.contiguous(), x.t().contiguous(), right=True) - 1).clamp_(0, grid_size - 1)
    expected = expected.t() + torch.arange(4) * grid_size
    torch.testing.assert_close(table.locate(x), expected.reshape(-1), rtol=0, atol=0)


@pytest.mark.parametrize("uniform", [True, False])
def test_the_knot_constants_are_built_only_by_the_path_that_uses_them(uniform, layer_op_path):
    layer = make_layer(uniform)
    layer(torch.rand(5, 3, dtype=torch.float64))
    # The torch path reads the layer's cached knot constants; the kernels derive what they
    # need from the knots in the kernel and never ask for them.
    assert (layer._constants_key is not None) == (layer_op_path == "torch")
