"""DINO: self-distillation with no labels (Caron et al. 2021, "Emerging Properties
in Self-Supervised Vision Transformers").

A student network learns to match the output distribution of a teacher
network of the same architecture on different crops of one image. The teacher
gets no gradient: it is an exponential moving average (EMA) of the student.
Collapse is avoided by *centring* (subtract a running mean of the teacher's
outputs) and *sharpening* (a low teacher softmax temperature).

Training schedules need the run length: ``steps_per_epoch`` and
``total_steps`` are config values (defaults: ImageNet at batch 1024 for 100
epochs, the paper's default run). Set them for your run, e.g.
``DINO.from_preset("dino_vit_small_patch16", steps_per_epoch=..., total_steps=...)``.
"""

import itertools
import math
from typing import ClassVar

import keras
import numpy as np
from keras import layers, ops

from keras_zoo import presets
from keras_zoo.backend import (
    all_reduce,
    is_tf_dataset,
    num_replicas,
    stateful_step,
    value_and_gradients,
)
from keras_zoo.backend import assign_all as _assign_all
from keras_zoo.backend import snapshot as _snapshot
from keras_zoo.data.multicrop import MultiCrop
from keras_zoo.layers.embeddings import LearnedPositionEmbedding, PatchEmbedding
from keras_zoo.models.base import ZooModel
from keras_zoo.preprocessing import IMAGENET
from keras_zoo.presets import register_family, register_preset


@keras.saving.register_keras_serializable(package="keras_zoo")
class DINOHead(layers.Layer):
    """DINO's projection head: MLP -> L2 normalisation -> weight-normalised linear.

    3-layer MLP (hidden 2048, GELU) down to a 256-d bottleneck, L2-normalised,
    then a bias-free linear layer to ``out_dim`` = 65,536 "prototypes" whose
    weight is weight-normalised (w = g * v / ||v||, one g per output unit).
    ``norm_last_layer=True`` (default) fixes g at 1, which the paper finds
    stabilises training; ``False`` lets g learn (the ViT-S/16 best recipe).
    With the defaults and a 384-d input (ViT-S) the head has 22,286,592
    trainable parameters.

    Initialisation as ``DINOHead.__init__`` (facebookresearch/dino
    ``vision_transformer.py``): the MLP's linears N(0, 0.02) (``trunc_normal_``
    with a +-2 cut-off, 100 std away) with zero biases; ``apply(_init_weights)``
    runs before the last layer exists, so v keeps torch's ``nn.Linear`` default
    U(+-1/sqrt(bottleneck_dim)) -- its scale sets how fast Adam turns the
    weight-normalised directions. The L2 normalisation and the last layer
    compute in float32 under any dtype policy (a softmax at temperature 0.04
    over 65,536 logits needs their mantissa); the output is float32.
    """

    def __init__(self, out_dim=65536, hidden_dim=2048, bottleneck_dim=256, num_layers=3,
                 norm_last_layer=True, **kwargs):
        super().__init__(**kwargs)
        if num_layers < 1:
            raise ValueError(f"DINOHead needs num_layers >= 1, got {num_layers}")
        self.out_dim = out_dim
        self.hidden_dim = hidden_dim
        self.bottleneck_dim = bottleneck_dim
        self.num_layers = num_layers
        self.norm_last_layer = norm_last_layer
        widths = [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        self.mlp = [layers.Dense(w, activation="gelu" if i < num_layers - 1 else None,
                                 kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
                                 bias_initializer="zeros", dtype=self.dtype_policy,
                                 name=f"mlp_{i}")
                    for i, w in enumerate(widths)]

    def build(self, input_shape):
        shape = input_shape
        for dense in self.mlp:
            dense.build(shape)
            shape = dense.compute_output_shape(shape)
        # PyTorch's weight_norm names: direction v and magnitude g. autocast=False:
        # the layer reads them in float32 even under a mixed policy.
        bound = 1.0 / math.sqrt(self.bottleneck_dim)
        self.weight_v = self.add_weight(
            shape=(self.bottleneck_dim, self.out_dim), name="weight_v", autocast=False,
            initializer=keras.initializers.RandomUniform(-bound, bound))
        self.weight_g = self.add_weight(
            shape=(self.out_dim,), name="weight_g", initializer="ones", autocast=False,
            trainable=not self.norm_last_layer)

    @property
    def last_layer_weights(self):
        """The weight-normalised layer's variables (frozen in the first epoch)."""
        return [self.weight_v, self.weight_g]

    def call(self, x):
        for dense in self.mlp:
            x = dense(x)
        x = _l2_normalize(ops.cast(x, "float32"), axis=-1)
        v = ops.convert_to_tensor(self.weight_v, "float32")
        w = ops.convert_to_tensor(self.weight_g, "float32") * v / ops.sqrt(
            ops.sum(ops.square(v), axis=0, keepdims=True))
        return ops.matmul(x, w)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.out_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(out_dim=self.out_dim, hidden_dim=self.hidden_dim,
                      bottleneck_dim=self.bottleneck_dim, num_layers=self.num_layers,
                      norm_last_layer=self.norm_last_layer)
        return config


def _l2_normalize(x, axis=-1, epsilon=1e-12):
    # F.normalize's rule: divide by max(||x||, eps).
    norm = ops.sqrt(ops.sum(ops.square(x), axis=axis, keepdims=True))
    return x / ops.maximum(norm, epsilon)


@keras.saving.register_keras_serializable(package="keras_zoo")
class Centering(layers.Layer):
    """The teacher's centring: subtracts a running mean ``center`` of its outputs.

    ``center <- momentum * center + (1 - momentum) * batch mean`` (momentum
    0.9), updated by ``DINO.train_step`` after the loss; the batch mean is
    taken over the global batch (all replicas).
    """

    def __init__(self, momentum=0.9, **kwargs):
        super().__init__(**kwargs)
        self.momentum = momentum

    def build(self, input_shape):
        self.center = self.add_weight(shape=(1, input_shape[-1]), name="center",
                                      initializer="zeros", trainable=False)

    def call(self, x):
        return x - ops.cast(self.center, x.dtype)

    def updated_center(self, batch_mean):
        return self.momentum * self.center + (1.0 - self.momentum) * batch_mean

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum}


