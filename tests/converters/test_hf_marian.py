"""Hugging Face import: a MarianMTModel (opus-mt) folder written by transformers,
with its SentencePiece tokenizer (fixture made by tools/make_hf_fixtures_marian.py;
neither torch nor transformers is needed)."""

import json
import os
import shutil

import numpy as np
import pytest

import keras_zoo
from keras_zoo.presets import PresetError

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "hf_marian")


@pytest.fixture(scope="module")
def reference():
    with open(os.path.join(FIXTURE, "reference.json"), encoding="utf-8") as f:
        texts = json.load(f)
    return {**dict(np.load(os.path.join(FIXTURE, "reference.npz"))), **texts}


@pytest.fixture(scope="module")
def model():
    return keras_zoo.Transformer.from_preset("hf:" + FIXTURE)


def _sources(reference, pad):
    return [[int(t) for t in row if t != pad] for row in reference["source_ids"]]


def test_config_and_teacher_forced_logits(model, reference):
    c = model.get_zoo_config()
    assert (c["activation"], c["position_layout"], c["final_logits_bias"], c["beam_search"],
            c["layer_norm_epsilon"], c["num_beams"], c["length_penalty"]) == \
        ("silu", "halves", True, "huggingface", 1e-5, 4, 1.0)
    pad = c["pad_id"]
    assert pad == c["vocab_size"] - 1 == c["decoder_start_id"] and c["suppress_ids"] == [pad]
    decoder_input = reference["decoder_input_ids"]
    source = reference["source_ids"][:len(decoder_input)]
    logits = np.asarray(model({"source_ids": source.astype("int32"),
                               "target_ids": decoder_input.astype("int32")}))
    scale = np.abs(reference["logits"]).max()
    np.testing.assert_allclose(logits, reference["logits"], atol=1e-4 * scale, rtol=0)


def test_greedy_and_beam_ids_equal_transformers_generate(model, reference):
    sources = _sources(reference, model.get_zoo_config()["pad_id"])
    greedy = model.translate_ids(sources, beam_size=1)
    beam = model.translate_ids(sources)  # the checkpoint's 4 beams and length penalty 1.0
    assert greedy == reference["greedy_ids"]
    assert beam == reference["beam_ids"]
    assert len({tuple(g) for g in greedy}) == len(greedy)  # outputs differ between inputs
    assert greedy != beam  # the beam search is not greedy in disguise on this fixture


def test_tokenizer_ids_and_translated_strings(model, reference):
    import tensorflow as tf

    tokenizer = model.tokenizer
    assert type(tokenizer).__name__ == "MarianTokenizer"
    ids = [row + [tokenizer.end_id] for row in tokenizer.encode(reference["tokenizer_texts"])]
    assert ids == reference["tokenizer_ids"]
    texts = reference["tokenizer_texts"][:3]  # tf.data (training) gives the same ids
    assert tokenizer.tf_encode(tf.constant(texts)).to_list() == tokenizer.encode(texts)
    assert model.translate(reference["sources"], beam_size=1) == reference["greedy_text"]
    assert model.translate(reference["sources"]) == reference["beam_text"]
    assert model.translate(["Hello world"]) == [reference["beam_text"][1]]


def test_preset_round_trip_and_tflite_greedy_equal_keras(model, reference, tmp_path):
    from export import export as exporter
    from export.translate import TFLiteTranslator, decoding_settings
    from keras_zoo.data.tokenizers import Tokenizer

    folder = str(tmp_path / "preset")
    model.save_to_preset(folder)
    again = keras_zoo.Transformer.from_preset(folder, max_source_length=16,
                                              max_target_length=24)
    assert type(again.tokenizer).__name__ == "MarianTokenizer"
    assert again.translate(reference["sources"][:3], beam_size=1) == \
        reference["greedy_text"][:3]
    path = str(tmp_path / "marian.tflite")
    exporter.export_model(again, path, format="tflite")
    translator = TFLiteTranslator(path, Tokenizer.load(folder), settings=decoding_settings(
        folder))
    assert translator.translate(reference["sources"]) == \
        again.translate(reference["sources"], beam_size=1)
    assert translator.translate(reference["sources"][:2]) == reference["greedy_text"][:2]


