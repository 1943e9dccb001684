"""The arrays a job trains on, from its JobSpec's data source."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.datasets.formula_data import DataError, generate
from service.datasets.tables import from_npy
from service.db.models import Dataset
from service.schemas.jobspec import FormulaSource, InlineSource, JobSpec


@dataclass(frozen=True)
class TrainingData:
    X: np.ndarray  # (n_rows, n_inputs) float64
    y: np.ndarray  # (n_rows, n_targets) float64; classification: one column of class indices
    input_names: list[str]
    output_names: list[str]  # the model's outputs: targets, or classes for classification


def load_training_data(db: Session, owner_key_id: str, spec: JobSpec) -> TrainingData:
    data = _load(db, owner_key_id, spec)
    if spec.task == "classification":
        # A given width fixes the classes; otherwise they are 0 .. the largest label.
        n_classes = spec.given_width[-1] if spec.given_width else int(data.y[:, 0].max()) + 1
        return TrainingData(data.X, data.y, data.input_names, spec.class_output_names(n_classes))
    return data


def _load(db: Session, owner_key_id: str, spec: JobSpec) -> TrainingData:
    data = spec.data
    if isinstance(data, FormulaSource):
        X, y = generate(data)
        return TrainingData(X, y, list(data.ranges), [data.target])
    if isinstance(data, InlineSource):
        X = np.asarray(data.inline.X, dtype=np.float64)
        y = np.asarray(data.inline.y, dtype=np.float64)
        inputs = data.inline.feature_names or [f"x{i}" for i in range(X.shape[1])]
        outputs = data.inline.target_names or ([f"y{i}" for i in range(y.shape[1])] if y.shape[1] > 1 else ["y"])
        return TrainingData(X, y, inputs, outputs)
    dataset = db.scalar(sa.select(Dataset).where(Dataset.id == data.dataset_id, Dataset.owner_key_id == owner_key_id)
                        .options(sa.orm.undefer(Dataset.values_npy)))
    if dataset is None:
        raise DataError(f"dataset '{data.dataset_id}' no longer exists")
    values = from_npy(dataset.values_npy)
    features = data.features or [name for name in dataset.columns if name not in data.target]
    missing = [name for name in [*features, *data.target] if name not in dataset.columns]
    if missing:
        raise DataError(f"columns {missing} are not in dataset '{dataset.id}' (columns {dataset.columns})")
    X = values[:, [dataset.columns.index(name) for name in features]]
    y = values[:, [dataset.columns.index(name) for name in data.target]]
    return TrainingData(X, y, features, list(data.target))
