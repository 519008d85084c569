r"""Language-model recipe on the bundled English prose (any CausalLM run: GPT,
Mamba): evaluation, samples and on-device export.

    python -m experiments.train --config=experiments/configs/gpt_prose.py \
        --model_dir=runs/gpt_prose                                  # train (CPU)
    python -m experiments.recipes.gpt_prose --model_dir=runs/gpt_prose
    python -m experiments.train --config=experiments/configs/text_mamba.py \
        --model_dir=runs/mamba_prose                                # the Mamba beside it
    python -m experiments.recipes.gpt_prose --model_dir=runs/mamba_prose

1. Validation perplexity of the trained model next to two baselines on the
   same tokens (the validation windows the trainer evaluates, the same
   SentencePiece tokenizer): add-one unigram frequencies and an interpolated
   Kneser-Ney bigram model, both counted on the training split's token stream.
2. A few generated samples (greedy and top-k) from prompts in the style of
   the corpus.
3. TFLite: float32 and dynamic-range int8 files with ``prefill`` and
   ``decode`` (GPT) or ``step`` (Mamba) signatures; greedy tokens of the .tflite host loop (export.generate) vs
   Keras on the prompts; file sizes and median per-token decode latency
   (1 thread).

Numbers go to stdout and ``<model_dir>/recipe_results.json``.
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from absl import app, flags

flags.DEFINE_string("model_dir", None, "The training run (uses best/, else last/).")
flags.DEFINE_string("dataset", "english_prose", "Documents dataset the run trained on.")
flags.DEFINE_integer("batch_size", 16, "Evaluation batch.")
flags.DEFINE_integer("sample_tokens", 48, "Tokens per generated sample.")
flags.DEFINE_integer("parity_tokens", 32, "Greedy tokens compared between TFLite and Keras.")
flags.DEFINE_bool("export", True, "Export to TFLite and compare.")
FLAGS = flags.FLAGS

PROMPTS = ["Return the number of", "The default value is", "This function raises",
           "If the file does not exist,"]


def trained_model(model_dir):
    import keras_zoo

    for sub in ("best", "last"):
        folder = os.path.join(model_dir, sub)
        if os.path.exists(os.path.join(folder, "config.json")):
            return keras_zoo.from_preset(folder), folder
    raise SystemExit(f"{model_dir!r} has no best/ or last/ preset: train it first")


def perplexities(model, spec, batch_size):
    """Model, unigram and bigram perplexity on the validation windows."""
    import keras
    from keras import ops

    from keras_zoo.evaluation import bigram_perplexity, unigram_perplexity

    train, _ = model.load_data(spec, "train")
    end = model.tokenizer.end_id
    stream = [t for doc in model.tokenizer.encode(
        [d.decode("utf-8") for d in train.map(lambda e: e["text"]).as_numpy_iterator()])
        for t in [*doc, end]]
    examples, info = model.load_data(spec, "validation")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")
    nll, xs, ys = 0.0, [], []
    for x, y in model.batch_data(examples, info, batch_size, training=False):
        nll += float(loss(y, model(x, training=False)))
        xs.append(ops.convert_to_numpy(x))
        ys.append(ops.convert_to_numpy(y))
    x, y = np.concatenate(xs), np.concatenate(ys)
    vocab = model.get_zoo_config()["vocab_size"]
    return {"validation_tokens": int(y.size), "train_tokens": len(stream),
            "model": float(np.exp(nll / y.size)),
            "unigram": unigram_perplexity(stream, y, vocab),
            "bigram_kneser_ney": bigram_perplexity(stream, x, y, vocab)}


def samples(model, n_tokens):
    greedy = model.generate(PROMPTS, max_new_tokens=n_tokens)
    top_k = model.generate(PROMPTS, max_new_tokens=n_tokens, sampler="top_k", top_k=40,
                           temperature=0.8, seed=0)
    return [{"prompt": p, "greedy": g, "top_k_40_t0.8": k}
            for p, g, k in zip(PROMPTS, greedy, top_k)]


def tflite(model, folder, n_tokens):
    from export import export_tflite
    from export.generate import TFLiteGenerator

    name = type(model).__name__.lower()  # gpt, mamba: any CausalLM
    paths = {"none": os.path.join(folder, f"{name}_float32.tflite"),
             "dynamic_int8": os.path.join(folder, f"{name}_dynamic_int8.tflite")}
    start = time.perf_counter()
    results = export_tflite(model, paths)
    seconds = time.perf_counter() - start
    prompts = model.tokenizer.encode(PROMPTS)
    keras_tokens = model.generate(prompts, max_new_tokens=n_tokens, stop_at_end=False)
    out = {"export_seconds": seconds}
    for quantization, path in paths.items():
        generator = TFLiteGenerator(path, num_threads=1)
        tokens, steps = [], []
        for prompt in prompts:
            tokens.append(generator.generate(prompt, n_tokens))
            steps += generator.timings["decode_s"]
        out[quantization] = {
            "size_bytes": results[quantization]["size_bytes"],
            "ops_builtin_only": not (results[quantization]["ops"]["flex"]
                                     or results[quantization]["ops"]["custom"]),
            "greedy_equal_keras": [t == k for t, k in zip(tokens, keras_tokens)],
            "decode_ms_per_token_median": float(1e3 * np.median(steps)),
            "decode_ms_per_token_p90": float(1e3 * np.percentile(steps, 90)),
        }
    return out


def main(argv):
    del argv
    if not FLAGS.model_dir:
        raise SystemExit("--model_dir is required (the experiments.train run)")
    model, folder = trained_model(FLAGS.model_dir)
    results = {"preset": folder, "config": model.get_zoo_config(),
               "parameters": model.count_params(), "load_average": os.getloadavg()}
    results["perplexity"] = perplexities(model, FLAGS.dataset, FLAGS.batch_size)
    print(json.dumps(results["perplexity"], indent=2))
    results["samples"] = samples(model, FLAGS.sample_tokens)
    for s in results["samples"]:
        print(f"\n[greedy] {s['greedy']}\n[top-k]  {s['top_k_40_t0.8']}")
    if FLAGS.export:
        results["tflite"] = tflite(model, FLAGS.model_dir, FLAGS.parity_tokens)
        print(json.dumps(results["tflite"], indent=2))
    with open(os.path.join(FLAGS.model_dir, "recipe_results.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    app.run(main)
