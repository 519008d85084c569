"""Hugging Face ``MarianMTModel`` folders (Helsinki-NLP/opus-mt-*) -> ``Transformer``.

    model = keras_zoo.Transformer.from_preset("hf:/path/to/opus-mt-en-de")
    model.translate(["Hello world"])          # transformers' beam search rule, 4 beams

Marian is the 2017 post-LN encoder-decoder; what differs from the paper's
model, each read from ``config.json`` / ``generation_config.json`` into a
``Transformer`` option (transformers' ``modeling_marian.py`` is the reference):

* feed-forward ``activation_function`` (opus-mt: ``swish`` = SiLU);
* sinusoidal positions with the sines in the first half of the channels and
  the cosines in the second (``position_layout="halves"``), from position
  0; token embeddings times sqrt(d_model) only if ``scale_embedding``;
* ``final_logits_bias`` added to the tied output projection;
* the padding token (``pad_token_id``, the last id in opus-mt) masks the
  source, starts the decoder (``decoder_start_token_id``) and is never
  generated (``bad_words_ids``); ``</s>`` is id 0;
* LayerNorm epsilon 1e-5 (torch's default), biases on every projection;
* decoding as ``generate``: ``num_beams``, ``length_penalty``,
  ``max_length``, ``forced_eos_token_id`` and transformers' beam search rule
  (``decoding.hf_beam_search``).

One embedding serves source, target and output (``share_encoder_decoder_
embeddings`` and ``tie_word_embeddings``, as every opus-mt model); other
layouts are refused. Tensor names: ``model.shared``, ``model.{encoder,
decoder}.layers.N.{self_attn, encoder_attn}.{q,k,v,out}_proj``,
``*_layer_norm``, ``fc1``, ``fc2``, ``final_logits_bias``; tied copies
(``embed_tokens``, ``lm_head``) and the position tables older files carry
are checked equal and set aside. ``self_attn``'s q, k, v become the fused
``qkv`` kernel; ``encoder_attn``'s k, v the fused ``kv``.

The tokenizer (``MarianTokenizer`` below) is built from the folder's
``source.spm``, ``target.spm`` and ``vocab.json``.
"""

import json
import logging
import os
import re

import numpy as np

from keras_zoo.converters.huggingface import CheckpointTensors, register_importer
from keras_zoo.data.tokenizers import Tokenizer, TokenizerError, register_tokenizer
from keras_zoo.presets import PresetError

log = logging.getLogger("keras_zoo")

# transformers' ACT2FN names -> keras_zoo activations (``layers.activations.get``)
ACTIVATIONS = {"swish": "silu", "silu": "silu", "relu": "relu", "gelu": "gelu",
               "gelu_new": "gelu_approximate", "gelu_pytorch_tanh": "gelu_approximate"}
TOKENIZER_FILES = ("source.spm", "target.spm", "vocab.json")
# BART-era keys of opus-mt configs that transformers' Marian code does not read.
_IGNORED = {"normalize_before": False, "normalize_embedding": False,
            "add_final_layer_norm": False, "static_position_embeddings": True,
            "add_bias_logits": False}


def _generation(folder, config):
    """generation_config.json if present, else the generation keys of config.json
    (older opus-mt folders), with transformers' defaults."""
    path = os.path.join(folder, "generation_config.json")
    if os.path.exists(path):
        from keras_zoo.presets import read_json

        source = read_json(path)
    else:
        source = config
    return {"num_beams": source.get("num_beams", 1),
            "length_penalty": source.get("length_penalty", 1.0),
            "max_length": source.get("max_length", 20),
            "bad_words_ids": source.get("bad_words_ids") or [],
            "forced_eos_token_id": source.get("forced_eos_token_id"),
            "early_stopping": source.get("early_stopping", False)}


