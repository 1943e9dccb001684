"""kanmodel: B-spline Kolmogorov-Arnold networks (train, refine, checkpoint).

The public names are fixed by docs/kanmodel-api.md.
"""
from kanmodel.checkpoint import CheckpointError, from_bytes, load, save, to_bytes
from kanmodel.layer import KANLayer
from kanmodel.model import KAN
from kanmodel.training import FitOptions, FitResult, TrainingDiverged, TrainProgress, fit, split_rows
from kanmodel.auto_fit import AutoFitResult, auto_fit

__all__ = [
    "KAN", "KANLayer", "fit", "FitResult", "TrainProgress", "TrainingDiverged",
    "save", "load", "to_bytes", "from_bytes", "CheckpointError",
    "FitOptions", "split_rows", "auto_fit", "AutoFitResult",
]

# issue 3: pruning, symbolic formulas, discover()
from kanmodel.discover import Discovery, discover  # noqa: E402
from kanmodel.pruning import prune  # noqa: E402
from kanmodel.symbolic import Formula, auto_symbolic, suggest  # noqa: E402

__all__ += ["prune", "auto_symbolic", "suggest", "Formula", "discover", "Discovery"]
