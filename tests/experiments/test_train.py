"""experiments/train.py: the generic trainer, its flags, outputs, faults and errors."""

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

import keras_zoo
from experiments import train as trainer
from keras_zoo.data import load_arrays

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CONFIG", None)
    return env


def _cli(*flags):
    return [sys.executable, "-m", "experiments.train", *flags]


@pytest.mark.slow
@pytest.mark.parametrize("preset", keras_zoo.list_presets(tiny=True))
def test_every_tiny_preset_trains_a_jit_compiled_step(preset):
    """What a TPU needs: the family's train step (its own or Keras') under XLA,
    through the generic trainer's dry run (fake data of the real shapes)."""
    result = trainer.train({"preset": preset, "dry_run": True, "global_batch_size": 8,
                            "jit_compile": True})
    model = result["model"]
    assert model.jit_compile is True
    assert result["logs"], "the step reported no loss or metric"
    assert all(np.isfinite(v) for v in result["logs"].values()), result["logs"]
    # the count the trainer printed, against the same preset built here without it
    assert result["parameters"] == keras_zoo.from_preset(preset).count_params() > 0
    assert result["per_replica_batch_size"] == 8


@pytest.mark.parametrize("precision, policy, optimizer", [
    ("bfloat16", "mixed_bfloat16", "AdamW"),
    ("mixed_float16", "mixed_float16", "LossScaleOptimizer"),  # float16 needs loss scaling
])
def test_mixed_precision_policies(precision, policy, optimizer):
    import keras

    before = keras.config.dtype_policy().name
    result = trainer.train({"preset": "mlp_small", "dry_run": True, "global_batch_size": 8,
                            "mixed_precision": precision})
    model = result["model"]
    assert model.dtype_policy.name == policy
    assert type(model.optimizer).__name__ == optimizer
    assert model.outputs[0].dtype == "float32"  # logits stay float32 for a stable loss
    assert np.isfinite(result["logs"]["loss"])
    assert keras.config.dtype_policy().name == before  # the global policy is restored


