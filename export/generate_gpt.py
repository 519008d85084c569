"""Text generation with a .tflite file alone: its ``prefill`` and ``decode``
signatures and a host loop in NumPy (GPT's right-padded prefill with
``prompt_length`` and a decode ``index``; ``export.generate`` is the
left-padded loop the Mamba family uses: the two are to be unified).

    python -m export.export --preset=runs/gpt_prose/best --output=gpt.tflite
    python -m export.generate_gpt --model=gpt.tflite --tokenizer=runs/gpt_prose/best \\
        --prompt="Return the number of" --max_new_tokens=32

Generic over any causal LM that exports the two signatures (GPT's key/value
cache, Mamba's recurrent state), by these conventions:

* ``prefill``: input ``token_ids`` (1, P) and either ``prompt_length`` (1,)
  (the prompt right-padded to P: attention families) or ``padding_mask``
  (1, P) (left-padded, 1 = token: recurrent families); outputs ``logits``
  (1, vocab) for the token after the prompt, and the state tensors.
* ``decode`` (or ``step``): input ``token_id`` (1, 1), optionally ``index``
  (1,) (the token's position), and every state tensor ``X``; outputs
  ``logits`` and ``next_X``, fed back as ``X`` at the next step.
* A state named ``cache`` with an ``index`` input is a key/value cache whose
  axis -2 counts positions: prompt + new tokens must fit in it.

A prompt longer than P is prefilled with its first P tokens and the rest is
fed one token at a time through ``decode``.
"""

import sys
import time

import numpy as np

from export.tflite import ExportError

DECODE_SIGNATURES = ("decode", "step")


class TFLiteGenerator:
    """Greedy (or top-k sampled) generation from a prefill/decode .tflite file.

    ``generate(prompt_ids, max_new_tokens)`` returns the new token ids;
    ``timings`` then holds the prefill time and the per-token decode times
    (seconds) of the last call.
    """

    def __init__(self, path, num_threads=1):
        from ai_edge_litert.interpreter import Interpreter

        self.path = str(path)
        self.interpreter = Interpreter(model_path=self.path, num_threads=num_threads)
        signatures = self.interpreter.get_signature_list()
        decode = [s for s in DECODE_SIGNATURES if s in signatures]
        if "prefill" not in signatures or not decode:
            raise ExportError(f"{self.path!r} has signatures {sorted(signatures)}; generation "
                              f"needs 'prefill' and one of {DECODE_SIGNATURES} (export a causal "
                              "LM such as GPT or Mamba)")
        self.prefill = self.interpreter.get_signature_runner("prefill")
        self.decode = self.interpreter.get_signature_runner(decode[0])
        self.prefill_inputs = self.prefill.get_input_details()
        self.decode_inputs = self.decode.get_input_details()
        self.prefill_length = int(self.prefill_inputs["token_ids"]["shape"][1])
        self.states = [n for n in self.decode_inputs if n not in ("token_id", "index")]
        self.max_length = None
        if "index" in self.decode_inputs and "cache" in self.decode_inputs:
            self.max_length = int(self.decode_inputs["cache"]["shape"][-2])
        self.timings = {}

    def generate(self, prompt_ids, max_new_tokens=32, end_id=None, top_k=None,
                 temperature=1.0, seed=None):
        """New token ids after ``prompt_ids`` (a list of ints): greedy, or
        sampled from the ``top_k`` most likely tokens when given."""
        prompt = [int(t) for t in prompt_ids]
        if not prompt:
            raise ExportError("an empty prompt has no token to continue from")
        if max_new_tokens < 1:
            raise ExportError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if self.max_length is not None and len(prompt) + max_new_tokens > self.max_length:
            raise ExportError(f"prompt of {len(prompt)} tokens + max_new_tokens="
                              f"{max_new_tokens} passes the exported cache of "
                              f"{self.max_length} positions")
        rng = np.random.default_rng(seed)
        start = time.perf_counter()
        logits, state = self._prefill(prompt[:self.prefill_length])
        position = min(len(prompt), self.prefill_length)
        for token in prompt[self.prefill_length:]:  # the rest of a long prompt
            logits, state = self._step(token, position, state)
            position += 1
        self.timings = {"prefill_s": time.perf_counter() - start, "decode_s": []}
        new = []
        for i in range(max_new_tokens):
            token = _pick(logits, top_k, temperature, rng)
            new.append(token)
            if token == end_id or i == max_new_tokens - 1:
                break
            start = time.perf_counter()
            logits, state = self._step(token, position, state)
            self.timings["decode_s"].append(time.perf_counter() - start)
            position += 1
        return new

    def _prefill(self, prompt):
        n, length = len(prompt), self.prefill_length
        feed = {}
        if "prompt_length" in self.prefill_inputs:  # right-padded
            feed["token_ids"] = np.array([prompt + [0] * (length - n)], "int32")
            feed["prompt_length"] = np.array([n], "int32")
        elif "padding_mask" in self.prefill_inputs:  # left-padded
            feed["token_ids"] = np.array([[0] * (length - n) + prompt], "int32")
            feed["padding_mask"] = np.array([[0] * (length - n) + [1] * n], "int32")
        elif n == length:
            feed["token_ids"] = np.array([prompt], "int32")
        else:
            raise ExportError(f"the prefill signature takes exactly {length} tokens and "
                              f"neither prompt_length nor padding_mask; got {n} tokens")
        out = self.prefill(**feed)
        return out["logits"][0], {n: out[n] for n in self.states}

    def _step(self, token, position, state):
        feed = {"token_id": np.array([[token]], "int32"), **state}
        if "index" in self.decode_inputs:
            feed["index"] = np.array([position], "int32")
        out = self.decode(**feed)
        return out["logits"][0], {n: out["next_" + n] for n in self.states}


