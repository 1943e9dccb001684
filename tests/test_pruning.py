"""Importance and pruning: smaller model, exact zeros, predictions kept."""
import numpy as np
import pytest
import torch

import kanmodel
from kanmodel.pruning import importance, prune

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained():
    """[3, 3, 1] trained on y = sin(2 x0) + x1 (x2 is noise the model may not use),
    then hidden node 2 made nearly silent, so pruning has a node and edges to remove."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (600, 3))
    y = np.sin(2 * X[:, 0]) + X[:, 1]
    model = kanmodel.KAN([3, 3, 1], grid=5, seed=0).double()
    kanmodel.fit(model, X, y, grid_schedule=[5], steps_per_grid=60, val_fraction=0.0)
    with torch.no_grad():
        out = model.layers[1]
        out.coef[:, 2] *= 1e-4
        out.base_weight[:, 2] *= 1e-4
    return model, X, y


def test_importance_shapes_and_scale(trained):
    model, X, _ = trained
    edges, nodes = importance(model, X)
    assert [tuple(e.shape) for e in edges] == [(3, 3), (1, 3)]
    assert [tuple(n.shape) for n in nodes] == [(3,), (3,), (1,)]
    assert float(nodes[-1][0]) == 1.0
    assert abs(float(nodes[0].sum()) - 1.0) < 1e-9  # importance is conserved layer to layer
    assert float(nodes[1][2]) < 1e-3


def test_prune_gives_a_smaller_model_with_exact_zeros(trained):
    model, X, y = trained
    pruned = prune(model, X, threshold=1e-2)
    assert pruned.width[1] < model.width[1]
    assert pruned is not model and model.width == [3, 3, 1]
    Xt = torch.as_tensor(X)
    for (_, edges), layer in zip(pruned.activations(Xt), pruned.layers):
        dead = layer.mask == 0
        assert torch.all(edges[:, dead] == 0)  # exactly zero, not small
    # stated tolerance: pruning at 1e-2 moves predictions by an RMS < 2% of std(y)
    # (and by at most 10% of it on any row)
    with torch.no_grad():
        change = pruned(Xt) - model(Xt)
    assert change.pow(2).mean().sqrt().item() < 0.02 * y.std()
    assert change.abs().max().item() < 0.10 * y.std()


def test_pruning_keeps_constant_offsets(trained):
    """An edge with a large constant value but no variation is pruned; its constant
    must move into the bias (PyKAN's prune lost it: RMSE 1e-4 -> 0.2)."""
    model, X, y = trained
    shifted = prune(model, X, threshold=0.0)  # a copy
    with torch.no_grad():
        shifted.layers[0].bias[0] += 0.0  # same model; now give edge (0, 2) a pure offset
        shifted.layers[0].base_weight[0, 2] = 0.0
        shifted.layers[0].coef[0, 2] = 5.0  # constant spline = 5 on every input
    Xt = torch.as_tensor(X)
    pruned = prune(shifted, X, threshold=1e-2)
    assert pruned.layers[0].mask[0, 2] == 0
    with torch.no_grad():
        change = pruned(Xt) - shifted(Xt)
    assert change.pow(2).mean().sqrt().item() < 0.02 * y.std()


def test_prune_rejects_bad_threshold(trained):
    model, X, _ = trained
    with pytest.raises(ValueError, match="threshold"):
        prune(model, X, threshold=1.5)
