"""What every decoder-only language model shares: next-token data, generation
over an explicit cache, perplexity. GPT (a key/value cache) and Mamba (a
recurrent state) subclass ``CausalLM`` and supply three things:

* the functional graph ``token_ids (B, T) -> logits (B, T, vocab)`` (training);
* ``init_cache(batch_size, max_length)``: the empty cache/state (a nest of
  fixed-size tensors);
* ``call_with_cache(token_ids, cache, index)``: logits of ``token_ids``
  (B, t), which sit at positions ``index .. index + t - 1``, and the updated
  cache. Prefill is one call with the whole prompt, then one call per new
  token: the same function serves ``generate`` here and the TFLite
  ``prefill``/``decode`` signatures.

Everything else lives here once: the data hook (documents -> tokens -> packed
windows of ``sequence_length + 1`` tokens, x = w[:-1], y = w[1:]), a
SentencePiece tokenizer trained on the training split when the preset has
none, ``generate`` with keras-hub's samplers, and perplexity.
"""

import math

import keras
import numpy as np

from keras_zoo.models.base import ZooModel, counted
from keras_zoo.models.checks import check_count, check_id_lists, check_sampling, check_texts
from keras_zoo.models.text_data import TextData

SAMPLERS = ("greedy", "top_k", "top_p")


