"""kanmodel: B-spline Kolmogorov-Arnold networks (train, refine, checkpoint).

The public names are fixed by docs/kanmodel-api.md.
"""
from kanmodel.checkpoint import CheckpointError, from_bytes, load, save, to_bytes
from kanmodel.layer import KANLayer
from kanmodel.model import KAN
from kanmodel.training import FitResult, TrainingDiverged, TrainProgress, fit

__all__ = [
    "KAN", "KANLayer", "fit", "FitResult", "TrainProgress", "TrainingDiverged",
    "save", "load", "to_bytes", "from_bytes", "CheckpointError",
]
