"""Bad inputs to the text families' entry points: each is one clear error
naming the argument and the value (issue 22, section 4), never a silently
wrong result. One row per case; the models are tiny and built once."""

import math

import numpy as np
import pytest

import keras_zoo


@pytest.fixture(scope="module")
def gpt():
    return keras_zoo.GPT(vocab_size=40, hidden_dim=16, num_layers=1, num_heads=2,
                         max_positions=16, sequence_length=16, prefill_length=4)


@pytest.fixture(scope="module")
def mamba():
    return keras_zoo.Mamba(vocab_size=40, hidden_dim=16, num_layers=1)


@pytest.fixture(scope="module")
def transformer():
    return keras_zoo.Transformer(vocab_size=40, hidden_dim=16, num_encoder_layers=1,
                                 num_decoder_layers=1, num_heads=2, mlp_dim=32,
                                 max_source_length=8, max_target_length=8)


@pytest.fixture(scope="module")
def bert():
    return keras_zoo.BERT(vocab_size=40, hidden_dim=16, num_layers=1, num_heads=2,
                          intermediate_dim=32, max_sequence_length=16, sequence_length=8,
                          task="classification", num_classes=2)


@pytest.fixture(scope="module")
def bert_pretraining():
    return keras_zoo.BERT(vocab_size=40, hidden_dim=16, num_layers=1, num_heads=2,
                          intermediate_dim=32, max_sequence_length=16, sequence_length=8,
                          task="pretraining",
                          max_predictions_per_seq=2)


IDS_NEGATIVE = np.array([[1, -1, 3]], "int32")
IDS_FLOAT = np.array([[1.0, 2.5, 3.0]], "float32")
IDS_PAST = np.array([[1, 40, 3]], "int32")


# ---- predict() and __call__ check token ids as generate() does

@pytest.mark.parametrize("family", ["gpt", "mamba"])
@pytest.mark.parametrize("ids, error, match", [
    (IDS_NEGATIVE, ValueError, r"token ids \[-1\] are outside the vocabulary \(0..39\)"),
    (IDS_PAST, ValueError, r"token ids \[40\] are outside the vocabulary"),
    (IDS_FLOAT, TypeError, r"token ids must be integers \(int32\), got float32"),
])
def test_causal_lm_predict_and_call_check_ids(family, ids, error, match, request):
    model = request.getfixturevalue(family)
    with pytest.raises(error, match=match):
        model.predict(ids, verbose=0)
    with pytest.raises(error, match=match):
        model(ids)


@pytest.mark.parametrize("key, value, error, match", [
    ("source_ids", IDS_NEGATIVE, ValueError, r"source ids \[-1\] are outside"),
    ("target_ids", IDS_PAST, ValueError, r"target ids \[40\] are outside"),
    ("source_ids", IDS_FLOAT, TypeError, "source ids must be integers"),
    ("source_ids", np.ones((1, 12), "int32"), ValueError, "passes the position table of 9"),
])
def test_transformer_predict_and_call_check_ids(transformer, key, value, error, match):
    inputs = {"source_ids": np.array([[4, 5, 3]], "int32"),
              "target_ids": np.array([[2, 6]], "int32"), key: value}
    with pytest.raises(error, match=match):
        transformer.predict(inputs, verbose=0)
    with pytest.raises(error, match=match):
        transformer(inputs)


def _bert_inputs(**changes):
    inputs = {"token_ids": np.array([[2, 5, 6, 3], [2, 7, 3, 0]], "int32"),
              "segment_ids": np.zeros((2, 4), "int32"),
              "padding_mask": np.array([[1, 1, 1, 1], [1, 1, 1, 0]], "int32")}
    inputs.update(changes)
    return inputs


@pytest.mark.parametrize("changes, error, match", [
    (dict(token_ids=np.array([[2, -1, 6, 3], [2, 7, 3, 0]])), ValueError,
     r"token ids \[-1\] are outside the vocabulary"),
    (dict(token_ids=np.array([[2.0, 5.5, 6, 3], [2, 7, 3, 0]])), TypeError,
     "token ids must be integers"),
    (dict(segment_ids=np.zeros((1, 4), "int32")), ValueError,
     r"segment_ids has shape \(1, 4\) but token_ids has \(2, 4\)"),
    (dict(padding_mask=np.ones((1, 4), "int32")), ValueError,
     r"padding_mask has shape \(1, 4\) but token_ids has \(2, 4\)"),
    (dict(padding_mask=np.array([[1, 1, 0.5, 1], [1, 1, 1, 0]], "float32")), ValueError,
     r"padding_mask must be 0 \(padding\) or 1 \(token\); got \[0.5\]"),
])
def test_bert_inputs_are_consistent(bert, changes, error, match):
    with pytest.raises(error, match=match):
        bert.predict(_bert_inputs(**changes), verbose=0)
    with pytest.raises(error, match=match):
        bert(_bert_inputs(**changes))


