"""The 2017 Transformer: training tokens/s against keras-hub's encoder/decoder
layers at the same config, and greedy decoding tokens/s with and without the
key/value cache. Each row runs in its own process (benchmarks.common).

    python -m benchmarks.text_transformer                # transformer_base, batch 8 x 64 tokens
    python -m benchmarks.text_transformer --quick        # smoke run (tiny config)

Training: one step = forward + backward + Adam on random source/target ids of
a fixed (batch, length) shape, label-smoothed cross-entropy; tokens/s counts
source + target tokens. keras-hub's stack: ``ReversibleEmbedding`` (tied) +
``SinePositionEncoding`` + ``TransformerEncoder`` / ``TransformerDecoder``
(post-LN, ReLU, same widths), so both models have the same parameters.
Decoding: greedy, a batch of sources, a fixed number of new tokens (no early
stop); "no cache" recomputes the whole decoder prefix at every step, as a
model without a cache must.
"""

import argparse

from benchmarks import common

MODULE = "benchmarks.text_transformer"
BASE = dict(vocab_size=37000, hidden_dim=512, num_layers=6, num_heads=8, mlp_dim=2048)
QUICK = dict(vocab_size=500, hidden_dim=64, num_layers=2, num_heads=4, mlp_dim=128)


def _zoo_model(config, length):
    from keras_zoo.models.transformer import Transformer

    return Transformer(vocab_size=config["vocab_size"], hidden_dim=config["hidden_dim"],
                       num_encoder_layers=config["num_layers"],
                       num_decoder_layers=config["num_layers"], num_heads=config["num_heads"],
                       mlp_dim=config["mlp_dim"], dropout=0.1, max_source_length=length + 1,
                       max_target_length=length + 1)


def _hub_model(config):
    import keras
    import keras_hub
    from keras import ops

    d = config["hidden_dim"]
    embedding = keras_hub.layers.ReversibleEmbedding(config["vocab_size"], d, name="embedding")
    positions = keras_hub.layers.SinePositionEncoding()
    source = keras.Input((None,), dtype="int32", name="source_ids")
    target = keras.Input((None,), dtype="int32", name="target_ids")

    def embed(ids):
        x = embedding(ids) * d ** 0.5
        return keras.layers.Dropout(0.1)(x + positions(x))

    x = embed(source)
    source_mask = ops.not_equal(source, 0)
    for _ in range(config["num_layers"]):
        x = keras_hub.layers.TransformerEncoder(config["mlp_dim"], config["num_heads"], 0.1,
                                                activation="relu")(x, padding_mask=source_mask)
    y = embed(target)
    for _ in range(config["num_layers"]):
        y = keras_hub.layers.TransformerDecoder(config["mlp_dim"], config["num_heads"], 0.1,
                                                activation="relu")(
            y, x, encoder_padding_mask=source_mask)
    logits = embedding(y, reverse=True)
    return keras.Model({"source_ids": source, "target_ids": target}, logits)


def train_job(impl, config, batch_size, length, warmup, steps, seed=0):
    import keras
    import numpy as np

    from keras_zoo.models.transformer import LabelSmoothedCrossentropy
    from keras_zoo.training import Adam

    keras.utils.set_random_seed(seed)
    model = _zoo_model(config, length) if impl == "keras_zoo" else _hub_model(config)
    optimizer = Adam(1e-4, beta_2=0.98, epsilon=1e-9) if impl == "keras_zoo" else \
        keras.optimizers.Adam(1e-4, beta_2=0.98, epsilon=1e-9)
    model.compile(optimizer=optimizer, loss=LabelSmoothedCrossentropy(0.1), jit_compile=False)
    rng = np.random.default_rng(seed)
    ids = lambda: rng.integers(4, config["vocab_size"], (batch_size, length)).astype("int32")  # noqa: E731
    x = {"source_ids": ids(), "target_ids": ids()}
    y = ids()
    w = np.ones_like(y, "float32")
    median, _, cpu = common.median_seconds(lambda: model.train_on_batch(x, y, sample_weight=w),
                                           warmup, steps)
    return {"seconds": median, "cpu_seconds": cpu, "params": int(model.count_params()),
            "tokens": 2 * batch_size * length}


