"""Metadata props stored in every exported graph, read back by the gateway's predictor."""

from __future__ import annotations

import json
from importlib import metadata as package_metadata


def kanserve_version() -> str:
    try:
        return package_metadata.version("kanserve")
    except package_metadata.PackageNotFoundError:
        return "unknown"


def column_names(names, count: int, default_stem: str, field: str) -> list[str]:
    """`names` checked to be `count` distinct non-empty strings, or stem0..stemN-1."""
    if names is None:
        return [f"{default_stem}{i}" for i in range(count)]
    names = [str(n) for n in names]
    if len(names) != count:
        raise ValueError(f"{field}: expected {count} names, got {len(names)}")
    if any(not n for n in names):
        raise ValueError(f"{field}: names must be non-empty")
    if len(set(names)) != len(names):
        raise ValueError(f"{field}: names must be distinct, got {names}")
    return names


def model_props(*, name: str, version, task: str, kind: str, input_names: list[str],
                output_names: list[str], extra: dict[str, str] | None = None) -> dict[str, str]:
    """String key/value pairs for `onnx.helper.set_model_props`.

    `kind` says what the graph evaluates ("spline" network or closed-form "formula");
    list values are JSON so that names with commas survive.
    """
    props = {
        "name": str(name),
        "version": str(version),
        "task": task,
        "kind": kind,
        "input_names": json.dumps(input_names),
        "output_names": json.dumps(output_names),
        "kanserve_version": kanserve_version(),
    }
    props.update(extra or {})
    return props


def input_ranges(model) -> list[list[float]]:
    """Per input [low, high] in raw units: the first layer's spline domain, which
    fitting spreads over the training inputs. Beyond it the spline part is held at
    its edge value (the out-of-grid rule), so the gateway flags such rows as
    extrapolated. Stored as the JSON metadata prop "input_ranges"."""
    layer = model.layers[0]
    k, grid = int(layer.k), int(layer.grid_size)
    knots = layer.knots.detach().double().cpu().numpy()
    shift = model.in_shift.detach().double().cpu().numpy()
    scale = model.in_scale.detach().double().cpu().numpy()
    low, high = shift + scale * knots[:, k], shift + scale * knots[:, grid + k]
    return [[float(lo), float(hi)] for lo, hi in zip(low, high)]
