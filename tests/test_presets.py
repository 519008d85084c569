import json
import os

import numpy as np
import pytest

import keras_zoo
from keras_zoo import PresetError


def _features_model():
    model = keras_zoo.ViT.from_preset("vit_tiny_digits", num_classes=None)
    return model


def test_list_presets_names_every_published_config():
    names = keras_zoo.list_presets()
    for expected in ["lenet5", "mlp_small", "resnet18", "resnet152", "vit_base_patch32_224",
                     "vit_large_patch16_224"]:
        assert expected in names
    assert set(keras_zoo.list_presets("ResNet")) >= {"resnet18", "resnet50"}
    assert all(n.startswith("vit") for n in keras_zoo.list_presets(keras_zoo.ViT))


def test_unknown_preset_lists_closest_names():
    with pytest.raises(PresetError, match="Closest: vit_base_patch16_224"):
        keras_zoo.ViT.from_preset("vit_base_patch16_244")


def test_preset_of_another_family_is_refused():
    with pytest.raises(PresetError, match="is a ResNet model, not a ViT"):
        keras_zoo.ViT.from_preset("resnet18")


def test_unknown_override_is_refused():
    with pytest.raises(PresetError, match="no config option.*num_class"):
        keras_zoo.ViT.from_preset("vit_tiny_digits", num_class=3)


def test_preset_round_trip(tmp_path):
    model = _features_model()
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype("float32")
    model.save_to_preset(tmp_path / "p")
    assert sorted(os.listdir(tmp_path / "p")) == ["config.json", "manifest.json",
                                                    "model.weights.h5"]
    loaded = keras_zoo.ViT.from_preset(str(tmp_path / "p"))
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    # The generic entry point reads the family from config.json.
    assert type(keras_zoo.from_preset(str(tmp_path / "p"))) is keras_zoo.ViT


def test_preset_at_new_image_size_and_head(tmp_path):
    model = keras_zoo.ViT.from_preset("vit_tiny_digits")
    model.save_to_preset(tmp_path / "p")
    bigger = keras_zoo.ViT.from_preset(str(tmp_path / "p"), image_size=64, num_classes=3)
    assert bigger(np.zeros((1, 64, 64, 1))).shape == (1, 3)
    old = model.get_layer("position_embedding").get_weights()[0]
    new = bigger.get_layer("position_embedding").get_weights()[0]
    assert new.shape == (1, 65, 64)
    np.testing.assert_allclose(new[:, 0], old[:, 0])
    np.testing.assert_allclose(bigger.get_layer("encoder_block_1").get_weights()[0],
                               model.get_layer("encoder_block_1").get_weights()[0])


def test_corrupt_weights_file(tmp_path):
    _features_model().save_to_preset(tmp_path / "p")
    weights = tmp_path / "p" / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(PresetError, match="sha256 mismatch.*model.weights.h5"):
        keras_zoo.ViT.from_preset(str(tmp_path / "p"))
    # Without a manifest the loader itself reports the bad file.
    os.remove(tmp_path / "p" / "manifest.json")
    with pytest.raises(PresetError, match="could not load weights.*corrupt"):
        keras_zoo.ViT.from_preset(str(tmp_path / "p"))


def test_missing_weights_file(tmp_path):
    _features_model().save_to_preset(tmp_path / "p")
    os.remove(tmp_path / "p" / "model.weights.h5")
    with pytest.raises(PresetError, match="model.weights.h5.*is missing"):
        keras_zoo.ViT.from_preset(str(tmp_path / "p"))


def test_tampered_config_fails_checksum(tmp_path):
    _features_model().save_to_preset(tmp_path / "p")
    path = tmp_path / "p" / "config.json"
    config = json.loads(path.read_text())
    config["config"]["num_layers"] = 1
    path.write_text(json.dumps(config))
    with pytest.raises(PresetError, match="sha256 mismatch.*config.json"):
        keras_zoo.ViT.from_preset(str(tmp_path / "p"))


