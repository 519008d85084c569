"""Weight initialisation of the transformer families, as each reference code does it.

A transformer's initialisation is not one rule: each official code base has its
own, and the choice of std differs between them by up to 2x. A layer takes a
``weight_init`` *scheme* name and asks ``initializer(scheme, role, ...)`` for a
fresh Keras initializer per weight:

- ``"keras"``: Keras' defaults (glorot_uniform kernels over the fused matrix,
  zero biases, zero [CLS]). What the layers did before the schemes existed;
  the default of every layer, so families that do not choose stay as they were.
- ``"big_vision"``: the ViT paper's code (google-research/vision_transformer
  ``models_vit.py`` and big_vision ``models/vit.py``): the patch embedding is a
  flax ``nn.Conv`` with its default lecun_normal (fan_in = p*p*C); q, k, v and
  the output projection are ``MultiHeadDotProductAttention`` DenseGenerals with
  xavier_uniform, fans of each (D, D) matrix on its own; MLP kernels
  xavier_uniform with N(0, 1e-6) biases (``MlpBlock``); [CLS] zeros.
- ``"mae"``: facebookresearch/mae ``models_mae.py``
  ``MaskedAutoencoderViT.initialize_weights``: the patch kernel xavier_uniform
  on its (p*p*C, D) matrix view, every ``nn.Linear`` xavier_uniform on its own
  weight (timm's fused qkv ``Linear(D, 3D)`` with fans D and 3D), zero
  biases, [CLS] N(0, 0.02). The conv bias is left at torch's default
  U(+-1/sqrt(fan_in)), which ``initialize_weights`` does not touch.
- ``"dino"``: facebookresearch/dino ``vision_transformer.py``
  ``VisionTransformer._init_weights`` (timm's): every ``nn.Linear``
  trunc_normal(std=0.02) -- its cut-off is at +-2 absolute, i.e. 100 std, so
  it is N(0, 0.02), not Keras' TruncatedNormal (cut at 2 std: std 0.0176) --
  zero biases, [CLS] N(0, 0.02); the ``PatchEmbed`` conv keeps torch's default
  ``kaiming_uniform_(a=sqrt(5))``: U(+-1/sqrt(fan_in)) for kernel and bias.

- ``"tensor2tensor"``: tensorflow/tensor2tensor's Transformer
  (``transformer_base``: ``initializer="uniform_unit_scaling"``,
  ``initializer_gain=1.0``, i.e. ``variance_scaling(1.0, "fan_avg",
  "uniform")`` on every variable): q, k, v and the output transform are
  separate (D, D) dense layers in ``common_attention.compute_qkv``, so a fused
  kernel gets the fans of each (D, D) matrix (std D^-0.5, not the fused
  matrix's glorot, which is 1/sqrt(2) of it for qkv and sqrt(2/3) for kv);
  feed-forward kernels glorot over their own matrix; biases zero.

Roles: ``patch_kernel``, ``patch_bias``, ``class_token``, ``attention_kernel``,
``attention_bias``, ``mlp_kernel``, ``mlp_bias``. ``parts`` says how many
matrices a fused kernel holds (3 for qkv): ``"big_vision"`` gives each its own
fans, the others treat the fused kernel as one matrix, as their code does.
"""

import math
import random

import keras

SCHEMES = ("keras", "big_vision", "mae", "dino", "tensor2tensor")


@keras.saving.register_keras_serializable(package="keras_zoo")
class MatrixVarianceScaling(keras.initializers.VarianceScaling):
    """``VarianceScaling`` with the fans of the kernel seen as a matrix.

    fan_in = prod(shape[:-1]), fan_out = shape[-1] / parts. A conv kernel
    (p, p, C, D) then counts as the (p*p*C, D) matrix a patch embedding is
    (Keras' own fans count p*p*D as fan_out, ~p*p times too large); a fused
    (D, parts * D) kernel as ``parts`` separate (D, D) matrices.
    """

    def __init__(self, scale=1.0, mode="fan_avg", distribution="uniform", parts=1,
                 seed=None):
        super().__init__(scale=scale, mode=mode, distribution=distribution, seed=seed)
        self.parts = parts

    def __call__(self, shape, dtype=None):
        fan_in = math.prod(shape[:-1])
        fan_out = shape[-1] / self.parts
        fan = {"fan_in": fan_in, "fan_out": fan_out}.get(self.mode, (fan_in + fan_out) / 2)
        scale = self.scale / max(1.0, fan)
        if self.distribution == "truncated_normal":
            stddev = math.sqrt(scale) / 0.87962566103423978  # the std after the 2-std cut
            return keras.random.truncated_normal(shape, 0.0, stddev, dtype=dtype,
                                                 seed=self.seed)
        if self.distribution == "untruncated_normal":
            return keras.random.normal(shape, 0.0, math.sqrt(scale), dtype=dtype,
                                       seed=self.seed)
        limit = math.sqrt(3.0 * scale)
        return keras.random.uniform(shape, -limit, limit, dtype=dtype, seed=self.seed)

    def get_config(self):
        return {**super().get_config(), "parts": self.parts}


