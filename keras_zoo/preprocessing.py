"""How a vision preset's images are made: the ``preprocessing`` config option.

A vision model (ViT, ResNet, MAE; DINO through its backbone) takes float
images in [0, 1] of its fixed input size; ``__call__``, ``predict`` and
``embed`` also take uint8 arrays, scaled by 1/255 first (the rule is the
dtype: uint8 means 0..255, any float dtype means 0..1). What the weights were
trained on beyond that is recorded as plain data in the model's config (so in
its preset's config.json and its .keras file)::

    {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
     "resize": "shorter_side", "resize_size": 256, "crop": "center",
     "crop_rounding": "round", "interpolation": "bicubic",
     "source": "timm pretrained_cfg"}

* ``mean``/``std`` (one per channel): applied inside the graph by the model's
  first layer (``ImageNormalization``), so Keras, SavedModel and TFLite see
  the same [0, 1] image and agree. Absent: the model reads [0, 1] as it is.
* ``resize``/``resize_size``/``crop``/``crop_rounding``/``interpolation``:
  how a photo of any size becomes the model's square input. An exported file
  has a static input size, so this part runs on the host:
  ``keras_zoo.preprocess_images(model, images)``. ``"exact"`` resizes to
  ``resize_size`` x ``resize_size`` (Hugging Face ``ViTImageProcessor``);
  ``"shorter_side"`` scales the shorter side to ``resize_size`` keeping the
  aspect ratio (timm, ``ConvNextImageProcessor``: ``image_size / crop_pct``);
  ``crop="center"`` then cuts the model's ``image_size`` square from the
  middle, its offset ``(H - size) // 2`` (``"floor"``, Hugging Face) or
  ``round((H - size) / 2)`` (``"round"``, torchvision/timm).
  Resizing uses PIL, as both reference implementations do for uint8 photos.
"""

import difflib
import math

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}

KEYS = ("mean", "std", "resize", "resize_size", "crop", "crop_rounding", "interpolation",
        "source")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
