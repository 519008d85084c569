"""The Transformer (Vaswani et al. 2017, "Attention Is All You Need"): an
encoder-decoder for translation, with beam search and BLEU.

    model = keras_zoo.Transformer.from_preset("runs/en_de/best")
    model.translate(["File not found"], beam_size=4)      # -> ["Datei nicht gefunden"]

Figure 1 of the paper, box by box: one ``TokenEmbedding`` shared by source,
target and the pre-softmax projection (scaled by sqrt(d_model));
``SinusoidalPositionEmbedding``; dropout on their sum; N
``TransformerEncoderBlock`` (post-LN) and N ``TransformerDecoderBlock``
(causal self-attention, cross-attention, feed-forward); logits =
decoder output @ embedding^T. Training: teacher forcing, label-smoothed
cross-entropy over real (non-padding) target tokens, Adam(0.9, 0.98, 1e-9)
and the inverse-square-root schedule (``experiments/configs/translation_*``).
Decoding: greedy or beam search with length penalty over a key/value cache
(``keras_zoo.models.decoding``), one decoder step per token.
"""

import logging
import math

import keras
import numpy as np
from keras import layers, ops

from keras_zoo.layers.embeddings import SinusoidalPositionEmbedding, TokenEmbedding
from keras_zoo.layers.normalization import LayerNormalization
from keras_zoo.layers.transformer import TransformerDecoderBlock, TransformerEncoderBlock
from keras_zoo.models import decoding
from keras_zoo.models.base import ZooModel, counted, signature_model
from keras_zoo.models.text_data import TextData
from keras_zoo.presets import register_family, register_preset

log = logging.getLogger("keras_zoo")

# Length buckets (subwords): ratio ~1.5 between neighbours keeps ~80 % of a batch real
# tokens; each is one static shape (one XLA program).
BUCKETS = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


