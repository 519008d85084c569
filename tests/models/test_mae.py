"""MAE (He et al. 2021): masking, the masked-patch loss, training, transfer to ViT."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_zoo
from keras_zoo.data import datasets
from keras_zoo.layers.embeddings import PatchEmbedding
from keras_zoo.layers.masking import RandomPatchMasking
from keras_zoo.models.mae import MAE, masked_patch_loss, patchify, unpatchify

TINY = "mae_tiny_digits"


def _tokens(batch, n, dim=3):
    """Tokens whose first channel is their patch index: gathers are traceable."""
    t = np.zeros((batch, n, dim), "float32")
    t[:, :, 0] = np.arange(n)
    t[:, :, 1] = np.arange(batch)[:, None]
    return t


def _randomise(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.2, w.shape).astype(w.dtype)
                       if w.dtype.kind == "f" else w for w in model.get_weights()])


@pytest.mark.parametrize("ratio", [0.5, 0.75, 0.9])
def test_masking_hides_exactly_the_configured_share(ratio):
    n, batch = 64, 16
    keep = int(n * (1 - ratio))
    visible, mask, ids_restore = RandomPatchMasking(ratio, seed=1)(_tokens(batch, n))
    visible, mask, ids_restore = (np.asarray(t) for t in (visible, mask, ids_restore))
    assert visible.shape == (batch, keep, 3)
    np.testing.assert_array_equal(mask.sum(axis=1), np.full(batch, n - keep))
    # Visible tokens are exactly the unmasked patches of their own sample.
    for b in range(batch):
        assert sorted(visible[b, :, 0].astype(int)) == list(np.flatnonzero(mask[b] == 0))
        assert set(visible[b, :, 1]) == {b}
    assert len({m.tobytes() for m in mask}) == batch  # a different subset per sample


def test_restore_indices_invert_the_shuffle():
    n, batch = 16, 4
    tokens = _tokens(batch, n)
    visible, mask, ids_restore = RandomPatchMasking(0.75, seed=2)(tokens)
    ids_restore = np.asarray(ids_restore)
    for row in ids_restore:  # a permutation of the patch indices
        assert sorted(row) == list(range(n))
    # Visible tokens followed by placeholders, unshuffled, land on their patches.
    placeholder = np.full((batch, n - visible.shape[1], 3), -1.0, "float32")
    shuffled = np.concatenate([np.asarray(visible), placeholder], axis=1)
    restored = np.take_along_axis(shuffled, ids_restore[:, :, None], axis=1)
    kept = np.asarray(mask) == 0
    np.testing.assert_array_equal(restored[kept], tokens[kept])
    assert (restored[~kept] == -1).all()


def test_encoder_sees_only_the_visible_patches():
    model = keras_zoo.MAE.from_preset(TINY)
    n = (32 // 4) ** 2
    assert model.get_layer("encoder_block_0").input.shape[1] == 1 + n // 4  # [CLS] + 16
    assert model.get_layer("decoder_block_0").input.shape[1] == 1 + n
    x = np.random.default_rng(0).random((3, 32, 32, 1)).astype("float32")
    out = model(x)
    assert out["reconstruction"].shape == (3, n, 16)
    np.testing.assert_array_equal(np.asarray(out["mask"]).sum(axis=1), [48, 48, 48])


@pytest.mark.parametrize("ratio", [0, 1, 1.5, -0.25, "0.75", 0.999])
def test_bad_mask_ratio_is_a_clear_error(ratio):
    with pytest.raises(ValueError, match="mask_ratio"):
        keras_zoo.MAE.from_preset(TINY, mask_ratio=ratio)


def test_image_size_must_divide_by_patch_size():
    with pytest.raises(ValueError, match="image_size=30 is not divisible by patch_size=4"):
        keras_zoo.MAE.from_preset(TINY, image_size=30)


def test_patchify_matches_patch_embedding_order_and_inverts():
    p, c = 4, 2
    images = np.random.default_rng(0).random((2, 16, 16, c)).astype("float32")
    patches = np.asarray(patchify(images, p))
    assert patches.shape == (2, 16, p * p * c)
    # A patch embedding whose kernel copies pixel (i, j, ch) to feature
    # (i*p + j)*c + ch emits tokens in the order the loss targets use.
    embed = PatchEmbedding(p, p * p * c, use_bias=False)
    embed.build(images.shape)
    embed.set_weights([np.eye(p * p * c, dtype="float32").reshape(p, p, c, p * p * c)])
    np.testing.assert_allclose(np.asarray(embed(images)), patches, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(unpatchify(patches, p, 16, c)), images)


def _loss_inputs(seed=0):
    rng = np.random.default_rng(seed)
    target = rng.random((4, 16, 12)).astype("float32")
    pred = rng.random((4, 16, 12)).astype("float32")
    _, mask, _ = RandomPatchMasking(0.75, seed=seed)(np.zeros((4, 16, 1), "float32"))
    return target, pred, np.asarray(mask)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_loss_ignores_visible_patches(norm_pix):
    target, pred, mask = _loss_inputs()
    base = float(masked_patch_loss(target, pred, mask, norm_pix))
    visible, masked = mask == 0, mask == 1
    for array in ("pred", "target"):
        for where, changes in ((visible, False), (masked, True)):
            t, p = target.copy(), pred.copy()
            (p if array == "pred" else t)[where] += np.linspace(1, 3, 12, dtype="float32") ** 2
            loss = float(masked_patch_loss(t, p, mask, norm_pix))
            assert (abs(loss - base) > 1e-3) == changes, (array, changes, loss, base)
    # The definition: per-patch MSE, averaged over the masked patches.
    if not norm_pix:
        expected = ((pred - target) ** 2).mean(-1)[masked].mean()
        np.testing.assert_allclose(base, expected, rtol=1e-6)


def test_model_loss_is_the_mean_over_masked_patches_only():
    # The objective Keras' train_step calls (compute_loss), against numpy on
    # the model's own outputs: per-patch MSE averaged over masked patches.
    model = keras_zoo.MAE.from_preset(TINY, seed=1)
    x = np.random.default_rng(9).random((4, 32, 32, 1)).astype("float32")
    out = model(x, training=True)
    pred, mask = np.asarray(out["reconstruction"]), np.asarray(out["mask"])
    assert mask.sum() == 4 * 48  # 75 % of 64 patches per image
    target = x.reshape(4, 8, 4, 8, 4, 1).transpose(0, 1, 3, 2, 4, 5).reshape(4, 64, 16)
    per_patch = ((pred - target) ** 2).mean(axis=-1)
    expected = (per_patch * mask).sum() / mask.sum()
    loss = float(model.compute_loss(x, None, out))
    assert loss == pytest.approx(expected, rel=1e-5)
    # The reference can tell masked from all patches apart on this input.
    assert abs(per_patch.mean() - expected) > 1e-3 * expected
    assert abs(per_patch[mask == 0].mean() - expected) > 1e-3 * expected


def test_train_input_transform_is_maes_random_resized_crop_and_flip():
    # main_pretrain.py: RandomResizedCrop(size, scale=(0.2, 1.0), bicubic) +
    # RandomHorizontalFlip, on the decoded image. A 100 x 200 ramp (value = the
    # column's share of the width): a crop of 1/4 of the area with aspect r
    # in [3/4, 4/3] of original pixels spans 0.35 sqrt(r) of the width.
    import tensorflow as tf

    ramp = np.tile(np.linspace(0.0, 1.0, 200, dtype="float32"), (100, 1))[..., None]
    model = keras_zoo.MAE.from_preset(TINY, train_crop_scale=(0.25, 0.25),
                                      train_flip_probability=1.0)
    ds = tf.data.Dataset.from_tensors((ramp, 0)).repeat(40).map(model.train_input_transform(3))
    crops = np.stack([x.numpy() for x, _ in ds])
    assert crops.shape == (40, 32, 32, 1)
    spans = crops.max(axis=(1, 2, 3)) - crops.min(axis=(1, 2, 3))
    assert spans.min() > 0.28 and spans.max() < 0.42, (spans.min(), spans.max())
    assert (crops[:, :, 0] > crops[:, :, -1]).all()  # flipped: the ramp now falls
    config = keras_zoo.MAE.from_preset(TINY).get_zoo_config()
    assert config["train_crop_scale"] == [0.2, 1.0] and config["train_flip_probability"] == 0.5
    with pytest.raises(ValueError, match="train_crop_scale must be"):
        keras_zoo.MAE.from_preset(TINY, train_crop_scale=(0.5, 0.1))


def test_sample_weight_zero_removes_an_image_from_the_loss():
    model = keras_zoo.MAE.from_preset(TINY)
    x = np.random.default_rng(8).random((3, 32, 32, 1)).astype("float32")
    out = model(x)
    weighted = float(model.compute_loss(x, None, out, np.array([1, 1, 0], "float32")))
    first_two = float(model.compute_loss(x[:2], None, {k: v[:2] for k, v in out.items()}))
    np.testing.assert_allclose(weighted, first_two, rtol=1e-6)
    assert abs(float(model.compute_loss(x, None, out)) - first_two) > 1e-6


def test_norm_pix_loss_normalises_each_target_patch():
    target, pred, mask = _loss_inputs(1)
    mean = target.mean(-1, keepdims=True)
    std = np.sqrt(target.var(-1, ddof=1, keepdims=True) + 1e-6)
    normalised = (target - mean) / std
    assert float(masked_patch_loss(target, normalised, mask, True)) < 1e-10
    assert float(masked_patch_loss(target, normalised, mask, False)) > 0.1
    # Per-patch shift and scale of the target do not change the loss.
    rng = np.random.default_rng(2)
    moved = target * rng.uniform(0.5, 3, (4, 16, 1)) + rng.normal(0, 5, (4, 16, 1))
    np.testing.assert_allclose(float(masked_patch_loss(moved.astype("float32"), pred, mask, True)),
                               float(masked_patch_loss(target, pred, mask, True)), rtol=1e-4)


def test_published_parameter_count():
    # Official mae_vit_base_patch16_dec512d8b: 111.91M including the fixed
    # (non-trainable) sin-cos tables of 197 x 768 + 197 x 512 entries.
    model = keras_zoo.MAE.from_preset("mae_vit_base_patch16", load_weights=False)
    assert model.trainable_parameter_count() == 111_655_680
    assert model.trainable_parameter_count() + 197 * (768 + 512) == 111_907_840
    vit_encoder = keras_zoo.ViT.from_preset("vit_base_patch16_224", load_weights=False,
                                           num_classes=None)
    # The encoder is ViT-B/16 minus its learned position table.
    encoder_params = sum(int(np.prod(w.shape)) for w in model.encoder().trainable_weights)
    assert encoder_params == vit_encoder.trainable_parameter_count() - 197 * 768


@pytest.mark.slow
def test_train_step_compiles_with_xla_and_lowers_masked_loss_on_digits():
    x, y, _ = datasets.load_arrays("digits", "train", 32, 1)
    x, y = x[:384], y[:384]
    model = keras_zoo.MAE.from_preset(TINY, seed=0)
    model.compile(optimizer=keras.optimizers.AdamW(2e-3), jit_compile=True,
                  **model.compile_defaults())

    def masked_loss():  # eager: one XLA compilation (fit's) is enough for the test
        return float(model.compute_loss(x, y, model(x, training=False)))

    before = masked_loss()
    history = model.fit(x, y, batch_size=64, epochs=3, shuffle=True, verbose=0)
    after = masked_loss()
    assert model.jit_compile is True
    assert np.isfinite(history.history["loss"]).all()
    assert after < 0.6 * before, (before, after)


def test_to_vit_gives_identical_unmasked_features():
    mae = keras_zoo.MAE.from_preset(TINY)
    _randomise(mae)
    x = np.random.default_rng(3).random((2, 32, 32, 1)).astype("float32")
    features = np.asarray(mae.encoder()(x))
    assert features.shape == (2, 65, 64)
    tokens = mae.to_vit(num_classes=None, pooling=None)
    np.testing.assert_allclose(np.asarray(tokens(x)), features, atol=1e-5)
    classifier = mae.to_vit(num_classes=10)
    assert isinstance(classifier, keras_zoo.ViT) and classifier.output.shape == (None, 10)
    np.testing.assert_allclose(np.asarray(classifier.get_layer("head").kernel), 0)
    pooled = mae.to_vit(num_classes=None, pooling="token")
    np.testing.assert_allclose(np.asarray(pooled(x)), features[:, 0], atol=1e-5)


def test_serving_signature_is_the_unmasked_encoder():
    mae = keras_zoo.MAE.from_preset(TINY)
    signatures = mae.serving_signatures()
    assert list(signatures) == ["encoder"]
    encoder = signatures["encoder"]
    assert encoder.output.shape == (None, 65, 64)
    # It shares the MAE's weights: a change to the model shows in the encoder.
    x = np.random.default_rng(4).random((1, 32, 32, 1)).astype("float32")
    before = np.asarray(encoder(x))
    _randomise(mae, seed=5)
    assert np.abs(np.asarray(encoder(x)) - before).max() > 1e-3


def test_save_load_round_trip(tmp_path):
    mae = keras_zoo.MAE.from_preset(TINY, seed=7)
    _randomise(mae)
    x = np.random.default_rng(6).random((2, 32, 32, 1)).astype("float32")
    encoded = np.asarray(mae.encoder()(x))
    mae.save(tmp_path / "mae.keras")
    mae.save_to_preset(tmp_path / "preset")
    for loaded in (keras.saving.load_model(tmp_path / "mae.keras"),
                   keras_zoo.MAE.from_preset(str(tmp_path / "preset"))):
        assert type(loaded) is MAE and loaded.get_zoo_config() == mae.get_zoo_config()
        np.testing.assert_array_equal(np.asarray(loaded.encoder()(x)), encoded)
        for a, b in zip(loaded.weights, mae.weights):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The fine-tuning path from a saved preset.
    vit = keras_zoo.MAE.from_preset(str(tmp_path / "preset")).to_vit(num_classes=None,
                                                                       pooling=None)
    np.testing.assert_allclose(np.asarray(vit(x)), encoded, atol=1e-5)


_DISTRIBUTED = textwrap.dedent("""
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras_zoo
    x = np.random.default_rng(0).random((64, 32, 32, 1)).astype("float32")
    y = np.zeros(64, "int32")
    weights = keras_zoo.MAE.from_preset("mae_tiny_digits", seed=0).get_weights()

    def run(strategy):
        # The same weights, one evaluation, then one SGD step on the same batch.
        with strategy.scope():
            model = keras_zoo.MAE.from_preset("mae_tiny_digits", seed=0)
            model.set_weights(weights)
            model.compile(optimizer=keras.optimizers.SGD(0.1), **model.compile_defaults())
        loss = model.evaluate(x, y, batch_size=64, verbose=0)
        kernel = model.get_layer("decoder_prediction").kernel
        before = kernel.numpy()
        model.fit(x, y, batch_size=64, epochs=1, verbose=0)
        return model, loss, np.linalg.norm(kernel.numpy() - before)

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    model, loss, step = run(strategy)
    _, single_loss, single_step = run(tf.distribute.get_strategy())
    assert np.isfinite(loss), loss
    # Each replica's loss is its half's mean / 2, so the summed gradients are
    # the global mean's: loss and step match one device (masks differ, so not
    # exactly); without the division both would be ~2x.
    assert 0.8 < loss / single_loss < 1.25, (loss, single_loss)
    assert 0.7 < step / single_step < 1.4, (step, single_step)
    masking = model.get_layer("random_masking")
    fn = tf.function(lambda t: strategy.run(lambda t: masking(t)[1], args=(t,)))
    masks = strategy.experimental_local_results(fn(tf.zeros((4, 64, 8))))
    assert not np.array_equal(masks[0].numpy(), masks[1].numpy()), "replicas drew the same masks"
    print("OK", loss, single_loss, step, single_step)
""")


@pytest.mark.slow
def test_trains_under_mirrored_strategy_with_different_masks_per_replica():
    # Logical devices must exist before TensorFlow starts: a fresh process.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-c", _DISTRIBUTED], env=env, check=False,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
