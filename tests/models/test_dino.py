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
    ds = tf.data.Dataset.from_tensor_slices((images, np.zeros(8, "int32"))).map(
        model.train_input_transform()).batch(4, drop_remainder=True)
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


FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "dino")


@pytest.mark.parametrize("old, new", [(14, 6), (4, 2), (4, 6)])
def test_local_crop_positions_are_dinos_bicubic_at_its_scale(old, new):
    # tools/make_dino_fixtures.py: torch's F.interpolate(mode="bicubic",
    # scale_factor=(new + 0.1) / old), as vision_transformer.interpolate_pos_encoding
    ref = np.load(os.path.join(FIXTURES, "positions.npz"))
    grid = ref[f"grid_{old}"]
    layer = keras_zoo.layers.embeddings.LearnedPositionEmbedding(num_prefix_tokens=1)
    layer.build((None, 1 + old * old, grid.shape[1]))
    cls = np.full((1, 1, grid.shape[1]), 7.0, "float32")
    layer.embedding.assign(np.concatenate([cls, grid[None]], axis=1))
    out = np.asarray(dino_lib._resample_positions(layer, new))
    np.testing.assert_array_equal(out[:, :1], cls)  # the class token's position: unchanged
    # float32 sums of 16 products of values ~1 (float64 here: 3e-6 from torch)
    np.testing.assert_allclose(out[0, 1:], ref[f"out_{old}_{new}"], rtol=0, atol=3e-5)
    # a plain size-based bicubic resize (no +0.1) samples elsewhere
    plain = keras.ops.image.resize(grid.reshape(1, old, old, -1), (new, new),
                                   interpolation="bicubic", antialias=False)
    assert np.abs(np.asarray(plain).reshape(-1, grid.shape[1]) -
                  ref[f"out_{old}_{new}"]).max() > 1e-3


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
        (np.zeros((3, 32, 32, 1), "float32"), np.zeros(3, "int32"))).map(
        model.train_input_transform()).batch(4, drop_remainder=True)
    with pytest.raises(ValueError, match="dataset given to DINO.fit is empty"):
        model.fit(empty)
    with pytest.raises(ValueError, match=r"stochastic depth with DINO's drop_path_rate"):
        DINO(**{**TINY, "backbone": {"family": "ViT", "config": {
            **BACKBONE["config"], "drop_path_rate": 0.2}}})
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
               mirrored.student_head.get_weights(), single.student_head.get_weights())),
           "student_step": max(float(np.abs(a - b).max()) for a, b in zip(
               single.student_head.get_weights(), reference.student_head.get_weights()))}
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
    # Gradients were all-reduced once: the students took the same step (to
    # 1e-4 of the step, not of an absolute scale a smaller step would pass).
    assert out["student_step"] > 0
    assert out["student_gap"] < 1e-4 * out["student_step"]


# ---------------------------------------------------------------- fidelity to main_dino.py

# Every photometric op off: what is left of multi-crop is the crop.
PLAIN = {"flip_probability": 0.0, "color_jitter_probability": 0.0,
         "grayscale_probability": 0.0, "blur_probability": [0.0, 0.0, 0.0],
         "solarization_probability": 0.0}


def _last_layer_and_all_grads(model, views, step):
    """The clipped gradients train_step hands the optimizer (one replica),
    recomputed from the model's pieces before the step runs."""
    c = model.get_zoo_config()
    global_views, local_views, num_views = model._views(views)
    teacher = model._teacher(global_views, training=True)
    student_vars = model.student_backbone.trainable_weights + \
        model.student_head.trainable_weights
    with tf.GradientTape() as tape:
        student = model._student(global_views, local_views, training=True)
        loss = dino_lib.dino_loss(student, model.centering(teacher), num_views,
                                  c["student_temperature"], model._temperature(step))
    grads = tape.gradient(loss, student_vars)
    if c["clip_grad"]:
        grads = [dino_lib._clip_like_dino(g, c["clip_grad"]) for g in grads]
    return student_vars, [np.asarray(g) for g in grads]