# PIL's resampling filter ids, the numbers Hugging Face's ``resample`` holds.
_PIL_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def check_preprocessing(spec, num_channels, image_size):
    """The spec with its defaults filled in, or one ValueError naming the bad entry."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise ValueError(f"preprocessing must be a dict of {list(KEYS)}, got {spec!r}")
    unknown = sorted(set(spec) - set(KEYS))
    if unknown:
        close = [m for k in unknown for m in difflib.get_close_matches(k, KEYS, n=1)]
        raise ValueError(f"preprocessing has unknown key(s) {unknown}"
                         f"{f' (did you mean {close}?)' if close else ''}; keys are {list(KEYS)}")
    out = dict(spec)
    if ("mean" in out) != ("std" in out):
        raise ValueError("preprocessing needs both 'mean' and 'std' (or neither)")
    for key in ("mean", "std"):
        value = out.get(key)
        if value is None:
            continue
        if not isinstance(value, (list, tuple)) or len(value) != num_channels or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in value):
            raise ValueError(f"preprocessing {key!r} must list {num_channels} number(s), one "
                             f"per input channel, got {value!r}")
        if key == "std" and not all(v > 0 for v in value):
            raise ValueError(f"preprocessing 'std' must be positive, got {value!r}")
        out[key] = [float(v) for v in value]
    resize = out.setdefault("resize", "exact")
    if resize not in ("exact", "shorter_side"):
        raise ValueError(f"preprocessing 'resize' must be 'exact' or 'shorter_side', got "
                         f"{resize!r}")
    size = out.setdefault("resize_size", image_size)
    if isinstance(size, bool) or not isinstance(size, int) or size < image_size:
        raise ValueError(f"preprocessing 'resize_size' must be an integer >= the image size "
                         f"{image_size}, got {size!r}")
    crop = out.setdefault("crop", "center" if size != image_size or resize != "exact" else None)
    if crop not in (None, "center"):
        raise ValueError(f"preprocessing 'crop' must be 'center' or None, got {crop!r}")
    if resize == "exact" and size != image_size and crop is None:
        raise ValueError(f"preprocessing resizes to {size} px but the model takes {image_size}"
                         " px: set 'crop': 'center'")
    if out.setdefault("crop_rounding", "floor") not in ("floor", "round"):
        raise ValueError(f"preprocessing 'crop_rounding' must be 'floor' or 'round', got "
                         f"{out['crop_rounding']!r}")
    if out.setdefault("interpolation", "bilinear") not in INTERPOLATIONS:
        raise ValueError(f"preprocessing 'interpolation' must be one of {INTERPOLATIONS}, got "
                         f"{out['interpolation']!r}")
    return out


def normalization_layer(spec):
    """The in-graph ``ImageNormalization`` for a checked spec, or None."""
    if not spec or spec.get("mean") is None:
        return None
    from keras_zoo.layers.preprocessing import ImageNormalization

    return ImageNormalization(spec["mean"], spec["std"], name="image_normalization")


def normalize(images, spec):
    """(x - mean) / std with keras.ops (MAE's loss target), or x unchanged."""
    if not spec or spec.get("mean") is None:
        return images
    from keras import ops

    return (ops.cast(images, "float32") - np.asarray(spec["mean"], "float32")) / np.asarray(
        spec["std"], "float32")


def denormalize(images, spec):
    if not spec or spec.get("mean") is None:
        return images
    from keras import ops

    return ops.cast(images, "float32") * np.asarray(spec["std"], "float32") + np.asarray(
        spec["mean"], "float32")


# ---------------------------------------------------------------- from the sources

def from_hf_processor(config, image_size, source="preprocessor_config.json"):
    """A spec from a Hugging Face ``preprocessor_config.json`` (ViTImageProcessor,
    ConvNextImageProcessor, BitImageProcessor/CLIP-style shortest_edge + crop)."""
    kind = config.get("image_processor_type", "image processor")
    spec = {"source": f"{source} ({kind})"}
    if config.get("do_normalize", True) and config.get("image_mean") is not None:
        spec["mean"], spec["std"] = list(config["image_mean"]), list(config["image_std"])
    if config.get("do_rescale", True) and not math.isclose(
            config.get("rescale_factor", 1 / 255), 1 / 255, rel_tol=1e-6):
        raise ValueError(f"{source}: rescale_factor={config['rescale_factor']} (keras_zoo models "
                         "take [0, 1] images, i.e. 1/255 of uint8)")
    spec["interpolation"] = _PIL_FILTERS.get(config.get("resample", 2), "bilinear")
    size = config.get("size") or {}
    if isinstance(size, int):
        size = {"shortest_edge": size}
    crop = config.get("crop_size") if config.get("do_center_crop") else None
    if isinstance(crop, dict):
        crop = crop.get("height")
    if "shortest_edge" in size:
        edge = size["shortest_edge"]
        if "crop_pct" in config and config.get("crop_pct") is not None:
            # ConvNextImageProcessor: below 384 px, shorter side to edge / crop_pct,
            # then a centre crop of edge; from 384 px on, a plain resize to edge.
            if edge < 384:
                spec.update(resize="shorter_side", resize_size=int(edge / config["crop_pct"]),
                            crop="center")
            else:
                spec.update(resize="exact", resize_size=edge, crop=None)
        else:
            spec.update(resize="shorter_side", resize_size=edge,
                        crop="center" if crop else None)
            if crop is None and edge != image_size:
                raise ValueError(f"{source}: resizes the shorter side to {edge} px without a "
                                 f"crop; the model takes {image_size} x {image_size}")
    elif "height" in size:
        if size["height"] != size.get("width", size["height"]):
            raise ValueError(f"{source}: size {size} is not square; keras_zoo models take "
                             "square images")
        spec.update(resize="exact", resize_size=size["height"],
                    crop="center" if crop and crop != size["height"] else None)
    spec["crop_rounding"] = "floor"
    return spec


def from_timm_config(pretrained_cfg, image_size, source="timm pretrained_cfg"):
    """A spec from timm's ``pretrained_cfg`` (mean, std, crop_pct, crop_mode,
    interpolation), as ``timm.data.create_transform`` applies it at evaluation."""
    mode = pretrained_cfg.get("crop_mode", "center")
    if mode != "center":
        raise ValueError(f"{source}: crop_mode={mode!r}; keras_zoo records 'center' crops only")
    crop_pct = pretrained_cfg.get("crop_pct", 0.875)
    spec = {"source": source,
            "mean": list(pretrained_cfg.get("mean", IMAGENET_MEAN)),
            "std": list(pretrained_cfg.get("std", IMAGENET_STD)),
            "interpolation": pretrained_cfg.get("interpolation", "bilinear"),
            "crop_rounding": "round"}
    if spec["interpolation"] == "random":
        spec["interpolation"] = "bilinear"  # timm's own evaluation choice for "random"
    # timm's transforms_factory: scale_size = floor(img_size / crop_pct), then
    # Resize(scale_size) (shorter side) and CenterCrop(img_size).
    spec.update(resize="shorter_side", resize_size=math.floor(image_size / crop_pct),
                crop="center")
    return spec


# ---------------------------------------------------------------- host side

def model_preprocessing(model):
    """(spec, image_size, num_channels) of a vision model (DINO: its backbone's)."""
    spec = getattr(model, "preprocessing", None)
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4:
        raise ValueError(f"{type(model).__name__} does not take images (its input is {shape})")
    return spec, shape[1], shape[3]


def preprocess_images(model, images):
    """Photos of any size -> the float32 (N, S, S, C) batch in [0, 1] that ``model`` takes.

    ``images``: one (H, W, C) array, a list of them (sizes may differ) or an
    (N, H, W, C) array; uint8 (0..255) or float (0..1). Each is resized and
    centre-cropped as the model's ``preprocessing`` says (see this module's
    docstring; without a spec: an exact resize to the input size, bilinear).
    The mean/std normalisation is NOT applied here: the model does it in its
    graph, so the result goes to ``model.predict``, ``model.embed`` or an
    exported file alike.
    """
    spec, size, channels = model_preprocessing(model)
    spec = dict(spec or {"resize": "exact", "resize_size": size, "crop": None,
                         "crop_rounding": "floor", "interpolation": "bilinear"})
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    out = []
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[-1] != channels:
            raise ValueError(f"image {i} has shape {image.shape}; {type(model).__name__} takes "
                             f"(height, width, {channels}) images")
        out.append(_one_image(image, spec, size))
    if not out:
        raise ValueError("preprocess_images got no image")
    return np.stack(out)


def _one_image(image, spec, size):
    from PIL import Image

    uint8 = image.dtype == np.uint8
    if not uint8 and not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"images must be uint8 (0..255) or float (0..1), got {image.dtype}")
    h, w = image.shape[:2]
    side = spec["resize_size"]
    if spec["resize"] == "exact":
        new_h = new_w = side
    elif h <= w:
        new_h, new_w = side, int(side * w / h)
    else:
        new_h, new_w = int(side * h / w), side
    resample = getattr(Image.Resampling, spec["interpolation"].upper())
    if (new_h, new_w) != (h, w):
        if uint8:  # one PIL image, rounded to uint8 as the references do
            mode = "L" if image.shape[-1] == 1 else None
            pil = Image.fromarray(image[..., 0] if mode else image, mode)
            image = np.asarray(pil.resize((new_w, new_h), resample))
            image = image.reshape(new_h, new_w, -1)
        else:  # float: one 32-bit PIL image per channel
            image = np.stack([np.asarray(Image.fromarray(image[..., c].astype("float32"), "F")
                                         .resize((new_w, new_h), resample))
                              for c in range(image.shape[-1])], axis=-1)
    if spec["crop"] == "center":
        def offset(length):
            if spec["crop_rounding"] == "round":
                return int(round((length - size) / 2.0))
            return (length - size) // 2

        if new_h < size or new_w < size:
            raise ValueError(f"image resized to {new_h}x{new_w} is smaller than the {size} px "
                             "crop")
        top, left = offset(new_h), offset(new_w)
        image = image[top:top + size, left:left + size]
    image = image.astype("float32")
    return image / 255.0 if uint8 else image


