"""Text generation from an exported .tflite file alone (LiteRT interpreter + NumPy):
one host loop for every causal language model the zoo exports (GPT's key/value
cache, Mamba's recurrent state).

    python -m export.export --preset=runs/gpt_prose/best --output=gpt.tflite
    python -m export.generate --tflite=gpt.tflite --tokenizer=runs/gpt_prose/best \\
        --prompt="Return the number of" --max_new_tokens=32
    python -m export.export --preset=mamba_tiny --output=mamba.tflite
    python -m export.generate --tflite=mamba.tflite --prompt_ids=72,101,108 --max_new_tokens=20

The file carries two signatures, by these conventions:

* ``prefill``: ``token_ids`` (batch, P) at a fixed length P, and either
  ``prompt_length`` (batch,) (prompts right-padded: attention families, whose
  positions start at 0) or ``padding_mask`` (batch, P) (prompts left-padded,
  1 = token: recurrent families); outputs ``logits`` (batch, vocab) for the
  token after the prompt, and the generation state as further outputs.
* ``decode`` (or ``step``): ``token_id`` (batch, 1), optionally ``index``
  (batch,) (the token's position), and one input per state tensor ``X``;
  outputs ``logits`` and ``next_X``, fed back as ``X`` at the next step.
* A state named ``cache`` next to an ``index`` input is a key/value cache
  whose axis -2 counts positions: prompt + new tokens must fit in it.

The state is opaque here: it goes out of prefill and comes back out of each
step. Nothing is recomputed: one prefill, then one step per token. A prompt
longer than P is prefilled with its first P tokens and the rest is fed one
token at a time through the step signature.
"""

import sys
import time

import numpy as np

from export.tflite import ExportError

STEP_SIGNATURES = ("decode", "step")


def open_interpreter(path, num_threads=1):
    """A LiteRT interpreter for ``path``; a missing, empty or truncated file is
    one ExportError naming it (not the runtime's internal message)."""
    import os

    from ai_edge_litert.interpreter import Interpreter

    if not os.path.isfile(path):
        raise ExportError(f"no .tflite file at {path!r}")
    if os.path.getsize(path) == 0:
        raise ExportError(f"{path!r} is empty (0 bytes): an interrupted export? export it again")
    try:
        return Interpreter(model_path=path, num_threads=num_threads)
    except (ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"{path!r} is not a valid .tflite file (truncated or corrupt, "
                          f"{os.path.getsize(path)} bytes): {first}") from None


