"""kanmodel.ensemble.merge: the average of KANs trained on different folds as one KAN."""
import numpy as np
import pytest
import torch

import kanmodel
from kanmodel.ensemble import merge

torch.set_num_threads(1)


def table(task: str):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(200, 3, generator=generator) * 4 - 2
    if task == "classification":
        return x, (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    return x, torch.stack([torch.sin(x[:, 0]) + x[:, 1] * x[:, 2], 10 + 5 * x[:, 0] ** 2], 1)


def members(width, task, grids=(3, 6)):
    x, y = table(task)
    if task == "regression":
        y = y[:, :width[-1]]
    trained = []
    for fold in range(3):
        model = kanmodel.KAN(width, grid=grids[0], seed=fold, task=task)
        kanmodel.fit(model, x, y, grid_schedule=list(grids), steps_per_grid=30, fold=fold,
                     grid_inputs="all", patience=0)
        trained.append(model)
    return x, trained


@pytest.mark.parametrize("width, task", [([3, 2], "regression"), ([3, 4, 2], "regression"),
                                         ([3, 4, 3, 1], "regression"), ([3, 4, 3], "classification"),
                                         ([3, 3], "classification")])
def test_merged_model_is_the_average_and_exports_with_parity(width, task):
    ort = pytest.importorskip("onnxruntime")
    from kanmodel.export import to_onnx
    x, models = members(width, task)
    merged = merge(models, x)
    hidden = [3 * w for w in width[1:-1]]
    assert merged.width == [width[0], *hidden, width[-1]]
    probe = torch.rand(500, 3, generator=torch.Generator().manual_seed(1)) * 5 - 2.5   # some outside the grid
    with torch.no_grad():
        mean = torch.stack([m(probe) for m in models]).mean(0)
        got = merged(probe)
    torch.testing.assert_close(got, mean, rtol=0, atol=2e-5 * (1 + float(mean.abs().max())))
    session = ort.InferenceSession(to_onnx(merged), providers=["CPUExecutionProvider"])
    exported = session.run(["output"], {"input": probe.numpy()})[0]
    np.testing.assert_allclose(exported, got.numpy(), rtol=0, atol=1e-5 * (1 + float(got.abs().max())))


def test_members_on_different_grids_are_refined_first():
    x, models = members([3, 4, 1], "regression", grids=(5, 10))
    coarse = kanmodel.KAN([3, 4, 1], grid=5, seed=7)
    kanmodel.fit(coarse, x, table("regression")[1][:, :1], grid_schedule=[5], steps_per_grid=30,
                 fold=1, grid_inputs="all", patience=0)
    merged = merge([*models, coarse], x)
    assert merged.grid_size == 10 and coarse.grid_size == 5          # the member is not changed
    with torch.no_grad():
        mean = torch.stack([m(x) for m in [*models, coarse]]).mean(0)
        torch.testing.assert_close(merged(x), mean, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="pass x"):
        merge([*models, coarse])


def test_members_with_their_own_input_grids_are_refused():
    x, y = table("regression")
    models = []
    for fold in range(2):
        model = kanmodel.KAN([3, 2, 1], grid=3, seed=fold)
        kanmodel.fit(model, x, y[:, :1], grid_schedule=[3], steps_per_grid=5, fold=fold, patience=0)
        models.append(model)
    with pytest.raises(ValueError, match="grid_inputs='all'"):
        merge(models)