@keras.saving.register_keras_serializable(package="keras_zoo")
class AbsoluteTruncatedNormal(keras.initializers.Initializer):
    """timm's / torch's ``trunc_normal_(std, a=-2, b=2)``: N(mean, std^2) cut
    at the ABSOLUTE bounds [a, b], by the same inverse-CDF draw (uniform
    between the CDFs of the bounds, then erfinv). For std=0.02 the cut is 100
    std away, so this is N(0, 0.02) -- Keras' ``TruncatedNormal(stddev=0.02)``
    cuts at 2 std instead (std 0.0176). A fresh seed per object: make one per
    weight (``keras.utils.set_random_seed`` makes the draws reproducible)."""

    def __init__(self, stddev=0.02, mean=0.0, a=-2.0, b=2.0, seed=None):
        if not stddev > 0 or not a < b:
            raise ValueError(f"AbsoluteTruncatedNormal needs stddev > 0 and a < b, got "
                             f"stddev={stddev}, a={a}, b={b}")
        self.stddev, self.mean, self.a, self.b = stddev, mean, a, b
        self._init_seed = seed
        # as Keras' make_default_seed: Python's random, seeded by set_random_seed
        self.seed = random.randint(1, 10**9) if seed is None else seed

    def __call__(self, shape, dtype=None):
        def cdf(x):
            return (1.0 + math.erf((x - self.mean) / self.stddev / math.sqrt(2.0))) / 2.0

        low, high = 2.0 * cdf(self.a) - 1.0, 2.0 * cdf(self.b) - 1.0
        u = keras.random.uniform(shape, low, high, dtype="float32", seed=self.seed)
        x = keras.ops.erfinv(u) * (self.stddev * math.sqrt(2.0)) + self.mean
        return keras.ops.cast(keras.ops.clip(x, self.a, self.b), dtype or "float32")

    def get_config(self):
        return {"stddev": self.stddev, "mean": self.mean, "a": self.a, "b": self.b,
                "seed": self._init_seed}


def _torch_default(fan_in):
    # nn.Linear / nn.Conv2d reset_parameters: kaiming_uniform_(a=sqrt(5)) on the
    # weight and U(+-1/sqrt(fan_in)) on the bias: both bound 1/sqrt(fan_in).
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    return keras.initializers.RandomUniform(-bound, bound)


def initializer(scheme, role, fan_in=None, parts=1):
    """A new Keras initializer for weight ``role`` under ``scheme`` (a fresh
    object each call: an unseeded Keras initializer object reused for two
    weights would give them the same values). ``fan_in``: the inputs per
    output unit (needed by the torch-default roles)."""
    if scheme not in SCHEMES:
        raise ValueError(f"weight_init must be one of {SCHEMES}, got {scheme!r}")
    if scheme == "keras":
        return keras.initializers.get(
            {"patch_kernel": "glorot_uniform", "attention_kernel": "glorot_uniform",
             "mlp_kernel": "glorot_uniform"}.get(role, "zeros"))
    if scheme == "tensor2tensor":
        if role == "attention_kernel":
            return MatrixVarianceScaling(1.0, "fan_avg", "uniform", parts=parts)
        if role == "mlp_kernel":
            return keras.initializers.GlorotUniform()
        return keras.initializers.Zeros()
    if scheme == "big_vision":
        if role == "patch_kernel":
            return keras.initializers.LecunNormal()
        if role == "attention_kernel":
            return MatrixVarianceScaling(1.0, "fan_avg", "uniform", parts=parts)
        if role == "mlp_kernel":
            return keras.initializers.GlorotUniform()
        if role == "mlp_bias":
            return keras.initializers.RandomNormal(stddev=1e-6)
        return keras.initializers.Zeros()
    if role == "patch_kernel":
        if scheme == "mae":
            return MatrixVarianceScaling(1.0, "fan_avg", "uniform")
        return _torch_default(fan_in)
    if role == "patch_bias":
        return _torch_default(fan_in)
    if role == "class_token":
        return keras.initializers.RandomNormal(stddev=0.02)
    if role in ("attention_kernel", "mlp_kernel"):
        if scheme == "mae":
            return keras.initializers.GlorotUniform()
        return keras.initializers.RandomNormal(stddev=0.02)
    return keras.initializers.Zeros()