def marian_config(folder, config):
    """Transformer constructor arguments from a MarianConfig ``config.json``."""
    activation = config.get("activation_function", "gelu")
    if activation not in ACTIVATIONS:
        raise PresetError(f"{folder!r}: activation_function={activation!r} is not supported; "
                          f"expected one of {sorted(ACTIVATIONS)}")
    for ours, (enc, dec) in (("num_heads", ("encoder_attention_heads",
                                            "decoder_attention_heads")),
                             ("mlp_dim", ("encoder_ffn_dim", "decoder_ffn_dim"))):
        if config.get(enc, 16) != config.get(dec, 16):
            raise PresetError(f"{folder!r}: {enc}={config.get(enc)} differs from {dec}="
                              f"{config.get(dec)}; the Transformer has one {ours}")
    vocab = config.get("vocab_size", 58101)
    if config.get("decoder_vocab_size") not in (None, vocab) or \
            not config.get("share_encoder_decoder_embeddings", True):
        raise PresetError(f"{folder!r}: separate source and target vocabularies "
                          "(share_encoder_decoder_embeddings=false or decoder_vocab_size="
                          f"{config.get('decoder_vocab_size')}) are not supported; the "
                          "Transformer shares one embedding")
    for key, expected in _IGNORED.items():
        if key in config and config[key] != expected:
            log.warning("%s: %s=%r is ignored, as transformers' MarianMTModel ignores it",
                        folder, key, config[key])
    eos = config.get("eos_token_id", 0)
    if isinstance(eos, list):
        if len(eos) != 1:
            raise PresetError(f"{folder!r}: eos_token_id={eos}; one end token is supported")
        eos = eos[0]
    pad = config.get("pad_token_id", vocab - 1)
    gen = _generation(folder, config)
    suppress = []
    for words in gen["bad_words_ids"]:
        if len(words) != 1:
            raise PresetError(f"{folder!r}: bad_words_ids entry {words} has several tokens; "
                              "only single banned tokens are supported")
        suppress.append(int(words[0]))
    if gen["early_stopping"] is not False:
        log.warning("%s: early_stopping=%r; keras_zoo decodes with transformers' default "
                    "(False) rule", folder, gen["early_stopping"])
    positions = config.get("max_position_embeddings", 1024)
    return {
        "vocab_size": vocab,
        "hidden_dim": config.get("d_model", 1024),
        "num_encoder_layers": config.get("encoder_layers", 12),
        "num_decoder_layers": config.get("decoder_layers", 12),
        "num_heads": config.get("encoder_attention_heads", 16),
        "mlp_dim": config.get("encoder_ffn_dim", 4096),
        "dropout": config.get("dropout", 0.1),
        "attention_dropout": config.get("attention_dropout", 0.0),
        "activation_dropout": config.get("activation_dropout", 0.0),
        "label_smoothing": 0.1,
        "norm_first": False,
        "max_source_length": positions,
        "max_target_length": positions,
        "layer_norm_epsilon": 1e-5,  # torch nn.LayerNorm's default; Marian does not set it
        "activation": ACTIVATIONS[activation],
        "pad_id": pad,
        "scale_embedding": bool(config.get("scale_embedding", False)),
        "position_layout": "halves",
        "final_logits_bias": True,
        "decoder_start_id": config.get("decoder_start_token_id", pad),
        "end_id": eos,
        "suppress_ids": suppress,
        "num_beams": gen["num_beams"],
        "length_penalty": gen["length_penalty"],
        "beam_search": "huggingface",
        "force_end": gen["forced_eos_token_id"] == eos,
        "max_decode_length": max(1, min(gen["max_length"], positions) - 1),
    }


@register_importer("MarianMTModel")
def import_marian(folder, config, tensors, overrides, load_weights):
    from keras_zoo import presets
    from keras_zoo.models.transformer import Transformer

    presets.check_overrides(Transformer, overrides)  # a misspelt option: one line
    kwargs = marian_config(folder, config)
    tokenizer = _tokenizer(folder, config, kwargs)
    model = Transformer(**{**kwargs, **overrides})
    if tokenizer is not None:
        model.tokenizer = tokenizer
    if load_weights:
        load_marian_weights(model, tensors, f"Hugging Face Marian checkpoint {folder!r}")
    return model


