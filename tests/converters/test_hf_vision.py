"""Vision checkpoints of transformers and timm (fixtures written once by
tools/make_hf_fixtures_vision.py; neither torch, transformers nor timm is
needed): parity of every importer, the preprocessing each carries, label
names, hf:// through the hub cache, and the bad inputs."""

import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import keras_zoo
from keras_zoo.presets import PresetError
from keras_zoo.preprocessing import IMAGENET_MEAN, IMAGENET_STD

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "hf_vision")
LABELS = ["tench", "goldfish", "shark", "hen", "ostrich"]

# fixture -> (family, reference output, label names, the preprocessing it carries)
CASES = {
    "vit_classifier": ("ViT", "logits", LABELS,
                       {"mean": [0.5] * 3, "std": [0.5] * 3, "resize": "exact",
                        "resize_size": 32, "crop": None, "interpolation": "bilinear"}),
    "vit_dino": ("ViT", "cls", None,
                 {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "resize": "exact",
                  "resize_size": 32, "crop": None, "interpolation": "bicubic"}),
    "vit_pooler_no_qkv_bias": ("ViT", "cls", None, {"mean": [0.5] * 3, "std": [0.5] * 3}),
    "resnet_bottleneck": ("ResNet", "logits", LABELS,
                          {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                           "resize": "shorter_side", "resize_size": 36,  # int(32 / 0.875)
                           "crop": "center", "crop_rounding": "floor",
                           "interpolation": "bicubic"}),
    "resnet_basic": ("ResNet", "logits", LABELS, {"resize_size": 36}),
    "timm_vit": ("ViT", "logits", None,
                 {"mean": [0.5] * 3, "std": [0.5] * 3, "resize": "shorter_side",
                  "resize_size": 35, "crop": "center", "crop_rounding": "round",  # 32 / 0.9
                  "interpolation": "bicubic"}),
    "timm_resnet": ("ResNet", "logits", None,
                    {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                     "resize_size": 33, "crop_rounding": "round"}),  # floor(32 / 0.95)
}


def folder(name):
    return os.path.join(FIXTURES, name)


def reference(name):
    return dict(np.load(os.path.join(folder(name), "reference.npz")))


