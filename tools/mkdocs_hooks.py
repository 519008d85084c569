"""MkDocs hook: tables on the documentation site come from results files.

A page writes a marker where a table belongs::

    <!-- results: demo.json -->                       first table of docs/results/demo.json
    <!-- results: demo.json#main -->                  the table named "main"
    <!-- results: export_report.json where=family:ViT columns=preset,format,size_kb -->

and the hook replaces it with the Markdown table and one line of provenance
(command, date, machine, load average, commit) linking to the file. A marker
naming a missing file, table or column fails the build (``mkdocs build
--strict`` runs in tests/test_docs.py), so no table is typed by hand and none
can point nowhere. Registered in mkdocs.yml under ``hooks:``.
"""

import importlib.util
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = re.compile(r"<!--\s*results:\s*(?P<file>[\w./-]+?\.json)(?:#(?P<table>[\w-]+))?"
                    r"(?P<options>(?:\s+\w+=(?:\"[^\"]*\"|[^\s\"]+))*)\s*-->")


def _results_module():
    """keras_zoo/results.py loaded on its own (importing keras_zoo would start Keras)."""
    spec = importlib.util.spec_from_file_location(
        "_kz_results", os.path.join(ROOT, "keras_zoo", "results.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_RESULTS = _results_module()


def format_value(value):
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value == int(value) and abs(value) >= 1000:
            return f"{int(value):,}"
        return f"{value:.4f}" if 1e-3 <= abs(value) < 10 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value) or "—"
    return str(value).replace("|", "\\|")


def _options(text):
    out = {}
    for key, quoted, bare in re.findall(r'(\w+)=(?:"([^"]*)"|(\S+))', text):
        out[key] = quoted or bare
    unknown = set(out) - {"where", "columns"}
    if unknown:
        raise ValueError(f"unknown results marker option(s) {sorted(unknown)}; "
                         "use where=COLUMN:VALUE[,COLUMN:VALUE] and columns=A,B")
    return out


def render(file, table=None, options="", results_dir=None, link_prefix="results/"):
    """Markdown for one marker: the table and a provenance line."""
    results_dir = results_dir or os.path.join(ROOT, "docs", "results")
    path = os.path.join(results_dir, file)
    if not os.path.exists(path):
        raise ValueError(f"results marker names {file}, which is not in {results_dir}")
    record = _RESULTS.read_results(path)
    tables = record["tables"]
    name = table or next(iter(tables), None)
    if name not in tables:
        raise ValueError(f"{file} has no table {name!r}; it has {sorted(tables)}")
    columns, rows = tables[name]["columns"], tables[name]["rows"]
    opts = _options(options)
    for condition in filter(None, opts.get("where", "").split(",")):
        col, _, want = condition.partition(":")
        if col not in columns:
            raise ValueError(f"{file}#{name}: no column {col!r} to filter on; "
                             f"columns are {columns}")
        rows = [r for r in rows if format_value(r[columns.index(col)]) == want
                or str(r[columns.index(col)]) == want]
    keep = opts["columns"].split(",") if "columns" in opts else columns
    missing = [c for c in keep if c not in columns]
    if missing:
        raise ValueError(f"{file}#{name}: no column(s) {missing}; columns are {columns}")
    if not rows:
        raise ValueError(f"{file}#{name}: the filter {opts.get('where')!r} keeps no row")
    index = [columns.index(c) for c in keep]
    lines = ["| " + " | ".join(keep) + " |", "|" + "---|" * len(keep)]
    lines += ["| " + " | ".join(format_value(r[i]) for i in index) + " |" for r in rows]
    load = record["load_average"]
    machine = record["machine"]
    where = (f"{machine.get('cores', '?')}-core {machine.get('cpu', 'unknown CPU')}"
             if isinstance(machine, dict) else str(machine))
    commit = (record.get("git_commit") or "")[:8]
    provenance = (f"*Written by `{record['command']}` on {record['date']}, {where}, "
                  f"load average {format_value(load[0]) if load else 'not recorded'}"
                  f"{', commit ' + commit if commit else ''} "
                  f"([{file}]({link_prefix}{file})).*")
    if record.get("notes"):
        provenance += f" {record['notes']}"
    return "\n".join(lines) + "\n\n" + provenance + "\n"


def on_page_markdown(markdown, page, config, files):
    depth = page.file.src_uri.count("/")
    prefix = "../" * depth + "results/"

    def replace(match):
        return render(match["file"], match["table"], match["options"] or "",
                      results_dir=os.path.join(config["docs_dir"], "results"),
                      link_prefix=prefix)

    markdown = MARKER.sub(replace, markdown)
    if "<!-- results:" in markdown:
        bad = markdown[markdown.index("<!-- results:"):].split("-->", 1)[0]
        raise ValueError(f"{page.file.src_uri}: malformed results marker {bad}-->")
    return markdown


FILLED = re.compile(r"(?P<open><!--\s*results:[^>]*-->)\n.*?(?P<close><!--\s*/results\s*-->)",
                    re.S)


def fill(text, results_dir=None, link_prefix="docs/results/"):
    """Markdown outside the site (README.md) keeps a rendered copy of each table
    between ``<!-- results: ... -->`` and ``<!-- /results -->``; this re-renders
    them. tests/test_docs.py checks the copy is current."""
    def replace(match):
        head = MARKER.fullmatch(match["open"])
        if not head:
            raise ValueError(f"malformed results marker {match['open']!r}")
        body = render(head["file"], head["table"], head["options"] or "",
                      results_dir=results_dir, link_prefix=link_prefix)
        return f"{match['open']}\n{body}{match['close']}"
    return FILLED.sub(replace, text)


if __name__ == "__main__":  # python tools/mkdocs_hooks.py README.md: refresh its tables
    import sys
    for name in sys.argv[1:]:
        with open(name) as f:
            old = f.read()
        new = fill(old)
        if new != old:
            with open(name, "w") as f:
                f.write(new)
            print(f"updated {name}")
