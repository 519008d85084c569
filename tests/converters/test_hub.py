"""hf:// through huggingface_hub's real snapshot_download, offline, on a hub
cache laid out by the ``hf_hub_cache`` fixture (tests/converters/conftest.py)."""

import json
import os
import re
import shutil
import types

import numpy as np
import pytest

import keras_zoo
from keras_zoo import hub
from keras_zoo.presets import PresetError

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
MAMBA = os.path.join(FIXTURES, "hf_mamba", "tied")
SHA = "0123456789abcdef0123456789abcdef01234567"


def test_snapshot_resolves_branch_tag_and_commit_sha(hf_hub_cache):
    path = hf_hub_cache("state-spaces/mamba-tiny", MAMBA, sha=SHA)
    hf_hub_cache("state-spaces/mamba-tiny", MAMBA, revision="v1.0", sha=SHA)
    for uri in ("hf://state-spaces/mamba-tiny", "hf://state-spaces/mamba-tiny@main",
                "hf://state-spaces/mamba-tiny@v1.0", f"hf://state-spaces/mamba-tiny@{SHA}"):
        folder, repo, _, sha = hub.hf_snapshot(uri)
        assert (folder, repo, sha) == (path, "state-spaces/mamba-tiny", SHA), uri
        assert os.path.islink(os.path.join(folder, "model.safetensors"))  # -> blobs/
    ref = dict(np.load(os.path.join(MAMBA, "reference.npz")))
    model = keras_zoo.Mamba.from_preset(f"hf://state-spaces/mamba-tiny@{SHA}")
    np.testing.assert_allclose(np.asarray(model(ref["input_ids"].astype("int32"))),
                               ref["logits"], atol=1e-4, rtol=0)
    random = keras_zoo.from_preset("hf://state-spaces/mamba-tiny", load_weights=False)
    assert random.get_zoo_config()["num_layers"] == model.get_zoo_config()["num_layers"]


def test_empty_cache_offline_is_one_line_naming_repo_cache_and_remedy(hf_hub_cache):
    with pytest.raises(PresetError) as e:
        keras_zoo.GPT.from_preset("hf://openai-community/gpt2@abc")
    message = str(e.value)
    assert "\n" not in message
    for part in ("hf://openai-community/gpt2", "revision 'abc'", str(hf_hub_cache.cache),
                 "HF_HUB_OFFLINE is set",
                 "hf download openai-community/gpt2 --revision abc --cache-dir",
                 "unset HF_HUB_OFFLINE"):
        assert part in message, message


def test_revision_absent_from_the_cache_lists_the_cached_ones(hf_hub_cache):
    hf_hub_cache("state-spaces/mamba-tiny", MAMBA, sha=SHA)
    with pytest.raises(PresetError, match=r"^hf://state-spaces/mamba-tiny: revision 'v2' is "
                                          r"not in the Hugging Face cache .*models--state-spaces"
                                          rf"--mamba-tiny \(it holds main, {SHA}\) and "
                                          "HF_HUB_OFFLINE is set; fill it"):
        keras_zoo.from_preset("hf://state-spaces/mamba-tiny@v2")
    with pytest.raises(PresetError, match="revision 'f{40}' is not in the Hugging Face cache"):
        keras_zoo.from_preset("hf://state-spaces/mamba-tiny@" + "f" * 40)


@pytest.mark.parametrize("uri", ["hf://", "hf://a/b/c", "hf://org/name@", "hf://../x",
                                 "hf://org/na me", "hf:///abs/path"])
def test_malformed_uris_are_refused(uri):
    with pytest.raises(PresetError, match="is not a Hugging Face model URI: expected "
                                          r"hf://ORG/NAME or hf://ORG/NAME@REVISION"):
        keras_zoo.from_preset(uri)


def test_wrong_family_names_the_uri(hf_hub_cache):
    hf_hub_cache("state-spaces/mamba-tiny", MAMBA)
    with pytest.raises(PresetError, match=r"hf://state-spaces/mamba-tiny \(.*\) holds a Mamba, "
                                          "not a GPT"):
        keras_zoo.GPT.from_preset("hf://state-spaces/mamba-tiny")


def test_only_safe_files_are_requested(monkeypatch):
    """What snapshot_download is asked for: safetensors/json/vocabularies, no pickles."""
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    seen = {}

    def fake(repo_id, **kwargs):
        seen.update(kwargs, repo_id=repo_id)
        response = types.SimpleNamespace(headers={}, request=None)  # what the error reads
        raise huggingface_hub.errors.RevisionNotFoundError("nope", response=response)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    with pytest.raises(PresetError, match="^hf://org/name has no revision 'r1' on the Hub"):
        keras_zoo.from_preset("hf://org/name@r1")
    assert seen["repo_id"] == "org/name" and seen["revision"] == "r1"
    repo = ["config.json", "model.safetensors", "model.safetensors.index.json", "vocab.txt",
            "tokenizer.json", "source.spm", "spiece.model", "pytorch_model.bin", "model.pth",
            "x.ckpt", "optimizer.pt", "data.pkl", "tf_model.h5", "flax_model.msgpack",
            "pytorch_model.bin.index.json.bin"]
    fetched = list(filter_repo_objects(repo, allow_patterns=seen["allow_patterns"],
                                       ignore_patterns=seen["ignore_patterns"]))
    assert fetched == repo[:7]


