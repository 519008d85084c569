"""The trainer's progress line reports throughput in the model's own unit."""

import types

import numpy as np
import pytest

import keras_zoo
from keras_zoo.training.callbacks import EpochSummary


class _Counter:
    def __init__(self):
        self.value = 0

    def numpy(self):
        return np.int64(self.value)


@pytest.mark.parametrize("preset, unit, per_example", [
    ("lenet5", "img", 1), ("transformer_tiny_gettext", "seq", 1), ("gpt_tiny", "tok", None)])
def test_progress_line_names_the_models_unit(preset, unit, per_example):
    model = keras_zoo.from_preset(preset)
    if per_example is None:
        per_example = model.sequence_length()
    iterations = _Counter()
    lines = []
    summary = EpochSummary(total_steps=10, epochs=1, global_batch_size=4, print_fn=lines.append)
    summary.set_model(types.SimpleNamespace(optimizer=types.SimpleNamespace(iterations=iterations),
                                          throughput_units=model.throughput_units))
    summary.on_epoch_begin(0)
    iterations.value = 10
    summary.on_epoch_end(0, {"loss": 1.0})
    (line,) = lines
    assert line.endswith(f" {unit}/s"), line
    assert model.throughput_units(40) == (40 * per_example, unit)
