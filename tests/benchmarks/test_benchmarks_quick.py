"""The benchmark scripts run (``--quick``) and count what they claim to count.

Each script is run once as a user would (``python -m benchmarks.X --quick``),
so the scripts cannot rot; the FLOP counters are checked against the
published multiply-add counts the share-of-matmul numbers rest on.
"""

import os
import re
import subprocess
import sys

import pytest

# benchmarks/ is a folder of scripts beside the package, not installed with it.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks import common, models


def _run_script(module, *flags, timeout=3600):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    try:
        proc = subprocess.run([sys.executable, "-m", module, "--quick", *flags], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"python -m {module} --quick did not finish within {timeout} s (the "
                    "machine is overloaded, or the script hangs)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _table(text, first_header):
    """Rows (lists of cells) of the Markdown table whose first header is ``first_header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


@pytest.mark.parametrize("published_gmacs, flops", [
    # timm / fvcore: ViT-S/16 4.6 GMACs, ViT-B/16 17.6; torchvision: ResNet-50
    # 4.09 GFLOPS (multiply-adds), ResNet-18 1.81.
    (4.6, common.vit_forward_flops()),
    (17.56, common.vit_forward_flops(hidden_dim=768, num_layers=12, mlp_dim=3072)),
    (4.09, common.resnet_forward_flops()),
    (1.81, common.resnet_forward_flops(stage_depths=(2, 2, 2, 2), block_type="basic")),
])
def test_flop_counts_match_published_multiply_adds(published_gmacs, flops):
    assert flops / 2e9 == pytest.approx(published_gmacs, rel=0.01)


def test_flops_scale_with_the_architecture():
    base = common.vit_forward_flops()
    # Attention is quadratic in tokens, the rest linear: 4x the pixels -> > 4x the FLOPs.
    assert common.vit_forward_flops(image_size=448) > 4 * base
    assert common.resnet_forward_flops(image_size=448) == pytest.approx(
        4 * common.resnet_forward_flops(), rel=0.01)


def test_a_failing_job_becomes_an_error_row_not_a_crash():
    results = common.run_jobs("benchmarks.train_throughput",
                              [{"kind": "matmul", "args": {"no_such_argument": 1}},
                               {"kind": "no_such_kind", "args": {}}])
    assert len(results) == 2
    assert all("error" in r for r in results), results


def test_bad_flags_name_the_value():
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.train_throughput",
                               "--models", "vgg"], cwd=REPO, capture_output=True, text=True,
                              check=False, timeout=1800)
    except subprocess.TimeoutExpired:
        pytest.fail("benchmarks.train_throughput --models vgg did not exit within 1800 s")
    assert proc.returncode != 0
    assert "vgg" in proc.stderr and "vit" in proc.stderr


@pytest.mark.slow
def test_train_throughput_quick_compares_the_same_models():
    out = _run_script("benchmarks.train_throughput")
    assert "error" not in out, out
    rows = _table(out, "model")
    impls = {row[1] for row in rows}
    expected = {"keras_zoo", "keras_hub"} | ({"timm"} if common.installed("timm") else set())
    assert impls == expected
    # Same config in every library: identical parameter counts per model.
    for arch in models.ARCHITECTURES:
        counts = {row[2] for row in rows if row[0] == models.display_name(arch, True)}
        assert len(counts) == 1, (arch, rows)
    for row in rows:
        assert float(row[4].replace(",", "")) > 0  # img/s
    assert re.search(r"matmul .*: [\d,.]+ GFLOP/s median", out)
    assert "ViT-S/16 keras_zoo / keras_hub" in out and "ResNet-50 keras_zoo / keras_hub" in out


@pytest.mark.slow
def test_inference_throughput_quick_includes_tflite():
    out = _run_script("benchmarks.inference_throughput", "--models", "vit")
    assert "error" not in out, out
    rows = _table(out, "model")
    runtimes = [row[3] for row in rows if row[1] == "keras_zoo TFLite"]
    if common.installed("export"):
        assert any("float32" in r for r in runtimes) and any("int8" in r for r in runtimes)
    else:
        assert "TFLite: not available" in out
    for row in rows:
        # Printed to 3 significant digits, so no latency rounds to "0.0" on a fast
        # machine; the two batch-1 columns are the same measurement (ms and 1/s).
        ms, per_second = float(row[4].replace(",", "")), float(row[5].replace(",", ""))
        assert ms > 0 and len(row[4].replace(",", "").replace(".", "").lstrip("0")) >= 3, row
        assert per_second == pytest.approx(1000 / ms, rel=0.01), row


def test_latencies_print_with_three_significant_digits():
    """The flake: a 0.04 ms TFLite latency printed with one decimal was "0.0"."""
    assert common.fmt_significant(0.0412345) == "0.0412"
    assert common.fmt_significant(74.73) == "74.7"
    assert common.fmt_significant(1234.56) == "1,234.6"
    assert common.fmt_significant(3.14159) == "3.14"
    assert common.fmt_significant(None) == "-"


@pytest.mark.slow
def test_input_pipeline_quick_measures_pipelines_and_fit():
    out = _run_script("benchmarks.input_pipeline")
    assert "error" not in out, out
    pipelines = _table(out, "pipeline")
    assert {row[0] for row in pipelines} >= {"digits", "synthetic"}
    fits = _table(out, "model")
    assert fits and all(row[4].endswith("%") for row in fits)
    assert "real pipeline / synthetic tensors" in out


@pytest.mark.slow
def test_import_time_quick_and_no_heavy_eager_import():
    out = _run_script("benchmarks.import_time")
    rows = _table(out, "import")
    assert [row[0] for row in rows][:2] == ["`import keras`", "`import keras_zoo`"]
    assert "failed" not in out, out
    # The rule: keras_zoo must not load keras_hub, tfds, ... at import.
    assert "eager import" not in out, out
    assert "beyond what `import keras` loads: met" in out


@pytest.mark.slow
def test_profile_step_quick_lists_the_kernels_of_a_step(tmp_path):
    out = _run_script("benchmarks.profile_step", "--logdir", str(tmp_path))
    assert "error" not in out, out
    rows = _table(out, "op type")
    ops = {row[0] for row in rows}
    # A ViT step: projections, attention products, the fused Adam update.
    assert {"_MklMatMul", "ResourceApplyAdam"} <= ops or {"MatMul", "ResourceApplyAdam"} <= ops, ops
    assert any("BatchMatMul" in op for op in ops), ops
    shares = [float(row[2].rstrip(" %")) for row in rows]
    assert 0 < sum(shares) <= 100.5
    assert list(tmp_path.rglob("*.xplane.pb")), "the raw trace was not kept"


@pytest.mark.slow
def test_speedups_quick_times_each_keras_original_against_ours():
    out = _run_script("benchmarks.speedups")
    assert "error" not in out, out
    rows = _table(out, "what")
    assert [row[0].split(" ")[0] for row in rows] == ["attention", "GELU", "AdamW", "BatchNorm"]
    for row in rows:
        assert row[3].endswith("x") and float(row[3][:-1]) > 0


def test_transformer_benchmark_quick_compares_equal_models():
    out = _run_script("benchmarks.text_transformer")
    rows = {row[0]: row for row in _table(out, "run")}
    assert set(rows) == {"train keras_zoo", "train keras_hub", "greedy decode, with cache",
                         "greedy decode, without cache"}
    # The same architecture on both sides: equal parameter counts.
    assert rows["train keras_zoo"][1] == rows["train keras_hub"][1] != ""
    assert all(float(row[2].replace(",", "")) > 0 for row in rows.values())


def test_gpt_benchmark_quick_compares_equal_models():
    out = _run_script("benchmarks.text_gpt")
    train = {row[0]: row for row in _table(out, "implementation")}
    assert set(train) == {"keras_zoo", "keras_hub"}
    # The same architecture on both sides: equal parameter counts, no error.
    assert train["keras_zoo"][1] == train["keras_hub"][1] != "-"
    assert all(row[5] == "" and float(row[2].replace(",", "")) > 0 for row in train.values())
    lines = out.splitlines()
    second = next(i for i, line in enumerate(lines) if line.startswith("Greedy generation"))
    gen = _table("\n".join(lines[second:]), "implementation")
    assert [row[0].split(" ")[0] for row in gen] == ["keras_zoo", "keras-hub", "keras_zoo,"]
    # Every generator produced the 16 new tokens --quick asks for.
    assert [row[1] for row in gen] == ["16", "16", "16"]
    assert all(float(row[3].replace(",", "")) > 0 for row in gen)
    # Greedy generation is deterministic: the timed call repeats the untimed one.
    assert all("repeats its tokens" in row[4] for row in gen[:2])