def dino_loss(student_logits, teacher_logits, num_views, student_temperature,
              teacher_temperature):
    """Cross-entropy H(teacher, student) averaged over (teacher view, student view)
    pairs of *different* views.

    student_logits: (num_views * B, K), view-major (all images of view 0, then
    view 1, ...); the first 2 views are the global ones. teacher_logits:
    (2 * B, K), already centred, for the 2 global views. Returns a scalar.
    """
    # float32 even under a bfloat16 policy: a softmax over 65,536 prototypes
    # at temperature 0.04 needs the mantissa.
    student_logits = ops.cast(student_logits, "float32")
    teacher_logits = ops.cast(teacher_logits, "float32")
    k = ops.shape(student_logits)[-1]
    student = ops.reshape(ops.log_softmax(student_logits / student_temperature, axis=-1),
                          (num_views, -1, k))
    teacher = ops.reshape(ops.softmax(teacher_logits / teacher_temperature, axis=-1),
                          (2, -1, k))
    teacher = ops.stop_gradient(teacher)
    batch = ops.cast(ops.shape(teacher)[1], student.dtype)
    # cross[i, j] = mean over images of -sum_k teacher_i * log student_j
    cross = -ops.einsum("ibk,jbk->ij", teacher, student) / batch
    different = 1.0 - ops.eye(2, num_views, dtype=cross.dtype)
    return ops.sum(cross * different) / ops.sum(different)


def teacher_momentum_at(step, total_steps, base=0.996):
    """Cosine schedule from ``base`` at step 0 to 1 at ``total_steps``."""
    progress = ops.minimum(ops.cast(step, "float32") / float(max(total_steps, 1)), 1.0)
    return 1.0 - (1.0 - base) * (ops.cos(math.pi * progress) + 1.0) / 2.0


def teacher_temperature_at(step, start, final, warmup_steps):
    """Linear warm-up from ``start`` to ``final`` over ``warmup_steps``, then ``final``."""
    if warmup_steps <= 0:
        return ops.convert_to_tensor(final, "float32")
    progress = ops.minimum(ops.cast(step, "float32") / float(warmup_steps), 1.0)
    return start + (final - start) * progress


def weight_decay_at(step, total_steps, start, end):
    """Cosine from ``start`` at step 0 towards ``end`` at ``total_steps``: the
    official ``utils.cosine_scheduler(weight_decay, weight_decay_end, ...)``,
    ``end + (start - end) / 2 * (1 + cos(pi * step / total_steps))``."""
    progress = ops.minimum(ops.cast(step, "float32") / float(max(total_steps, 1)), 1.0)
    return end + (start - end) * (ops.cos(math.pi * progress) + 1.0) / 2.0


def _dino_backbone(backbone):
    """``resolve_backbone`` plus DINO's defaults: a ViT initialised as DINO's
    ``vision_transformer.py`` does; stochastic depth is DINO's own setting."""
    family, config = resolve_backbone(backbone)
    rate = config.pop("drop_path_rate", 0.0)
    if rate:
        raise ValueError(
            f"set stochastic depth with DINO's drop_path_rate (the student's; the "
            f"teacher has none), not in the backbone config (got drop_path_rate={rate!r})")
    if "weight_init" in family.config_keys():
        config.setdefault("weight_init", "dino")
    return family, config


