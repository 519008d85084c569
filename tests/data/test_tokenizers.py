import json
import os

import numpy as np
import pytest

from keras_zoo.data.tokenizers import SentencePieceTokenizer, Tokenizer, TokenizerError

TEXTS = ["Could not open file %s for reading", "Datei %s konnte nicht gelesen werden",
         "Permission denied", "Zugriff verweigert", "Unknown option --%s",
         "Unbekannte Option --%s", "Save the document before closing?"] * 30


@pytest.fixture(scope="module")
def tokenizer():
    return SentencePieceTokenizer.train(TEXTS, vocab_size=400)


def test_round_trip_and_special_ids(tokenizer):
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.start_id, tokenizer.end_id) == \
        (0, 1, 2, 3)
    for text in ["Datei %s konnte nicht gelesen werden", "Permission denied"]:
        ids = tokenizer.encode(text)
        assert all(i > 3 for i in ids)
        assert tokenizer.decode(ids) == text
    # Decoding stops at the end token and drops padding/start tokens.
    ids = tokenizer.encode("Permission denied")
    assert tokenizer.decode([2] + ids + [3, 17, 0, 0]) == "Permission denied"


def test_unseen_characters_fall_back_to_bytes_never_unknown(tokenizer):
    text = "Datei 日本 ✓"
    ids = tokenizer.encode(text)
    assert tokenizer.unk_id not in ids
    assert tokenizer.decode(ids) == text


def test_tf_encode_gives_the_python_ids(tokenizer):
    import tensorflow as tf

    texts = ["Unknown option --%s", "Zugriff verweigert 日本", ""]
    ragged = tokenizer.tf_encode(tf.constant(texts))
    assert ragged.to_list() == tokenizer.encode(texts)


def test_saved_folder_loads_the_same_vocabulary(tokenizer, tmp_path):
    names = tokenizer.save(tmp_path)
    assert sorted(names) == ["tokenizer.json", "tokenizer.spm"]
    loaded = Tokenizer.load(tmp_path)
    assert isinstance(loaded, SentencePieceTokenizer)
    assert loaded.encode(TEXTS[:4]) == tokenizer.encode(TEXTS[:4])
    meta = json.loads((tmp_path / "tokenizer.json").read_text())
    assert meta["special_tokens"]["end"] == "</s>"


def test_bad_folders_and_inputs_say_what_is_wrong(tokenizer, tmp_path):
    with pytest.raises(TokenizerError, match="has no tokenizer.json"):
        Tokenizer.load(tmp_path)
    tokenizer.save(tmp_path)
    os.remove(tmp_path / "tokenizer.spm")
    with pytest.raises(TokenizerError, match="tokenizer.spm.*is missing"):
        Tokenizer.load(tmp_path)
    (tmp_path / "tokenizer.spm").write_bytes(b"\x00torn")
    with pytest.raises(TokenizerError, match="could not read the SentencePieceTokenizer"):
        Tokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{")
    with pytest.raises(TokenizerError, match="not a valid tokenizer description"):
        Tokenizer.load(tmp_path)
    with pytest.raises(TokenizerError, match="expected a string"):
        tokenizer.encode(["fine", 3])
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tokenizer.decode([5, tokenizer.vocab_size + 7])
    assert tokenizer.decode(np.array([[5, 6], [7, 8]])) == tokenizer.decode([[5, 6], [7, 8]])


# ---------------------------------------------------------------- byte-level BPE (GPT-2)

GPT2_FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "hf_gpt2")


@pytest.fixture(scope="module")
def bpe():
    from keras_zoo.data.tokenizers import BytePairTokenizer

    return BytePairTokenizer.from_folder(GPT2_FIXTURE)


@pytest.fixture(scope="module")
def bpe_reference():
    with open(os.path.join(GPT2_FIXTURE, "tokenizer_reference.json"), encoding="utf-8") as f:
        return json.load(f)


def test_bpe_gives_the_ids_of_transformers_gpt2_tokenizer(bpe, bpe_reference):
    assert bpe.end_id == 399 and bpe.vocab_size == 400
    for text, ids in zip(bpe_reference["texts"], bpe_reference["ids"]):
        assert bpe.encode(text) == ids, text
        # byte-level: every text comes back exactly (the end token aside)
        expected = text.split("<|endoftext|>")[0]
        assert bpe.decode(ids) == expected


def test_bpe_tf_encode_gives_the_python_ids(bpe, bpe_reference):
    import tensorflow as tf

    texts = bpe_reference["texts"]
    ragged = bpe.tf_encode(tf.constant(texts))
    assert ragged.dtype == tf.int32
    for text, row in zip(texts, ragged.to_list()):
        assert row == bpe.encode(text), text


def test_bpe_saves_and_loads_with_a_preset(bpe, tmp_path):
    from keras_zoo.data.tokenizers import BytePairTokenizer

    names = bpe.save(str(tmp_path))
    assert names == ["tokenizer.json", "merges.txt", "vocab.json"]
    loaded = Tokenizer.load(str(tmp_path))
    assert isinstance(loaded, BytePairTokenizer) and loaded.special_tokens == bpe.special_tokens
    text = "It's 3.14 — naïve 🙂<|endoftext|>"
    assert loaded.encode(text) == bpe.encode(text)


def test_bpe_bad_files_fail_in_one_line(tmp_path):
    from keras_zoo.data.tokenizers import BytePairTokenizer

    with pytest.raises(TokenizerError, match="has no vocab.json"):
        BytePairTokenizer.from_folder(str(tmp_path))
    with pytest.raises(TokenizerError, match="not in vocab.json"):
        BytePairTokenizer({"a": 0, "b": 1}, ["a b"], special_tokens={}).encode("ab")
    with pytest.raises(TokenizerError, match=r"special tokens \['<\|endoftext\|>'\] are not"):
        BytePairTokenizer({"a": 0}, [])


@pytest.mark.parametrize("kind", ["sentencepiece", "bpe"])
def test_tf_encode_inside_a_distributed_tf_data_trace(kind):
    """The trainer's path: tokenized first inside flat_map's traced function,
    iterated through a tf.distribute dataset (which rebuilds the graph)."""
    import tensorflow as tf

    from keras_zoo.data.tokenizers import BytePairTokenizer

    tok = (SentencePieceTokenizer.train(TEXTS, vocab_size=400) if kind == "sentencepiece"
           else BytePairTokenizer.from_folder(GPT2_FIXTURE))
    texts = tf.data.Dataset.from_tensor_slices(["Permission denied", "Unknown option"])
    stream = tf.data.Dataset.range(2).flat_map(
        lambda _: texts.map(lambda t: tok.tf_encode(tf.reshape(t, (1,)))[0][:2]))
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    batches = iter(strategy.experimental_distribute_dataset(stream))
    step = tf.function(lambda: next(batches))  # as Keras' train function pulls batches
    got = [step().numpy().tolist() for _ in range(4)]
    assert got == [ids[:2] for ids in tok.encode(["Permission denied", "Unknown option"])] * 2
