"""GPT (Radford et al. 2018, "Improving Language Understanding by Generative
Pre-Training"; 2019, "Language Models are Unsupervised Multitask Learners").

    token ids -> token embedding + learned positions -> dropout
              -> N x pre-LN block (causal self-attention, GELU MLP)
              -> LayerNorm -> logits through the token embedding (tied)

GPT-2's details, from openai/gpt-2 src/model.py and Hugging Face's
modeling_gpt2: LayerNorm epsilon 1e-5, GELU's tanh approximation, biases on
every projection, Normal(0, 0.02) weights with the two residual projections
of each block (attention output, MLP output) scaled by 1 / sqrt(2 N) at
initialisation (the paper's "1/sqrt(N) for N residual layers"), positions
Normal(0, 0.01) as in the OpenAI code. The key/value cache is OpenAI's
``past`` layout, (batch, layers, 2, heads, length, head_dim).
"""

import math

import keras
import numpy as np
from keras import layers, ops

from keras_zoo.layers.embeddings import PositionEmbedding, TokenEmbedding
from keras_zoo.layers.normalization import LayerNormalization
from keras_zoo.layers.transformer import TransformerEncoderBlock
from keras_zoo.models.checks import check_token_ids
from keras_zoo.models.causal_lm import CausalLM
from keras_zoo.presets import register_family, register_preset


