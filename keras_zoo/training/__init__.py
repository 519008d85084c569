"""Pieces the generic trainer (experiments/train.py) is made of: step checkpoints
that survive SIGKILL, best/last presets, readable progress, training curves,
Adam/AdamW with a fused update."""

from keras_zoo.training.callbacks import (
    BestPreset,
    CheckpointError,
    EpochSummary,
    StepCheckpoint,
    StopAtStep,
    check_run_record,
    checkpoint_problem,
    checkpoints,
    latest_checkpoint,
    restore_checkpoint,
    restore_latest,
    write_run_record,
)
from keras_zoo.training.curves import read_metrics_csv, write_curves
from keras_zoo.training.optimizers import Adam, AdamW, AdamWeightDecay

__all__ = ["Adam", "AdamW", "AdamWeightDecay", "BestPreset", "CheckpointError", "EpochSummary",
           "StepCheckpoint",
           "StopAtStep", "check_run_record", "checkpoint_problem", "checkpoints",
           "latest_checkpoint", "read_metrics_csv", "restore_checkpoint", "restore_latest",
           "write_curves", "write_run_record"]