@pytest.mark.parametrize("positions, match", [
    (np.array([[1, -1], [2, 0]], "int32"), r"mask_positions \[-1\] are outside the sequence"),
    (np.array([[1, 4], [2, 0]], "int32"), r"mask_positions \[4\] are outside the sequence"),
    (np.array([[1, 2]], "int32"), "mask_positions has 1 rows but token_ids has 2"),
])
def test_bert_mask_positions_index_the_sequence(bert_pretraining, positions, match):
    with pytest.raises(ValueError, match=match):
        bert_pretraining(_bert_inputs(mask_positions=positions))


@pytest.fixture(scope="module")
def bert_qa():
    model = keras_zoo.BERT(vocab_size=40, hidden_dim=16, num_layers=1, num_heads=2,
                           intermediate_dim=32, max_sequence_length=16, sequence_length=8,
                           task="question_answering")
    model.tokenizer = type("Fake", (), {"vocab_size": 40})()  # checks come before tokenizing
    return model


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(doc_stride=0), ValueError, "doc_stride must be >= 1, got 0"),  # looped forever
    (dict(doc_stride=-4), ValueError, "doc_stride must be >= 1, got -4"),
    (dict(max_answer_length=0), ValueError, "max_answer_length must be >= 1"),
    (dict(contexts=["a", "list"]), TypeError, "each context as a string; got list"),
    (dict(questions=[None], contexts=["text"]), TypeError, "each question as a string"),
])
def test_qa_answer_arguments(bert_qa, kwargs, error, match):
    args = {"questions": "who?", "contexts": "a context", **kwargs}
    with pytest.raises(error, match=match):
        bert_qa.answer(args.pop("questions"), args.pop("contexts"), **args)


# ---- generate()

@pytest.mark.parametrize("kwargs, error, match", [
    (dict(sampler="top_k", temperature=math.nan), ValueError, "temperature must be a finite"),
    (dict(sampler="top_k", temperature=math.inf), ValueError, "temperature must be a finite"),
    (dict(sampler="greedy", temperature=-1.0), ValueError, "temperature must be a finite"),
    (dict(sampler="top_p", top_p=0.0), ValueError, r"top_p must be in \(0, 1\], got 0.0"),
    (dict(sampler="top_p", top_p=1.5), ValueError, r"top_p must be in \(0, 1\], got 1.5"),
    (dict(sampler="top_k", top_k=0), ValueError, "top_k must be >= 1, got 0"),
    (dict(sampler="top_k", top_k=41), ValueError, r"top_k=41 is larger than the vocabulary"),
    (dict(sampler="top_k", top_k=2.5), TypeError, "top_k must be an integer"),
    (dict(max_new_tokens=2.0), TypeError, "max_new_tokens must be an integer"),
    (dict(max_new_tokens=-3), ValueError, "max_new_tokens must be >= 1, got -3"),
])
def test_generate_sampling_arguments(gpt, kwargs, error, match):
    with pytest.raises(error, match=match):
        gpt.generate([[1, 2]], **kwargs)


@pytest.mark.parametrize("prompts, error, match", [
    (None, TypeError, "generate.. takes a string, a list of strings or a list of token-id"),
    (b"hello", TypeError, "got bytes"),
    ([1, 2, 3], TypeError, r"got a flat list of ids \(wrap one sequence as \[\[...\]\]\)"),
    ([[1, 2.5]], TypeError, "holds 2.5; token ids are integers"),
    ([[1, -1]], ValueError, r"token ids \[-1\] are outside the vocabulary"),
    (["ok", b"bytes"], TypeError, r"text 1 is bytes, not str \(decode bytes first"),
    (["\ud800"], ValueError, "text 0 is not valid Unicode .*lone surrogate"),
])
def test_generate_prompt_types(gpt, prompts, error, match):
    with pytest.raises(error, match=match):
        gpt.generate(prompts, max_new_tokens=1)


