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
