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


@pytest.mark.parametrize("name, via", [("pretraining", "folder"), ("legacy", "folder"),
                                       ("pretraining", "hf://")])
def test_bert_for_pretraining_matches_transformers(name, via, hf_hub_cache):
    """``legacy``: gamma/beta names, a stored position_ids buffer, a stored tied decoder."""
    ref = _reference(name)
    folder = "hf:" + os.path.join(FIXTURES, name)
    if via == "hf://":  # the same files through huggingface_hub's cache, offline
        hf_hub_cache("google-bert/bert-tiny-pretraining", os.path.join(FIXTURES, name))
        folder = "hf://google-bert/bert-tiny-pretraining"
    model = keras_zoo.BERT.from_preset(folder, max_predictions_per_seq=12)
    assert model.get_zoo_config()["task"] == "pretraining"
    out = model(_inputs(ref, positions=True), training=False)
    np.testing.assert_allclose(out["mlm"], ref["mlm_logits"], atol=1e-4)
    np.testing.assert_allclose(out["nsp"], ref["nsp_logits"], atol=1e-4)
    backbone = keras_zoo.BERT.from_preset(folder, task=None)
    hidden = backbone(_inputs(ref), training=False)["sequence_output"]
    np.testing.assert_allclose(hidden, ref["hidden"], atol=1e-4)


def _close(actual, expected):
    """1e-4 relative to the values' scale (float32 sums over a few hundred terms)."""
    np.testing.assert_allclose(actual, expected, rtol=0,
                               atol=1e-4 * max(1.0, float(np.abs(expected).max())))


@pytest.mark.parametrize("via", ["folder", "hf://"])
def test_bert_for_masked_lm_matches_transformers(via, hf_hub_cache):
    """A transformers BertForMaskedLM: no pooler, no next-sentence head."""
    ref = _reference("masked_lm")
    source = "hf:" + os.path.join(FIXTURES, "masked_lm")
    if via == "hf://":
        hf_hub_cache("org/bert-mlm", os.path.join(FIXTURES, "masked_lm"))
        source = "hf://org/bert-mlm"
    model = keras_zoo.BERT.from_preset(source, max_predictions_per_seq=12)
    assert model.get_zoo_config()["task"] == "masked_lm"
    assert not any(w.path.startswith(("pooler", "nsp_head")) for w in model.weights)
    out = model(_inputs(ref, positions=True), training=False)
    assert set(out) == {"mlm"}
    _close(out["mlm"], ref["logits"])


def test_masked_lm_file_with_every_pretraining_head_keeps_them(tmp_path):
    """The hub's bert-base-uncased says BertForMaskedLM but stores the pooler and the
    next-sentence head too: it imports as task='pretraining', every tensor placed."""
    ref = _reference("pretraining")
    model = keras_zoo.BERT.from_preset(_copy(tmp_path, config={
        "architectures": ["BertForMaskedLM"]}, source="pretraining"), max_predictions_per_seq=12)
    assert model.get_zoo_config()["task"] == "pretraining"
    out = model(_inputs(ref, positions=True), training=False)
    _close(out["mlm"], ref["mlm_logits"])
    _close(out["nsp"], ref["nsp_logits"])


@pytest.mark.parametrize("name, task, classes", [
    ("sequence_classification", "classification", 3),
    ("token_classification", "token_classification", 5),
    ("question_answering", "question_answering", None)])
def test_bert_task_heads_match_transformers(name, task, classes):
    ref = _reference(name)
    model = keras_zoo.BERT.from_preset("hf:" + os.path.join(FIXTURES, name))
    config = model.get_zoo_config()
    assert config["task"] == task
    if classes:
        assert config["num_classes"] == classes
    out = model(_inputs(ref), training=False)
    if task == "question_answering":
        _close(out["start_logits"], ref["start_logits"])
        _close(out["end_logits"], ref["end_logits"])
    else:
        _close(out, ref["logits"])


def test_every_size_and_option_comes_from_the_checkpoints_config():
    seq = keras_zoo.BERT.from_preset("hf:" + os.path.join(FIXTURES, "sequence_classification"))
    assert seq.get_zoo_config()["layer_norm_epsilon"] == 1e-7
    assert seq.label_names == ["negative", "neutral", "positive"]
    tok = keras_zoo.BERT.from_preset("hf:" + os.path.join(FIXTURES, "token_classification"))
    c = tok.get_zoo_config()
    assert (c["num_heads"], c["intermediate_dim"], c["max_sequence_length"],
            c["num_segments"], c["num_classes"]) == (2, 48, 24, 3, 5)
    assert tok.label_names is None  # transformers' LABEL_0.. are not names
    # a new label set: the encoder is kept, the head starts afresh
    four = keras_zoo.BERT.from_preset("hf:" + os.path.join(FIXTURES, "sequence_classification"),
                                      num_classes=4)
    assert four.get_layer("head").kernel.shape == (32, 4)
    np.testing.assert_array_equal(four.get_layer("pooler").get_weights()[0],
                                  seq.get_layer("pooler").get_weights()[0])


def test_a_pooler_the_head_never_reads_is_set_aside(tmp_path):
    """Some token-classification files carry the pooler: transformers ignores it, so do we."""
    def add(t):
        t["bert.pooler.dense.weight"] = np.ones((32, 32), "float32")
        t["bert.pooler.dense.bias"] = np.zeros(32, "float32")

    ref = _reference("question_answering")
    model = keras_zoo.BERT.from_preset(_copy(tmp_path, add, source="question_answering"))
    _close(model(_inputs(ref))["start_logits"], ref["start_logits"])


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


def _copy(tmp_path, edit=None, config=None, source="model"):
    folder = tmp_path / "bert"
    shutil.copytree(os.path.join(FIXTURES, source), folder)
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
