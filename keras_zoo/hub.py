"""Published checkpoints by URI: ``hf://ORG/NAME[@REVISION]`` and
``kaggle://OWNER/MODEL/keras/VARIANT[/VERSION]``.

    keras_zoo.GPT.from_preset("hf://openai-community/gpt2")
    keras_zoo.BERT.from_preset("hf://google-bert/bert-base-uncased@main")  # or a tag, a sha
    keras_zoo.ViT.from_preset("kaggle://keras/vit/keras/vit_base_patch16_224_imagenet")

Downloads go through the libraries made for them -- ``huggingface_hub.
snapshot_download`` and ``kagglehub.model_download`` -- so their caches,
tokens (``HF_TOKEN``, Kaggle credentials), cache folders (``HF_HUB_CACHE``,
``KAGGLEHUB_CACHE``) and progress bars apply unchanged. ``HF_HUB_OFFLINE=1``
stops Hugging Face downloads; kagglehub has no offline switch, so keras_zoo's
``KERAS_ZOO_OFFLINE=1`` stops both (then only the caches are read). The
downloaded folder is then read by the local importers: ``hf:<folder>``
(keras_zoo/converters/huggingface.py, dispatching on config.json's
``architectures``, or on ``"timm"`` for a timm checkpoint's config) and the
keras-hub folder import (keras_zoo/converters/keras_hub.py).

Only safe files are fetched from the Hugging Face Hub (``ALLOW_PATTERNS``:
safetensors, JSON, text vocabularies, SentencePiece models); pickled
checkpoints (``pytorch_model.bin``, ``*.pth``, ``*.ckpt``, ``*.pkl``) are
never downloaded, never unpickled.

Environment variables are read on every call (not only when
``huggingface_hub`` is first imported), so setting ``HF_HUB_OFFLINE`` or
``HF_HUB_CACHE`` in a running program takes effect.
"""

import os
import re

from keras_zoo.presets import PresetError

HF_SCHEME = "hf://"
KAGGLE_SCHEME = "kaggle://"

# What snapshot_download fetches: weights as safetensors, configs, vocabularies.
ALLOW_PATTERNS = ("*.safetensors", "*.json", "*.txt", "*.model", "*.spm")
# Never fetched, even where an allow pattern would match (defence in depth).
PICKLE_PATTERNS = ("*.bin", "*.pth", "*.pt", "*.ckpt", "*.pkl", "*.pickle", "*.joblib",
                   "*.npy", "*.h5", "*.msgpack")

_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_HF_REPO = re.compile(rf"^(?:{_NAME}/)?{_NAME}$")
_TRUE = {"1", "on", "yes", "true"}


# ---------------------------------------------------------------- registry

# Registry name -> the published checkpoint ``from_preset(name)`` loads (its
# config and weights: the importer reads the checkpoint's own config.json);
# ``from_preset(name, load_weights=False)`` builds the registry config with
# random weights, without any download. Revisions: a commit sha where one was
# found pinned in public code (the search tools of this project; the sha was
# not fetched here), else "main" (the repo's head at download time).
SOURCES = {
    "vit_base_patch16_224": "hf://google/vit-base-patch16-224@main",
    "vit_small_patch16_224": "hf://timm/vit_small_patch16_224.augreg_in21k_ft_in1k@main",
    # 34c2154c194f829b11125337b98c8f5f9965ff19 is pinned in public code, but
    # whether that commit holds model.safetensors was not checkable: main.
    "resnet50": "hf://microsoft/resnet-50@main",
    "dino_vit_small_patch16": "hf://facebook/dino-vits16@main",
    "mae_vit_base_patch16": "hf://facebook/vit-mae-base@main",
    "bert_base_uncased":
        "hf://google-bert/bert-base-uncased@86b5e0934494bd15c9632b12f734a8a67f723594",
    "gpt2": "hf://openai-community/gpt2@607a30d783dfa663caf39e06633721c8d4cfcd7e",
    "mamba_130m": "hf://state-spaces/mamba-130m-hf@main",
}


def published_source(name):
    """The ``hf://`` URI a registry preset's weights come from, or None."""
    return SOURCES.get(name)


