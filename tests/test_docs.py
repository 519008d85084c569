"""The documentation site: builds strictly offline, its numbers come from results
files that name their command, and its runnable examples run."""

import glob
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
RESULTS = os.path.join(DOCS, "results")
LEGACY = "<!-- legacy-numbers"  # a page moved from the README before its results files
RUNNABLE = "<!-- runnable -->"
# A figure that was measured (a decimal, a percentage, a ratio such as 1.2x), as
# opposed to a count or a name. Such figures in a table must come from a file.
MEASURED = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])|\d\s?%|\b\d+(\.\d+)?x\b")


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


results = _load("_kz_results_for_test", os.path.join(ROOT, "keras_zoo", "results.py"))
hooks = _load("_kz_hooks_for_test", os.path.join(ROOT, "tools", "mkdocs_hooks.py"))


def _pages():
    return sorted(glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True))


def _prose_lines(text):
    """The page's lines outside fenced code blocks."""
    inside = False
    for line in text.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            inside = not inside
            continue
        if not inside:
            yield line


def test_every_results_file_names_its_command_and_provenance():
    files = sorted(glob.glob(os.path.join(RESULTS, "*.json")))
    assert files, "docs/results/ holds no results file"
    for path in files:
        record = results.read_results(path)  # raises naming the file and what it lacks
        assert re.search(r"\b(python|bash) ", record["command"]), (path, record["command"])
        assert record["tables"], f"{path}: no table"


def test_results_files_are_written_with_their_provenance(tmp_path):
    path = results.write_results("x", "python -m demo", {"t": (["a", "b"], [[1, 2.5]])},
                                 path=str(tmp_path / "x.json"))
    record = results.read_results(path)
    assert record["command"] == "python -m demo"
    assert record["machine"]["cores"] == os.cpu_count()
    assert record["tables"]["t"] == {"columns": ["a", "b"], "rows": [[1, 2.5]]}
    with pytest.raises(ValueError, match="needs the command"):
        results.write_results("x", "", {}, path=str(tmp_path / "y.json"))
    with pytest.raises(ValueError, match="has 1 values for 2 columns"):
        results.table(["a", "b"], [[1]])
    (tmp_path / "bad.json").write_text('{"command": "python x"}')
    with pytest.raises(ValueError, match=r"bad.json: results file lacks \['date'"):
        results.read_results(str(tmp_path / "bad.json"))


def test_results_marker_renders_filters_and_fails_loudly(tmp_path):
    results.write_results("r", "python -m bench", {
        "main": (["family", "preset", "acc"], [["ViT", "vit_a", 0.96941], ["MLP", "m", 0.5]])},
        path=str(tmp_path / "r.json"))
    out = hooks.render("r.json", "main", ' where=family:ViT columns="preset,acc"',
                       results_dir=str(tmp_path))
    assert "| preset | acc |" in out and "| vit_a | 0.9694 |" in out and "| m |" not in out
    assert "`python -m bench`" in out and "load average" in out
    for marker, message in [(("nope.json", None, ""), "not in"),
                            (("r.json", "other", ""), "has no table 'other'"),
                            (("r.json", None, " columns=preset,size"), r"no column\(s\) \['size'\]"),
                            (("r.json", None, " where=family:GPT"), "keeps no row"),
                            (("r.json", None, " sort=acc"), "unknown results marker option")]:
        with pytest.raises(ValueError, match=message):
            hooks.render(*marker, results_dir=str(tmp_path))


def test_every_measured_table_comes_from_a_results_file():
    """A table row with a measured-looking figure, typed into a page, is the
    drift the site exists to prevent; pages moved from the README before their
    results files existed carry the legacy marker and say so on the page."""
    typed, legacy = [], []
    for page in _pages():
        text = open(page).read()
        rel = os.path.relpath(page, DOCS)
        if LEGACY in text:
            assert "!!! note" in text.split(LEGACY, 1)[1][:600], (
                f"{rel}: a legacy page must tell its reader, in a note right after "
                "the marker, that its figures were typed before results files existed")
            legacy.append(rel)
            continue
        for line in _prose_lines(text):
            if line.lstrip().startswith("|") and MEASURED.search(line):
                typed.append(f"{rel}: {line.strip()[:100]}")
    assert not typed, ("measured figures typed into tables (use a <!-- results: FILE --> "
                       "marker):\n" + "\n".join(typed))


def test_runnable_examples_run(tmp_path):
    """Blocks marked runnable execute in one fresh interpreter, each page in a
    namespace of its own (one TensorFlow start-up for all of them)."""
    pages = {}
    for page in _pages():
        blocks = re.findall(re.escape(RUNNABLE) + r"\s*```python\n(.*?)```", open(page).read(),
                            re.S)
        if blocks:
            pages[os.path.relpath(page, DOCS)] = "\n\n".join(blocks)
    assert sum(len(re.findall(re.escape(RUNNABLE), open(p).read())) for p in _pages()) >= 3
    driver = tmp_path / "run_examples.py"
    driver.write_text(
        "import json, sys, traceback\n"
        f"pages = json.loads({json.dumps(json.dumps(pages))})\n"
        "for name, code in pages.items():\n"
        "    try:\n"
        "        exec(compile(code, name, 'exec'), {'__name__': '__main__'})\n"
        "    except Exception:\n"
        "        sys.exit(f'{name}: runnable example failed:\\n' + traceback.format_exc())\n")
    proc = subprocess.run([sys.executable, str(driver)], cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=900, env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_site_builds_strictly_offline(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                           "-d", str(tmp_path / "site")], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for page in ("index.html", "families/vit.html", "benchmarks.html", "reference.html"):
        assert (tmp_path / "site" / page).exists(), page
    vit = (tmp_path / "site" / "families" / "vit.html").read_text()
    assert "param_counts.json" in vit and "86,567,656" in vit


def test_readme_is_short_and_links_resolve():
    text = open(os.path.join(ROOT, "README.md")).read()
    assert len(text.split("\n")) <= 250, "README.md grew past ~250 lines: move detail to docs/"
    for target in re.findall(r"\]\((docs/[^)#]+)", text):
        assert os.path.exists(os.path.join(ROOT, target)), f"README links to missing {target}"
    assert "mkdocs serve" in text


def test_readme_tables_match_their_results_files():
    """README.md is read on GitHub, where no hook runs: it keeps a rendered
    copy of each results table, refreshed by `python tools/mkdocs_hooks.py README.md`."""
    text = open(os.path.join(ROOT, "README.md")).read()
    assert hooks.fill(text) == text, "README tables are stale: run python tools/mkdocs_hooks.py README.md"
    for line in _prose_lines(hooks.FILLED.sub("", text)):
        assert not (line.lstrip().startswith("|") and MEASURED.search(line)), (
            f"README types a measured figure outside a results block: {line.strip()[:100]}")
