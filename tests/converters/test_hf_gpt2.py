"""Hugging Face import: a GPT2LMHeadModel folder written by transformers (fixture
made by tools/make_hf_fixtures_gpt2.py; neither torch nor transformers is needed)."""

import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import keras_zoo
from keras_zoo.presets import PresetError

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "hf_gpt2")


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(os.path.join(FIXTURE, "reference.npz")))


@pytest.fixture(scope="module")
def model():
    return keras_zoo.GPT.from_preset("hf:" + FIXTURE)


def test_logits_and_greedy_tokens_match_transformers(model, reference):
    assert isinstance(model, keras_zoo.GPT)
    logits = np.asarray(model(reference["input_ids"].astype("int32")))
    np.testing.assert_allclose(logits, reference["logits"], atol=1e-4, rtol=0)
    prompt = reference["prompt"].tolist()
    assert model.generate(prompt, max_new_tokens=12, stop_at_end=False) == \
        reference["greedy"].tolist()
    assert model.count_params() == sum(v.size for v in load_file(
        os.path.join(FIXTURE, "model.safetensors")).values() if v.ndim)


def test_hf_uri_through_the_hub_cache_matches_transformers(hf_hub_cache, reference):
    """The same files as a hub cache entry (models--ORG--NAME/snapshots/SHA), offline."""
    hf_hub_cache("openai-community/gpt2-tiny", FIXTURE)
    model = keras_zoo.GPT.from_preset("hf://openai-community/gpt2-tiny")
    logits = np.asarray(model(reference["input_ids"].astype("int32")))
    np.testing.assert_allclose(logits, reference["logits"], atol=1e-4, rtol=0)
    assert model.generate(reference["prompt"].tolist(), max_new_tokens=12,
                          stop_at_end=False) == reference["greedy"].tolist()
    assert model.tokenizer.encode("Hello") == reference["prompt"][0].tolist()


def test_generate_on_strings_with_the_folders_tokenizer(model, reference):
    assert model.tokenizer.encode("Hello") == reference["prompt"][0].tolist()
    text = model.generate(["Hello"], max_new_tokens=12, stop_at_end=False)[0]
    assert text == model.tokenizer.decode(reference["prompt"][0].tolist()
                                          + reference["greedy"][0].tolist())
    assert text.startswith("Hello") and len(text) > len("Hello")


def _copy_with(tmp_path, change=None, config=None):
    folder = tmp_path / "hf"
    shutil.copytree(FIXTURE, folder)
    if change is not None:
        tensors = load_file(str(folder / "model.safetensors"))
        change(tensors)
        save_file(tensors, str(folder / "model.safetensors"))
    if config is not None:
        with open(folder / "config.json") as f:
            data = json.load(f)
        data.update(config)
        with open(folder / "config.json", "w") as f:
            json.dump(data, f)
    return "hf:" + str(folder)


def test_the_hubs_layout_without_prefix_and_with_mask_buffers(tmp_path, reference):
    """The hub's gpt2 file: no ``transformer.`` prefix, attn.bias/masked_bias buffers."""
    def change(tensors):
        for key in list(tensors):
            tensors[key[len("transformer."):]] = tensors.pop(key)
        for i in range(2):
            tensors[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 64, 64), "float32"))
            tensors[f"h.{i}.attn.masked_bias"] = np.array(-1e4, "float32")
        tensors["lm_head.weight"] = tensors["wte.weight"].copy()
    model = keras_zoo.from_preset(_copy_with(tmp_path, change))
    logits = np.asarray(model(reference["input_ids"].astype("int32")))
    np.testing.assert_allclose(logits, reference["logits"], atol=1e-4, rtol=0)


def test_missing_extra_and_misshapen_tensors_are_named(tmp_path):
    def change(tensors):
        tensors.pop("transformer.h.1.mlp.c_fc.bias")
        tensors["transformer.h.0.attn.surprise"] = np.zeros(3, "float32")
        tensors["transformer.h.0.attn.c_attn.weight"] = \
            tensors["transformer.h.0.attn.c_attn.weight"].T.copy()
    with pytest.raises(PresetError) as e:
        keras_zoo.GPT.from_preset(_copy_with(tmp_path, change))
    message = str(e.value)
    assert "\n" not in message
    assert "missing from the file: transformer.h.1.mlp.c_fc.bias" in message
    assert "in the file but not placed: transformer.h.0.attn.surprise" in message
    assert "of the wrong shape: transformer.h.0.attn.c_attn.weight (96, 32)" in message


def test_each_dropout_rate_of_the_config_is_read(tmp_path):
    # GPT2Config: embd_pdrop (after the embeddings), attn_pdrop (attention
    # probabilities), resid_pdrop (residual branches)
    model = keras_zoo.GPT.from_preset(_copy_with(tmp_path, config={
        "embd_pdrop": 0.05, "attn_pdrop": 0.2, "resid_pdrop": 0.3}), load_weights=False)
    config = model.get_zoo_config()
    assert (config["embedding_dropout"], config["attention_dropout"], config["dropout"]) == \
        (0.05, 0.2, 0.3)
    assert model.get_layer("embedding_dropout").rate == 0.05
    block = model.get_layer("block_0")
    assert (block.attention_dropout, block.dropout) == (0.2, 0.3)
    assert block.attention.dropout == 0.2


def test_untied_head_is_refused(tmp_path):
    def change(tensors):
        tensors["lm_head.weight"] = tensors["transformer.wte.weight"] + 1.0
    with pytest.raises(PresetError, match="lm_head.weight differs from wte.weight"):
        keras_zoo.GPT.from_preset(_copy_with(tmp_path, change))


def test_other_architectures_and_variants_fail_in_one_line(tmp_path):
    with pytest.raises(PresetError, match=r"holds a Hugging Face \['T5Model'\] checkpoint; "
                                          r"keras_zoo imports .*GPT2LMHeadModel"):
        keras_zoo.from_preset(_copy_with(tmp_path, config={"architectures": ["T5Model"]}))
    shutil.rmtree(tmp_path / "hf")
    # a GPT-2 folder labelled as a BERT: its config says what it is
    with pytest.raises(PresetError, match=r"config.json is not a BertConfig \(model_type="
                                          r"'gpt2'; missing \['hidden_size'"):
        keras_zoo.from_preset(_copy_with(tmp_path, config={"architectures": ["BertModel"]}))
    shutil.rmtree(tmp_path / "hf")
    with pytest.raises(PresetError, match="activation_function='relu'"):
        keras_zoo.from_preset(_copy_with(tmp_path, config={"activation_function": "relu"}))
    with pytest.raises(PresetError, match="hf: preset .* is not a folder"):
        keras_zoo.GPT.from_preset("hf:" + str(tmp_path / "nowhere"))


def test_imported_model_saves_as_a_zoo_preset(model, tmp_path, reference):
    model.save_to_preset(str(tmp_path / "zoo"))
    again = keras_zoo.from_preset(str(tmp_path / "zoo"))
    ids = reference["input_ids"].astype("int32")
    np.testing.assert_array_equal(np.asarray(again(ids)), np.asarray(model(ids)))
    assert again.tokenizer.encode("Hello, world!") == model.tokenizer.encode("Hello, world!")
