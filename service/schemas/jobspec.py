"""JobSpec: what a training job is asked to do (the body of ``POST /v1/jobs``).

The models check structure and ranges; checks that need the data's shape, the
server's limits or the database (dataset columns) are in ``service/jobs/checks.py``
and report the same ``loc`` paths.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, PlainSerializer, Tag,
                      ValidationInfo, WithJsonSchema, field_validator, model_validator)

from service.formula_grammar import FormulaError, parse_formula

FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$")]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")]
Seed = Annotated[int, Field(ge=0, lt=2**32, description="Random seed (numpy and torch accept 32-bit seeds).")]


class StrictModel(BaseModel):
    # Unknown fields are typos: reject them instead of silently training something else.
    model_config = ConfigDict(extra="forbid")


class FormulaSource(StrictModel):
    """Samples inputs uniformly in ``ranges`` and computes the target from ``formula``."""

    formula: str = Field(max_length=1000, examples=["exp(sin(pi*x0) + x1**2)"])
    ranges: dict[Identifier, tuple[FiniteFloat, FiniteFloat]] = Field(
        min_length=1, description="Input names, in input order, with their [low, high] sampling range.",
        json_schema_extra={"additionalProperties": False},  # keys are names: the pattern above
    )
    n_samples: int = Field(1000, ge=2, le=10_000_000)
    noise: FiniteFloat = Field(0.0, ge=0, description="Std of Gaussian noise added to the target.")
    seed: Seed = 0
    target: Identifier = "y"

    @field_validator("formula")
    @classmethod
    def _formula_in_grammar(cls, text: str) -> str:
        try:
            parse_formula(text)
        except FormulaError as exc:
            raise ValueError(str(exc)) from None
        return text

    @field_validator("ranges")
    @classmethod
    def _ranges_ordered(cls, ranges: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name, (low, high) in ranges.items():
            if not low < high:
                raise ValueError(f"range of '{name}' must have low < high, got [{low}, {high}]")
        return ranges

    @field_validator("ranges")
    @classmethod
    def _variables_have_ranges(cls, ranges: dict[str, tuple[float, float]],
                               info: ValidationInfo) -> dict[str, tuple[float, float]]:
        if "formula" in info.data:  # absent when the formula itself was rejected
            missing = sorted(parse_formula(info.data["formula"]).variables - set(ranges))
            if missing:
                raise ValueError(f"formula uses {missing} but ranges only define {list(ranges)}")
        return ranges


class InlineArrays(StrictModel):
    X: list[list[FiniteFloat]] = Field(min_length=1, description="(n_rows, n_inputs)")
    y: list[list[FiniteFloat]] = Field(
        min_length=1, description="(n_rows, n_outputs); classification: one column of class indices"
    )
    feature_names: list[Identifier] | None = None
    target_names: list[Identifier] | None = None

    @model_validator(mode="after")
    def _rectangular(self) -> "InlineArrays":
        for label, rows in (("X", self.X), ("y", self.y)):
            width = len(rows[0])
            if width == 0:
                raise ValueError(f"{label} row 0 is empty")
            for index, row in enumerate(rows):
                if len(row) != width:
                    raise ValueError(f"{label} row {index} has {len(row)} values, expected {width} like row 0")
        if len(self.X) != len(self.y):
            raise ValueError(f"X has {len(self.X)} rows but y has {len(self.y)}")
        if self.feature_names is not None and len(self.feature_names) != len(self.X[0]):
            raise ValueError(f"feature_names has {len(self.feature_names)} names for {len(self.X[0])} columns of X")
        if self.target_names is not None and len(self.target_names) != len(self.y[0]):
            raise ValueError(f"target_names has {len(self.target_names)} names for {len(self.y[0])} columns of y")
        return self


class InlineSource(StrictModel):
    inline: InlineArrays


class DatasetSource(StrictModel):
    dataset_id: str = Field(max_length=64)
    target: list[str] = Field(min_length=1, description="Target column names.")
    features: list[str] | None = Field(None, description="Input column names; default: all other columns.")


DATA_SOURCE_TAGS = ("formula", "inline", "dataset_id")


def _data_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        kinds = [kind for kind in DATA_SOURCE_TAGS if kind in value]
        if len(kinds) == 1:
            return kinds[0]
    elif isinstance(value, BaseModel):
        return {FormulaSource: "formula", InlineSource: "inline", DatasetSource: "dataset_id"}.get(type(value))
    return None


DataSource = Annotated[
    Union[
        Annotated[FormulaSource, Tag("formula")],
        Annotated[InlineSource, Tag("inline")],
        Annotated[DatasetSource, Tag("dataset_id")],
    ],
    Discriminator(
        _data_kind,
        custom_error_type="data_source",
        custom_error_message="data must be an object with exactly one of 'formula', 'inline' or 'dataset_id'",
    ),
]


def _auto_is_none(value: Any) -> Any:
    return None if value == "auto" else value


# "auto" travels as None inside the service (a nullable list keeps error locations like
# model.width.0 free of union branch names) and is written back as "auto".
Width = Annotated[
    Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=2)] | None,
    BeforeValidator(_auto_is_none),
    PlainSerializer(lambda width: "auto" if width is None else width),
    WithJsonSchema({"anyOf": [{"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2},
                              {"const": "auto"}],
                    "title": "Width", "default": "auto", "examples": [[2, 5, 1], "auto"]}),
]


class ModelSpec(StrictModel):
    width: Width = Field(
        "auto", validate_default=True,
        description="Layer widths [inputs, hidden..., outputs], or \"auto\" (the default): the job chooses "
                    "width, depth, grid schedule and regularisation by validation error within "
                    "train.time_budget_seconds.")
    grid: int | None = Field(None, ge=1, description="Default and required value: train.grid_schedule[0].")
    k: int = Field(3, ge=1, le=5, description="Spline order (a given width only).")
    seed: Seed = Field(0, description="Initial weights of a given width (the automatic search seeds from "
                                      "train.seed).")


class TrainSpec(StrictModel):
    optimizer: Literal["lbfgs", "adam"] = "lbfgs"
    grid_schedule: list[Annotated[int, Field(ge=1)]] = Field([3, 5, 10, 20], min_length=1, max_length=20)
    steps_per_grid: int = Field(200, ge=1)
    lr: FiniteFloat | None = Field(None, gt=0, description="Default: 1.0 for lbfgs, 0.01 for adam.")
    batch_size: int | None = Field(None, ge=1)
    lamb: FiniteFloat = Field(0.0, ge=0)
    lamb_l1: FiniteFloat = Field(1.0, ge=0)
    lamb_entropy: FiniteFloat = Field(2.0, ge=0)
    val_fraction: FiniteFloat = Field(0.2, ge=0, lt=0.9)
    patience: int | None = Field(None, ge=1)
    seed: Seed = 0
    time_budget_seconds: FiniteFloat = Field(
        120.0, gt=0, le=3600,
        description="Seconds the automatic architecture search may take (model omitted or model.width \"auto\"): "
                    "when it runs out, the best candidate so far is kept. A given width trains its full schedule.")

    @field_validator("grid_schedule")
    @classmethod
    def _increasing(cls, schedule: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(schedule, schedule[1:])):
            raise ValueError(f"grid_schedule must be strictly increasing, got {schedule}")
        return schedule

    @property
    def resolved_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1.0 if self.optimizer == "lbfgs" else 0.01


# The names of kanmodel.symbolic.library.LIBRARY, in its order. Mirrored here because the
# gateway never imports kanmodel (it loads torch); tests/test_api_jobs.py checks the two agree.
SYMBOLIC_FUNCTIONS: tuple[str, ...] = (
    "zero", "x", "x^2", "x^3", "x^4", "1/x", "1/x^2", "sqrt", "log", "abs", "exp", "sin", "cos", "tan",
    "tanh", "arcsin", "arctan", "gaussian")


class SymbolicSpec(StrictModel):
    enabled: bool = True
    mode: Literal["discover", "network"] | None = Field(
        None, description="\"discover\" (the default for regression): formula discovery searches network shapes "
                          "and spaces (raw, log) itself and returns the most compact formula that fits the held-out "
                          "rows; a given model.width is its first candidate. \"network\" (the default and only "
                          "mode for classification): the trained network's edges are snapped to library "
                          "functions.")
    prune: bool = Field(False, description="network mode: prune the trained network before extraction.")
    prune_threshold: FiniteFloat = Field(0.01, ge=0)
    library: list[str] | None = Field(
        None, min_length=1, max_length=50, examples=[["x", "x^2", "sin", "exp"]],
        description=f"Functions an edge may be snapped to (default: all of {list(SYMBOLIC_FUNCTIONS)}).")
    time_budget_seconds: FiniteFloat = Field(
        180.0, gt=0, le=3600,
        description="Seconds formula search may take. discover mode returns the best formula found so far when "
                    "it runs out; past the budget plus a grace period (or in network mode, past the budget) the "
                    "search is stopped and the model is registered without a formula.")

    @field_validator("library")
    @classmethod
    def _known_functions(cls, library: list[str] | None) -> list[str] | None:
        if library is None:
            return None
        unknown = [name for name in library if name not in SYMBOLIC_FUNCTIONS]
        if unknown:
            raise ValueError(f"unknown function(s) {unknown}; known: {list(SYMBOLIC_FUNCTIONS)}")
        return list(dict.fromkeys(library))  # repeated names are one candidate


class ExportSpec(StrictModel):
    onnx: bool = True
    plots: bool = True


class JobSpec(StrictModel):
    """The smallest job is ``{"name": ..., "data": ...}`` (plus ``"task": "classification"``): the
    architecture is chosen by validation error and, for regression, the formula is discovered."""

    name: Name = Field(examples=["hellokan"])
    task: Literal["regression", "classification"] = "regression"
    data: DataSource
    model: ModelSpec | None = Field(
        None, description="Omitted (or width \"auto\"): the architecture is chosen automatically.")
    train: TrainSpec = TrainSpec()
    symbolic: SymbolicSpec = SymbolicSpec()
    export: ExportSpec = ExportSpec()
    device: Literal["auto", "cpu", "cuda"] = "auto"
    class_names: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        None, description="Classification: a name per class index (default '0', '1', ...).")

    @field_validator("class_names")
    @classmethod
    def _distinct(cls, names: list[str] | None) -> list[str] | None:
        if names is not None and len(set(names)) != len(names):
            raise ValueError(f"class_names must be distinct, got {names}")
        return names

    @field_validator("train")
    @classmethod
    def _auto_needs_validation_rows(cls, train: TrainSpec, info: ValidationInfo) -> TrainSpec:
        if "model" not in info.data:  # the model itself was rejected: that error is enough
            return train
        model = info.data["model"]
        if (model is None or model.width is None) and train.val_fraction == 0:
            raise ValueError("train.val_fraction must be above 0 when the architecture is chosen automatically "
                             "(it is chosen by validation error); give model.width to train without validation rows")
        return train

    @field_validator("symbolic")
    @classmethod
    def _discover_is_for_regression(cls, symbolic: SymbolicSpec, info: ValidationInfo) -> SymbolicSpec:
        if info.data.get("task") == "classification" and symbolic.mode == "discover":
            raise ValueError("symbolic.mode 'discover' is for regression; classification jobs use 'network'")
        return symbolic

    @property
    def given_width(self) -> list[int] | None:
        """The width the user chose; None when the job chooses the architecture."""
        return None if self.model is None else self.model.width

    @property
    def auto_architecture(self) -> bool:
        return self.given_width is None

    @property
    def symbolic_mode(self) -> str:
        return self.symbolic.mode or ("discover" if self.task == "regression" else "network")

    def class_output_names(self, n_classes: int) -> list[str]:
        """Classification: the model's outputs are one logit per class, named by class."""
        return self.class_names or [str(k) for k in range(n_classes)]

    @property
    def queue(self) -> str:
        """The Celery queue: ``cuda`` jobs need a worker with a GPU."""
        return "gpu" if self.device == "cuda" else "train"

    @property
    def total_steps(self) -> int:
        return len(self.train.grid_schedule) * self.train.steps_per_grid