def unit_images(x):
    """The dtype rule of vision models: a uint8 array or tensor becomes
    float32 / 255; anything else is returned unchanged (read as [0, 1])."""
    dtype = getattr(x, "dtype", None)
    if dtype is None or str(getattr(dtype, "name", dtype)) != "uint8":
        return x
    if isinstance(x, np.ndarray):
        return x.astype("float32") / np.float32(255.0)
    from keras import ops

    return ops.cast(x, "float32") / 255.0


# ---------------------------------------------------------------- model side

def image_input(image_size, num_channels, preprocessing):
    """``(inputs, x)`` for a vision family's graph: the [0, 1] image input and,
    when the spec has a mean/std, that input normalised by ``ImageNormalization``."""
    import keras

    spec = check_preprocessing(preprocessing, num_channels, image_size)
    inputs = keras.Input((image_size, image_size, num_channels), name="images")
    layer = normalization_layer(spec)
    return inputs, (inputs if layer is None else layer(inputs))


def check_label_names(label_names, num_classes):
    """One ValueError unless ``label_names`` is None or ``num_classes`` strings."""
    if label_names is None:
        return
    if not isinstance(label_names, (list, tuple)) or not all(
            isinstance(n, str) for n in label_names):
        raise ValueError(f"label_names must be a list of strings, got {label_names!r:.80}")
    if len(label_names) != (num_classes or 0):
        raise ValueError(f"label_names lists {len(label_names)} names but num_classes="
                         f"{num_classes}")
