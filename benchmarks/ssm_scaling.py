"""Mamba vs attention: forward time against sequence length, and per-token generation cost.

    python -m benchmarks.ssm_scaling            # the README table (tens of minutes)
    python -m benchmarks.ssm_scaling --quick    # a smoke run; its numbers mean nothing

1. Forward time (batch 1, graph mode, median of --steps) of one Mamba block
   (RMSNorm -> MambaMixer, + residual; keras_zoo.models.mamba.MambaBlock) and
   one causal pre-LN attention block (keras_zoo.layers.TransformerEncoderBlock,
   heads of 64, MLP 4x) of the same width for L = 256 ... 16384, and the
   exponent k of a least-squares fit time ~ L^k (over all L, and over the upper
   half where fixed per-call costs matter least).
2. Per-token generation time at positions 100 and 4,000 (XLA-compiled, as
   ``CausalLM.generate`` runs): Mamba's recurrent step on its fixed-size state,
   and the attention block stepped with keras_zoo's MultiHeadAttention key/value
   cache holding the tokens so far (a GPT decoder block's work per token).
3. The same Mamba block against transformers' pure-PyTorch Mamba (MambaBlock
   without the CUDA kernels: a sequential scan) at the same width, run by the
   torch interpreter given with --torch_python in its own process.

Every measurement runs in a fresh process (benchmarks.common.run_jobs). An
attention length whose score tensors would not fit in half of the free memory
is reported as skipped rather than run.
"""

import argparse
import json
import math
import os
import subprocess
import sys

from benchmarks import common

LENGTHS = (256, 512, 1024, 2048, 4096, 8192, 16384)
POSITIONS = (100, 4000)
DEFAULT_TORCH = "/work/torchenv/bin/python"


# ---------------------------------------------------------------- workers

def _mamba_block(width, state_dim=16):
    from keras_zoo.models.mamba import MambaBlock

    block = MambaBlock({"state_dim": state_dim}, name="mamba_block")
    block.build((1, None, width))
    return block