def test_remote_folder_through_gfile(tmp_path):
    # tf.io.gfile serves gs:// in production; its in-memory ram:// filesystem
    # exercises the same remote code path here without a network.
    model = _features_model()
    model.save_to_preset("ram://zoo_test/preset")
    loaded = keras_zoo.ViT.from_preset("ram://zoo_test/preset")
    x = np.random.default_rng(0).random((1, 32, 32, 1)).astype("float32")
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


# ---------------------------------------------------------------- damaged or foreign folders

def _saved(tmp_path):
    keras_zoo.LeNet.from_preset("lenet5").save_to_preset(tmp_path / "p")
    return tmp_path / "p"


def _edit_config(folder, edit):
    """Changes config.json as a hand edit would (the manifest would no longer
    match, so it goes)."""
    path = folder / "config.json"
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))
    (folder / "manifest.json").unlink(missing_ok=True)


def test_unknown_config_key_is_refused_with_the_closest_name(tmp_path):
    folder = _saved(tmp_path)
    _edit_config(folder, lambda raw: raw["config"].update(num_clases=3))
    with pytest.raises(PresetError, match=r"config.json: LeNet has no config option\(s\) "
                                          r"\['num_clases'\] \(did you mean num_classes"):
        keras_zoo.from_preset(str(folder))


def test_unknown_top_level_key_is_refused(tmp_path):
    folder = _saved(tmp_path)
    _edit_config(folder, lambda raw: raw.update(familly="LeNet"))
    with pytest.raises(PresetError, match=r"unknown key\(s\) \['familly'\] \(did you mean "
                                          r"family\?\)"):
        keras_zoo.from_preset(str(folder))


def test_newer_format_version_is_refused(tmp_path):
    folder = _saved(tmp_path)
    _edit_config(folder, lambda raw: raw.update(format_version=2))
    with pytest.raises(PresetError, match="format_version 2; this keras_zoo reads up to 1: "
                                          "upgrade keras_zoo"):
        keras_zoo.from_preset(str(folder))
    _edit_config(folder, lambda raw: raw.update(format_version="1"))
    with pytest.raises(PresetError, match="format_version must be a positive integer"):
        keras_zoo.from_preset(str(folder))


def test_folder_without_weights_needs_load_weights_false(tmp_path):
    folder = _saved(tmp_path)
    os.remove(folder / "model.weights.h5")
    os.remove(folder / "manifest.json")  # else the manifest names the missing file
    with pytest.raises(PresetError, match="has no model.weights.h5: pass load_weights=False"):
        keras_zoo.from_preset(str(folder))
    model = keras_zoo.from_preset(str(folder), load_weights=False)
    assert type(model) is keras_zoo.LeNet


@pytest.mark.parametrize("name, text, pattern", [
    ("config.json", '{"family": "LeNet", ', r"config.json is not valid JSON"),
    ("config.json", '["LeNet"]', r"config.json must hold a JSON object, not a list"),
    ("config.json", '{"family": "LeNet", "config": [1]}',
     r"config.json: 'config' must be a JSON object"),
    ("config.json", '{"family": 3, "config": {}}', r"config.json: 'family' must name"),
    ("config.json", '{"family": "LeNett", "config": {}}',
     r"config.json: unknown model family 'LeNett'"),
    ("manifest.json", '{"sha256": ', r"manifest.json is not valid JSON"),
    ("manifest.json", '{"sha256": ["config.json"]}', r"manifest.json must hold \{\"sha256\""),
    ("manifest.json", '"x"', r"manifest.json must hold a JSON object, not a str"),
])
def test_malformed_preset_files_are_one_error_naming_the_file(tmp_path, name, text, pattern):
    folder = _saved(tmp_path)
    (folder / name).write_text(text)
    if name == "config.json":
        os.remove(folder / "manifest.json")
    with pytest.raises(PresetError, match=pattern) as info:
        keras_zoo.from_preset(str(folder))
    assert str(folder / name) in str(info.value) and "\n" not in str(info.value)