def test_trainer_stream_cuts_views_from_the_decoded_original_image():
    # 100 x 200 images whose value is the column's share of the width: a view's
    # value span is the share of the width it covers. A crop of 1/4 of the area
    # with aspect r in [3/4, 4/3] of *original* pixels spans 0.35 sqrt(r) of the
    # width (0.31-0.41); local crops of 1/20: 0.16 sqrt(r) (0.14-0.18). Cut from
    # the image squashed to the model's 32 x 32 first, they would span
    # 0.43-0.58 and 0.19-0.26.
    from experiments.train import train_stream
    from keras_zoo.data.datasets import DatasetInfo

    ramp = np.tile(np.linspace(0.0, 1.0, 200, dtype="float32"), (100, 1))[..., None]
    ds = tf.data.Dataset.from_tensor_slices((np.repeat(ramp[None], 8, 0), np.zeros(8, "int32")))
    info = DatasetInfo("ramp", "train", 10, (100, 200, 1), 8)
    model = DINO(**{**TINY, "global_crops_scale": [0.25, 0.25],
                    "local_crops_scale": [0.05, 0.05], "augmentation": PLAIN})
    config = {"global_batch_size": 4, "shuffle_buffer": 8, "seed": 0}
    stream = train_stream(model, ds, info, config, 0, 4)
    spans = {"global_crops": [], "local_crops": []}
    for views, _ in stream.take(2):
        for key, found in spans.items():
            v = views[key].numpy()
            found.append((v.max(axis=(2, 3, 4)) - v.min(axis=(2, 3, 4))).ravel())
    g, loc = np.concatenate(spans["global_crops"]), np.concatenate(spans["local_crops"])
    assert views["global_crops"].shape == (4, 2, 32, 32, 1)   # static shapes stay
    assert views["local_crops"].shape == (4, 2, 16, 16, 1)
    assert g.min() > 0.28 and g.max() < 0.42, (g.min(), g.max())
    assert loc.min() > 0.12 and loc.max() < 0.19, (loc.min(), loc.max())


@pytest.mark.slow
def test_batchnorm_teacher_uses_batch_statistics_and_the_ema_skips_them():
    model = DINO(backbone="resnet_tiny_digits", out_dim=16, hidden_dim=32, bottleneck_dim=8,
                 num_local_crops=0, local_crop_size=16, teacher_momentum=0.9,
                 steps_per_epoch=10, total_steps=20)
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False,
                  **model.compile_defaults())
    views = _views(num_local=0)
    g = views["global_crops"].transpose(1, 0, 2, 3, 4).reshape(-1, 32, 32, 1)
    teacher_vars = model.teacher_weights
    start = _values(teacher_vars)
    inference = keras.ops.convert_to_numpy(
        model.teacher_head(model.teacher_backbone(g, training=False)))
    # What main_dino.py's teacher (train mode) computes: batch statistics, and
    # its own running statistics move by its own forward pass.
    train_mode = keras.ops.convert_to_numpy(
        model.teacher_head(model.teacher_backbone(g, training=True)))
    running = {i: np.asarray(v) for i, v in enumerate(teacher_vars)
               if v.name in ("moving_mean", "moving_variance")}
    assert len(running) >= 4
    for v, value in zip(teacher_vars, start):
        v.assign(value)
    student_start = _values(model.student_weights)
    model.train_on_batch(views, np.zeros(4, "int32"))
    center = np.asarray(model.centering.center)
    np.testing.assert_allclose(center, 0.1 * train_mode.mean(axis=0, keepdims=True),
                               rtol=1e-4, atol=1e-6)
    gap = np.abs(center - 0.1 * inference.mean(axis=0, keepdims=True)).max()
    assert gap > 1e-3  # the moving statistics would have given another centre
    after_teacher, after_student = _values(teacher_vars), _values(model.student_weights)
    for i, (t0, s1, t1) in enumerate(zip(start, after_student, after_teacher)):
        if i in running:  # the teacher's own forward pass, not the EMA of the student's
            np.testing.assert_allclose(t1, running[i], rtol=1e-4, atol=1e-6)
            assert not np.allclose(t1, 0.9 * t0 + 0.1 * s1, rtol=1e-4, atol=1e-6)
        else:             # parameters: the EMA
            np.testing.assert_allclose(t1, 0.9 * t0 + 0.1 * s1, rtol=1e-5, atol=1e-7)
    assert any(not np.allclose(a, b) for a, b in zip(after_student, student_start))
    # The teacher's BN scale and offset stay out of the optimizer.
    teacher_ids = {id(v) for v in teacher_vars}
    assert not teacher_ids & {id(v) for v in model.trainable_weights}
    model.trainable = True  # as loading does
    assert not teacher_ids & {id(v) for v in model.trainable_weights}


