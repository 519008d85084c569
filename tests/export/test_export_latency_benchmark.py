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
        # --quick compares 32 digits:test images: the agreement counts those that
        # keep their top-1 class, and the table prints that share
        agreeing = r["int8_agreement"] * 32
        assert agreeing == pytest.approx(round(agreeing), abs=1e-9) and 0 <= round(agreeing) <= 32
        line = next(x for x in out.splitlines() if x.startswith(f"| {r['preset']} |"))
        assert f"| {100 * round(agreeing) / 32:.1f} % |" in line, line
    assert "target: int8 <= 0.6x float32" in out
    assert out.count("| yes |") + out.count("| no |") == len(rows)
