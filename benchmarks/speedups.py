"""Each keras_zoo speed-up against the Keras original it replaces, A/B in one process.

Both variants are built side by side and called alternately (so both see the
same machine load); the table gives median CPU and wall milliseconds per
call of a forward + backward pass (an optimizer update for AdamW) at
ViT-S/16 / ResNet-50 training shapes, batch 16, no XLA around them (Keras'
default on CPU):

* attention core: ``keras.ops.dot_product_attention`` on (B, T, H, D) vs
  keras_zoo's (B, H, T, D) batched matmuls (12 blocks' worth);
* GELU: ``keras.activations.gelu(approximate=False)`` vs ``keras_zoo.layers.gelu``
  (Keras' forward, hand-written gradient fused by XLA; 12 blocks' worth);
* AdamW: ``keras.optimizers.AdamW`` vs ``keras_zoo.training.AdamW`` (one
  update of ViT-S/16's 22 M parameters);
* BatchNorm: ``keras.layers.BatchNormalization`` vs
  ``keras_zoo.layers.BatchNormalization`` in training (ResNet-50's first
  stage activation, 16 x 56 x 56 x 256).

    python -m benchmarks.speedups
    python -m benchmarks.speedups --quick      # smoke run (small shapes)
"""

import sys
import time

from benchmarks import cli, common

MODULE = "benchmarks.speedups"


def _timed_pairs(pairs, rounds):
    """{name: (median CPU s, median wall s)} with the callables of ``pairs``
    called alternately, ``rounds`` times each, after two warm-up calls."""
    import numpy as np

    for fn in pairs.values():
        fn()
        fn()
    cpu = {name: [] for name in pairs}
    wall = {name: [] for name in pairs}
    for _ in range(rounds):
        for name, fn in pairs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: (float(np.median(cpu[name])), float(np.median(wall[name]))) for name in pairs}


def _grad_fn(fn, *inputs, variables=()):
    """A tf.function computing the gradients of sum(fn(*inputs)) / 2 with
    respect to ``inputs`` and ``variables``, read back."""
    import tensorflow as tf

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            out = fn(*inputs)
            loss = tf.reduce_sum(out) * 0.5
        grads = tape.gradient(loss, list(inputs) + list(variables))
        return tf.add_n([tf.reduce_sum(g) for g in grads])

    return lambda: step().numpy()


def attention_job(batch_size, tokens, heads, head_dim, repeat, rounds):
    import keras
    import tensorflow as tf

    from keras_zoo.layers import MultiHeadAttention

    dim = heads * head_dim
    qkv = tf.random.normal((batch_size, tokens, 3 * dim))
    layer = MultiHeadAttention(heads)
    layer.build((batch_size, tokens, dim))

    def keras_core(x):  # what the layer did before: (B, T, H, D) through Keras' op
        q, k, v = [tf.reshape(p, (batch_size, tokens, heads, head_dim))
                   for p in tf.split(x, 3, axis=-1)]
        return keras.ops.dot_product_attention(q, k, v)

    def zoo_core(x):
        q, k, v = layer._split_heads(x, 3)
        return layer._attend(q, k, v, None, training=False)

    results = _timed_pairs({"keras": _grad_fn(keras_core, qkv), "keras_zoo": _grad_fn(zoo_core, qkv)},
                           rounds)
    return {k: (c * repeat, w * repeat) for k, (c, w) in results.items()}


def gelu_job(rows, width, repeat, rounds):
    import keras
    import tensorflow as tf

    from keras_zoo.layers import gelu

    x = tf.random.normal((rows, width))
    results = _timed_pairs({
        "keras": _grad_fn(lambda h: keras.activations.gelu(h, approximate=False), x),
        "keras_zoo": _grad_fn(gelu, x)}, rounds)
    return {k: (c * repeat, w * repeat) for k, (c, w) in results.items()}


