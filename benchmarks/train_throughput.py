"""Training throughput: keras_zoo vs keras-hub vs timm, each in its own process.

One training step = forward + backward + AdamW update on a fixed batch of
random images (the input pipeline is measured separately by
``benchmarks.input_pipeline``). Each library trains with the AdamW its users
get: keras_zoo's (``keras_zoo.training.AdamW``, what ``keras-zoo-train``
uses: Keras' arithmetic in TF's fused kernel), ``keras.optimizers.AdamW`` for
keras-hub (it has none of its own), ``torch.optim.AdamW`` for timm.

Reports images/s (median over steps after warm-up), achieved GFLOP/s (3x
the analytic forward FLOPs) and its share of this machine's float32 matmul
rate, measured in the same run.

    python -m benchmarks.train_throughput                 # ViT-S/16 + ResNet-50, batch 16
    python -m benchmarks.train_throughput --models vit --steps 5
    python -m benchmarks.train_throughput --quick         # smoke run (tiny models)
"""

import sys

from benchmarks import cli, common, models

MODULE = "benchmarks.train_throughput"
TRAINING_FLOPS_FACTOR = 3.0  # forward + backward (activation and weight gradients)
TARGETS = {"vs_keras_hub": 1.05, "vs_timm": 1.1, "matmul_share": 0.85, "resnet_vs_keras_hub": 1.0}


