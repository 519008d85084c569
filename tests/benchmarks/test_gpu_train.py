"""benchmarks.gpu_train runs end to end (``--quick``: tiny models on the CPU).

Its keras_zoo rows train on JAX in a worker that blocks TensorFlow imports;
the timm rows run where torch and timm are installed (not in CI, whose test
extra has neither: there the script must say that it skipped them)."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks import common
from tests.benchmarks.test_benchmarks_quick import _table


def test_quick_run_trains_keras_zoo_on_jax_and_prints_the_table():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_train", "--quick",
                           "--precisions", "fp32"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=1500, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = _table(proc.stdout, "model")
    zoo = {(r[0], r[2]): r for r in rows if r[2].startswith("keras_zoo_jax")}
    assert sorted(zoo) == [
        ("ResNet-50 (quick)", "keras_zoo_jax"),
        ("ViT-S/16 (quick)", "keras_zoo_jax (attention fused)"),
        ("ViT-S/16 (quick)", "keras_zoo_jax (attention matmul)")], rows
    for row in zoo.values():
        assert float(row[3].replace(",", "")) > 0, row
    assert zoo[("ViT-S/16 (quick)", "keras_zoo_jax (attention fused)")][6].endswith(
        "fused -> fused")
    assert zoo[("ViT-S/16 (quick)", "keras_zoo_jax (attention matmul)")][6].endswith(
        "matmul -> matmul")
    assert "81,226 params" in zoo[("ViT-S/16 (quick)", "keras_zoo_jax (attention fused)")][6]
    assert "jax " in proc.stdout and "TensorFlow was imported" not in proc.stdout
    timm = [r for r in rows if r[2].startswith("timm")]
    if common.installed("torch") and common.installed("timm"):
        assert len(timm) == 4 and all(float(r[3].replace(",", "")) > 0 for r in timm), timm
    else:
        assert not timm
        assert "timm_eager: torch, timm not installed; its rows are skipped" in proc.stdout \
            or "timm_eager: timm not installed; its rows are skipped" in proc.stdout
