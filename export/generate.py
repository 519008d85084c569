"""Text generation from an exported .tflite file alone (LiteRT interpreter + NumPy).

    python -m export.export --preset=mamba_tiny --output=mamba.tflite
    python -m export.generate --tflite=mamba.tflite --prompt_ids=72,101,108 --max_new_tokens=20
    python -m export.generate --tflite=mamba.tflite --tokenizer=PRESET_FOLDER --prompt="Once"

Generic over causal language models that export two signatures:

* ``prefill``: ``token_ids`` and ``padding_mask`` (batch, L) at a fixed length
  L, prompts left-padded (mask 0 = padding) -> ``logits`` (batch, vocab) for
  the next token, plus the model's generation state as further outputs;
* ``step`` (or ``decode``): ``token_id`` (batch, 1) plus one input per state
  tensor -> ``logits`` and ``next_<name>`` for every state input ``<name>``.

The state is opaque here: whatever tensors the family carries (Mamba's conv
window and SSM state; a decoder's key/value cache, and its position as one
more state tensor that prefill outputs and each step advances) go out of
prefill under a step input's name, and come back out of each step as
``next_<name>``. Nothing is recomputed: one prefill, then one step per token.
"""

import sys

import numpy as np

from export.tflite import ExportError


class TFLiteGenerator:
    """Runs the prefill/step signatures of one .tflite file."""

    def __init__(self, path, num_threads=1):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        signatures = self.interpreter.get_signature_list()
        step_name = next((n for n in ("step", "decode") if n in signatures), None)
        if "prefill" not in signatures or step_name is None:
            raise ExportError(f"{path} has signatures {sorted(signatures)}; generation needs "
                              "'prefill' and 'step' (or 'decode')")
        self.prefill_runner = self.interpreter.get_signature_runner("prefill")
        self.step_runner = self.interpreter.get_signature_runner(step_name)
        prefill_inputs = self.prefill_runner.get_input_details()
        step_inputs = self.step_runner.get_input_details()
        for needed, have, name in ((("token_ids", "padding_mask"), prefill_inputs, "prefill"),
                                   (("token_id",), step_inputs, step_name)):
            if not set(needed) <= set(have):
                raise ExportError(f"signature {name!r} takes {sorted(have)}; expected "
                                  f"{list(needed)}")
        self.batch_size, self.prefill_length = (int(d) for d in
                                                prefill_inputs["token_ids"]["shape"])
        self.state_names = sorted(n for n in step_inputs if n != "token_id")
        outputs = set(self.prefill_runner.get_output_details())
        absent = [n for n in self.state_names if n not in outputs]
        if absent:
            raise ExportError(f"prefill does not output the state {absent} that step takes")

    def prefill(self, prompts):
        """Left-pads ``prompts`` (lists of ids, one per batch row) to the exported
        length; returns (logits, state)."""
        if len(prompts) != self.batch_size:
            raise ValueError(f"this file generates {self.batch_size} sequence(s) at a time; got "
                             f"{len(prompts)} prompts")
        ids = np.zeros((self.batch_size, self.prefill_length), "int32")
        mask = np.zeros_like(ids)
        for row, prompt in enumerate(prompts):
            n = len(prompt)
            if n > self.prefill_length:
                raise ValueError(f"prompt of {n} tokens is longer than the exported prefill "
                                 f"length {self.prefill_length}; re-export with a longer "
                                 "prefill length or shorten the prompt")
            if n == 0:
                raise ValueError("an empty prompt has no token to continue from")
            ids[row, self.prefill_length - n:] = prompt
            mask[row, self.prefill_length - n:] = 1
        out = self.prefill_runner(token_ids=ids, padding_mask=mask)
        return out["logits"], {n: out[n] for n in self.state_names}

    def step(self, token_ids, state):
        out = self.step_runner(token_id=np.asarray(token_ids, "int32").reshape(-1, 1), **state)
        return out["logits"], {n: out["next_" + n] for n in self.state_names}

    def generate(self, prompts, max_new_tokens, temperature=0.0, top_k=None, seed=0,
                 end_id=None):
        """New token ids per prompt. ``temperature=0``: greedy; otherwise sampling
        from softmax(logits / temperature), over the ``top_k`` best if given."""
        rng = np.random.default_rng(seed)
        logits, state = self.prefill(prompts)
        generated, done = [], np.zeros(self.batch_size, bool)
        for i in range(max_new_tokens):
            token = choose(logits, temperature, top_k, rng)
            if end_id is not None:
                token = np.where(done, end_id, token)
                done |= token == end_id
            generated.append(token)
            if done.all() or i == max_new_tokens - 1:
                break
            logits, state = self.step(token, state)
        return np.stack(generated, axis=1).tolist()


