"""Plots return valid PNG images of the stated size."""
import struct

import numpy as np
import pytest
import torch

import kanmodel
from kanmodel import plots

torch.set_num_threads(1)


def png_size(blob: bytes) -> tuple[int, int]:
    assert blob[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert blob[12:16] == b"IHDR"
    width, height = struct.unpack(">II", blob[16:24])
    assert blob.rstrip()[-8:-4] == b"IEND"
    return width, height


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (300, 2))
    y = np.sin(2 * X[:, 0]) * X[:, 1]
    model = kanmodel.KAN([2, 3, 1], grid=3, seed=0)
    result = kanmodel.fit(model, X, y, grid_schedule=[3, 5], steps_per_grid=15)
    return model, X, result.history


def test_network_diagram(trained):
    model, X, _ = trained
    blob = plots.plot_network(model, X, names=["x", "theta"],
                              edge_functions=[{(0, 0): "sin"}, {(0, 1): "x^2"}])
    w, h = plots.network_figsize(model)
    assert png_size(blob) == (round(w * plots.DPI), round(h * plots.DPI))
    assert len(blob) > 5000  # has content, not a blank canvas


def test_network_diagram_without_data_and_custom_size(trained):
    model, _, _ = trained
    blob = plots.plot_network(model, figsize=(5, 4), dpi=50)
    assert png_size(blob) == (250, 200)


def test_network_diagram_names_must_match(trained):
    model, X, _ = trained
    with pytest.raises(ValueError, match="names"):
        plots.plot_network(model, X, names=["only one"])


def test_layer_grid(trained):
    model, X, _ = trained
    blob = plots.plot_layer(model, 0, X)
    w, h = plots.layer_figsize(model, 0)
    assert png_size(blob) == (round(w * plots.DPI), round(h * plots.DPI))
    with pytest.raises(ValueError, match="layer"):
        plots.plot_layer(model, 5)


def test_loss_curve(trained):
    _, _, history = trained
    blob = plots.plot_loss(history)
    assert png_size(blob) == (600, 360)
    with pytest.raises(ValueError, match="empty"):
        plots.plot_loss([])
