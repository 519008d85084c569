"""GPT-2 side by side: keras_zoo ``gpt2`` vs keras-hub's GPT2 at the same config.

Training: tokens/s of one step (forward + backward + AdamW) on a fixed batch
of random token windows, each library with the AdamW its users get
(keras_zoo's fused one; ``keras.optimizers.AdamW`` for keras-hub), the same
next-token loss on logits through the tied embedding: keras_zoo ``GPT``
against keras-hub ``GPT2CausalLM`` (``GPT2Backbone`` + its tied
``token_embedding`` head), dropout 0.1 in both, no XLA (the CPU default of
both trainers; ``--jit`` turns it on for both).

Generation: greedy tokens/s for one prompt of ``--prompt_length`` tokens
continued by ``--new_tokens``:

* keras_zoo ``generate`` with the key/value cache (prefill once, then one
  token per step);
* keras-hub ``GPT2CausalLM.generate`` (its own cache; the whole loop
  XLA-compiled, as keras-hub does by default);
* recomputing the prefix (no cache: every new token is a forward pass over
  the whole sequence so far). Timed forward passes at five lengths between
  the prompt and the final length, summed over every step by linear
  interpolation: doing all of them takes hours on a small CPU.

Compilation is excluded: each generation runs once untimed at the same
shapes first. Each row runs in a fresh process; load average in the header.

    python -m benchmarks.text_gpt                    # gpt2, batch 2 x 256; prompt 64 + 512
    python -m benchmarks.text_gpt --quick            # smoke run (a tiny GPT)
"""

import argparse

from benchmarks import common

MODULE = "benchmarks.text_gpt"
TARGETS = {"train_vs_keras_hub": 1.05}
GPT2 = {"vocab_size": 50257, "max_positions": 1024, "hidden_dim": 768, "num_layers": 12,
        "num_heads": 12}
TINY = {"vocab_size": 512, "max_positions": 128, "hidden_dim": 64, "num_layers": 2,
        "num_heads": 4}


def build(impl, config, sequence_length):
    if impl == "keras_zoo":
        import keras_zoo

        return keras_zoo.GPT(**config, sequence_length=sequence_length, dropout=0.1)
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=config["vocab_size"], num_layers=config["num_layers"],
        num_heads=config["num_heads"], hidden_dim=config["hidden_dim"],
        intermediate_dim=4 * config["hidden_dim"], dropout=0.1,
        max_sequence_length=config["max_positions"])
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def _inputs(impl, ids):
    import numpy as np

    if impl == "keras_zoo":
        return ids
    return {"token_ids": ids, "padding_mask": np.ones_like(ids, dtype=bool)}


def train_job(impl, config, batch_size, sequence_length, warmup, steps, jit, seed=0):
    import keras
    import numpy as np

    keras.utils.set_random_seed(seed)
    model = build(impl, config, sequence_length)
    if impl == "keras_zoo":
        from keras_zoo.training import AdamW
    else:
        AdamW = keras.optimizers.AdamW
    model.compile(optimizer=AdamW(1e-4), jit_compile=jit,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(seed)
    windows = rng.integers(0, config["vocab_size"], (batch_size, sequence_length + 1))
    x = _inputs(impl, windows[:, :-1].astype("int32"))
    y = windows[:, 1:].astype("int32")
    median, _, cpu = common.median_seconds(lambda: model.train_on_batch(x, y), warmup, steps)
    return {"seconds": median, "cpu_seconds": cpu, "params": int(model.count_params()),
            "tokens_per_s": batch_size * sequence_length / median}


def generate_job(impl, config, prompt_length, new_tokens, seed=0):
    import time

    import keras
    import numpy as np

    keras.utils.set_random_seed(seed)
    model = build(impl, config, prompt_length + new_tokens)
    prompt = np.random.default_rng(seed).integers(0, config["vocab_size"], (1, prompt_length))
    if impl == "keras_zoo":
        def run():
            return model.generate(prompt.tolist(), new_tokens, stop_at_end=False)[0]
    else:
        model.compile(sampler="greedy")  # GPT2CausalLM samples top-k unless told
        total = prompt_length + new_tokens
        ids = np.zeros((1, total), "int32")
        ids[:, :prompt_length] = prompt
        mask = np.zeros((1, total), bool)
        mask[:, :prompt_length] = True

        def run():
            out = model.generate({"token_ids": ids, "padding_mask": mask}, stop_token_ids=None)
            return np.asarray(out["token_ids"])[0, prompt_length:].tolist()
    start = time.perf_counter()
    first = run()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    again = run()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "first_call_s": compile_s, "tokens": len(again),
            "tokens_per_s": len(again) / seconds, "deterministic": first == again,
            "params": int(model.count_params())}


def recompute_job(config, prompt_length, new_tokens, points=5, seed=0):
    """Greedy generation without a cache: step t is a forward pass over
    prompt_length + t tokens. Forward passes timed at ``points`` lengths;
    the total is their linear interpolation summed over all steps."""
    import keras
    import numpy as np
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    model = build("keras_zoo", config, prompt_length + new_tokens)
    forward = tf.function(lambda ids: model(ids, training=False)[:, -1], reduce_retracing=True)
    rng = np.random.default_rng(seed)
    lengths = np.linspace(prompt_length, prompt_length + new_tokens - 1, points).astype(int)
    times = []
    for length in lengths:
        ids = tf.constant(rng.integers(0, config["vocab_size"], (1, int(length))), "int32")
        median, _, _ = common.median_seconds(lambda ids=ids: forward(ids).numpy(), 1, 3)
        times.append(median)
    steps = np.arange(prompt_length, prompt_length + new_tokens)
    seconds = float(np.interp(steps, lengths, times).sum())
    return {"seconds": seconds, "tokens": new_tokens, "tokens_per_s": new_tokens / seconds,
            "forward_ms": {int(n): 1e3 * t for n, t in zip(lengths, times)}}


