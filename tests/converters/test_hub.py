"""hf:// through huggingface_hub's real snapshot_download, offline, on a hub
cache laid out by the ``hf_hub_cache`` fixture (tests/converters/conftest.py)."""

import os
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
