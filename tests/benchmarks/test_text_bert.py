"""benchmarks.text_bert runs (--quick) and compares the same BERT in both libraries."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_text_bert_quick_compares_the_same_encoder():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.text_bert", "--quick"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=1800, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "error" not in out, out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| implementation |"))
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[start + 2:start + 4]]
    assert [r[0] for r in rows] == ["keras_zoo", "keras_hub"]
    assert rows[0][1] == rows[1][1] == "139,456"  # the same encoder, parameter for parameter
    assert all(float(r[3].replace(",", "")) > 0 for r in rows)  # tokens/s
    assert "keras_zoo / keras_hub training tokens/s" in out


def test_bad_flags_name_the_value():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.text_bert",
                           "--sequence_length", "600"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 2 and "--sequence_length=600 passes BERT's 512 positions" \
        in proc.stderr
