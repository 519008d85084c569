"""Flags, job plans and table pieces shared by the model benchmarks
(train_throughput, inference_throughput, input_pipeline)."""

import argparse

from benchmarks import common, models

BooleanOptionalAction = argparse.BooleanOptionalAction
QUICK_NOTE = "--quick runs tiny models for a smoke test; its numbers mean nothing"


def argument_parser(doc, batch_size, warmup, steps, model_choice=True):
    p = argparse.ArgumentParser(description=doc.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(doc.splitlines()[1:]))
    p.add_argument("--quick", action="store_true", help="tiny models, 2 steps: a smoke run")
    if model_choice:
        p.add_argument("--models", default=",".join(models.ARCHITECTURES),
                       help="comma-separated subset of: " + ", ".join(models.ARCHITECTURES))
        p.add_argument("--implementations", default=",".join(models.IMPLEMENTATIONS),
                       help="comma-separated subset of: " + ", ".join(models.IMPLEMENTATIONS))
        p.add_argument("--variants", choices=("all", "default"), default="all",
                       help="all: Keras models with and without XLA; default: only each "
                            "library's default")
    p.add_argument("--batch_size", type=int, default=batch_size)
    p.add_argument("--warmup", type=int, default=warmup,
                   help="untimed steps first (XLA compilation, allocator growth)")
    p.add_argument("--steps", type=int, default=steps, help="timed steps; the median is reported")
    if model_choice:
        p.add_argument("--rounds", type=int, default=1,
                       help="run every process this many times, round-robin, and keep each "
                            "one's fastest round (shared, noisy machines)")
    return p


def finish_args(parser, argv):
    """Parses, validates the lists and numbers, and shrinks everything for --quick."""
    args = parser.parse_args(argv)
    if hasattr(args, "models"):
        args.models = _choices(parser, "--models", args.models, models.ARCHITECTURES)
        args.implementations = _choices(parser, "--implementations", args.implementations,
                                        models.IMPLEMENTATIONS)
    if args.quick:
        args.batch_size, args.warmup, args.steps = 2, 1, 2
        if hasattr(args, "variants"):
            args.variants = "default"
    if args.quick and hasattr(args, "rounds"):
        args.rounds = 1
    for name in ("batch_size", "steps", "rounds")[:3 if hasattr(args, "rounds") else 2]:
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    return args


def _choices(parser, flag, value, valid):
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in chosen if v not in valid]
    if bad or not chosen:
        parser.error(f"{flag}: unknown {', '.join(bad) or repr(value)}; choose from "
                     f"{', '.join(valid)}")
    return chosen


def matmul_entry(quick, shapes=None):
    """The matmul-rate job every model table starts with (run in the Keras group);
    ``shapes``: also the rate over these (M, K, N, transpose_a, transpose_b) products."""
    return ({"kind": "matmul"},
            {"kind": "matmul", "group": "keras",
             "args": {"size": 512 if quick else 2048, "shapes": shapes}})


def torch_matmul_entry(quick, shapes=None):
    """The same matmuls through torch (run in the torch group, only if timm runs)."""
    return ({"kind": "torch_matmul"},
            {"kind": "torch_matmul", "group": "torch",
             "args": {"size": 512 if quick else 2048, "shapes": shapes}})


def implementation_jobs(arch, implementations, variants, job_args):
    """(label, job) per implementation of ``arch``: Keras ones at ``compile()``'s
    default ``jit_compile`` (and, with ``variants="all"``, also with XLA),
    timm in the torch group."""
    jobs = []
    for impl in implementations:
        if impl == "timm":
            jobs.append(({"impl": impl, "arch": arch},
                         {"kind": "timm", "group": "torch", "args": dict(job_args)}))
            continue
        settings = [models.DEFAULT_JIT] + ([True] if variants == "all" else [])
        for jit in settings:
            jobs.append(({"impl": impl, "arch": arch, "default": jit == settings[0]},
                         {"kind": "keras", "group": "keras",
                          "args": dict(impl=impl, jit_compile=jit, **job_args)}))
    return jobs


def matmul_header(title, matmul):
    """(rate in GFLOP/s or None, the title lines of a table)."""
    rate = matmul.get("gflops_median")
    where = (f"float32 matmul ({matmul.get('size')}^2, TensorFlow, same run): "
             f"{common.fmt(rate)} GFLOP/s median, {common.fmt(matmul.get('gflops_peak'))} peak"
             if rate else f"float32 matmul: {matmul.get('error')}")
    return rate, [f"## {title}", "", common.machine_line(), where, ""]


def keep_best(best, label, impl, value):
    """Best value per (arch, impl): every library at its best setting (with or
    without XLA), so a comparison shows what each can do here."""
    key = (label["arch"], impl)
    best[key] = max(best.get(key, 0.0), value)


def each_result(jobs, results, quick, rows, columns):
    """Yields (label, model name, forward FLOPs per image, result) for every model
    job that succeeded; a failed one becomes a row of ``columns`` cells ending
    in its error, appended to ``rows``. The matmul jobs are skipped."""
    for (label, _), result in zip(jobs, results):
        if "arch" not in label:
            continue
        arch = label["arch"]
        name = models.display_name(arch, quick)
        if "error" in result:
            rows.append([name, label["impl"]] + ["-"] * (columns - 3)
                        + ["error: " + result["error"]])
            continue
        yield label, name, models.forward_flops(arch, models.config_for(arch, quick)), result


def footer(notes, quick):
    """The closing note lines of a table."""
    return [f"- note: {n}" for n in notes] + (["- note: " + QUICK_NOTE] if quick else [])
