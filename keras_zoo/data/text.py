"""Text datasets by spec string: parallel text, documents, labelled text.

Specs:
    gettext_en_de[:train|validation|test]   bundled: 39,054 English->German software
    gettext_en_fr[:...]                     messages (47,295 for French) from the gettext
                                            catalogs of a Debian system (TEXT_SOURCES.md)
    english_prose[:...]                     bundled: 896 English documents (5.9 M chars):
                                            CPython, NumPy and scikit-learn docstrings and
                                            the Python language reference
    tfds:NAME[:SPLIT]                       a TensorFlow Datasets text set: translation
                                            (tfds:wmt14_translate/de-en,
                                            tfds:ted_hrlr_translate/pt_to_en), or
                                            (text, label) classification (tfds:imdb_reviews)

``load`` returns unbatched examples as dicts of tf.string (and int) tensors:
translation ``{"source", "target"}``, documents ``{"text"}``, labelled text
``{"text", "label"}``, and a ``TextInfo`` that names the task. A family
checks the task it needs with ``require_task`` (a ViT given a translation
set, or a Transformer given images, fails in one line).
"""

import dataclasses
import difflib
import gzip
import json
import os
import re

from keras_zoo.data.datasets import BUNDLED_DIR, DatasetError

SPLITS = ("train", "validation", "test")
_DIRECTION = re.compile(r"[a-z]{2,3}-[a-z]{2,3}")
TRANSLATION, DOCUMENTS, CLASSIFICATION = "translation", "documents", "classification"
BUNDLED_TEXT = {
    "gettext_en_de": ("gettext_en_de.jsonl.gz", TRANSLATION, ("en", "de")),
    "gettext_en_fr": ("gettext_en_fr.jsonl.gz", TRANSLATION, ("en", "fr")),
    "english_prose": ("english_prose.jsonl.gz", DOCUMENTS, None),
}


@dataclasses.dataclass(frozen=True)
class TextInfo:
    name: str
    split: str
    task: str  # translation | documents | classification
    num_examples: int | None
    languages: tuple | None = None  # (source, target) of a translation set
    num_classes: int | None = None
    example_bytes: int = 256  # rough size of one example (shuffle buffer sizing)


def is_text_spec(spec):
    """True for specs this module loads (bundled text names, tfds text sets)."""
    if not isinstance(spec, str) or not spec:
        return False
    head = spec.split(":")[0]
    if head in BUNDLED_TEXT:
        return True
    if head == "tfds" and len(spec.split(":")) > 1:
        return _tfds_task(spec.split(":")[1], quiet=True) in (TRANSLATION, CLASSIFICATION,
                                                               DOCUMENTS)
    return False