def decode_job(cached, config, batch_size, length, new_tokens, warmup, steps, seed=0):
    """Seconds to generate ``new_tokens`` greedily for a batch of sources."""
    import keras
    import numpy as np
    from keras import ops

    from keras_zoo.models import decoding

    keras.utils.set_random_seed(seed)
    model = _zoo_model(config, max(length, new_tokens))
    rng = np.random.default_rng(seed)
    source = rng.integers(4, config["vocab_size"], (batch_size, length)).astype("int32")
    encode, step = model._compiled()

    if cached:
        def run():
            _, cross, mask = encode(ops.convert_to_tensor(source))
            cache = model.init_cache(batch_size, new_tokens)
            decoding.greedy_search(lambda t, c, i: step(t, c, i, cross, mask), cache,
                                   [2] * batch_size, new_tokens, end_id=-1)
    else:
        full = decoding.compiled(model, lambda s, t: model({"source_ids": s, "target_ids": t},
                                                          training=False))

        def run():
            prefix = np.full((batch_size, 1), 2, "int32")
            for _ in range(new_tokens):
                logits = ops.convert_to_numpy(full(ops.convert_to_tensor(source),
                                                   ops.convert_to_tensor(prefix)))
                prefix = np.concatenate([prefix, logits[:, -1:].argmax(-1).astype("int32")], 1)

    median, _, cpu = common.median_seconds(run, warmup, steps)
    return {"seconds": median, "cpu_seconds": cpu, "tokens": batch_size * new_tokens}


HANDLERS = {"train": train_job, "decode": decode_job}


def plan(args):
    config = QUICK if args.quick else BASE
    warm, steps = (1, 2) if args.quick else (args.warmup, args.steps)
    jobs = []
    for impl in ("keras_zoo", "keras_hub"):
        jobs.append(({"row": f"train {impl}"}, {
            "kind": "train", "group": "tf",
            "args": dict(impl=impl, config=config, batch_size=args.batch_size,
                         length=args.length, warmup=warm, steps=steps)}))
    new = 8 if args.quick else args.new_tokens
    for cached in (True, False):
        jobs.append(({"row": f"greedy decode, {'with' if cached else 'without'} cache"}, {
            "kind": "decode", "group": "tf",
            "args": dict(cached=cached, config=config, batch_size=args.batch_size,
                         length=args.length, new_tokens=new, warmup=1, steps=max(1, steps // 2))}))
    return jobs


def report(args, jobs, results):
    config = QUICK if args.quick else BASE
    lines = [f"## Transformer ({'quick' if args.quick else 'transformer_base'} config: "
             f"d_model {config['hidden_dim']}, {config['num_layers']}+{config['num_layers']} "
             f"layers, vocab {config['vocab_size']:,}; batch {args.batch_size}, source length "
             f"{args.length}; float32, no XLA)", "", common.machine_line(), ""]
    rows, rates = [], {}
    for (label, _), result in zip(jobs, results):
        if "error" in result:
            rows.append([label["row"], "-", "-", "-", result["error"][:80]])
            continue
        rate = result["tokens"] / result["seconds"]
        rates[label["row"]] = rate
        rows.append([label["row"], f"{result.get('params', 0):,}" if "params" in result else "",
                     common.fmt(rate, 1), common.fmt(result["seconds"] * 1e3, 0),
                     common.fmt(result["cpu_seconds"], 2)])
    lines.append(common.markdown_table(["run", "params", "tokens/s", "ms per call",
                                        "CPU s per call"], rows))
    lines.append("")
    zoo, hub = rates.get("train keras_zoo"), rates.get("train keras_hub")
    if zoo and hub:
        lines.append(common.target_line("training keras_zoo / keras-hub layers", zoo / hub,
                                        1.0, unit="x"))
    with_cache = rates.get("greedy decode, with cache")
    without = rates.get("greedy decode, without cache")
    if with_cache and without:
        lines.append(f"- greedy decoding with the cache / recomputing the prefix: "
                     f"{with_cache / without:.2f}x")
    if args.quick:
        lines.append("- quick run: tiny config, 1-2 steps; the numbers mean nothing")
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--new_tokens", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args(argv)
    common.require_positive(parser, args, ("batch_size", "length", "new_tokens", "warmup",
                                           "steps"))
    return args


def main(argv=None):
    common.script_main(MODULE, HANDLERS, parse_args, plan, report, argv)


if __name__ == "__main__":
    main()
