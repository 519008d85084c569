"""Tokenizers that travel inside a preset folder: text <-> token ids.

A text family's model carries its tokenizer (``model.tokenizer``);
``save_to_preset`` writes the tokenizer's files next to the weights
(``tokenizer.json`` naming the class and its special tokens, plus the
vocabulary files: plain data, never pickle) and ``from_preset`` reads them
back, so ``from_preset(folder).translate([...])`` works from the folder alone.

Two sides, one vocabulary:

* ``encode`` / ``decode`` run in Python on lists of strings and ids, without
  TensorFlow (the Keras code door on any backend);
* ``tf_encode`` tokenizes inside ``tf.data`` (the training door), through
  the TensorFlow op of the same algorithm; tests check both give the same ids.

``SentencePieceTokenizer`` (subword BPE or unigram over raw text, whitespace
kept as "▁", byte fallback so no character is ever unknown) is the zoo's
default for families trained here; the WordPiece (BERT) and byte-level BPE
(GPT-2) formats of foreign checkpoints register their own classes.
"""

import io
import itertools
import json
import os
from typing import ClassVar

TOKENIZER_FILE = "tokenizer.json"

_CLASSES = {}


class TokenizerError(ValueError):
    """A tokenizer folder or file that cannot be used; the message says why."""


def register_tokenizer(cls):
    """Class decorator: makes ``cls`` loadable by name from ``tokenizer.json``."""
    _CLASSES[cls.__name__] = cls
    return cls