def resolve_backbone(backbone):
    """A preset name or ``{"family": ..., "config": {...}}`` -> (family class,
    config with ``num_classes=None``: DINO trains on the pooled features)."""
    if isinstance(backbone, str):
        entry = presets.get_preset(backbone)
        family, config = entry.family, dict(entry.config)
    elif isinstance(backbone, dict) and set(backbone) == {"family", "config"}:
        family, config = backbone["family"], dict(backbone["config"])
    else:
        raise ValueError(
            f"DINO backbone must be a preset name (e.g. 'vit_small_patch16_224') or "
            f"{{'family': 'ViT', 'config': {{...}}}}, got {backbone!r}")
    cls = presets.get_family(family)
    if "num_classes" in cls.config_keys():
        config["num_classes"] = None
    unknown = set(config) - set(cls.config_keys())
    if unknown:
        raise ValueError(f"{family} backbone has no option(s) {sorted(unknown)}; "
                         f"options: {sorted(cls.config_keys())}")
    return cls, config


def forward_at_size(backbone, images, training=False):
    """Runs a chain-shaped backbone (ViT, ResNet) on images of another size.

    The student sees local crops at a lower resolution than the global ones.
    Convolutions and pooling do not care; a learned position embedding is
    resampled to the new patch grid as the official code's
    ``interpolate_pos_encoding`` does (``dino_resample_matrix``: bicubic at
    its +0.1 scale, two constant matmuls, which XLA compiles).
    """
    x = images
    grid = None  # patches per side, from the image size: a dynamic batch hides it in x
    for layer in backbone.layers[1:]:  # [0] is the InputLayer
        if isinstance(layer, PatchEmbedding):
            grid = images.shape[1] // layer.patch_size
        if isinstance(layer, LearnedPositionEmbedding) and grid is not None and \
                grid * grid + layer.num_prefix_tokens != layer.embedding.shape[1]:
            x = x + ops.cast(_resample_positions(layer, grid), x.dtype)
        else:
            x = layer(x, training=training)
    return x


