"""The preset registry: name -> family + config (+ optional weights).

A preset is data, never code: ``config.json`` (family name and constructor
arguments), ``model.weights.h5`` and ``manifest.json`` (sha256 of each file,
checked on load). ``from_preset`` accepts

* a registry name (``"vit_base_patch16_224"``; ``list_presets()`` lists them),
* a local folder written by ``save_to_preset``,
* a ``gs://`` (or any ``tf.io.gfile``) folder of the same layout,
* a folder written by keras-hub's ``save_to_preset`` for a family with a
  converter (ViT, ResNet): weights are mapped into the keras_zoo model.
"""

import dataclasses
import difflib
import hashlib
import json
import logging
import os
import shutil
import tempfile

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1

log = logging.getLogger("keras_zoo")


class PresetError(ValueError):
    """A preset name, folder or file that cannot be used; the message says why."""


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    family: str
    config: dict
    description: str = ""
    weights: str | None = None  # a preset folder (local or gs://) holding weights
    tiny: bool = False  # trains in seconds on 32x32x1 digits; the test suite uses these


_PRESETS: dict[str, Preset] = {}
_FAMILIES: dict[str, type] = {}
_CONVERTERS: dict[str, object] = {}  # keras-hub class name -> fn(folder, overrides, load_weights)


def register_family(cls):
    """Class decorator: makes ``cls`` reachable by name from preset files."""
    _FAMILIES[cls.__name__] = cls
    return cls


def register_preset(name, family, config, description="", weights=None, tiny=False):
    if name in _PRESETS:
        raise ValueError(f"preset {name!r} is registered twice")
    _PRESETS[name] = Preset(name, family, dict(config), description, weights, tiny)


def register_converter(keras_hub_class, fn):
    """``fn(folder, overrides, load_weights) -> model`` converts a keras-hub preset folder."""
    _CONVERTERS[keras_hub_class] = fn


def list_presets(family=None, tiny=None):
    """Sorted preset names, all of them or those of one family (class or name);
    ``tiny=True``: only the digits-sized ones the tests train."""
    _import_families()
    if family is not None and not isinstance(family, str):
        family = family.__name__
    return sorted(n for n, p in _PRESETS.items()
                  if family in (None, p.family) and tiny in (None, p.tiny))


def get_preset(name):
    _import_families()
    if name not in _PRESETS:
        close = difflib.get_close_matches(name, list(_PRESETS), n=5, cutoff=0.5)
        hint = f" Closest: {', '.join(close)}." if close else ""
        raise PresetError(
            f"unknown preset {name!r} (not a registry name, and no such folder).{hint}"
            " keras_zoo.list_presets() lists all names.")
    return _PRESETS[name]


def get_family(name):
    _import_families()
    if name not in _FAMILIES:
        raise PresetError(f"unknown model family {name!r}; known: {sorted(_FAMILIES)}")
    return _FAMILIES[name]


def _import_families():
    import keras_zoo.models  # noqa: F401  (registers every family and preset)


# ---------------------------------------------------------------- files

def _gfile():
    from keras_zoo.backend import tensorflow

    return tensorflow("remote preset paths (tf.io.gfile)").io.gfile


def _is_remote(path):
    return "://" in str(path)


def _exists(path):
    return _gfile().exists(path) if _is_remote(path) else os.path.exists(path)


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _localize(folder):
    """Copies a remote (gs://) preset folder to a temporary local one."""
    if not _is_remote(folder):
        return folder
    gfile = _gfile()
    local = tempfile.mkdtemp(prefix="keras_zoo_preset_")
    for name in gfile.listdir(folder):
        src = folder.rstrip("/") + "/" + name
        if not gfile.isdir(src):
            gfile.copy(src, os.path.join(local, name), overwrite=True)
    return local


def read_json(path):
    if not os.path.exists(path):
        raise PresetError(f"preset folder {os.path.dirname(path)!r} has no "
                          f"{os.path.basename(path)}")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise PresetError(f"{path} is not valid JSON: {e}") from None