def keras_train(impl, arch, config, batch_size, warmup, steps, jit_compile, seed=0):
    import keras
    import numpy as np

    keras.utils.set_random_seed(seed)
    model = models.build_keras(impl, arch, config)
    if impl == "keras_zoo":
        from keras_zoo.training import AdamW
    else:
        AdamW = keras.optimizers.AdamW
    model.compile(optimizer=AdamW(1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    s = config["image_size"]
    rng = np.random.default_rng(seed)
    x = keras.ops.convert_to_tensor(rng.random((batch_size, s, s, 3), dtype="float32"))
    y = keras.ops.convert_to_tensor(rng.integers(0, config["num_classes"], batch_size))
    median, _, cpu = common.median_seconds(lambda: model.train_on_batch(x, y), warmup, steps)
    return {"seconds": median, "cpu_seconds": cpu, "params": models.keras_parameter_count(model),
            "jit": str(model.jit_compile)}


def timm_train(arch, config, batch_size, warmup, steps, seed=0):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    model = models.build_timm(arch, config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    s = config["image_size"]
    x = torch.rand(batch_size, 3, s, s)
    y = torch.randint(0, config["num_classes"], (batch_size,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    median, _, cpu = common.median_seconds(step, warmup, steps)
    return {"seconds": median, "cpu_seconds": cpu, "params": models.torch_parameter_count(model),
            "jit": f"eager (torch {torch.__version__}, {torch.get_num_threads()} threads)"}


HANDLERS = {"matmul": common.matmul_job, "torch_matmul": common.torch_matmul_job,
            "keras": keras_train, "timm": timm_train}


def plan(args):
    """The jobs of this run: (label, job) pairs, the matmul rate first."""
    # The ViT's own GEMMs too: how fast the matmul kernels run at its shapes.
    shapes = _vit_gemms(args) if "vit" in args.models else None
    jobs = [cli.matmul_entry(args.quick, shapes)]
    if "timm" in args.implementations:
        jobs.append(cli.torch_matmul_entry(args.quick, shapes))
    for arch in args.models:
        jobs += cli.implementation_jobs(
            arch, args.implementations, args.variants,
            {"arch": arch, "config": models.config_for(arch, args.quick),
             "batch_size": args.batch_size, "warmup": args.warmup, "steps": args.steps})
    return jobs


def _vit_gemms(args):
    config = models.config_for("vit", args.quick)
    tokens = (config["image_size"] // config["patch_size"]) ** 2 + 1
    return common.vit_gemm_shapes(args.batch_size, tokens, config["hidden_dim"], config["mlp_dim"])


def report(args, jobs, results, notes):
    rounds = f", fastest of {args.rounds} rounds" if args.rounds > 1 else ""
    rate, lines = cli.matmul_header(
        f"Training throughput (batch {args.batch_size}, float32{rounds})", results[0])
    torch_result = next((r for (label, _), r in zip(jobs, results)
                         if label.get("kind") == "torch_matmul"), {})
    torch_rate = torch_result.get("gflops_median")
    if torch_rate:
        lines.insert(-1, f"float32 matmul (same product, torch, same run): "
                         f"{common.fmt(torch_rate)} GFLOP/s median")
    if results[0].get("gflops_shapes"):
        torch_shapes = torch_result.get("gflops_shapes")
        lines.insert(-1, "float32 matmul at ViT-S/16's own GEMM shapes (QKV, output, MLP "
                         f"projections; forward and both gradients; batch {args.batch_size}): "
                         f"TensorFlow {common.fmt(results[0]['gflops_shapes'])} GFLOP/s"
                         + (f", torch {common.fmt(torch_shapes)}" if torch_shapes else ""))
    rows, best, by_jit = [], {}, {}
    for label, name, flops, result in cli.each_result(jobs, results, args.quick, rows, 11):
        impl = label["impl"]
        ips = args.batch_size / result["seconds"]
        by_jit[(name, impl, result["jit"] == "True")] = ips
        step_flops = args.batch_size * TRAINING_FLOPS_FACTOR * flops
        gflops = step_flops / result["seconds"] / 1e9
        share = gflops / rate if rate else None
        cpu_rate = results[0].get("gflops_per_cpu_second")
        cpu_share = step_flops / result["cpu_seconds"] / 1e9 / cpu_rate if cpu_rate else None
        own_rate = torch_rate if impl == "timm" else rate
        own_share = gflops / own_rate if own_rate else None
        cli.keep_best(best, label, impl, ips)
        default = " (default)" if label.get("default") else ""
        rows.append([name, impl, f"{result['params']:,}", result["jit"] + default,
                     common.fmt(ips, 2), common.fmt(result["seconds"] * 1e3, 0),
                     common.fmt(result["cpu_seconds"], 2), common.fmt(gflops),
                     common.fmt(share * 100 if share else None, 0, " %"),
                     common.fmt(cpu_share * 100 if cpu_share else None, 0, " %"),
                     common.fmt(own_share * 100 if own_share else None, 0, " %")])
    lines.append(common.markdown_table(
        ["model", "implementation", "params", "XLA (jit_compile)", "img/s", "step ms",
         "CPU s/step", "GFLOP/s", "of matmul", "of matmul by CPU time",
         "of own framework's matmul"], rows))
    lines += ["", ("*of matmul*: achieved GFLOP/s (3x analytic forward FLOPs) over the "
              "TensorFlow matmul rate, both by wall clock; *by CPU time*: FLOPs per CPU-second "
              "(all threads) over the matmul's, which other processes on a shared machine do "
              "not distort; *of own framework's matmul*: over the rate of the same product "
              "in the framework the row runs on (torch for timm)."), "",
              "Targets (each library at its best row, with or without XLA):"]
    lines += targets(best, rate, args.quick)
    for (name, impl, jit), ips in by_jit.items():
        if jit and (name, impl, False) in by_jit:
            lines.append(f"- {name} {impl} with XLA / without: "
                         f"{ips / by_jit[(name, impl, False)]:.2f}x")
    lines += cli.footer(notes, args.quick)
    return "\n".join(lines)


def targets(best, rate, quick):
    out = []
    zoo_vit = best.get(("vit", "keras_zoo"))
    if zoo_vit:
        for peer, key in (("keras_hub", "vs_keras_hub"), ("timm", "vs_timm")):
            if best.get(("vit", peer)):
                out.append(common.target_line(f"ViT-S/16 keras_zoo / {peer}",
                                              zoo_vit / best[("vit", peer)], TARGETS[key],
                                              unit="x"))
        if rate:
            config = models.config_for("vit", quick)
            share = zoo_vit * TRAINING_FLOPS_FACTOR * models.forward_flops("vit", config) / 1e9 / rate
            out.append(common.target_line("ViT-S/16 keras_zoo share of matmul rate",
                                          share * 100, TARGETS["matmul_share"] * 100, unit=" %"))
    zoo_resnet, hub_resnet = best.get(("resnet", "keras_zoo")), best.get(("resnet", "keras_hub"))
    if zoo_resnet and hub_resnet:
        out.append(common.target_line("ResNet-50 keras_zoo / keras_hub", zoo_resnet / hub_resnet,
                                      TARGETS["resnet_vs_keras_hub"], unit="x"))
    return out or ["- no target could be evaluated (see errors above)"]


def parse_args(argv):
    return cli.finish_args(cli.argument_parser(__doc__, batch_size=16, warmup=3, steps=10), argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if common.worker_main(argv, HANDLERS):
        return
    args = parse_args(argv)
    jobs, notes = common.skip_missing(plan(args))
    results = common.run_plan(MODULE, jobs, isolate=not args.quick, rounds=args.rounds)
    print(report(args, jobs, results, notes))


if __name__ == "__main__":
    main()
