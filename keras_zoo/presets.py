"""The preset registry: name -> family + config (+ optional weights).

A preset is data, never code: ``config.json`` (family name and constructor
arguments), ``model.weights.h5`` and ``manifest.json`` (sha256 of each file,
checked on load). ``from_preset`` accepts

* a registry name (``"vit_base_patch16_224"``; ``list_presets()`` lists them),
* a local folder written by ``save_to_preset``,
* a ``gs://`` (or any ``tf.io.gfile``) folder of the same layout,
* a folder written by keras-hub's ``save_to_preset`` for a family with a
  converter (ViT, ResNet): weights are mapped into the keras_zoo model,
* ``"hf:<folder>"``, a Hugging Face ``save_pretrained`` folder of a supported
  architecture (MambaForCausalLM): see keras_zoo/converters/huggingface.py,
* ``"hf://ORG/NAME[@REVISION]"`` and ``"kaggle://OWNER/MODEL/keras/VARIANT[/VERSION]"``,
  published checkpoints downloaded into their library's cache: keras_zoo/hub.py.
"""

import contextlib
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
    """A JSON object from ``path``; a missing, malformed or non-object file is
    one PresetError naming it."""
    if not os.path.exists(path):
        raise PresetError(f"preset folder {os.path.dirname(path)!r} has no "
                          f"{os.path.basename(path)}")
    with open(path, "rb") as f:
        try:
            value = json.loads(f.read().decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise PresetError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise PresetError(f"{path} must hold a JSON object, not a {type(value).__name__}")
    return value


def _closest(names, valid):
    """' (did you mean a, b?)' for misspelt ``names``, or ''."""
    close = list(dict.fromkeys(m for n in names
                               for m in difflib.get_close_matches(n, list(valid), n=2)))
    return f" (did you mean {', '.join(close)}?)" if close else ""


def check_overrides(family_cls, overrides, where=None):
    """Raises PresetError naming any override (or, with ``where`` = the file,
    any config.json option) the family's constructor lacks."""
    valid = list(family_cls.config_keys())
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise PresetError(
            f"{where + ': ' if where else ''}{family_cls.__name__} has no config option(s) "
            f"{unknown}{_closest(unknown, valid)}; options are {sorted(valid)}")


PRESET_KEYS = ("format_version", "family", "config", "description")


def parse_preset_config(raw, path):
    """(family, config) from a keras_zoo ``config.json``, every field checked:
    a newer format, a missing or mistyped field, an unknown key (in the file or
    in the family's config) is one PresetError naming ``path``."""
    unknown = sorted(set(raw) - set(PRESET_KEYS))
    if unknown:
        raise PresetError(f"{path} has unknown key(s) {unknown}"
                          f"{_closest(unknown, PRESET_KEYS)}; a preset holds {PRESET_KEYS}")
    version = raw.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PresetError(f"{path}: format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise PresetError(f"{path} has format_version {version}; this keras_zoo reads up to "
                          f"{FORMAT_VERSION}: upgrade keras_zoo to load it")
    family, config = raw.get("family"), raw.get("config")
    if not isinstance(family, str):
        raise PresetError(f"{path}: 'family' must name a model family (a string), got "
                          f"{family!r}")
    if not isinstance(config, dict):
        raise PresetError(f"{path}: 'config' must be a JSON object of the family's options, "
                          f"got {type(config).__name__}")
    try:
        family_cls = get_family(family)
    except PresetError as e:
        raise PresetError(f"{path}: {e}") from None
    check_overrides(family_cls, config, where=path)
    return family, config


def _read_manifest(path):
    """{file name: sha256} from manifest.json, its shape checked."""
    manifest = read_json(path)
    hashes = manifest.get("sha256")
    if not isinstance(hashes, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in hashes.items()):
        raise PresetError(f"{path} must hold {{\"sha256\": {{file name: hex digest}}}}, got "
                          f"{json.dumps(manifest)[:120]}")
    return hashes


def read_preset_folder(folder):
    """Returns (config_json_dict, weights_path_or_None) after checking sha256."""
    config = read_json(os.path.join(folder, CONFIG_FILE))
    weights = os.path.join(folder, WEIGHTS_FILE)
    manifest_path = os.path.join(folder, MANIFEST_FILE)
    if os.path.exists(manifest_path):
        for name, expected in _read_manifest(manifest_path).items():
            path = os.path.join(folder, name)
            if not os.path.exists(path):
                raise PresetError(f"preset file {path!r} named in {MANIFEST_FILE} is missing")
            actual = sha256_of(path)
            if actual != expected:
                raise PresetError(
                    f"sha256 mismatch for {path!r}: manifest says {expected}, file has "
                    f"{actual}. The file is corrupt or was changed after saving.")
    return config, (weights if os.path.exists(weights) else None)


def preset_problem(folder):
    """Why the preset folder written by ``save_to_preset`` is not whole (a file
    missing, a sha256 that does not match: a save that was killed half-way), or None."""
    local = _localize(folder)
    try:
        config, weights = read_preset_folder(local)
        if not os.path.exists(os.path.join(local, MANIFEST_FILE)) or weights is None:
            return f"no {MANIFEST_FILE} or no {WEIGHTS_FILE}"
        parse_preset_config(config, os.path.join(folder, CONFIG_FILE))
    except PresetError as e:
        return str(e)
    finally:
        if local != folder:
            shutil.rmtree(local, ignore_errors=True)
    return None


def _atomic_json(path, obj):
    # A unique temporary name: two processes saving into one folder never
    # write through each other's temporary file.
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp",
                               dir=os.path.dirname(path) or ".")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _save_model_weights(model, path):
    """The model's weights only: a compiled model's ``save_weights`` also writes
    the optimizer's slots (3x the file for Adam), which a preset never needs."""
    from keras.src.saving import saving_lib  # objects_to_skip is not on the public API

    optimizer = getattr(model, "optimizer", None)
    saving_lib.save_weights_only(model, path, objects_to_skip=[optimizer] if optimizer else None)