# ---------------------------------------------------------------- Hugging Face

def parse_hf_uri(uri):
    """``hf://ORG/NAME[@REVISION]`` -> (repo_id, revision or None); PresetError
    (one line) for anything else."""
    if not uri.startswith(HF_SCHEME):
        raise PresetError(f"{uri!r} is not an hf:// URI (expected hf://ORG/NAME[@REVISION])")
    body = uri[len(HF_SCHEME):]
    repo_id, _, revision = body.partition("@")
    repo_id = repo_id.rstrip("/")
    if not _HF_REPO.match(repo_id) or ".." in repo_id or ("@" in body and not revision):
        raise PresetError(f"{uri!r} is not a Hugging Face model URI: expected "
                          "hf://ORG/NAME or hf://ORG/NAME@REVISION (a branch, tag or commit sha); "
                          "a local save_pretrained folder is hf:/path/to/folder")
    return repo_id, revision or None


def hf_cache_dir():
    """The hub cache huggingface_hub uses: ``HF_HUB_CACHE``, else ``HF_HOME``/hub,
    else its default (~/.cache/huggingface/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def hf_offline():
    """The variable that forbids downloads from the Hugging Face Hub, as set now
    (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE`` or keras_zoo's own
    ``KERAS_ZOO_OFFLINE``; huggingface_hub's own reading at import counts
    too), or None."""
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "KERAS_ZOO_OFFLINE"):
        if os.environ.get(key, "").strip().lower() in _TRUE:
            return key
    from huggingface_hub import constants

    return "HF_HUB_OFFLINE" if constants.HF_HUB_OFFLINE else None


def _fill_hint(repo_id, revision, cache, switch):
    rev = f" --revision {revision}" if revision else ""
    return (f"fill it on a machine with internet (`hf download {repo_id}{rev} --cache-dir "
            f"{cache}`, then copy the folder here) or "
            + (f"unset {switch}" if switch else "retry with a connection to the Hub"))


def _cached_revisions(storage):
    refs = os.path.join(storage, "refs")
    snaps = os.path.join(storage, "snapshots")
    names = sorted(os.listdir(refs)) if os.path.isdir(refs) else []
    names += sorted(os.listdir(snaps)) if os.path.isdir(snaps) else []
    return names


def hf_snapshot(uri):
    """Downloads (or finds in the cache) the safe files of ``hf://ORG/NAME[@REV]``.

    Returns ``(folder, repo_id, revision, commit_sha)``; ``folder`` is the
    snapshot folder in the hub cache (``models--ORG--NAME/snapshots/SHA``).
    Every failure is one PresetError line naming the repo and the revision."""
    repo_id, revision = parse_hf_uri(uri)
    shown = revision or "main"
    try:
        from huggingface_hub import errors, snapshot_download
    except ImportError:
        raise PresetError(f"{uri}: hf:// needs the huggingface_hub package "
                          "(pip install huggingface_hub)") from None
    cache = hf_cache_dir()
    offline = hf_offline()
    storage = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    try:
        folder = snapshot_download(
            repo_id, revision=revision, cache_dir=cache, local_files_only=bool(offline),
            allow_patterns=list(ALLOW_PATTERNS), ignore_patterns=list(PICKLE_PATTERNS))
    except errors.LocalEntryNotFoundError as e:
        hint = _fill_hint(repo_id, revision, cache, offline)
        if isinstance(e, getattr(errors, "IncompleteSnapshotError", ())):  # huggingface_hub 2+
            raise PresetError(f"hf://{repo_id} revision {shown!r}: the cached snapshot in "
                              f"{storage} is incomplete; {hint}"
                              ) from None
        why = f"{offline} is set" if offline else \
            f"the Hub could not be reached ({_first_line(e.__cause__ or e)})"
        cached = _cached_revisions(storage)
        if cached:
            raise PresetError(
                f"hf://{repo_id}: revision {shown!r} is not in the Hugging Face cache "
                f"{storage} (it holds {', '.join(cached)}) and {why}; "
                f"{hint}") from None
        raise PresetError(
            f"hf://{repo_id} (revision {shown!r}) is not in the Hugging Face cache {cache} and "
            f"{why}; {hint}") from None
    except errors.RevisionNotFoundError:
        raise PresetError(f"hf://{repo_id} has no revision {shown!r} on the Hub (a branch, "
                          "tag or commit sha of the repo)") from None
    except errors.GatedRepoError:
        raise PresetError(f"hf://{repo_id} is gated: accept its terms on huggingface.co and "
                          "set HF_TOKEN (or run `hf auth login`)") from None
    except errors.RepositoryNotFoundError:
        raise PresetError(f"hf://{repo_id}: no such model repo on the Hugging Face Hub (or "
                          "it is private: set HF_TOKEN)") from None
    except (errors.HfHubHTTPError, OSError, ValueError) as e:
        raise PresetError(f"hf://{repo_id} (revision {shown!r}): download failed: "
                          f"{_first_line(e)}") from None
    folder = str(folder)
    return folder, repo_id, revision, os.path.basename(os.path.normpath(folder))


def _first_line(e):
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def load_hf(cls, uri, overrides, load_weights):
    """Implements ``from_preset("hf://ORG/NAME[@REVISION]")``."""
    from keras_zoo.converters import huggingface

    folder, repo_id, revision, sha = hf_snapshot(uri)
    if load_weights and not any(os.path.exists(os.path.join(folder, n)) for n in (
            "model.safetensors", "model.safetensors.index.json")):
        raise PresetError(
            f"hf://{repo_id} (revision {revision or 'main'!r}, commit {sha}) has no "
            "model.safetensors: keras_zoo fetches safetensors only (pytorch_model.bin, .pth, "
            ".ckpt and other pickles are never downloaded nor unpickled); try a revision with "
            "safetensors, e.g. the Hub's conversion pull request (@refs/pr/N)")
    return huggingface.load(cls, folder, overrides, load_weights,
                            source=f"hf://{repo_id}" + (f"@{revision}" if revision else ""))


def load_published(cls, entry, overrides):
    """``from_preset(name)`` for a registry preset with a ``SOURCES`` entry:
    its published weights, downloaded on first use."""
    import logging

    from keras_zoo import presets

    family_cls = presets.get_family(entry.family)
    if cls.__name__ != "ZooModel" and not issubclass(family_cls, cls):
        raise PresetError(f"preset {entry.name!r} is a {entry.family} model, not a "
                          f"{cls.__name__}; use keras_zoo.{entry.family}.from_preset("
                          f"{entry.name!r})")
    uri = SOURCES[entry.name]
    logging.getLogger("keras_zoo").info(
        "preset %r: weights from %s (load_weights=False builds it with random weights)",
        entry.name, uri)
    try:
        # The registry's family (DINO for dino_vit_small_patch16, whose checkpoint
        # is a ViTModel backbone), also when called as keras_zoo.from_preset(name).
        return load_hf(family_cls, uri, overrides, True)
    except PresetError as e:
        raise PresetError(f"preset {entry.name!r} loads its published weights from {uri}; "
                          f"{e} (load_weights=False builds it with random weights, no "
                          "download)") from None


def load_uri(cls, uri, overrides, load_weights):
    """``from_preset`` for an ``hf://`` or ``kaggle://`` URI."""
    if uri.startswith(HF_SCHEME):
        return load_hf(cls, uri, overrides, load_weights)
    return load_kaggle(cls, uri, overrides, load_weights)


