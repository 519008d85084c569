"""Published configs are checked by building them, not by training them."""

import pytest

import keras_zoo

# Trainable parameters with 1000-class heads (LeNet: 10). BatchNorm moving
# statistics are state, not parameters; ResNet convolutions carry no bias.
PUBLISHED = {
    "lenet5": 61_706,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "vit_tiny_patch16_224": 5_717_416,
    "vit_small_patch16_224": 22_050_664,
    "vit_base_patch16_224": 86_567_656,
    "vit_base_patch32_224": 88_224_232,
    "vit_large_patch16_224": 304_326_632,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_parameter_count(name):
    model = keras_zoo.from_preset(name, load_weights=False)  # the registry config
    assert model.trainable_parameter_count() == PUBLISHED[name]


def test_resnet50_moving_statistics_are_not_parameters():
    model = keras_zoo.ResNet.from_preset("resnet50", load_weights=False)
    assert model.count_params() - model.trainable_parameter_count() == 53_120
