"""WordPieceTokenizer: google-research/bert tokenization.py in Python, and the same ids in TF."""

import numpy as np
import pytest
import tensorflow as tf

from keras_zoo.data.tokenizers import Tokenizer, TokenizerError, WordPieceTokenizer

VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
         + list("abcdefghijklmnopqrstuvwxyz0123456789.,!?;:'\"()-#$%&*/[]—")
         + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
         + ["un", "##aff", "##able", "hello", "world", "cafe", "naive", "cafe", "Café",
            "中", "文", "ω", "##ω", "ß", "ж", "##ж", "σας", "istanbul", "x", "##x",
            "Hello", "##é"])  # "cafe" twice: the last line's id counts (load_vocab)
TRICKY = [
    "Hello, WORLD!! naïve café — ok",          # case, accents, an em dash (Unicode Pd)
    "unaffable",                                 # the docstring's example: un ##aff ##able
    "中文字 ΩΩ ΣΑΣ",                              # CJK split per character, Greek, final sigma
    "İstanbul ß ﬁ ＡＢ",                          # dotted capital I, sharp s, ligature, full width
    "a\x00b\ufffdc\u200bd\x0be\tf\u2028g\u00a0h\u3000i",  # NUL, U+FFFD, Cf, Cc, separators
    "qqq zzz9 #$%^&*()[]{}<>~`|\\@",             # unknown words, every ASCII punctuation mark
    "ж" * 150, "ж" * 201, "x" * 250,             # word length limits (characters, not bytes)
    "", "   \n\t ", "\u0301a \u0301 中\u0301",    # empty, whitespace only, stray combining marks
]


@pytest.fixture(scope="module")
def uncased():
    return WordPieceTokenizer(VOCAB, lowercase=True)


def test_python_and_tensorflow_give_the_same_ids(uncased):
    cased = WordPieceTokenizer(VOCAB, lowercase=False)
    for tokenizer in (uncased, cased):
        expected = tokenizer.encode(TRICKY)
        assert tokenizer.tf_encode(tf.constant(TRICKY)).to_list() == expected
        # and inside tf.data, where the trainer calls it
        ds = tf.data.Dataset.from_tensor_slices(TRICKY).batch(4).map(tokenizer.tf_encode)
        assert [row for batch in ds for row in batch.to_list()] == expected


def test_basic_tokenizer_follows_tokenization_py(uncased):
    assert uncased.tokenize("unaffable") == ["un", "##aff", "##able"]
    assert uncased.basic_tokenize("Hello, WORLD!! naïve café") == \
        ["hello", ",", "world", "!", "!", "naive", "cafe"]
    # CJK ideographs are words of their own; the final capital sigma lower-cases to ς
    # (Python's str.lower, as the original), and accents go after NFD.
    assert uncased.basic_tokenize("中文字 ΣΑΣ") == ["中", "文", "字", "σας"]
    assert uncased.basic_tokenize("a\x00b\ufffdc\u200bd\x0be\tf") == ["abcde", "f"]
    assert uncased.tokenize("qqq") == ["q", "##q", "##q"]
    assert uncased.tokenize("qqq!") == ["q", "##q", "##q", "!"]
    assert uncased.tokenize("字") == ["[UNK]"]
    assert uncased.encode("cafe") == [len(VOCAB) - 1 - VOCAB[::-1].index("cafe")]
    cased = WordPieceTokenizer(VOCAB, lowercase=False)
    assert cased.tokenize("Hello Café") == ["Hello", "Café"]  # no lower-casing, accents kept


def test_word_length_limit_counts_characters(uncased):
    # 150 Cyrillic letters are 300 UTF-8 bytes but within the original's 200 characters.
    assert uncased.tokenize("ж" * 150) == ["ж"] + ["##ж"] * 149
    assert uncased.tokenize("ж" * 201) == ["[UNK]"]
    hugging_face = WordPieceTokenizer(VOCAB, max_chars_per_word=100)
    assert hugging_face.tokenize("ж" * 101) == ["[UNK]"]
    assert hugging_face.tf_encode(tf.constant(["ж" * 101, "ж" * 100])).to_list() == \
        hugging_face.encode(["ж" * 101, "ж" * 100])


def test_special_ids_decode_and_files(uncased, tmp_path):
    assert (uncased.pad_id, uncased.unk_id, uncased.cls_id, uncased.sep_id, uncased.mask_id) \
        == (0, 1, 2, 3, 4)
    ids = uncased.encode("unaffable world")
    assert uncased.decode([2] + ids + [3, 0, 0]) == "unaffable world"
    names = uncased.save(tmp_path)
    assert sorted(names) == ["tokenizer.json", "vocab.txt"]
    # vocab.txt is the original release's format: one token per line, line = id.
    assert (tmp_path / "vocab.txt").read_text(encoding="utf-8").split("\n")[:3] == \
        ["[PAD]", "[UNK]", "[CLS]"]
    loaded = Tokenizer.load(tmp_path)
    assert isinstance(loaded, WordPieceTokenizer) and loaded.lowercase
    assert loaded.encode(TRICKY) == uncased.encode(TRICKY)
    from_release = WordPieceTokenizer.from_vocab_file(tmp_path / "vocab.txt")
    assert from_release.encode(TRICKY) == uncased.encode(TRICKY)


def test_a_vocabulary_without_the_special_tokens_is_refused():
    with pytest.raises(TokenizerError, match=r"special token\(s\) \['\[MASK\]'\] are not in"):
        WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"])
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        WordPieceTokenizer(VOCAB).decode([5, len(VOCAB)])


def test_training_learns_pieces_of_the_corpus():
    texts = ["The tokenizer splits unbelievable words into pieces.",
             "Tokenizers learn pieces from a corpus; pieces repeat.",
             "Words, words and more words: the corpus is small."] * 20
    tokenizer = WordPieceTokenizer.train(texts, vocab_size=120)
    assert tokenizer.vocabulary[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert tokenizer.vocab_size <= 120
    ids = tokenizer.encode(texts[:3])
    assert tokenizer.unk_id not in np.concatenate(ids)
    assert "pieces" in tokenizer.vocabulary and "words" in tokenizer.vocabulary
    assert tokenizer.tf_encode(tf.constant(texts[:3])).to_list() == ids
