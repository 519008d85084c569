"""Results files: every number the documentation shows comes from one.

A results file is JSON under ``docs/results/`` written by the command that
measured it, with the provenance a reader needs to trust (or repeat) it::

    {"command": "python -m experiments.demo",
     "date": "2026-12-08T01:02:03Z",
     "machine": {"cpu": "...", "cores": 2, "platform": "..."},
     "load_average": [1.9, 1.7, 1.2],
     "git_commit": "7cc7503...",
     "tables": {"main": {"columns": ["model", "acc"], "rows": [["lenet5", 0.975]]}},
     "notes": "..."}

The documentation site renders ``tables`` with ``<!-- results: NAME.json -->``
markers (tools/mkdocs_hooks.py); tests/test_docs.py checks every file names
its command. Standard library only: recipes, benchmarks and tools all call it.
"""

import datetime
import json
import os
import platform
import subprocess

RESULTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "docs", "results")
REQUIRED_KEYS = ("command", "date", "machine", "load_average", "tables")


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine():
    """The machine a measurement ran on, as a results file records it."""
    return {"cpu": _cpu_model(), "cores": os.cpu_count(),
            "platform": platform.platform(terse=True),
            "python": platform.python_version()}


def load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def table(columns, rows):
    """One table of a results file; every row has one value per column."""
    columns = [str(c) for c in columns]
    rows = [list(r) for r in rows]
    for r in rows:
        if len(r) != len(columns):
            raise ValueError(f"results row {r!r} has {len(r)} values for {len(columns)} "
                             f"columns {columns}")
    return {"columns": columns, "rows": rows}


def write_results(name, command, tables, notes=None, path=None, **extra):
    """Writes ``docs/results/NAME.json`` (or ``path``) atomically and returns its path.

    ``tables`` maps a table name to ``table(columns, rows)`` (or to a
    ``(columns, rows)`` pair). ``command`` is the exact command line that
    reproduces the numbers; date, machine, load average and git commit are
    filled in here."""
    if not command or not isinstance(command, str):
        raise ValueError("write_results needs the command that produced the numbers")
    tables = {k: (v if isinstance(v, dict) else table(*v)) for k, v in tables.items()}
    record = {"command": command,
              "date": datetime.datetime.now(datetime.timezone.utc).strftime(
                  "%Y-%m-%dT%H:%M:%SZ"),
              "machine": machine(), "load_average": load_average(),
              "git_commit": _git_commit(), "tables": tables}
    if notes:
        record["notes"] = notes
    record.update(extra)
    path = path or os.path.join(RESULTS_DIR, f"{name}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1, default=_plain)
        f.write("\n")
    os.replace(tmp, path)
    return path


def _plain(value):
    """numpy scalars and arrays as plain JSON numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to a results file")


def read_results(path):
    """Reads a results file and checks it carries its provenance."""
    with open(path) as f:
        try:
            record = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"{path}: results file lacks {missing} (write it with "
                         "keras_zoo.results.write_results)")
    for name, t in record["tables"].items():
        if set(t) < {"columns", "rows"}:
            raise ValueError(f"{path}: table {name!r} needs 'columns' and 'rows'")
        for row in t["rows"]:
            if len(row) != len(t["columns"]):
                raise ValueError(f"{path}: table {name!r} row {row!r} does not match "
                                 f"columns {t['columns']}")
    return record