def test_hf_uri_through_the_hub_cache(hf_hub_cache, reference):
    """The same files as a hub cache entry (models--ORG--NAME/snapshots/SHA), offline."""
    hf_hub_cache("Helsinki-NLP/opus-mt-en-de", FIXTURE)
    model = keras_zoo.Transformer.from_preset("hf://Helsinki-NLP/opus-mt-en-de")
    assert model.translate(["Hello world"]) == [reference["beam_text"][1]]
    assert model.translate(reference["sources"], beam_size=1) == reference["greedy_text"]


def test_the_hubs_older_layout_with_tied_copies_and_position_tables(tmp_path, reference):
    """opus-mt files carry tied copies (embed_tokens, lm_head) and the position tables."""
    from safetensors.numpy import load_file, save_file

    from keras_zoo.layers.embeddings import sinusoidal_1d

    folder = _copy(tmp_path)[len("hf:"):]
    path = os.path.join(folder, "model.safetensors")
    tensors = load_file(path)
    shared = tensors["model.shared.weight"]
    for name in ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight",
                 "lm_head.weight"):
        tensors[name] = shared.copy()
    table = sinusoidal_1d(64, shared.shape[1], layout="halves")
    tensors["model.encoder.embed_positions.weight"] = table
    tensors["model.decoder.embed_positions.weight"] = table
    save_file(tensors, path)
    model = keras_zoo.Transformer.from_preset("hf:" + folder)
    decoder_input = reference["decoder_input_ids"].astype("int32")
    logits = np.asarray(model({"source_ids": reference["source_ids"][:len(decoder_input)]
                               .astype("int32"), "target_ids": decoder_input}))
    np.testing.assert_allclose(logits, reference["logits"],
                               atol=1e-4 * np.abs(reference["logits"]).max(), rtol=0)
    tensors["model.decoder.embed_positions.weight"] = sinusoidal_1d(64, shared.shape[1])
    save_file(tensors, path)
    with pytest.raises(PresetError, match="embed_positions.weight is not Marian's"):
        keras_zoo.Transformer.from_preset("hf:" + folder)


def _copy(tmp_path, config=None, drop=(), vocab=None):
    folder = tmp_path / "hf"
    shutil.copytree(FIXTURE, folder)
    for name in drop:
        os.remove(folder / name)
    if config is not None:
        with open(folder / "config.json") as f:
            data = json.load(f)
        data.update(config)
        with open(folder / "config.json", "w") as f:
            json.dump(data, f)
    if vocab is not None:
        with open(folder / "vocab.json", encoding="utf-8") as f:
            data = json.load(f)
        vocab(data)
        with open(folder / "vocab.json", "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False)
    return "hf:" + str(folder)


@pytest.mark.parametrize("change, message", [
    ({"drop": ["target.spm"]}, "no target.spm"),
    ({"vocab": lambda v: v.update({"\u2581extra": len(v)})}, "vocab.json has .* tokens but"),
    ({"vocab": lambda v: v.pop(next(k for k in v if k.startswith("\u2581")))},
     "vocab.json's ids are not"),
    ({"vocab": lambda v: v.update({"<pad>": 0, "</s>": v["<pad>"]})}, "pad_token_id is"),
    ({"config": {"activation_function": "mish"}}, "activation_function='mish'"),
    ({"config": {"share_encoder_decoder_embeddings": False}}, "separate source and target"),
])
def test_bad_folders_fail_in_one_line(tmp_path, change, message):
    with pytest.raises(PresetError, match=message) as e:
        keras_zoo.Transformer.from_preset(_copy(tmp_path, **change))
    assert "\n" not in str(e.value)