def _pick(logits, top_k, temperature, rng):
    if not top_k:
        return int(np.argmax(logits))
    logits = logits.astype("float64") / temperature
    top = np.argpartition(-logits, top_k - 1)[:top_k]
    p = np.exp(logits[top] - logits[top].max())
    return int(rng.choice(top, p=p / p.sum()))


# ---------------------------------------------------------------- CLI

def _define_flags():
    from absl import flags

    flags.DEFINE_string("model", None, "a .tflite file with prefill/decode signatures")
    flags.DEFINE_string("tokenizer", None, "a preset folder whose tokenizer encodes "
                        "--prompt and decodes the output")
    flags.DEFINE_multi_string("prompt", None, "prompt text (needs --tokenizer); repeatable")
    flags.DEFINE_list("prompt_ids", None, "prompt as comma-separated token ids")
    flags.DEFINE_integer("max_new_tokens", 32, "tokens to generate")
    flags.DEFINE_integer("top_k", None, "sample from the k most likely tokens (default greedy)")
    flags.DEFINE_float("temperature", 1.0, "divides the logits when sampling")
    flags.DEFINE_integer("seed", None, "sampling seed")
    flags.DEFINE_integer("num_threads", 1, "interpreter threads")
    return flags.FLAGS


def main(argv):
    del argv
    FLAGS = _FLAGS
    if not FLAGS.model:
        raise ExportError("--model (a .tflite file) is required")
    tokenizer = None
    if FLAGS.tokenizer:
        from keras_zoo.data.tokenizers import Tokenizer

        tokenizer = Tokenizer.load(FLAGS.tokenizer)
    if FLAGS.prompt:
        if tokenizer is None:
            raise ExportError("--prompt needs --tokenizer (a preset folder); or give --prompt_ids")
        prompts = tokenizer.encode(FLAGS.prompt)
    elif FLAGS.prompt_ids:
        prompts = [[int(t) for t in FLAGS.prompt_ids]]
    else:
        raise ExportError("give --prompt (with --tokenizer) or --prompt_ids")
    generator = TFLiteGenerator(FLAGS.model, FLAGS.num_threads)
    end = tokenizer.end_id if tokenizer is not None else None
    for prompt in prompts:
        new = generator.generate(prompt, FLAGS.max_new_tokens, end, FLAGS.top_k,
                                 FLAGS.temperature, FLAGS.seed)
        steps = generator.timings["decode_s"]
        per_token = f"{1e3 * np.median(steps):.2f} ms/token" if steps else "-"
        print(tokenizer.decode(prompt + new) if tokenizer else " ".join(map(str, new)))
        print(f"  [prefill {1e3 * generator.timings['prefill_s']:.1f} ms, decode {per_token}]",
              file=sys.stderr)


_FLAGS = None


def run():
    import os

    from export.export import run_guarded
    from keras_zoo.data.tokenizers import TokenizerError

    global _FLAGS
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    _FLAGS = _define_flags()
    run_guarded(main, (ExportError, TokenizerError))


if __name__ == "__main__":
    run()
