"""Checks on a JobSpec that need the data's shape, the server's limits or the database.

Each problem is reported like a pydantic error: ``{"loc": [...], "msg": ..., "type": ...}``
with ``loc`` starting at ``body`` so clients see one error format for all 422s.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.config import Settings
from service.datasets.formula_data import DataError, generate
from service.datasets.tables import from_npy
from service.db.models import Dataset
from service.schemas.jobspec import DatasetSource, FormulaSource, InlineSource, JobSpec


@dataclass
class Problem:
    loc: tuple[str | int, ...]
    msg: str
    type: str = "value_error"

    def as_error(self) -> dict:
        return {"loc": ["body", *self.loc], "msg": self.msg, "type": self.type}


@dataclass(frozen=True)
class DataShape:
    n_rows: int
    input_names: list[str]
    output_names: list[str]
    targets: np.ndarray | None  # (n_rows, n_outputs) when known without training


# Peak memory of kanmodel.fit above the loaded process, float32 (bench/training_memory.py,
# docs/benchmarks.md "Training memory"): about 8 bytes per spline-basis value of a row
# (G + k + 1 per layer input), 25 more per edge activation of a row when the sparsity
# penalty (train.lamb > 0) keeps them, and per parameter 480 bytes under L-BFGS (its 50
# pairs of history vectors) or 48 under Adam.
BASIS_VALUE_BYTES = 8
EDGE_VALUE_BYTES = 25
PARAMETER_BYTES = {"lbfgs": 480, "adam": 48}
GIB = 2 ** 30


def model_parameters(width: list[int], grid: int, k: int) -> int:
    """Trainable values of a KAN: per edge, grid + k spline coefficients, a base and a spline
    weight; per output, a bias."""
    return sum(n_out * n_in * (grid + k + 2) + n_out for n_in, n_out in zip(width, width[1:]))


def training_memory_bytes(spec: JobSpec, n_rows: int) -> int:
    """Estimated peak training memory of a given-width job at its final grid, all rows at once
    (an upper bound with train.batch_size: the grid updates and validation still see every row)."""
    width, grid, k = spec.given_width, spec.train.grid_schedule[-1], spec.model.k
    per_row = BASIS_VALUE_BYTES * sum(n_in * (grid + k + 1) for n_in in width[:-1])
    if spec.train.lamb > 0:
        per_row += EDGE_VALUE_BYTES * sum(n_in * n_out for n_in, n_out in zip(width, width[1:]))
    return n_rows * per_row + PARAMETER_BYTES[spec.train.optimizer] * model_parameters(width, grid, k)


def check_limits(spec: JobSpec, settings: Settings) -> list[Problem]:
    problems = []
    schedule = spec.train.grid_schedule
    width = spec.given_width
    if spec.model is not None and spec.model.grid is not None and spec.model.grid != schedule[0]:
        problems.append(Problem(("model", "grid"),
                                f"model.grid is {spec.model.grid} but train.grid_schedule starts at {schedule[0]}; "
                                "the first stage uses the first grid (leave model.grid out)"))
    for index, size in enumerate(width or []):
        if size > settings.max_layer_width:
            problems.append(Problem(("model", "width", index),
                                    f"layer width {size} is above the limit of {settings.max_layer_width} "
                                    "(KANSERVE_MAX_LAYER_WIDTH)"))
    if schedule[-1] > settings.max_grid:
        problems.append(Problem(("train", "grid_schedule"),
                                f"grid {schedule[-1]} is above the limit of {settings.max_grid} (KANSERVE_MAX_GRID)"))
    if width is not None and (n := model_parameters(width, schedule[-1], spec.model.k)) > settings.max_parameters:
        problems.append(Problem(("model", "width"),
                                f"model.width {width} at grid {schedule[-1]} (k={spec.model.k}) has {n:,} parameters, "
                                f"above the limit of {settings.max_parameters:,} (KANSERVE_MAX_PARAMETERS)"))
    if spec.total_steps > settings.max_total_steps:
        problems.append(Problem(("train", "steps_per_grid"),
                                f"{len(schedule)} stages x {spec.train.steps_per_grid} steps = {spec.total_steps} "
                                f"steps, above the limit of {settings.max_total_steps} (KANSERVE_MAX_TOTAL_STEPS)"))
    if isinstance(spec.data, FormulaSource) and spec.data.n_samples > settings.max_rows:
        problems.append(Problem(("data", "n_samples"),
                                f"n_samples {spec.data.n_samples} is above the limit of {settings.max_rows} "
                                "(KANSERVE_MAX_ROWS)"))
    if isinstance(spec.data, InlineSource) and len(spec.data.inline.X) > settings.max_rows:
        problems.append(Problem(("data", "inline", "X"),
                                f"{len(spec.data.inline.X)} rows is above the limit of {settings.max_rows} "
                                "(KANSERVE_MAX_ROWS)"))
    return problems


def check_memory(spec: JobSpec, n_rows: int, settings: Settings) -> list[Problem]:
    """Whether a given-width job fits the worker; a job that chooses its architecture is sized
    by the search itself."""
    if spec.given_width is None:
        return []
    needed = training_memory_bytes(spec, n_rows)
    if needed <= settings.max_training_memory_gib * GIB:
        return []
    rows_field = "data.n_samples" if isinstance(spec.data, FormulaSource) else "the data's rows"
    return [Problem(("model", "width"),
                    f"training model.width {spec.given_width} at grid {spec.train.grid_schedule[-1]} on {n_rows} rows "
                    f"({rows_field}) needs about {needed / GIB:.1f} GiB, above the limit of "
                    f"{settings.max_training_memory_gib:g} GiB (KANSERVE_MAX_TRAINING_MEMORY_GIB); use fewer rows, "
                    "narrower layers or a smaller final grid")]


def resolve_shape(spec: JobSpec, dataset: Dataset | None) -> tuple[DataShape | None, list[Problem]]:
    """The inputs/outputs the data will have; ``dataset`` is the row named by a DatasetSource."""
    data = spec.data
    if isinstance(data, FormulaSource):
        if spec.task == "classification":
            return None, [Problem(("task",), "formula data makes regression targets; use inline or dataset data "
                                            "for classification")]
        try:
            _, y = generate(data)
        except DataError as exc:
            return None, [Problem(("data", "formula"), str(exc))]
        return DataShape(data.n_samples, list(data.ranges), [data.target], y), []
    if isinstance(data, InlineSource):
        arrays = data.inline
        n_in, n_out = len(arrays.X[0]), len(arrays.y[0])
        inputs = arrays.feature_names or [f"x{i}" for i in range(n_in)]
        outputs = arrays.target_names or ([f"y{i}" for i in range(n_out)] if n_out > 1 else ["y"])
        return DataShape(len(arrays.X), inputs, outputs, np.asarray(arrays.y, dtype=np.float64)), []
    assert isinstance(data, DatasetSource)
    if dataset is None:
        return None, [Problem(("data", "dataset_id"), f"dataset '{data.dataset_id}' not found")]
    problems = []
    for field, names in (("target", data.target), ("features", data.features or [])):
        for index, name in enumerate(names):
            if name not in dataset.columns:
                problems.append(Problem(("data", field, index),
                                        f"column '{name}' is not in dataset columns {dataset.columns}"))
    overlap = sorted(set(data.target) & set(data.features or []))
    if overlap:
        problems.append(Problem(("data", "features"), f"columns {overlap} are both features and targets"))
    if problems:
        return None, problems
    features = data.features or [name for name in dataset.columns if name not in data.target]
    if not features:
        return None, [Problem(("data", "features"), "no feature columns left after removing the targets")]
    values = from_npy(dataset.values_npy)
    targets = values[:, [dataset.columns.index(name) for name in data.target]]
    return DataShape(dataset.n_rows, features, list(data.target), targets), []


def check_shape(spec: JobSpec, shape: DataShape) -> list[Problem]:
    width = spec.given_width
    if width is not None:
        problems = _check_width(spec, width, shape)
    elif spec.task == "classification":
        problems = _check_labels(None, spec.class_names, shape)
    else:
        problems = []
    n_val = int(round(shape.n_rows * spec.train.val_fraction))
    if shape.n_rows - n_val < 2:
        problems.append(Problem(("train", "val_fraction"),
                                f"{shape.n_rows} rows with val_fraction {spec.train.val_fraction} leave fewer "
                                "than 2 training rows"))
    return problems


def _check_width(spec: JobSpec, width: list[int], shape: DataShape) -> list[Problem]:
    problems = []
    if width[0] != len(shape.input_names):
        problems.append(Problem(("model", "width", 0),
                                f"model.width[0] is {width[0]} but the data has {len(shape.input_names)} input "
                                f"column(s) {shape.input_names}"))
    if spec.task == "regression":
        if width[-1] != len(shape.output_names):
            problems.append(Problem(("model", "width", len(width) - 1),
                                    f"model.width[-1] is {width[-1]} but the data has {len(shape.output_names)} "
                                    f"target column(s) {shape.output_names}"))
    else:
        problems.extend(_check_labels(width[-1], spec.class_names, shape))
    return problems


def _check_labels(n_classes: int | None, class_names: list[str] | None, shape: DataShape) -> list[Problem]:
    """n_classes: model.width[-1], or None when the job chooses the architecture (then the
    classes are 0 .. the largest label)."""
    last = ("model", "width")
    if len(shape.output_names) != 1:
        return [Problem(("data",), f"classification needs one target column of class indices, "
                                   f"got {len(shape.output_names)}")]
    if n_classes is None:
        return _check_inferred_labels(class_names, shape)
    if n_classes < 2:
        return [Problem(last, "classification needs model.width[-1] >= 2 (one output per class)")]
    if class_names is not None and len(class_names) != n_classes:
        return [Problem(("class_names",), f"{len(class_names)} class_names for model.width[-1] = {n_classes} classes")]
    labels = shape.targets[:, 0] if shape.targets is not None else np.empty(0)
    bad = np.flatnonzero((labels != np.round(labels)) | (labels < 0) | (labels >= n_classes))
    if bad.size:
        return [Problem(("data",), f"class labels must be integers in [0, {n_classes - 1}] "
                                   f"(model.width[-1] = {n_classes} classes); row {bad[0]} has {labels[bad[0]]:g}")]
    return []


def _check_inferred_labels(class_names: list[str] | None, shape: DataShape) -> list[Problem]:
    labels = shape.targets[:, 0] if shape.targets is not None else np.empty(0)
    bad = np.flatnonzero((labels != np.round(labels)) | (labels < 0))
    if bad.size:
        return [Problem(("data",), f"class labels must be integers 0, 1, ...; row {bad[0]} has {labels[bad[0]]:g}")]
    n_classes = int(labels.max()) + 1 if labels.size else 0
    if n_classes < 2:
        return [Problem(("data",), "classification needs at least 2 classes (labels 0 and 1 at least)")]
    if class_names is not None and len(class_names) != n_classes:
        return [Problem(("class_names",), f"{len(class_names)} class_names for the {n_classes} classes of the labels "
                                          f"(0 to {n_classes - 1})")]
    return []
