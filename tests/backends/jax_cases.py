"""The model tests under KERAS_BACKEND=jax (or torch), with TensorFlow blocked.

Not collected by the main run (the file name does not start with test_):
tests/backends/test_jax.py launches it in a subprocess through
tests/backends/run_jax.py, after writing, under TensorFlow, a preset folder
and forward outputs for every tiny preset into $ZOO_BACKENDS_DIR.
"""

import json
import math
import os
import sys

import keras
import numpy as np
import pytest

import keras_zoo
from keras_zoo import config
from keras_zoo.training.optimizers import AdamW
from tests.backends import common

ROOT = os.environ.get("ZOO_BACKENDS_DIR", "")
SHARD = os.environ.get("ZOO_BACKENDS_SHARD", "0/1")


def _shard(names):
    index, count = map(int, SHARD.split("/"))
    return [n for i, n in enumerate(sorted(names)) if i % count == index]


def _load_npz(path):
    with np.load(path) as f:
        return dict(f)


BACKEND = keras.backend.backend()


def test_runs_on_jax_without_tensorflow():
    assert BACKEND == os.environ["KERAS_BACKEND"] and BACKEND in ("jax", "torch")
    assert not [m for m, module in sys.modules.items()
                if m.split(".")[0] == "tensorflow" and module is not None]
    with pytest.raises(ImportError):
        import tensorflow  # noqa: F401


def test_every_keras_zoo_module_imports_without_tensorflow():
    """The no-module-level-TensorFlow rule for every module, present and to
    come (layers, models, data, training, ...), not only those a test uses."""
    import importlib
    import pkgutil

    failed = []
    for module in pkgutil.walk_packages(keras_zoo.__path__, "keras_zoo."):
        try:
            importlib.import_module(module.name)
        except ImportError as e:
            failed.append(f"{module.name}: {e}")
    assert not failed, failed
    assert not [m for m, mod in sys.modules.items()
                if m.split(".")[0] == "tensorflow" and mod is not None]


@pytest.mark.parametrize("name", _shard(keras_zoo.list_presets(tiny=True)))
def test_tiny_preset(name):
    """From TensorFlow's preset folder: parameter counts and forward outputs
    equal TensorFlow's, and so do a text family's decoded ids (greedy, beam);
    __call__ equals predict; one fit step trains; the
    trained model's preset reloads exactly here (and on TF: test_jax.py)."""
    if not ROOT:
        pytest.fail("ZOO_BACKENDS_DIR is not set: run tests/backends/test_jax.py")
    with open(os.path.join(ROOT, "tf_side.json")) as f:
        tf_side = json.load(f)[name]
    model = keras_zoo.from_preset(os.path.join(ROOT, "tf", name))
    assert type(model).__name__ == tf_side["family"]
    assert [model.trainable_parameter_count(), model.count_params()] == tf_side["counts"]
    out = common.forward(model)
    common.assert_same_outputs(out, _load_npz(os.path.join(ROOT, "tf", name + ".npz")),
                               f"{name}: JAX vs TensorFlow")

    with open(os.path.join(ROOT, "tf", name + ".generate.json")) as f:
        assert common.generate(model) == json.load(f), f"{name}: JAX vs TF decoding"

    x = common.example_inputs(model)
    if "model" in out or any(k.startswith("model.") for k in out):
        called = keras.tree.map_structure(keras.ops.convert_to_numpy, model(x))
        for key, value in common._arrays("model", called).items():
            # Eager __call__ vs predict's XLA program round differently: the
            # Transformer's logits differ by up to 3e-6 (measured on JAX CPU).
            np.testing.assert_allclose(value, out[key], **common.TOLERANCE)

    model.compile(optimizer=AdamW(1e-3), **model.compile_defaults())
    before = [np.array(v) for v in model.trainable_variables]
    bx, by = common.train_batch(model)
    logs = model.fit(bx, by, batch_size=len(by), epochs=1, verbose=0).history
    assert logs and all(math.isfinite(v[-1]) for v in logs.values()), logs
    changed = [not np.array_equal(b, np.array(v))
               for b, v in zip(before, model.trainable_variables)]
    assert sum(changed) >= len(changed) // 2, f"{name}: {sum(changed)}/{len(changed)} moved"

    folder = os.path.join(ROOT, "jax", name)
    model.save_to_preset(folder)
    trained = common.forward(model)
    np.savez(folder + ".npz", **trained)
    with open(folder + ".generate.json", "w") as f:
        json.dump(common.generate(model), f)
    common.assert_same_outputs(common.forward(keras_zoo.from_preset(folder)), trained,
                               f"{name}: JAX preset reloaded on JAX")


