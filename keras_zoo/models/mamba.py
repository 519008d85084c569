"""Mamba language model (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with
Selective State Spaces"): embedding -> N x (RMSNorm -> MambaMixer, + residual)
-> RMSNorm -> tied LM head. The mixer (conv + selective scan) is in
keras_zoo/layers/ssm.py; this file holds the stack, its recurrent state, the
presets and the Hugging Face name map.

Generation runs a fixed-size state instead of a growing cache: ``prefill``
reads the prompt with the parallel scan and returns the state; ``step``
advances it one token at a time (constant memory and time per token). The
same two functions are the TFLite signatures.
"""

import math

import keras
from keras import layers, ops

from keras_zoo.layers.normalization import RMSNormalization
from keras_zoo.layers.ssm import MambaMixer
from keras_zoo.models.checks import check_token_ids
from keras_zoo.models.causal_lm import CausalLM
from keras_zoo.presets import register_family, register_preset


@keras.saving.register_keras_serializable(package="keras_zoo")
class TokenEmbedding(layers.Layer):
    """Token ids -> vectors; ``reverse=True`` maps vectors back to logits with the
    same matrix (the tied LM head). Normal(0, 0.02) init as in MixerModel.
    Logits come out in float32 (a stable softmax under mixed precision)."""

    def __init__(self, vocabulary_size, hidden_dim, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.hidden_dim = hidden_dim

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.vocabulary_size, self.hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02))

    def call(self, inputs, reverse=False):
        if reverse:
            logits = ops.matmul(inputs, ops.transpose(ops.cast(self.embeddings, inputs.dtype)))
            return ops.cast(logits, "float32")
        return ops.cast(ops.take(self.embeddings, ops.cast(inputs, "int32"), axis=0),
                        self.compute_dtype)

    def compute_output_spec(self, inputs, reverse=False):
        if reverse:
            return keras.KerasTensor(inputs.shape[:-1] + (self.vocabulary_size,), "float32")
        return keras.KerasTensor(inputs.shape + (self.hidden_dim,), self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(vocabulary_size=self.vocabulary_size, hidden_dim=self.hidden_dim)
        return config


@keras.saving.register_keras_serializable(package="keras_zoo")
class MambaBlock(layers.Layer):
    """x + MambaMixer(RMSNorm(x)) -- mamba_ssm's Block with rms_norm=True.

    ``residual_in_fp32`` (mamba_ssm's, True in its released configs and in
    Hugging Face's MambaConfig): under mixed precision the residual stream x
    stays float32 (each block's bfloat16 output is added to it in float32);
    no effect under float32.

    ``block(x, padding_mask=None, initial_state=None, return_state=False)``:
    the parallel form (``initial_state`` = (conv_state, ssm_state) continues).
    ``block(x, conv_state=..., ssm_state=...)`` with x (batch, 1, width): one
    recurrent step, returns (x, conv_state, ssm_state). Both are layer calls,
    so the functional prefill / step models (and their TFLite signatures) are
    built from the very same layers as the training graph.
    """

    def __init__(self, mixer_config, norm_epsilon=1e-5, residual_in_fp32=True, **kwargs):
        # No autocast: under mixed precision the float32 SSM state passed to a
        # step must not be rounded to bfloat16 (the sublayers cast for themselves).
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.mixer_config = dict(mixer_config)
        self.norm_epsilon = norm_epsilon
        self.residual_in_fp32 = residual_in_fp32

    def _residual(self, x):
        """The residual stream: float32 under mixed precision with
        ``residual_in_fp32`` (mamba_ssm's Block), else the compute dtype."""
        return ops.cast(x, "float32" if self.residual_in_fp32 else self.compute_dtype)

    def build(self, input_shape):
        kw = {"dtype": self.dtype_policy}
        self.norm = RMSNormalization(epsilon=self.norm_epsilon, name="norm", **kw)
        self.norm.build(input_shape)
        self.mixer = MambaMixer(**self.mixer_config, name="mixer", **kw)
        self.mixer.build(input_shape)

    def call(self, x, padding_mask=None, initial_state=None, conv_state=None, ssm_state=None,
             return_state=False):
        x = self._residual(x)
        if conv_state is not None:
            y, conv_state, ssm_state = self.mixer.step(self.norm(x[:, 0]), conv_state, ssm_state)
            return x + ops.cast(y[:, None, :], x.dtype), conv_state, ssm_state
        y = self.mixer(self.norm(x), padding_mask=padding_mask, initial_state=initial_state,
                       return_state=return_state)
        if return_state:
            y, conv_state, ssm_state = y
            return x + ops.cast(y, x.dtype), conv_state, ssm_state
        return x + ops.cast(y, x.dtype)

    def compute_output_spec(self, x, padding_mask=None, initial_state=None, conv_state=None,
                            ssm_state=None, return_state=False):
        out = keras.KerasTensor(
            x.shape, dtype="float32" if self.residual_in_fp32 else self.compute_dtype)
        if conv_state is None and not return_state:
            return out
        inner = MambaMixer.inner_dim_for(x.shape[-1], self.mixer_config.get("expand", 2))
        kernel = self.mixer_config.get("conv_kernel", 4)
        state_dim = self.mixer_config.get("state_dim", 16)
        return (out, keras.KerasTensor((x.shape[0], kernel - 1, inner), self.compute_dtype),
                keras.KerasTensor((x.shape[0], inner, state_dim), "float32"))

    def get_config(self):
        config = super().get_config()
        config.update(mixer_config=self.mixer_config, norm_epsilon=self.norm_epsilon,
                      residual_in_fp32=self.residual_in_fp32)
        return config


@register_family
@keras.saving.register_keras_serializable(package="keras_zoo")
class Mamba(CausalLM):
    """A Mamba language model: token ids (batch, L) -> logits (batch, L, vocab).

    mamba-130m: width 768, 24 layers, vocabulary 50,280 (padded to a multiple
    of 8), state 16, conv kernel 4, expand 2 -> 129,135,360 parameters.
    Every block is RMSNorm (eps 1e-5) -> MambaMixer plus a residual; the LM
    head is the embedding matrix (``tie_embeddings``).

    Generation (``CausalLM.generate``) carries a fixed-size state instead of
    a cache that grows: per layer, the last ``conv_kernel - 1`` conv inputs
    and an (inner, state_dim) SSM state, stacked over the layers into
    ``(conv_state, ssm_state)`` of shapes (batch, layers, kernel - 1, inner)
    and (batch, layers, inner, state_dim). ``prefill(token_ids)`` and
    ``step(token_id, state)`` expose the two halves; they are also the
    TFLite signatures (``serving_signatures``).

    Args:
        vocab_size: tokens; the embedding is padded up to a multiple of
            ``pad_vocab_multiple`` (mamba_ssm's pad_vocab_size_multiple = 8).
        hidden_dim, num_layers, state_dim, conv_kernel, expand, dt_rank
            (None = ceil(hidden_dim / 16)): the mixer, as in mamba_ssm.
        use_bias, use_conv_bias: biases of in/out_proj (no) and the conv (yes).
        sequence_length: training window (tokens) of the data hook.
        prefill_length: the fixed prompt length of the exported ``prefill``.
        chunk_size: tokens per chunk of the parallel scan (None: ~sqrt(L)).
        residual_in_fp32: keep the residual stream in float32 under mixed
            precision (mamba_ssm's ``residual_in_fp32``; the dt bias is added
            in float32 there too, as ``selective_scan_fn``'s ``delta_bias``).
    """

    def __init__(self, vocab_size=50280, hidden_dim=768, num_layers=24, state_dim=16,
                 conv_kernel=4, expand=2, dt_rank=None, pad_vocab_multiple=8,
                 norm_epsilon=1e-5, tie_embeddings=True, use_bias=False, use_conv_bias=True,
                 sequence_length=2048, prefill_length=64, chunk_size=None,
                 residual_in_fp32=True, name="mamba", **kwargs):
        MambaMixer.inner_dim_for(hidden_dim, expand)  # a clear error for a bad width
        if vocab_size < 1 or num_layers < 1:
            raise ValueError(f"vocab_size and num_layers must be >= 1, got {vocab_size} and "
                             f"{num_layers}")
        padded = math.ceil(vocab_size / pad_vocab_multiple) * pad_vocab_multiple
        mixer = {"state_dim": state_dim, "conv_kernel": conv_kernel, "expand": expand,
                 "dt_rank": dt_rank, "use_bias": use_bias, "use_conv_bias": use_conv_bias,
                 "out_proj_scale": 1.0 / math.sqrt(num_layers), "chunk_size": chunk_size}
        embedding = TokenEmbedding(padded, hidden_dim, name="embedding")
        blocks = [MambaBlock(mixer, norm_epsilon, residual_in_fp32, name=f"block_{i}")
                  for i in range(num_layers)]
        final_norm = RMSNormalization(epsilon=norm_epsilon, name="final_norm")
        head = None if tie_embeddings else layers.Dense(
            padded, use_bias=False, name="lm_head", dtype="float32")

        tokens = keras.Input((None,), dtype="int32", name="token_ids")
        x = embedding(tokens)
        for block in blocks:
            # Called with return_state here too: Keras' functional graph checks a
            # shared layer's outputs against its first call, and prefill/step
            # reuse these blocks with three outputs. The unused states cost a slice.
            x, _, _ = block(x, return_state=True)
        x = final_norm(x)
        logits = embedding(x, reverse=True) if head is None else head(x)
        super().__init__(inputs=tokens, outputs=logits, name=name, **kwargs)
        vars(self)["_parts"] = (embedding, blocks, final_norm, head)  # untracked: already in the graph
        vars(self)["_functions"] = {}

    @property
    def padded_vocab_size(self):
        return self._parts[0].vocabulary_size

    def _check_input_shape(self, inputs):
        """One line for a wrong rank or (concrete) ids outside the vocabulary."""
        shape = getattr(inputs, "shape", None)
        if shape is None or isinstance(inputs, dict):
            return
        if len(shape) != 2:
            raise ValueError(f"Mamba expects token ids of shape (batch, length); got "
                             f"{tuple(shape)}")
        check_token_ids(inputs, self.get_zoo_config()["vocab_size"])

    def _logits(self, x):
        embedding, _, final_norm, head = self._parts
        x = final_norm(x)
        return embedding(x, reverse=True) if head is None else head(x)

    # ---------------------------------------------------------------- the state

    def state_shapes(self):
        """(conv_state, ssm_state) shapes of one sequence, all layers stacked."""
        c = self.get_zoo_config()
        inner = MambaMixer.inner_dim_for(c["hidden_dim"], c["expand"])
        return ((c["num_layers"], c["conv_kernel"] - 1, inner),
                (c["num_layers"], inner, c["state_dim"]))

    def init_cache(self, batch_size, max_length=None):
        """The empty state (zeros); its size does not depend on ``max_length``."""
        conv, ssm = self.state_shapes()
        return (ops.zeros((batch_size,) + conv, self.compute_dtype),
                ops.zeros((batch_size,) + ssm, "float32"))

    def call_with_cache(self, token_ids, cache, index=0, padding_mask=None):
        """Logits (batch, t, vocab) of ``token_ids`` (batch, t) read after ``cache``
        (None: the empty state), and the new state. One token uses the recurrent
        step; several use the parallel scan started from the state. Mamba has no
        positions: ``index`` is accepted for the CausalLM contract and unused.
        Logits cover the ``vocab_size`` real tokens, not the embedding's padding rows.
        ``padding_mask`` (1 = token) allows left-padded prompts from the empty state."""
        del index
        embedding, blocks, _, _ = self._parts
        one_token = token_ids.shape[1] == 1 and cache is not None and padding_mask is None
        x = embedding(token_ids)
        conv_states, ssm_states = [], []
        for i, block in enumerate(blocks):
            layer_state = None if cache is None else (cache[0][:, i], cache[1][:, i])
            if one_token:
                x, conv, ssm = block(x, conv_state=layer_state[0], ssm_state=layer_state[1])
            else:
                x, conv, ssm = block(x, padding_mask=padding_mask, initial_state=layer_state,
                                     return_state=True)
            conv_states.append(conv)
            ssm_states.append(ssm)
        logits = self._logits(x)
        vocab = self.get_zoo_config()["vocab_size"]
        if logits.shape[-1] != vocab:  # never generate the padding rows of the embedding
            logits = logits[..., :vocab]
        return logits, (ops.stack(conv_states, axis=1), ops.stack(ssm_states, axis=1))

    def _compiled_step(self):
        """CausalLM's compiled ``call_with_cache``, retraced per prompt length: the
        parallel scan unrolls over a static length (``reduce_retracing`` would
        relax it to None)."""
        if "_zoo_step" not in vars(self) and keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            vars(self)["_zoo_step"] = tf.function(self.call_with_cache, jit_compile=True)
        return super()._compiled_step()

    # ---------------------------------------------------------------- prefill / step

    def prefill_model(self, length=None):
        """Functional model (the ``prefill`` signature): token_ids and padding_mask
        (batch, length), prompts left-padded (mask 0 = padding) -> logits of the
        next token (batch, vocab), conv_state, ssm_state."""
        key = ("prefill", length)
        if key not in self._functions:
            tokens = keras.Input((length,), dtype="int32", name="token_ids")
            mask = keras.Input((length,), dtype="int32", name="padding_mask")
            logits, (conv, ssm) = self.call_with_cache(tokens, None, padding_mask=mask)
            last = ops.reshape(logits[:, -1:], (-1, logits.shape[-1]))
            outputs = [layers.Identity(name="logits", dtype="float32")(last),
                       layers.Identity(name="conv_state")(conv),
                       layers.Identity(name="ssm_state", dtype="float32")(ssm)]
            self._functions[key] = keras.Model([tokens, mask], outputs, name=f"{self.name}_prefill")
        return self._functions[key]

    def step_model(self):
        """Functional model (the ``step`` signature): token_id (batch, 1), conv_state,
        ssm_state -> logits (batch, vocab), next_conv_state, next_ssm_state."""
        if "step" not in self._functions:
            conv_shape, ssm_shape = self.state_shapes()
            token = keras.Input((1,), dtype="int32", name="token_id")
            conv_in = keras.Input(conv_shape, name="conv_state", dtype=self.compute_dtype)
            ssm_in = keras.Input(ssm_shape, name="ssm_state", dtype="float32")
            logits, (conv, ssm) = self.call_with_cache(token, (conv_in, ssm_in))
            # Outputs next_<input>: a host loop feeds each back into <input>.
            outputs = [layers.Identity(name="logits", dtype="float32")(
                           ops.reshape(logits, (-1, logits.shape[-1]))),
                       layers.Identity(name="next_conv_state")(conv),
                       layers.Identity(name="next_ssm_state", dtype="float32")(ssm)]
            self._functions["step"] = keras.Model([token, conv_in, ssm_in], outputs,
                                                  name=f"{self.name}_step")
        return self._functions["step"]

    def _compiled(self, key, fn_model):
        """A functional model as a graph function on TensorFlow (eager op-by-op
        dispatch would dominate a one-token step)."""
        name = ("compiled", *key)
        if name not in self._functions:
            def fn(*args):
                return fn_model(list(args), training=False)

            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                fn = tf.function(fn, reduce_retracing=True)
            self._functions[name] = fn
        return self._functions[name]

    def prefill(self, token_ids, padding_mask=None):
        """Reads (left-padded) prompts from the empty state: token_ids (batch, L) ->
        (logits (batch, vocab) of the next token, state)."""
        token_ids = ops.convert_to_tensor(token_ids, "int32")
        if len(token_ids.shape) != 2:
            raise ValueError(f"prefill expects token ids of shape (batch, length), got "
                             f"{tuple(token_ids.shape)}")
        padding_mask = ops.ones_like(token_ids) if padding_mask is None else \
            ops.convert_to_tensor(padding_mask, "int32")
        if tuple(padding_mask.shape) != tuple(token_ids.shape):
            raise ValueError(f"padding_mask has shape {tuple(padding_mask.shape)}, token_ids "
                             f"{tuple(token_ids.shape)}; they must match")
        length = int(token_ids.shape[1])
        fn = self._compiled(("prefill", length), self.prefill_model(length))
        logits, conv_state, ssm_state = fn(token_ids, padding_mask)
        return logits, (conv_state, ssm_state)

    def step(self, token_id, state):
        """One token per sequence: token_id (batch,) or (batch, 1), state from
        ``prefill``/``step``/``init_cache`` -> (logits (batch, vocab), state)."""
        token_id = ops.convert_to_tensor(token_id, "int32")
        if len(token_id.shape) == 1:
            token_id = token_id[:, None]
        if len(token_id.shape) != 2 or token_id.shape[1] != 1:
            raise ValueError(f"step expects one token per sequence, shape (batch,) or "
                             f"(batch, 1); got {tuple(token_id.shape)}")
        self.check_state(state, int(token_id.shape[0]))
        fn = self._compiled(("step",), self.step_model())
        logits, conv_state, ssm_state = fn(token_id, *(ops.convert_to_tensor(s) for s in state))
        return logits, (conv_state, ssm_state)

    def check_state(self, state, batch_size):
        """Raises one clear ValueError unless ``state`` is this model's
        (conv_state, ssm_state) for ``batch_size`` sequences."""
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise ValueError("a Mamba state is a pair (conv_state, ssm_state), as returned by "
                             f"prefill/step/init_cache; got {type(state).__name__}")
        for name, tensor, shape in zip(("conv_state", "ssm_state"), state, self.state_shapes()):
            got = tuple(getattr(tensor, "shape", ()))
            if got != (batch_size, *shape):
                raise ValueError(f"{name} has shape {got}; this {self.name!r} expects "
                                 f"{(batch_size, *shape)} (batch {batch_size}, {shape[0]} layers)")

    # ---------------------------------------------------------------- trainer / exporter hooks

    def no_weight_decay_variables(self):
        """Biases and norm scales (ZooModel's rank <= 1 rule; D is one of them) plus
        every A_log: mamba_ssm marks A_log and D ``_no_weight_decay``."""
        return super().no_weight_decay_variables() + [
            v for v in self.trainable_variables if v.path.endswith("/A_log")]

    def litertlm_signatures(self, prefill_length=None, context_length=None):
        """LiteRT-LM's prefill/decode pair over the recurrent state (see
        GPT.litertlm_signatures for the convention; export/litertlm.py).

        The engine knows key/value caches only; it carries any tensor named
        ``kv_cache_k_<i>`` / ``kv_cache_v_<i>`` from one call to the next, so
        block i's conv state (1, kernel - 1, inner) travels as
        ``kv_cache_k_<i>`` and its SSM state (1, inner, state_dim) as
        ``kv_cache_v_<i>``. Two limits follow from the engine's reading of
        those tensors as caches: (1) it pads a prompt chunk to the prefill
        signature's length, and padding would advance a recurrent state, so
        ``prefill_1`` takes one token per call (the prompt costs one step
        per token); (2) it takes dimension 2 of the first cache as the
        context, so a session holds at most ``inner`` (expand x width)
        tokens although the state itself has no length limit."""
        (layers_, kernel_m1, inner), (_, _, state_dim) = self.state_shapes()
        if prefill_length not in (None, 1):
            raise ValueError(f"Mamba prefills one token per LiteRT-LM call (the engine pads "
                             f"longer chunks, and padding would advance the state); got "
                             f"prefill length {prefill_length}")
        if context_length not in (None, inner):
            raise ValueError(f"Mamba's LiteRT-LM context is fixed by its state layout at "
                             f"{inner} tokens (the inner width); got context length "
                             f"{context_length}")
        embedding, blocks, _, _ = self._parts
        vocab = self.get_zoo_config()["vocab_size"]
        conv_shape, ssm_shape = (1, kernel_m1, inner), (1, inner, state_dim)
        states = [(f"kv_cache_{kv}_{i}", shape, "float32") for i in range(layers_)
                  for kv, shape in (("k", conv_shape), ("v", ssm_shape))]

        def run(tokens, input_pos, logits, **state):
            del input_pos  # no positions in Mamba
            x, out = embedding(tokens), {}
            for i, block in enumerate(blocks):
                x, out[f"kv_cache_k_{i}"], out[f"kv_cache_v_{i}"] = block(
                    x, conv_state=ops.cast(state[f"kv_cache_k_{i}"], self.compute_dtype),
                    ssm_state=state[f"kv_cache_v_{i}"])
                out[f"kv_cache_k_{i}"] = ops.cast(out[f"kv_cache_k_{i}"], "float32")
            if logits:
                out["logits"] = ops.cast(self._logits(x)[..., :vocab], "float32")
            return out

        spec = [("tokens", (1, 1), "int32"), ("input_pos", (1,), "int32"), *states]
        return {"prefill_1": (lambda **kw: run(logits=False, **kw), spec),
                "decode": (lambda **kw: run(logits=True, **kw), spec)}

    def serving_signatures(self):
        """``prefill`` at ``prefill_length`` tokens and the one-token ``step``."""
        return {"prefill": self.prefill_model(self.get_zoo_config()["prefill_length"]),
                "step": self.step_model()}


# ---------------------------------------------------------------- presets
# The state-spaces checkpoints (mamba_ssm MambaConfig / the -hf configs).

register_preset("mamba_130m", "Mamba", {"hidden_dim": 768, "num_layers": 24},
                "Mamba-130M: width 768, 24 layers, GPT-NeoX vocabulary (50,280)")
register_preset("mamba_370m", "Mamba", {"hidden_dim": 1024, "num_layers": 48},
                "Mamba-370M: width 1024, 48 layers, GPT-NeoX vocabulary (50,280)")
register_preset("mamba_tiny", "Mamba",
                {"vocab_size": 512, "hidden_dim": 64, "num_layers": 2, "sequence_length": 64,
                 "prefill_length": 16},
                "a 2-layer Mamba of width 64, 512 tokens, 64-token training windows", tiny=True)