@contextlib.contextmanager
def _folder_lock(folder, exclusive):
    """An advisory lock (flock) on a local preset folder itself: a writer swaps
    its files in under the exclusive lock, a reader reads config, tokenizer and
    weights under a shared one, so no reader sees one writer's config with
    another's weights. (No fcntl, e.g. on Windows: no lock.)"""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def save_to_preset(model, directory, description=""):
    """Writes config.json, model.weights.h5 and manifest.json (sha256) to ``directory``
    (local or gs://). Every file is first written to a staging folder of a
    unique name inside ``directory``, then renamed into place under the
    folder's lock (``_folder_lock``), manifest last: an interrupted save never
    leaves a half-written file, and concurrent saves into one folder leave
    one writer's complete set."""
    remote = _is_remote(directory)
    if remote:
        local = tempfile.mkdtemp(prefix="keras_zoo_save_")
    else:
        os.makedirs(directory, exist_ok=True)
        local = tempfile.mkdtemp(prefix=".keras_zoo_save_", dir=directory)
    try:
        names = _write_preset_files(model, local, description)
        if remote:
            gfile = _gfile()
            gfile.makedirs(directory)
            for name in names:
                gfile.copy(os.path.join(local, name), directory.rstrip("/") + "/" + name,
                           overwrite=True)
        else:
            with _folder_lock(directory, exclusive=True):
                for name in names:  # manifest last
                    os.replace(os.path.join(local, name), os.path.join(directory, name))
    finally:
        shutil.rmtree(local, ignore_errors=True)
    return directory


def _write_preset_files(model, local, description):
    """Writes the preset's files into ``local``; returns their names, manifest last."""
    config = {
        "format_version": FORMAT_VERSION,
        "family": type(model).__name__,
        "config": model.get_zoo_config(),
        "description": description,
    }
    _atomic_json(os.path.join(local, CONFIG_FILE), config)
    _save_model_weights(model, os.path.join(local, WEIGHTS_FILE))
    names = [CONFIG_FILE, WEIGHTS_FILE]
    manifest = {}
    if hasattr(model, "tokenizer"):
        tokenizer = model.tokenizer
        # A text model saved without a vocabulary (a registry preset built with
        # random weights) says so, and loads back without one.
        manifest["tokenizer"] = tokenizer is not None
        if tokenizer is not None:  # text families: the vocabulary travels with the weights
            names += tokenizer.save(local)
    manifest["sha256"] = {n: sha256_of(os.path.join(local, n)) for n in names}
    _atomic_json(os.path.join(local, MANIFEST_FILE), manifest)
    return names + [MANIFEST_FILE]


# ---------------------------------------------------------------- loading

def load(cls, preset, load_weights=True, **overrides):
    """Implements ``Family.from_preset``; ``cls`` may be ZooModel (any family)."""
    preset = str(preset)
    if preset.startswith(("hf://", "kaggle://")):  # published checkpoints: keras_zoo/hub.py
        from keras_zoo import hub

        return hub.load_uri(cls, preset, overrides, load_weights)
    if os.path.isdir(preset):  # a local folder: read it whole, between two saves
        with _folder_lock(preset, exclusive=False):
            return _load(cls, preset, load_weights, **overrides)
    return _load(cls, preset, load_weights, **overrides)


