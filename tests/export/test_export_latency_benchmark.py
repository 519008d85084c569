"""benchmarks/export_latency.py --quick: the side-by-side table is produced."""

import pytest

from benchmarks import export_latency


@pytest.mark.slow
def test_quick_run_prints_every_model_in_every_precision(capsys):
    rows = export_latency.main(["--quick"])
    out = capsys.readouterr().out
    assert [r["preset"] for r in rows] == list(export_latency.MODELS)
    for r in rows:
        for mode in export_latency.MODES:
            assert r[mode]["latency_us_median"] > 0 and r[mode]["ops"]["flex"] == []
        assert 0.0 <= r["int8_agreement"] <= 1.0
        assert f"| {r['preset']} |" in out
    assert "target: int8 <= 0.6x float32" in out
    assert out.count("| yes |") + out.count("| no |") == len(rows)