def dino_resample_matrix(old, new):
    """(new, old) weights of one axis of facebookresearch/dino's
    ``interpolate_pos_encoding``: ``F.interpolate(mode="bicubic",
    scale_factor=(new + 0.1) / old)``. torch samples output i at
    (i + 0.5) / scale - 0.5 (the +0.1, added against a floating-point
    off-by-one in the output size, also moves these points), with the cubic
    convolution kernel of A = -0.75 and indices clamped at the borders."""
    a = -0.75
    scale = (new + 0.1) / old
    weights = np.zeros((new, old))
    for i in range(new):
        source = (i + 0.5) / scale - 0.5
        left = math.floor(source)
        t = source - left
        taps = (((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
                ((a + 2) * t - (a + 3)) * t * t + 1,
                ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
                ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a)
        for k, w in enumerate(taps):
            weights[i, min(max(left - 1 + k, 0), old - 1)] += w
    return weights


def _resample_positions(layer, new):
    """The (1, P + g*g, D) table of ``layer`` on a ``new`` x ``new`` patch grid."""
    table = layer.embedding
    prefix = layer.num_prefix_tokens
    old = math.isqrt(table.shape[1] - prefix)
    grid = ops.reshape(table[:, prefix:], (old, old, table.shape[2]))
    weights = ops.convert_to_tensor(dino_resample_matrix(old, new).astype("float32"))
    weights = ops.cast(weights, grid.dtype)
    grid = ops.einsum("ij,jkd,lk->ild", weights, grid, weights)  # rows, then columns
    return ops.concatenate([table[:, :prefix], ops.reshape(grid, (1, new * new, -1))], axis=1)


def _is_chain(model):
    """True when every layer reads exactly the previous layer's output."""
    chain = model.layers
    try:
        return all(b.input is a.output for a, b in itertools.pairwise(chain))
    except (AttributeError, ValueError):
        return False


@register_family
@keras.saving.register_keras_serializable(package="keras_zoo")
class DINO(ZooModel):
    """Student and EMA teacher of one backbone, each with a ``DINOHead``.

    Calling the model on images of the global crop size returns
    ``{"student": ..., "teacher": ...}`` head outputs (the teacher's centred);
    ``serving_signatures()`` exports the teacher backbone, whose pooled
    features are what DINO is for (k-NN, linear probe, fine-tuning).

    Paper defaults: student temperature 0.1, teacher 0.04 (optional linear
    warm-up from ``warmup_teacher_temperature`` over
    ``warmup_teacher_temperature_epochs``), centre momentum 0.9, teacher
    momentum 0.996 -> 1 (cosine over ``total_steps``), last layer frozen for
    ``freeze_last_layer_epochs`` = 1, each weight's gradient clipped to norm
    3.0 (``clip_grad``; 0 disables), 2 global + 8 local crops, stochastic
    depth 0.1 in the student's blocks and none in the teacher's
    (``drop_path_rate``; backbones without it, e.g. ResNet, ignore it, as the
    official code passes it to ViTs only), the optimizer's weight decay
    following a cosine from its own value (0.04 in the paper) to
    ``weight_decay_end`` = 0.4 over ``total_steps`` (None: constant).
    ``augmentation``: None (the paper's photometric recipe) or a dict of
    ``MultiCrop`` arguments (flip/jitter/grayscale/blur/solarization
    probabilities) that replace it.

    As in ``main_dino.py``: the teacher runs in training mode (a BatchNorm
    backbone normalises the teacher's batch with its own batch statistics,
    and its running statistics are its own), and the EMA covers parameters
    only; the last layer's optimizer state starts when it is unfrozen (the
    official code sets its gradients to None, so AdamW neither moves it nor
    counts its steps; here Adam(W)'s bias correction for it counts from the
    unfreezing step).

    Args:
        backbone: preset name or ``{"family": "ViT", "config": {...}}``; its
            ``num_classes`` is forced to None (pooled features). A ViT gets
            ``weight_init="dino"`` (the DINO code's initialisation) unless the
            spec names one.
        teacher_backbone: None (the same as ``backbone``, the only valid choice)
            or an identical spec; a different one is an error.
        sync_batchnorm: BatchNorm layers of both backbones (a ResNet's) use
            the statistics of the global batch across replicas
            (``synchronized=True``), as ``main_dino.py`` converts them with
            ``nn.SyncBatchNorm.convert_sync_batchnorm``; one replica: no change.
    """

    MEDIAPIPE_TASKS: ClassVar[dict] = {"embedding": "image_embedder"}

    def __init__(self, backbone="vit_small_patch16_224", teacher_backbone=None,
                 out_dim=65536, hidden_dim=2048, bottleneck_dim=256, head_layers=3,
                 norm_last_layer=True, student_temperature=0.1, teacher_temperature=0.04,
                 warmup_teacher_temperature=0.04, warmup_teacher_temperature_epochs=0,
                 center_momentum=0.9, teacher_momentum=0.996, clip_grad=3.0,
                 freeze_last_layer_epochs=1, steps_per_epoch=1251, total_steps=125_100,
                 num_local_crops=8, local_crop_size=96, global_crops_scale=(0.4, 1.0),
                 local_crops_scale=(0.05, 0.4), augmentation=None, drop_path_rate=0.1,
                 weight_decay_end=0.4, sync_batchnorm=True, name="dino", **kwargs):
        family, config = _dino_backbone(backbone)
        if teacher_backbone is not None:
            t_family, t_config = _dino_backbone(teacher_backbone)
            if (t_family, t_config) != (family, config):
                diff = sorted(k for k in set(config) | set(t_config)
                              if config.get(k) != t_config.get(k))
                raise ValueError(
                    f"DINO's teacher is an EMA of the student, so both must share one "
                    f"backbone: student is {family.__name__} {config}, teacher is "
                    f"{t_family.__name__} {t_config} (they differ in "
                    f"{diff or 'family'}). Leave teacher_backbone=None.")
        for what, value in (("steps_per_epoch", steps_per_epoch),
                            ("total_steps", total_steps)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"DINO {what} must be a positive integer, got {value!r}")
        if isinstance(drop_path_rate, bool) or not isinstance(drop_path_rate, (int, float)) \
                or not 0 <= drop_path_rate < 1:
            raise ValueError(f"DINO drop_path_rate must be a number in [0, 1), got "
                             f"{drop_path_rate!r}")
        student_config = dict(config)
        if "drop_path_rate" in family.config_keys():
            # main_dino.py: the student with --drop_path_rate, the teacher without.
            student_config["drop_path_rate"] = drop_path_rate
            config["drop_path_rate"] = 0.0
        student_backbone = family(**student_config, name="student_backbone")
        teacher_backbone_model = family(**config, name="teacher_backbone")
        if sync_batchnorm:  # main_dino.py: nn.SyncBatchNorm.convert_sync_batchnorm
            for net in (student_backbone, teacher_backbone_model):
                for layer in net._flatten_layers(include_self=False):
                    if isinstance(layer, keras.layers.BatchNormalization):
                        layer.synchronized = True
        image_size = student_backbone.inputs[0].shape[1]
        if local_crop_size > image_size:
            raise ValueError(
                f"local_crop_size={local_crop_size} is larger than the backbone's "
                f"image size {image_size}; local crops must be smaller than global ones")
        if num_local_crops and local_crop_size != image_size and not _is_chain(student_backbone):
            raise ValueError(
                f"{family.__name__} is not a chain of layers, so DINO cannot run it on "
                f"{local_crop_size}px local crops; set local_crop_size={image_size}")
        try:  # validates the crop settings now, not mid-pipeline
            MultiCrop(image_size, local_crop_size, num_local_crops, global_crops_scale,
                      local_crops_scale, **(augmentation or {}))
        except TypeError as e:
            raise ValueError(f"DINO augmentation={augmentation!r}: {e}; its keys are "
                             f"MultiCrop's photometric arguments") from None
        head = {"out_dim": out_dim, "hidden_dim": hidden_dim, "bottleneck_dim": bottleneck_dim,
                "num_layers": head_layers, "norm_last_layer": norm_last_layer}
        student_head = DINOHead(**head, name="student_head")
        teacher_head = DINOHead(**head, name="teacher_head")
        images = keras.Input(student_backbone.inputs[0].shape[1:], name="images")
        outputs = {
            "student": student_head(student_backbone(images)),
            # float32 under any policy: the centre is a running mean of small updates.
            "teacher": Centering(center_momentum, name="centering", dtype="float32")(
                teacher_head(teacher_backbone_model(images))),
        }
        super().__init__(inputs=images, outputs=outputs, name=name, **kwargs)
        self._freeze_teacher()
        self._dino_built = True
        # Both networks start from the same weights (the official code loads
        # the student's state dict into the teacher).
        for t, s in zip(self.teacher_weights, self.student_weights):
            t.assign(ops.copy(s))  # a copy: JAX must not see one buffer in two variables
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @classmethod
    def from_backbone(cls, backbone, **kwargs):
        """A DINO whose student and teacher both start from ``backbone``'s
        weights (a pre-trained ViT, e.g. ``hf:``/``hf://`` facebook/dino-vit*,
        whose checkpoints hold the backbone only); the heads are new. Its
        config (sizes, ``preprocessing``) becomes the backbone spec."""
        config = dict(backbone.get_zoo_config())
        if "num_classes" in config:
            config["num_classes"] = None
        config.pop("label_names", None)
        model = cls(backbone={"family": type(backbone).__name__, "config": config}, **kwargs)
        weights = backbone.get_weights()
        for part in (model.student_backbone, model.teacher_backbone):
            if [w.shape for w in part.get_weights()] != [w.shape for w in weights]:
                raise ValueError(f"the backbone's weights do not fit DINO's {part.name}")
            part.set_weights(weights)
        return model

    # ---- the pieces, by name (attributes would be tracked twice by Keras)

    @property
    def student_backbone(self):
        return self.get_layer("student_backbone")

    @property
    def teacher_backbone(self):
        return self.get_layer("teacher_backbone")

    @property
    def student_head(self):
        return self.get_layer("student_head")

    @property
    def teacher_head(self):
        return self.get_layer("teacher_head")

    @property
    def centering(self):
        return self.get_layer("centering")

    def _freeze_teacher(self):
        # The teacher learns only through the EMA; trainable=False keeps it out
        # of trainable_weights (the optimizer, parameter counts).
        self.teacher_backbone.trainable = False
        self.teacher_head.trainable = False
        # But Keras runs a BatchNormalization layer on batch statistics only
        # when the *layer* is trainable, and main_dino.py's teacher normalises
        # with its batch's statistics: its BN layers stay trainable, with their
        # scale and offset marked non-trainable (still out of the optimizer).
        for layer in self.teacher_backbone._flatten_layers(include_self=False):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = True
                for variable in layer.trainable_weights:
                    variable.trainable = False

    @property
    def trainable(self):
        return keras.Model.trainable.fget(self)

    @trainable.setter
    def trainable(self, value):
        keras.Model.trainable.fset(self, value)
        if value and getattr(self, "_dino_built", False):
            self._freeze_teacher()

    @property
    def student_weights(self):
        return self.student_backbone.weights + self.student_head.weights

    @property
    def teacher_weights(self):
        return self.teacher_backbone.weights + self.teacher_head.weights

    @property
    def metrics(self):
        return [self.loss_tracker]

    # ---- hooks of the generic trainer and exporter

    def compile(self, optimizer="rmsprop", **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        # The start of the weight-decay schedule: train_step sets the
        # optimizer's value each step and puts this one back.
        vars(self)["_weight_decay_base"] = getattr(self.optimizer, "weight_decay", None)

    def compile_defaults(self):
        # metrics=None, not []: an empty CompileMetrics is "unbuilt", and under
        # a distribution strategy Keras then builds it by calling the model on
        # the training batch, which here is a dict of views, not images.
        return {"loss": None, "metrics": None}

    def multicrop(self, seed=None):
        """The ``MultiCrop`` this model's config describes."""
        c = self.get_zoo_config()
        return MultiCrop(self.inputs[0].shape[1], c["local_crop_size"], c["num_local_crops"],
                         c["global_crops_scale"], c["local_crops_scale"], seed=seed,
                         num_channels=self.inputs[0].shape[-1], **(c["augmentation"] or {}))

    def train_input_transform(self):
        """Each example ``(image, label)``, at its own size, ->
        ``({"global_crops", "local_crops"}, label)``, before batching."""
        return self.multicrop()

    def serving_signatures(self):
        return {"backbone": self.teacher_backbone}

    @property
    def preprocessing(self):
        """The backbone's (its config's ``preprocessing``): both networks
        normalise their [0, 1] crops in their own first layer."""
        return self.teacher_backbone.preprocessing

    def embedding_kinds(self):
        return self.teacher_backbone.embedding_kinds()

    def embedding_model(self, kind=None):
        """The teacher backbone's embedding (DINO evaluates the teacher: k-NN,
        linear probe), by the backbone family's own hook: a ViT's CLS token
        by default, ``kind="mean"`` its patch-token mean."""
        return self.teacher_backbone.embedding_model(kind)

    def fit(self, x=None, *args, **kwargs):
        if is_tf_dataset(x) and (
                int(x.cardinality()) == 0 or not any(True for _ in x.take(1))):
            raise ValueError("the dataset given to DINO.fit is empty: it yields no "
                             "batch (fewer images than one batch with drop_remainder?)")
        return super().fit(x, *args, **kwargs)

    # ---- training

    def _views(self, x):
        if not isinstance(x, dict) or "global_crops" not in x:
            got = {k: tuple(v.shape) for k, v in x.items()} if isinstance(x, dict) \
                else getattr(x, "shape", type(x).__name__)
            raise ValueError(
                f"DINO trains on multi-crop views {{'global_crops': (B, 2, H, W, C), "
                f"'local_crops': (B, N, h, w, C)}}, got {got}. Map each example with "
                f"model.train_input_transform() before batching (experiments.train "
                f"does this).")

        c = self.get_zoo_config()
        size, channels = self.inputs[0].shape[1], self.inputs[0].shape[3]
        local = x.get("local_crops") if c["num_local_crops"] else None
        expected = {"global_crops": (2, size), "local_crops": (c["num_local_crops"],
                                                               c["local_crop_size"])}

        def view_major(key):  # (B, V, H, W, C) -> (V * B, H, W, C)
            views, side = expected[key]
            want = (None, views, side, side, channels)
            got = tuple(x[key].shape)
            if len(got) != 5 or any(None not in (g, w) and g != w for g, w in zip(got, want)):
                raise ValueError(
                    f"DINO {key} must have shape (B, {views}, {side}, {side}, {channels}) "
                    f"for this config, got {got}")
            crops = ops.transpose(x[key], (1, 0, 2, 3, 4))
            # Sizes from the config, not the tensor: a retraced step (reduce_retracing,
            # steps_per_execution loops) may have lost the static dims, and the
            # position-table resampling needs them.
            return ops.reshape(crops, (-1, side, side, channels))

        global_views = view_major("global_crops")
        local_views = view_major("local_crops") if local is not None else None
        num_views = 2 + (c["num_local_crops"] if local is not None else 0)
        return global_views, local_views, num_views

    def _student(self, global_views, local_views, training):
        out = [self.student_head(self.student_backbone(global_views, training=training),
                                 training=training)]
        if local_views is not None:
            features = forward_at_size(self.student_backbone, local_views, training)
            out.append(self.student_head(features, training=training))
        return ops.concatenate(out, axis=0)

    def _teacher(self, global_views, training):
        # main_dino.py never puts the teacher in eval mode: in training its
        # BatchNorm layers (a ResNet backbone) use the batch's statistics.
        return ops.stop_gradient(ops.cast(self.teacher_head(
            self.teacher_backbone(global_views, training=training), training=training),
            "float32"))

    @property
    def ema_pairs(self):
        """(teacher, student) variables the EMA updates: the parameters. Running
        statistics of BatchNorm are buffers in torch, which the official EMA
        (``zip(student.parameters(), teacher.parameters())``) leaves alone: the
        teacher's are updated by its own forward passes."""
        return [(t, s) for t, s in zip(self.teacher_weights, self.student_weights)
                if s.name not in ("moving_mean", "moving_variance")]

    def _temperature(self, step):
        c = self.get_zoo_config()
        return teacher_temperature_at(
            step, c["warmup_teacher_temperature"], c["teacher_temperature"],
            c["warmup_teacher_temperature_epochs"] * c["steps_per_epoch"])

    def train_step(self, *args):
        # TF/torch: train_step(data); JAX: train_step(state, data) -> (logs, state).
        return stateful_step(self, self._train_step, *args)

    def _train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        c = self.get_zoo_config()
        global_views, local_views, num_views = self._views(x)
        # A snapshot: the schedules use the step this update belongs to, not
        # the counter the optimizer increments below.
        step = _snapshot(self.optimizer.iterations)
        teacher = self._teacher(global_views, training=True)
        replicas = num_replicas()
        student_vars = self.student_backbone.trainable_weights + \
            self.student_head.trainable_weights

        def objective():
            student = self._student(global_views, local_views, training=True)
            loss = dino_loss(student, self.centering(teacher), num_views,
                             c["student_temperature"], self._temperature(step))
            return loss / replicas, loss

        (_, loss), grads = value_and_gradients(objective, student_vars)
        # The official code clips each weight's gradient after DDP has averaged
        # it, so clip the global gradient: sum over replicas first, clip, then
        # hand the optimizer 1/R of it (its own all-reduce sums it back).
        grads = all_reduce("sum", grads)
        if c["clip_grad"]:
            grads = [_clip_like_dino(g, c["clip_grad"]) for g in grads]
        unfreeze = c["freeze_last_layer_epochs"] * c["steps_per_epoch"]
        frozen = ops.cast(step < unfreeze, "float32")
        last = {id(v) for v in self.student_head.last_layer_weights}
        grads = [g * (1.0 - frozen) if id(v) in last else g for g, v in zip(grads, student_vars)]
        grads = [g / replicas for g in grads]
        last_vars = [v for v in student_vars if id(v) in last]
        before = [_snapshot(v) for v in last_vars]
        learning_rate = _snapshot(self.optimizer.learning_rate)
        weight_decay = base_decay = vars(self).get("_weight_decay_base",
                                                   self.optimizer.weight_decay)
        if base_decay and c["weight_decay_end"] is not None:
            # main_dino.py sets param_group["weight_decay"] = wd_schedule[it].
            weight_decay = weight_decay_at(step, c["total_steps"], base_decay,
                                           c["weight_decay_end"])
        with _weight_decay(self.optimizer, weight_decay, base_decay):
            self.optimizer.apply(grads, student_vars)
        restart = _adam_restart_factor(self.optimizer, step, unfreeze)
        updated = []
        for b, v in zip(before, last_vars):
            value = v.value if hasattr(v, "value") else v
            if restart is not None:
                # Keras' Adam(W) step is (decoupled decay) then alpha_t * m / (sqrt(v) + eps)
                # with alpha_t from the *global* step t; the layer's moments are
                # fresh (zero gradients while frozen), so rescale the Adam part to
                # the alpha of a state started at `unfreeze`.
                decays = bool(base_decay) and getattr(
                    self.optimizer, "_use_weight_decay", lambda _: True)(v)
                decayed = b - b * ops.cast(weight_decay if decays else 0.0, b.dtype) * \
                    ops.cast(learning_rate, b.dtype)
                value = decayed + restart * (value - decayed)
            # A zero gradient still lets AdamW's weight decay move the weight;
            # the paper's frozen last layer does not move at all.
            updated.append(frozen * b + (1.0 - frozen) * value)
        _assign_all(last_vars, updated)
        momentum = teacher_momentum_at(step, c["total_steps"], c["teacher_momentum"])
        pairs = self.ema_pairs
        _assign_all([t for t, _ in pairs], [momentum * t + (1.0 - momentum) * s
                                            for t, s in pairs])
        batch_mean = all_reduce("mean", ops.mean(teacher, axis=0, keepdims=True))
        _assign_all([self.centering.center], [self.centering.updated_center(batch_mean)])
        self.loss_tracker.update_state(loss)
        logs = {"loss": self.loss_tracker.result(), "teacher_momentum": momentum,
                "teacher_temperature": self._temperature(step)}
        if weight_decay is not None:
            logs["weight_decay"] = ops.convert_to_tensor(weight_decay, "float32")
        return logs

    def test_step(self, *args):
        """The DINO loss on multi-crop views without updating anything; on
        plain images, the student's cross-entropy to the teacher on the same
        view (how far the student is from its teacher)."""
        return stateful_step(self, self._test_step, *args)

    def _test_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        c = self.get_zoo_config()
        step = self.optimizer.iterations if self.optimizer is not None else 0
        if isinstance(x, dict):
            global_views, local_views, num_views = self._views(x)
            student = self._student(global_views, local_views, training=False)
            loss = dino_loss(student, self.centering(self._teacher(global_views, False)),
                             num_views, c["student_temperature"], self._temperature(step))
        else:
            student = self._student(x, None, training=False)
            teacher = ops.softmax(self.centering(self._teacher(x, False)) /
                                  self._temperature(step))
            loss = -ops.mean(ops.sum(teacher * ops.log_softmax(
                student / c["student_temperature"]), axis=-1))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}


class _weight_decay:
    """Sets ``optimizer.weight_decay`` to this step's value while it applies
    the gradients (Keras reads it then) and puts ``configured`` back after.
    Not the value found on entry: under MirroredStrategy the replica threads
    interleave, and a later one would find (and restore) an earlier one's tensor."""

    def __init__(self, optimizer, value, configured):
        self.optimizer, self.value, self.configured = optimizer, value, configured

    def __enter__(self):
        self.optimizer.weight_decay = self.value

    def __exit__(self, *exc):
        self.optimizer.weight_decay = self.configured


def _adam_restart_factor(optimizer, step, start):
    """For Keras' Adam/AdamW (and keras_zoo's): the ratio of the step size
    ``sqrt(1 - b2^k) / (1 - b1^k)`` of an Adam state started at global step
    ``start`` (k = step + 1 - start, at least 1) to the one Keras uses, with
    t = step + 1. None for optimizers without Adam's bias correction."""
    if not isinstance(optimizer, keras.optimizers.Adam) or optimizer.amsgrad:
        return None
    t = ops.cast(step, "float32") + 1.0
    k = ops.maximum(t - float(start), 1.0)
    b1, b2 = float(optimizer.beta_1), float(optimizer.beta_2)

    def alpha(n):
        return ops.sqrt(1.0 - ops.power(b2, n)) / (1.0 - ops.power(b1, n))

    return alpha(k) / alpha(t)


def _clip_like_dino(grad, max_norm):
    # utils.clip_gradients: scale by max_norm / (norm + 1e-6) when that is < 1.
    norm = ops.sqrt(ops.sum(ops.square(grad)))
    return grad * ops.minimum(max_norm / (norm + 1e-6), 1.0)


register_preset(
    "dino_vit_small_patch16", "DINO",
    {"backbone": {"family": "ViT", "config": {
        "image_size": 224, "patch_size": 16, "num_channels": 3, "hidden_dim": 384,
        "num_layers": 12, "num_heads": 6, "mlp_dim": 1536, "num_classes": None,
        # main_dino.py's DataAugmentationDINO ends in Normalize(ImageNet mean, std);
        # eval_knn.py / eval_linear.py: Resize(256, bicubic), CenterCrop(224), same Normalize.
        "preprocessing": {**IMAGENET, "resize": "shorter_side", "resize_size": 256,
                          "crop": "center", "crop_rounding": "round",
                          "interpolation": "bicubic",
                          "source": "facebookresearch/dino (ImageNet mean/std)"}}}},
    "DINO ViT-S/16: 224 px global / 96 px local crops, head 2048-2048-256 -> 65,536")
register_preset(
    "dino_vit_tiny_digits", "DINO",
    {"backbone": {"family": "ViT", "config": {
        "image_size": 32, "patch_size": 8, "num_channels": 1, "hidden_dim": 64,
        "num_layers": 2, "num_heads": 4, "mlp_dim": 128, "num_classes": None}},
     "out_dim": 1024, "hidden_dim": 256, "bottleneck_dim": 64, "num_local_crops": 0,
     "local_crop_size": 24, "global_crops_scale": [0.6, 1.0],
     "local_crops_scale": [0.3, 0.6], "steps_per_epoch": 22, "total_steps": 22 * 150,
     # 8x8 digits upsampled to 32 px survive little of ImageNet's recipe: with
     # 16 px local crops (2x2 patches), flips, blur and solarization the head
     # collapses to a uniform output on this data. Milder global crops, no flip
     # (a mirrored digit is another symbol), brightness/contrast jitter only,
     # and no local crops: measured over 150 epochs, 2 local crops of 24 px
     # cost 5 points of k-NN accuracy here (num_local_crops=2 turns them on).
     "augmentation": {"flip_probability": 0.0, "blur_probability": [0.0, 0.0, 0.0],
                      "solarization_probability": 0.0}},
    "DINO on a 2-block ViT for 32x32x1 digits (2 global crops, 1,024 prototypes)",
    tiny=True)
