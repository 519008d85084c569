"""Shared pieces of the benchmark scripts.

* Isolation: every measured implementation runs in a fresh Python process
  (``run_jobs``), so TensorFlow's and torch's thread pools, XLA caches and
  allocators never meet. A worker prints one ``BENCHMARK_RESULT {json}`` line.
* Timing: ``median_seconds`` runs warm-up calls (compilation, allocator
  growth) before the timed ones and reports the median, which one slow step
  (another process waking up) does not move.
* FLOPs are counted analytically from the architecture (2 per multiply-add,
  matmuls and convolutions only: norms, softmax and activations are a few
  percent and the convention of timm's / fvcore's GMAC tables leaves them
  out too). A training step is ~3x the forward pass (the backward pass
  computes gradients for both activations and weights).
* The machine's float32 matmul rate (``matmul_job``) is measured in the same
  run as the models, so "share of matmul peak" compares like with like.
"""

import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

RESULT_MARK = "BENCHMARK_RESULT "
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- processes


def run_jobs(module, jobs, timeout=1800):
    """Runs ``python -m module --worker JSON`` with ``jobs`` (a list of dicts) in a
    fresh process; returns one result dict per job (``{"error": ...}`` if the
    process failed, so one broken implementation does not hide the others)."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", module, "--worker", json.dumps(jobs)]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout,
                              cwd=REPO_ROOT, env=env)
    except subprocess.TimeoutExpired:
        return [{"error": f"timed out after {timeout} s"} for _ in jobs]
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return [{"error": f"worker exited with {proc.returncode}: {tail[:200]}"} for _ in jobs]


def run_plan(module, jobs, isolate, rounds=1, key="seconds"):
    """Runs ``jobs`` (``(label, job)`` pairs; a job is ``{"kind", "group", "args"}``):
    one process per job, or (``--quick`` smoke runs, where start-up would
    dominate) one process per ``group``. Returns the results in job order.

    ``rounds`` > 1 runs the whole list that many times, round-robin, and keeps
    each job's fastest round (smallest ``key``): on a shared machine the load
    drifts over minutes, and round-robin plus best-of-N gives every
    implementation the same chances at a quiet moment."""
    if isolate and rounds > 1:
        runs = [run_plan(module, jobs, isolate) for _ in range(rounds)]
        best = []
        for per_job in zip(*runs):
            ok = [r for r in per_job if key in r]
            best.append(min(ok, key=lambda r: r[key]) if ok else per_job[0])
        return best
    if isolate:
        return [run_jobs(module, [job])[0] for _, job in jobs]
    results = [None] * len(jobs)
    for group in dict.fromkeys(job["group"] for _, job in jobs):
        index = [i for i, (_, job) in enumerate(jobs) if job["group"] == group]
        for i, result in zip(index, run_jobs(module, [jobs[i][1] for i in index])):
            results[i] = result
    return results


def skip_missing(jobs):
    """Drops the jobs whose framework is not installed (torch + timm are the
    optional ``[timm]`` extra) and says so in a note."""
    kept, notes = [], []
    for label, job in jobs:
        if job["group"] == "torch" and not (installed("torch") and installed("timm")):
            note = "timm: not installed (pip install keras-zoo[timm]); its rows are skipped"
            if note not in notes:
                notes.append(note)
            continue
        kept.append((label, job))
    return kept, notes


def worker_main(argv, handlers):
    """If ``argv`` asks for a worker, runs each job with ``handlers[job["kind"]]``,
    prints the results and returns True."""
    if "--worker" not in argv:
        return False
    jobs = json.loads(argv[argv.index("--worker") + 1])
    results = []
    for job in jobs:
        try:
            results.append(handlers[job["kind"]](**job["args"]))
        except Exception as e:  # noqa: BLE001  (one failed row, reported in the table)
            results.append({"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                            if str(e) else type(e).__name__})
    print(RESULT_MARK + json.dumps(results), flush=True)
    return True


def script_main(module, handlers, parse_args, plan, report, argv=None):
    """A side-by-side script's entry point: a worker runs its jobs; otherwise
    ``parse_args`` -> ``plan`` -> one process per job (one per group for
    ``--quick``) -> ``report`` printed."""
    argv = sys.argv[1:] if argv is None else argv
    if worker_main(argv, handlers):
        return
    args = parse_args(argv)
    jobs = plan(args)
    print(report(args, jobs, run_plan(module, jobs, isolate=not args.quick,
                                      rounds=getattr(args, "rounds", 1))))


def require_positive(parser, args, names):
    """``parser.error`` naming the first of ``names`` whose value is below 1."""
    for name in names:
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")


def installed(module):
    """Whether ``module`` (dotted names too) can be imported, without importing
    it: a parent package such as keras_zoo would pull in TensorFlow."""
    top, _, rest = module.partition(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not rest:
        return spec is not None
    for location in spec.submodule_search_locations or []:
        path = os.path.join(location, *rest.split("."))
        if os.path.exists(path + ".py") or os.path.isdir(path):
            return True
    return False


# ---------------------------------------------------------------- timing


def median_seconds(fn, warmup, steps):
    """(median wall seconds, all wall times, median process CPU seconds) of
    ``fn()`` over ``steps`` calls after ``warmup`` calls. ``fn`` must block
    until its result exists (e.g. return numpy). CPU time (all threads) is
    the load-robust twin of wall time: on a shared machine other processes
    stretch the wall clock, not the work done."""
    for _ in range(warmup):
        fn()
    times, cpu = [], []
    for _ in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(times), times, statistics.median(cpu)


def vit_gemm_shapes(batch_size=16, tokens=197, hidden_dim=384, mlp_dim=1536):
    """(M, K, N, transpose_a, transpose_b) of the matmuls of one ViT block's
    training step: the QKV, output and two MLP projections, each forward
    (X W), activation gradient (dY W^T) and weight gradient (X^T dY)."""
    m, d = batch_size * tokens, hidden_dim
    shapes = []
    for k, n in ((d, 3 * d), (d, d), (d, mlp_dim), (mlp_dim, d)):
        shapes += [(m, k, n, False, False), (m, n, k, False, True), (k, m, n, True, False)]
    return shapes


def _gemm_rate(product, shapes, warmup, steps):
    """GFLOP/s over ``shapes`` (total FLOPs / summed median times); ``product``
    maps a shape to a blocking callable."""
    flops = seconds = 0.0
    for shape in shapes:
        m, k, n = shape[:3]
        seconds += median_seconds(product(shape), warmup, steps)[0]
        flops += 2.0 * m * k * n
    return flops / seconds / 1e9


def matmul_job(size=2048, warmup=2, steps=10, shapes=None):
    """This machine's float32 matmul rate through TensorFlow (oneDNN/Eigen),
    GFLOP/s of one (size x size) @ (size x size) product; with ``shapes``,
    also the rate over those products (e.g. ``vit_gemm_shapes()``)."""
    import tensorflow as tf

    a = tf.random.normal((size, size), dtype=tf.float32)
    b = tf.random.normal((size, size), dtype=tf.float32)

    @tf.function
    def product(a, b, transpose_a=False, transpose_b=False):
        # The scalar read-back forces completion; the sum is O(n^2) next to O(n^3).
        return tf.reduce_sum(tf.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b))

    median, times, cpu = median_seconds(lambda: product(a, b).numpy(), warmup, steps)
    flops = 2.0 * size**3
    result = {"seconds": median, "gflops_median": flops / median / 1e9,
              "gflops_peak": flops / min(times) / 1e9, "gflops_per_cpu_second": flops / cpu / 1e9,
              "size": size}
    if shapes:
        def shape_product(shape):
            m, k, n, ta, tb = shape
            x = tf.random.normal((k, m) if ta else (m, k))
            w = tf.random.normal((n, k) if tb else (k, n))
            return lambda: product(x, w, ta, tb).numpy()
        result["gflops_shapes"] = _gemm_rate(shape_product, shapes, warmup, steps)
    return result


def torch_matmul_job(size=2048, warmup=2, steps=10, shapes=None):
    """The same products through torch (what timm's layers call), so each
    framework's model can be set against its own matmul rate."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    median, times, cpu = median_seconds(lambda: (a @ b).sum().item(), warmup, steps)
    flops = 2.0 * size**3
    result = {"seconds": median, "gflops_median": flops / median / 1e9,
              "gflops_peak": flops / min(times) / 1e9, "gflops_per_cpu_second": flops / cpu / 1e9,
              "size": size, "threads": torch.get_num_threads()}
    if shapes:
        def shape_product(shape):
            m, k, n, ta, tb = shape
            x = torch.randn(k, m).t() if ta else torch.randn(m, k)
            w = torch.randn(n, k).t() if tb else torch.randn(k, n)
            return lambda: (x @ w).sum().item()
        result["gflops_shapes"] = _gemm_rate(shape_product, shapes, warmup, steps)
    return result


# ---------------------------------------------------------------- FLOPs


def vit_forward_flops(image_size=224, patch_size=16, hidden_dim=384, num_layers=12,
                      mlp_dim=1536, num_classes=1000, num_prefix_tokens=1):
    """Forward FLOPs of one image through a ViT (patch projection, per block
    fused QKV + QK^T + AV + output projection + 2-layer MLP, head)."""
    patches = (image_size // patch_size) ** 2
    tokens = patches + num_prefix_tokens
    d = hidden_dim
    macs = patches * (patch_size * patch_size * 3) * d
    per_block = tokens * d * 3 * d + 2 * tokens * tokens * d + tokens * d * d \
        + 2 * tokens * d * mlp_dim
    macs += num_layers * per_block + d * (num_classes or 0)
    return 2.0 * macs


def resnet_forward_flops(image_size=224, stage_depths=(3, 4, 6, 3),
                         stage_filters=(64, 128, 256, 512), block_type="bottleneck",
                         num_classes=1000, num_channels=3):
    """Forward FLOPs of one image through ResNet v1.5 with the ImageNet stem
    (7x7/2 conv, 3x3/2 max pool), stride on the 3x3 conv, 1x1 projection
    shortcuts where the shape changes."""
    def conv(size, k, cin, cout, stride):
        out = -(-size // stride)
        return out, out * out * k * k * cin * cout

    size, macs = conv(image_size, 7, num_channels, stage_filters[0], 2)
    size = -(-size // 2)  # max pool
    cin = stage_filters[0]
    expansion = 4 if block_type == "bottleneck" else 1
    for s, (depth, f) in enumerate(zip(stage_depths, stage_filters)):
        for b in range(depth):
            stride = 2 if (s > 0 and b == 0) else 1
            cout = f * expansion
            if block_type == "bottleneck":
                _, m1 = conv(size, 1, cin, f, 1)
                out, m2 = conv(size, 3, f, f, stride)
                _, m3 = conv(out, 1, f, cout, 1)
            else:
                out, m1 = conv(size, 3, cin, f, stride)
                _, m2 = conv(out, 3, f, f, 1)
                m3 = 0
            macs += m1 + m2 + m3
            if stride != 1 or cin != cout:
                macs += conv(size, 1, cin, cout, stride)[1]
            size, cin = out, cout
    macs += cin * (num_classes or 0)
    return 2.0 * macs


# ---------------------------------------------------------------- tables


def machine_line():
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")


def fmt(value, digits=1, suffix=""):
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:,.{digits}f}{suffix}"


def fmt_significant(value, significant=3, suffix=""):
    """``fmt`` with at least ``significant`` significant digits (and one decimal):
    a 0.04 ms latency prints as 0.0412, not 0.0."""
    if value is None or isinstance(value, str) or value == 0:
        return fmt(value, 1, suffix)
    digits = max(1, significant - 1 - math.floor(math.log10(abs(value))))
    return fmt(value, digits, suffix)


def markdown_table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def target_line(name, value, goal, met=None, unit=""):
    """One 'target' line: what was asked, what was measured, met or missed by how much."""
    if value is None:
        return f"- {name}: not measured"
    met = value >= goal if met is None else met
    verdict = "met" if met else f"MISSED by {fmt(goal - value, 2)}{unit}"
    return f"- {name}: {fmt(value, 2)}{unit} vs target {fmt(goal, 2)}{unit}: {verdict}"