def test_digits_run_writes_presets_logs_metrics_and_curves(tmp_path):
    model_dir = tmp_path / "run"
    config = {"preset": "lenet5", "dataset": "digits", "epochs": 2, "global_batch_size": 64,
              "learning_rate": 3e-3, "model_dir": str(model_dir)}
    result = trainer.train(config)
    assert result["steps"] == 2 * (1257 // 64) and result["start_step"] == 0
    # test accuracy: best/ (chosen on digits:validation) scored once on each of
    # the 360 test images (padded last batch)
    x, y, _ = load_arrays("digits:test", "test", 32, 1)
    last = keras_zoo.from_preset(str(model_dir / "last"))
    chosen = keras_zoo.from_preset(str(model_dir / "best"))
    expected = float(np.mean(np.argmax(chosen.predict(x, verbose=0), -1) == y))
    assert result["test_accuracy"] == pytest.approx(expected, abs=1e-6)
    assert round(expected * 360) == pytest.approx(expected * 360, abs=1e-6)
    best = keras_zoo.from_preset(str(model_dir / "best"))
    assert json.loads((model_dir / "best" / "score.json").read_text())["monitor"] == "val_accuracy"
    assert best.count_params() == last.count_params()
    history = json.loads((model_dir / "metrics.json").read_text())["history"]
    assert history["epoch"] == [1, 2] and len(history["val_accuracy"]) == 2
    assert len((model_dir / "metrics.csv").read_text().strip().splitlines()) == 3
    assert (model_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((model_dir / "logs").rglob("events.out.tfevents.*"))
    # the same command again: the newest checkpoint is the end, nothing is retrained
    again = trainer.train(config)
    assert again["start_step"] == again["steps"] == result["steps"]
    np.testing.assert_array_equal(again["model"].get_weights()[0], last.get_weights()[0])


def test_config_file_values_are_overridden_by_flags(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text('CONFIG = {"preset": "vit_tiny_digits", "epochs": 60, '
                    '"learning_rate": 1e-3, "model_overrides": {"num_layers": 1}}\n')
    argv = ["train", f"--config={path}", "--train_steps=5", "--learning_rate=0.01",
            "--model_dir=/tmp/unused"]
    trainer.FLAGS(argv)
    try:
        config = trainer.config_from_flags()
    finally:
        trainer.FLAGS.unparse_flags()
    assert config["preset"] == "vit_tiny_digits"
    assert config["learning_rate"] == 0.01
    assert config["train_steps"] == 5 and config["epochs"] is None
    assert trainer.resolve(config)["model_overrides"] == {"num_layers": 1}


def test_model_overrides_parse_both_forms():
    assert trainer.parse_overrides('{"num_classes": 3, "pooling": "gap"}') == \
        {"num_classes": 3, "pooling": "gap"}
    assert trainer.parse_overrides("num_classes=3,dropout=0.1,pooling=gap") == \
        {"num_classes": 3, "dropout": 0.1, "pooling": "gap"}
    with pytest.raises(trainer.TrainError, match="not key=value"):
        trainer.parse_overrides("num_classes")


def test_warmup_then_cosine_schedule():
    model = keras_zoo.from_preset("mlp_small")
    config = trainer.resolve({"preset": "mlp_small", "train_steps": 100, "warmup_steps": 10,
                              "learning_rate": 1e-2, "model_dir": "unused"})
    _, schedule = trainer.make_optimizer(config, 100, model)
    rates = [float(schedule(s)) for s in (0, 5, 10, 55, 100)]
    assert schedule.warmup_steps == 10
    assert rates[0] == 0.0 and rates[1] == pytest.approx(5e-3)
    assert rates[2] == pytest.approx(1e-2)
    assert rates[3] == pytest.approx(5e-3, rel=1e-3)  # cosine half-way
    assert rates[4] == pytest.approx(0.0, abs=1e-9)


def test_adamw_decays_kernels_but_not_biases():
    import keras

    model = keras_zoo.from_preset("mlp_small")
    config = trainer.resolve({"preset": "mlp_small", "train_steps": 10, "warmup_steps": 0,
                              "learning_rate": 0.1, "weight_decay": 0.5, "model_dir": "x"})
    optimizer, _ = trainer.make_optimizer(config, 10, model)
    for v in model.trainable_variables:  # non-zero biases, so decay would show
        v.assign(keras.ops.ones_like(v))
    # zero gradients: Adam's step is 0, only decoupled weight decay moves a weight
    optimizer.apply_gradients([(keras.ops.zeros_like(v), v) for v in model.trainable_variables])
    for v in model.trainable_variables:
        value = float(keras.ops.max(v))
        if len(v.shape) > 1:
            assert value == pytest.approx(1 - 0.1 * 0.5), v.path
        else:
            assert value == 1.0, v.path


def test_bert_configs_use_the_original_optimizer():
    import os

    from keras_zoo.training import AdamWeightDecay
    from keras_zoo.training.schedules import LinearDecayWithWarmup

    here = os.path.join(os.path.dirname(trainer.__file__), "configs")
    model = keras_zoo.BERT.from_preset("bert_tiny_pretraining", vocab_size=64)
    for name in ("bert_tiny_prose_pretraining.py", "bert_tiny_gettext_packages.py"):
        config = trainer.resolve({**trainer.load_config_file(os.path.join(here, name)),
                                  "model_dir": "unused"})
        optimizer, schedule = trainer.make_optimizer(config, 1000, model)
        assert isinstance(optimizer, AdamWeightDecay) and not optimizer.bias_correction
        assert (optimizer.epsilon, optimizer.weight_decay, optimizer.global_clipnorm) == \
            (1e-6, 0.01, 1.0)
        assert isinstance(schedule, LinearDecayWithWarmup) and schedule.total_steps == 1000
        # modeling.py's exclude_from_weight_decay=["LayerNorm", "layer_norm", "bias"]:
        # every bias and norm weight, and nothing else (the embedding tables decay)
        excluded = {v.path for v in model.trainable_variables
                    if not optimizer._use_weight_decay(v)}
        assert excluded == {v.path for v in model.trainable_variables
                            if v.path.endswith(("bias", "gamma", "beta"))}


def test_jit_compile_auto_is_off_on_cpu_and_on_for_dry_runs():
    """auto: no XLA on a CPU-only machine (oneDNN kernels are faster there), XLA
    for a dry run (it checks what a TPU compiles); explicit settings win; the
    config-file forms (bools) and flag forms (strings) both resolve."""
    import tensorflow as tf

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    assert trainer.resolve_jit("auto", strategy, dry_run=False)[0] is False
    assert trainer.resolve_jit("auto", strategy, dry_run=True)[0] is True
    assert trainer.resolve_jit(True, strategy, dry_run=False)[0] is True
    base = {"preset": "lenet5", "epochs": 1, "model_dir": "x"}
    assert trainer.resolve(base)["jit_compile"] == "auto"
    for given, expected in ((True, True), ("false", False), ("TRUE", True), (False, False)):
        assert trainer.resolve({**base, "jit_compile": given})["jit_compile"] is expected
    with pytest.raises(trainer.TrainError, match="--jit_compile='sometimes': expected auto"):
        trainer.resolve({**base, "jit_compile": "sometimes"})


# The trainer's own CLI, run until a given global step and then held there (the
# step-10 batch is done, checkpoint 8 is the newest), so the test kills a run
# that is certainly mid-way: no race with a fast machine or a slow TF start-up.
_PAUSED_CLI = """
import sys, time
from keras_zoo.training import callbacks

def on_train_batch_end(self, batch, logs=None):
    if int(self.model.optimizer.iterations.numpy()) == {pause_at}:
        print("PAUSED AT STEP {pause_at}", flush=True)
        time.sleep(3600)

callbacks.StepCheckpoint.on_train_batch_end = on_train_batch_end
sys.argv = ["train"] + sys.argv[1:]
from experiments import train
train.run()
"""


def _run(args, what, finish):
    proc = subprocess.Popen(args, env=_env(), cwd=REPO, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    stdout, stderr = finish(proc, what)
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


@pytest.mark.slow
def test_sigkill_then_same_command_resumes_to_the_same_weights(tmp_path, finish):
    model_dir = tmp_path / "killed"
    config = {"preset": "lenet5", "dataset": "digits", "train_steps": 60, "eval_every": 4,
              "global_batch_size": 32, "learning_rate": 3e-3, "eval_dataset": "none"}
    flags = [f"--{k}={v}" for k, v in config.items()] + [f"--model_dir={model_dir}"]
    ckpts = model_dir / "checkpoints"
    proc = subprocess.Popen(
        [sys.executable, "-c", _PAUSED_CLI.format(pause_at=10), *flags], env=_env(),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:  # blocks until the marker (or the end of the output)
            if line.startswith("PAUSED AT STEP 10"):
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it was paused at step 10"
    assert sorted(int(p.name[5:14]) for p in ckpts.glob("ckpt-*.weights.h5")) == [4, 8]
    assert not (model_dir / "last").exists()

    resumed = _run(_cli(*flags), "the resumed run", finish)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # restarts at the newest checkpoint: loses only the steps after it
    assert "resuming from step 8 " in resumed.stdout
    assert re.findall(r"step (\d+)/60", resumed.stdout)[-1] == "60"

    reference = trainer.train({**config, "model_dir": str(tmp_path / "uninterrupted")})
    final = keras_zoo.from_preset(str(model_dir / "last"))
    for a, b in zip(final.get_weights(), reference["model"].get_weights()):
        np.testing.assert_array_equal(a, b)


def _one_error_line(proc):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    errors = [x for x in lines if x.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr[-2000:]
    return errors[0]


@pytest.mark.slow
def test_bad_flags_exit_with_one_clear_line(tmp_path, finish):
    """Real processes: exit status 2, no traceback, the last stderr line says what is wrong."""
    ok = ["--epochs=1", f"--model_dir={tmp_path / 'run'}"]
    cases = {
        "unknown preset 'lenet_5'.*Closest: lenet5": ["--preset=lenet_5"] + ok,
        "33 is not divisible by the 2 replicas": ["--preset=lenet5", "--strategy=mirrored",
                                                  "--num_cpu_devices=2",
                                                  "--global_batch_size=33"] + ok,
        "--strategy=tpu: could not reach or initialise TPU 'local'": [
            "--preset=lenet5", "--strategy=tpu", "--tpu=local"] + ok,
        # absl's own parse errors, in the same form (absl alone: FATAL + usage, status 1)
        "Unknown command line flag 'learning_rat'. Did you mean: learning_rate": [
            "--preset=lenet5", "--learning_rat=0.1"] + ok,
        "flag --epochs=ten: invalid literal for int": ["--preset=lenet5", "--epochs=ten",
                                                      f"--model_dir={tmp_path / 'run'}"],
    }
    procs = {pattern: subprocess.Popen(_cli(*flags), env=_env(), cwd=REPO, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for pattern, flags in cases.items()}
    try:
        for pattern, proc in procs.items():
            stdout, stderr = finish(proc, f"the run expected to fail with {pattern!r}")
            line = _one_error_line(subprocess.CompletedProcess(proc.args, proc.returncode,
                                                               stdout, stderr))
            assert re.search(pattern, line), (pattern, line)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _main_error(argv, capsys):
    """main() in this process (cheaper than a process per case): exit 2, one line."""
    rest = trainer.FLAGS(["train", *argv])
    try:
        with pytest.raises(SystemExit) as exit_info:
            trainer.main(rest)
    finally:
        trainer.FLAGS.unparse_flags()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("flags, pattern", [
    (["--dataset=digitz"], "unknown dataset 'digitz'.*Did you mean digits"),
    (["--train_steps=5"], "--epochs=1 and --train_steps=5 are mutually exclusive"),
    (["--model_dir={a_file}/run"], "model_dir .*a_file/run.* is not writable"),
    (["--strategy=tpu", "--tpu=grpc://127.0.0.1:1"],
     "--strategy=tpu: no TPU answers at grpc://127.0.0.1:1 "),
    (["--global_batch_size=4000"], "has 1257 examples, fewer than one global batch of 4000"),
    (["--preset=hf://a/b/c"], "'hf://a/b/c' is not a Hugging Face model URI"),
    (["--preset=hf://org/absent"], "hf://org/absent .revision 'main'. is not in the Hugging "
                                   "Face cache"),
])
def test_bad_flag_values_in_process(tmp_path, capsys, flags, pattern):
    """The same main() in this process (cheaper than one process per case)."""
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    argv = ["--preset=lenet5", "--epochs=1", f"--model_dir={tmp_path / 'run'}"]
    err = _main_error(argv + [f.format(a_file=a_file) for f in flags], capsys)
    assert re.search(pattern, err), err


# ---------------------------------------------------------------- resume after damage

_SHORT = {"preset": "lenet5", "dataset": "digits", "train_steps": 12, "eval_every": 4,
          "global_batch_size": 32, "learning_rate": 3e-3, "eval_dataset": "none"}


def _ckpt(model_dir, step):
    return model_dir / "checkpoints" / f"ckpt-{step:09d}.weights.h5"


def test_torn_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    """The newest checkpoint is cut short after the run (a full disk, a copy
    cut off): the same command says so in one line, resumes from the previous
    checkpoint, and ends bit-identical to the uninterrupted run."""
    model_dir = tmp_path / "run"
    config = {**_SHORT, "model_dir": str(model_dir)}
    uninterrupted = trainer.train(config)["model"].get_weights()
    newest = _ckpt(model_dir, 12)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    capsys.readouterr()

    again = trainer.train(config)
    out = capsys.readouterr().out
    assert again["start_step"] == 8 and again["steps"] == 12
    warnings = [x for x in out.splitlines() if "unreadable" in x]
    assert len(warnings) == 1 and "ckpt-000000012.weights.h5" in warnings[0], out
    assert "resuming from step 8 " in out
    for a, b in zip(again["model"].get_weights(), uninterrupted):
        np.testing.assert_array_equal(a, b)
    # the torn file is set aside, the step is written again, whole
    assert (newest.parent / (newest.name + ".unreadable")).exists()
    from keras_zoo.training import checkpoint_problem

    assert checkpoint_problem(str(newest)) is None


def test_checkpoint_problems_are_found_with_and_without_a_sidecar(tmp_path):
    from keras_zoo.training import checkpoint_problem

    model_dir = tmp_path / "run"
    trainer.train({**_SHORT, "train_steps": 4, "model_dir": str(model_dir)})
    path = _ckpt(model_dir, 4)
    sidecar = path.with_name("ckpt-000000004.json")
    assert checkpoint_problem(str(path)) is None and sidecar.exists()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    path.write_bytes(bytes(data))
    assert "sha256" in checkpoint_problem(str(path))
    path.write_bytes(bytes(data[:1000]))
    assert "torn" in checkpoint_problem(str(path))
    sidecar.unlink()  # a checkpoint of an older run: HDF5 itself must open
    assert checkpoint_problem(str(path))


def test_no_readable_checkpoint_is_one_line_not_a_fresh_start(tmp_path, capsys):
    model_dir = tmp_path / "run"
    trainer.train({**_SHORT, "model_dir": str(model_dir)})
    for step in (8, 12):
        _ckpt(model_dir, step).write_bytes(b"not hdf5")
    err = _main_error(["--preset=lenet5", "--train_steps=12", "--eval_every=4",
                       "--global_batch_size=32", "--eval_dataset=none",
                       f"--model_dir={model_dir}"], capsys)
    assert re.search(r"no readable checkpoint in .*checkpoints \(ckpt-000000012.*"
                     r"ckpt-000000008.*pass a new --model_dir", err), err


def test_larger_train_steps_continues_exactly_to_the_new_total(tmp_path, capsys):
    model_dir = tmp_path / "run"
    config = {**_SHORT, "train_steps": 20, "eval_every": 8, "model_dir": str(model_dir)}
    assert trainer.train(config)["steps"] == 20
    capsys.readouterr()
    more = trainer.train({**config, "train_steps": 30})
    out = capsys.readouterr().out
    assert more["start_step"] == 20
    assert int(more["model"].optimizer.iterations.numpy()) == more["steps"] == 30
    steps = [int(x) for x in re.findall(r"step (\d+)/30", out)]
    assert steps == [28, 30], out  # evaluations every 8 steps from the resumed step
    # asking for fewer steps than are done trains nothing and says so
    fewer = trainer.train({**config, "train_steps": 24})
    assert fewer["steps"] == 30 and "already trained to step 30 (24 asked)" in \
        capsys.readouterr().out


@pytest.mark.parametrize("change, pattern", [
    (["--preset=lenet5_relu"],
     'holds checkpoints of a run with preset="lenet5", this one has preset="lenet5_relu"'),
    (["--global_batch_size=64"], "global_batch_size=32, this one has global_batch_size=64"),
    (["--model_overrides=num_classes=7"],
     "model.num_classes=10, this one has model.num_classes=7"),
    (["--dataset=synthetic:256"], "dataset=\"digits\", this one has dataset=\"synthetic:256\""),
])
def test_model_dir_of_another_run_is_refused(tmp_path, capsys, change, pattern):
    model_dir = tmp_path / "run"
    trainer.train({**_SHORT, "train_steps": 4, "model_dir": str(model_dir)})
    capsys.readouterr()
    base = [f"--{k}={v}" for k, v in _SHORT.items()] + [f"--model_dir={model_dir}"]
    err = _main_error(base + change, capsys)
    assert pattern in err and "pass a new --model_dir" in err, err


def test_checkpoints_without_a_run_record_that_do_not_fit_are_one_line(tmp_path, capsys):
    """A model_dir of an older keras_zoo (no run.json) with another model's checkpoint."""
    model_dir = tmp_path / "run"
    trainer.train({**_SHORT, "train_steps": 4, "model_dir": str(model_dir)})
    (model_dir / "checkpoints" / "run.json").unlink()
    base = [f"--{k}={v}" for k, v in _SHORT.items()] + [f"--model_dir={model_dir}"]
    err = _main_error(base + ["--preset=vit_tiny_digits"], capsys)
    assert re.search(r"checkpoint .*ckpt-000000004.weights.h5 does not fit this model .*"
                     r"pass a new --model_dir", err), err


# ---------------------------------------------------------------- settings a user gets wrong

@pytest.mark.parametrize("flags, pattern", [
    (["--learning_rate=0.001", "--min_learning_rate=0.01"],
     r"--min_learning_rate=0.01 must be between 0 and --learning_rate=0.001"),
    (["--weight_decay=-0.1"], r"--weight_decay must be >= 0, got -0.1"),
    (["--clipnorm=0"], r"--clipnorm must be positive .*got 0"),
    (["--learning_rate=nan"], r"--learning_rate must be a finite number, got nan"),
    (["--dataset=synthetic:-5"], r"'synthetic:-5': synthetic:N needs a positive whole number"),
    (["--dataset=digits:test:extra"], r"'digits:test:extra': write digits\[:SPLIT\].*'extra'"),
    (["--eval_dataset=digits:tset"], r"bundled split must be one of .*got 'tset'"),
])
def test_bad_settings_are_one_line(tmp_path, capsys, flags, pattern):
    err = _main_error(["--preset=lenet5", "--epochs=1", f"--model_dir={tmp_path / 'run'}",
                       *flags], capsys)
    assert re.search(pattern, err), err


@pytest.mark.parametrize("name, text, pattern", [
    ("cfg.py", 'CONFIG = {\n    "preset": "lenet5",\n    "epochs": 1\n    "seed": 3,\n}\n',
     r"--config .*cfg.py:[34]: syntax error"),
    ("cfg.py", 'CONFIG = {\n    "preset": "lenet5",\n    "epochs": "ten",\n}\n',
     r"--config .*cfg.py:3: epochs='ten' \(str\): expected an integer"),
    ("cfg.py", 'import math\n\nCONFIG = {"preset": "lenet5", "epochs": math.nope}\n',
     r"--config .*cfg.py:3: AttributeError: .*nope"),
    ("cfg.json", '{\n  "preset": "lenet5",\n  "epochs": 1,\n}\n',
     r"--config .*cfg.json:4: not valid JSON"),
    ("cfg.json", '{\n  "preset": "lenet5",\n  "learning_rate": "fast"\n}\n',
     r"--config .*cfg.json:3: learning_rate='fast' \(str\): expected a number"),
    ("cfg.json", '[1, 2]\n', r"expected a dict of settings, got list"),
])
def test_bad_config_files_name_the_file_and_line(tmp_path, capsys, name, text, pattern):
    path = tmp_path / name
    path.write_text(text)
    err = _main_error([f"--config={path}", f"--model_dir={tmp_path / 'run'}"], capsys)
    assert re.search(pattern, err), err


def test_a_torn_best_preset_is_written_again(tmp_path, capsys):
    """A run killed while writing best/ leaves it torn; the next run says so and
    writes it again at its next evaluation, even when the (unreadable) old score
    claims to be unbeatable."""
    from keras_zoo.presets import preset_problem

    model_dir = tmp_path / "run"
    config = {**_SHORT, "train_steps": 8, "model_dir": str(model_dir)}
    trainer.train(config)
    best = model_dir / "best"
    weights = best / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:2000])
    score = json.loads((best / "score.json").read_text())
    (best / "score.json").write_text(json.dumps({**score, "value": -1.0}))  # loss never < -1
    capsys.readouterr()
    trainer.train({**config, "train_steps": 12})
    out = capsys.readouterr().out
    assert re.search(r"warning: the best preset in .*best is not whole \(sha256 mismatch", out)
    assert preset_problem(str(best)) is None
    assert keras_zoo.from_preset(str(best)).count_params() == 61_706