@pytest.mark.slow
def test_last_layer_adam_state_starts_when_it_is_unfrozen():
    # main_dino.py cancels the last layer's gradients (None) in epoch 1, so
    # AdamW neither moves it nor counts its steps: at unfreezing its Adam is
    # new. Reference: a fresh keras AdamW fed the same gradients from then on.
    keras.utils.set_random_seed(1)
    model = DINO(**{**TINY, "steps_per_epoch": 1, "total_steps": 100,
                    "weight_decay_end": None})
    model.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=0.1),
                  jit_compile=False, **model.compile_defaults())
    weight_v = model.student_head.weight_v
    index = next(i for i, v in enumerate(model.student_backbone.trainable_weights +
                                         model.student_head.trainable_weights)
                 if v is weight_v)
    reference = keras.optimizers.AdamW(1e-2, weight_decay=0.1)
    ref_var = None
    for step in range(3):
        views = _views(seed=step)
        _, grads = _last_layer_and_all_grads(model, views, step)
        before = np.asarray(weight_v)
        model.train_on_batch(views, np.zeros(4, "int32"))
        after = np.asarray(weight_v)
        if step == 0:
            np.testing.assert_array_equal(after, before)  # frozen: not even decay
            continue
        if ref_var is None:
            ref_var = keras.Variable(before)
            reference.build([ref_var])
        reference.apply([grads[index]], [ref_var])
        np.testing.assert_allclose(after, np.asarray(ref_var), rtol=1e-4, atol=1e-7)
    # The first unfrozen update is Adam's first step: about lr per entry.
    assert np.median(np.abs(np.asarray(ref_var) - before)) > 5e-3


@pytest.mark.slow
def test_train_step_clips_each_weights_gradient():
    # SGD(1), no decay: each weight moves by exactly its clipped gradient, whose
    # norm is min(|g|, clip) -- checked relative to clip, weight by weight.
    clip = 1e-3
    model = DINO(**{**TINY, "clip_grad": clip, "steps_per_epoch": 1, "total_steps": 10})
    model.compile(optimizer=keras.optimizers.SGD(1.0), jit_compile=False,
                  **model.compile_defaults())
    views = _views(seed=3)
    variables, grads = _last_layer_and_all_grads(model, views, 0)
    before = _values(variables)
    model.train_on_batch(views, np.zeros(4, "int32"))
    frozen = {id(v) for v in model.student_head.last_layer_weights}
    clipped = 0
    for v, b, g in zip(variables, before, grads):
        step = np.linalg.norm(np.asarray(v) - b)
        if id(v) in frozen:
            assert step == 0
            continue
        assert np.linalg.norm(g) <= clip * (1 + 1e-5)
        assert step == pytest.approx(np.linalg.norm(g), rel=1e-3, abs=clip * 1e-3)
        clipped += np.linalg.norm(g) > clip * 0.999
    assert clipped >= len(variables) // 2  # most weights' gradients were above the bound


@pytest.mark.slow
def test_weight_decay_follows_the_cosine_schedule():
    # utils.cosine_scheduler(0.04, 0.4, ...): wd_t = 0.4 - 0.36 (1 + cos(pi t / T)) / 2.
    # SGD(1) with the gradient clipped to 1e-9 leaves only the decay:
    # w <- w (1 - wd_t).
    total = 4
    model = DINO(**{**TINY, "clip_grad": 1e-9, "total_steps": total, "steps_per_epoch": 1})
    model.compile(optimizer=keras.optimizers.SGD(1.0, weight_decay=0.04), jit_compile=False,
                  **model.compile_defaults())
    kernel = model.student_backbone.get_layer("encoder_block_0").mlp.fc1.kernel
    for step in range(3):
        expected = 0.4 - 0.36 * (1 + math.cos(math.pi * step / total)) / 2
        before = np.asarray(kernel)
        logs = model.train_on_batch(_views(seed=step), np.zeros(4, "int32"), return_dict=True)
        ratio = np.asarray(kernel) / before
        assert np.median(ratio) == pytest.approx(1 - expected, abs=1e-5)
        assert logs["weight_decay"] == pytest.approx(expected, abs=1e-6)
    assert model.optimizer.weight_decay == 0.04  # the configured start is kept
    np.testing.assert_allclose(
        [float(dino_lib.weight_decay_at(s, 100, 0.04, 0.4)) for s in (0, 50, 100)],
        [0.04, 0.22, 0.4], atol=1e-6)


