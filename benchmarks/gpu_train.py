"""GPU training throughput: keras_zoo on JAX vs timm eager vs timm + torch.compile.

ViT-S/16 and ResNet-50 at 224x224, batch 128, bfloat16 (mixed precision:
float32 weights, bfloat16 compute) and float32. One training step = forward +
backward + AdamW on one batch of random images kept on the device, so the
input pipeline is not measured. Each row runs in a fresh process:

* keras_zoo, JAX: ``KERAS_BACKEND=jax``, ``model.fit`` with ``jit_compile=True``
  (the whole step is one XLA program), keras_zoo's AdamW (Keras' update on
  JAX), ``keras.config.set_dtype_policy("mixed_bfloat16")`` for bf16. The ViT
  runs once per attention lowering (``--attention``): ``fused`` is
  ``keras.ops.dot_product_attention`` (cuDNN flash attention on a GPU where it
  applies), ``matmul`` the two-matmul form (keras_zoo.config).
  The worker blocks TensorFlow imports (``keras_zoo.backend.block_tensorflow``),
  so it runs as if TensorFlow were not installed.
* timm eager: ``timm``'s VisionTransformer / ResNet (random weights, no
  download), ``torch.optim.AdamW``, ``torch.autocast(bfloat16)`` for bf16,
  channels-last memory format for ResNet (what timm's train script uses).
* timm + torch.compile: the same with ``torch.compile(model)``.

Throughput = batch * timed steps / wall seconds, after warm-up steps that
compile. Needs JAX (``pip install "jax[cuda12]"``), PyTorch and timm
(``pip install keras-zoo[timm]``); not TensorFlow.

    python -m benchmarks.gpu_train                        # the full table (a GPU)
    python -m benchmarks.gpu_train --models vit --precisions bf16
    python -m benchmarks.gpu_train --quick                # tiny models on CPU: a smoke run
"""

import argparse
import os
import sys
import time

from benchmarks import common, models

MODULE = "benchmarks.gpu_train"
IMPLEMENTATIONS = ("keras_zoo_jax", "timm_eager", "timm_compile")
PRECISIONS = ("bf16", "fp32")
ATTENTION = ("fused", "matmul")


# ---------------------------------------------------------------- workers

def _timed(run_steps, sync, warmup, steps):
    run_steps(warmup)
    sync()
    start = time.perf_counter()
    run_steps(steps)
    sync()
    return time.perf_counter() - start