def check_overrides(family_cls, overrides):
    """Raises PresetError naming any override the family's constructor lacks."""
    unknown = set(overrides) - set(family_cls.config_keys())
    if unknown:
        raise PresetError(
            f"{family_cls.__name__} has no config option(s) {sorted(unknown)}; options are "
            f"{sorted(family_cls.config_keys())}")


def read_preset_folder(folder):
    """Returns (config_json_dict, weights_path_or_None) after checking sha256."""
    config = read_json(os.path.join(folder, CONFIG_FILE))
    weights = os.path.join(folder, WEIGHTS_FILE)
    manifest_path = os.path.join(folder, MANIFEST_FILE)
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
        for name, expected in manifest.get("sha256", {}).items():
            path = os.path.join(folder, name)
            if not os.path.exists(path):
                raise PresetError(f"preset file {path!r} named in {MANIFEST_FILE} is missing")
            actual = sha256_of(path)
            if actual != expected:
                raise PresetError(
                    f"sha256 mismatch for {path!r}: manifest says {expected}, file has "
                    f"{actual}. The file is corrupt or was changed after saving.")
    return config, (weights if os.path.exists(weights) else None)


def _atomic_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _save_model_weights(model, path):
    """The model's weights only: a compiled model's ``save_weights`` also writes
    the optimizer's slots (3x the file for Adam), which a preset never needs."""
    from keras.src.saving import saving_lib  # objects_to_skip is not on the public API

    optimizer = getattr(model, "optimizer", None)
    saving_lib.save_weights_only(model, path, objects_to_skip=[optimizer] if optimizer else None)


def save_to_preset(model, directory, description=""):
    """Writes config.json, model.weights.h5 and manifest.json (sha256) to ``directory``
    (local or gs://). Local writes go through a temporary folder and a rename per
    file, so an interrupted save never leaves a half-written weights file."""
    remote = _is_remote(directory)
    local = tempfile.mkdtemp(prefix="keras_zoo_save_") if remote else directory
    os.makedirs(local, exist_ok=True)
    config = {
        "format_version": FORMAT_VERSION,
        "family": type(model).__name__,
        "config": model.get_zoo_config(),
        "description": description,
    }
    _atomic_json(os.path.join(local, CONFIG_FILE), config)
    tmp_weights = os.path.join(local, "tmp_" + WEIGHTS_FILE)
    _save_model_weights(model, tmp_weights)
    os.replace(tmp_weights, os.path.join(local, WEIGHTS_FILE))
    names = [CONFIG_FILE, WEIGHTS_FILE]
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:  # text families: the vocabulary travels with the weights
        names += tokenizer.save(local)
    manifest = {"sha256": {n: sha256_of(os.path.join(local, n)) for n in names}}
    _atomic_json(os.path.join(local, MANIFEST_FILE), manifest)
    if remote:
        gfile = _gfile()
        gfile.makedirs(directory)
        for name in names + [MANIFEST_FILE]:
            gfile.copy(os.path.join(local, name), directory.rstrip("/") + "/" + name,
                       overwrite=True)
        shutil.rmtree(local, ignore_errors=True)
    return directory


# ---------------------------------------------------------------- loading

