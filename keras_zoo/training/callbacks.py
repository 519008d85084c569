"""Callbacks of the generic trainer: kill-safe checkpoints, best preset, progress.

Why not ``keras.callbacks.BackupAndRestore``: it restores at epoch
granularity only (the saved batch index is ignored on restore), writes the
weights file and then its metadata (a kill between the two restores weights
of one step with the counter of another), and hides the restored step from the
caller — but the trainer needs that step *before* ``fit`` to start the data
stream at the right batch. Here a checkpoint is one ``.weights.h5`` file (model
+ optimizer state, so the step counter travels inside the file) written to a
temporary name and renamed, so any visible checkpoint is complete.
"""

import json
import os
import re
import shutil
import tempfile
import time

import keras

from keras_zoo.backend import tf

_CKPT = re.compile(r"ckpt-(\d+)\.weights\.h5$")


def _is_remote(path):
    return "://" in str(path)


def _join(*parts):
    return "/".join([str(parts[0]).rstrip("/")] + [str(p).strip("/") for p in parts[1:]])


def _publish(local_file, target):
    """Moves a finished local file to ``target`` (local: atomic rename)."""
    if _is_remote(target):
        tf.io.gfile.copy(local_file, target, overwrite=True)  # one GCS object: atomic
        os.remove(local_file)
    else:
        os.replace(local_file, target)


def latest_checkpoint(directory):
    """(step, path) of the newest complete checkpoint in ``directory``, or None."""
    if not tf.io.gfile.exists(directory):
        return None
    found = [(int(m.group(1)), _join(directory, name))
             for name in tf.io.gfile.listdir(directory)
             if (m := _CKPT.match(name.rstrip("/")))]
    return max(found) if found else None


def restore_checkpoint(model, path):
    """Loads model + optimizer state from ``path``; returns the restored step."""
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)  # slots must exist to be filled
    local = path
    if _is_remote(path):
        local = os.path.join(tempfile.mkdtemp(prefix="keras_zoo_ckpt_"), "ckpt.weights.h5")
        tf.io.gfile.copy(path, local, overwrite=True)
    model.load_weights(local)
    return int(model.optimizer.iterations.numpy()) if model.optimizer is not None else 0


class StepCheckpoint(keras.callbacks.Callback):
    """Saves ``ckpt-<step>.weights.h5`` (weights + optimizer) at each epoch end,
    keeping the newest ``keep``. A run killed at any moment restarts from the
    newest file and loses at most the steps since it was written."""

    def __init__(self, directory, keep=2):
        super().__init__()
        self.directory = str(directory)
        self.keep = keep
        self.last_saved_step = None

    def on_epoch_end(self, epoch, logs=None):
        self.save()

    def save(self):
        step = int(self.model.optimizer.iterations.numpy())
        if step == self.last_saved_step:
            return
        tf.io.gfile.makedirs(self.directory)
        target = _join(self.directory, f"ckpt-{step:09d}.weights.h5")
        if _is_remote(target):
            tmp_dir = tempfile.mkdtemp(prefix="keras_zoo_ckpt_")
            tmp = os.path.join(tmp_dir, "tmp.weights.h5")
        else:
            tmp_dir, tmp = None, os.path.join(self.directory, f"tmp-{step}.weights.h5")
        self.model.save_weights(tmp, overwrite=True)
        _publish(tmp, target)
        if tmp_dir:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        self.last_saved_step = step
        names = tf.io.gfile.listdir(self.directory)
        old = sorted(int(m.group(1)) for n in names if (m := _CKPT.match(n)))
        for s in old[:-self.keep]:
            tf.io.gfile.remove(_join(self.directory, f"ckpt-{s:09d}.weights.h5"))
        for n in names:  # half-written files of a run that was killed mid-save
            if n.startswith("tmp-") and n.endswith(".weights.h5"):
                tf.io.gfile.remove(_join(self.directory, n))


class BestPreset(keras.callbacks.Callback):
    """Writes the model as a preset to ``directory`` whenever ``monitor``
    improves; the best value survives restarts in ``<directory>/score.json``."""

    def __init__(self, directory, monitor, mode="max", description=""):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.directory, self.monitor, self.mode = str(directory), monitor, mode
        self.description = description
        self.score_path = _join(self.directory, "score.json")
        self.best = None
        self.best_epoch = None
        if tf.io.gfile.exists(self.score_path):
            with tf.io.gfile.GFile(self.score_path) as f:
                saved = json.load(f)
            self.best, self.best_epoch = saved["value"], saved["epoch"]

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        value = float(value)
        better = self.best is None or (value > self.best if self.mode == "max"
                                       else value < self.best)
        if better:
            self.best, self.best_epoch = value, epoch + 1
            self.model.save_to_preset(self.directory, self.description)
            with tf.io.gfile.GFile(self.score_path, "w") as f:
                json.dump({"monitor": self.monitor, "value": value, "epoch": epoch + 1,
                           "step": int(self.model.optimizer.iterations.numpy())}, f)


class StopAtStep(keras.callbacks.Callback):
    """Ends training after global step ``total_steps`` although the last epoch
    (``steps_per_epoch`` long) is not finished: ``--train_steps`` need not be a
    multiple of the evaluation interval."""

    def __init__(self, total_steps, steps_per_epoch):
        super().__init__()
        self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._epoch * self.steps_per_epoch + batch + 1 >= self.total_steps:
            self.model.stop_training = True


class EpochSummary(keras.callbacks.Callback):
    """One line per epoch: step, metrics, time and throughput."""

    def __init__(self, total_steps, steps_per_epoch, epochs, global_batch_size, print_fn=print):
        super().__init__()
        self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch
        self.epochs, self.global_batch_size = epochs, global_batch_size
        self.print_fn = print_fn
        self.last_logs = {}
        self._start = None
        self._first_step = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._first_step = epoch * self.steps_per_epoch

    def on_epoch_end(self, epoch, logs=None):
        self.last_logs = dict(logs or {})
        seconds = time.perf_counter() - self._start
        step = min((epoch + 1) * self.steps_per_epoch, self.total_steps)
        rate = (step - self._first_step) * self.global_batch_size / max(seconds, 1e-9)
        metrics = "  ".join(f"{k} {float(v):.4f}" for k, v in self.last_logs.items()
                            if k != "learning_rate")
        width = len(str(self.epochs))
        self.print_fn(f"epoch {epoch + 1:>{width}}/{self.epochs}  step {step}/"
                      f"{self.total_steps}  {metrics}  {seconds:.1f}s  {rate:,.0f} img/s")