class TFLiteGenerator:
    """Runs the prefill/decode signatures of one .tflite file.

    ``generate(prompt, max_new_tokens)`` takes one prompt (a list of ids) and
    returns its new ids, or a list of ``batch_size`` prompts and returns a
    list of lists; ``timings`` then holds the prefill time and the per-token
    decode times (seconds) of the last call.
    """

    def __init__(self, path, num_threads=1):
        self.path = str(path)
        self.interpreter = open_interpreter(self.path, num_threads)
        signatures = self.interpreter.get_signature_list()
        step = [s for s in STEP_SIGNATURES if s in signatures]
        if "prefill" not in signatures or not step:
            raise ExportError(f"{self.path!r} has signatures {sorted(signatures)}; generation "
                              f"needs 'prefill' and one of {STEP_SIGNATURES} (export a causal "
                              "LM such as GPT or Mamba)")
        self.prefill_runner = self.interpreter.get_signature_runner("prefill")
        self.step_runner = self.interpreter.get_signature_runner(step[0])
        self.prefill_inputs = self.prefill_runner.get_input_details()
        self.decode_inputs = self.step_runner.get_input_details()
        for needed, have, name in ((("token_ids",), self.prefill_inputs, "prefill"),
                                   (("token_id",), self.decode_inputs, step[0])):
            if not set(needed) <= set(have):
                raise ExportError(f"signature {name!r} takes {sorted(have)}; expected "
                                  f"{list(needed)}")
        self.batch_size, self.prefill_length = (
            int(d) for d in self.prefill_inputs["token_ids"]["shape"])
        self.state_names = sorted(n for n in self.decode_inputs if n not in ("token_id", "index"))
        absent = [n for n in self.state_names
                  if n not in self.prefill_runner.get_output_details()]
        if absent:
            raise ExportError(f"prefill does not output the state {absent} that "
                              f"{step[0]!r} takes")
        self.max_length = None
        if "index" in self.decode_inputs and "cache" in self.decode_inputs:
            self.max_length = int(self.decode_inputs["cache"]["shape"][-2])
        outputs = self.prefill_runner.get_output_details()
        self.vocab_size = int(outputs["logits"]["shape"][-1]) if "logits" in outputs else None
        self.timings = {}

    # ---- the two signatures

    def prefill(self, prompts):
        """Pads ``prompts`` (one list of ids per batch row, each at most the
        exported length) as the file expects; returns (logits, state)."""
        length = self.prefill_length
        if len(prompts) != self.batch_size:
            raise ExportError(f"this file generates {self.batch_size} sequence(s) at a time; "
                              f"got {len(prompts)} prompts")
        ids = np.zeros((self.batch_size, length), "int32")
        feed = {}
        if "prompt_length" in self.prefill_inputs:  # right-padded
            for row, prompt in enumerate(prompts):
                ids[row, :len(prompt)] = prompt
            feed["prompt_length"] = np.array([len(p) for p in prompts], "int32")
        elif "padding_mask" in self.prefill_inputs:  # left-padded
            mask = np.zeros_like(ids)
            for row, prompt in enumerate(prompts):
                ids[row, length - len(prompt):] = prompt
                mask[row, length - len(prompt):] = 1
            feed["padding_mask"] = mask
        elif all(len(p) == length for p in prompts):
            ids[:] = prompts
        else:
            raise ExportError(f"the prefill signature takes exactly {length} tokens and "
                              "neither prompt_length nor padding_mask; got prompts of "
                              f"{sorted({len(p) for p in prompts})} tokens")
        out = self.prefill_runner(token_ids=ids, **feed)
        return out["logits"], {n: out[n] for n in self.state_names}

    def step(self, token_ids, state, position=None):
        """Logits of one token per row at ``position`` (needed by files whose
        step takes an ``index``), and the next state."""
        feed = {"token_id": np.asarray(token_ids, "int32").reshape(-1, 1), **state}
        if "index" in self.decode_inputs:
            if position is None:
                raise ExportError("this file's step signature takes the token's position")
            feed["index"] = np.full(self.decode_inputs["index"]["shape"], position, "int32")
        out = self.step_runner(**feed)
        return out["logits"], {n: out["next_" + n] for n in self.state_names}

    # ---- the loop

    def generate(self, prompts, max_new_tokens=32, temperature=None, top_k=None, seed=None,
                 end_id=None):
        """New ids after each prompt: greedy by default; with ``temperature`` > 0
        or ``top_k``, sampled from softmax(logits / temperature) (1.0 when only
        ``top_k`` is given) over the ``top_k`` best. A row stops at ``end_id``
        (padded with it while the others go on)."""
        single = len(prompts) > 0 and all(np.ndim(t) == 0 for t in prompts)
        batch = [[int(t) for t in p] for p in ([prompts] if single else prompts)]
        if not batch or any(not p for p in batch):
            raise ExportError("an empty prompt has no token to continue from")
        if max_new_tokens < 1:
            raise ExportError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        _check_ids(batch, self.vocab_size)
        _check_sampling(temperature, top_k, self.vocab_size)
        longest = max(len(p) for p in batch)
        if self.max_length is not None and longest + max_new_tokens > self.max_length:
            raise ExportError(f"prompt of {longest} tokens + max_new_tokens={max_new_tokens} "
                              f"passes the exported cache of {self.max_length} positions")
        heads = [p[:self.prefill_length] for p in batch]
        tails = [p[self.prefill_length:] for p in batch]
        if len(batch) > 1 and (any(tails) or ("index" in self.decode_inputs
                                               and len({len(p) for p in batch}) > 1)):
            raise ExportError("prompts of a batch must share their length here (a step has one "
                              f"position), and fit the exported prefill of "
                              f"{self.prefill_length} tokens; got lengths "
                              f"{[len(p) for p in batch]}")
        if temperature is None:
            temperature = 1.0 if top_k else 0.0
        rng = np.random.default_rng(seed)
        start = time.perf_counter()
        logits, state = self.prefill(heads)
        position = len(heads[0])
        for token in tails[0]:  # the rest of a long prompt (batch 1)
            logits, state = self.step([token], state, position)
            position += 1
        self.timings = {"prefill_s": time.perf_counter() - start, "decode_s": []}
        generated, done = [], np.zeros(len(batch), bool)
        for i in range(max_new_tokens):
            token = choose(logits, temperature, top_k, rng)
            if end_id is not None:
                token = np.where(done, end_id, token).astype("int32")
                done |= token == end_id
            generated.append(token)
            if done.all() or i == max_new_tokens - 1:
                break
            start = time.perf_counter()
            logits, state = self.step(token, state, position)
            self.timings["decode_s"].append(time.perf_counter() - start)
            position += 1
        rows = np.stack(generated, axis=1).tolist()
        if end_id is not None:  # drop the padding after each row's end token
            rows = [r[:r.index(end_id) + 1] if end_id in r else r for r in rows]
        return rows[0] if single else rows


