"""Hugging Face import: MambaForCausalLM folders written by transformers (fixtures
made by tools/make_hf_fixtures_mamba.py; neither torch nor transformers is needed)."""

import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import keras_zoo
from keras_zoo.converters.huggingface import CheckpointTensors
from keras_zoo.presets import PresetError

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "hf_mamba")


def _reference(name):
    return dict(np.load(os.path.join(FIXTURES, name, "reference.npz")))


def greedy(model, prompt, steps):
    logits, state = model.prefill(prompt)
    out = []
    for _ in range(steps):
        token = np.asarray(logits).argmax(-1).astype("int32")
        out.append(token)
        logits, state = model.step(token, state)
    return np.stack(out, axis=1)


@pytest.mark.parametrize("via", ["folder", "hf://"])
@pytest.mark.parametrize("name", ["tied", "untied_bias"])
def test_logits_and_greedy_tokens_match_transformers(name, via, hf_hub_cache):
    if via == "hf://":  # the same files through huggingface_hub's cache, offline
        hf_hub_cache("state-spaces/mamba-tiny-" + name, os.path.join(FIXTURES, name))
        model = keras_zoo.from_preset("hf://state-spaces/mamba-tiny-" + name)
    else:
        model = keras_zoo.from_preset("hf:" + os.path.join(FIXTURES, name))
    ref = _reference(name)
    assert isinstance(model, keras_zoo.Mamba)
    logits = np.asarray(model(ref["input_ids"].astype("int32")))
    np.testing.assert_allclose(logits, ref["logits"], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(greedy(model, ref["prompt"].astype("int32"), 8), ref["greedy"])


def test_biases_and_head_are_read_from_the_file():
    tied = keras_zoo.Mamba.from_preset("hf:" + os.path.join(FIXTURES, "tied"))
    untied = keras_zoo.Mamba.from_preset("hf:" + os.path.join(FIXTURES, "untied_bias"))
    assert tied.get_zoo_config()["use_bias"] is False
    assert tied.get_zoo_config()["tie_embeddings"] is True
    assert untied.get_zoo_config()["use_bias"] is True
    assert untied.get_zoo_config()["tie_embeddings"] is False
    assert tied.get_zoo_config()["residual_in_fp32"] is True  # MambaConfig's, read
    # vocabulary 100 is not a multiple of 8: the file's 100 rows are kept as they are
    assert tied.padded_vocab_size == 100
    assert tied.count_params() == sum(v.size for v in load_file(
        os.path.join(FIXTURES, "tied", "model.safetensors")).values())


def _copy_with(tmp_path, change):
    folder = tmp_path / "hf"
    shutil.copytree(os.path.join(FIXTURES, "tied"), folder)
    tensors = load_file(str(folder / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(folder / "model.safetensors"))
    return "hf:" + str(folder)


def test_missing_tensor_is_named(tmp_path):
    path = _copy_with(tmp_path, lambda t: t.pop("backbone.layers.1.mixer.x_proj.weight"))
    with pytest.raises(PresetError, match=r"missing from the file: "
                                          r"backbone\.layers\.1\.mixer\.x_proj\.weight"):
        keras_zoo.from_preset(path)


def test_extra_tensor_is_named(tmp_path):
    path = _copy_with(tmp_path, lambda t: t.update(
        {"backbone.layers.0.mixer.surprise": np.zeros(3, "float32")}))
    with pytest.raises(PresetError, match=r"in the file but not placed: "
                                          r"backbone\.layers\.0\.mixer\.surprise"):
        keras_zoo.from_preset(path)


def test_misshapen_tensor_is_named(tmp_path):
    def change(t):
        t["backbone.layers.0.mixer.A_log"] = np.zeros((64, 9), "float32")
    with pytest.raises(PresetError, match=r"wrong shape: backbone\.layers\.0\.mixer\.A_log "
                                          r"\(64, 9\) for block_0/mixer/scan/A_log \(64, 8\)"):
        keras_zoo.from_preset(_copy_with(tmp_path, change))


def test_fewer_layers_by_override_leaves_tensors_unplaced():
    with pytest.raises(PresetError, match=r"not placed: backbone\.layers\.1\."):
        keras_zoo.from_preset("hf:" + os.path.join(FIXTURES, "tied"), num_layers=1)


def test_residual_in_fp32_is_read_from_the_config(tmp_path):
    import json

    folder = tmp_path / "hf"
    shutil.copytree(os.path.join(FIXTURES, "tied"), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "residual_in_fp32": False}))
    model = keras_zoo.Mamba.from_preset(f"hf:{folder}", load_weights=False)
    assert model.get_zoo_config()["residual_in_fp32"] is False
    assert model.get_layer("block_0").residual_in_fp32 is False


