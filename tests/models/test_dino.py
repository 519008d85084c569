"""DINO (Caron et al. 2021): head, loss, schedules and the EMA-teacher train step."""

import json
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_zoo
from keras_zoo.models import dino as dino_lib
from keras_zoo.models.dino import DINO, DINOHead

BACKBONE = {"family": "ViT", "config": {
    "image_size": 32, "patch_size": 8, "num_channels": 1, "hidden_dim": 32, "num_layers": 1,
    "num_heads": 2, "mlp_dim": 64}}
TINY = {"backbone": BACKBONE, "out_dim": 32, "hidden_dim": 64, "bottleneck_dim": 16,
        "num_local_crops": 2, "local_crop_size": 16}


def _views(batch=4, seed=0, num_local=2):
    rng = np.random.default_rng(seed)
    return {"global_crops": rng.random((batch, 2, 32, 32, 1)).astype("float32"),
            "local_crops": rng.random((batch, num_local, 16, 16, 1)).astype("float32")}


def _values(variables):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


# ---------------------------------------------------------------- head

def test_head_weight_norm_and_published_size():
    head = DINOHead(out_dim=40, hidden_dim=24, bottleneck_dim=8)
    x = np.random.default_rng(0).normal(size=(5, 12)).astype("float32")
    assert head(x).shape == (5, 40)
    # norm_last_layer: g is fixed at 1, so every prototype has unit norm and the
    # output is a cosine similarity in [-1, 1].
    assert not head.weight_g.trainable
    assert np.all(np.abs(keras.ops.convert_to_numpy(head(x))) <= 1.0 + 1e-5)
    scaled = DINOHead(out_dim=40, hidden_dim=24, bottleneck_dim=8, norm_last_layer=False)
    scaled(x)
    assert scaled.weight_g.trainable
    # 3 dense layers with biases + the bias-free last layer's v (g not trained):
    # ViT-S's 384 features into the paper's 2048-2048-256 -> 65,536 head.
    full = DINOHead()
    full.build((None, 384))
    expected = (384 * 2048 + 2048) + (2048 * 2048 + 2048) + (2048 * 256 + 256) + 256 * 65536
    assert sum(int(np.prod(w.shape)) for w in full.trainable_weights) == expected


def test_head_output_is_invariant_to_the_scale_of_v():
    head = DINOHead(out_dim=8, hidden_dim=16, bottleneck_dim=4)
    x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    before = keras.ops.convert_to_numpy(head(x))
    head.weight_v.assign(head.weight_v * 7.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(head(x)), before, rtol=1e-5)


# ---------------------------------------------------------------- loss and schedules

def _reference_loss(student, teacher, num_views, ts, tt, include_same_view):
    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    s = np.log(softmax(student / ts)).reshape(num_views, -1, student.shape[-1])
    t = softmax(teacher / tt).reshape(2, -1, teacher.shape[-1])
    terms = [np.mean(np.sum(-t[i] * s[j], axis=-1))
             for i in range(2) for j in range(num_views) if include_same_view or i != j]
    return np.mean(terms)


def test_loss_averages_over_pairs_of_different_views_only():
    rng = np.random.default_rng(0)
    batch, views, k = 3, 4, 10
    student = rng.normal(size=(views * batch, k)).astype("float32")
    teacher = rng.normal(size=(2 * batch, k)).astype("float32")
    loss = float(dino_lib.dino_loss(student, teacher, views, 0.1, 0.04))
    expected = _reference_loss(student, teacher, views, 0.1, 0.04, include_same_view=False)
    with_same = _reference_loss(student, teacher, views, 0.1, 0.04, include_same_view=True)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert abs(expected - with_same) > 1e-2  # the reference can tell the two apart
    # A student view's agreement with the teacher on the *same* view is not
    # rewarded: copying teacher view 0 into student view 0 leaves the terms
    # (t0, s0) out, and only (t1, s0) sees the change.
    copied = student.copy()
    copied[:batch] = teacher[:batch] * (0.1 / 0.04)
    assert float(dino_lib.dino_loss(copied, teacher, views, 0.1, 0.04)) == pytest.approx(
        _reference_loss(copied, teacher, views, 0.1, 0.04, include_same_view=False), rel=1e-5)


