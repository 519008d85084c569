"""Pieces the generic trainer (experiments/train.py) is made of: step checkpoints
that survive SIGKILL, best/last presets, readable progress, training curves."""

from keras_zoo.training.callbacks import (
    BestPreset,
    EpochSummary,
    StepCheckpoint,
    StopAtStep,
    latest_checkpoint,
    restore_checkpoint,
)
from keras_zoo.training.curves import read_metrics_csv, write_curves

__all__ = ["BestPreset", "EpochSummary", "StepCheckpoint", "StopAtStep",
           "latest_checkpoint", "read_metrics_csv", "restore_checkpoint", "write_curves"]