class Tokenizer:
    """Base class. Subclasses implement ``_encode_one``, ``_decode_one``,
    ``tf_encode``, ``vocab_size``, ``token_to_id``, ``_files`` (name -> bytes)
    and ``from_files``.

    ``special_tokens`` maps a role to a token string: "pad", "unk", "start",
    "end" (sequence start/end), and for BERT "cls", "sep", "mask". ``pad_id``,
    ``unk_id``, ``start_id``, ``end_id``, ... give their ids (None if the
    vocabulary has no such token).
    """

    def __init__(self, special_tokens=None):
        self.special_tokens = dict(special_tokens or {})

    # ---- ids of the special tokens

    def special_id(self, role):
        token = self.special_tokens.get(role)
        return None if token is None else self.token_to_id(token)

    pad_id = property(lambda self: self.special_id("pad"))
    unk_id = property(lambda self: self.special_id("unk"))
    start_id = property(lambda self: self.special_id("start"))
    end_id = property(lambda self: self.special_id("end"))

    def special_ids(self):
        return sorted({i for i in (self.special_id(r) for r in self.special_tokens)
                       if i is not None})

    # ---- Python side

    def encode(self, texts):
        """A string -> list of ids; a list of strings -> list of lists."""
        if isinstance(texts, str):
            return self._encode_one(texts)
        return [self._encode_one(_check_text(t)) for t in texts]

    def decode(self, ids, skip_special_tokens=True):
        """A list of ids -> string (stops at the end token); a batch -> list of strings."""
        ids = _to_list(ids)
        if not ids or not isinstance(ids[0], list):
            return self._decode_ids(ids, skip_special_tokens)
        return [self._decode_ids(row, skip_special_tokens) for row in ids]

    def _decode_ids(self, ids, skip_special_tokens):
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            end = self.end_id
            if end is not None and end in ids:
                ids = ids[:ids.index(end)]
            special = set(self.special_ids())
            ids = [i for i in ids if i not in special]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise TokenizerError(f"token ids {bad[:5]} are outside the vocabulary "
                                 f"(0..{self.vocab_size - 1})")
        return self._decode_one(ids)

    # ---- files

    def save(self, folder):
        """Writes ``tokenizer.json`` and the vocabulary files; returns their names."""
        os.makedirs(folder, exist_ok=True)
        files = self._files()
        for name, data in files.items():
            tmp = os.path.join(folder, name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, os.path.join(folder, name))
        meta = {"class": type(self).__name__, "special_tokens": self.special_tokens,
                "files": sorted(files), "config": self.get_config()}
        tmp = os.path.join(folder, TOKENIZER_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, os.path.join(folder, TOKENIZER_FILE))
        return [TOKENIZER_FILE] + sorted(files)

    def get_config(self):
        """Extra constructor arguments stored in tokenizer.json (plain data)."""
        return {}

    @staticmethod
    def exists(folder):
        return os.path.exists(os.path.join(folder, TOKENIZER_FILE))

    @staticmethod
    def load(folder):
        """The tokenizer saved in ``folder`` (clear errors for missing/torn files)."""
        path = os.path.join(folder, TOKENIZER_FILE)
        if not os.path.exists(path):
            raise TokenizerError(f"{folder!r} has no {TOKENIZER_FILE}: this preset was "
                                 "saved without its tokenizer")
        try:
            with open(path) as f:
                meta = json.load(f)
            cls_name, names = meta["class"], meta["files"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise TokenizerError(f"{path} is not a valid tokenizer description: "
                                 f"{type(e).__name__}: {e}") from None
        if cls_name not in _CLASSES:
            import keras_zoo.converters  # noqa: F401  (foreign checkpoints' tokenizer classes)
        if cls_name not in _CLASSES:
            raise TokenizerError(f"{path}: unknown tokenizer class {cls_name!r}; known: "
                                 f"{sorted(_CLASSES)}")
        files = {}
        for name in names:
            file_path = os.path.join(folder, name)
            if not os.path.exists(file_path):
                raise TokenizerError(f"tokenizer file {file_path!r} named in {TOKENIZER_FILE} "
                                     "is missing (the vocabulary did not travel with the preset)")
            with open(file_path, "rb") as f:
                files[name] = f.read()
        try:
            tokenizer = _CLASSES[cls_name].from_files(files, meta.get("special_tokens"),
                                                      **meta.get("config", {}))
        except TokenizerError:
            raise
        except Exception as e:  # a torn or foreign vocabulary file
            raise TokenizerError(f"could not read the {cls_name} in {folder!r}: "
                                 f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                                 ) from e
        if cls_name == "SentencePieceTokenizer" and tokenizer.end_id is None:
            # generation and translation stop at the end token: without one they never stop
            raise TokenizerError(f"{path}: special_tokens {tokenizer.special_tokens} has no "
                                 "'end' token; add \"end\": \"</s>\" (the SentencePiece "
                                 "models here end sequences with it)")
        return tokenizer


@register_tokenizer
class SentencePieceTokenizer(Tokenizer):
    """SentencePiece (Kudo & Richardson 2018) subword tokenizer.

    Trained here with ``train(texts, vocab_size)``: BPE by default (the
    2017 Transformer used a shared BPE vocabulary of ~37k), identity
    normalisation (the text is not rewritten, so detokenised output is the
    text itself, which BLEU scores on), byte fallback (a character never
    seen in training becomes its UTF-8 bytes: no unknown token, no crash),
    and ids 0 = <pad>, 1 = <unk>, 2 = <s>, 3 = </s>. The model file
    (``tokenizer.spm``, a SentencePiece protobuf: data, not code) is read by
    the ``sentencepiece`` library in Python and by TensorFlow Text's op in
    ``tf.data``.
    """

    FILE = "tokenizer.spm"
    DEFAULT_SPECIAL: ClassVar[dict] = {"pad": "<pad>", "unk": "<unk>", "start": "<s>", "end": "</s>"}

    def __init__(self, proto, special_tokens=None):
        import sentencepiece

        super().__init__(special_tokens or self.DEFAULT_SPECIAL)
        self.proto = bytes(proto)
        self._sp = sentencepiece.SentencePieceProcessor(model_proto=self.proto)
        self._tf = None

    @classmethod
    def train(cls, texts, vocab_size, model_type="bpe", character_coverage=1.0,
              max_sentence_length=4192, seed_sentencepiece_size=200_000):
        """Trains on an iterable of strings. ``vocab_size`` is an upper bound
        on a small corpus (``hard_vocab_limit=False``)."""
        import sentencepiece

        if vocab_size < 260 + 4:
            raise TokenizerError(f"vocab_size={vocab_size} is too small for byte fallback "
                                 "(256 byte pieces + 4 special tokens + some subwords)")
        buffer = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=(t for t in texts if t), model_writer=buffer,
            vocab_size=vocab_size, model_type=model_type,
            pad_id=0, unk_id=1, bos_id=2, eos_id=3,
            pad_piece="<pad>", unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>",
            character_coverage=character_coverage, normalization_rule_name="identity",
            byte_fallback=True, hard_vocab_limit=False, split_digits=True,
            max_sentence_length=max_sentence_length,
            seed_sentencepiece_size=seed_sentencepiece_size,
            num_threads=2, minloglevel=2)
        return cls(buffer.getvalue())

    @property
    def vocab_size(self):
        return self._sp.get_piece_size()

    def token_to_id(self, token):
        i = self._sp.piece_to_id(token)
        return None if i == self._sp.unk_id() and token != self._sp.id_to_piece(i) else i

    def id_to_token(self, i):
        return self._sp.id_to_piece(int(i))

    def _encode_one(self, text):
        return self._sp.encode(text)

    def _decode_one(self, ids):
        return self._sp.decode(ids)

    def tf_encode(self, texts):
        """tf.string tensor (batch,) -> tf.RaggedTensor of int32 ids (same as ``encode``)."""
        import tensorflow as tf
        import tensorflow_text

        if not tf.executing_eagerly():
            # Inside a traced tf.data function the model goes into the graph as
            # a constant: tf.distribute re-creates dataset graphs from their
            # serialized form, which an eagerly captured resource does not survive.
            return tensorflow_text.SentencepieceTokenizer(
                model=self.proto, out_type=tf.int32).tokenize(texts)
        if self._tf is None:
            self._tf = tensorflow_text.SentencepieceTokenizer(model=self.proto,
                                                              out_type=tf.int32)
        return self._tf.tokenize(texts)

    def _files(self):
        return {self.FILE: self.proto}

    @classmethod
    def from_files(cls, files, special_tokens=None, **config):
        return cls(files[cls.FILE], special_tokens)