def keras_zoo_jax(arch, config, precision, batch_size, warmup, steps, attention="auto"):
    from keras_zoo.backend import backend, block_tensorflow

    if sys.modules.get("tensorflow") is None:
        block_tensorflow()  # as if not installed: nothing here may need it
    if backend() != "jax":
        raise RuntimeError(f"the keras_zoo row needs KERAS_BACKEND=jax, got {backend()!r}")
    import jax
    import keras
    import numpy as np

    from keras_zoo import ResNet, ViT
    from keras_zoo import config as zoo_config
    from keras_zoo.training import AdamW

    zoo_config.set_attention_implementation(attention)
    keras.config.set_dtype_policy("mixed_bfloat16" if precision == "bf16" else "float32")
    model = ViT(**config) if arch == "vit" else ResNet(block_type="bottleneck", **config)
    model.compile(optimizer=AdamW(1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=True)
    s = config["image_size"]
    rng = np.random.default_rng(0)
    x = jax.device_put(rng.random((batch_size, s, s, 3), dtype="float32"))
    y = jax.device_put(rng.integers(0, config["num_classes"], batch_size).astype("int32"))

    def batches():
        while True:
            yield x, y

    def run(n):
        if n:
            model.fit(batches(), steps_per_epoch=n, epochs=1, verbose=0)

    def sync():
        for v in model.trainable_variables:
            v.value.block_until_ready()

    seconds = _timed(run, sync, warmup, steps)
    device = jax.devices()[0]
    return {"seconds": seconds, "images_per_second": batch_size * steps / seconds,
            "ms_per_step": 1000.0 * seconds / steps,
            "params": models.keras_parameter_count(model),
            "device": f"{device.platform}: {getattr(device, 'device_kind', device)}",
            "attention": zoo_config.attention_implementation() + (
                " -> fused" if zoo_config.use_fused_attention() else " -> matmul"),
            "software": f"jax {jax.__version__}, keras {keras.__version__}",
            "tensorflow_imported": any(m.split(".")[0] == "tensorflow" and module is not None
                                       for m, module in sys.modules.items())}


def timm_train(arch, config, precision, batch_size, warmup, steps, compiled):
    import torch
    import torch.nn.functional as F

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(0)
    memory_format = torch.channels_last if arch == "resnet" else torch.contiguous_format
    model = models.build_timm(arch, config).to(device, memory_format=memory_format).train()
    params = models.torch_parameter_count(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    forward = torch.compile(model) if compiled else model
    s = config["image_size"]
    x = torch.rand(batch_size, 3, s, s, device=device).to(memory_format=memory_format)
    y = torch.randint(0, config["num_classes"], (batch_size,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def run(n):
        for _ in range(n):
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss = F.cross_entropy(forward(x), y)
            loss.backward()
            optimizer.step()

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    seconds = _timed(run, sync, warmup, steps)
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    return {"seconds": seconds, "images_per_second": batch_size * steps / seconds,
            "ms_per_step": 1000.0 * seconds / steps,
            "params": params, "device": f"{device.type}: {name}",
            "software": f"torch {torch.__version__}"}


def timm_eager(**kw):
    return timm_train(compiled=False, **kw)


def timm_compile(**kw):
    return timm_train(compiled=True, **kw)


HANDLERS = {"keras_zoo_jax": keras_zoo_jax, "timm_eager": timm_eager,
            "timm_compile": timm_compile}


# ---------------------------------------------------------------- plan and table

def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("--quick", action="store_true",
                   help="tiny models, batch 2, 1 + 2 steps, on whatever device: a smoke run")
    p.add_argument("--models", default="vit,resnet")
    p.add_argument("--precisions", default="bf16,fp32")
    p.add_argument("--implementations", default=",".join(IMPLEMENTATIONS))
    p.add_argument("--attention", default="fused,matmul",
                   help="keras_zoo ViT rows, one per lowering: fused, matmul, auto")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--warmup", type=int, default=5, help="untimed steps (compilation)")
    p.add_argument("--steps", type=int, default=30, help="timed steps")
    args = p.parse_args(argv)
    for flag, valid in (("models", models.ARCHITECTURES), ("precisions", PRECISIONS),
                        ("implementations", IMPLEMENTATIONS),
                        ("attention", ATTENTION + ("auto",))):
        chosen = [v.strip() for v in getattr(args, flag).split(",") if v.strip()]
        bad = [v for v in chosen if v not in valid]
        if bad or not chosen:
            p.error(f"--{flag}: unknown {', '.join(bad) or repr(getattr(args, flag))}; "
                    f"choose from {', '.join(valid)}")
        setattr(args, flag, chosen)
    if args.quick:
        args.batch_size, args.warmup, args.steps = 2, 1, 2
    for name in ("batch_size", "steps"):
        if getattr(args, name) <= 0:
            p.error(f"--{name} must be positive, got {getattr(args, name)}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    return args


def plan(args):
    """(label, job) pairs, one per table row."""
    jobs = []
    for arch in args.models:
        config = models.config_for(arch, args.quick)
        for precision in args.precisions:
            common_args = {"arch": arch, "config": config, "precision": precision,
                           "batch_size": args.batch_size, "warmup": args.warmup,
                           "steps": args.steps}
            for impl in args.implementations:
                group = "jax" if impl == "keras_zoo_jax" else "torch"
                variants = args.attention if impl == "keras_zoo_jax" and arch == "vit" \
                    else [None]
                for attention in variants:
                    job_args = dict(common_args)
                    if attention:
                        job_args["attention"] = attention
                    jobs.append(({"arch": arch, "precision": precision, "impl": impl,
                                  "attention": attention},
                                 {"kind": impl, "group": group, "args": job_args}))
    return jobs


def _drop_missing(jobs):
    """Rows whose framework is not installed are dropped, with a note."""
    need = {"jax": ("jax", "keras"), "torch": ("torch", "timm")}
    kept, notes = [], []
    for label, job in jobs:
        missing = [m for m in need[job["group"]] if not common.installed(m)]
        if missing:
            note = f"{label['impl']}: {', '.join(missing)} not installed; its rows are skipped"
            if note not in notes:
                notes.append(note)
            continue
        kept.append((label, job))
    return kept, notes


def table(jobs, results, quick):
    rows, devices, notes = [], {}, []
    reference = {(lab["arch"], lab["precision"]): res.get("images_per_second")
                 for (lab, _), res in zip(jobs, results) if lab["impl"] == "timm_compile"}
    for (label, _), result in zip(jobs, results):
        impl = label["impl"] + (f" (attention {label['attention']})" if label["attention"] else "")
        name = models.display_name(label["arch"], quick)
        if "error" in result:
            rows.append([name, label["precision"], impl, "-", "-", "-",
                         "error: " + result["error"]])
            continue
        devices[result.get("software", "")] = result["device"]
        ips = result["images_per_second"]
        ref = reference.get((label["arch"], label["precision"]))
        if result.get("tensorflow_imported"):
            notes.append(f"{impl}: TensorFlow was imported in the JAX worker")
        rows.append([name, label["precision"], impl, common.fmt(ips),
                     common.fmt(result["ms_per_step"]),
                     common.fmt(ips / ref, 2) if ref else "-",
                     f"{result['params']:,} params; {result.get('attention', '')}".strip("; ")])
    return rows, devices, notes


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if common.worker_main(argv, HANDLERS):
        return 0
    args = _parse(argv)
    jobs, notes = _drop_missing(plan(args))
    if not jobs:
        print("nothing to run: " + "; ".join(notes))
        return 1
    # The workers inherit the environment: JAX for Keras (the torch workers
    # ignore it), and no TensorFlow log noise should it be imported anyway.
    os.environ["KERAS_BACKEND"] = "jax"
    results = common.run_plan(MODULE, jobs, isolate=not args.quick)
    rows, devices, more = table(jobs, results, args.quick)
    print(f"## Training throughput on {', '.join(sorted(set(devices.values()))) or 'no device'}"
          f" (batch {args.batch_size}, {args.steps} timed steps after {args.warmup})\n")
    print(common.machine_line())
    for software, device in devices.items():
        print(f"- {software} on {device}")
    print()
    print(common.markdown_table(
        ["model", "precision", "implementation", "images/s", "ms/step",
         "vs timm+compile", "notes"], rows))
    print()
    if args.quick:
        notes.append("--quick runs tiny models for a smoke test; its numbers mean nothing")
    for note in notes + more:
        print(f"- note: {note}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
