"""benchmarks.ssm_scaling runs (--quick) and fits what it claims to fit."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks import ssm_scaling


def test_fitted_exponent_recovers_the_power():
    lengths = [256, 512, 1024, 2048]
    assert ssm_scaling.fitted_exponent(lengths, [3e-9 * n ** 2 for n in lengths]) == \
        pytest.approx(2.0)
    assert ssm_scaling.fitted_exponent(lengths, [1e-6 * n for n in lengths]) == \
        pytest.approx(1.0)


def test_attention_memory_estimate_counts_heads_and_square_length():
    assert ssm_scaling.attention_bytes(256, 16384) == 4 * 4 * 16384 ** 2 * 4


def test_full_run_sends_each_job_with_its_own_kind_argument(monkeypatch):
    # A full run starts one process per job; forward jobs carry a "kind" argument
    # of their own ("mamba" / "attention"), which once clashed with the job's kind.
    sent = []
    monkeypatch.setattr(ssm_scaling.common, "run_jobs",
                        lambda module, jobs: sent.extend(jobs) or [{"seconds": 1.0}])
    run = ssm_scaling._Runner(quick=False)
    run.many([("forward", {"kind": "mamba", "width": 8, "length": 16})])
    run("forward", kind="attention", width=8, length=16)
    assert sent == [{"kind": "forward", "args": {"kind": "mamba", "width": 8, "length": 16}},
                    {"kind": "forward", "args": {"kind": "attention", "width": 8, "length": 16}}]


@pytest.mark.slow
def test_quick_run_prints_both_tables():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.ssm_scaling", "--quick"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "| L | Mamba wall | Mamba CPU | attention wall |" in out
    assert "| position | Mamba (recurrent state) | attention (key/value cache) |" in out
    assert "error" not in out, out
    assert "CPU time ~ L^k" in out
