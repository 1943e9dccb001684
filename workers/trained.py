"""What training hands to registration, and what a resumed job starts from."""
from __future__ import annotations

from dataclasses import dataclass

import kanmodel


@dataclass
class Resume:
    model: kanmodel.KAN
    start_stage: int
    history: list[dict]


@dataclass
class Trained:
    """The network a job registers, with its losses and (automatic architecture) the search's record."""

    model: kanmodel.KAN
    train_loss: float | None
    val_loss: float | None
    steps: int | None = None
    architecture: dict | None = None
