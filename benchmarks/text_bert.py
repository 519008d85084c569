"""BERT training throughput: keras_zoo's BERT vs keras-hub's BertBackbone, same config.

One training step = forward + backward + AdamW update of the encoder with a
2-class head on the pooled [CLS] (a fine-tuning step) on a fixed batch of
random token ids; dropout 0.1 in both, as their defaults. Each library
trains with the AdamW its users get (keras_zoo's fused one, what
``keras-zoo-train`` uses; ``keras.optimizers.AdamW`` for keras-hub, which has
none of its own). Both run in their own process, one after the other (or
round-robin with ``--rounds``), in the same invocation.

Reports training tokens/s (batch x sequence length / median step time) and
the CPU seconds per step, which other processes on a shared machine do not
stretch.

    python -m benchmarks.text_bert                       # bert_base_uncased, 8 x 128 tokens
    python -m benchmarks.text_bert --steps 3 --rounds 2
    python -m benchmarks.text_bert --quick               # smoke run (a 2-block BERT)
"""

import argparse

from benchmarks import common

MODULE = "benchmarks.text_bert"
TARGET = 1.05  # keras_zoo / keras-hub training tokens/s
BASE = {"vocab_size": 30522, "hidden_dim": 768, "num_layers": 12, "num_heads": 12,
        "intermediate_dim": 3072, "max_sequence_length": 512}
QUICK = {"vocab_size": 1000, "hidden_dim": 64, "num_layers": 2, "num_heads": 2,
         "intermediate_dim": 128, "max_sequence_length": 64}


def _classifier(impl, config):
    """The encoder + one shared kind of head: Dense(2) on the pooled output."""
    import keras

    if impl == "keras_zoo":
        import keras_zoo

        backbone = keras_zoo.BERT(**config, sequence_length=min(128, config[
            "max_sequence_length"]))
    else:
        import keras_hub

        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=config["vocab_size"], num_layers=config["num_layers"],
            num_heads=config["num_heads"], hidden_dim=config["hidden_dim"],
            intermediate_dim=config["intermediate_dim"], dropout=0.1,
            max_sequence_length=config["max_sequence_length"])
    inputs = {k: keras.Input((None,), dtype="int32", name=k)
              for k in ("token_ids", "segment_ids", "padding_mask")}
    pooled = backbone(inputs)["pooled_output"]
    logits = keras.layers.Dense(2, name="head")(keras.layers.Dropout(0.1)(pooled))
    return keras.Model(inputs, logits), backbone.count_params()


def train_job(impl, config, batch_size, sequence_length, warmup, steps, jit_compile, seed=0):
    import keras
    import numpy as np

    keras.utils.set_random_seed(seed)
    model, backbone_params = _classifier(impl, config)
    if impl == "keras_zoo":
        from keras_zoo.training import AdamW
    else:
        AdamW = keras.optimizers.AdamW
    model.compile(optimizer=AdamW(1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    rng = np.random.default_rng(seed)
    shape = (batch_size, sequence_length)
    x = {"token_ids": rng.integers(5, config["vocab_size"], shape).astype("int32"),
         "segment_ids": (np.arange(sequence_length) >= sequence_length // 2)
         .astype("int32")[None].repeat(batch_size, 0),
         "padding_mask": np.ones(shape, "int32")}
    x = {k: keras.ops.convert_to_tensor(v) for k, v in x.items()}
    y = keras.ops.convert_to_tensor(rng.integers(0, 2, batch_size))
    median, _, cpu = common.median_seconds(lambda: model.train_on_batch(x, y), warmup, steps)
    return {"seconds": median, "cpu_seconds": cpu, "params": backbone_params,
            "jit": str(model.jit_compile)}


HANDLERS = {"train": train_job}


def plan(args):
    config = QUICK if args.quick else BASE
    jobs = []
    for impl in ("keras_zoo", "keras_hub"):
        jobs.append(({"impl": impl},
                     {"kind": "train", "group": "keras",
                      "args": {"impl": impl, "config": config, "batch_size": args.batch_size,
                               "sequence_length": args.sequence_length,
                               "warmup": args.warmup, "steps": args.steps,
                               "jit_compile": args.jit_compile}}))
    return jobs


def report(args, jobs, results):
    name = "BERT (2 blocks, width 64; --quick)" if args.quick else "bert_base_uncased"
    tokens = args.batch_size * args.sequence_length
    rounds = f", fastest of {args.rounds} rounds" if args.rounds > 1 else ""
    title = (f"## BERT training throughput ({name}, batch {args.batch_size} x "
             f"{args.sequence_length} tokens, float32{rounds})")
    lines = [title, "", common.machine_line(), ""]
    rows, rate = [], {}
    for (label, _), result in zip(jobs, results):
        if "error" in result:
            rows.append([label["impl"], "error: " + result["error"], "", "", "", ""])
            continue
        rate[label["impl"]] = tokens / result["seconds"]
        rows.append([label["impl"], f"{result['params']:,}", result["jit"],
                     common.fmt(tokens / result["seconds"], 0),
                     common.fmt(result["seconds"] * 1e3, 0),
                     common.fmt(result["cpu_seconds"], 2)])
    lines.append(common.markdown_table(
        ["implementation", "encoder params", "XLA (jit_compile)", "tokens/s", "step ms",
         "CPU s/step"], rows))
    lines.append("")
    if len(rate) == 2:
        lines.append(common.target_line("keras_zoo / keras_hub training tokens/s",
                                        rate["keras_zoo"] / rate["keras_hub"], TARGET, unit="x"))
    if args.quick:
        lines.append("- note: --quick is a smoke run of a tiny model; its speeds mean nothing")
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--sequence_length", type=int, default=128)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=1,
                   help="run both implementations this many times, round-robin; keep each "
                        "one's fastest round")
    p.add_argument("--jit_compile", action="store_true",
                   help="XLA-compile both train steps (off: the CPU default of the trainer)")
    p.add_argument("--quick", action="store_true", help="a tiny model, 1 step: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.batch_size, args.sequence_length, args.warmup, args.steps = 2, 16, 1, 1
    for flag in ("batch_size", "sequence_length", "steps", "rounds"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    limit = (QUICK if args.quick else BASE)["max_sequence_length"]
    if args.sequence_length > limit:
        p.error(f"--sequence_length={args.sequence_length} passes BERT's {limit} positions")
    return args


def main(argv=None):
    common.script_main(MODULE, HANDLERS, parse_args, plan, report, argv)


if __name__ == "__main__":
    main()
