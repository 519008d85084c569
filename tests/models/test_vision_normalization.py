"""The input normalisation a vision preset carries (keras_zoo.preprocessing):
DINO and MAE normalise with the ImageNet mean/std as the official recipes do,
inside the graph, on the [0, 1] images (crops) the pipelines feed."""

import numpy as np
import pytest
from keras import ops

import keras_zoo
from keras_zoo.models.dino import forward_at_size
from keras_zoo.models.mae import masked_patch_loss, patchify
from keras_zoo.preprocessing import IMAGENET, IMAGENET_MEAN, IMAGENET_STD
from keras_zoo.presets import get_preset

MEAN, STD = np.float32(IMAGENET_MEAN), np.float32(IMAGENET_STD)
TINY_VIT = {"image_size": 32, "patch_size": 8, "num_channels": 3, "hidden_dim": 32,
            "num_layers": 1, "num_heads": 4, "mlp_dim": 64, "num_classes": None}


def _images(n=2, size=32, seed=0):
    return np.random.default_rng(seed).random((n, size, size, 3)).astype("float32")


def test_official_recipes_carry_the_imagenet_statistics():
    dino = get_preset("dino_vit_small_patch16").config["backbone"]["config"]["preprocessing"]
    mae = get_preset("mae_vit_base_patch16").config["preprocessing"]
    for spec in (dino, mae):
        assert spec["mean"] == [0.485, 0.456, 0.406] and spec["std"] == [0.229, 0.224, 0.225]
        # eval_knn.py / eval_linear.py / main_linprobe.py: Resize(256, bicubic), CenterCrop(224)
        assert (spec["resize"], spec["resize_size"], spec["interpolation"]) == \
            ("shorter_side", 256, "bicubic")
    # The grey digits presets keep [0, 1]: ImageNet's statistics describe RGB photos.
    assert keras_zoo.MAE.from_preset("mae_tiny_digits").preprocessing is None
    assert keras_zoo.DINO.from_preset("dino_vit_tiny_digits").preprocessing is None


def test_dino_backbones_normalise_global_and_local_crops_in_their_graph():
    dino = keras_zoo.DINO(backbone={"family": "ViT", "config": {**TINY_VIT,
                                                               "preprocessing": IMAGENET}},
                          out_dim=16, hidden_dim=16, bottleneck_dim=8, num_local_crops=2,
                          local_crop_size=16)
    plain = keras_zoo.ViT(**TINY_VIT)
    plain.set_weights(dino.teacher_backbone.get_weights())
    x = _images()
    np.testing.assert_allclose(dino.embed(x), plain.embed((x - MEAN) / STD), rtol=0, atol=1e-5)
    crops = _images(size=16, seed=1)
    student = forward_at_size(dino.student_backbone, ops.convert_to_tensor(crops))
    plain.set_weights(dino.student_backbone.get_weights())
    expected = forward_at_size(plain, ops.convert_to_tensor((crops - MEAN) / STD))
    np.testing.assert_allclose(np.asarray(student), np.asarray(expected), rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def mae():
    return keras_zoo.MAE(image_size=32, patch_size=8, num_channels=3, hidden_dim=32,
                         num_layers=1, num_heads=4, mlp_dim=64, decoder_hidden_dim=16,
                         decoder_num_layers=1, decoder_num_heads=4, decoder_mlp_dim=32,
                         preprocessing=IMAGENET, seed=0)


def test_mae_loss_target_is_the_normalised_image(mae):
    x = _images()
    noise = np.random.default_rng(2).random((2, 16)).astype("float32")
    out = mae.forward(x, noise=noise)
    loss = mae.compute_loss(x=x, y_pred=out)
    expected = masked_patch_loss(patchify((x - MEAN) / STD, 8), out["reconstruction"],
                                 out["mask"])
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-6)
    raw = masked_patch_loss(patchify(x, 8), out["reconstruction"], out["mask"])
    assert abs(float(raw) - float(expected)) > 0.1 * float(expected)  # the target matters


def test_mae_reconstruction_is_back_in_unit_pixels(mae):
    x = _images()
    reconstructed, masked, mask = mae.reconstruct(x)
    visible = mask == 0
    np.testing.assert_allclose(reconstructed[visible], x[visible], atol=1e-6)
    np.testing.assert_allclose(masked[visible], x[visible], atol=1e-6)
