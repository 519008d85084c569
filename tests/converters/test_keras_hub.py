"""keras-hub ViT / ResNet checkpoints load into keras_zoo models with the same numbers.

Each keras-hub model is built from a config (random weights, every bias, norm
and BatchNorm statistic perturbed so that a swapped or missed weight shows),
saved with keras-hub's own ``save_to_preset`` and loaded with ours.
"""

import json
import os
import shutil
import zlib

import keras
import keras_hub
import numpy as np
import pytest

import keras_zoo
from keras_zoo import PresetError
from keras_zoo.converters.keras_hub import input_scaling, map_resnet, map_vit

TOL = 1e-4


def _rng(key):
    """A generator seeded by ``key``: each fixture and test draws the same numbers
    whichever tests an xdist worker ran before it (no module-level generator)."""
    return np.random.default_rng(zlib.crc32(key.encode()))


def _perturb(model, key):
    """Kernels keep their fan-in scaled init; everything that keras-hub
    initialises to a constant (biases, LN/BN scales and shifts, BN moving
    statistics) gets a distinct random value."""
    rng = _rng(key)
    for w in model.weights:
        name = w.path.rsplit("/", 1)[-1]
        shape = tuple(w.shape)
        if name in ("gamma", "moving_variance"):
            w.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif name in ("beta", "bias", "moving_mean"):
            w.assign(rng.normal(0, 0.1, shape).astype("float32"))


def _images(size=32, n=2):
    return _rng(f"images{size}x{n}").normal(size=(n, size, size, 3)).astype("float32")


def _max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


@pytest.fixture(scope="module")
def hub_vit(tmp_path_factory):
    model = keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=4, hidden_dim=64,
        mlp_dim=128, layer_norm_epsilon=1e-5)
    _perturb(model, "vit")
    folder = str(tmp_path_factory.mktemp("hub") / "vit")
    model.save_to_preset(folder)
    return model, folder


# variant -> (keras-hub block_type, use_pre_activation)
RESNETS = {"v1_basic": ("basic_block", False), "v1_bottleneck": ("bottleneck_block", False),
           "v2_basic": ("basic_block", True), "v2_bottleneck": ("bottleneck_block", True),
           "vd_basic": ("basic_block_vd", False), "vd_bottleneck": ("bottleneck_block_vd", False)}


@pytest.fixture(scope="module")
def hub_resnet(tmp_path_factory):
    """hub_resnet(variant) -> (keras-hub ResNetBackbone, its preset folder), built once."""
    built = {}

    def get(variant):
        if variant not in built:
            block_type, pre_activation = RESNETS[variant]
            deep_stem = block_type.endswith("_vd")  # ResNet-vd: ResNet-C stem, ResNet-D shortcut
            model = keras_hub.models.ResNetBackbone(
                input_conv_filters=[32, 32, 64] if deep_stem else [64],
                input_conv_kernel_sizes=[3, 3, 3] if deep_stem else [7],
                stackwise_num_filters=[64, 32], stackwise_num_blocks=[2, 1],
                stackwise_num_strides=[1, 2], block_type=block_type, image_shape=(32, 32, 3),
                use_pre_activation=pre_activation)
            _perturb(model, variant)
            folder = str(tmp_path_factory.mktemp("hub") / variant)
            model.save_to_preset(folder)
            built[variant] = model, folder
        return built[variant]

    return get


def test_vit_backbone_gives_the_same_token_sequence(hub_vit):
    hub, folder = hub_vit
    ours = keras_zoo.ViT.from_preset(folder)
    assert isinstance(ours, keras_zoo.ViT)
    config = ours.get_zoo_config()
    assert (config["image_size"], config["patch_size"], config["hidden_dim"],
            config["num_layers"], config["num_heads"], config["mlp_dim"]) == (32, 8, 64, 2, 4, 128)
    assert config["layer_norm_epsilon"] == 1e-5
    x = _images()
    expected = hub(x)
    assert tuple(expected.shape) == (2, 17, 64)
    assert _max_diff(ours(x), expected) < TOL