def adamw_job(quick, rounds):
    import keras
    import tensorflow as tf

    from benchmarks import models
    from keras_zoo import ViT
    from keras_zoo.training import AdamW

    pairs = {}
    for name, optimizer in (("keras", keras.optimizers.AdamW(1e-4)), ("keras_zoo", AdamW(1e-4))):
        model = ViT(**models.config_for("vit", quick))
        grads = [tf.random.normal(w.shape) * 0.01 for w in model.trainable_weights]
        optimizer.build(model.trainable_variables)
        apply = tf.function(lambda o=optimizer, m=model, g=grads: o.apply(g, m.trainable_variables))
        pairs[name] = lambda f=apply, m=model: (f(), m.trainable_weights[0].numpy())
    return _timed_pairs(pairs, rounds)


def batchnorm_job(shape, rounds):
    import keras
    import tensorflow as tf

    from keras_zoo.layers import BatchNormalization

    x = tf.random.normal(shape)
    pairs = {}
    for name, layer in (("keras", keras.layers.BatchNormalization()),
                        ("keras_zoo", BatchNormalization())):
        layer.build(shape)
        pairs[name] = _grad_fn(lambda h, l=layer: l(h, training=True), x,
                               variables=[w.value for w in layer.trainable_weights])
    return _timed_pairs(pairs, rounds)


HANDLERS = {"attention": attention_job, "gelu": gelu_job, "adamw": adamw_job,
            "batchnorm": batchnorm_job}


def plan(args):
    rounds = 3 if args.quick else args.steps
    b = args.batch_size
    if args.quick:
        t, layers, hidden = 17, 2, 64
        return [
            ("attention core (2 blocks)", "attention",
             {"batch_size": b, "tokens": t, "heads": 4, "head_dim": 16, "repeat": layers, "rounds": rounds}),
            ("GELU (2 blocks)", "gelu", {"rows": b * t, "width": 4 * hidden, "repeat": layers,
                                             "rounds": rounds}),
            ("AdamW update (quick ViT)", "adamw", {"quick": True, "rounds": rounds}),
            ("BatchNorm (2 x 8 x 8 x 64)", "batchnorm", {"shape": (2, 8, 8, 64), "rounds": rounds}),
        ]
    t = 197
    return [
        ("attention core, 12 ViT-S/16 blocks", "attention",
         {"batch_size": b, "tokens": t, "heads": 6, "head_dim": 64, "repeat": 12, "rounds": rounds}),
        ("GELU, 12 ViT-S/16 blocks", "gelu", {"rows": b * t, "width": 1536, "repeat": 12,
                                                  "rounds": rounds}),
        ("AdamW update, ViT-S/16 (22 M parameters)", "adamw", {"quick": False, "rounds": rounds}),
        (f"BatchNorm, {b} x 56 x 56 x 256 (ResNet-50 stage 1)", "batchnorm",
         {"shape": (b, 56, 56, 256), "rounds": rounds}),
    ]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if common.worker_main(argv, HANDLERS):
        return
    args = cli.finish_args(cli.argument_parser(__doc__, batch_size=16, warmup=2, steps=20,
                                               model_choice=False), argv)
    entries = plan(args)
    jobs = [({"what": what}, {"kind": kind, "group": "keras", "args": job_args})
            for what, kind, job_args in entries]
    # One process for all: each job already alternates its two variants.
    results = common.run_plan(MODULE, jobs, isolate=False)
    rows = []
    for (label, _), result in zip(jobs, results):
        if "error" in result:
            rows.append([label["what"], "-", "-", "-", "error: " + result["error"]])
            continue
        (kc, kw), (zc, zw) = result["keras"], result["keras_zoo"]
        rows.append([label["what"], f"{kc * 1e3:,.0f} / {kw * 1e3:,.0f}",
                     f"{zc * 1e3:,.0f} / {zw * 1e3:,.0f}", f"{kc / zc:.2f}x", f"{kw / zw:.2f}x"])
    print("\n".join([
        "## keras_zoo speed-ups vs the Keras originals (forward + backward, or one update)", "",
        common.machine_line(), "",
        common.markdown_table(["what", "Keras: CPU / wall ms", "keras_zoo: CPU / wall ms",
                               "speed-up (CPU)", "speed-up (wall)"], rows),
        "", (f"Medians of {3 if args.quick else args.steps} alternating calls each, batch "
             f"{args.batch_size}, in one process.")] + cli.footer([], args.quick)))


if __name__ == "__main__":
    main()
