"""Converts a published checkpoint into a keras_zoo preset folder, once.

    python -m keras_zoo.convert hf://openai-community/gpt2 presets/gpt2
    python -m keras_zoo.convert hf://google-bert/bert-base-uncased@main presets/bert \\
        --overrides '{"sequence_length": 256}'
    python -m keras_zoo.convert kaggle://keras/vit/keras/vit_base_patch16_224_imagenet out/
    python -m keras_zoo.convert hf:/path/to/save_pretrained_folder out/

SOURCE is anything ``from_preset`` reads (``hf://ORG/NAME[@REVISION]``,
``kaggle://OWNER/MODEL/keras/VARIANT[/VERSION]``, ``hf:<folder>``, a keras-hub
folder). OUTPUT_DIR receives what ``save_to_preset`` writes (config.json,
model.weights.h5, the tokenizer of a text model, whatever else the family
saves) and a manifest.json that, besides the sha256 of those files, records
where they came from: the URI, the repo, the revision asked for, the commit
(or Kaggle version) it resolved to, and the sha256 of every file downloaded.
Afterwards ``keras_zoo.from_preset(OUTPUT_DIR)`` and
``python -m export.export --preset=OUTPUT_DIR`` read the folder directly,
with no conversion and no download.

A folder already converted from the same source and commit is left as it is;
any other non-empty OUTPUT_DIR is refused unless ``--overwrite``.
"""

import argparse
import fnmatch
import json
import os
import sys

from keras_zoo.presets import PresetError


def _hashes(folder, patterns=None):
    """{relative path: sha256} of the files under ``folder`` (matching ``patterns``)."""
    from keras_zoo.presets import sha256_of

    out = {}
    for root, _, files in os.walk(folder):
        for name in sorted(files):
            rel = os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
            if patterns is None or any(fnmatch.fnmatch(rel, p) for p in patterns):
                out[rel] = sha256_of(os.path.join(root, name))
    return dict(sorted(out.items()))


def resolve(source):
    """(local folder to load, provenance dict) for ``source``; downloads if needed."""
    from keras_zoo import hub

    if source.startswith(hub.HF_SCHEME):
        folder, repo, revision, sha = hub.hf_snapshot(source)
        return folder, {"uri": source, "hub": "huggingface", "repo": repo,
                        "revision": revision or "main", "commit": sha,
                        "files": _hashes(folder, hub.ALLOW_PATTERNS)}
    if source.startswith(hub.KAGGLE_SCHEME):
        folder, handle, version = hub.kaggle_snapshot(source)
        return folder, {"uri": source, "hub": "kaggle", "repo": handle.rsplit("/", 1)[0]
                        if handle.count("/") == 4 else handle, "revision": version,
                        "commit": version, "files": _hashes(folder)}
    local = source[len("hf:"):] if source.startswith("hf:") else source
    if not os.path.isdir(os.path.expanduser(local)):
        raise PresetError(f"{source!r} is neither hf://ORG/NAME, kaggle://..., hf:<folder> "
                          "nor a folder")
    local = os.path.expanduser(local)
    return local, {"uri": source, "hub": None, "repo": None, "revision": None,
                   "commit": None, "files": _hashes(local, None if not source.startswith(
                       "hf:") else hub.ALLOW_PATTERNS)}


def _already(output_dir, provenance):
    """True when ``output_dir`` holds a whole preset converted from the same commit."""
    from keras_zoo import presets

    manifest = os.path.join(output_dir, presets.MANIFEST_FILE)
    if not os.path.exists(manifest) or presets.preset_problem(output_dir):
        return False
    old = presets.read_json(manifest).get("source") or {}
    return provenance["commit"] is not None and all(
        old.get(k) == provenance[k] for k in ("repo", "commit", "files"))


def convert(source, output_dir, overrides=None, overwrite=False):
    """Writes the keras_zoo preset of ``source`` to ``output_dir``; returns the
    manifest's ``source`` record."""
    import keras_zoo
    from keras_zoo import presets

    overrides = dict(overrides or {})
    folder, provenance = resolve(source)
    if _already(output_dir, provenance) and not overrides and not overwrite:
        print(f"{output_dir}: already converted from {provenance['uri']} "
              f"({provenance['commit']}); nothing to do")
        return presets.read_json(os.path.join(output_dir, presets.MANIFEST_FILE))["source"]
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise PresetError(f"OUTPUT_DIR {output_dir!r} is not empty (and not this conversion); "
                          "pass --overwrite or choose an empty folder")
    load_from = "hf:" + folder if source.startswith(("hf://", "hf:")) else folder
    model = keras_zoo.from_preset(load_from, **overrides)
    presets.save_to_preset(model, output_dir, description=f"converted from {source}")
    manifest_path = os.path.join(output_dir, presets.MANIFEST_FILE)
    manifest = presets.read_json(manifest_path)
    manifest["source"] = {**provenance, "overrides": overrides}
    presets._atomic_json(manifest_path, manifest)
    print(f"{output_dir}: {type(model).__name__} from {source} (commit "
          f"{provenance['commit']}), {len(provenance['files'])} source files hashed")
    return manifest["source"]


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m keras_zoo.convert", description=__doc__.split("\n\n")[0],
        epilog="Downloads honour HF_TOKEN, HF_HUB_CACHE, HF_HUB_OFFLINE, KAGGLEHUB_CACHE and "
               "KERAS_ZOO_OFFLINE (keras_zoo/hub.py).")
    parser.add_argument("source", help="hf://ORG/NAME[@REVISION], kaggle://OWNER/MODEL/keras/"
                                       "VARIANT[/VERSION], hf:<folder> or a keras-hub folder")
    parser.add_argument("output_dir", help="the keras_zoo preset folder to write")
    parser.add_argument("--overrides", default=None,
                        help="JSON object of config values to change, e.g. "
                             "'{\"sequence_length\": 256}'")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the files of a non-empty OUTPUT_DIR")
    args = parser.parse_args(argv)
    try:
        overrides = json.loads(args.overrides) if args.overrides else {}
    except json.JSONDecodeError as e:
        parser.error(f"--overrides is not valid JSON: {e}")
    if not isinstance(overrides, dict):
        parser.error("--overrides must be a JSON object")
    try:
        convert(args.source, args.output_dir, overrides, args.overwrite)
    except PresetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