def test_generate_still_works_on_good_input(gpt):
    out = gpt.generate([[1, 2], [3]], max_new_tokens=2, sampler="top_k", top_k=5, seed=1)
    assert [len(o) for o in out] == [2, 2] and all(0 <= t < 40 for o in out for t in o)


# ---- translate() / translate_ids()

@pytest.mark.parametrize("kwargs, error, match", [
    (dict(max_length=0), ValueError, "max_length must be >= 1, got 0"),
    (dict(max_length=-2), ValueError, "max_length must be >= 1, got -2"),
    (dict(max_length=3.0), TypeError, "max_length must be an integer >= 1 or None"),
    (dict(batch_size=0), ValueError, "batch_size must be >= 1, got 0"),
    (dict(beam_size=2.0), TypeError, "beam_size must be an integer"),
    (dict(alpha=math.nan), ValueError, "alpha .* must be a finite number >= 0"),
])
def test_translate_ids_arguments(transformer, kwargs, error, match):
    with pytest.raises(error, match=match):
        transformer.translate_ids([[4, 5, 3]], **kwargs)


@pytest.mark.parametrize("sources, error, match", [
    ([[]], ValueError, "sequence 0 is empty"),
    ([4, 5, 3], TypeError, "got a flat list of ids"),
    (None, TypeError, "takes a list of token-id lists, got NoneType"),
    ([[4, 5.0, 3]], TypeError, "holds 5.0; token ids are integers"),
    ([[4, -1, 3]], ValueError, r"source token ids \[-1\] are outside the vocabulary"),
])
def test_translate_ids_sources(transformer, sources, error, match):
    with pytest.raises(error, match=match):
        transformer.translate_ids(sources)


@pytest.mark.parametrize("texts, error, match", [
    (None, TypeError, "translate.. takes a string or a list of strings, got NoneType"),
    (b"Hallo", TypeError, "got bytes"),
    ([b"Hallo"], TypeError, r"text 0 is bytes, not str"),
    (["\udc80"], ValueError, "lone surrogate"),
    ([], ValueError, "got no texts"),
])
def test_translate_text_types(transformer, texts, error, match):
    with pytest.raises(error, match=match):
        transformer.translate(texts)


def test_translate_max_length_zero_is_refused_not_the_default(transformer):
    with pytest.raises(ValueError, match="max_length must be >= 1, got 0"):
        transformer.translate("Hallo", max_length=0)


# ---- tokenizer files

@pytest.fixture(scope="module")
def sentencepiece_folder(tmp_path_factory):
    from keras_zoo.data.tokenizers import SentencePieceTokenizer

    folder = tmp_path_factory.mktemp("sp")
    SentencePieceTokenizer.train(["the state space model reads a token",
                                  "and keeps a state of fixed size"] * 40,
                                 vocab_size=300).save(str(folder))
    return folder


def test_a_sentencepiece_tokenizer_without_an_end_token_is_refused(sentencepiece_folder,
                                                                    tmp_path):
    import json
    import shutil

    from keras_zoo.data.tokenizers import Tokenizer, TokenizerError

    folder = tmp_path / "sp"
    shutil.copytree(sentencepiece_folder, folder)
    assert Tokenizer.load(str(folder)).end_id is not None
    meta = json.loads((folder / "tokenizer.json").read_text())
    meta["special_tokens"] = {k: v for k, v in meta["special_tokens"].items() if k != "end"}
    (folder / "tokenizer.json").write_text(json.dumps(meta))
    with pytest.raises(TokenizerError, match="tokenizer.json: special_tokens .* has no 'end' "
                                             "token"):
        Tokenizer.load(str(folder))


@pytest.mark.parametrize("content, match", [
    (b"", "tokenizer.json is not a valid tokenizer description"),
    (b"{not json", "tokenizer.json is not a valid tokenizer description"),
])
def test_empty_or_corrupt_tokenizer_files_name_the_file(sentencepiece_folder, tmp_path,
                                                        content, match):
    import shutil

    from keras_zoo.data.tokenizers import Tokenizer, TokenizerError

    folder = tmp_path / "sp"
    shutil.copytree(sentencepiece_folder, folder)
    (folder / "tokenizer.json").write_bytes(content)
    with pytest.raises(TokenizerError, match=match):
        Tokenizer.load(str(folder))
