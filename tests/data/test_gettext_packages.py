"""gettext_packages: which of 8 packages an English gettext message comes from."""

import collections

from keras_zoo.data import num_classes_of, text


def test_balanced_splits_of_the_eight_largest_catalogs():
    sizes, seen = {}, {}
    for split in ("train", "validation", "test"):
        ds, info = text.load("gettext_packages", split)
        rows = list(ds.as_numpy_iterator())
        assert info.task == "classification" and info.num_classes == 8
        assert info.num_examples == len(rows)
        counts = collections.Counter(int(r["label"]) for r in rows)
        assert sorted(counts) == list(range(8)) and len(set(counts.values())) == 1
        sizes[split] = len(rows)
        seen[split] = {r["text"] for r in rows}
    assert sizes == {"train": 8568, "validation": 520, "test": 376}
    # Split as the corpus (by the English message): no message in two splits.
    assert not seen["train"] & seen["test"] and not seen["train"] & seen["validation"]
    assert num_classes_of("gettext_packages") == 8
    # The label is the message's package.
    packages = {r["en"]: r["package"] for r in text.read_bundled("gettext_en_de", "test")}
    ds, _ = text.load("gettext_packages", "test")
    for r in list(ds.as_numpy_iterator())[:50]:
        assert packages[r["text"].decode()] == text.GETTEXT_PACKAGES[r["label"]]