def _publish(hf_hub_cache, name, folder):
    """Lays ``folder`` out in the cache as the repo + revision registry ``name`` names."""
    repo, revision = hub.parse_hf_uri(hub.SOURCES[name])
    sha = revision if hub.re.fullmatch("[0-9a-f]{40}", revision) else None
    return hf_hub_cache(repo, folder, revision=revision, sha=sha)


def test_registry_names_load_their_published_checkpoint(hf_hub_cache):
    """gpt2 / mamba_130m resolve to their repo and revision (here: tiny stand-ins)."""
    _publish(hf_hub_cache, "gpt2", os.path.join(FIXTURES, "hf_gpt2"))
    _publish(hf_hub_cache, "mamba_130m", MAMBA)
    ref = dict(np.load(os.path.join(FIXTURES, "hf_gpt2", "reference.npz")))
    gpt = keras_zoo.GPT.from_preset("gpt2")
    np.testing.assert_allclose(np.asarray(gpt(ref["input_ids"].astype("int32"))),
                               ref["logits"], atol=1e-4, rtol=0)
    ref = dict(np.load(os.path.join(MAMBA, "reference.npz")))
    mamba = keras_zoo.from_preset("mamba_130m")
    np.testing.assert_allclose(np.asarray(mamba(ref["input_ids"].astype("int32"))),
                               ref["logits"], atol=1e-4, rtol=0)
    bert_mlm = os.path.join(FIXTURES, "hf_bert", "masked_lm")
    _publish(hf_hub_cache, "bert_base_uncased", bert_mlm)
    ref = dict(np.load(os.path.join(bert_mlm, "reference.npz")))
    bert = keras_zoo.BERT.from_preset("bert_base_uncased", max_predictions_per_seq=12)
    positions = np.tile(np.arange(12, dtype="int32"), (2, 1))
    logits = bert({"token_ids": ref["input_ids"].astype("int32"),
                   "segment_ids": ref["token_type_ids"].astype("int32"),
                   "padding_mask": ref["attention_mask"].astype("int32"),
                   "mask_positions": positions})["mlm"]
    np.testing.assert_allclose(np.asarray(logits), ref["logits"], rtol=0,
                               atol=1e-4 * max(1.0, float(np.abs(ref["logits"]).max())))
    # load_weights=False: the registry config, random weights, no hub at all
    assert keras_zoo.GPT.from_preset("gpt2", load_weights=False).count_params() > 100e6


def test_every_source_is_a_valid_uri_of_a_registry_preset():
    for name, uri in hub.SOURCES.items():
        keras_zoo.presets.get_preset(name)
        repo, revision = hub.parse_hf_uri(uri)
        assert revision == "main" or hub.re.fullmatch("[0-9a-f]{40}", revision), uri


def test_registry_name_offline_without_cache_says_how_to_get_random_weights(hf_hub_cache):
    with pytest.raises(PresetError) as e:
        keras_zoo.ViT.from_preset("vit_base_patch16_224")
    message = str(e.value)
    assert "\n" not in message
    for part in ("preset 'vit_base_patch16_224' loads its published weights from "
                 "hf://google/vit-base-patch16-224@main", "is not in the Hugging Face cache",
                 "hf download google/vit-base-patch16-224 --revision main",
                 "load_weights=False builds it with random weights"):
        assert part in message, message
    with pytest.raises(PresetError, match="preset 'gpt2' is a GPT model, not a ViT"):
        keras_zoo.ViT.from_preset("gpt2")


@pytest.mark.parametrize("family, folder", [
    ("GPT", os.path.join(FIXTURES, "hf_gpt2")), ("Mamba", MAMBA),
    ("BERT", os.path.join(FIXTURES, "hf_bert", "model"))])
def test_misspelt_override_names_the_closest_option(family, folder):
    with pytest.raises(PresetError, match=rf"{family} has no config option\(s\) \['num_layer'\] "
                                          r"\(did you mean num_layers"):
        getattr(keras_zoo, family).from_preset("hf:" + folder, num_layer=1)


# ---------------------------------------------------------------- safety

def _folder_with(tmp_path, files, weights=True):
    folder = tmp_path / "ckpt"
    folder.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json") + (("model.safetensors",) if weights else ()):
        shutil.copy(os.path.join(MAMBA, name), folder / name)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


