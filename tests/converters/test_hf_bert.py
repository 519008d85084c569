"""hf: BERT folders (BertModel, BertForPreTraining) against transformers' own outputs.

The fixtures were written by tools/make_hf_fixtures_bert.py with torch +
transformers; these tests need neither."""

import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import keras_zoo
from keras_zoo import PresetError

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "hf_bert")
TEXTS = ["Hello, WORLD!! naïve café", "unaffable tokenizers: 中文 ΩΩ", "İstanbul ß",
         "a\x00b\ufffdc\u200bd e\tf", "xyz qqq bert's 42", "ж" * 150, "ж" * 90]


def _reference(name):
    return dict(np.load(os.path.join(FIXTURES, name, "reference.npz")))


def _inputs(ref, positions=False):
    x = {"token_ids": ref["input_ids"].astype("int32"),
         "segment_ids": ref["token_type_ids"].astype("int32"),
         "padding_mask": ref["attention_mask"].astype("int32")}
    if positions:  # predict every position, to compare with transformers' full logits
        x["mask_positions"] = np.tile(np.arange(x["token_ids"].shape[1], dtype="int32"), (2, 1))
    return x


def test_bert_model_matches_transformers():
    ref = _reference("model")
    model = keras_zoo.BERT.from_preset("hf:" + os.path.join(FIXTURES, "model"))
    assert model.get_zoo_config()["task"] is None
    out = model(_inputs(ref), training=False)
    np.testing.assert_allclose(out["sequence_output"], ref["hidden"], atol=1e-4)
    np.testing.assert_allclose(out["pooled_output"], ref["pooled"], atol=1e-4)


@pytest.mark.parametrize("name", ["pretraining", "legacy"])
def test_bert_for_pretraining_matches_transformers(name):
    """``legacy``: gamma/beta names, a stored position_ids buffer, a stored tied decoder."""
    ref = _reference(name)
    folder = "hf:" + os.path.join(FIXTURES, name)
    model = keras_zoo.BERT.from_preset(folder, max_predictions_per_seq=12)
    assert model.get_zoo_config()["task"] == "pretraining"
    out = model(_inputs(ref, positions=True), training=False)
    np.testing.assert_allclose(out["mlm"], ref["mlm_logits"], atol=1e-4)
    np.testing.assert_allclose(out["nsp"], ref["nsp_logits"], atol=1e-4)
    backbone = keras_zoo.BERT.from_preset(folder, task=None)
    hidden = backbone(_inputs(ref), training=False)["sequence_output"]
    np.testing.assert_allclose(hidden, ref["hidden"], atol=1e-4)


def test_vocab_txt_becomes_the_tokenizer_with_transformers_ids():
    ref = _reference("model")
    model = keras_zoo.BERT.from_preset("hf:" + os.path.join(FIXTURES, "model"))
    assert model.tokenizer.lowercase and model.tokenizer.max_chars_per_word == 100
    for text, ids in zip(TEXTS, ref["text_ids"]):
        assert model.tokenizer.encode(text) == [i for i in ids.tolist() if i >= 0], text


def test_imported_encoder_fine_tunes_with_a_new_head():
    folder = "hf:" + os.path.join(FIXTURES, "pretraining")
    classifier = keras_zoo.BERT.from_preset(folder, task="classification", num_classes=3)
    backbone = keras_zoo.BERT.from_preset(folder, task=None)
    for name in ("token_embedding", "encoder_block_1", "pooler"):
        for a, b in zip(classifier.get_layer(name).get_weights(),
                        backbone.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert classifier.get_layer("head").kernel.shape == (32, 3)


def _copy(tmp_path, edit=None, config=None):
    folder = tmp_path / "bert"
    shutil.copytree(os.path.join(FIXTURES, "model"), folder)
    if edit is not None:
        tensors = load_file(str(folder / "model.safetensors"))
        edit(tensors)
        save_file(tensors, str(folder / "model.safetensors"))
    if config is not None:
        data = json.loads((folder / "config.json").read_text())
        data.update(config)
        (folder / "config.json").write_text(json.dumps(data))
    return "hf:" + str(folder)


def test_missing_extra_and_misshapen_tensors_are_named(tmp_path):
    def missing(t):
        del t["encoder.layer.1.output.LayerNorm.weight"]

    with pytest.raises(PresetError, match=r"missing from the file: "
                                          r"encoder\.layer\.1\.output\.LayerNorm\.weight; "
                                          r"model variables left unassigned: "
                                          r"encoder_block_1/mlp_norm/gamma"):
        keras_zoo.BERT.from_preset(_copy(tmp_path / "a", missing))

    def extra(t):
        t["encoder.layer.2.output.dense.weight"] = np.zeros((32, 64), "float32")

    with pytest.raises(PresetError, match=r"in the file but not placed: "
                                          r"encoder\.layer\.2\.output\.dense\.weight$"):
        keras_zoo.BERT.from_preset(_copy(tmp_path / "b", extra))

    def misshapen(t):
        t["pooler.dense.weight"] = np.zeros((32, 31), "float32")
        t["encoder.layer.0.attention.self.key.bias"] = np.zeros(30, "float32")

    with pytest.raises(PresetError, match=r"of the wrong shape: .*key.*\(30,\).*"
                                          r"pooler\.dense\.weight \(32, 31\) for pooler/kernel"):
        keras_zoo.BERT.from_preset(_copy(tmp_path / "c", misshapen))


def test_other_architectures_and_settings_are_refused(tmp_path):
    with pytest.raises(PresetError, match=r"holds a Hugging Face \['T5ForConditionalGeneration'\] "
                                          r"checkpoint; keras_zoo imports .*BertForPreTraining"):
        keras_zoo.BERT.from_preset(_copy(tmp_path / "a", config={
            "architectures": ["T5ForConditionalGeneration"]}))
    with pytest.raises(PresetError, match=r"hidden_act='relu'; BERT takes \['gelu', 'gelu_new'"):
        keras_zoo.BERT.from_preset(_copy(tmp_path / "b", config={"hidden_act": "relu"}))
    # the tanh GELU (google-research/bert's modeling.py) is BERT's gelu_approximate
    model = keras_zoo.BERT.from_preset(_copy(tmp_path / "d", config={"hidden_act": "gelu_new"}))
    assert model.get_zoo_config()["hidden_act"] == "gelu_approximate"
    with pytest.raises(PresetError, match="is not a folder"):
        keras_zoo.BERT.from_preset("hf:" + str(tmp_path / "nowhere"))
    with pytest.raises(PresetError, match="holds a BERT, not a ViT"):
        keras_zoo.ViT.from_preset(_copy(tmp_path / "c"))
