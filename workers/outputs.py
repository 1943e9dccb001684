"""What a trained job leaves behind besides the model: pruned network, formulas
(discovered from the data, or extracted from the trained network), ONNX graphs, plots.
Each step runs when the spec asks for it; a step that fails is recorded as a note
instead of failing the job, because the trained network itself is still worth
registering."""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

import kanmodel
from kanmodel.export import formula_to_onnx, to_onnx
from kanmodel.plots import plot_loss, plot_network
from service.schemas.jobspec import JobSpec
from service.schemas.resources import FormulaOut
from workers.finite import finite_or_none
from workers.formula_variables import formula_variables, renaming_note
from workers.symbolic_runner import ExtractedFormula, SymbolicRequest, SymbolicStopped, search_in_subprocess
from workers.training_data import TrainingData

log = logging.getLogger(__name__)
PLOT_ROWS = 2_000


@dataclass(frozen=True)
class ArtifactBlob:
    kind: str
    filename: str
    media_type: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class Outputs:
    model: kanmodel.KAN
    formulas: list[ExtractedFormula] = field(default_factory=list)  # one per output
    artifacts: list[ArtifactBlob] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    discovery: dict | None = None  # discover mode: how the formula was found (space, width, attempts...)

    def formula_rows(self, output_names: list[str]) -> list[FormulaOut]:
        return [FormulaOut(output_index=i, output_name=output_names[i], expression=f.text, latex=f.latex,
                           r2=finite_or_none(f.r2), rmse=finite_or_none(f.rmse), exact=f.exact)
                for i, f in enumerate(self.formulas)]


class OutputBuilder:
    def __init__(self, spec: JobSpec, data: TrainingData, set_phase: Callable[[str], None],
                 should_stop: Callable[[], bool], on_discovery: Callable[[dict], None] | None = None):
        self.spec, self.data, self.set_phase, self.should_stop = spec, data, set_phase, should_stop
        self.on_discovery = on_discovery
        self.variables = formula_variables(data.input_names)

    def build(self, model: kanmodel.KAN) -> Outputs:
        """Prune and extract or discover formulas (the slow, version-independent part)."""
        outputs = Outputs(model=model)
        spec = self.spec
        if not spec.symbolic.enabled:
            return outputs
        if spec.symbolic_mode == "discover":
            self.set_phase("discovery")
            self._search(outputs, self._discover_request())
            return outputs
        if spec.symbolic.prune:
            self._step(outputs, "prune", lambda: self._prune(outputs))
        if spec.task == "regression":
            self.set_phase("symbolic")
            self._search(outputs, self._network_request(outputs))
        else:
            outputs.notes.append("symbolic extraction skipped: it is implemented for regression only")
        return outputs

    def artifacts(self, outputs: Outputs, history: list[dict], version: int) -> list[ArtifactBlob]:
        """The files of model version ``version`` (its number is written into the ONNX metadata)."""
        spec = self.spec
        outputs.artifacts = [ArtifactBlob("checkpoint", f"{spec.name}-v{version}.kan", "application/octet-stream",
                                          kanmodel.to_bytes(outputs.model))]
        if spec.export.onnx:
            self.set_phase("export")
            self._step(outputs, "ONNX export", lambda: self._export(outputs, version))
        if spec.export.plots:
            self.set_phase("plots")
            self._step(outputs, "plots", lambda: self._plots(outputs, history))
        return outputs.artifacts

    def _step(self, outputs: Outputs, what: str, run: Callable[[], None]) -> None:
        try:
            run()
        except Exception as exc:
            log.exception("%s failed", what)
            outputs.notes.append(f"{what} failed: {type(exc).__name__}: {exc}"[:500])

    def _prune(self, outputs: Outputs) -> None:
        outputs.model = kanmodel.prune(outputs.model, self.data.X, threshold=self.spec.symbolic.prune_threshold)

    def _network_request(self, outputs: Outputs) -> SymbolicRequest:
        data, train = self.data, self.spec.train
        # The rows fit held out: formula metrics are measured on rows the network never trained on.
        fit_rows, val_rows = kanmodel.split_rows(len(data.X), train.val_fraction, train.seed)
        if len(val_rows) == 0:
            val_rows = fit_rows
            outputs.notes.append("formula R2/RMSE are measured on the training rows (val_fraction is 0)")
        return SymbolicRequest(
            model_blob=kanmodel.to_bytes(outputs.model), X_fit=data.X[fit_rows], y_fit=data.y[fit_rows],
            X_val=data.X[val_rows], y_val=data.y[val_rows], library=self.spec.symbolic.library,
            variables=self.variables, time_budget=self.spec.symbolic.time_budget_seconds)

    def _discover_request(self) -> SymbolicRequest:
        """discover sees every row and holds out its own (train.val_fraction of them, seeded by
        train.seed), so the job's formula is the one ``kanmodel.discover(X, y, variables,
        seed=..., val_fraction=...)`` finds."""
        data, spec = self.data, self.spec
        empty = np.empty((0, data.X.shape[1]))
        return SymbolicRequest(
            model_blob=None, X_fit=data.X, y_fit=data.y, X_val=empty, y_val=np.empty((0, data.y.shape[1])),
            library=spec.symbolic.library, variables=self.variables,
            time_budget=spec.symbolic.time_budget_seconds, mode="discover", seed=spec.train.seed,
            val_fraction=spec.train.val_fraction, first_width=spec.given_width)

    def _search(self, outputs: Outputs, request: SymbolicRequest) -> None:
        try:
            on_progress = None if self.on_discovery is None else partial(self.on_discovery,
                                                                         time_budget=request.time_budget)
            result = search_in_subprocess(request, self.should_stop, on_progress)
        except SymbolicStopped as exc:
            outputs.notes.append(str(exc))
            return
        outputs.formulas = result.formulas
        note = renaming_note(self.data.input_names, self.variables)
        if note and outputs.formulas:
            outputs.notes.append(note)
        if request.mode == "discover":
            outputs.discovery = result.summary

    def _export(self, outputs: Outputs, version: int) -> None:
        names = dict(name=self.spec.name, version=version, output_names=self.data.output_names)
        outputs.artifacts.append(ArtifactBlob(
            "onnx", f"{self.spec.name}-v{version}.onnx", "application/octet-stream",
            to_onnx(outputs.model, input_names=self.data.input_names, **names)))
        if outputs.formulas:
            outputs.artifacts.append(ArtifactBlob(
                "formula_onnx", f"{self.spec.name}-v{version}-formula.onnx", "application/octet-stream",
                formula_to_onnx([f.expr for f in outputs.formulas], variables=self.variables,
                                task=self.spec.task, **names)))

    def _plots(self, outputs: Outputs, history: list[dict]) -> None:
        outputs.artifacts.append(ArtifactBlob("plot_network", f"{self.spec.name}-network.png", "image/png",
                                              plot_network(outputs.model, X=self.data.X[:PLOT_ROWS],
                                                           names=self.data.input_names)))
        if history:
            outputs.artifacts.append(ArtifactBlob("plot_loss", f"{self.spec.name}-loss.png", "image/png",
                                                  plot_loss(history)))