def assert_close(actual, expected, rtol=1e-4):
    """Within ``rtol`` of the values' scale (float32 sums of ~100 terms: ~1e-6)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_preprocessing_and_labels_match_the_checkpoint(name):
    family, key, labels, spec = CASES[name]
    model = keras_zoo.from_preset("hf:" + folder(name))
    ref = reference(name)
    assert type(model).__name__ == family
    assert_close(model.predict(ref["images"], verbose=0), ref[key])
    assert model.label_names == labels
    for k, v in spec.items():
        assert model.preprocessing[k] == (pytest.approx(v) if isinstance(v, list) else v), k
    # A raw photo (45 x 37, uint8) through preprocess_images + the model equals
    # the checkpoint's own processor (PIL) + the checkpoint's model.
    unit = keras_zoo.preprocess_images(model, list(ref["raw_images"]))
    mean, std = np.float32(model.preprocessing["mean"]), np.float32(model.preprocessing["std"])
    assert_close((unit - mean) / std, ref["processed"], rtol=1e-6)
    assert_close(model.predict(unit, verbose=0), ref["raw_outputs"])


def test_vit_mae_encoder_and_decoder_with_a_fixed_mask():
    model = keras_zoo.MAE.from_preset("hf:" + folder("vit_mae"))
    ref = reference("vit_mae")
    out = model.forward(ref["images"], noise=ref["noise"])
    np.testing.assert_array_equal(np.asarray(out["mask"]), ref["mask"])
    assert_close(out["encoded"], ref["encoded_visible"])
    assert_close(out["reconstruction"], ref["logits"])
    assert_close(model.encoder().predict(ref["images"], verbose=0), ref["encoded"])
    raw = model.forward(keras_zoo.preprocess_images(model, list(ref["raw_images"])),
                        noise=ref["noise"])
    assert_close(raw["reconstruction"], ref["raw_outputs"])
    assert model.get_zoo_config()["layer_norm_epsilon"] == 1e-12
    assert model.preprocessing["mean"] == pytest.approx(IMAGENET_MEAN)


def test_config_values_are_read_from_the_checkpoint():
    vit = keras_zoo.ViT.from_preset("hf:" + folder("vit_classifier"), load_weights=False)
    c = vit.get_zoo_config()
    assert (c["hidden_dim"], c["num_layers"], c["num_heads"], c["mlp_dim"], c["patch_size"],
            c["image_size"], c["layer_norm_epsilon"]) == (32, 2, 4, 64, 8, 32, 1e-12)
    assert keras_zoo.ViT.from_preset("hf:" + folder("vit_dino"), load_weights=False) \
        .get_zoo_config()["layer_norm_epsilon"] == 1e-6
    resnet = keras_zoo.ResNet.from_preset("hf:" + folder("resnet_bottleneck")).get_zoo_config()
    assert (resnet["stage_depths"], resnet["stage_filters"], resnet["block_type"]) == \
        ([2, 1, 2, 1], [4, 8, 8, 16], "bottleneck")
    timm = keras_zoo.ResNet.from_preset("hf:" + folder("timm_resnet")).get_zoo_config()
    assert (timm["stem_width"], timm["stage_filters"]) == (64, [4, 8, 8, 16])


def test_dino_takes_a_vitmodel_checkpoint_as_its_backbone():
    dino = keras_zoo.DINO.from_preset("hf:" + folder("vit_dino"), out_dim=64, hidden_dim=32,
                                      bottleneck_dim=16, num_local_crops=0,
                                      local_crop_size=16)
    ref = reference("vit_dino")
    assert_close(dino.embed(ref["images"]), ref["cls"])
    student = dino.student_backbone.embedding_model().predict(ref["images"], verbose=0)
    assert_close(student, ref["cls"])
    assert_close(dino.embed(keras_zoo.preprocess_images(dino, list(ref["raw_images"]))),
                 ref["raw_outputs"])


def test_uint8_images_are_scaled_by_1_over_255():
    model = keras_zoo.from_preset("hf:" + folder("vit_classifier"))
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    expected = model.predict(images.astype("float32") / 255.0, verbose=0)
    assert_close(model.predict(images, verbose=0), expected, rtol=1e-6)
    assert_close(model(images), expected, rtol=1e-6)
    assert_close(model.embed(images), model.embed(images.astype("float32") / 255.0), rtol=1e-6)


def test_preset_round_trip_keeps_preprocessing_and_labels(tmp_path):
    model = keras_zoo.from_preset("hf:" + folder("resnet_bottleneck"))
    model.save_to_preset(str(tmp_path / "p"))
    saved = json.loads((tmp_path / "p" / "config.json").read_text())["config"]
    assert saved["label_names"] == LABELS and saved["preprocessing"]["resize_size"] == 36
    again = keras_zoo.from_preset(str(tmp_path / "p"))
    assert again.label_names == LABELS and again.preprocessing == model.preprocessing
    ref = reference("resnet_bottleneck")
    assert_close(again.predict(ref["images"], verbose=0), ref["logits"])
    # A new head has new classes: the names are not carried over.
    ten = keras_zoo.from_preset(str(tmp_path / "p"), num_classes=10)
    assert ten.label_names is None and ten.preprocessing == model.preprocessing
    assert keras_zoo.from_preset("hf:" + folder("vit_classifier"), num_classes=3).label_names \
        is None


def test_tflite_file_agrees_with_keras_on_the_same_unit_images(tmp_path):
    from export.export import export_model
    from export.verify import tflite_outputs

    model = keras_zoo.from_preset("hf:" + folder("vit_classifier"))
    ref = reference("vit_classifier")
    export_model(model, str(tmp_path / "vit.tflite"), signature="serving_default")
    out = tflite_outputs(str(tmp_path / "vit.tflite"), "serving_default",
                         {"images": ref["images"]})
    assert_close(next(iter(out.values())), ref["logits"])


# ---------------------------------------------------------------- hf:// (hub cache)

@pytest.mark.parametrize("preset,family,fixture", [
    ("vit_base_patch16_224", "ViT", "vit_classifier"),
    ("vit_small_patch16_224", "ViT", "timm_vit"),
    ("resnet50", "ResNet", "resnet_bottleneck"),
    ("dino_vit_small_patch16", "DINO", "vit_dino"),
    ("mae_vit_base_patch16", "MAE", "vit_mae"),
])
def test_registry_names_load_their_published_source_through_hf_uri(hf_hub_cache, preset,
                                                                   family, fixture):
    from keras_zoo import hub

    repo = hub.SOURCES[preset][len("hf://"):].split("@")[0]
    hf_hub_cache(repo, folder(fixture))
    extra = {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16,
             "num_local_crops": 0, "local_crop_size": 16} if family == "DINO" else {}
    model = getattr(keras_zoo, family).from_preset(preset, **extra)
    ref = reference(fixture)
    if family == "MAE":
        assert_close(model.forward(ref["images"], noise=ref["noise"])["reconstruction"],
                     ref["logits"])
    elif family == "DINO":
        assert_close(model.embed(ref["images"]), ref["cls"])
    else:
        key = CASES[fixture][1]
        assert_close(model.predict(ref["images"], verbose=0), ref[key])
    assert keras_zoo.from_preset(f"hf://{repo}").preprocessing is not None


def test_convert_writes_a_preset_that_keeps_preprocessing_and_labels(hf_hub_cache, tmp_path):
    from keras_zoo import convert

    hf_hub_cache("timm/resnet50.a1_in1k", folder("timm_resnet"))
    hf_hub_cache("microsoft/resnet-50", folder("resnet_bottleneck"))
    for uri, name in (("hf://timm/resnet50.a1_in1k", "timm_resnet"),
                      ("hf://microsoft/resnet-50", "resnet_bottleneck")):
        out = str(tmp_path / name)
        assert convert.main([uri, out]) == 0
        model = keras_zoo.from_preset(out)
        assert model.preprocessing == keras_zoo.from_preset("hf:" + folder(name)).preprocessing
        assert model.label_names == CASES[name][2]
        ref = reference(name)
        assert_close(model.predict(keras_zoo.preprocess_images(model, list(ref["raw_images"])),
                                   verbose=0), ref["raw_outputs"])


# ---------------------------------------------------------------- bad inputs

def _copy(tmp_path, name, config=None, tensors=None):
    target = tmp_path / name
    shutil.copytree(folder(name), target)
    if config:
        data = json.loads((target / "config.json").read_text())
        config(data)
        (target / "config.json").write_text(json.dumps(data))
    if tensors:
        t = load_file(str(target / "model.safetensors"))
        tensors(t)
        save_file(t, str(target / "model.safetensors"))
    return "hf:" + str(target)


def _one_line(match, preset):
    with pytest.raises(PresetError, match=match) as e:
        keras_zoo.from_preset(preset)
    assert "\n" not in str(e.value)


def test_unknown_architectures_are_one_line(tmp_path):
    _one_line(r"SwinForImageClassification.*keras_zoo imports .*ViTForImageClassification",
              _copy(tmp_path, "vit_classifier", config=lambda c: c.update(
                  architectures=["SwinForImageClassification"])))
    _one_line(r"timm 'convnext_tiny' checkpoint; keras_zoo imports timm vit_",
              _copy(tmp_path, "timm_vit", config=lambda c: c.update(
                  architecture="convnext_tiny")))


def test_missing_extra_and_misshapen_tensors_are_named(tmp_path):
    def drop(t):
        del t["vit.encoder.layer.1.layernorm_after.bias"]
        t["vit.extra.weight"] = np.zeros(3, "float32")

    _one_line(r"missing from the file: vit.encoder.layer.1.layernorm_after.bias; in the file "
              r"but not placed: vit.extra.weight", _copy(tmp_path, "vit_classifier",
                                                         tensors=drop))
    _one_line(r"of the wrong shape: layer2.0.conv2.weight \(8, 8, 2, 3\)",
              _copy(tmp_path, "timm_resnet", tensors=lambda t: t.update({
                  "layer2.0.conv2.weight": np.zeros((8, 8, 2, 3), "float32")})))
    _one_line(r"decoder.decoder_pos_embed \(not MAE's fixed 2D sin-cos table",
              _copy(tmp_path, "vit_mae", tensors=lambda t: t.update({
                  "decoder.decoder_pos_embed": t["decoder.decoder_pos_embed"] + 0.5})))


@pytest.mark.parametrize("name,change,match", [
    ("vit_classifier", {"hidden_act": "gelu_new"}, r"hidden_act='gelu_new'"),
    ("resnet_bottleneck", {"downsample_in_bottleneck": True}, r"downsample_in_bottleneck=True"),
    ("resnet_bottleneck", {"downsample_in_first_stage": True}, r"downsample_in_first_stage"),
    ("resnet_bottleneck", {"layer_type": "preact"}, r"layer_type='preact'"),
    ("timm_vit", {"model_args": {"init_values": 1e-5}}, r"init_values=1e-05 cannot be imported"),
    ("timm_vit", {"model_args": {"global_pool": "avg"}}, r"global_pool='avg'"),
    ("timm_resnet", {"model_args": {"stem_type": "deep"}}, r"stem_type='deep'"),
])
def test_options_our_layers_cannot_represent_are_refused(tmp_path, name, change, match):
    _one_line(match, _copy(tmp_path, name, config=lambda c: c.update(change)))


@pytest.mark.parametrize("spec,match", [
    ({"mean": [0.5]}, r"needs both 'mean' and 'std'"),
    ({"mean": [0.5, 0.5], "std": [1, 1]}, r"'mean' must list 3 number"),
    ({"mean": [0, 0, 0], "std": [1, 0, 1]}, r"'std' must be positive"),
    ({"interpolation": "cubic"}, r"'interpolation' must be one of"),
    ({"resize_size": 16}, r"'resize_size' must be an integer >= the image size 32"),
    ({"men": [0, 0, 0]}, r"unknown key\(s\) \['men'\] \(did you mean \['mean'\]\?\)"),
])
def test_bad_preprocessing_specs_are_one_line(spec, match):
    with pytest.raises(ValueError, match=match):
        keras_zoo.ViT(image_size=32, patch_size=8, hidden_dim=32, num_layers=1, num_heads=4,
                      mlp_dim=32, num_classes=3, preprocessing=spec)


def test_bad_label_names_and_images_are_one_line():
    with pytest.raises(ValueError, match="label_names lists 2 names but num_classes=3"):
        keras_zoo.ResNet(block_type="basic", stage_depths=[1], stage_filters=[4], image_size=16,
                         num_classes=3, stem="small", label_names=["a", "b"])
    model = keras_zoo.from_preset("resnet_tiny_digits", load_weights=False)
    with pytest.raises(ValueError, match=r"image 0 has shape \(40, 40, 3\); ResNet takes "
                                         r"\(height, width, 1\) images"):
        keras_zoo.preprocess_images(model, np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(ValueError, match="images must be uint8 .* or float"):
        keras_zoo.preprocess_images(model, np.zeros((40, 40, 1), np.int32))
    assert keras_zoo.preprocess_images(model, np.zeros((40, 50, 1), np.uint8)).shape == \
        (1, 32, 32, 1)