def test_teacher_momentum_and_temperature_schedules():
    m = [float(dino_lib.teacher_momentum_at(s, 100, 0.996)) for s in (0, 50, 100, 150)]
    assert m == pytest.approx([0.996, 0.998, 1.0, 1.0], abs=1e-7)
    assert float(dino_lib.teacher_momentum_at(25, 100)) == pytest.approx(
        1 - 0.004 * (math.cos(math.pi / 4) + 1) / 2, abs=1e-7)
    t = [float(dino_lib.teacher_temperature_at(s, 0.04, 0.07, 30)) for s in (0, 15, 30, 60)]
    assert t == pytest.approx([0.04, 0.055, 0.07, 0.07], abs=1e-7)
    assert float(dino_lib.teacher_temperature_at(5, 0.04, 0.04, 0)) == pytest.approx(0.04)


def test_per_weight_gradient_clipping_follows_the_official_rule():
    g = np.full((4,), 3.0, "float32")  # norm 6
    np.testing.assert_allclose(dino_lib._clip_like_dino(g, 3.0), g * 3.0 / (6.0 + 1e-6),
                               rtol=1e-6)
    small = np.full((4,), 0.5, "float32")  # norm 1: unchanged
    np.testing.assert_array_equal(dino_lib._clip_like_dino(small, 3.0), small)


# ---------------------------------------------------------------- the train step

@pytest.fixture(scope="module")
def trained():  # ~20-45 s: XLA compiles the whole step on CPU
    """Three XLA-compiled train steps with every weight recorded around each:
    steps_per_epoch=2 (last layer frozen for steps 0 and 1), total_steps=4."""
    keras.utils.set_random_seed(0)
    model = DINO(**TINY, teacher_momentum=0.9, steps_per_epoch=2, total_steps=4,
                 clip_grad=3.0)
    model.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=0.1),
                  jit_compile=True, **model.compile_defaults())
    record = {"teacher": [_values(model.teacher_weights)],
              "student": [_values(model.student_weights)],
              "center": [_values([model.centering.center])[0]],
              "views": [], "teacher_logits": [], "logs": []}
    for step in range(3):
        views = _views(seed=step)
        g = views["global_crops"].transpose(1, 0, 2, 3, 4).reshape(-1, 32, 32, 1)
        record["teacher_logits"].append(keras.ops.convert_to_numpy(
            model.teacher_head(model.teacher_backbone(g))))
        record["logs"].append(model.train_on_batch(views, np.zeros(4, "int32"),
                                                   return_dict=True))
        record["teacher"].append(_values(model.teacher_weights))
        record["student"].append(_values(model.student_weights))
        record["center"].append(_values([model.centering.center])[0])
    return model, record


@pytest.mark.slow
def test_train_step_compiles_with_xla(trained):
    model, record = trained
    assert model.jit_compile is True
    assert all(np.isfinite(log["loss"]) for log in record["logs"])


@pytest.mark.slow
def test_teacher_is_exactly_the_ema_of_the_student(trained):
    _, record = trained
    for step in range(3):
        m = 1 - (1 - 0.9) * (math.cos(math.pi * step / 4) + 1) / 2
        for t0, s1, t1 in zip(record["teacher"][step], record["student"][step + 1],
                              record["teacher"][step + 1]):
            np.testing.assert_allclose(t1, m * t0 + (1 - m) * s1, rtol=1e-5, atol=1e-7)
        assert record["logs"][step]["teacher_momentum"] == pytest.approx(m, abs=1e-6)


@pytest.mark.slow
def test_teacher_receives_no_gradient(trained):
    model, _ = trained
    teacher = {id(v) for v in model.teacher_weights}
    assert not teacher & {id(v) for v in model.trainable_weights}
    # The optimizer built state for the student only (Adam: 2 slots per weight).
    trainable = len(model.student_backbone.trainable_weights) + \
        len(model.student_head.trainable_weights)
    assert len(model.trainable_weights) == trainable
    slots = [v for v in model.optimizer.variables if v.shape != ()]
    assert len(slots) == 2 * trainable
    # Setting the whole model trainable (as loading does) keeps the teacher frozen.
    model.trainable = True
    assert len(model.trainable_weights) == trainable