def test_head_and_loss_stay_float32_under_bfloat16():
    policy = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy("mixed_bfloat16")
        head = DINOHead(out_dim=64, hidden_dim=32, bottleneck_dim=16)
        x = np.random.default_rng(0).normal(size=(6, 24)).astype("float32")
        out = head(x)
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
        h = x
        for dense in head.mlp:
            h = dense(h)
        h = np.asarray(keras.ops.cast(h, "float32"), "float64")
        v = np.asarray(head.weight_v, "float64")
        expected = (h / np.linalg.norm(h, axis=1, keepdims=True)) @ (
            v / np.linalg.norm(v, axis=0, keepdims=True))
        # bfloat16 logits would be off by ~1e-3 of their scale (8 mantissa bits).
        np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-6)
        model = DINO(**TINY)
        outputs = model(_views()["global_crops"][:, 0])
        assert keras.backend.standardize_dtype(outputs["student"].dtype) == "float32"
    finally:
        keras.config.set_dtype_policy(policy)


def test_student_has_stochastic_depth_and_the_teacher_none():
    config = {**BACKBONE["config"], "num_layers": 3}
    model = DINO(**{**TINY, "backbone": {"family": "ViT", "config": config}})
    student = [model.student_backbone.get_layer(f"encoder_block_{i}").drop_path_rate
               for i in range(3)]
    teacher = [model.teacher_backbone.get_layer(f"encoder_block_{i}").drop_path_rate
               for i in range(3)]
    np.testing.assert_allclose(student, [0.0, 0.05, 0.1])  # main_dino.py's 0.1, linear
    assert teacher == [0.0, 0.0, 0.0]
    # Same weights on both sides, so the EMA pairs them one to one.
    assert [w.shape for w in model.teacher_weights] == [w.shape for w in model.student_weights]
    # ResNet has no stochastic depth; the official code passes the rate to ViTs only.
    DINO(backbone="resnet_tiny_digits", out_dim=16, hidden_dim=32, bottleneck_dim=8,
         num_local_crops=0, local_crop_size=16)


_SYNC_BN = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    from keras_zoo.models.dino import DINO
    config = dict(backbone="resnet_tiny_digits", out_dim=16, hidden_dim=32, bottleneck_dim=8,
                  num_local_crops=0, local_crop_size=32)
    rng = np.random.default_rng(0)
    # the two replicas' halves of the batch differ: their own statistics would too
    x = np.concatenate([rng.random((4, 32, 32, 1)), 3 * rng.random((4, 32, 32, 1)) + 1])
    x = x.astype("float32")
    keras.utils.set_random_seed(0)
    weights = DINO(**config).get_weights()
    out = {}
    for sync in (True, False):
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            model = DINO(**config, sync_batchnorm=sync)
            model.set_weights(weights)
        bn = next(l for l in model.student_backbone.layers
                  if isinstance(l, keras.layers.BatchNormalization))
        ds = strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensor_slices(x).batch(8))
        fn = tf.function(lambda b: model.student_backbone(b, training=True))
        per_replica = strategy.run(fn, args=(next(iter(ds)),))
        out[sync] = {"features": np.concatenate(
            [np.asarray(t) for t in strategy.experimental_local_results(per_replica)]).tolist(),
            "moving_mean": np.asarray(bn.moving_mean).tolist(), "synchronized": bn.synchronized}
    single = DINO(**config)
    single.set_weights(weights)
    bn = next(l for l in single.student_backbone.layers
              if isinstance(l, keras.layers.BatchNormalization))
    out["single"] = {"features": np.asarray(single.student_backbone(x, training=True)).tolist(),
                     "moving_mean": np.asarray(bn.moving_mean).tolist()}
    print("RESULT " + json.dumps({str(k): v for k, v in out.items()}))
""")


@pytest.mark.slow
def test_batchnorm_statistics_are_the_global_batchs_across_replicas():
    # main_dino.py converts every BatchNorm with nn.SyncBatchNorm.convert_sync_batchnorm:
    # two replicas of 4 images must normalise as one device with the batch of 8
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", _SYNC_BN], env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stderr[-3000:]
    out = json.loads(lines[0][len("RESULT "):])
    assert out["True"]["synchronized"] and not out["False"]["synchronized"]
    single = np.asarray(out["single"]["features"])
    scale = np.abs(single).max()
    # float32 sums over 4 vs 8 images in another order: a few ulps of the scale
    np.testing.assert_allclose(out["True"]["features"], single, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(out["True"]["moving_mean"], out["single"]["moving_mean"],
                               rtol=1e-5, atol=1e-7)
    # per-replica statistics (no sync) give other features
    assert np.abs(np.asarray(out["False"]["features"]) - single).max() > 1e-2 * scale