def next_token_agreement(generator, model, prompt, num_tokens):
    """Fraction of ``num_tokens`` positions where the file's greedy next token
    equals the Keras model's, both fed the Keras model's greedy continuation
    of ``prompt`` (teacher forcing: one disagreement does not derail the rest)."""
    keras_logits, state = model.prefill(np.asarray([prompt], "int32"))
    file_logits, file_state = generator.prefill([prompt])
    same = 0
    for _ in range(num_tokens):
        token = np.asarray(keras_logits).argmax(-1).astype("int32")
        same += int(np.asarray(file_logits).argmax(-1)[0] == token[0])
        keras_logits, state = model.step(token, state)
        file_logits, file_state = generator.step(token, file_state)
    return same / num_tokens


def choose(logits, temperature=0.0, top_k=None, rng=None):
    """Next token per row: argmax, or a sample at ``temperature`` (top-k optional)."""
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


def _define_flags():
    from absl import flags

    flags.DEFINE_string("tflite", None, "a .tflite file with prefill and step signatures")
    flags.DEFINE_list("prompt_ids", None, "prompt token ids, comma-separated")
    flags.DEFINE_string("prompt", None, "prompt text (needs --tokenizer)")
    flags.DEFINE_string("tokenizer", None, "preset folder holding the model's tokenizer")
    flags.DEFINE_integer("max_new_tokens", 32, "tokens to generate")
    flags.DEFINE_float("temperature", 0.0, "0 = greedy; > 0 samples")
    flags.DEFINE_integer("top_k", None, "sample among the k most likely tokens")
    flags.DEFINE_integer("seed", 0, "sampling seed")
    flags.DEFINE_integer("num_threads", 1, "interpreter threads")
    flags.DEFINE_string("agreement_with", None, "a preset folder of the exported model: print "
                        "how often the file's greedy next token equals Keras' (teacher-forced)")
    return flags.FLAGS


def main(argv):
    del argv
    FLAGS = _FLAGS
    if not FLAGS.tflite:
        raise ExportError("--tflite is required")
    tokenizer = None
    if FLAGS.tokenizer:
        from keras_zoo.data.tokenizers import Tokenizer

        tokenizer = Tokenizer.load(FLAGS.tokenizer)
    if FLAGS.prompt is not None:
        if tokenizer is None:
            raise ExportError("--prompt needs --tokenizer (a preset folder); or give --prompt_ids")
        prompt = tokenizer.encode([FLAGS.prompt])[0]
    elif FLAGS.prompt_ids:
        prompt = [int(t) for t in FLAGS.prompt_ids]
    else:
        raise ExportError("give --prompt_ids or --prompt")
    generator = TFLiteGenerator(FLAGS.tflite, FLAGS.num_threads)
    if FLAGS.agreement_with:
        import keras_zoo

        model = keras_zoo.from_preset(FLAGS.agreement_with)
        rate = next_token_agreement(generator, model, prompt, FLAGS.max_new_tokens)
        print(f"greedy next token equal to Keras at {rate:.1%} of {FLAGS.max_new_tokens} "
              "teacher-forced positions")
        return
    end_id = tokenizer.end_id if tokenizer is not None else None
    new = generator.generate([prompt], FLAGS.max_new_tokens, FLAGS.temperature, FLAGS.top_k,
                             FLAGS.seed, end_id)[0]
    print(tokenizer.decode([prompt + new])[0] if tokenizer is not None else
          ",".join(map(str, new)))


_FLAGS = None


def run():
    global _FLAGS
    import os

    from absl import app

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    _FLAGS = _define_flags()

    def guarded(argv):
        try:
            main(argv)
        except (ExportError, ValueError) as e:
            print(f"generate error: {e}", file=sys.stderr)
            sys.exit(2)
    app.run(guarded)


if __name__ == "__main__":
    run()
