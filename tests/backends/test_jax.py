"""The Keras code door on JAX: every tiny preset written here under TensorFlow
loads, predicts, trains and saves under KERAS_BACKEND=jax with TensorFlow
blocked (tests/backends/jax_cases.py, in a subprocess: one Python process has
one Keras backend), with the same outputs (1e-5) and the same parameter
counts; what JAX writes loads back here with JAX's outputs. DINO's teacher and
centre after 3 steps and the VAE's KL term are checked on JAX as well.

New families are covered as they register tiny presets
(``keras_zoo.list_presets(tiny=True)``); see the README's *Backends* section.
``ZOO_CROSS_BACKEND=torch`` runs the same cases under PyTorch (torch must be
installed; CI installs JAX only).
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_zoo
from keras_zoo.models.dino import DINO
from tests.backends import common

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BACKEND = os.environ.get("ZOO_CROSS_BACKEND", "jax")
SHARDS = 2  # preset subsets, one subprocess each, so pytest-xdist can spread them
TIMEOUT = 1500  # seconds; a generous bound on a hung subprocess, not a speed check

DINO_CONFIG = {  # tests/models/test_dino.py's tiny model, with 2 local crops
    "backbone": {"family": "ViT", "config": {
        "image_size": 32, "patch_size": 8, "num_channels": 1, "hidden_dim": 32,
        "num_layers": 1, "num_heads": 2, "mlp_dim": 64}},
    "out_dim": 32, "hidden_dim": 64, "bottleneck_dim": 16, "num_local_crops": 2,
    "local_crop_size": 16, "teacher_momentum": 0.9, "steps_per_epoch": 2, "total_steps": 4,
    "clip_grad": 3.0}


def _run_jax(root, *pytest_args, shard="0/1"):
    env = dict(os.environ, KERAS_BACKEND=BACKEND, JAX_PLATFORMS="cpu",
               ZOO_BACKENDS_DIR=str(root), ZOO_BACKENDS_SHARD=shard,
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("PYTEST_XDIST_WORKER", None)
    done = subprocess.run(
        [sys.executable, "-m", "tests.backends.run_jax", "tests/backends/jax_cases.py",
         "-q", "-p", "no:cacheprovider", "-p", "no:xdist", *pytest_args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, (done.stdout[-8000:] + done.stderr[-3000:])
    return done.stdout


def _write_tf_side(root, names):
    summary = {}
    for i, name in enumerate(names):
        keras.utils.set_random_seed(i)
        model = keras_zoo.from_preset(name)
        common.prepare(model, seed=i)
        model.save_to_preset(str(root / "tf" / name))
        np.savez(root / "tf" / f"{name}.npz", **common.forward(model))
        (root / "tf" / f"{name}.generate.json").write_text(json.dumps(common.generate(model)))
        summary[name] = {"family": type(model).__name__,
                         "counts": [model.trainable_parameter_count(), model.count_params()]}
    (root / "tf_side.json").write_text(json.dumps(summary))


@pytest.mark.slow
@pytest.mark.parametrize("shard", range(SHARDS))
def test_tiny_presets_cross_tensorflow_and_jax(shard, tmp_path):
    names = [n for i, n in enumerate(sorted(keras_zoo.list_presets(tiny=True)))
             if i % SHARDS == shard]
    assert names
    _write_tf_side(tmp_path, names)
    out = _run_jax(tmp_path, "-k", "test_tiny_preset", shard=f"{shard}/{SHARDS}")
    assert f"{len(names)} passed" in out, out[-3000:]
    for name in names:  # what JAX trained and wrote loads here with JAX's outputs
        model = keras_zoo.from_preset(str(tmp_path / "jax" / name))
        with np.load(tmp_path / "jax" / f"{name}.npz") as f:
            expected = dict(f)
        common.assert_same_outputs(common.forward(model), expected,
                                   f"{name}: TensorFlow reading JAX's preset")
        generated = json.loads((tmp_path / "jax" / f"{name}.generate.json").read_text())
        assert common.generate(model) == generated, f"{name}: TF decoding JAX's preset"


def _dino_views(step):
    rng = np.random.default_rng(step)
    return {"global_crops": rng.random((4, 2, 32, 32, 1)).astype("float32"),
            "local_crops": rng.random((4, 2, 16, 16, 1)).astype("float32")}


@pytest.mark.slow
def test_objectives_and_attention_on_jax(tmp_path):
    """DINO: 3 steps on TensorFlow from a preset, recorded; jax_cases runs the
    same 3 steps from the same preset and compares. Then the VAE's KL, the
    centre and fused-vs-matmul attention on JAX."""
    keras.utils.set_random_seed(0)
    model = DINO(**DINO_CONFIG)
    common.perturb(model)
    for t, s in zip(model.teacher_weights, model.student_weights):
        t.assign(s)  # the teacher starts as a copy of the student, as DINO builds it
    model.save_to_preset(str(tmp_path / "dino_start"))
    model.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=0.1),
                  **model.compile_defaults())
    run, steps = {}, {}
    for step in range(3):
        views = _dino_views(step)
        steps.update({f"{step}.{k}": v for k, v in views.items()})
        run[f"loss.{step}"] = model.train_on_batch(views, np.zeros(4, "int32"),
                                                   return_dict=True)["loss"]
        run[f"center.{step + 1}"] = np.array(model.centering.center)
        run.update({f"teacher.{step + 1}.{i}": np.array(w)
                    for i, w in enumerate(model.teacher_weights)})
    np.savez(tmp_path / "dino_steps.npz", **steps)
    np.savez(tmp_path / "dino_tf_run.npz", **run)
    out = _run_jax(tmp_path, "-k", "not test_tiny_preset")
    assert "12 passed" in out, out[-3000:]


def test_the_export_door_on_jax_is_one_clear_error():
    """The exporter traces TensorFlow functions: under another backend (with
    TensorFlow installed) it refuses with one line naming the backend."""
    code = ("from export.export import export_model\n"
            "from keras_zoo.backend import BackendError\n"
            "try:\n    export_model(None, 'unused.tflite')\n"
            "except BackendError as e:\n    print('REFUSED', e)\n")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "REFUSED export.export_model (SavedModel / TFLite) needs the TensorFlow Keras " \
           "backend; KERAS_BACKEND is 'jax'" in done.stdout, done.stdout + done.stderr[-2000:]