@pytest.mark.parametrize("variant", sorted(RESNETS))
def test_resnet_backbone_gives_the_same_features(variant, hub_resnet):
    hub, folder = hub_resnet(variant)
    ours = keras_zoo.ResNet.from_preset(folder)
    config = ours.get_zoo_config()
    version, block_type = variant.split("_")
    assert config["block_type"] == block_type
    assert config["preactivation"] == (version == "v2")
    assert config["avg_down"] == (config["stem"] == "deep") == (version == "vd")
    x = _images()
    feature_map = hub(x)
    # The last feature map itself, then the pooled features our model returns.
    ours_map = keras.Model(ours.input, ours.get_layer("avg_pool").input)(x)
    assert _max_diff(ours_map, feature_map) < TOL
    pooled = np.mean(np.asarray(feature_map), axis=(1, 2))
    assert _max_diff(ours(x), pooled) < TOL * max(1.0, float(np.abs(pooled).max()))


def test_num_classes_override_puts_a_new_head_on_hub_features(hub_vit, hub_resnet):
    x = _images()
    hub, folder = hub_vit
    vit = keras_zoo.ViT.from_preset(folder, num_classes=10)
    assert tuple(vit(x).shape) == (2, 10)
    cls_features = keras.Model(vit.input, vit.get_layer("cls_pool").output)(x)
    assert _max_diff(cls_features, np.asarray(hub(x))[:, 0]) < TOL

    hub, folder = hub_resnet("v1_basic")
    resnet = keras_zoo.ResNet.from_preset(folder, num_classes=10)
    assert tuple(resnet(x).shape) == (2, 10)
    pooled = keras.Model(resnet.input, resnet.get_layer("avg_pool").output)(x)
    assert _max_diff(pooled, np.mean(np.asarray(hub(x)), axis=(1, 2))) < TOL


def test_image_size_override_resamples_vit_positions(hub_vit):
    hub, folder = hub_vit
    ours = keras_zoo.ViT.from_preset(folder, image_size=48)
    table = ours.get_layer("position_embedding").embedding.numpy()
    assert table.shape == (1, 1 + 6 * 6, 64)
    hub_table = hub.get_layer("vit_patching_and_embedding").position_embedding.embeddings.numpy()
    np.testing.assert_allclose(table[0, 0], hub_table[0], atol=1e-6)  # CLS position kept
    np.testing.assert_allclose(ours.get_layer("patch_embedding").projection.kernel.numpy(),
                               hub.get_layer("vit_patching_and_embedding")
                               .patch_embedding.kernel.numpy())
    assert tuple(ours(_images(48)).shape) == (2, 37, 64)


def test_classifier_task_brings_its_head(hub_vit, tmp_path):
    backbone, _ = hub_vit
    task = keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=5)
    _perturb(task.output_dense, "vit_task_head")
    folder = str(tmp_path / "vit_task")
    task.save_to_preset(folder)
    ours = keras_zoo.ViT.from_preset(folder)
    x = _images()
    assert _max_diff(ours(x), task(x)) < TOL


def test_input_scaling_is_read_from_the_image_converter(hub_resnet, tmp_path):
    backbone, _ = hub_resnet("v1_basic")
    converter = keras_hub.layers.ResNetImageConverter(
        image_size=(32, 32), scale=1 / 127.5, offset=-1.0)
    task = keras_hub.models.ResNetImageClassifier(
        backbone=backbone, num_classes=3,
        preprocessor=keras_hub.models.ResNetImageClassifierPreprocessor(converter))
    folder = str(tmp_path / "resnet_task")
    task.save_to_preset(folder)
    scaling = input_scaling(folder)
    assert scaling == {"image_size": (32, 32), "scale": 1 / 127.5, "offset": -1.0}
    ours = keras_zoo.ResNet.from_preset(folder)
    # keras-hub's predict() runs the image converter; ours normalises [0, 1]
    # images in its graph, with the converter's scaling as its preprocessing.
    assert ours.preprocessing["mean"] == pytest.approx([0.5] * 3)
    assert ours.preprocessing["std"] == pytest.approx([0.5] * 3)
    pixels = _rng("pixels").uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
    assert _max_diff(ours(pixels / 255.0), task.predict(pixels, verbose=0)) < TOL


