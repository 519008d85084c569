"""Fixtures for the importers: a real Hugging Face hub cache under tmp_path."""

import hashlib
import os
import shutil

import pytest


def _copy_into_cache(folder, snapshot, blobs):
    """The cache's layout: each file's bytes in blobs/<sha256>, a relative
    symlink to it in snapshots/<commit>/<path> (as huggingface_hub writes them)."""
    for root, _, files in os.walk(folder):
        for name in files:
            src = os.path.join(root, name)
            rel = os.path.relpath(src, folder)
            with open(src, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            blob = os.path.join(blobs, digest)
            if not os.path.exists(blob):
                shutil.copyfile(src, blob)
            link = os.path.join(snapshot, rel)
            os.makedirs(os.path.dirname(link), exist_ok=True)
            if os.path.lexists(link):  # the same commit added again (another ref)
                os.remove(link)
            os.symlink(os.path.relpath(blob, os.path.dirname(link)), link)


@pytest.fixture
def hf_hub_cache(tmp_path, monkeypatch):
    """``add(repo_id, folder, revision="main", sha=None) -> snapshot path``.

    Lays out ``models--ORG--NAME/{refs/<revision>, blobs/, snapshots/<sha>/}``
    under tmp_path as huggingface_hub's own cache (file_download.py /
    _snapshot_download.py: ``refs/<revision>`` holds the commit sha, no
    newline) and sets HF_HUB_CACHE to it and HF_HUB_OFFLINE=1, in the
    environment and in huggingface_hub.constants (read at import), so
    ``snapshot_download`` resolves it offline and never touches the network.
    ``add.cache`` is the cache folder."""
    from huggingface_hub import constants

    cache = tmp_path / "hf_hub_cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def add(repo_id, folder, revision="main", sha=None):
        sha = sha or hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
        storage = cache / ("models--" + repo_id.replace("/", "--"))
        snapshot = storage / "snapshots" / sha
        blobs = storage / "blobs"
        os.makedirs(snapshot, exist_ok=True)
        os.makedirs(blobs, exist_ok=True)
        _copy_into_cache(str(folder), str(snapshot), str(blobs))
        if revision != sha:
            os.makedirs(storage / "refs" / os.path.dirname(revision), exist_ok=True)
            (storage / "refs" / revision).write_text(sha)
        return str(snapshot)

    add.cache = cache
    return add


@pytest.fixture
def kaggle_cache(tmp_path, monkeypatch):
    """``add("OWNER/MODEL/keras/VARIANT/VERSION", folder) -> cached folder``.

    Lays out kagglehub's own cache (kagglehub/cache.py): the files in
    ``models/OWNER/MODEL/keras/VARIANT/VERSION/`` and the completion marker
    ``models/OWNER/MODEL/keras/VARIANT/VERSION.complete``, under tmp_path as
    KAGGLEHUB_CACHE; KERAS_ZOO_OFFLINE=1 keeps kaggle:// off the network."""
    cache = tmp_path / "kagglehub_cache"
    cache.mkdir()
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(cache))
    monkeypatch.setenv("KERAS_ZOO_OFFLINE", "1")

    def add(handle, folder):
        owner, model, framework, variant, version = handle.split("/")
        base = cache / "models" / owner / model / framework / variant
        shutil.copytree(folder, base / version)
        (base / f"{version}.complete").touch()
        return str(base / version)

    add.cache = cache
    return add