HANDLERS = {"train": train_job, "generate": generate_job, "recompute": recompute_job}


def plan(args):
    config = TINY if args.quick else GPT2
    train = {"config": config, "batch_size": args.batch_size,
             "sequence_length": args.sequence_length, "warmup": args.warmup,
             "steps": args.steps, "jit": args.jit}
    gen = {"config": config, "prompt_length": args.prompt_length, "new_tokens": args.new_tokens}
    jobs = []
    for impl in ("keras_zoo", "keras_hub"):
        jobs.append(({"kind": "train", "impl": impl},
                     {"kind": "train", "group": "keras", "args": {"impl": impl, **train}}))
    for impl in ("keras_zoo", "keras_hub"):
        jobs.append(({"kind": "generate", "impl": impl},
                     {"kind": "generate", "group": "keras", "args": {"impl": impl, **gen}}))
    jobs.append(({"kind": "recompute", "impl": "keras_zoo"},
                 {"kind": "recompute", "group": "keras", "args": gen}))
    return jobs


def report(args, jobs, results):
    name = "tiny GPT (--quick)" if args.quick else "gpt2 (124M)"
    lines = [f"GPT benchmark: {name}", common.machine_line(), ""]
    rows, train = [], {}
    for (label, _), r in zip(jobs, results):
        if label["kind"] != "train":
            continue
        if "error" in r:
            rows.append([label["impl"], "-", "-", "-", "-", r["error"]])
            continue
        train[label["impl"]] = r["tokens_per_s"]
        rows.append([label["impl"], f"{r['params']:,}", common.fmt(r["tokens_per_s"]),
                     common.fmt(r["seconds"] * 1e3, 0), common.fmt(r["cpu_seconds"], 2), ""])
    lines += [(f"Training (batch {args.batch_size} x {args.sequence_length} tokens, float32, "
              f"XLA {'on' if args.jit else 'off'}, median of {args.steps} steps)"), "",
              common.markdown_table(["implementation", "params", "tokens/s", "step ms",
                                     "CPU s/step", "error"], rows), ""]
    rows, gen = [], {}
    what = {"generate": {"keras_zoo": "keras_zoo generate (key/value cache)",
                         "keras_hub": "keras-hub GPT2CausalLM.generate (XLA)"},
            "recompute": {"keras_zoo": "keras_zoo, recomputing the prefix (no cache)"}}
    for (label, _), r in zip(jobs, results):
        if label["kind"] == "train":
            continue
        row_name = what[label["kind"]][label["impl"]]
        if "error" in r:
            rows.append([row_name, "-", "-", "-", r["error"]])
            continue
        gen[(label["kind"], label["impl"])] = r["tokens_per_s"]
        note = ("estimated from forward passes of " + ", ".join(
            f"{n} tokens {common.fmt(ms, 0)} ms" for n, ms in r["forward_ms"].items())
            if label["kind"] == "recompute" else
            f"first call (compiles) {common.fmt(r['first_call_s'], 1)} s; "
            f"timed call {'repeats' if r['deterministic'] else 'DIFFERS FROM'} its tokens")
        rows.append([row_name, str(r["tokens"]), common.fmt(r["seconds"], 2),
                     common.fmt(r["tokens_per_s"], 2), note])
    lines += [(f"Greedy generation (batch 1, prompt {args.prompt_length}, "
              f"{args.new_tokens} new tokens)"), "",
              common.markdown_table(["implementation", "new tokens", "seconds", "tokens/s",
                                     "note"], rows), "", "Targets:"]
    if "keras_zoo" in train and "keras_hub" in train:
        lines.append(common.target_line("training tokens/s keras_zoo / keras_hub",
                                        train["keras_zoo"] / train["keras_hub"],
                                        TARGETS["train_vs_keras_hub"], unit="x"))
    zoo = gen.get(("generate", "keras_zoo"))
    for key, label in ((("generate", "keras_hub"), "keras-hub generate"),
                       (("recompute", "keras_zoo"), "recomputing the prefix")):
        if zoo and gen.get(key):
            lines.append(f"- cached generation / {label}: {zoo / gen[key]:.2f}x")
    if args.quick:
        lines.append("- note: --quick runs a tiny GPT for a smoke test; its numbers mean nothing")
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("--quick", action="store_true", help="a tiny GPT, few steps: a smoke run")
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--sequence_length", type=int, default=256)
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    p.add_argument("--steps", type=int, default=5, help="timed training steps (median)")
    p.add_argument("--jit", action="store_true", help="XLA-compile both training steps")
    p.add_argument("--prompt_length", type=int, default=64)
    p.add_argument("--new_tokens", type=int, default=512)
    args = p.parse_args(argv)
    if args.quick:
        args.sequence_length, args.warmup, args.steps = 32, 1, 2
        args.prompt_length, args.new_tokens = 8, 16
    common.require_positive(p, args, ("batch_size", "sequence_length", "steps",
                                      "prompt_length", "new_tokens"))
    return args


def main(argv=None):
    common.script_main(MODULE, HANDLERS, parse_args, plan, report, argv)


if __name__ == "__main__":
    main()