@pytest.mark.slow
def test_centre_is_the_running_mean_of_teacher_outputs(trained):
    _, record = trained
    for step in range(3):
        expected = 0.9 * record["center"][step] + \
            0.1 * record["teacher_logits"][step].mean(axis=0, keepdims=True)
        np.testing.assert_allclose(record["center"][step + 1], expected, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_last_layer_is_frozen_during_the_first_epoch(trained):
    model, record = trained
    index = [i for i, v in enumerate(model.student_weights) if v.name == "weight_v"]
    assert len(index) == 1
    i = index[0]
    student = record["student"]
    np.testing.assert_array_equal(student[1][i], student[0][i])  # step 0 (weight decay too)
    np.testing.assert_array_equal(student[2][i], student[1][i])  # step 1
    assert not np.allclose(student[3][i], student[2][i])         # step 2: epoch 2
    assert not np.allclose(student[1][0], student[0][0])         # the rest learns at once


@pytest.mark.slow
def test_fit_on_multicrop_pipeline_and_serving_backbone():
    model = DINO(**TINY)
    model.compile(optimizer="adamw", jit_compile=False, **model.compile_defaults())
    images = np.random.default_rng(0).random((8, 32, 32, 1)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((images, np.zeros(8, "int32"))).batch(
        4, drop_remainder=True).map(model.train_input_transform())
    views, _ = next(iter(ds))
    assert views["global_crops"].shape == (4, 2, 32, 32, 1)
    assert views["local_crops"].shape == (4, 2, 16, 16, 1)
    history = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    backbone = model.serving_signatures()["backbone"]
    assert backbone is model.teacher_backbone
    assert backbone(images[:2]).shape == (2, 32)


def test_local_crops_run_through_the_backbone_at_their_own_size():
    model = DINO(**TINY)
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype("float32")
    # At the global size the layer walk is the backbone itself.
    np.testing.assert_allclose(dino_lib.forward_at_size(model.student_backbone, x),
                               model.student_backbone(x), rtol=1e-5, atol=1e-6)
    small = x[:, ::2, ::2]
    assert dino_lib.forward_at_size(model.student_backbone, small).shape == (2, 32)
    resnet = DINO(backbone="resnet_tiny_digits", out_dim=16, hidden_dim=32,
                  bottleneck_dim=8, num_local_crops=2, local_crop_size=16)
    assert dino_lib.forward_at_size(resnet.student_backbone, small).shape == (2, 128)


def test_views_keep_static_shapes_when_the_batch_lost_them():
    # A retraced step (reduce_retracing, steps_per_execution loops) can see
    # views of unknown size; the student still needs the local patch grid.
    model = DINO(**TINY)
    spec = {"global_crops": tf.TensorSpec((None, None, None, None, 1)),
            "local_crops": tf.TensorSpec((None, None, None, None, 1))}

    @tf.function(input_signature=[spec])
    def student(views):
        global_views, local_views, num_views = model._views(views)
        assert tuple(local_views.shape[1:]) == (16, 16, 1) and num_views == 4
        return model._student(global_views, local_views, training=False)

    assert tuple(student(_views()).shape) == (4 * 4, 32)
    with pytest.raises(ValueError, match=r"local_crops must have shape \(B, 2, 16, 16, 1\)"):
        model._views({**_views(), "local_crops": np.zeros((4, 2, 24, 24, 1), "float32")})


def test_keras_file_round_trip_keeps_teacher_and_centre(tmp_path):
    model = DINO(**TINY)
    model.centering.center.assign(np.full((1, 32), 0.25, "float32"))
    model.teacher_head.weight_v.assign(model.teacher_head.weight_v * 2 + 0.1)
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype("float32")
    before = model.predict(x, verbose=0)
    model.save(tmp_path / "dino.keras")
    loaded = keras.saving.load_model(tmp_path / "dino.keras")
    after = loaded.predict(x, verbose=0)
    for key in ("student", "teacher"):
        np.testing.assert_allclose(after[key], before[key], rtol=1e-5, atol=1e-6)
    assert len(loaded.trainable_weights) == len(model.trainable_weights)
    assert keras_zoo.DINO is DINO and "dino_vit_tiny_digits" in keras_zoo.list_presets(
        "DINO", tiny=True)


def test_bad_configs_and_inputs_are_clear_errors():
    other = {"family": "ViT", "config": {**BACKBONE["config"], "num_layers": 2}}
    with pytest.raises(ValueError, match=r"share one backbone.*differ in \['num_layers'\]"):
        DINO(**TINY, teacher_backbone=other)
    DINO(**TINY, teacher_backbone=BACKBONE)  # the same spec is fine
    with pytest.raises(ValueError, match="local_crop_size=48 is larger than the "
                                         "backbone's image size 32"):
        DINO(**{**TINY, "local_crop_size": 48})
    with pytest.raises(ValueError, match="DINO backbone must be a preset name"):
        DINO(**{**TINY, "backbone": {"family": "ViT"}})
    model = DINO(**TINY)
    model.compile(optimizer="adamw", **model.compile_defaults())
    empty = tf.data.Dataset.from_tensor_slices(
        (np.zeros((3, 32, 32, 1), "float32"), np.zeros(3, "int32"))).batch(
        4, drop_remainder=True)
    with pytest.raises(ValueError, match="dataset given to DINO.fit is empty"):
        model.fit(empty.map(model.train_input_transform()))
    with pytest.raises(ValueError, match=r"DINO trains on multi-crop views.*train_input_transform"):
        model.train_on_batch(np.zeros((4, 32, 32, 1), "float32"), np.zeros(4, "int32"))


_MIRRORED = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    from keras_zoo.models.dino import DINO
    config = json.loads(sys.argv[1])
    rng = np.random.default_rng(0)
    views = {"global_crops": rng.random((8, 2, 32, 32, 1)).astype("float32"),
             "local_crops": rng.random((8, 2, 16, 16, 1)).astype("float32")}
    keras.utils.set_random_seed(0)
    weights = DINO(**config).get_weights()

    def one_step(strategy):
        with strategy.scope():
            model = DINO(**config)
            model.set_weights(weights)
            model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False,
                          **model.compile_defaults())
        ds = tf.data.Dataset.from_tensors((views, np.zeros(8, "int32")))
        model.fit(ds, epochs=1, verbose=0)
        return model

    mirrored = one_step(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    single = one_step(tf.distribute.get_strategy())
    g = views["global_crops"].transpose(1, 0, 2, 3, 4).reshape(-1, 32, 32, 1)
    reference = DINO(**config)
    reference.set_weights(weights)
    teacher = np.asarray(reference.teacher_head(reference.teacher_backbone(g)))
    out = {"replicas": mirrored.distribute_strategy.num_replicas_in_sync,
           "mirrored": np.asarray(mirrored.centering.center).tolist(),
           "single": np.asarray(single.centering.center).tolist(),
           "expected": (0.1 * teacher.mean(axis=0, keepdims=True)).tolist(),
           "half": (0.1 * teacher.reshape(2, 8, -1)[:, :4].mean(axis=(0, 1))).tolist(),
           "student_gap": max(float(np.abs(a - b).max()) for a, b in zip(
               mirrored.student_head.get_weights(), single.student_head.get_weights()))}
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.slow
def test_centre_under_mirrored_strategy_equals_single_device():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", _MIRRORED, json.dumps(TINY)], env=env,
                          capture_output=True, text=True, timeout=1800, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stderr[-3000:]
    out = json.loads(lines[0][len("RESULT "):])
    assert out["replicas"] == 2
    np.testing.assert_allclose(out["mirrored"], out["single"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out["mirrored"], out["expected"], rtol=1e-5, atol=1e-7)
    # Each replica saw half the batch; without the all-reduce a replica would
    # have kept its own half's mean, which differs.
    assert not np.allclose(out["mirrored"][0], out["half"], rtol=1e-3)
    # Gradients were all-reduced once: the students took the same step.
    assert out["student_gap"] < 1e-5