# ---------------------------------------------------------------- Kaggle

_KAGGLE_FORM = "kaggle://OWNER/MODEL/keras/VARIANT[/VERSION]"


def parse_kaggle_uri(uri):
    """``kaggle://OWNER/MODEL/keras/VARIANT[/VERSION]`` -> (owner, model,
    variant, version or None); PresetError (one line) for anything else."""
    parts = uri[len(KAGGLE_SCHEME):].rstrip("/").split("/")
    name = re.compile(rf"^{_NAME}$")
    if len(parts) not in (4, 5) or not all(name.match(p) for p in parts):
        raise PresetError(f"{uri!r} is not a Kaggle model URI: expected {_KAGGLE_FORM}")
    owner, model, framework, variant = parts[:4]
    if framework != "keras":
        raise PresetError(f"{uri!r}: framework {framework!r} is not read; keras_zoo imports "
                          f"keras-hub presets ({_KAGGLE_FORM})")
    version = parts[4] if len(parts) == 5 else None
    if version is not None and not version.isdigit():
        raise PresetError(f"{uri!r}: version {version!r} must be a number ({_KAGGLE_FORM})")
    return owner, model, variant, (int(version) if version else None)


def offline():
    """``KERAS_ZOO_OFFLINE=1``: no download from any hub (kagglehub has no
    offline switch of its own; for the Hugging Face Hub HF_HUB_OFFLINE works too)."""
    return os.environ.get("KERAS_ZOO_OFFLINE", "").strip().lower() in _TRUE


