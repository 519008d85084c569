"""Rebuilds the bundled offline text corpora in keras_zoo/data/bundled/.

    python tools/make_text_corpora.py            # both corpora + TEXT_SOURCES.md

1. ``gettext_en_de.jsonl.gz`` / ``gettext_en_fr.jsonl.gz``: English source
   strings of the gettext message catalogs installed on this Debian machine
   (/usr/share/locale/<lang>/LC_MESSAGES/*.mo) with their human German /
   French translations. Records: {"en", "xx", "package", "split"}.
   Cleaning: msgctxt prefixes removed, plural forms reduced to the singular,
   whitespace runs (including the newlines of help texts) collapsed to one
   space, fuzzy/empty entries and identical copies of ISO code lists
   (iso_639*, iso_3166*, iso_4217, iso_15924: names, not sentences) left
   out, duplicates of the English string kept once (first catalog in sorted
   order wins). Split by a hash of the English string (90/5/5), so no source
   sentence is in two splits.
2. ``english_prose.jsonl.gz``: English prose documents: the docstrings of
   CPython's standard library modules, the Python language reference topics
   (pydoc_data.topics), and the docstrings of NumPy and scikit-learn.
   Records: {"id", "source", "text"}; one document per module (its module,
   class and function docstrings in source order, blank-line separated) or
   per reference topic; doctest examples removed. Split by a hash of the
   document id (90/5/5).

The licences of every source package are written to TEXT_SOURCES.md next to
the data, read from /usr/share/doc/<package>/copyright.
"""

import ast
import collections
import gettext
import glob
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import sysconfig

OUT = os.path.join(os.path.dirname(__file__), "..", "keras_zoo", "data", "bundled")
LANGS = ("de", "fr")
SKIP_CATALOGS = re.compile(r"^iso_(639|3166|4217|15924)")


def split_of(key):
    """'train' / 'validation' / 'test' from a stable hash (90 / 5 / 5)."""
    bucket = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "test" if bucket < 5 else "validation" if bucket < 10 else "train"


def clean(text):
    return " ".join(text.split())


def debian_package(path):
    try:
        out = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True,
                             check=True).stdout
        return out.split(":")[0].strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None


def licence_of(package):
    """The License: names of a Debian package's copyright file (DEP-5), or its first lines."""
    path = f"/usr/share/doc/{package}/copyright"
    if not package or not os.path.exists(path):
        return "unknown (no copyright file)"
    text = open(path, encoding="utf-8", errors="replace").read()
    names = []
    for name in re.findall(r"^License:\s*(.+)$", text, flags=re.M):
        name = name.strip()
        if name not in names:
            names.append(name)
    if names:
        return ", ".join(names[:6]) + (" ..." if len(names) > 6 else "")
    for marker in ("GNU General Public License", "GPL", "LGPL", "BSD", "MIT", "Apache"):
        if marker in text:
            return f"mentions {marker} (free-form copyright file)"
    return "see " + path


def gettext_pairs(lang):
    pairs, sources = {}, collections.Counter()
    for path in sorted(glob.glob(f"/usr/share/locale/{lang}/LC_MESSAGES/*.mo")):
        name = os.path.basename(path)[:-3]
        if SKIP_CATALOGS.match(name):
            continue
        try:
            with open(path, "rb") as f:
                catalog = gettext.GNUTranslations(f)._catalog
        except (OSError, UnicodeDecodeError, gettext.error if hasattr(gettext, "error")
                else OSError):
            continue
        for key, value in catalog.items():
            if isinstance(key, tuple):  # (msgid, plural index): keep the singular
                if key[1] != 0:
                    continue
                key = key[0]
            if not key or not value:
                continue
            key = key.split("\x04")[-1]  # drop msgctxt
            en, xx = clean(key), clean(value)
            if not en or not xx or en in pairs:
                continue
            pairs[en] = (xx, name)
            sources[name] += 1
    records = [{"en": en, lang: xx, "package": pkg, "split": split_of(en)}
               for en, (xx, pkg) in sorted(pairs.items())]
    return records, sources


DOCTEST = re.compile(r"^\s*(>>>|\.\.\.)")


def strip_doctests(text):
    out, skipping = [], False
    for line in text.splitlines():
        if DOCTEST.match(line):
            skipping = True
            continue
        if skipping and line.strip():
            continue  # the example's printed output
        skipping = False
        out.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


STDLIB_SKIP = ("/test", "idlelib", "lib2to3", "site-packages", "turtledemo", "/_")
PACKAGE_SKIP = ("/test", "/tests", "/externals", "/_vendor", "/f2py")


