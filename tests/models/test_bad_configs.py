"""Bad model options (issue 22, section 4): wrong types and absurd sizes are
one line, refused before anything is built."""

import json
import os

import pytest

import keras_zoo
from keras_zoo.presets import PresetError


@pytest.mark.parametrize("preset, overrides, match", [
    ("mamba_tiny", dict(hidden_dim=None), "hidden_dim must be a positive integer, got None"),
    ("mamba_tiny", dict(state_dim="16"), "state_dim must be a positive integer, got '16'"),
    ("mamba_tiny", dict(expand=0), "expand must be a positive number, got 0"),
    ("gpt_tiny", dict(dropout="0.1"), r"dropout must be a number in \[0, 1\), got '0.1'"),
    ("gpt_tiny", dict(dropout=1.0), r"dropout must be a number in \[0, 1\), got 1.0"),
    ("gpt_tiny", dict(max_positions=2.5), "max_positions must be a positive integer"),
    ("bert_tiny_classifier", dict(intermediate_dim=-1), "intermediate_dim must be a positive"),
    # Sizes whose weights alone exceed any machine's memory: refused before
    # building (n_layer=10**6 hung, hidden_dim=10**7 crashed, vocab 10**12 ran out of memory).
    ("gpt_tiny", dict(num_layers=10**6), r"num_layers=1,000,000 is more than 4,096 blocks"),
    ("gpt_tiny", dict(hidden_dim=2**20, num_heads=1),
     r"needs at least [\d,]+ parameters .* more than this machine's"),
    ("mamba_tiny", dict(hidden_dim=10**7), "more than this machine's"),
    ("mamba_tiny", dict(vocab_size=10**12), "more than this machine's"),
])
def test_bad_overrides_are_one_line(preset, overrides, match):
    with pytest.raises(PresetError, match=match):
        keras_zoo.from_preset(preset, **overrides)


def test_direct_construction_is_checked_too():
    with pytest.raises(ValueError, match="Mamba: hidden_dim must be a positive integer"):
        keras_zoo.Mamba(vocab_size=40, hidden_dim=None)


def test_a_config_that_does_not_fit_its_weights_file_is_refused(tmp_path):
    folder = tmp_path / "p"
    keras_zoo.from_preset("gpt_tiny").save_to_preset(str(folder))
    config = json.loads((folder / "config.json").read_text())
    config["config"]["num_layers"] = 4000  # edited by hand: 4,000 blocks, a tiny file
    (folder / "config.json").write_text(json.dumps(config))
    os.remove(folder / "manifest.json")  # (else the sha256 check names the edit)
    with pytest.raises(PresetError, match=r"config.json describes at least [\d,]+ parameters "
                                          r"but model.weights.h5 holds only"):
        keras_zoo.from_preset(str(folder))


def test_a_hugging_face_folder_without_the_hf_prefix_says_so(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"],
                                                      "model_type": "gpt2", "n_layer": 2}))
    with pytest.raises(PresetError, match=r"is a Hugging Face folder \(gpt2\): load it with "
                                          r"from_preset\('hf:"):
        keras_zoo.from_preset(str(tmp_path))