def kaggle_cache_dir():
    """kagglehub's cache: ``KAGGLEHUB_CACHE``, else ~/.cache/kagglehub."""
    from kagglehub import config

    return config.get_cache_folder()


def _kaggle_cached(owner, model, variant, version):
    """The folder of a complete download in kagglehub's cache (its own
    Cache.load_from_cache: the folder and its ``VERSION.complete`` marker), the
    highest cached version when ``version`` is None; or None."""
    from kagglehub.cache import Cache
    from kagglehub.handle import parse_model_handle

    if version is None:
        base = os.path.join(kaggle_cache_dir(), "models", owner, model, "keras", variant)
        found = [int(n[:-len(".complete")]) for n in (os.listdir(base) if os.path.isdir(base)
                                                      else [])
                 if n.endswith(".complete") and n[:-len(".complete")].isdigit()]
        for candidate in sorted(found, reverse=True):
            path = _kaggle_cached(owner, model, variant, candidate)
            if path:
                return path
        return None
    handle = parse_model_handle(f"{owner}/{model}/keras/{variant}/{version}")
    return Cache().load_from_cache(handle)


def kaggle_snapshot(uri):
    """Downloads (or finds in kagglehub's cache) a Kaggle model variant; returns
    ``(folder, handle, version)``. Every failure is one PresetError line."""
    owner, model, variant, version = parse_kaggle_uri(uri)
    handle = f"{owner}/{model}/keras/{variant}" + (f"/{version}" if version else "")
    try:
        import kagglehub
    except ImportError:
        raise PresetError(f"{uri}: kaggle:// needs the kagglehub package "
                          "(pip install kagglehub)") from None
    if offline():
        folder = _kaggle_cached(owner, model, variant, version)
        if folder is None:
            what = f"version {version}" if version else "any version"
            raise PresetError(
                f"{uri}: {what} of {handle} is not in kagglehub's cache "
                f"{kaggle_cache_dir()} and KERAS_ZOO_OFFLINE is set; fill it on a machine with "
                f"internet (`python -c \"import kagglehub; kagglehub.model_download("
                f"'{handle}')\"` with KAGGLEHUB_CACHE={kaggle_cache_dir()}) or unset "
                "KERAS_ZOO_OFFLINE")
    else:
        try:
            folder = kagglehub.model_download(handle)
        except Exception as e:  # kagglehub raises requests / its own error types
            raise PresetError(f"{uri}: kagglehub could not download {handle}: "
                              f"{_first_line(e)}") from None
    folder = str(folder)
    found = os.path.basename(os.path.normpath(folder))
    return folder, handle, int(found) if found.isdigit() else version


def load_kaggle(cls, uri, overrides, load_weights):
    """Implements ``from_preset("kaggle://OWNER/MODEL/keras/VARIANT[/VERSION]")``:
    the downloaded folder is a keras-hub (or keras_zoo) preset folder."""
    from keras_zoo import presets

    folder, _, _ = kaggle_snapshot(uri)
    if not os.path.exists(os.path.join(folder, presets.CONFIG_FILE)):
        raise PresetError(f"{uri}: the downloaded folder {folder!r} has no "
                          f"{presets.CONFIG_FILE}: not a keras-hub preset")
    return presets.load(cls, folder, load_weights=load_weights, **overrides)
