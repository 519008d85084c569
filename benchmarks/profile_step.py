"""Where a training step's time goes: a tf.profiler trace, summed per op type.

Traces a few training steps (forward + backward + AdamW, no XLA, as Keras
compiles them on CPU) of a keras_zoo or keras-hub model and prints, per
TensorFlow op type, the time its kernels ran on TensorFlow's compute threads
per step (self time: a wrapper such as the executor's ``Process`` keeps only
its own overhead), its share of all op time and its count. Ops run side by
side on the inter-op threads, so the column sums to more than the wall time
of a step; the shares say which kernels to make cheaper. This is the table behind
README "What the profile showed". The raw trace (TensorBoard's profile
plugin reads it) stays in ``--logdir``.

    python -m benchmarks.profile_step                          # keras_zoo ViT-S/16, batch 16
    python -m benchmarks.profile_step --models resnet --implementations keras_hub
    python -m benchmarks.profile_step --quick                  # smoke run (tiny model)
"""

import collections
import glob
import os
import sys
import tempfile

from benchmarks import cli, common, models

MODULE = "benchmarks.profile_step"


def profile_job(impl, arch, config, batch_size, warmup, steps, logdir, top, seed=0):
    import keras
    import numpy as np
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    keras.utils.set_random_seed(seed)
    model = models.build_keras(impl, arch, config)
    if impl == "keras_zoo":
        from keras_zoo.training import AdamW
    else:
        AdamW = keras.optimizers.AdamW
    model.compile(optimizer=AdamW(1e-4), jit_compile=False,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    s = config["image_size"]
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.random((batch_size, s, s, 3), dtype="float32"))
    y = tf.constant(rng.integers(0, config["num_classes"], batch_size))
    median, _, _ = common.median_seconds(lambda: model.train_on_batch(x, y), warmup, steps)
    logdir = os.path.join(logdir, f"{impl}_{arch}")
    tf.profiler.experimental.start(logdir)
    for _ in range(steps):
        model.train_on_batch(x, y)
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    with open(max(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)),
              "rb") as f:
        space.ParseFromString(f.read())
    seconds, counts = collections.Counter(), collections.Counter()
    for plane in space.planes:
        if "host" not in plane.name.lower():
            continue
        for line in plane.lines:
            if line.name.startswith("tf_Compute"):  # TensorFlow's inter-op threads
                _self_times(line, plane.event_metadata, seconds, counts, steps)
    total = sum(seconds.values())
    return {"step_seconds": median, "op_seconds": total, "logdir": logdir,
            "ops": [(op, sec, counts[op] // steps) for op, sec in seconds.most_common(top)]}


def _self_times(line, metadata, seconds, counts, steps):
    """Adds each event's *self* time (its duration minus the events nested in
    it on the same thread) to ``seconds[op type]``: wrappers such as the
    executor's ``Process`` or an XLA cluster's launch keep only their own
    overhead, and no kernel is counted twice."""
    events = sorted((e for e in line.events if e.duration_ps > 0),
                    key=lambda e: (e.offset_ps, -e.duration_ps))
    stack = []  # [end_ps, op type, duration_ps, nested_ps]

    def close(entry):
        seconds[entry[1]] += (entry[2] - entry[3]) / 1e12 / steps
        counts[entry[1]] += 1

    for event in events:
        while stack and stack[-1][0] <= event.offset_ps:
            close(stack.pop())
        if stack:
            stack[-1][3] += event.duration_ps
        name = metadata[event.metadata_id].name
        op_type = name.rsplit(":", 1)[-1].strip().split("::")[-1]
        stack.append([event.offset_ps + event.duration_ps, op_type, event.duration_ps, 0])
    while stack:
        close(stack.pop())


HANDLERS = {"profile": profile_job}


def parse_args(argv):
    p = cli.argument_parser(__doc__, batch_size=16, warmup=2, steps=2)
    p.add_argument("--top", type=int, default=25, help="op types to list")
    p.add_argument("--logdir", default=os.path.join(tempfile.gettempdir(), "keras_zoo_profile"),
                   help="where the raw traces go (TensorBoard: tensorboard --logdir ...)")
    p.set_defaults(models="vit", implementations="keras_zoo")
    args = cli.finish_args(p, argv)
    if "timm" in args.implementations:
        p.error("--implementations: timm runs on torch; this traces TensorFlow (keras_zoo, "
                "keras_hub); torch.profiler is timm's tool")
    return args


def report(args, jobs, results):
    lines = ["## Training-step profile (tf.profiler, no XLA, op time per step)", "",
             common.machine_line(), ""]
    for (label, _), result in zip(jobs, results):
        name = f"{models.display_name(label['arch'], args.quick)} {label['impl']}"
        if "error" in result:
            lines += [f"### {name}", "", "error: " + result["error"], ""]
            continue
        lines += [(f"### {name}: step {result['step_seconds'] * 1e3:,.0f} ms wall, "
                   f"{result['op_seconds'] * 1e3:,.0f} ms of op time"), "",
                  common.markdown_table(
                      ["op type", "ms / step", "share of op time", "kernels / step"],
                      [[op, common.fmt(sec * 1e3), common.fmt(100 * sec / result["op_seconds"],
                                                              1, " %"), n]
                       for op, sec, n in result["ops"]]),
                  "", f"raw trace: {result['logdir']}", ""]
    lines += cli.footer([], args.quick)
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if common.worker_main(argv, HANDLERS):
        return
    args = parse_args(argv)
    jobs = [({"impl": impl, "arch": arch},
             {"kind": "profile", "group": "keras",
              "args": {"impl": impl, "arch": arch, "config": models.config_for(arch, args.quick),
                       "batch_size": args.batch_size, "warmup": args.warmup,
                       "steps": args.steps, "logdir": args.logdir, "top": args.top}})
            for arch in args.models for impl in args.implementations]
    results = common.run_plan(MODULE, jobs, isolate=not args.quick)
    print(report(args, jobs, results))


if __name__ == "__main__":
    main()