def load_marian_weights(model, tensors, source):
    """Places every tensor of a MarianMTModel state dict into ``model`` once."""
    names = CheckpointTensors(tensors, source)
    parts = model._parts
    shared = ("model.shared.weight", "model.encoder.embed_tokens.weight",
              "model.decoder.embed_tokens.weight")
    names.assign(parts["embedding"].embeddings, shared)
    table = next((tensors[n] for n in shared if n in tensors), None)
    for copy in shared[1:] + ("lm_head.weight",):
        if copy in tensors and copy not in names.taken:
            value = names.take(copy)
            if table is not None and not np.array_equal(value, table):
                raise PresetError(f"cannot import {source}: {copy} differs from "
                                  f"{shared[0]}; the Transformer ties the source, target and "
                                  "output embeddings (tie_word_embeddings)")
    for side in ("encoder", "decoder"):
        name = f"model.{side}.embed_positions.weight"
        if name in tensors:
            value = names.take(name)
            expected = parts["positions"].table[0, :value.shape[0]]
            if value.shape[1:] != expected.shape[1:] or not np.allclose(
                    value[:len(expected)], expected, atol=1e-4):
                raise PresetError(f"cannot import {source}: {name} is not Marian's "
                                  "sinusoidal table (sines, then cosines)")
    bias = parts["logits_bias"]
    if "final_logits_bias" in tensors:
        names.assign(bias.bias, "final_logits_bias", lambda b: np.reshape(b, (-1,)))
    else:  # transformers loads a missing bias as zeros
        bias.bias.assign(np.zeros(bias.bias.shape, bias.bias.dtype))
        names.assigned.add(id(bias.bias))

    def linear(dense, prefix):
        names.assign(dense.kernel, prefix + ".weight", np.transpose)
        names.assign(dense.bias, prefix + ".bias")

    def fused(dense, prefix, projections):
        weights = [tensors.get(f"{prefix}.{p}_proj.weight") for p in projections]
        biases = [tensors.get(f"{prefix}.{p}_proj.bias") for p in projections]
        for p in projections:
            names.take(f"{prefix}.{p}_proj.weight")
            names.take(f"{prefix}.{p}_proj.bias")
        if any(w is None for w in weights + biases):
            return
        _place(names, dense.kernel, np.concatenate([w.T for w in weights], axis=1),
               f"{prefix}.{'/'.join(projections)}_proj.weight")
        _place(names, dense.bias, np.concatenate(biases), f"{prefix}.{'/'.join(projections)}"
               "_proj.bias")

    def norm(layer, prefix):
        names.assign(layer.gamma, prefix + ".weight")
        names.assign(layer.beta, prefix + ".bias")

    for i, block in enumerate(parts["encoder"]):
        p = f"model.encoder.layers.{i}."
        fused(block.attention.qkv, p + "self_attn", "qkv")
        linear(block.attention.out, p + "self_attn.out_proj")
        norm(block.attention_norm, p + "self_attn_layer_norm")
        linear(block.mlp.fc1, p + "fc1")
        linear(block.mlp.fc2, p + "fc2")
        norm(block.mlp_norm, p + "final_layer_norm")
    for i, block in enumerate(parts["decoder"]):
        p = f"model.decoder.layers.{i}."
        fused(block.self_attention.qkv, p + "self_attn", "qkv")
        linear(block.self_attention.out, p + "self_attn.out_proj")
        norm(block.self_attention_norm, p + "self_attn_layer_norm")
        linear(block.cross_attention.q, p + "encoder_attn.q_proj")
        fused(block.cross_attention.kv, p + "encoder_attn", "kv")
        linear(block.cross_attention.out, p + "encoder_attn.out_proj")
        norm(block.cross_attention_norm, p + "encoder_attn_layer_norm")
        linear(block.mlp.fc1, p + "fc1")
        linear(block.mlp.fc2, p + "fc2")
        norm(block.mlp_norm, p + "final_layer_norm")
    names.finish(model)