def _edited_copy(folder, tmp_path, **changes):
    copy = tmp_path / "edited"
    shutil.copytree(folder, copy)
    config = json.loads((copy / "config.json").read_text())
    config.update({k: v for k, v in changes.items() if k in ("class_name", "registered_name")})
    config["config"].update({k: v for k, v in changes.items()
                             if k not in ("class_name", "registered_name")})
    (copy / "config.json").write_text(json.dumps(config))
    return str(copy)


def test_unsupported_keras_hub_class_is_refused(hub_vit, tmp_path):
    folder = _edited_copy(hub_vit[1], tmp_path, class_name="BertBackbone",
                          registered_name="keras_hub>BertBackbone")
    with pytest.raises(PresetError, match=r"keras-hub BertBackbone.*ResNetBackbone.*ViTBackbone"):
        keras_zoo.ViT.from_preset(folder)


@pytest.mark.parametrize("source,option,value", [
    ("v1_bottleneck", "block_type", "bottleneck_block_x"),
    ("vd_bottleneck", "use_pre_activation", True),
    ("v1_bottleneck", "input_conv_kernel_sizes", [5]),
    ("vd_bottleneck", "input_conv_filters", [16, 16, 64]),
    ("v1_basic", "stackwise_num_strides", [1, 1]),
    ("vit", "use_class_token", False),
    ("vit", "patch_size", [8, 4]),
])
def test_unsupported_variant_names_the_option(source, option, value, hub_vit, hub_resnet,
                                               tmp_path):
    folder = hub_vit[1] if source == "vit" else hub_resnet(source)[1]
    folder = _edited_copy(folder, tmp_path, **{option: value})
    with pytest.raises(PresetError, match=rf"{option}=.*cannot be imported"):
        keras_zoo.ZooModel.from_preset(folder)


def test_family_mismatch_and_unknown_override_are_refused(hub_vit):
    with pytest.raises(PresetError, match="holds a ViT, not a ResNet"):
        keras_zoo.ResNet.from_preset(hub_vit[1], load_weights=False)
    with pytest.raises(PresetError, match="no config option.*num_class"):
        keras_zoo.ViT.from_preset(hub_vit[1], num_class=3)


# ---------------------------------------------------------------- completeness

class _WithExtraWeight:
    """A keras-hub model holding one weight more than keras_zoo's mapping knows
    (as a newer keras-hub might add); built layers cannot grow a weight, so the
    model is wrapped and ``weights`` lists the extra one too."""

    def __init__(self, model, name):
        self._model = model
        self.extra = keras.Variable(np.ones(3, "float32"), name=name)

    def __getattr__(self, name):
        return getattr(self._model, name)

    @property
    def weights(self):
        return [*self._model.weights, self.extra]


def test_an_unmapped_keras_hub_weight_is_refused(hub_vit, hub_resnet):
    """A keras-hub weight the mapping does not place must fail the import,
    naming it, not vanish silently."""
    hub, folder = hub_vit
    ours = keras_zoo.ViT.from_preset(folder)
    map_vit(hub, ours)  # every weight placed: no error
    with pytest.raises(PresetError, match=r"unmapped keras-hub weights \['extra_scale'\]"):
        map_vit(_WithExtraWeight(hub, "extra_scale"), ours)

    hub, folder = hub_resnet("v1_basic")
    ours = keras_zoo.ResNet.from_preset(folder)
    map_resnet(hub, ours)
    with pytest.raises(PresetError, match=r"unmapped keras-hub weights \['extra_stat'\]"):
        map_resnet(_WithExtraWeight(hub, "extra_stat"), ours)


def test_a_keras_zoo_weight_without_a_source_is_refused(hub_vit):
    """The other side: a keras_zoo weight no keras-hub weight fills (here a third
    encoder block the two-block checkpoint has no weights for)."""
    hub, folder = hub_vit
    config = keras_zoo.ViT.from_preset(folder).get_zoo_config()
    deeper = keras_zoo.ViT(**{**config, "num_layers": 3})
    with pytest.raises(PresetError, match=r"unmapped keras_zoo weights \[.*encoder_block_2"):
        map_vit(hub, deeper)