def test_not_a_supported_architecture(tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["T5ForConditionalGeneration"]}')
    with pytest.raises(PresetError, match=r"T5ForConditionalGeneration.*imports "
                                          r"\[.*'MambaForCausalLM'"):
        keras_zoo.from_preset(f"hf:{tmp_path}")
    with pytest.raises(PresetError, match="is not a folder"):
        keras_zoo.from_preset(f"hf:{tmp_path}/nowhere")


def test_folder_without_safetensors(tmp_path):
    shutil.copy(os.path.join(FIXTURES, "tied", "config.json"), tmp_path / "config.json")
    with pytest.raises(PresetError, match="has no model.safetensors"):
        keras_zoo.from_preset(f"hf:{tmp_path}")


def test_imported_model_saves_as_a_keras_zoo_preset(tmp_path):
    model = keras_zoo.from_preset("hf:" + os.path.join(FIXTURES, "untied_bias"))
    # this fixture has no tokenizer.json; a text preset must carry one
    model.tokenizer = keras_zoo.from_preset("hf:" + os.path.join(FIXTURES, "tied")).tokenizer
    model.save_to_preset(str(tmp_path / "zoo"))
    again = keras_zoo.from_preset(str(tmp_path / "zoo"))
    ref = _reference("untied_bias")
    np.testing.assert_allclose(np.asarray(again(ref["input_ids"].astype("int32"))),
                               ref["logits"], atol=1e-4)


def test_checkpoint_tensors_reports_every_problem_at_once():
    import keras

    names = CheckpointTensors({"a": np.zeros(2), "b": np.zeros(3), "c": np.zeros(1)}, "ckpt")
    v = keras.Variable(np.zeros(2))
    w = keras.Variable(np.zeros(4))
    names.assign(v, "a")
    names.assign(w, "b")
    names.take("a")
    names.take("zz")
    with pytest.raises(PresetError) as e:
        names.finish()
    message = str(e.value)
    for part in ("missing from the file: zz", "not placed: c", "wrong shape: b (3,)",
                 "placed twice: a"):
        assert part in message, message


SAMPLE = "Selective scans decide what to remember, token by token."


def test_tokenizer_json_travels_with_the_model(tmp_path):
    model = keras_zoo.from_preset("hf:" + os.path.join(FIXTURES, "tied"))
    tokenizer = model.tokenizer
    assert type(tokenizer).__name__ == "HuggingFaceTokenizer"
    assert tokenizer.encode(SAMPLE) == _reference("tied")["text_ids"].tolist()  # transformers'
    assert (tokenizer.pad_id, tokenizer.end_id) == (0, 1)  # config.json's pad / eos ids
    ids = tokenizer.encode("The state space model reads")
    assert tokenizer.decode(ids) == "The state space model reads"
    import tensorflow as tf

    assert tokenizer.tf_encode(tf.constant([SAMPLE])).to_list()[0] == tokenizer.encode(SAMPLE)
    text = model.generate("The state", max_new_tokens=4)
    assert text.startswith("The state")
    model.save_to_preset(str(tmp_path / "zoo"))
    again = keras_zoo.from_preset(str(tmp_path / "zoo"))
    assert again.tokenizer.encode(SAMPLE) == tokenizer.encode(SAMPLE)
    assert again.generate("The state", max_new_tokens=4) == text


def test_generate_matches_transformers_greedy_tokens():
    model = keras_zoo.from_preset("hf:" + os.path.join(FIXTURES, "untied_bias"))
    ref = _reference("untied_bias")
    got = model.generate(ref["prompt"].tolist(), max_new_tokens=8, stop_at_end=False)
    assert got == ref["greedy"].tolist()