def _place(names, variable, value, label):
    if tuple(value.shape) != tuple(variable.shape):
        names.misshapen.append(f"{label} {tuple(value.shape)} for {variable.path} "
                               f"{tuple(variable.shape)}")
        return
    variable.assign(value.astype(variable.dtype))
    names.assigned.add(id(variable))


# ---------------------------------------------------------------- tokenizer

def _tokenizer(folder, config, kwargs):
    """The folder's MarianTokenizer, or None when it has none of its files."""
    present = [n for n in TOKENIZER_FILES if os.path.exists(os.path.join(folder, n))]
    if not present:
        log.info("%s has no source.spm/target.spm/vocab.json: the model takes token ids",
                 folder)
        return None
    missing = [n for n in TOKENIZER_FILES if n not in present]
    if missing:
        raise PresetError(f"{folder!r} has {', '.join(present)} but no {', '.join(missing)}: "
                          "a Marian tokenizer needs source.spm, target.spm and vocab.json")
    settings = {}
    path = os.path.join(folder, "tokenizer_config.json")
    if os.path.exists(path):
        from keras_zoo.presets import read_json

        settings = read_json(path)
    if settings.get("separate_vocabs") or os.path.exists(os.path.join(folder,
                                                                      "target_vocab.json")):
        raise PresetError(f"{folder!r}: a Marian tokenizer with separate source/target "
                          "vocabularies (target_vocab.json) is not supported")
    files = {}
    for name in TOKENIZER_FILES:
        with open(os.path.join(folder, name), "rb") as f:
            files[name] = f.read()
    special = {"pad": _token(settings.get("pad_token"), "<pad>"),
               "unk": _token(settings.get("unk_token"), "<unk>"),
               "end": _token(settings.get("eos_token"), "</s>")}
    try:
        tokenizer = MarianTokenizer.from_files(
            files, special, clean_up_spaces=bool(settings.get("clean_up_tokenization_spaces")))
    except TokenizerError as e:
        raise PresetError(f"{folder!r}: {e}") from None
    if tokenizer.vocab_size != kwargs["vocab_size"]:
        raise PresetError(f"{folder!r}: vocab.json has {tokenizer.vocab_size} tokens but "
                          f"config.json's vocab_size is {kwargs['vocab_size']}")
    for role, key in (("pad", "pad_id"), ("end", "end_id")):
        if tokenizer.special_id(role) != kwargs[key]:
            raise PresetError(f"{folder!r}: vocab.json gives {special[role]!r} id "
                              f"{tokenizer.special_id(role)} but config.json's "
                              f"{'pad' if role == 'pad' else 'eos'}_token_id is {kwargs[key]}")
    start = tokenizer.id_to_token(kwargs["decoder_start_id"])
    tokenizer.special_tokens["start"] = start
    return tokenizer


def _token(value, default):
    """A special token as tokenizer_config.json writes it (a string or an AddedToken dict)."""
    if isinstance(value, dict):
        value = value.get("content")
    return value or default