def _load(cls, preset, load_weights=True, **overrides):
    if preset.startswith("hf:"):  # a Hugging Face save_pretrained folder
        from keras_zoo.converters import huggingface

        return huggingface.load(cls, preset[len("hf:"):], overrides, load_weights)
    folder = None  # where the weights (and a text family's tokenizer) come from
    if _exists(preset):
        folder = _localize(preset)
        raw = read_json(os.path.join(folder, CONFIG_FILE))
        if "class_name" in raw and "family" not in raw:
            return _load_keras_hub(folder, raw, cls, overrides, load_weights)
        if ("architectures" in raw or "model_type" in raw) and "family" not in raw:
            kind = raw.get("model_type") or raw.get("architectures")
            raise PresetError(f"{preset!r} is a Hugging Face folder ({kind}): load it with "
                              f"from_preset('hf:{preset}')")
        data, weights = read_preset_folder(folder)
        family, config = parse_preset_config(data, os.path.join(preset, CONFIG_FILE))
        source = preset
        _check_config_fits_weights(config, weights, os.path.join(preset, CONFIG_FILE))
        if load_weights and not weights:
            raise PresetError(
                f"preset folder {preset!r} has no {WEIGHTS_FILE}: pass load_weights=False "
                "to build its model with random weights")
    else:
        entry = get_preset(preset)
        family, config, source, weights = entry.family, entry.config, preset, None
        if load_weights and not entry.weights:  # weights published on a hub: keras_zoo/hub.py
            from keras_zoo import hub

            if hub.published_source(preset):
                return hub.load_published(cls, entry, overrides)
        if entry.weights and load_weights:
            folder = _localize(entry.weights)
            _, weights = read_preset_folder(folder)
            if not weights:
                raise PresetError(f"the weights folder {entry.weights!r} of preset {preset!r}"
                                  f" has no {WEIGHTS_FILE}")
    family_cls = get_family(family)
    if cls.__name__ != "ZooModel" and not issubclass(family_cls, cls):
        raise PresetError(
            f"preset {source!r} is a {family} model, not a {cls.__name__}; use "
            f"keras_zoo.{family}.from_preset({source!r}) or one of "
            f"{list_presets(cls.__name__)[:6]}")
    check_overrides(family_cls, overrides)
    if config.get("label_names") and "label_names" not in overrides and \
            overrides.get("num_classes", config.get("num_classes")) != config.get("num_classes"):
        overrides = {**overrides, "label_names": None}  # a new head: the names no longer apply
    try:
        target = family_cls(**{**config, **overrides})
    except (ValueError, TypeError) as e:  # the family's own checks of its options
        given = f" with {overrides}" if overrides else ""
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PresetError(f"cannot build {family} from preset {source!r}{given}: {reason}") \
            from e
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
    elif getattr(model, "requires_tokenizer", False) and not _saved_without_tokenizer(folder):
        raise PresetError(f"preset folder {folder!r} has no tokenizer.json: a "
                          f"{type(model).__name__} preset must carry its vocabulary "
                          "(save it with model.save_to_preset after setting model.tokenizer)")


def _check_config_fits_weights(config, weights, path):
    """A config.json describing far more parameters than its weights file holds
    (at one byte each) was edited or belongs elsewhere: refused before building."""
    from keras_zoo.models.base import minimum_parameters

    if not weights or not os.path.exists(weights):
        return
    need, size = minimum_parameters(config), os.path.getsize(weights)
    if need > 1.1 * size + (1 << 20):
        raise PresetError(f"{path} describes at least {need:,} parameters but "
                          f"{os.path.basename(weights)} holds only {size:,} bytes: the config "
                          "does not belong to these weights")


def _saved_without_tokenizer(folder):
    path = os.path.join(folder, MANIFEST_FILE)
    return os.path.exists(path) and read_json(path).get("tokenizer") is False


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
    is resampled to the new shape; a classifier ``head`` whose size changed,
    or a head the source lacks (a family lists its heads in
    ``head_layer_names``), keeps its fresh initialisation (fine-tuning on a
    new label set or task); the source's other heads are left behind."""
    src_layers = {layer.name: layer for layer in source.layers}
    heads = getattr(target, "head_layer_names", ("head",))
    for layer in target.layers:
        new = layer.get_weights()
        if not new:
            continue
        if layer.name not in src_layers and layer.name in heads:
            log.info("head %r is new (the preset has none): initialised randomly", layer.name)
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