def test_kaggle_uri_reads_kagglehubs_cache(hub_vit, kaggle_cache, monkeypatch):
    """kaggle:// through kagglehub's cache layout, offline: a version, or the
    highest complete one; an absent version is one line naming the cache."""
    hub, folder = hub_vit
    kaggle_cache("keras/vit/keras/vit_tiny_test/2", folder)
    kaggle_cache("keras/vit/keras/vit_tiny_test/1", folder)
    os.remove(os.path.join(str(kaggle_cache.cache), "models/keras/vit/keras/vit_tiny_test/"
                                                    "1.complete"))  # an interrupted download
    x = _images()
    for uri in ("kaggle://keras/vit/keras/vit_tiny_test/2",
                "kaggle://keras/vit/keras/vit_tiny_test"):
        ours = keras_zoo.ViT.from_preset(uri)
        assert _max_diff(ours(x), hub(x)) < TOL, uri
    with pytest.raises(PresetError, match=r"^kaggle://keras/vit/keras/vit_tiny_test/1: version 1 "
                                          r"of keras/vit/keras/vit_tiny_test/1 is not in "
                                          r"kagglehub's cache .*kagglehub_cache and "
                                          "KERAS_ZOO_OFFLINE is set; fill it"):
        keras_zoo.ViT.from_preset("kaggle://keras/vit/keras/vit_tiny_test/1")
    with pytest.raises(PresetError, match="any version of keras/bert/keras/x is not in"):
        keras_zoo.from_preset("kaggle://keras/bert/keras/x")
    with pytest.raises(PresetError, match="holds a ViT, not a ResNet"):
        keras_zoo.ResNet.from_preset("kaggle://keras/vit/keras/vit_tiny_test/2")


def test_kaggle_uri_online_asks_kagglehub(hub_vit, monkeypatch):
    import kagglehub

    asked = []
    monkeypatch.delenv("KERAS_ZOO_OFFLINE")
    monkeypatch.setattr(kagglehub, "model_download", lambda h: asked.append(h) or hub_vit[1])
    model = keras_zoo.from_preset("kaggle://keras/vit/keras/vit_tiny_test/3", num_classes=4)
    assert asked == ["keras/vit/keras/vit_tiny_test/3"]
    assert tuple(model(_images()).shape) == (2, 4)

    def fail(handle):
        raise ConnectionError("no route to host\nsecond line")

    monkeypatch.setattr(kagglehub, "model_download", fail)
    with pytest.raises(PresetError, match=r"^kaggle://a/b/keras/c: kagglehub could not download "
                                          r"a/b/keras/c: ConnectionError: no route to host$"):
        keras_zoo.from_preset("kaggle://a/b/keras/c")


@pytest.mark.parametrize("uri, message", [
    ("kaggle://keras/vit/keras", "is not a Kaggle model URI: expected kaggle://OWNER/MODEL/"
                                 r"keras/VARIANT\[/VERSION\]"),
    ("kaggle://a/b/keras/c/d/e", "is not a Kaggle model URI"),
    ("kaggle://a/b/pytorch/c", "framework 'pytorch' is not read"),
    ("kaggle://a/b/keras/c/v2", "version 'v2' must be a number"),
    ("kaggle://a/../keras/c", "is not a Kaggle model URI")])
def test_malformed_kaggle_uris_are_refused(uri, message):
    with pytest.raises(PresetError, match=message):
        keras_zoo.from_preset(uri)


def test_convert_cli_reads_kaggle_uris(hub_vit, kaggle_cache, tmp_path):
    from keras_zoo import convert

    hub, folder = hub_vit
    kaggle_cache("keras/vit/keras/vit_tiny_test/2", folder)
    out = str(tmp_path / "zoo_vit")
    assert convert.main(["kaggle://keras/vit/keras/vit_tiny_test", out]) == 0
    source = json.loads(open(os.path.join(out, "manifest.json")).read())["source"]
    assert (source["hub"], source["repo"], source["commit"]) == \
        ("kaggle", "keras/vit/keras/vit_tiny_test", 2)
    assert "config.json" in source["files"]
    x = _images()
    assert _max_diff(keras_zoo.ViT.from_preset(out)(x), hub(x)) < TOL