@register_tokenizer
class MarianTokenizer(Tokenizer):
    """Marian's tokenizer (transformers' ``MarianTokenizer``) from its plain files:
    ``source.spm`` splits source text into SentencePiece pieces, the shared
    ``vocab.json`` gives their ids (pieces it lacks -> ``<unk>``), and
    ``target.spm`` joins target pieces back into text. A leading language code
    (``>>deu<<``, multilingual opus-mt models) is one token. ``encode`` adds no
    ``</s>`` (``Transformer.translate`` appends it, as MarianTokenizer does).
    ``tf_encode`` runs the same Python code in tf.data (``tf.py_function``).
    Special tokens written in a text (``</s>``) become their ids, as there.
    """

    FILES = TOKENIZER_FILES
    DEFAULT_SPECIAL = {"pad": "<pad>", "unk": "<unk>", "end": "</s>", "start": "<pad>"}

    def __init__(self, source_proto, target_proto, vocabulary, special_tokens=None,
                 clean_up_spaces=False):
        import sentencepiece

        super().__init__(special_tokens or self.DEFAULT_SPECIAL)
        self.source_proto, self.target_proto = bytes(source_proto), bytes(target_proto)
        self.vocabulary = dict(vocabulary)
        self.clean_up_spaces = bool(clean_up_spaces)
        ids = sorted(self.vocabulary.values())
        if ids != list(range(len(ids))):
            raise TokenizerError("vocab.json's ids are not 0..N-1, each once")
        for role in ("unk", "end", "pad"):
            token = self.special_tokens.get(role)
            if token is not None and token not in self.vocabulary:
                raise TokenizerError(f"vocab.json has no {role} token {token!r}")
        self._tokens = {i: t for t, i in self.vocabulary.items()}
        self._special_set = {t for t in self.special_tokens.values() if t in self.vocabulary}
        self._special_split = re.compile(
            "(" + "|".join(re.escape(t) for t in sorted(self._special_set, key=len,
                                                        reverse=True)) + ")")
        self._source = sentencepiece.SentencePieceProcessor(model_proto=self.source_proto)
        self._target = sentencepiece.SentencePieceProcessor(model_proto=self.target_proto)

    @property
    def vocab_size(self):
        return len(self.vocabulary)

    def token_to_id(self, token):
        return self.vocabulary.get(token)

    def id_to_token(self, i):
        return self._tokens.get(int(i))

    def _encode_one(self, text):
        ids = []
        # Special tokens written in the text are their ids, as transformers splits them out.
        for chunk in self._special_split.split(text):
            if chunk in self._special_set:
                ids.append(self.vocabulary[chunk])
            elif chunk:
                ids += self._encode_chunk(chunk)
        return ids

    def _encode_chunk(self, text):
        code = []
        if text.startswith(">>") and (end := text.find("<<")) != -1:
            code, text = [text[:end + 2]], text[end + 2:]
        unk = self.unk_id
        pieces = code + self._source.encode(text, out_type=str)
        return [self.vocabulary.get(p, unk) for p in pieces]

    def _decode_one(self, ids):
        special = {self.special_tokens[r] for r in self.special_tokens}
        text, pieces = "", []
        for token in (self._tokens[i] for i in ids):
            if token in special:  # as MarianTokenizer.convert_tokens_to_string
                text += self._target.decode_pieces(pieces) + token + " "
                pieces = []
            else:
                pieces.append(token)
        text = (text + self._target.decode_pieces(pieces)).replace("\u2581", " ").strip()
        if self.clean_up_spaces:
            for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","),
                                  (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"),
                                  (" 've", "'ve"), (" 're", "'re")):
                text = text.replace(before, after)
        return text

    def tf_encode(self, texts):
        import tensorflow as tf

        def encode(batch):
            ids = [self._encode_one(t.decode("utf-8")) for t in batch.numpy()]
            return (np.asarray([i for row in ids for i in row], "int32"),
                    np.asarray([len(row) for row in ids], "int64"))

        values, lengths = tf.py_function(encode, [texts], (tf.int32, tf.int64))
        values.set_shape([None])
        lengths.set_shape([None])
        return tf.RaggedTensor.from_row_lengths(values, lengths)

    def get_config(self):
        return {"clean_up_spaces": self.clean_up_spaces}

    def _files(self):
        return {"source.spm": self.source_proto, "target.spm": self.target_proto,
                "vocab.json": json.dumps(self.vocabulary, ensure_ascii=False).encode("utf-8")}

    @classmethod
    def from_files(cls, files, special_tokens=None, **config):
        try:
            vocabulary = json.loads(files["vocab.json"].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TokenizerError(f"vocab.json is not JSON: {e}") from None
        if not isinstance(vocabulary, dict) or not all(
                isinstance(i, int) for i in vocabulary.values()):
            raise TokenizerError("vocab.json must map each piece to an integer id")
        try:
            return cls(files["source.spm"], files["target.spm"], vocabulary, special_tokens,
                       **config)
        except RuntimeError as e:  # sentencepiece's error for a torn model file
            raise TokenizerError(f"source.spm/target.spm is not a SentencePiece model: "
                                 f"{str(e).splitlines()[0]}") from None