@register_family
@keras.saving.register_keras_serializable(package="keras_zoo")
class GPT(CausalLM):
    """Decoder-only transformer language model; ``token_ids (B, T) -> logits (B, T, vocab)``.

    ``gpt2``: 12 blocks of width 768 and 12 heads, 1,024 positions, vocabulary
    50,257, 124,439,808 parameters (the LM head is the token embedding).
    ``sequence_length`` is the training window (<= ``max_positions``);
    ``prefill_length`` the fixed prompt length of the exported ``prefill``
    signature. ``mlp_dim`` defaults to 4 x ``hidden_dim``. ``dropout`` is on
    the residual branches (GPT-2's ``resid_pdrop``); ``embedding_dropout``
    (``embd_pdrop``) and ``attention_dropout`` (``attn_pdrop``, on the
    attention probabilities) default to it.

    Generation (``generate``, from ``CausalLM``) and the TFLite signatures
    share ``call_with_cache``: the prompt fills the cache in one call, then
    each new token is one call over it.
    """

    def __init__(self, vocab_size=50257, max_positions=1024, sequence_length=1024,
                 hidden_dim=768, num_layers=12, num_heads=12, mlp_dim=None, dropout=0.1,
                 layer_norm_epsilon=1e-5, prefill_length=64, embedding_dropout=None,
                 attention_dropout=None, name="gpt", **kwargs):
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim={hidden_dim} is not divisible by num_heads={num_heads}")
        for key, value in (("sequence_length", sequence_length),
                           ("prefill_length", prefill_length)):
            if not 1 <= value <= max_positions:
                raise ValueError(f"{key}={value} must be between 1 and max_positions="
                                 f"{max_positions}")
        token_ids = keras.Input((None,), dtype="int32", name="token_ids")
        embedding = TokenEmbedding(vocab_size, hidden_dim, name="token_embedding")
        positions = PositionEmbedding(max_positions, initializer_stddev=0.01,
                                      name="position_embedding")
        blocks = [TransformerEncoderBlock(
            num_heads, mlp_dim or 4 * hidden_dim, dropout=dropout,
            attention_dropout=dropout if attention_dropout is None else attention_dropout,
            activation_dropout=0.0, activation="gelu_approximate", norm_first=True,
            layer_norm_epsilon=layer_norm_epsilon, name=f"block_{i}")
            for i in range(num_layers)]
        final_norm = LayerNormalization(epsilon=layer_norm_epsilon, name="final_norm")

        x = positions(embedding(token_ids))
        x = layers.Dropout(dropout if embedding_dropout is None else embedding_dropout,
                           name="embedding_dropout")(x)
        for block in blocks:
            x = block(x, use_causal_mask=True)
        logits = embedding(final_norm(x), reverse=True)
        super().__init__(inputs=token_ids, outputs=logits, name=name, **kwargs)
        # Untracked (already in the graph): the cached path's view of the same layers.
        vars(self)["_parts"] = (embedding, positions, _CachedBlocks(blocks), final_norm)
        _init_weights(blocks, num_layers)

    # ---- the cache (CausalLM's contract)

    def cache_shape(self, max_length):
        """(layers, 2, heads, max_length, head_dim): one sequence's cache."""
        c = self.get_zoo_config()
        return (c["num_layers"], 2, c["num_heads"], max_length, c["hidden_dim"] // c["num_heads"])

    def init_cache(self, batch_size, max_length):
        limit = self.get_zoo_config()["max_positions"]
        if max_length > limit:
            raise ValueError(f"a cache of {max_length} positions passes the model's {limit}")
        return ops.zeros((batch_size,) + self.cache_shape(max_length), self.compute_dtype)

    def call_with_cache(self, token_ids, cache, index):
        """Logits (B, t, vocab) of ``token_ids`` (B, t) at positions
        ``index .. index + t - 1``, and the cache with their keys/values written."""
        embedding, positions, blocks, final_norm = self._parts
        x, cache = blocks(positions(embedding(token_ids), start_index=index), cache, index=index)
        return embedding(final_norm(x), reverse=True), cache

    def max_generation_length(self):
        return self.get_zoo_config()["max_positions"]

    # ---- input checks

    def _check_input_shape(self, inputs):
        """One line for a wrong rank, a sequence past the position table, or
        (for NumPy / list input) ids outside the vocabulary."""
        if isinstance(inputs, list):
            inputs = np.asarray(inputs)
        shape = getattr(inputs, "shape", None)
        if shape is None or isinstance(inputs, dict):
            return
        config = self.get_zoo_config()
        if len(shape) != 2:
            raise ValueError(f"GPT expects token ids of shape (batch, length); got {tuple(shape)}")
        if shape[1] is not None and shape[1] > config["max_positions"]:
            raise ValueError(f"a sequence of {shape[1]} tokens passes the model's "
                             f"{config['max_positions']} positions (max_positions)")
        if isinstance(inputs, np.ndarray):
            check_token_ids(inputs, config["vocab_size"])

    def __call__(self, inputs, *args, **kwargs):
        if isinstance(inputs, list):
            inputs = np.asarray(inputs, "int32")
        return super().__call__(inputs, *args, **kwargs)

    # ---- export: prefill / decode with the cache as explicit tensors

    def prefill_model(self, length=None):
        """Functional model (token_ids (B, length), prompt_length (B,)) ->
        (logits (B, vocab) of the token after the prompt, cache (B, layers, 2,
        heads, max_positions, head_dim)). Prompts are right-padded to
        ``length``: causal attention keeps padding out of every real position,
        and ``decode`` overwrites the padded cache slots before it reads them."""
        length = length or self.get_zoo_config()["prefill_length"]
        embedding, positions, blocks, final_norm = self._parts
        token_ids = keras.Input((length,), dtype="int32", name="token_ids")
        prompt_length = keras.Input((), dtype="int32", name="prompt_length")
        cache = _EmptyCache(self.cache_shape(self.get_zoo_config()["max_positions"]),
                            name="empty_cache")(token_ids)
        x, cache = blocks(positions(embedding(token_ids)), cache, index=0)
        last = _TakePosition(name="last_token")(final_norm(x), prompt_length - 1)
        logits = layers.Identity(name="logits", dtype="float32")(embedding(last, reverse=True))
        cache = layers.Identity(name="cache")(cache)
        return keras.Model([token_ids, prompt_length], [logits, cache],
                           name=f"{self.name}_prefill")

    def decode_model(self):
        """Functional model (token_id (B, 1), cache, index (B,)) -> (logits
        (B, vocab), next_cache): one token at position ``index`` (every row of
        a batch at the same position). Outputs ``next_<input>`` feed back into
        ``<input>`` (export/generate.py)."""
        embedding, positions, blocks, final_norm = self._parts
        token_id = keras.Input((1,), dtype="int32", name="token_id")
        cache = keras.Input(self.cache_shape(self.get_zoo_config()["max_positions"]),
                            dtype=self.compute_dtype, name="cache")
        index = keras.Input((), dtype="int32", name="index")
        position = index[0]
        x, next_cache = blocks(positions(embedding(token_id), start_index=position), cache,
                               index=position)
        x = ops.reshape(final_norm(x), (-1, x.shape[-1]))
        logits = layers.Identity(name="logits", dtype="float32")(embedding(x, reverse=True))
        next_cache = layers.Identity(name="next_cache")(next_cache)
        return keras.Model([token_id, cache, index], [logits, next_cache],
                           name=f"{self.name}_decode")

    # the rows of a ``decode`` call share one position (``index``): they
    # decode in lockstep; export verification runs Keras at the exported batch
    lockstep_signatures = ("decode",)

    def serving_signatures(self):
        """``prefill`` (a prompt of ``prefill_length`` tokens) and ``decode``
        (one token), both over a cache of ``max_positions`` slots."""
        return {"prefill": self.prefill_model(), "decode": self.decode_model()}

    # ---- export to LiteRT-LM (export/litertlm.py)

    def litertlm_signatures(self, prefill_length=None, context_length=None):
        """The prefill/decode pair LiteRT-LM's executor runs: ``{name:
        (function, [(input name, shape, dtype)])}``, each function taking its
        inputs by name and returning a dict of named outputs.

        Batch 1. ``prefill_<P>``: ``tokens`` (1, P), ``input_pos`` (P,) and
        per block ``kv_cache_k_<i>`` / ``kv_cache_v_<i>`` (1, heads, C,
        head_dim) -> the caches (the engine pads a shorter prompt: the padded
        slots are overwritten by ``decode`` before any query reads them).
        ``decode``: ``tokens`` (1, 1), ``input_pos`` (1,), the caches ->
        ``logits`` (1, 1, vocab) and the caches. Keys/values are written at
        ``input_pos[0]`` with a dynamic update slice; queries attend to slots
        ``<= their position``, so no mask input is needed. A prompt longer
        than ``P`` is prefilled in chunks by the engine (each counted as ``P``
        positions against the context). ``P`` defaults to
        ``prefill_length``, ``C`` to ``max_positions``."""
        c = self.get_zoo_config()
        prefill = prefill_length or c["prefill_length"]
        context = context_length or c["max_positions"]
        if not 1 <= prefill <= context <= c["max_positions"]:
            raise ValueError(f"need 1 <= prefill length ({prefill}) <= context length "
                             f"({context}) <= max_positions ({c['max_positions']})")
        heads, head_dim = c["num_heads"], c["hidden_dim"] // c["num_heads"]
        names = [f"kv_cache_{kv}_{i}" for i in range(c["num_layers"]) for kv in "kv"]
        caches = [(n, (1, heads, context, head_dim), "float32") for n in names]
        embedding, positions, blocks, final_norm = self._parts

        def run(tokens, input_pos, logits, **cache):
            # The engine pads the last chunk of a prompt up to P and counts
            # the padding against the context, so a chunk never runs past it.
            start = input_pos[0]
            x = positions(embedding(tokens), start_index=start)
            out = {}
            for i, block in enumerate(blocks.blocks):
                pair = (cache[f"kv_cache_k_{i}"], cache[f"kv_cache_v_{i}"])
                x, (out[f"kv_cache_k_{i}"], out[f"kv_cache_v_{i}"]) = block(
                    x, use_causal_mask=True, cache=pair, cache_index=start, training=False)
            if logits:
                out["logits"] = ops.cast(embedding(final_norm(x), reverse=True), "float32")
            return out

        def specs(length):
            return [("tokens", (1, length), "int32"), ("input_pos", (length,), "int32"),
                    *caches]

        return {f"prefill_{prefill}": (lambda **kw: run(logits=False, **kw), specs(prefill)),
                "decode": (lambda **kw: run(logits=True, **kw), specs(1))}


class _CachedBlocks(layers.Layer):
    """The decoder blocks over one explicit cache (B, layers, 2, heads, T,
    head_dim) -> (x, new cache): ``call_with_cache`` and the export graphs run
    the training graph's block layers through it. (A layer of its own because
    Keras' functional graph lets a shared layer return only as many outputs
    as at its first call, and the blocks' first call is the training graph's.)"""

    def __init__(self, blocks, **kwargs):
        super().__init__(name="cached_blocks", **kwargs)
        self.blocks = list(blocks)

    def call(self, x, cache, index):
        new_cache = []
        for i, block in enumerate(self.blocks):
            x, layer_cache = block(x, use_causal_mask=True, cache=cache[:, i],
                                   cache_index=index, training=False)
            new_cache.append(layer_cache)
        return x, ops.stack(new_cache, axis=1)

    def compute_output_spec(self, x, cache, index):
        return (keras.KerasTensor(x.shape, self.blocks[0].compute_dtype),
                keras.KerasTensor(cache.shape, cache.dtype))


@keras.saving.register_keras_serializable(package="keras_zoo")
class _EmptyCache(layers.Layer):
    """token_ids (B, T) -> zeros (B, *shape): the cache a prompt is written into."""

    def __init__(self, shape, **kwargs):
        super().__init__(**kwargs)
        self.shape = tuple(shape)

    def call(self, token_ids):
        return ops.zeros((ops.shape(token_ids)[0],) + self.shape, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self.shape

    def get_config(self):
        return {**super().get_config(), "shape": list(self.shape)}


@keras.saving.register_keras_serializable(package="keras_zoo")
class _TakePosition(layers.Layer):
    """x (B, T, D), positions (B,) -> (B, D): each row's vector at its position."""

    def call(self, x, positions):
        index = ops.cast(positions, "int32")[:, None, None]
        return ops.take_along_axis(x, index, axis=1)[:, 0]

    def compute_output_shape(self, x_shape, positions_shape):
        return (x_shape[0], x_shape[2])


def _init_weights(blocks, num_layers):
    """GPT-2's initialisation of the blocks: Normal(0, 0.02) kernels, the two
    residual projections at 0.02 / sqrt(2 N); biases 0, LayerNorm 1 and 0
    (the layers' defaults). Embeddings are initialised by their layers."""
    residual_std = 0.02 / math.sqrt(2 * num_layers)
    for block in blocks:
        for dense, std in ((block.attention.qkv, 0.02), (block.mlp.fc1, 0.02),
                           (block.attention.out, residual_std), (block.mlp.fc2, residual_std)):
            dense.kernel.assign(keras.initializers.RandomNormal(stddev=std)(dense.kernel.shape))


# ---------------------------------------------------------------- presets
# GPT-2 sizes (Radford et al. 2019, Table 2; the released hparams).

def _gpt2(hidden_dim, num_layers, num_heads):
    return {"hidden_dim": hidden_dim, "num_layers": num_layers, "num_heads": num_heads}


register_preset("gpt2", "GPT", _gpt2(768, 12, 12),
                "GPT-2 small: 12 blocks, width 768, 12 heads, 1,024 positions, 50,257 tokens "
                "(124,439,808 parameters)")
register_preset("gpt2_medium", "GPT", _gpt2(1024, 24, 16),
                "GPT-2 medium: 24 blocks, width 1024, 16 heads (354,823,168 parameters)")
register_preset("gpt_tiny", "GPT",
                {"vocab_size": 512, "max_positions": 128, "sequence_length": 64,
                 "hidden_dim": 64, "num_layers": 2, "num_heads": 4, "dropout": 0.0,
                 "prefill_length": 16},
                "a 2-block GPT of width 64 over 512 tokens (tests)", tiny=True)