class CausalLM(TextData, ZooModel):
    """Base class of decoder-only LMs; see the module docstring for the contract.

    ``model.tokenizer`` maps text to ids (None until one is trained or loaded
    from a preset folder); ``generate`` also takes token ids without one.
    Config keys the subclass defines: ``vocab_size``; ``sequence_length``
    (training window).
    """

    # ---- what a family provides

    def init_cache(self, batch_size, max_length):
        raise NotImplementedError

    def call_with_cache(self, token_ids, cache, index):
        raise NotImplementedError

    def max_generation_length(self):
        """Largest prompt + generated length (a position table's size), or None."""

    # ---- data (the trainer's hooks)

    def sequence_length(self):
        return int(self.get_zoo_config()["sequence_length"])

    def throughput_units(self, examples):
        return examples * self.sequence_length(), "tok"

    def data_task(self):
        from keras_zoo.data import text

        return text.DOCUMENTS

    def synthetic_examples(self, n, rng):
        """Random token windows of the training shape (dry runs, throughput)."""
        windows = rng.integers(4, self.get_zoo_config()["vocab_size"],
                               (n, self.sequence_length() + 1)).astype("int32")
        return {"window": windows}, "documents", {"example_bytes": windows[0].nbytes}

    def prepare_data(self, examples, info, work_dir=None):
        """Trains a SentencePiece tokenizer on the training documents when the
        model has none (kept in ``work_dir/tokenizer`` for resumed runs), and
        counts the tokens of a pass (every pass packs the same tokens)."""
        from keras_zoo.data.tokenizers import SentencePieceTokenizer

        if "window" in examples.element_spec:
            return
        self.run_tokenizer(work_dir, lambda: SentencePieceTokenizer.train(
            _paragraphs([t.decode("utf-8") for t in examples.map(lambda e: e["text"])
                         .as_numpy_iterator()]),
            vocab_size=self.get_zoo_config()["vocab_size"]))
        vars(self)["_zoo_pass_tokens"] = self._count_tokens(examples)

    def _count_tokens(self, examples):
        ids = self.tokenizer.encode([t.decode("utf-8") for t in examples.map(
            lambda e: e["text"]).as_numpy_iterator()])
        return sum(len(i) + 1 for i in ids)  # + the end token after each document

    def steps_per_pass(self, info, batch_size):
        tokens = vars(self).get("_zoo_pass_tokens")
        if tokens is None:
            return (info.num_examples or 0) // batch_size or None
        return tokens // (self.sequence_length() + 1) // batch_size or None

    def batch_data(self, examples, info, batch_size, training):
        """Documents -> ids + end token -> one token stream -> windows of
        ``sequence_length + 1`` -> (x = w[:-1], y = w[1:]) batches. The partial
        last window and batch of a pass are dropped (static shapes)."""
        import tensorflow as tf

        length = self.sequence_length() + 1
        if "window" in examples.element_spec:
            windows = examples.map(lambda e: e["window"])
        else:
            tokenizer = self._require_tokenizer("training")
            end = tokenizer.end_id

            def ids(e):
                tokens = tokenizer.tf_encode(tf.reshape(e["text"], (1,)))[0]
                return tf.concat([tf.cast(tokens, tf.int32), tf.constant([end], tf.int32)], 0)

            windows = examples.map(ids).unbatch().batch(length, drop_remainder=True)
        windows = windows.batch(batch_size, drop_remainder=True)
        batches = windows.map(lambda w: (w[:, :-1], w[:, 1:]))
        # evaluation passes carry their length (base.counted: Keras' evaluate()
        # misreports metrics on a dataset of unknown length)
        return batches if training else counted(batches)

    def compile_defaults(self):
        return {
            "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        }

    def evaluation_callbacks(self, examples, info, batch_size):
        return [PerplexityLog()]

    # ---- generation

    def generate(self, prompts, max_new_tokens=32, sampler="greedy", temperature=1.0,
                 top_k=50, top_p=0.9, seed=None, stop_at_end=True, return_ids=None):
        """Continues each prompt by ``max_new_tokens`` tokens.

        Args:
            prompts: a string, a list of strings (needs ``model.tokenizer``), or
                a list of token-id lists.
            sampler: "greedy", "top_k" (``top_k``), "top_p" (``top_p``), or a
                ``keras_hub.samplers.Sampler`` instance; ``temperature`` divides
                the logits; ``seed`` fixes the draws of the random samplers.
            stop_at_end: stop a sequence at the tokenizer's end token.
            return_ids: return token ids (default: strings when given strings).

        The prompt is run once (prefill) into the cache, then each new token
        costs one ``call_with_cache`` step over it: constant work per token
        for Mamba's state, O(current length) for GPT's key/value cache.
        Prompts of different lengths are generated in groups of equal length.
        """
        single = isinstance(prompts, str)
        if not isinstance(prompts, (str, list, tuple)):
            raise TypeError(f"generate() takes a string, a list of strings or a list of "
                            f"token-id lists, got {type(prompts).__name__}")
        texts = [prompts] if single else list(prompts)
        if not texts:
            raise ValueError("generate() got no prompts")
        as_text = isinstance(texts[0], str)
        if as_text:
            check_texts(texts, "generate()")
        else:
            check_id_lists(texts, "generate()", allow_empty_rows=True)  # empty: _check_prompts
        check_count("max_new_tokens", max_new_tokens)
        if isinstance(sampler, str):
            check_sampling(temperature, top_k if sampler == "top_k" else None,
                           top_p if sampler == "top_p" else None,
                           self.get_zoo_config()["vocab_size"])
        ids = self._require_tokenizer("generating from strings").encode(texts) if as_text \
            else [[int(t) for t in p] for p in texts]
        self._check_prompts(ids, max_new_tokens)
        pick = _sampler(sampler, temperature, top_k, top_p, seed)
        end = self.tokenizer.end_id if (stop_at_end and self.tokenizer is not None) else None
        out = [None] * len(ids)
        by_length = {}
        for i, p in enumerate(ids):
            by_length.setdefault(len(p), []).append(i)
        for rows in by_length.values():
            generated = self._generate_group(np.array([ids[r] for r in rows], "int32"),
                                             max_new_tokens, pick, end)
            for r, g in zip(rows, generated):
                out[r] = g
        if return_ids if return_ids is not None else not as_text:
            return out[0] if single else out
        decoded = [self.tokenizer.decode(p + g) for p, g in zip(ids, out)]
        return decoded[0] if single else decoded

    def _check_prompts(self, ids, max_new_tokens):
        vocab = self.get_zoo_config()["vocab_size"]
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        for p in ids:
            if not p:
                raise ValueError("an empty prompt has no token to continue from: give at "
                                 "least one token (e.g. the tokenizer's start token)")
            bad = [t for t in p if not 0 <= t < vocab]
            if bad:
                raise ValueError(f"token ids {bad[:5]} are outside the vocabulary "
                                 f"(0..{vocab - 1})")
        limit = self.max_generation_length()
        longest = max(map(len, ids))
        if limit is not None and longest + max_new_tokens > limit:
            raise ValueError(
                f"prompt of {longest} tokens + max_new_tokens={max_new_tokens} passes the "
                f"model's {limit} positions; shorten the prompt or generate fewer tokens")

    def _generate_group(self, prompt, max_new_tokens, pick, end):
        from keras import ops

        batch, length = prompt.shape
        total = length + max_new_tokens
        step = self._compiled_step()
        cache = self.init_cache(batch, total)
        logits, cache = step(ops.convert_to_tensor(prompt), cache,
                             ops.convert_to_tensor(0, "int32"))
        tokens, done = [], np.zeros(batch, bool)
        for i in range(max_new_tokens):
            token = ops.convert_to_numpy(pick(logits[:, -1, :])).astype("int32")
            if end is not None:
                token = np.where(done, end, token)
                done |= token == end
            tokens.append(token)
            if done.all() or i == max_new_tokens - 1:
                break
            logits, cache = step(ops.convert_to_tensor(token[:, None]), cache,
                                 ops.convert_to_tensor(length + i, "int32"))
        generated = np.stack(tokens, axis=1).tolist()
        if end is not None:  # keep up to and including the first end token
            generated = [g[:g.index(end) + 1] if end in g else g for g in generated]
        return generated

    def _compiled_step(self):
        """``call_with_cache`` compiled once (XLA on TF and JAX)."""
        from keras_zoo.models.decoding import compiled

        if "_zoo_step" not in vars(self):
            vars(self)["_zoo_step"] = compiled(self, self.call_with_cache)
        return vars(self)["_zoo_step"]

    # ---- evaluation

    def perplexity(self, spec_or_texts, split="test", batch_size=8):
        """exp(mean next-token negative log-likelihood) over the packed windows
        of a documents dataset spec (or a list of strings)."""
        import tensorflow as tf

        from keras_zoo.data import TextInfo

        if isinstance(spec_or_texts, str):
            examples, info = self.load_data(spec_or_texts, split)
        else:
            examples = tf.data.Dataset.from_tensor_slices({"text": list(spec_or_texts)})
            info = TextInfo("texts", split, "documents", len(spec_or_texts))
        nll, count = 0.0, 0
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")
        for x, y in self.batch_data(examples, info, batch_size, training=False):
            nll += float(loss(y, self(x, training=False)))
            count += int(np.prod(y.shape))
        if not count:
            raise ValueError("no full window of sequence_length + 1 tokens in the data")
        return math.exp(nll / count)


class PerplexityLog(keras.callbacks.Callback):
    """Adds ``val_perplexity = exp(val_loss)`` (and ``perplexity``) to the epoch logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for key in ("loss", "val_loss"):
            if key in logs:
                logs[key.replace("loss", "perplexity")] = math.exp(min(float(logs[key]), 50))


def _paragraphs(texts):
    """SentencePiece trains on sentences of bounded length: split documents on blank lines."""
    for text in texts:
        for paragraph in text.split("\n\n"):
            paragraph = paragraph.strip()
            if paragraph:
                yield paragraph[:4000]


def _sampler(sampler, temperature, top_k, top_p, seed):
    """A function logits (B, V) -> token ids (B,) from a keras-hub sampler."""
    import keras_hub

    if isinstance(sampler, str):
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS} or a "
                             "keras_hub.samplers.Sampler")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        sampler = {"greedy": lambda: keras_hub.samplers.GreedySampler(temperature=temperature),
                   "top_k": lambda: keras_hub.samplers.TopKSampler(
                       k=top_k, seed=seed, temperature=temperature),
                   "top_p": lambda: keras_hub.samplers.TopPSampler(
                       p=top_p, seed=seed, temperature=temperature)}[sampler]()
    return lambda logits: sampler.get_next_token(sampler.compute_probabilities(logits))