def test_tensorflow_only_pieces_raise_one_clear_error_without_tensorflow():
    from keras_zoo import data, distribute
    from keras_zoo.backend import BackendError

    with pytest.raises(BackendError, match=rf"needs TensorFlow .*Keras backend is '{BACKEND}'"):
        data.load("digits")
    with pytest.raises(BackendError, match=r"needs the TensorFlow Keras backend; "
                                           rf"KERAS_BACKEND is '{BACKEND}'"):
        distribute.get_strategy("one_device")
    with pytest.raises(BackendError, match="remote preset paths"):
        keras_zoo.from_preset("gs://bucket/run/best")


def _gradient(fn, x):
    if BACKEND == "jax":
        import jax

        return np.asarray(jax.grad(lambda t: fn(t).sum())(x))
    import torch

    t = torch.tensor(x, requires_grad=True)
    fn(t).sum().backward()
    return t.grad.numpy()


def test_fused_kernel_fallbacks_match_keras_on_jax():
    """keras_zoo's AdamW and GELU gradient fall back to Keras' arithmetic."""
    from keras_zoo.layers.activations import gelu

    x = np.linspace(-4, 4, 101).astype("float32")
    np.testing.assert_allclose(
        _gradient(gelu, x),
        _gradient(lambda t: keras.activations.gelu(t, approximate=False), x),
        rtol=1e-6, atol=1e-7)
    weights = []
    for optimizer in (AdamW(1e-2, weight_decay=0.1), keras.optimizers.AdamW(1e-2, weight_decay=0.1)):
        keras.utils.set_random_seed(0)
        model = keras_zoo.from_preset("mlp_small")
        model.compile(optimizer=optimizer, **model.compile_defaults())
        x, y = common.train_batch(model)
        for _ in range(2):
            model.train_on_batch(x, y)
        weights.append([np.array(v) for v in model.trainable_variables])
    # Equal on JAX; on torch Keras' own AdamW runs torch._foreach kernels,
    # whose rounding differs from the per-variable ops in the last bits.
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- objectives

def _dino_record(root):
    data = _load_npz(os.path.join(root, "dino_steps.npz"))
    model = keras_zoo.from_preset(os.path.join(root, "dino_start"))
    model.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=0.1),
                  **model.compile_defaults())
    values = lambda vs: [np.array(v) for v in vs]
    record = {"teacher": [values(model.teacher_weights)],
              "student": [values(model.student_weights)],
              "center": [np.array(model.centering.center)], "logs": []}
    for step in range(3):
        views = {k[len(f"{step}."):]: v for k, v in data.items() if k.startswith(f"{step}.")}
        record["logs"].append(model.train_on_batch(views, np.zeros(4, "int32"),
                                                   return_dict=True))
        record["teacher"].append(values(model.teacher_weights))
        record["student"].append(values(model.student_weights))
        record["center"].append(np.array(model.centering.center))
    return model, record