def forward_job(kind, width, length, warmup, steps):
    """Seconds of one forward pass of one block over (1, length, width)."""
    import numpy as np
    import tensorflow as tf

    from keras_zoo.layers import TransformerEncoderBlock

    x = tf.constant(np.random.default_rng(0).standard_normal((1, length, width)), "float32")
    if kind == "mamba":
        block = _mamba_block(width)
        fn = tf.function(lambda t: block(t))
    else:
        block = TransformerEncoderBlock(max(1, width // 64), 4 * width, name="attention_block")
        block.build((1, length, width))
        fn = tf.function(lambda t: block(t, use_causal_mask=True))
    seconds, _, cpu = common.median_seconds(lambda: fn(x).numpy(), warmup, steps)
    return {"seconds": seconds, "cpu_seconds": cpu}


def decode_job(kind, width, position, warmup, steps):
    """Seconds of one generated token at ``position`` (XLA-compiled step)."""
    import numpy as np
    import tensorflow as tf

    from keras_zoo.layers import TransformerEncoderBlock

    rng = np.random.default_rng(0)
    token = tf.constant(rng.standard_normal((1, 1, width)), "float32")
    if kind == "mamba":
        block = _mamba_block(width)
        inner = 2 * width
        conv = tf.constant(rng.standard_normal((1, 3, inner)), "float32")
        ssm = tf.constant(rng.standard_normal((1, inner, 16)) * 0.1, "float32")
        fn = tf.function(lambda t, c, s: block(t, conv_state=c, ssm_state=s)[0],
                         jit_compile=True)
        args = (token, conv, ssm)
    else:
        # The forward part's pre-LN block, stepped with its attention's key/value
        # cache, which holds the tokens so far: this step attends over position + 1 keys.
        block = TransformerEncoderBlock(max(1, width // 64), 4 * width, name="decoder_block")
        block.build((1, None, width))
        cache = block.attention.init_cache(1, position + 1)
        cache = tf.constant(rng.standard_normal(tuple(cache.shape)) * 0.1, "float32")

        def step(t, c, i):
            h, c = block.attention(block.attention_norm(t), use_causal_mask=True, cache=c,
                                   cache_index=i)
            t = t + h
            return t + block.mlp(block.mlp_norm(t))

        fn = tf.function(step, jit_compile=True)
        args = (token, cache, tf.constant(position, "int32"))
    seconds, _, cpu = common.median_seconds(lambda: fn(*args).numpy(), warmup, steps)
    return {"seconds": seconds, "cpu_seconds": cpu}


def torch_forward_job(width, length, warmup, steps):
    """transformers' MambaBlock (norm + mixer, pure-PyTorch path) forward seconds."""
    import torch
    from transformers import MambaConfig
    from transformers.models.mamba.modeling_mamba import MambaBlock

    torch.manual_seed(0)
    config = MambaConfig(hidden_size=width, state_size=16, num_hidden_layers=1, expand=2,
                         conv_kernel=4, use_mambapy=False)
    block = MambaBlock(config, layer_idx=0).eval()
    x = torch.randn(1, length, width)

    def run():
        with torch.no_grad():
            return block(x).numpy()
    seconds, _, cpu = common.median_seconds(run, warmup, steps)
    return {"seconds": seconds, "cpu_seconds": cpu, "threads": torch.get_num_threads()}


def scan_job(variant, channels, length, backward, warmup, steps):
    """Seconds of one selective scan (batch 1, state 16) by ``variant``: the zoo's
    chunked scan, keras.ops.associative_scan over (exp(delta A), delta B x), or
    a sequential tf.scan (a WHILE loop); ``backward`` adds the gradient."""
    import numpy as np
    import tensorflow as tf
    from keras import ops

    from keras_zoo.layers.ssm import chunked_selective_scan

    rng = np.random.default_rng(0)
    n = 16
    a = tf.constant(-np.tile(np.arange(1, n + 1, dtype="float32"), (channels, 1)))
    delta = tf.constant(rng.uniform(1e-3, 0.1, (1, length, channels)), "float32")
    x = tf.constant(rng.standard_normal((1, length, channels)), "float32")
    b, c = (tf.constant(rng.standard_normal((1, length, n)), "float32") for _ in range(2))

    def scan(delta, x, b, c):
        if variant == "chunked":
            return chunked_selective_scan(x, delta, b, c, a)[0]
        d_a = ops.exp(delta[..., None] * a)
        u = (delta * x)[..., None] * b[:, :, None, :]
        if variant == "associative":
            h = ops.associative_scan(lambda p, q: (p[0] * q[0], q[0] * p[1] + q[1]),
                                     (d_a, u), axis=1)[1]
        else:
            h = tf.transpose(tf.scan(lambda h, e: e[0] * h + e[1],
                                     (tf.transpose(d_a, (1, 0, 2, 3)),
                                      tf.transpose(u, (1, 0, 2, 3))),
                                     initializer=tf.zeros_like(u[:, 0])), (1, 0, 2, 3))
        return ops.sum(h * c[:, :, None, :], axis=-1)

    def run(delta, x, b, c):
        if not backward:
            return scan(delta, x, b, c)
        with tf.GradientTape() as tape:
            tape.watch([delta, x, b, c])
            y = scan(delta, x, b, c)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [delta, x, b, c])[0]

    fn = tf.function(run)
    seconds, _, cpu = common.median_seconds(lambda: fn(delta, x, b, c).numpy(), warmup, steps)
    return {"seconds": seconds, "cpu_seconds": cpu}


HANDLERS = {"forward": forward_job, "decode": decode_job, "torch_forward": torch_forward_job,
            "scan": scan_job}
SCAN_VARIANTS = ("chunked", "associative", "sequential")


# ---------------------------------------------------------------- plan and report

def fitted_exponent(lengths, seconds):
    """Least-squares slope of log(seconds) on log(L)."""
    points = [(math.log(n), math.log(s)) for n, s in zip(lengths, seconds) if s]
    if len(points) < 2:
        return None
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def attention_bytes(width, length):
    """Peak bytes of the causal scores: (heads, L, L) float32, ~4 live copies
    (scores, masked scores, probabilities, and the boolean mask)."""
    return 4 * max(1, width // 64) * length * length * 4


def free_bytes():
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def run_torch(python, jobs, timeout=3600):
    env = dict(os.environ, PYTHONPATH=common.REPO_ROOT)
    try:
        proc = subprocess.run([python, "-m", "benchmarks.ssm_scaling", "--worker",
                               json.dumps(jobs)], cwd=common.REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [{"error": f"{type(e).__name__}: {e}"} for _ in jobs]
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(common.RESULT_MARK):
            return json.loads(line[len(common.RESULT_MARK):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return [{"error": f"exited with {proc.returncode}: {tail[:200]}"} for _ in jobs]


class _Runner:
    """One fresh process per measurement; under --quick all of them in one
    (start-up would dominate a smoke run)."""

    def __init__(self, quick):
        self.quick, self.pending = quick, []

    def __call__(self, job, /, **args):  # positional-only: forward jobs carry a "kind" arg
        return common.run_jobs("benchmarks.ssm_scaling", [{"kind": job, "args": args}])[0]

    def many(self, jobs):
        """[(kind, args)] -> results, in order."""
        if self.quick:
            return common.run_jobs("benchmarks.ssm_scaling",
                                   [{"kind": k, "args": a} for k, a in jobs])
        return [self(k, **a) for k, a in jobs]


def _ms(result, key="seconds"):
    if result is None:
        return "-"
    if "error" in result:
        return f"error: {result['error'][:60]}"
    if "skipped" in result:
        return result["skipped"]
    return common.fmt(result[key] * 1e3, 2)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1 step: a smoke run")
    p.add_argument("--width", type=int, default=256, help="model width of both blocks")
    p.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    p.add_argument("--positions", default=",".join(map(str, POSITIONS)))
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--torch_python", default=DEFAULT_TORCH if os.path.exists(DEFAULT_TORCH)
                   else None, help="interpreter with torch + transformers (part 3)")
    p.add_argument("--torch_lengths", default="256,1024,4096")
    p.add_argument("--scan_lengths", default="1024,4096",
                   help="part 0: scan implementations compared at these lengths ('' skips)")
    args = p.parse_args(argv)
    lengths = [int(v) for v in args.lengths.split(",")]
    positions = [int(v) for v in args.positions.split(",")]
    torch_lengths = [int(v) for v in args.torch_lengths.split(",")]
    scan_lengths = [int(v) for v in args.scan_lengths.split(",") if v]
    if args.quick:
        args.width, lengths, positions, torch_lengths = 32, [32, 64], [4, 16], [32]
        scan_lengths = [32]
        args.warmup, args.steps, args.torch_python = 1, 1, None
    w, budget = args.width, free_bytes()

    print(f"# Mamba vs attention, width {w}, batch 1 ({common.machine_line()})\n")
    run = _Runner(args.quick)
    if scan_lengths:
        keys = [(v, n, back) for n in scan_lengths for back in (False, True)
                for v in SCAN_VARIANTS]
        scans = dict(zip(keys, run.many([("scan", {
            "variant": v, "channels": 2 * w, "length": n, "backward": back,
            "warmup": args.warmup, "steps": args.steps}) for v, n, back in keys])))
        print(f"Selective scan alone ({2 * w} channels x state 16, CPU ms, median; graph "
              "mode)\n")
        print(common.markdown_table(
            ["L", "pass", "chunked (zoo)", "keras.ops.associative_scan",
             "sequential tf.scan (WHILE)"],
            [[n, "forward + gradient" if back else "forward",
              *(_ms(scans[v, n, back], "cpu_seconds") for v in SCAN_VARIANTS)]
             for n in scan_lengths for back in (False, True)]))
        print()
    forward, jobs = {}, []
    for length in lengths:
        for kind in ("mamba", "attention"):
            need = attention_bytes(w, length)
            if kind == "attention" and budget and need > budget / 2:
                forward[kind, length] = {"skipped": f"skipped ({need / 2**30:.0f} GiB of scores)"}
                continue
            jobs.append(((kind, length), ("forward", {
                "kind": kind, "width": w, "length": length, "warmup": args.warmup,
                "steps": args.steps})))
    forward.update(zip([key for key, _ in jobs], run.many([job for _, job in jobs])))
    rows = []
    for length in lengths:
        m, a = forward["mamba", length], forward["attention", length]
        ratio = (a["cpu_seconds"] / m["cpu_seconds"]) if "seconds" in m and "seconds" in a \
            else None
        rows.append([length, _ms(m), _ms(m, "cpu_seconds"), _ms(a), _ms(a, "cpu_seconds"),
                     common.fmt(ratio, 2, "x")])
    print("Forward time of one block (ms, median; graph mode). CPU = process CPU time of "
          "the call, the\nload-robust measure on a shared machine; the fits use it.\n")
    print(common.markdown_table(["L", "Mamba wall", "Mamba CPU", "attention wall",
                                 "attention CPU", "attention / Mamba (CPU)"], rows))
    fits = {}
    for kind in ("mamba", "attention"):
        done = [(n, forward[kind, n]["cpu_seconds"]) for n in lengths
                if "seconds" in forward[kind, n]]
        upper = done[len(done) // 2:]
        fits[kind] = (fitted_exponent(*zip(*done)) if len(done) > 1 else None,
                      fitted_exponent(*zip(*upper)) if len(upper) > 1 else None,
                      upper[0][0] if upper else None)
    print()
    for kind, (k_all, k_upper, start) in fits.items():
        print(f"- {kind}: CPU time ~ L^k, k = {common.fmt(k_all, 2)} over all L, "
              f"{common.fmt(k_upper, 2)} over L >= {start}")
    crossover = next((n for n in lengths if "seconds" in forward["attention", n]
                      and "seconds" in forward["mamba", n]
                      and forward["mamba", n]["cpu_seconds"]
                      < forward["attention", n]["cpu_seconds"]), None)
    print(f"- Mamba faster than attention from L = {crossover if crossover else 'never'}")

    keys = [(kind, pos) for kind in ("mamba", "attention") for pos in positions]
    decode = dict(zip(keys, run.many([("decode", {
        "kind": kind, "width": w, "position": pos, "warmup": args.warmup,
        "steps": max(args.steps, 20)}) for kind, pos in keys])))
    print("\nPer-token generation time of one block (ms, median wall / CPU; XLA)\n")
    print(common.markdown_table(
        ["position", "Mamba (recurrent state)", "attention (key/value cache)"],
        [[pos, *(f"{_ms(decode[k, pos])} / {_ms(decode[k, pos], 'cpu_seconds')}"
                 for k in ("mamba", "attention"))] for pos in positions]))

    if args.torch_python:
        torch_rows = run_torch(args.torch_python, [{"kind": "torch_forward", "args": {
            "width": w, "length": n, "warmup": 1, "steps": 3}} for n in torch_lengths])
        print(f"\nMamba block forward, keras_zoo vs transformers' pure-PyTorch Mamba "
              f"(ms; torch {torch_rows[0].get('threads', '?')} threads)\n")
        rows = []
        for n, t in zip(torch_lengths, torch_rows):
            ours = forward.get(("mamba", n)) or run("forward", kind="mamba", width=w, length=n,
                                                    warmup=args.warmup, steps=args.steps)
            speedup = t["seconds"] / ours["seconds"] if "seconds" in t and "seconds" in ours \
                else None
            rows.append([n, f"{_ms(ours)} / {_ms(ours, 'cpu_seconds')}",
                         f"{_ms(t)} / {_ms(t, 'cpu_seconds')}", common.fmt(speedup, 1, "x")])
        print(common.markdown_table(["L", "keras_zoo (chunked scan), wall / CPU",
                                     "transformers (sequential scan), wall / CPU",
                                     "speed-up (wall)"], rows))
    elif not args.quick:
        print("\n(part 3 skipped: no --torch_python with torch + transformers)")
    if args.quick:
        print("\n--quick: tiny sizes, one step: a smoke run, its numbers mean nothing")


if __name__ == "__main__":
    if not common.worker_main(sys.argv, HANDLERS):
        main()