# GPT-2's pre-tokenizer (openai/gpt-2 src/encoder.py): contractions, runs of
# letters, of digits, of other symbols (each with one leading space), and
# whitespace, so that a word's BPE never crosses a word boundary.
_GPT2_SPLIT = (r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def _bytes_to_unicode():
    """GPT-2's map of the 256 byte values onto printable characters (printable
    Latin-1 bytes map to themselves, the others to U+0100 onwards), so that a
    BPE vocabulary over bytes can be stored as JSON text."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@register_tokenizer
class BytePairTokenizer(Tokenizer):
    """Byte-level BPE (Radford et al. 2019, GPT-2): text -> UTF-8 bytes ->
    pre-tokenized words -> pairs merged in the order of ``merges.txt``, each
    final piece looked up in ``vocab.json``. No text is ever unknown.

    The files are those of the GPT-2 release and of Hugging Face's GPT-2
    folders (``vocab.json`` maps piece -> id, ``merges.txt`` lists merges by
    rank). ``encode``/``decode`` are the algorithm of OpenAI's
    ``encoder.py``, in plain Python (the ``regex`` package for the Unicode
    classes of the pre-tokenizer); ``tf_encode`` is keras-hub's
    ``BytePairTokenizer`` op over the same files. Special tokens
    (GPT-2: ``<|endoftext|>``, id 50256, the end of every document) are
    matched whole before BPE.
    """

    VOCABULARY_FILE = "vocab.json"
    MERGES_FILE = "merges.txt"
    DEFAULT_SPECIAL: ClassVar[dict] = {"end": "<|endoftext|>"}

    def __init__(self, vocabulary, merges, special_tokens=None):
        import regex

        super().__init__(self.DEFAULT_SPECIAL if special_tokens is None else special_tokens)
        self.vocabulary = dict(vocabulary)
        self.merges = [m for m in merges if m and not m.startswith("#version")]
        self._ranks = {}
        for rank, merge in enumerate(self.merges):
            pair = tuple(merge.split(" "))
            if len(pair) != 2:
                raise TokenizerError(f"merges line {rank + 1} is {merge!r}; expected two "
                                     "pieces separated by one space")
            self._ranks[pair] = rank
        self._pieces = {i: piece for piece, i in self.vocabulary.items()}
        self._byte_to_char = _bytes_to_unicode()
        self._char_to_byte = {c: b for b, c in self._byte_to_char.items()}
        self._split = regex.compile(_GPT2_SPLIT)
        specials = sorted(set(self.special_tokens.values()), key=len, reverse=True)
        missing = [t for t in specials if t not in self.vocabulary]
        if missing:
            raise TokenizerError(f"special tokens {missing} are not in the vocabulary")
        self._specials = regex.compile("(" + "|".join(map(regex.escape, specials)) + ")") \
            if specials else None
        self._words = {}  # word -> ids; the same words recur all through a corpus
        self._tf = None

    @property
    def vocab_size(self):
        return max(self.vocabulary.values()) + 1

    def token_to_id(self, token):
        return self.vocabulary.get(token)

    def id_to_token(self, i):
        return self._pieces[int(i)]

    def _encode_one(self, text):
        chunks = self._specials.split(text) if self._specials else [text]
        ids = []
        for k, chunk in enumerate(chunks):
            if k % 2:  # a special token
                ids.append(self.vocabulary[chunk])
                continue
            for word in self._split.findall(chunk):
                if word not in self._words:
                    if len(self._words) > 100_000:
                        self._words.clear()
                    self._words[word] = self._word_ids(word)
                ids.extend(self._words[word])
        return ids

    def _word_ids(self, word):
        parts = [self._byte_to_char[b] for b in word.encode("utf-8")]
        while len(parts) > 1:
            pairs = list(itertools.pairwise(parts))
            best = min(pairs, key=lambda pair: self._ranks.get(pair, len(self._ranks)))
            if best not in self._ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        try:
            return [self.vocabulary[p] for p in parts]
        except KeyError as e:
            raise TokenizerError(f"BPE piece {e.args[0]!r} of {word!r} is not in vocab.json: "
                                 "the vocabulary and merges files do not belong together") from None

    def _decode_one(self, ids):
        data = bytes(self._char_to_byte[c] for i in ids for c in self._pieces[i])
        return data.decode("utf-8", errors="replace")

    def tf_encode(self, texts):
        """tf.string tensor (batch,) -> tf.RaggedTensor of int32 ids (keras-hub's op)."""
        if self._tf is None:
            import keras_hub
            import tensorflow as tf

            with tf.init_scope():  # eagerly, as SentencePieceTokenizer.tf_encode
                layer = keras_hub.tokenizers.BytePairTokenizer(
                    vocabulary=self.vocabulary, merges=self.merges, dtype="int32",
                    unsplittable_tokens=sorted(set(self.special_tokens.values())) or None)
            # In a graph keras-hub returns the ragged tensor (eagerly it
            # converts to Python lists); tf.data traces this function inline.
            self._tf = tf.function(layer.tokenize)
        return self._tf(texts)

    def _files(self):
        vocabulary = json.dumps(self.vocabulary, ensure_ascii=False).encode("utf-8")
        merges = "\n".join(["#version: 0.2", *self.merges]) + "\n"
        return {self.VOCABULARY_FILE: vocabulary, self.MERGES_FILE: merges.encode("utf-8")}

    @classmethod
    def from_files(cls, files, special_tokens=None, **config):
        vocabulary = json.loads(files[cls.VOCABULARY_FILE].decode("utf-8"))
        merges = files[cls.MERGES_FILE].decode("utf-8").splitlines()
        return cls(vocabulary, merges, special_tokens)

    @classmethod
    def from_folder(cls, folder, special_tokens=None):
        """Reads ``vocab.json`` + ``merges.txt`` (a GPT-2 release or Hugging Face
        folder). ``special_tokens`` defaults to GPT-2's end token when the
        vocabulary has it, else none."""
        files = {}
        for name in (cls.VOCABULARY_FILE, cls.MERGES_FILE):
            path = os.path.join(folder, name)
            if not os.path.exists(path):
                raise TokenizerError(f"{folder!r} has no {name} (byte-level BPE needs "
                                     f"{cls.VOCABULARY_FILE} and {cls.MERGES_FILE})")
            with open(path, "rb") as f:
                files[name] = f.read()
        try:
            vocabulary = json.loads(files[cls.VOCABULARY_FILE].decode("utf-8"))
            merges = files[cls.MERGES_FILE].decode("utf-8").splitlines()
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TokenizerError(f"could not read the BPE files in {folder!r}: {e}") from None
        if special_tokens is None:
            special_tokens = {r: t for r, t in cls.DEFAULT_SPECIAL.items() if t in vocabulary}
        return cls(vocabulary, merges, special_tokens)

def _check_text(text):
    if not isinstance(text, str):
        raise TokenizerError(f"expected a string, got {type(text).__name__}: {text!r:.60}")
    return text


def _to_list(ids):
    if hasattr(ids, "tolist"):
        return ids.tolist()
    if hasattr(ids, "numpy"):
        return ids.numpy().tolist()
    return [_to_list(i) if isinstance(i, (list, tuple)) or hasattr(i, "tolist") else i
            for i in ids]


# ---------------------------------------------------------------- WordPiece (BERT)

# tokenization.py's _is_chinese_char ranges: the CJK Unified Ideographs blocks.
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
_CJK_REGEX = "|".join(f"[\\x{{{a:X}}}-\\x{{{b:X}}}]" for a, b in _CJK_RANGES)
# _is_punctuation: every non-alphanumeric printable ASCII character, and Unicode P*.
_PUNCTUATION_REGEX = r"[!-/]|[:-@]|[\[-`]|[{-~]|\p{P}"


@register_tokenizer
class WordPieceTokenizer(Tokenizer):
    """BERT's tokenizer (Devlin et al. 2019; google-research/bert tokenization.py).

    ``vocab.txt`` of the original release: one token per line, the line
    number is the id; subword continuations start with "##"; special tokens
    [PAD] [UNK] [CLS] [SEP] [MASK]. Two steps, as the original's FullTokenizer:

    * BasicTokenizer: drop NUL, U+FFFD and control characters, turn
      whitespace into spaces, put spaces around CJK ideographs, split on
      whitespace; for uncased vocabularies (``lowercase=True``) lower-case
      and strip accents (NFD, drop combining marks Mn); split off every
      punctuation character (ASCII non-alphanumerics and Unicode P*).
    * WordPiece: greedy longest-match-first over the vocabulary; a word with
      no full segmentation, or longer than ``max_chars_per_word`` characters
      (200 in the original, 100 in Hugging Face's BertTokenizer), is [UNK].

    ``encode`` is that algorithm in plain Python (no TensorFlow).
    ``tf_encode`` runs it in ``tf.data``: the BasicTokenizer as TensorFlow
    string ops (``tf.strings.lower`` is Python's ``str.lower``, final sigma
    included) and WordPiece as TensorFlow Text's FastWordpieceTokenizer;
    the tests check both give the same ids on accents, CJK, punctuation,
    control characters and unknown words. ``train`` learns a vocabulary on
    words split by the same BasicTokenizer.
    """

    FILE = "vocab.txt"
    DEFAULT_SPECIAL: ClassVar[dict] = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]",
                                       "sep": "[SEP]", "mask": "[MASK]"}

    def __init__(self, vocabulary, lowercase=True, max_chars_per_word=200,
                 special_tokens=None):
        super().__init__(special_tokens or self.DEFAULT_SPECIAL)
        self.vocabulary = [str(t) for t in vocabulary]
        # load_vocab: a token listed twice keeps its last line number.
        self._ids = {token: i for i, token in enumerate(self.vocabulary)}
        self.lowercase = bool(lowercase)
        self.max_chars_per_word = int(max_chars_per_word)
        missing = [t for t in self.special_tokens.values() if t not in self._ids]
        if missing:
            raise TokenizerError(f"special token(s) {missing} are not in the vocabulary "
                                 f"({len(self.vocabulary)} tokens, first {self.vocabulary[:5]})")
        self._tf = None

    cls_id = property(lambda self: self.special_id("cls"))
    sep_id = property(lambda self: self.special_id("sep"))
    mask_id = property(lambda self: self.special_id("mask"))

    @property
    def vocab_size(self):
        return len(self.vocabulary)

    def token_to_id(self, token):
        return self._ids.get(token)

    def id_to_token(self, i):
        return self.vocabulary[int(i)]

    # ---- Python side (tokenization.py)

    def basic_tokenize(self, text):
        """BasicTokenizer.tokenize: text -> words and punctuation marks."""
        text = _clean_text(_check_text(text))
        text = "".join(f" {c} " if _is_cjk(c) else c for c in text)
        words = []
        for token in text.split():
            if self.lowercase:
                token = _strip_accents(token.lower())
            words.extend(_split_on_punctuation(token))
        return " ".join(words).split()

    def wordpiece(self, word):
        """WordpieceTokenizer.tokenize for one word: greedy longest match first."""
        unk = self.special_tokens["unk"]
        if len(word) > self.max_chars_per_word:
            return [unk]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self._ids:
                    break
                end -= 1
            else:
                return [unk]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text):
        """Text -> WordPiece tokens (strings)."""
        return [p for word in self.basic_tokenize(text) for p in self.wordpiece(word)]

    def _encode_one(self, text):
        return [self._ids[p] for p in self.tokenize(text)]

    def _decode_one(self, ids):
        text = " ".join(self.vocabulary[i] for i in ids)
        return text.replace(" ##", "").strip()

    # ---- TensorFlow side

    def tf_basic_tokenize(self, texts):
        """tf.string (batch,) -> tf.RaggedTensor of words: ``basic_tokenize`` in TF ops."""
        import tensorflow as tf
        import tensorflow_text as tf_text

        x = tf.strings.regex_replace(texts, r"[\t\n\r\p{Zs}]", " ")
        x = tf.strings.regex_replace(x, r"[\x{0}\x{FFFD}\p{Cc}\p{Cf}]", "")
        x = tf.strings.regex_replace(x, _CJK_REGEX, r" \0 ")
        if self.lowercase:
            x = tf.strings.lower(x, encoding="utf-8")
            x = tf.strings.regex_replace(tf_text.normalize_utf8(x, "NFD"), r"\p{Mn}", "")
        # After cleaning, the only characters str.split() still splits on
        # besides the space are the line and paragraph separators.
        return tf_text.regex_split(
            x, delim_regex_pattern=r"[ \x{2028}\x{2029}]|" + _PUNCTUATION_REGEX,
            keep_delim_regex_pattern=_PUNCTUATION_REGEX)

    def tf_encode(self, texts):
        """tf.string tensor (batch,) -> tf.RaggedTensor of int32 ids (same as ``encode``)."""
        import tensorflow as tf

        words = self.tf_basic_tokenize(texts)
        too_long = tf.strings.length(words.flat_values, unit="UTF8_CHAR") \
            > self.max_chars_per_word
        words = words.with_flat_values(
            tf.where(too_long, self.special_tokens["unk"], words.flat_values))
        return self._wordpiece().tokenize(words).merge_dims(-2, -1)

    def _wordpiece(self):
        """TensorFlow Text's FastWordpieceTokenizer over this vocabulary. Its model
        (a flatbuffer) is built once; inside a traced tf.data function it goes
        into the graph as a constant (tf.distribute re-creates dataset graphs
        from their serialized form, which eagerly captured state does not survive)."""
        import tensorflow as tf
        import tensorflow_text as tf_text

        if self._tf is None:
            # A token listed twice keeps its last id (load_vocab); the op wants
            # unique, non-empty tokens, so earlier copies (and empty lines)
            # become strings no word can be: words never hold a space.
            vocab = [t if t and self._ids[t] == i else f"[unmatchable {i}]"
                     for i, t in enumerate(self.vocabulary)]
            with tf.init_scope():  # built once, eagerly
                # Longer words become [UNK] in tf_encode, counted in characters
                # as the original does; the byte limit only lets the rest through.
                self._tf = tf_text.FastWordpieceTokenizer(
                    vocab=vocab, suffix_indicator="##",
                    max_bytes_per_word=4 * self.max_chars_per_word + 4,
                    unknown_token=self.special_tokens["unk"], no_pretokenization=True,
                    token_out_type=tf.int32)
                # (the op keeps its flatbuffer as a uint8 constant, ``_model``)
                self._model_buffer = self._tf._model.numpy().tobytes()
        if tf.executing_eagerly():
            return self._tf
        import numpy as np

        return tf_text.FastWordpieceTokenizer(
            model_buffer=tf.constant(np.frombuffer(self._model_buffer, np.uint8)),
            token_out_type=tf.int32)

    # ---- vocabulary

    @classmethod
    def train(cls, texts, vocab_size, lowercase=True, max_chars_per_word=200,
              min_frequency=2):
        """Learns a vocabulary of at most ``vocab_size`` tokens from an iterable of
        strings, on words split by this class's BasicTokenizer, with the
        WordPiece trainer of Hugging Face ``tokenizers`` (a keras-hub
        dependency; keras-hub's own ``compute_word_piece_vocabulary`` gives
        the same format but took minutes on english_prose). The special
        tokens come first ([PAD] = 0), then single characters, then pieces."""
        import tensorflow as tf
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import models, pre_tokenizers, trainers

        special = list(cls.DEFAULT_SPECIAL.values())
        splitter = cls(special, lowercase=lowercase, max_chars_per_word=max_chars_per_word)
        texts = [t for t in texts if t]
        if not texts:
            raise TokenizerError("cannot train a WordPiece vocabulary on no text")
        words = tf.data.Dataset.from_tensor_slices(texts).batch(256).map(
            lambda t: tf.strings.reduce_join(splitter.tf_basic_tokenize(t), axis=-1,
                                             separator=" "))
        learner = HFTokenizer(models.WordPiece(unk_token=special[1]))
        learner.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=special,
            continuing_subword_prefix="##", show_progress=False)
        learner.train_from_iterator(
            (line.decode("utf-8") for batch in words.as_numpy_iterator() for line in batch),
            trainer)
        by_id = sorted(learner.get_vocab().items(), key=lambda item: item[1])
        return cls([token for token, _ in by_id], lowercase=lowercase,
                   max_chars_per_word=max_chars_per_word)

    def get_config(self):
        return {"lowercase": self.lowercase, "max_chars_per_word": self.max_chars_per_word}

    def _files(self):
        return {self.FILE: ("\n".join(self.vocabulary) + "\n").encode("utf-8")}

    @classmethod
    def from_files(cls, files, special_tokens=None, **config):
        return cls(_read_vocab(files[cls.FILE]), special_tokens=special_tokens, **config)

    @classmethod
    def from_vocab_file(cls, path, lowercase=True, max_chars_per_word=200,
                        special_tokens=None):
        """A tokenizer from a release's ``vocab.txt`` (e.g. uncased_L-12_H-768_A-12)."""
        with open(path, "rb") as f:
            return cls(_read_vocab(f.read()), lowercase, max_chars_per_word, special_tokens)


def _read_vocab(data):
    """load_vocab: one token per line, stripped; the line number is the id."""
    lines = data.decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.strip() for line in lines]


def _clean_text(text):
    """Drops NUL, U+FFFD and control characters; whitespace becomes a space."""
    import unicodedata

    out = []
    for char in text:
        if char in " \t\n\r":
            out.append(" ")
            continue
        category = unicodedata.category(char)
        if char in "\x00\ufffd" or category in ("Cc", "Cf"):
            continue
        out.append(" " if category == "Zs" else char)
    return "".join(out)


def _is_cjk(char):
    cp = ord(char)
    return any(a <= cp <= b for a, b in _CJK_RANGES)


def _strip_accents(text):
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFD", text)
                   if unicodedata.category(c) != "Mn")


def _is_punctuation(char):
    import unicodedata

    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _split_on_punctuation(token):
    words, new_word = [], True
    for char in token:
        if _is_punctuation(char):
            words.append(char)
            new_word = True
        else:
            if new_word:
                words.append("")
            new_word = False
            words[-1] += char
    return words
