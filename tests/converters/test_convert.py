"""python -m keras_zoo.convert: a published checkpoint -> a keras_zoo preset folder,
through huggingface_hub's cache (offline) and kagglehub's."""

import json
import os

import numpy as np
import pytest

import keras_zoo
from keras_zoo import convert, presets

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
GPT2 = os.path.join(FIXTURES, "hf_gpt2")
SHA = "fedcba9876543210fedcba9876543210fedcba98"


def test_convert_writes_a_preset_with_its_provenance(hf_hub_cache, tmp_path, capsys):
    snapshot = hf_hub_cache("openai-community/gpt2-tiny", GPT2, revision="v1", sha=SHA)
    out = str(tmp_path / "gpt2")
    assert convert.main(["hf://openai-community/gpt2-tiny@v1", out]) == 0
    manifest = json.loads(open(os.path.join(out, "manifest.json")).read())
    source = manifest["source"]
    assert (source["repo"], source["revision"], source["commit"]) == \
        ("openai-community/gpt2-tiny", "v1", SHA)
    # every downloadable file, hashed; reference.npz is not one (the hub would not fetch it)
    assert set(source["files"]) == {"config.json", "generation_config.json", "merges.txt",
                                    "model.safetensors", "tokenizer_reference.json",
                                    "vocab.json"}
    assert source["files"]["model.safetensors"] == presets.sha256_of(
        os.path.join(snapshot, "model.safetensors"))
    assert {"config.json", "model.weights.h5"} <= set(manifest["sha256"])
    # the folder loads with no conversion: not even the hub cache is needed
    ref = dict(np.load(os.path.join(GPT2, "reference.npz")))
    hf_hub_cache.cache.rename(tmp_path / "gone")
    model = keras_zoo.from_preset(out)
    assert isinstance(model, keras_zoo.GPT)
    np.testing.assert_allclose(np.asarray(model(ref["input_ids"].astype("int32"))),
                               ref["logits"], atol=1e-4, rtol=0)
    assert model.tokenizer.encode("Hello") == ref["prompt"][0].tolist()
    assert presets.preset_problem(out) is None


def test_convert_runs_once_and_protects_other_folders(hf_hub_cache, tmp_path, capsys):
    hf_hub_cache("state-spaces/mamba-tiny", os.path.join(FIXTURES, "hf_mamba", "tied"))
    out = str(tmp_path / "mamba")
    assert convert.main(["hf://state-spaces/mamba-tiny", out]) == 0
    weights = os.path.join(out, "model.weights.h5")
    before = os.stat(weights).st_mtime_ns
    assert convert.main(["hf://state-spaces/mamba-tiny", out]) == 0
    assert "already converted" in capsys.readouterr().out
    assert os.stat(weights).st_mtime_ns == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert convert.main(["hf://state-spaces/mamba-tiny", str(other)]) == 2
    assert "is not empty (and not this conversion); pass --overwrite" in capsys.readouterr().err
    assert convert.main(["hf://state-spaces/mamba-tiny", str(other), "--overwrite",
                         "--overrides", '{"pad_vocab_multiple": 1}']) == 0
    assert json.loads((other / "manifest.json").read_text())["source"]["overrides"] == \
        {"pad_vocab_multiple": 1}


def test_convert_errors_are_one_line(hf_hub_cache, tmp_path, capsys):
    assert convert.main(["hf://nobody/nothing", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: hf://nobody/nothing (revision 'main') is not in the Hugging "
                          "Face cache") and "\n" not in err
    with pytest.raises(SystemExit):
        convert.main(["hf://a/b", str(tmp_path / "y"), "--overrides", "[1]"])
    assert "--overrides must be a JSON object" in capsys.readouterr().err