def load(cls, preset, load_weights=True, **overrides):
    """Implements ``Family.from_preset``; ``cls`` may be ZooModel (any family)."""
    preset = str(preset)
    folder = None  # where the weights (and a text family's tokenizer) come from
    if _exists(preset):
        folder = _localize(preset)
        raw = read_json(os.path.join(folder, CONFIG_FILE))
        if "class_name" in raw and "family" not in raw:
            return _load_keras_hub(folder, raw, cls, overrides, load_weights)
        data, weights = read_preset_folder(folder)
        family, config, source = data["family"], data["config"], preset
    else:
        entry = get_preset(preset)
        family, config, source, weights = entry.family, entry.config, preset, None
        if entry.weights and load_weights:
            folder = _localize(entry.weights)
            _, weights = read_preset_folder(folder)
    family_cls = get_family(family)
    if cls.__name__ != "ZooModel" and not issubclass(family_cls, cls):
        raise PresetError(
            f"preset {source!r} is a {family} model, not a {cls.__name__}; use "
            f"keras_zoo.{family}.from_preset({source!r}) or one of "
            f"{list_presets(cls.__name__)[:6]}")
    check_overrides(family_cls, overrides)
    target = family_cls(**{**config, **overrides})
    if load_weights and weights:
        if not overrides or all(config.get(k) == v for k, v in overrides.items()):
            _load_weights_file(target, weights)
        else:
            source_model = family_cls(**config)
            _load_weights_file(source_model, weights)
            transfer_weights(source_model, target)
    elif load_weights and not weights:
        log.info("preset %r has no published weights here; %s is randomly initialised",
                 source, family)
    _attach_tokenizer(target, folder)
    return target


def _attach_tokenizer(model, folder):
    """Text families carry their tokenizer: read it from the preset folder."""
    if not hasattr(model, "tokenizer") or folder is None:
        return
    from keras_zoo.data.tokenizers import Tokenizer, TokenizerError

    if Tokenizer.exists(folder):
        try:
            model.tokenizer = Tokenizer.load(folder)
        except TokenizerError as e:
            raise PresetError(str(e)) from None
    elif getattr(model, "requires_tokenizer", False):
        raise PresetError(f"preset folder {folder!r} has no tokenizer.json: a "
                          f"{type(model).__name__} preset must carry its vocabulary "
                          "(save it with model.save_to_preset after setting model.tokenizer)")


def _load_weights_file(model, path):
    if not os.path.exists(path):
        raise PresetError(f"weights file {path!r} is missing")
    try:
        model.load_weights(path)
    except Exception as e:  # h5py / keras raise many types for a bad file
        raise PresetError(
            f"could not load weights from {path!r} into {type(model).__name__}: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. "
            "The file is corrupt or belongs to another configuration.") from e


def transfer_weights(source, target):
    """Copies weights layer by layer between two models of one family whose
    configs differ. A layer with a ``resample`` method (position embeddings)
    is resampled to the new shape; a classifier ``head`` whose size changed
    keeps its fresh initialisation (fine-tuning on a new label set)."""
    src_layers = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        new = layer.get_weights()
        if not new:
            continue
        if layer.name not in src_layers:
            raise PresetError(f"layer {layer.name!r} has no counterpart in the preset")
        old = src_layers[layer.name].get_weights()
        if [w.shape for w in old] == [w.shape for w in new]:
            layer.set_weights(old)
        elif hasattr(layer, "resample"):
            layer.set_weights([layer.resample(o, n.shape) for o, n in zip(old, new)])
        elif layer.name == "head":
            log.info("classifier head resized %s -> %s: initialised randomly",
                     [w.shape for w in old], [w.shape for w in new])
        else:
            raise PresetError(
                f"layer {layer.name!r}: preset weights of shapes {[w.shape for w in old]} "
                f"do not fit {[w.shape for w in new]} under the overridden config")


def _load_keras_hub(folder, raw, cls, overrides, load_weights):
    class_name = raw["class_name"].split(">")[-1]
    if class_name not in _CONVERTERS:
        import keras_zoo.converters  # noqa: F401  (registers the converters)
    if class_name not in _CONVERTERS:
        raise PresetError(
            f"{folder!r} is a keras-hub {class_name} preset; keras_zoo converts "
            f"{sorted(_CONVERTERS)} only")
    model = _CONVERTERS[class_name](folder, overrides, load_weights)
    if cls.__name__ != "ZooModel" and not isinstance(model, cls):
        raise PresetError(f"{folder!r} holds a {type(model).__name__}, not a {cls.__name__}")
    return model
