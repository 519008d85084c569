"""Callbacks of the generic trainer: kill-safe checkpoints, best preset, progress.

Why not ``keras.callbacks.BackupAndRestore``: it restores at epoch
granularity only (the saved batch index is ignored on restore), writes the
weights file and then its metadata (a kill between the two restores weights
of one step with the counter of another), and hides the restored step from the
caller — but the trainer needs that step *before* ``fit`` to start the data
stream at the right batch. Here a checkpoint is one ``.weights.h5`` file (model
+ optimizer state, so the step counter travels inside the file) written to a
temporary name and renamed, with a sidecar holding its size and sha256, so a
file torn later (a full disk, a copy cut short) is recognised on resume and
the previous checkpoint is used instead.
"""

import json
import os
import re
import shutil
import tempfile
import time
import warnings

import keras

from keras_zoo.backend import tf

from keras_zoo.presets import preset_problem, sha256_of

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


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (unreadable, or of another run); the
    message names the file and what to do."""


def _sidecar(path):
    """``ckpt-N.weights.h5`` -> ``ckpt-N.json``: the step, size and sha256 of the file."""
    return str(path)[: -len(".weights.h5")] + ".json"


def checkpoints(directory):
    """[(step, path)] of the checkpoint files in ``directory``, newest first."""
    if not tf.io.gfile.exists(directory):
        return []
    found = [(int(m.group(1)), _join(directory, name))
             for name in tf.io.gfile.listdir(directory)
             if (m := _CKPT.match(name.rstrip("/")))]
    return sorted(found, reverse=True)


def latest_checkpoint(directory):
    """(step, path) of the newest checkpoint file in ``directory``, or None
    (not verified: ``restore_latest`` verifies and falls back)."""
    found = checkpoints(directory)
    return found[0] if found else None


def _local_copy(path):
    """(local path, temporary folder or None) of a possibly remote file."""
    if not _is_remote(path):
        return path, None
    tmp_dir = tempfile.mkdtemp(prefix="keras_zoo_ckpt_")
    local = os.path.join(tmp_dir, "ckpt.weights.h5")
    tf.io.gfile.copy(path, local, overwrite=True)
    return local, tmp_dir


def checkpoint_problem(path, local=None):
    """Why the checkpoint at ``path`` cannot be trusted, or None when it is whole.

    A checkpoint written by ``StepCheckpoint`` has a sidecar ``ckpt-N.json``
    holding its size and sha256 (written before the file is published), so a
    torn or altered file is found before a byte of it is loaded. One without a
    sidecar (older runs) must at least open as HDF5 with every dataset readable.
    """
    local = local or path
    sidecar = _sidecar(path)
    if tf.io.gfile.exists(sidecar):
        try:
            with tf.io.gfile.GFile(sidecar) as f:
                meta = json.load(f)
            expected_size, expected_sha = int(meta["bytes"]), str(meta["sha256"])
        except (ValueError, KeyError, TypeError) as e:
            return f"its sidecar {os.path.basename(sidecar)} is unreadable ({e})"
        size = os.path.getsize(local)
        if size != expected_size:
            return f"{size:,} bytes, {expected_size:,} written (torn)"
        if sha256_of(local) != expected_sha:
            return "sha256 differs from the one recorded when it was written"
        return None
    import h5py

    try:
        with h5py.File(local, "r") as f:
            f.visititems(lambda name, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)
    except Exception as e:  # noqa: BLE001  (h5py raises OSError, KeyError, RuntimeError...)
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return None


def restore_checkpoint(model, path):
    """Loads model + optimizer state from ``path``; returns the restored step."""
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)  # slots must exist to be filled
    local, tmp_dir = _local_copy(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.load_weights(local)
    finally:
        if tmp_dir:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    # Keras only warns when it skips the optimizer's state or a nested layer's
    # weights; a resume from half a checkpoint is no resume.
    skipped = [str(w.message) for w in caught if "Skipping" in str(w.message)]
    if skipped:
        raise ValueError(skipped[0].strip().splitlines()[0])
    return int(model.optimizer.iterations.numpy()) if model.optimizer is not None else 0


def restore_latest(model, directory, print_fn=print):
    """Restores the newest whole checkpoint of ``directory``; returns
    ``(step, path)`` or None when there is none. A torn or corrupt newer one is
    renamed to ``<name>.unreadable`` and the previous one is used, with one line
    saying so; if no checkpoint is whole, CheckpointError names them all."""
    found = checkpoints(directory)
    problems = []
    for step, path in found:
        local, tmp_dir = _local_copy(path)
        try:
            problem = checkpoint_problem(path, local)
        finally:
            if tmp_dir:
                shutil.rmtree(tmp_dir, ignore_errors=True)
        if problem:
            problems.append(f"{os.path.basename(path)}: {problem}")
            tf.io.gfile.rename(path, path + ".unreadable", overwrite=True)
            print_fn(f"warning: checkpoint {path} is unreadable ({problem}); set it aside "
                     f"as {os.path.basename(path)}.unreadable and trying the previous one")
            continue
        try:
            restored = restore_checkpoint(model, path)
        except Exception as e:  # noqa: BLE001  (Keras raises ValueError/KeyError per layer)
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"checkpoint {path} does not fit this model ({reason}): it belongs to "
                "another run; pass a new --model_dir") from None
        if restored != step:
            raise CheckpointError(f"checkpoint {path} holds step {restored}, its name says "
                                  f"{step}: it was renamed or belongs to another run")
        return step, path
    if problems:
        raise CheckpointError(
            f"no readable checkpoint in {directory} ({'; '.join(problems)}): move the folder "
            "away to train from scratch, or pass a new --model_dir")
    return None


def check_run_record(directory, record, model_dir=None):
    """Makes sure the checkpoints in ``directory`` belong to the run that
    ``record`` (a flat dict of JSON values) describes: when ``run.json`` and
    checkpoints are there, every setting both name must agree, else
    CheckpointError names the first that differs and what to do."""
    path = _join(directory, "run.json")
    if not (tf.io.gfile.exists(path) and checkpoints(directory)):
        return
    try:
        with tf.io.gfile.GFile(path) as f:
            saved = json.load(f)
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")  # noqa: TRY004  (reported as below)
    except ValueError as e:
        raise CheckpointError(f"{path} is not valid ({e}); it records which run the "
                              "checkpoints belong to: restore it or pass a new "
                              "--model_dir") from None
    record = json.loads(json.dumps(record))  # tuples -> lists, as saved
    for key, value in record.items():
        if key in saved and saved[key] != value:
            raise CheckpointError(
                f"--model_dir {model_dir or directory} holds checkpoints of a run with "
                f"{key}={_short(saved[key])}, this one has {key}={_short(value)}: resume "
                "with the same setting, or pass a new --model_dir")


def write_run_record(directory, record):
    """Writes ``run.json`` (what the checkpoints in ``directory`` belong to)."""
    path = _join(directory, "run.json")
    tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


def _short(value):
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


class StepCheckpoint(keras.callbacks.Callback):
    """Saves ``ckpt-<step>.weights.h5`` (weights + optimizer) at each epoch end,
    keeping the newest ``keep``. A run killed at any moment restarts from the
    newest whole file and loses at most the steps since it was written. Each
    file has a sidecar ``ckpt-<step>.json`` (size, sha256), written first, by
    which ``restore_latest`` recognises a torn file."""

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
        meta = {"step": step, "bytes": os.path.getsize(tmp), "sha256": sha256_of(tmp)}
        sidecar = _sidecar(target)
        with tf.io.gfile.GFile(sidecar + ".tmp", "w") as f:
            json.dump(meta, f)
        tf.io.gfile.rename(sidecar + ".tmp", sidecar, overwrite=True)
        _publish(tmp, target)
        if tmp_dir:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        self.last_saved_step = step
        names = tf.io.gfile.listdir(self.directory)
        old = sorted(int(m.group(1)) for n in names if (m := _CKPT.match(n)))
        for s in old[:-self.keep]:
            tf.io.gfile.remove(_join(self.directory, f"ckpt-{s:09d}.weights.h5"))
        kept = {f"ckpt-{s:09d}.json" for s in old[-self.keep:]}
        for n in names:
            # half-written files of a run killed mid-save; sidecars of removed files
            if (n.startswith("tmp-") and n.endswith(".weights.h5")) or n.endswith(".json.tmp") \
                    or (n.startswith("ckpt-") and n.endswith(".json") and n not in kept):
                tf.io.gfile.remove(_join(self.directory, n))


class BestPreset(keras.callbacks.Callback):
    """Writes the model as a preset to ``directory`` whenever ``monitor``
    improves; the best value survives restarts in ``<directory>/score.json``."""

    def __init__(self, directory, monitor, mode="max", description="", print_fn=print):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.directory, self.monitor, self.mode = str(directory), monitor, mode
        self.description = description
        self.score_path = _join(self.directory, "score.json")
        self.best = None
        self.best_epoch = None
        if tf.io.gfile.exists(self.score_path):
            # A run killed while writing the preset leaves it torn: then the score
            # is forgotten, so the next evaluation writes a whole preset again.
            problem = preset_problem(self.directory)
            try:
                with tf.io.gfile.GFile(self.score_path) as f:
                    saved = json.load(f)
                best, best_epoch = float(saved["value"]), int(saved["epoch"])
            except (ValueError, KeyError, TypeError) as e:
                problem = problem or f"score.json unreadable ({e})"
            if problem:
                print_fn(f"warning: the best preset in {self.directory} is not whole "
                         f"({problem}); it is written again at the next evaluation")
            else:
                self.best, self.best_epoch = best, best_epoch

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


def _step(model):
    return int(model.optimizer.iterations.numpy())


class StopAtStep(keras.callbacks.Callback):
    """Ends training once the optimizer has made ``total_steps`` steps, although
    the epoch is not finished: ``--train_steps`` need not be a multiple of the
    evaluation interval, and a run resumed at any step stops at the total.
    Steps are counted by ``optimizer.iterations`` (what the checkpoint holds),
    never by epochs."""

    def __init__(self, total_steps):
        super().__init__()
        self.total_steps = total_steps

    def on_train_batch_end(self, batch, logs=None):
        if _step(self.model) >= self.total_steps:
            self.model.stop_training = True


class EpochSummary(keras.callbacks.Callback):
    """One line per epoch: global step (the optimizer's), metrics, time and
    throughput in the model's own unit (``throughput_units``: img/s, seq/s, tok/s)."""

    def __init__(self, total_steps, epochs, global_batch_size, print_fn=print):
        super().__init__()
        self.total_steps, self.epochs = total_steps, epochs
        self.global_batch_size = global_batch_size
        self.print_fn = print_fn
        self.last_logs = {}
        self._start = None
        self._first_step = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._first_step = _step(self.model)

    def on_epoch_end(self, epoch, logs=None):
        self.last_logs = dict(logs or {})
        seconds = time.perf_counter() - self._start
        step = _step(self.model)
        examples = (step - self._first_step) * self.global_batch_size
        units = getattr(self.model, "throughput_units", None)
        count, unit = units(examples) if units else (examples, "examples")
        rate = count / max(seconds, 1e-9)
        metrics = "  ".join(f"{k} {float(v):.4f}" for k, v in self.last_logs.items()
                            if k != "learning_rate")
        width = len(str(self.epochs))
        self.print_fn(f"epoch {epoch + 1:>{width}}/{self.epochs}  step {step}/"
                      f"{self.total_steps}  {metrics}  {seconds:.1f}s  {rate:,.0f} {unit}/s")