def next_token_agreement(generator, model, prompt, num_tokens):
    """Fraction of ``num_tokens`` positions where the file's greedy next token
    equals the Keras model's, both fed the Keras model's greedy continuation
    of ``prompt`` (teacher forcing: one disagreement does not derail the rest).
    ``model`` has ``prefill(ids)`` and ``step(token, state)`` (Mamba)."""
    keras_logits, state = model.prefill(np.asarray([prompt], "int32"))
    file_logits, file_state = generator.prefill([prompt])
    position, same = len(prompt), 0
    for _ in range(num_tokens):
        token = np.asarray(keras_logits).argmax(-1).astype("int32")
        same += int(np.asarray(file_logits).argmax(-1)[0] == token[0])
        keras_logits, state = model.step(token, state)
        file_logits, file_state = generator.step(token, file_state, position)
        position += 1
    return same / num_tokens


def _check_ids(prompts, vocab_size):
    """Ids outside the file's vocabulary would index outside its embedding table
    (TFLite gathers without a bounds check)."""
    bad = sorted({t for p in prompts for t in p
                  if t < 0 or (vocab_size is not None and t >= vocab_size)})
    if bad:
        top = f"{vocab_size - 1}" if vocab_size is not None else "vocabulary size - 1"
        raise ExportError(f"prompt token ids {bad[:5]} are outside the vocabulary (0..{top})")


def _check_sampling(temperature, top_k, vocab_size):
    if temperature is not None and not (np.isfinite(temperature) and temperature >= 0):
        raise ExportError(f"temperature must be a finite number >= 0 (0: greedy), got "
                          f"{temperature}")
    if top_k is not None and (top_k < 1 or (vocab_size is not None and top_k > vocab_size)):
        raise ExportError(f"top_k must be in 1..{vocab_size or 'vocabulary size'}, got {top_k}")


def choose(logits, temperature=0.0, top_k=None, rng=None):
    """Next token per row of ``logits`` (batch, vocab): argmax, or a sample at
    ``temperature`` among the ``top_k`` best (all tokens when None)."""
    logits = np.asarray(logits, "float64")
    if not temperature:
        return logits.argmax(-1).astype("int32")
    logits = logits / temperature
    if top_k:
        kth = np.sort(logits, axis=-1)[:, -top_k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    rng = rng or np.random.default_rng()
    return np.array([rng.choice(len(p), p=p) for p in probs], "int32")


# ---------------------------------------------------------------- CLI

def _define_flags():
    from absl import flags

    flags.DEFINE_string("tflite", None, "a .tflite file with prefill and decode/step "
                        "signatures")
    flags.DEFINE_alias("model", "tflite")
    flags.DEFINE_string("tokenizer", None, "a preset folder whose tokenizer encodes "
                        "--prompt and decodes the output")
    flags.DEFINE_multi_string("prompt", None, "prompt text (needs --tokenizer); repeatable")
    flags.DEFINE_list("prompt_ids", None, "prompt as comma-separated token ids")
    flags.DEFINE_integer("max_new_tokens", 32, "tokens to generate")
    flags.DEFINE_float("temperature", None, "sample at this temperature (default: greedy, "
                       "or 1.0 with --top_k)")
    flags.DEFINE_integer("top_k", None, "sample among the k most likely tokens")
    flags.DEFINE_integer("seed", None, "sampling seed")
    flags.DEFINE_integer("num_threads", 1, "interpreter threads")
    flags.DEFINE_string("agreement_with", None, "a preset folder of the exported recurrent "
                        "model: print how often the file's greedy next token equals Keras' "
                        "(teacher-forced)")
    return flags.FLAGS


def main(argv):
    del argv
    FLAGS = _FLAGS
    if not FLAGS.tflite:
        raise ExportError("--tflite (a .tflite file) is required")
    tokenizer = None
    if FLAGS.tokenizer:
        from keras_zoo.data.tokenizers import Tokenizer

        tokenizer = Tokenizer.load(FLAGS.tokenizer)
    if FLAGS.prompt:
        if tokenizer is None:
            raise ExportError("--prompt needs --tokenizer (a preset folder); or give --prompt_ids")
        prompts = tokenizer.encode(FLAGS.prompt)
    elif FLAGS.prompt_ids:
        try:
            prompts = [[int(t) for t in FLAGS.prompt_ids]]
        except ValueError:
            raise ExportError(f"--prompt_ids takes whole numbers, got "
                              f"{','.join(FLAGS.prompt_ids)!r}") from None
    else:
        raise ExportError("give --prompt (with --tokenizer) or --prompt_ids")
    generator = TFLiteGenerator(FLAGS.tflite, FLAGS.num_threads)
    if FLAGS.agreement_with:
        import keras_zoo

        model = keras_zoo.from_preset(FLAGS.agreement_with)
        rate = next_token_agreement(generator, model, prompts[0], FLAGS.max_new_tokens)
        print(f"greedy next token equal to Keras at {rate:.1%} of {FLAGS.max_new_tokens} "
              "teacher-forced positions")
        return
    end = tokenizer.end_id if tokenizer is not None else None
    for prompt in prompts:
        new = generator.generate(prompt, FLAGS.max_new_tokens, FLAGS.temperature, FLAGS.top_k,
                                 FLAGS.seed, end)
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