# Unpickling this would call os.system: the tests fail loudly if anything unpickles it.
EVIL = b"cos\nsystem\n(S'echo unpickled > /dev/null'\ntR."


def test_pickles_are_never_opened(tmp_path, monkeypatch, hf_hub_cache):
    import pickle

    def refuse(*_, **__):
        raise AssertionError("keras_zoo unpickled a file")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    # both formats: the safetensors are read, the pickle left alone
    both = _folder_with(tmp_path / "a", {"pytorch_model.bin": EVIL})
    ref = dict(np.load(os.path.join(MAMBA, "reference.npz")))
    model = keras_zoo.from_preset(f"hf:{both}")
    np.testing.assert_allclose(np.asarray(model(ref["input_ids"].astype("int32"))),
                               ref["logits"], atol=1e-4, rtol=0)
    # pickles only: one line, nothing opened
    for name in ("pytorch_model.bin", "model.pth", "last.ckpt", "weights.pkl"):
        only = _folder_with(tmp_path / name, {name: EVIL}, weights=False)
        with pytest.raises(PresetError, match=rf"holds only pickled weights \({name}\); "
                                              "keras_zoo never unpickles"):
            keras_zoo.from_preset(f"hf:{only}")
    # through hf:// the pickle is never even downloaded: the snapshot lacks weights
    hf_hub_cache("org/pickled", _folder_with(tmp_path / "c", {}, weights=False))
    with pytest.raises(PresetError, match=r"^hf://org/pickled \(revision 'main', commit [0-9a-f]"
                                          r"{40}\) has no model.safetensors: keras_zoo fetches "
                                          "safetensors only"):
        keras_zoo.from_preset("hf://org/pickled")


@pytest.mark.parametrize("shard", ["../model.safetensors", "/etc/passwd", "a/../../x.safetensors",
                                   "..\\x.safetensors", "C:/x.safetensors"])
def test_index_shards_outside_the_folder_are_refused(tmp_path, shard):
    folder = _folder_with(tmp_path, {}, weights=False)
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"backbone.norm_f.weight": shard}}))
    with pytest.raises(PresetError, match=r"shard .* leaves the checkpoint folder; refused"):
        keras_zoo.from_preset(f"hf:{folder}")


def test_sharded_checkpoint_inside_the_folder_loads(tmp_path):
    from safetensors.numpy import load_file, save_file

    folder = _folder_with(tmp_path, {}, weights=False)
    tensors = load_file(os.path.join(MAMBA, "model.safetensors"))
    names = sorted(tensors)
    (folder / "shards").mkdir()
    weight_map = {}
    for i, part in enumerate((names[::2], names[1::2])):
        save_file({n: tensors[n] for n in part}, str(folder / "shards" / f"p{i}.safetensors"))
        weight_map.update({n: f"shards/p{i}.safetensors" for n in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    ref = dict(np.load(os.path.join(MAMBA, "reference.npz")))
    model = keras_zoo.from_preset(f"hf:{folder}")
    np.testing.assert_allclose(np.asarray(model(ref["input_ids"].astype("int32"))),
                               ref["logits"], atol=1e-4, rtol=0)
    weight_map[names[0]] = "shards/p0.bin"
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(PresetError, match=r"shard 'shards/p0.bin' is not a .safetensors file"):
        keras_zoo.from_preset(f"hf:{folder}")


@pytest.mark.parametrize("name", ["../vocab.txt", "/tmp/vocab.txt", "sub/../../v.json"])
def test_tokenizer_file_names_outside_the_folder_are_refused(name):
    """The helper every importer uses for a file name read from a checkpoint's files."""
    from keras_zoo.converters.huggingface import safe_path

    with pytest.raises(PresetError, match=rf"vocabulary {re.escape(repr(name))} leaves the "
                                          "checkpoint folder"):
        safe_path("/ckpt", name, "vocabulary")
    assert safe_path("/ckpt", "spm/source.spm", "vocabulary") == "/ckpt/spm/source.spm"


def test_the_message_names_the_switch_or_the_connection_error(hf_hub_cache, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants, errors

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("KERAS_ZOO_OFFLINE", "1")
    with pytest.raises(PresetError, match="and KERAS_ZOO_OFFLINE is set; fill it .* or unset "
                                          "KERAS_ZOO_OFFLINE$"):
        keras_zoo.from_preset("hf://org/absent")
    # online, the Hub unreachable: snapshot_download's own error, as it raises it
    monkeypatch.delenv("KERAS_ZOO_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def unreachable(repo_id, **kwargs):
        assert kwargs["local_files_only"] is False
        try:
            raise ConnectionError("Name or service not known")
        except ConnectionError as cause:
            raise errors.LocalEntryNotFoundError("cannot find it") from cause

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(PresetError, match=r"and the Hub could not be reached \(ConnectionError: "
                                          r"Name or service not known\); fill it .* or retry"):
        keras_zoo.from_preset("hf://org/absent")