@register_family
@keras.saving.register_keras_serializable(package="keras_zoo")
class Transformer(TextData, ZooModel):
    """Encoder-decoder Transformer. ``transformer_base``: d_model 512, 6 + 6
    layers, 8 heads, d_ff 2048, dropout 0.1, label smoothing 0.1 (Table 3).

    Inputs: ``{"source_ids": (B, S), "target_ids": (B, T)}`` with 0 = padding;
    ``target_ids`` is the decoder input (start token, then the target shifted
    right). Output: logits (B, T, vocab_size), float32.
    Initialisation as tensor2tensor (``weight_init="tensor2tensor"`` of
    ``keras_zoo.layers.initializers``: uniform fan_avg per (D, D) projection
    matrix, the fused qkv / kv kernels included; embeddings N(0, D^-0.5)).
    ``attention_bias``: biases on the q/k/v/output projections. tensor2tensor
    has none (``transformer_base`` / ``transformer_big`` set False:
    63,045,632 parameters); the default True keeps older presets loading.
    ``model.tokenizer`` (a shared source/target subword vocabulary) turns
    strings into ids; ``translate`` takes and returns strings.
    """

    def __init__(self, vocab_size=37000, hidden_dim=512, num_encoder_layers=6,
                 num_decoder_layers=6, num_heads=8, mlp_dim=2048, dropout=0.1,
                 attention_dropout=0.0, activation_dropout=0.0, label_smoothing=0.1,
                 norm_first=False, max_source_length=256, max_target_length=256,
                 layer_norm_epsilon=1e-6, attention_bias=True, name="transformer", **kwargs):
        for key, value in (("vocab_size", vocab_size), ("hidden_dim", hidden_dim),
                           ("num_encoder_layers", num_encoder_layers),
                           ("num_decoder_layers", num_decoder_layers),
                           ("num_heads", num_heads), ("mlp_dim", mlp_dim),
                           ("max_source_length", max_source_length),
                           ("max_target_length", max_target_length)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Transformer {key} must be a positive integer, got {value!r}")
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim={hidden_dim} is not divisible by num_heads={num_heads}")
        if hidden_dim % 2:
            raise ValueError(f"hidden_dim={hidden_dim} must be even (sinusoidal positions)")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        block = {"num_heads": num_heads, "mlp_dim": mlp_dim, "dropout": dropout,
                     "attention_dropout": attention_dropout, "activation": "relu",
                     "norm_first": norm_first, "layer_norm_epsilon": layer_norm_epsilon,
                     "activation_dropout": activation_dropout,
                     "attention_bias": attention_bias, "weight_init": "tensor2tensor"}
        embedding = TokenEmbedding(vocab_size, hidden_dim, scale=math.sqrt(hidden_dim),
                                   initializer_stddev=hidden_dim ** -0.5, name="embedding")
        positions = SinusoidalPositionEmbedding(
            max_length=max(max_source_length, max_target_length) + 1, name="positions")
        source_dropout = layers.Dropout(dropout, name="source_dropout")
        target_dropout = layers.Dropout(dropout, name="target_dropout")
        encoder = [TransformerEncoderBlock(**block, name=f"encoder_block_{i}")
                   for i in range(num_encoder_layers)]
        decoder = [TransformerDecoderBlock(**block, name=f"decoder_block_{i}")
                   for i in range(num_decoder_layers)]
        # Pre-LN stacks end with a norm (their blocks leave the residual stream
        # un-normalised); post-LN blocks already end in one.
        encoder_norm = LayerNormalization(epsilon=layer_norm_epsilon, name="encoder_norm") \
            if norm_first else None
        decoder_norm = LayerNormalization(epsilon=layer_norm_epsilon, name="decoder_norm") \
            if norm_first else None

        source_ids = keras.Input((None,), dtype="int32", name="source_ids")
        target_ids = keras.Input((None,), dtype="int32", name="target_ids")
        source_mask = ops.not_equal(source_ids, 0)
        x = source_dropout(positions(embedding(source_ids)))
        for blk in encoder:
            x = blk(x, attention_mask=source_mask)
        memory = encoder_norm(x) if encoder_norm else x
        y = target_dropout(positions(embedding(target_ids)))
        for blk in decoder:
            y = blk(y, memory, memory_mask=source_mask)
        if decoder_norm:
            y = decoder_norm(y)
        logits = embedding(y, reverse=True)
        super().__init__(inputs={"source_ids": source_ids, "target_ids": target_ids},
                         outputs=logits, name=name, **kwargs)
        vars(self)["_parts"] = {"embedding": embedding, "positions": positions, "encoder": encoder,
                                    "decoder": decoder, "encoder_norm": encoder_norm,
                                    "decoder_norm": decoder_norm}

    tokenizer_hint = "; translate_ids() takes token ids without one"

    # ---- the two halves, used by decoding and by the exported signatures

    def encode(self, source_ids):
        """(B, S) ids -> (memory (B, S, D), cross-attention caches stacked
        (B, decoder_layers, 2, heads, S, head_dim), source mask (B, S) bool)."""
        p = self._parts
        mask = ops.not_equal(source_ids, 0)
        x = p["positions"](p["embedding"](source_ids))
        for blk in p["encoder"]:
            x = blk(x, attention_mask=mask, training=False)
        if p["encoder_norm"]:
            x = p["encoder_norm"](x)
        cross = ops.stack([blk.cross_attention.cross_attention_cache(x)
                           for blk in p["decoder"]], axis=1)
        return x, cross, mask

    def init_cache(self, batch_size, max_length):
        """Empty decoder self-attention cache (B, layers, 2, heads, max_length, head_dim)."""
        c = self.get_zoo_config()
        head_dim = c["hidden_dim"] // c["num_heads"]
        return ops.zeros((batch_size, c["num_decoder_layers"], 2, c["num_heads"], max_length,
                          head_dim), dtype=self.compute_dtype)

    def decode_step(self, token_ids, cache, index, cross_cache, source_mask):
        """Logits (B, t, vocab) of decoder inputs ``token_ids`` (B, t) at
        positions ``index..`` given the caches; returns (logits, new cache)."""
        p = self._parts
        y = p["positions"](p["embedding"](token_ids), index=index)
        new = []
        for i, blk in enumerate(p["decoder"]):
            y, layer_cache = blk(y, memory_mask=source_mask, cache=cache[:, i],
                                 cache_index=index, cross_cache=cross_cache[:, i],
                                 training=False)
            new.append(layer_cache)
        if p["decoder_norm"]:
            y = p["decoder_norm"](y)
        return p["embedding"](y, reverse=True), ops.stack(new, axis=1)

    # ---- translation

    def translate(self, texts, beam_size=4, max_length=None, alpha=0.6, batch_size=32):
        """Translates strings; returns strings. ``beam_size=1`` is greedy.

        Sources longer than ``max_source_length - 1`` subwords are cut
        (with a warning); an empty string translates to an empty string.
        ``max_length``: most target subwords (default: each source's own
        length + 50 as in the paper, capped at ``max_target_length``).
        """
        tokenizer = self._require_tokenizer("translate() on strings")
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        ids = self._source_ids(tokenizer.encode(texts))
        out = self.translate_ids(ids, beam_size, max_length, alpha, batch_size)
        result = [tokenizer.decode(o) if src else "" for o, src in zip(out, texts)]
        return result[0] if single else result

    def _source_ids(self, ids):
        limit = self.get_zoo_config()["max_source_length"] - 1
        long = sum(len(i) > limit for i in ids)
        if long:
            log.warning("%d source(s) longer than %d subwords were cut to fit "
                        "max_source_length=%d", long, limit, limit + 1)
        end = self.tokenizer.end_id
        return [i[:limit] + [end] for i in ids]

    def translate_ids(self, source_ids, beam_size=4, max_length=None, alpha=0.6,
                      batch_size=32):
        """Token-id version of ``translate``: lists of source ids (ending in
        the end token) -> lists of target ids (without start/end tokens)."""
        c = self.get_zoo_config()
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        start, end = self._special_ids()
        vocab = c["vocab_size"]
        for row in source_ids:
            bad = [t for t in row if not 0 <= t < vocab]
            if bad:
                raise ValueError(f"source token ids {bad[:5]} are outside the vocabulary "
                                 f"(0..{vocab - 1})")
            if len(row) > c["max_source_length"]:
                raise ValueError(f"a source of {len(row)} tokens passes max_source_length="
                                 f"{c['max_source_length']}")
        order = sorted(range(len(source_ids)), key=lambda i: len(source_ids[i]))
        out = [None] * len(source_ids)
        encode, step = self._compiled()
        for first in range(0, len(order), batch_size):
            rows = order[first:first + batch_size]
            width = _bucket(max(len(source_ids[r]) for r in rows), c["max_source_length"])
            src = np.zeros((len(rows), width), np.int32)
            for j, r in enumerate(rows):
                src[j, :len(source_ids[r])] = source_ids[r]
            # each sentence its own limit (as export/translate.py's host loop)
            limits = [decoding.target_limit(len(source_ids[r]), c["max_target_length"],
                                            max_length) for r in rows]
            limit = max(limits)
            _, cross, mask = encode(ops.convert_to_tensor(src))
            if beam_size == 1:
                cache = self.init_cache(len(rows), limit)
                result = decoding.greedy_search(
                    lambda t, cc, i, cross=cross, mask=mask: step(t, cc, i, cross, mask), cache,
                    [start] * len(rows), limits, end)
            else:
                rep = ops.convert_to_tensor(np.repeat(np.arange(len(rows)), beam_size))
                cross_k, mask_k = ops.take(cross, rep, axis=0), ops.take(mask, rep, axis=0)
                cache = self.init_cache(len(rows) * beam_size, limit)
                result, _ = decoding.beam_search(
                    lambda t, cc, i, cross=cross_k, mask=mask_k: step(t, cc, i, cross, mask),
                    cache,
                    [start] * len(rows), limits, end, beam_size=beam_size, alpha=alpha)
            for j, r in enumerate(rows):
                out[r] = result[j]
        return out

    def _special_ids(self):
        t = self.tokenizer
        if t is None:  # the SentencePiece convention used for every preset trained here
            return 2, 3
        return t.start_id, t.end_id

    def _compiled(self):
        """(encode, step) compiled once; the step's position goes in as a
        tensor, so one trace serves every position."""
        if "_zoo_compiled" not in vars(self):
            step = decoding.compiled(self, self.decode_step)

            def run_step(token, cache, index, cross, mask):
                return step(ops.convert_to_tensor(token, "int32"), cache,
                            ops.convert_to_tensor(index, "int32"), cross, mask)

            vars(self)["_zoo_compiled"] = (decoding.compiled(self, self.encode), run_step)
        return vars(self)["_zoo_compiled"]

    # ---- training objective

    def compile_defaults(self):
        """Label-smoothed cross-entropy averaged over real target tokens (the
        data hook gives padding weight 0), token accuracy as the metric."""
        return {"loss": LabelSmoothedCrossentropy(self.get_zoo_config()["label_smoothing"]),
                "metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]}

    # ---- data (the trainer's hooks)

    def data_task(self):
        from keras_zoo.data import text

        return text.TRANSLATION

    def synthetic_examples(self, n, rng):
        """Random id pairs of the longest shape (dry runs at the real shapes)."""
        c = self.get_zoo_config()
        source = rng.integers(4, c["vocab_size"], (n, c["max_source_length"] - 1), np.int32)
        target = rng.integers(4, c["vocab_size"], (n, c["max_target_length"] - 1), np.int32)
        return {"source_ids": source, "target_ids": target}, "translation", {}

    def prepare_data(self, examples, info, work_dir=None):
        """Trains the shared source/target SentencePiece vocabulary on the
        training split when the model has none (kept in work_dir/tokenizer for
        resumed runs), then counts the batches of a pass (exact: each length
        bucket holds the same sentences every pass)."""
        from keras_zoo.data.tokenizers import SentencePieceTokenizer

        if "source_ids" in examples.element_spec:
            lengths = [(len(e["source_ids"]) + 1, len(e["target_ids"]) + 1)
                       for e in examples.as_numpy_iterator()]
        else:
            pairs = [(e["source"].decode(), e["target"].decode())
                     for e in examples.as_numpy_iterator()]
            self.run_tokenizer(work_dir, lambda: SentencePieceTokenizer.train(
                [t for pair in pairs for t in pair],
                vocab_size=self.get_zoo_config()["vocab_size"]))
            src = self.tokenizer.encode([s for s, _ in pairs])
            tgt = self.tokenizer.encode([t for _, t in pairs])
            lengths = [(len(s) + 1, len(t) + 1) for s, t in zip(src, tgt)]
        vars(self)["_zoo_lengths"] = lengths

    def _buckets(self, batch_size):
        """(boundaries, batch size per bucket): constant tokens per batch, the
        longest bucket holding ``batch_size`` sentences."""
        c = self.get_zoo_config()
        longest = max(c["max_source_length"], c["max_target_length"])
        bounds = [b for b in BUCKETS if b < longest] + [longest]
        return bounds, [batch_size * max(1, longest // b) for b in bounds]

    def steps_per_pass(self, info, batch_size):
        lengths = vars(self).get("_zoo_lengths")
        if not lengths:
            return None
        c = self.get_zoo_config()
        bounds, sizes = self._buckets(batch_size)
        counts = [0] * len(bounds)
        for s, t in lengths:
            if s <= c["max_source_length"] and t <= c["max_target_length"]:
                counts[next(i for i, b in enumerate(bounds) if max(s, t) <= b)] += 1
        return sum(n // size for n, size in zip(counts, sizes)) or None

    def batch_data(self, examples, info, batch_size, training):
        """Tokenized pairs -> length buckets padded to static shapes.

        x = {"source_ids": src + </s>, "target_ids": <s> + tgt}, y = tgt + </s>,
        sample weight = 1 on real target tokens. Training drops pairs longer
        than the maximum lengths and the partial batch of each bucket;
        evaluation keeps every pair (cut to the maximum lengths) and pads
        partial batches with weight-0 rows."""
        import tensorflow as tf

        c = self.get_zoo_config()
        max_src, max_tgt = c["max_source_length"], c["max_target_length"]
        start, end = self._special_ids()
        if "source_ids" in examples.element_spec:
            ids = examples.map(lambda e: (tf.cast(e["source_ids"], tf.int32),
                                          tf.cast(e["target_ids"], tf.int32)))
        else:
            tokenizer = self._require_tokenizer("training on text")

            def tokenize(batch):
                return (tokenizer.tf_encode(batch["source"]),
                        tokenizer.tf_encode(batch["target"]))

            ids = examples.batch(1024).map(tokenize).unbatch()

        def frame(src, tgt):
            src = tf.concat([src[:max_src - 1], [end]], 0)
            tgt = tgt[:max_tgt - 1]
            return {"source_ids": src, "target_ids": tf.concat([[start], tgt], 0)}, \
                tf.concat([tgt, [end]], 0)

        if training:
            ids = ids.filter(lambda s, t: tf.logical_and(tf.size(s) < max_src,
                                                         tf.size(t) < max_tgt))
        pairs = ids.map(frame).map(lambda x, y: (x, y, tf.ones_like(y, tf.float32)))
        bounds, sizes = self._buckets(batch_size)

        def length(x, y, w):
            return tf.maximum(tf.size(x["source_ids"]), tf.size(y))

        batched = pairs.bucket_by_sequence_length(
            length, bucket_boundaries=[b + 1 for b in bounds[:-1]],
            bucket_batch_sizes=sizes, pad_to_bucket_boundary=False,
            drop_remainder=training)
        batched = batched.map(lambda x, y, w: _pad_batch(x, y, w, bounds, sizes))
        # bucketing leaves the length unknown: evaluation passes carry theirs
        # (base.counted: Keras' evaluate() misreports metrics otherwise)
        return batched if training else counted(batched)

    def evaluation_callbacks(self, examples, info, batch_size):
        return [BleuLog(self, examples)]

    # ---- export: the encoder and one decoder step, static shapes, builtins only

    # the rows of a ``decode`` call share one position (``index``): they
    # decode in lockstep; export verification runs Keras at the exported batch
    lockstep_signatures = ("decode",)

    def serving_signatures(self):
        """``encode``: source ids (max_source_length,) -> cross-attention
        caches + source mask; ``decode``: one target token, its position, the
        self-attention cache (max_target_length) and the encoder's outputs ->
        logits + the updated cache. ``export/translate.py`` runs them."""
        c = self.get_zoo_config()
        s, t = c["max_source_length"], c["max_target_length"]
        layers_, heads = c["num_decoder_layers"], c["num_heads"]
        head_dim = c["hidden_dim"] // heads
        owned = [layer for layer in self.layers if layer.weights]
        source = keras.Input((s,), dtype="int32", name="source_ids")

        def encode(source_ids):
            _, cross, mask = self.encode(source_ids)
            return {"cross_cache": cross, "source_mask": ops.cast(mask, "float32")}

        def decode(args):
            token, index, cache, cross, mask = args
            logits, cache = self.decode_step(token, cache, index[0], cross,
                                             ops.cast(mask, "bool"))
            return {"logits": logits[:, 0], "cache": cache}

        inputs = [keras.Input((1,), dtype="int32", name="token_id"),
                  keras.Input((), dtype="int32", name="index"),
                  keras.Input((layers_, 2, heads, t, head_dim), name="cache"),
                  keras.Input((layers_, 2, heads, s, head_dim), name="cross_cache"),
                  keras.Input((s,), name="source_mask")]
        return {"encode": signature_model(source, encode, owned, "encode"),
                "decode": signature_model(inputs, decode, owned, "decode")}


def _bucket(length, limit):
    return min(next((b for b in BUCKETS if b >= length), limit), limit)


def _pad_batch(x, y, w, bounds, sizes):
    """Pads a bucket's batch to the bucket's static (batch, length) shape."""
    import tensorflow as tf

    longest = tf.maximum(tf.shape(x["source_ids"])[1], tf.shape(y)[1])
    bounds_t = tf.constant(bounds)
    bucket = tf.reduce_min(tf.where(bounds_t >= longest))
    width, rows = tf.gather(bounds_t, bucket), tf.gather(tf.constant(sizes), bucket)

    def pad(t):
        return tf.pad(t, [[0, rows - tf.shape(t)[0]], [0, width - tf.shape(t)[1]]])

    return ({"source_ids": pad(x["source_ids"]), "target_ids": pad(x["target_ids"])},
            pad(y), pad(w))


@keras.saving.register_keras_serializable(package="keras_zoo")
class LabelSmoothedCrossentropy(keras.losses.Loss):
    """Cross-entropy against the smoothed target distribution: 1 - eps on the
    reference token, eps / (vocab - 1) on every other (tensor2tensor's
    ``smoothing_cross_entropy``, as the paper's eps_ls = 0.1). Averaged over
    the sample weights (real target tokens) of the batch."""

    def __init__(self, label_smoothing=0.1, name="label_smoothed_crossentropy",
                 reduction="mean_with_sample_weight", **kwargs):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        vocab = ops.shape(logits)[-1]
        log_probs = logits - ops.logsumexp(logits, axis=-1, keepdims=True)
        target = ops.take_along_axis(log_probs, ops.cast(y_true, "int32")[..., None],
                                     axis=-1)[..., 0]
        if not self.label_smoothing:
            return -target
        confidence = 1.0 - self.label_smoothing
        low = self.label_smoothing / ops.cast(vocab - 1, "float32")
        return -(confidence * target + low * (ops.sum(log_probs, axis=-1) - target))

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


class BleuLog(keras.callbacks.Callback):
    """Adds ``val_bleu`` (corpus BLEU of greedy translations of the first
    ``num_sentences`` validation pairs, keras-hub's BLEU) to the epoch logs."""

    def __init__(self, model, examples, num_sentences=128):
        super().__init__()
        self._model = model
        self.examples = examples
        self.num_sentences = num_sentences

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or self._model.tokenizer is None:
            return
        from keras_zoo.text_metrics import corpus_bleu

        pairs = [(e["source"].decode(), e["target"].decode())
                 for e in self.examples.take(self.num_sentences).as_numpy_iterator()
                 if "source" in e]
        if not pairs:
            return
        hyps = self._model.translate([s for s, _ in pairs], beam_size=1)
        logs["val_bleu"] = corpus_bleu([[t] for _, t in pairs], hyps)


def _preset(width, layers_, heads, mlp, dropout, **extra):
    return dict(hidden_dim=width, num_encoder_layers=layers_, num_decoder_layers=layers_,
                num_heads=heads, mlp_dim=mlp, dropout=dropout, **extra)


# tensor2tensor's attention projections have no bias: the paper-sized presets
# follow it; the tiny recipe preset keeps them (its README numbers were measured so)
register_preset("transformer_base", "Transformer",
                _preset(512, 6, 8, 2048, 0.1, vocab_size=37000, label_smoothing=0.1,
                        attention_bias=False),
                "Transformer base (Vaswani et al. 2017, Table 3), shared 37k vocabulary")
register_preset("transformer_big", "Transformer",
                _preset(1024, 6, 16, 4096, 0.3, vocab_size=37000, label_smoothing=0.1,
                        attention_bias=False),
                "Transformer big (Table 3, EN-DE dropout 0.3)")
register_preset("transformer_tiny_gettext", "Transformer",
                _preset(256, 3, 4, 1024, 0.1, vocab_size=8000, label_smoothing=0.1,
                        max_source_length=64, max_target_length=64),
                "a 3+3-layer Transformer for the bundled gettext en-de messages", tiny=True)