def test_dino_teacher_and_centre_after_three_jax_steps_match_tensorflow():
    """The EMA formula and the centre's running mean hold on JAX, the last
    layer stays frozen in epoch 1, and all of it equals the TensorFlow run
    from the same preset on the same views (test_jax.py recorded it)."""
    model, record = _dino_record(ROOT)
    tf_run = _load_npz(os.path.join(ROOT, "dino_tf_run.npz"))
    for step in range(3):
        m = 1 - (1 - 0.9) * (math.cos(math.pi * step / 4) + 1) / 2
        assert record["logs"][step]["teacher_momentum"] == pytest.approx(m, abs=1e-6)
        for t0, s1, t1 in zip(record["teacher"][step], record["student"][step + 1],
                              record["teacher"][step + 1]):
            np.testing.assert_allclose(t1, m * t0 + (1 - m) * s1, rtol=1e-5, atol=1e-7)
        # The loss is ~1.5e-3 here; across backends it differed by up to 2e-8.
        np.testing.assert_allclose(record["logs"][step]["loss"], tf_run[f"loss.{step}"],
                                   rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(record["center"][step + 1], tf_run[f"center.{step + 1}"],
                                   rtol=1e-4, atol=1e-6)
        # Across backends the student's AdamW steps (lr 1e-2) differ in the
        # last bits, and Adam's m / sqrt(v) scales that up on weights whose
        # gradient is ~0: after 2 steps one of 2048 teacher weights was 3e-6
        # off (0.3 % of an Adam step times 1 - m). The EMA formula itself is
        # checked above to 1e-7.
        for i, t in enumerate(record["teacher"][step + 1]):
            np.testing.assert_allclose(t, tf_run[f"teacher.{step + 1}.{i}"], rtol=1e-4,
                                       atol=1e-5, err_msg=f"teacher weight {i}, step {step}")
    v = next(i for i, w in enumerate(model.student_weights) if w.name == "weight_v")
    np.testing.assert_array_equal(record["student"][2][v], record["student"][0][v])
    assert not np.allclose(record["student"][3][v], record["student"][2][v])


def test_dino_centre_is_the_running_mean_of_teacher_outputs_on_jax():
    root = ROOT
    data = _load_npz(os.path.join(root, "dino_steps.npz"))
    model = keras_zoo.from_preset(os.path.join(root, "dino_start"))
    model.compile(optimizer=keras.optimizers.SGD(0.1), **model.compile_defaults())
    center = np.array(model.centering.center)
    views = {k[2:]: v for k, v in data.items() if k.startswith("0.")}
    g = views["global_crops"].transpose(1, 0, 2, 3, 4).reshape((-1,) + views[
        "global_crops"].shape[2:])
    logits = keras.ops.convert_to_numpy(model.teacher_head(model.teacher_backbone(g)))
    model.train_on_batch(views, np.zeros(4, "int32"))
    np.testing.assert_allclose(np.array(model.centering.center),
                               0.9 * center + 0.1 * logits.mean(0, keepdims=True),
                               rtol=1e-5, atol=1e-7)


def test_vae_kl_term_is_the_closed_form_in_a_jax_training_step():
    """Encoder pinned to constant (mu, log var): the KL the JAX train step
    reports is 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar), and the loss is
    reconstruction + beta * KL."""
    model = keras_zoo.VAE(hidden_units=[32], latent_dim=3, beta=2.0, seed=0)
    mu, log_var = np.array([0.5, -1.0, 2.0]), np.array([0.2, -0.7, 1.1])
    for name, bias in (("z_mean", mu), ("z_log_var", log_var)):
        layer = model.encoder.get_layer(name)
        kernel, _ = layer.get_weights()
        layer.set_weights([np.zeros_like(kernel), bias.astype("float32")])
    model.compile(optimizer=keras.optimizers.SGD(0.0), **model.compile_defaults())
    x = np.random.default_rng(1).random((4, 32, 32, 1)).astype("float32")
    logs = model.train_on_batch(x, return_dict=True)
    closed = 0.5 * np.sum(mu ** 2 + np.exp(log_var) - 1 - log_var)
    np.testing.assert_allclose(logs["kl"], closed, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], logs["reconstruction"] + 2.0 * closed, rtol=1e-5)
    np.testing.assert_allclose(logs["elbo"], -(logs["reconstruction"] + closed), rtol=1e-5)
    # The reparameterized z differs between steps: the seed state advances.
    second = model.train_on_batch(x, return_dict=True)
    assert second["reconstruction"] != logs["reconstruction"]


# ---------------------------------------------------------------- attention

@pytest.mark.parametrize("kwargs", [{}, {"use_causal_mask": True}, {"padding": True},
                                    {"cross": True}, {"cache": True}])
def test_fused_and_matmul_attention_agree_on_jax(kwargs):
    from keras_zoo.layers import MultiHeadAttention

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 24)).astype("float32")  # head size 6: scale not a power of 2
    call = {"use_causal_mask": kwargs.get("use_causal_mask", False)}
    args = (x,)
    if kwargs.get("padding"):
        mask = np.ones((2, 5), bool)
        mask[1, 3:] = False
        call["attention_mask"] = mask
    if kwargs.get("cross"):
        args = (x, rng.normal(size=(2, 7, 24)).astype("float32"))
    layer = MultiHeadAttention(4)

    def run():
        if not kwargs.get("cache"):
            return keras.ops.convert_to_numpy(layer(*args, **call))
        layer(x, use_causal_mask=True)  # builds
        cache = layer.init_cache(batch_size=2, max_length=7)
        out, cache = layer(x[:, :3], use_causal_mask=True, cache=cache, cache_index=0)
        step, cache = layer(x[:, 3:4], use_causal_mask=True, cache=cache, cache_index=3)
        return keras.ops.convert_to_numpy(keras.ops.concatenate([out, step], axis=1))

    outs = {}
    try:
        for impl in ("matmul", "fused"):
            config.set_attention_implementation(impl)
            outs[impl] = run()
    finally:
        config.set_attention_implementation("auto")
    np.testing.assert_allclose(outs["fused"], outs["matmul"], rtol=1e-5, atol=1e-6)
    assert not config.use_fused_attention()  # auto on a CPU: matmul