def module_docs(root, prefix, skip):
    docs = []
    for path in sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True)):
        rel = os.path.relpath(path, root)
        if any(s in "/" + rel for s in skip):
            continue
        try:
            tree = ast.parse(open(path, encoding="utf-8").read())
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        parts = []
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                 ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    doc = strip_doctests(doc)
                    if len(doc) >= 40:
                        parts.append(doc)
        if parts:
            docs.append({"id": f"{prefix}:{rel[:-3].replace(os.sep, '.')}", "source": prefix,
                         "text": "\n\n".join(parts)})
    return docs


def prose_documents():
    import numpy
    import pydoc_data.topics
    import sklearn

    docs = module_docs(sysconfig.get_paths()["stdlib"], "python-stdlib", STDLIB_SKIP)
    docs += [{"id": f"python-reference:{k}", "source": "python-reference",
              "text": strip_doctests(v.strip())}
             for k, v in sorted(pydoc_data.topics.topics.items())]
    docs += module_docs(os.path.dirname(numpy.__file__), "numpy", PACKAGE_SKIP)
    docs += module_docs(os.path.dirname(sklearn.__file__), "scikit-learn", PACKAGE_SKIP)
    for d in docs:
        d["split"] = split_of(d["id"])
    versions = {"python": sys.version.split()[0], "numpy": numpy.__version__,
                "scikit-learn": sklearn.__version__}
    return docs, versions


def write_jsonl_gz(path, records):
    tmp = path + ".tmp"
    # mtime=0: the same records give the same bytes (reproducible sha256).
    with gzip.GzipFile(tmp, "wb", compresslevel=9, mtime=0) as f:
        for r in records:
            f.write((json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n").encode())
    os.replace(tmp, path)
    return os.path.getsize(path)


def main():
    os.makedirs(OUT, exist_ok=True)
    lines = ["# Bundled text corpora: sources and licences",
             "", "Rebuilt by `python tools/make_text_corpora.py` (see its docstring for the "
             "cleaning rules). Split = hash of the English string (translation) or of the "
             "document id (prose): 90 % train, 5 % validation, 5 % test.", ""]
    for lang in LANGS:
        records, sources = gettext_pairs(lang)
        size = write_jsonl_gz(os.path.join(OUT, f"gettext_en_{lang}.jsonl.gz"), records)
        splits = collections.Counter(r["split"] for r in records)
        lines += [f"## gettext_en_{lang}.jsonl.gz: {len(records):,} English-{lang} pairs "
                  f"({size / 1e6:.2f} MB), train {splits['train']:,} / validation "
                  f"{splits['validation']:,} / test {splits['test']:,}", "",
                  "Domain: software user-interface and error messages (short, with "
                  "placeholders such as %s and option names), human translations by the "
                  "projects' translation teams.", "",
                  "| catalog | pairs | Debian package | licence (copyright file) |",
                  "|---|---:|---|---|"]
        for name, count in sorted(sources.items(), key=lambda kv: -kv[1]):
            package = debian_package(f"/usr/share/locale/{lang}/LC_MESSAGES/{name}.mo")
            lines.append(f"| {name} | {count:,} | {package or '?'} | {licence_of(package)} |")
        lines.append("")
        print(f"gettext en-{lang}: {len(records):,} pairs, {size / 1e6:.2f} MB")
    docs, versions = prose_documents()
    size = write_jsonl_gz(os.path.join(OUT, "english_prose.jsonl.gz"), docs)
    by_source = collections.Counter(d["source"] for d in docs)
    chars = collections.Counter()
    for d in docs:
        chars[d["source"]] += len(d["text"])
    splits = collections.Counter(d["split"] for d in docs)
    lines += [f"## english_prose.jsonl.gz: {len(docs):,} documents, "
              f"{sum(chars.values()) / 1e6:.2f} M characters ({size / 1e6:.2f} MB), "
              f"train {splits['train']:,} / validation {splits['validation']:,} / "
              f"test {splits['test']:,} documents", "",
              "| source | documents | characters | licence |", "|---|---:|---:|---|"]
    licences = {"python-stdlib": f"PSF License 2.0 (CPython {versions['python']} docstrings)",
                "python-reference": f"PSF License 2.0 (CPython {versions['python']} "
                                    "pydoc_data.topics)",
                "numpy": f"BSD-3-Clause (NumPy {versions['numpy']})",
                "scikit-learn": f"BSD-3-Clause (scikit-learn {versions['scikit-learn']})"}
    for source, count in by_source.items():
        lines.append(f"| {source} | {count:,} | {chars[source]:,} | {licences[source]} |")
    with open(os.path.join(OUT, "TEXT_SOURCES.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"english prose: {len(docs):,} documents, {sum(chars.values()) / 1e6:.2f} M chars, "
          f"{size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
