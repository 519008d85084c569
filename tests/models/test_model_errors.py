"""ZooModel: sizes a user can get wrong, and predict on nothing, are one clear error."""

import numpy as np
import pytest
import tensorflow as tf

import keras_zoo
from keras_zoo import PresetError


@pytest.mark.parametrize("preset, overrides, message", [
    ("vit_tiny_digits", {"num_layers": 0}, "ViT: num_layers must be a positive integer, got 0"),
    ("vit_tiny_digits", {"num_layers": -2}, "num_layers must be a positive integer, got -2"),
    ("vit_tiny_digits", {"num_heads": 0}, "num_heads must be a positive integer, got 0"),
    ("vit_tiny_digits", {"num_layers": 2.5}, "num_layers must be a positive integer, got 2.5"),
    ("vit_tiny_digits", {"num_classes": 0}, "num_classes must be a positive integer, got 0"),
    ("mae_tiny_digits", {"decoder_num_layers": 0}, "MAE: decoder_num_layers must be a positive"),
    ("resnet_tiny_digits", {"stage_depths": [1, 0]},
     r"ResNet: stage_depths must be a list of positive integers, got \[1, 0\]"),
    ("lenet5", {"filters": [6, -16]}, "LeNet: filters must be a list of positive integers"),
    ("vae_digits", {"hidden_units": [0]}, "VAE: hidden_units must be a list of positive"),
    ("transformer_tiny_gettext", {"num_decoder_layers": 0},
     "Transformer: num_decoder_layers must be a positive integer, got 0"),
])
def test_non_positive_sizes_are_one_clear_error(preset, overrides, message):
    with pytest.raises(PresetError, match=message) as info:
        keras_zoo.from_preset(preset, **overrides)
    assert "\n" not in str(info.value)
    family = type(keras_zoo.from_preset(preset, load_weights=False))
    with pytest.raises(ValueError, match=message):  # the constructor itself, too
        family(**{**keras_zoo.from_preset(preset).get_zoo_config(), **overrides})


def test_features_without_a_head_stay_allowed():
    model = keras_zoo.ViT.from_preset("vit_tiny_digits", num_classes=None)
    assert model(np.zeros((1, 32, 32, 1), "float32")).shape == (1, 64)


def test_predict_on_an_empty_batch_is_a_clear_error():
    model = keras_zoo.from_preset("lenet5")
    with pytest.raises(ValueError, match=r"LeNet.predict got an empty batch .*\(0, 32, 32, 1\)"):
        model.predict(np.zeros((0, 32, 32, 1), "float32"), verbose=0)
    empty = tf.data.Dataset.from_tensor_slices(np.zeros((0, 32, 32, 1), "float32")).batch(4)
    with pytest.raises(ValueError, match="LeNet.predict got no batch: the input dataset is empty"):
        model.predict(empty, verbose=0)
    assert model.predict(np.zeros((2, 32, 32, 1), "float32"), verbose=0).shape == (2, 10)
