"""Behaviour every family shares: shapes, .keras round trip, input checks."""

import numpy as np
import pytest
import keras

import keras_zoo

TINY = {
    "mlp_small": {},
    "lenet5": {},
    "resnet_tiny_digits": {},
    "vit_tiny_digits": {},
}


def _randomise(model):
    rng = np.random.default_rng(0)
    # abs(): BatchNorm moving variances must stay positive.
    model.set_weights([np.abs(rng.normal(0, 0.1, w.shape)).astype(w.dtype) if w.ndim else w
                       for w in model.get_weights()])


@pytest.mark.parametrize("name", sorted(TINY))
def test_keras_file_round_trip(name, tmp_path):
    model = keras_zoo.from_preset(name)
    _randomise(model)
    x = np.random.default_rng(1).random((2, 32, 32, 1)).astype("float32")
    before = np.asarray(model.predict(x, verbose=0))
    assert before.shape == (2, 10) and np.abs(before).max() > 0
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    assert loaded.get_zoo_config() == model.get_zoo_config()
    np.testing.assert_array_equal(np.asarray(loaded.predict(x, verbose=0)), before)


@pytest.mark.parametrize("name", sorted(TINY))
def test_wrong_channel_count_is_a_clear_error(name):
    model = keras_zoo.from_preset(name)
    with pytest.raises(ValueError, match=r"expects inputs of shape \(batch, 32, 32, 1\).*channels"):
        model(np.zeros((1, 32, 32, 3), "float32"))


def test_vit_image_size_not_divisible_by_patch():
    with pytest.raises(ValueError, match="image_size=100 is not divisible by patch_size=16"):
        keras_zoo.ViT.from_preset("vit_tiny_patch16_224", image_size=100)


def test_vit_gap_pooling_and_features():
    base = dict(image_size=16, patch_size=4, num_channels=3, hidden_dim=32, num_layers=1,
                num_heads=2, mlp_dim=64)
    assert keras_zoo.ViT(**base, num_classes=None)(np.zeros((1, 16, 16, 3))).shape == (1, 32)
    assert keras_zoo.ViT(**base, pooling=None)(np.zeros((1, 16, 16, 3))).shape == (1, 17, 32)
    assert keras_zoo.ViT(**base, pooling="gap", num_classes=5)(
        np.zeros((1, 16, 16, 3))).shape == (1, 5)


def test_resnet_feature_extractor_and_imagenet_stem_shapes():
    model = keras_zoo.ResNet(block_type="basic", stage_depths=[1, 1, 1, 1],
                             stage_filters=[8, 16, 32, 64], image_size=64, num_classes=None)
    # 64 -> stem /4 -> 16 -> stages 2-4 halve three times -> 2; features are 64 wide.
    assert model.get_layer("stage4_block1").output.shape == (None, 2, 2, 64)
    assert model(np.zeros((1, 64, 64, 3))).shape == (1, 64)
