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
            return _CLASSES[cls_name].from_files(files, meta.get("special_tokens"),
                                                 **meta.get("config", {}))
        except TokenizerError:
            raise
        except Exception as e:  # a torn or foreign vocabulary file
            raise TokenizerError(f"could not read the {cls_name} in {folder!r}: "
                                 f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                                 ) from e


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