def parse_spec(spec, default_split="train"):
    """'gettext_en_de:test' -> ('bundled', 'gettext_en_de', 'test').

    A translation set may end in ``:SRC-TGT`` to pick the direction
    (``tfds:wmt14_translate/de-en:train:en-de`` is English -> German);
    ``direction(spec)`` returns it."""
    if not spec or not isinstance(spec, str):
        raise DatasetError(f"dataset spec must be a non-empty string, got {spec!r}")
    parts = spec.split(":")
    if _DIRECTION.fullmatch(parts[-1]) and len(parts) >= 2 and parts[0] != "tfds" \
            or (parts[0] == "tfds" and len(parts) == 4 and _DIRECTION.fullmatch(parts[-1])):
        parts = parts[:-1]
    if len(parts) > 3 or (parts[0] != "tfds" and len(parts) > 2):
        raise DatasetError(f"{spec!r}: too many ':' parts; write NAME[:SPLIT][:SRC-TGT] or "
                           "tfds:NAME[:SPLIT][:SRC-TGT]")
    if parts[0] == "tfds":
        if len(parts) < 2 or not parts[1]:
            raise DatasetError(f"{spec!r}: write tfds:NAME[:SPLIT], e.g. "
                               "tfds:wmt14_translate/de-en:validation")
        return "tfds", parts[1], parts[2] if len(parts) > 2 else default_split
    if parts[0] in BUNDLED_TEXT:
        split = parts[1] if len(parts) > 1 else default_split
        if split not in SPLITS:
            raise DatasetError(f"{spec!r}: split must be one of {SPLITS}, got {split!r}")
        return "bundled", parts[0], split
    known = list(BUNDLED_TEXT) + ["tfds:NAME"]
    close = difflib.get_close_matches(parts[0], known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise DatasetError(f"unknown text dataset {spec!r}; known: {', '.join(known)}.{hint}")


def load(spec, split="train", data_dir=None):
    """(unbatched tf.data.Dataset of dicts, TextInfo) for a text spec."""
    kind, name, split = parse_spec(spec, split)
    ds, info = _load_bundled(name, split) if kind == "bundled" else \
        _load_tfds(name, split, data_dir)
    wanted = direction(spec)
    if wanted is None or info.task != TRANSLATION or wanted == tuple(info.languages):
        return ds, info
    if wanted != tuple(reversed(info.languages)):
        raise DatasetError(f"{spec!r}: {name} translates between {'-'.join(info.languages)}, "
                           f"not {'-'.join(wanted)}")
    ds = ds.map(lambda e: {"source": e["target"], "target": e["source"]})
    return ds, dataclasses.replace(info, languages=wanted)


def direction(spec):
    """('en', 'de') from a spec ending in ':en-de', else None."""
    last = spec.split(":")[-1] if isinstance(spec, str) else ""
    return tuple(last.split("-")) if _DIRECTION.fullmatch(last) and ":" in spec else None


def require_task(info, task, family):
    """Raises DatasetError unless the dataset's task is ``task``."""
    if info.task != task:
        raise DatasetError(
            f"{family} trains on a {task} dataset; {info.name!r} is a {info.task} dataset "
            f"(e.g. {_example_of(task)})")


def _example_of(task):
    return {TRANSLATION: "gettext_en_de or tfds:wmt14_translate/de-en",
            DOCUMENTS: "english_prose", CLASSIFICATION: "tfds:imdb_reviews",
            "image": "digits or tfds:mnist"}.get(task, task)


def read_bundled(name, split=None):
    """The bundled records of ``name`` (list of dicts), optionally one split."""
    filename = BUNDLED_TEXT[name][0]
    path = os.path.join(BUNDLED_DIR, filename)
    if not os.path.exists(path):
        raise DatasetError(f"bundled corpus {path!r} is missing; rebuild it with "
                           "python tools/make_text_corpora.py")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    return [r for r in records if split is None or r["split"] == split]


def _load_bundled(name, split):
    import tensorflow as tf

    _, task, langs = BUNDLED_TEXT[name]
    records = read_bundled(name, split)
    if task == TRANSLATION:
        src, tgt = langs
        columns = {"source": [r[src] for r in records], "target": [r[tgt] for r in records]}
    else:
        columns = {"text": [r["text"] for r in records]}
    size = max(1, sum(len(v) for col in columns.values() for v in col) // max(1, len(records)))
    info = TextInfo(name, split, task, len(records), langs, example_bytes=size * 4)
    return tf.data.Dataset.from_tensor_slices(columns), info


def _tfds_task(name, quiet=False):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name)
    except Exception as e:  # DatasetNotFoundError and friends
        if quiet:
            return None
        raise DatasetError(f"tfds dataset {name!r} not found: {str(e).splitlines()[0]}") \
            from e
    return _task_of_features(builder.info.features, builder.info.supervised_keys)


def _task_of_features(features, supervised_keys):
    import tensorflow_datasets as tfds

    if isinstance(features, tfds.features.Translation):
        return TRANSLATION
    if not supervised_keys or len(supervised_keys) != 2:
        return None
    first, second = (features[k] for k in supervised_keys)
    if isinstance(first, tfds.features.Text) and isinstance(second, tfds.features.ClassLabel):
        return CLASSIFICATION
    if isinstance(first, tfds.features.Text) and isinstance(second, tfds.features.Text):
        return TRANSLATION
    if isinstance(first, tfds.features.Image):
        return "image"
    return None


def _load_tfds(name, split, data_dir):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:
        raise DatasetError(f"tfds dataset {name!r} not found: {str(e).splitlines()[0]}") from e
    info = builder.info
    task = _task_of_features(info.features, info.supervised_keys)
    if task not in (TRANSLATION, CLASSIFICATION):
        raise DatasetError(f"tfds:{name} is not a text set this zoo reads (translation, or "
                           f"text + label); its features are {info.features}")
    try:
        ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    except Exception as e:
        raise DatasetError(
            f"tfds:{name}:{split} could not be read (is it downloaded/prepared in "
            f"{builder.data_dir!r}? splits: {list(info.splits)}): "
            f"{str(e).splitlines()[0]}") from e
    try:
        n = info.splits[split].num_examples
    except (KeyError, ValueError):
        n = None
    if task == TRANSLATION:
        ds = ds.map(lambda s, t: {"source": s, "target": t})
        return ds, TextInfo(name, split, task, n, tuple(info.supervised_keys))
    label = info.supervised_keys[1]
    ds = ds.map(lambda x, y: {"text": x, "label": y})
    return ds, TextInfo(name, split, task, n, num_classes=info.features[label].num_classes)
