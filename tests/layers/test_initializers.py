"""Initial weights of ViT, MAE and DINO against their official code's numbers.

Sample stds of ~10^5 draws are within ~1 % of the population std, so each
check below tells the reference's std from the next candidate (which differ
by >= 10 %, up to 11x for the patch embedding).
"""

import math

import keras
import numpy as np
import pytest

import keras_zoo
from keras_zoo.layers.attention import MultiHeadAttention
from keras_zoo.layers.embeddings import ClassToken, PatchEmbedding
from keras_zoo.layers.feedforward import FeedForward
from keras_zoo.layers.initializers import MatrixVarianceScaling, initializer
from keras_zoo.models.dino import DINO, DINOHead


def _std(weight):
    return float(np.std(keras.ops.convert_to_numpy(weight)))


def _bound(weight):
    return float(np.abs(keras.ops.convert_to_numpy(weight)).max())


def _patch(scheme, patch=16, channels=3, dim=384):
    layer = PatchEmbedding(patch, dim, weight_init=scheme)
    layer.build((None, 224, 224, channels))
    return layer.projection


def test_patch_embedding_kernel_uses_the_patch_matrix_fans():
    fan_in = 16 * 16 * 3
    # big_vision / google-research ViT: flax nn.Conv's lecun_normal: std 1/sqrt(768).
    assert _std(_patch("big_vision").kernel) == pytest.approx(1 / math.sqrt(fan_in), rel=0.03)
    # MAE: xavier_uniform on the (p*p*C, D) view: bound sqrt(6 / (768 + 384)).
    mae = _patch("mae").kernel
    assert _bound(mae) == pytest.approx(math.sqrt(6 / (fan_in + 384)), rel=0.01)
    assert _std(mae) == pytest.approx(math.sqrt(2 / (fan_in + 384)), rel=0.03)
    # DINO: torch's Conv2d default, U(+-1/sqrt(fan_in)) for kernel and bias.
    dino = _patch("dino")
    assert _bound(dino.kernel) == pytest.approx(1 / math.sqrt(fan_in), rel=0.01)
    assert _std(dino.kernel) == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.03)
    assert 0 < _bound(dino.bias) <= 1 / math.sqrt(fan_in)
    # Keras' own conv fans (768 in, 16*16*384 out) would give std 0.0032.
    assert _std(_patch("keras").kernel) == pytest.approx(
        math.sqrt(2 / (fan_in + 16 * 16 * 384)), rel=0.05)


def test_fused_qkv_kernel_has_per_matrix_fans_in_big_vision():
    def attention(scheme):
        layer = MultiHeadAttention(6, weight_init=scheme)
        layer.build((None, 197, 384))
        return layer

    d = 384
    bv = attention("big_vision")
    # q, k and v each a (D, D) xavier matrix: std sqrt(2 / (D + D)).
    assert _std(bv.qkv.kernel) == pytest.approx(math.sqrt(2 / (2 * d)), rel=0.02)
    assert _bound(bv.qkv.kernel) == pytest.approx(math.sqrt(6 / (2 * d)), rel=0.01)
    assert _std(bv.out.kernel) == pytest.approx(math.sqrt(2 / (2 * d)), rel=0.02)
    # MAE's nn.Linear(D, 3D) is one matrix to xavier_uniform_: fans D and 3D.
    assert _std(attention("mae").qkv.kernel) == pytest.approx(math.sqrt(2 / (4 * d)), rel=0.02)
    # DINO / timm: trunc_normal_(std=.02) cut at +-2 absolute: N(0, 0.02).
    dino = attention("dino")
    assert _std(dino.qkv.kernel) == pytest.approx(0.02, rel=0.02)
    assert _std(dino.out.kernel) == pytest.approx(0.02, rel=0.02)
    assert not np.any(np.asarray(dino.qkv.bias))
    # Cross-attention's fused kv holds 2 matrices.
    kv = MatrixVarianceScaling(1.0, "fan_avg", "uniform", parts=2)((64, 128))
    assert _bound(kv) == pytest.approx(math.sqrt(6 / 128), rel=0.05)


def test_mlp_and_token_initialisers_follow_each_reference():
    def mlp(scheme):
        layer = FeedForward(1536, weight_init=scheme)
        layer.build((None, 197, 384))
        return layer

    bv = mlp("big_vision")  # MlpBlock: xavier kernels, N(0, 1e-6) biases
    assert _std(bv.fc1.kernel) == pytest.approx(math.sqrt(2 / (384 + 1536)), rel=0.02)
    assert _std(bv.fc1.bias) == pytest.approx(1e-6, rel=0.2)
    assert _std(mlp("dino").fc2.kernel) == pytest.approx(0.02, rel=0.02)
    assert not np.any(np.asarray(mlp("mae").fc1.bias))

    def token(scheme):
        layer = ClassToken(weight_init=scheme)
        layer.build((None, 196, 4096))
        return np.asarray(layer.token)

    assert not np.any(token("big_vision"))            # big_vision: zeros
    assert np.std(token("dino")) == pytest.approx(0.02, rel=0.06)  # N(0, 0.02)
    assert np.std(token("mae")) == pytest.approx(0.02, rel=0.06)
    with pytest.raises(ValueError, match="weight_init must be one of"):
        initializer("timm", "mlp_kernel")


def test_models_wire_their_reference_scheme():
    vit = keras_zoo.ViT.from_preset("vit_small_patch16_224")
    assert vit.get_zoo_config()["weight_init"] == "big_vision"
    assert _std(vit.get_layer("patch_embedding").projection.kernel) == pytest.approx(
        1 / math.sqrt(768), rel=0.03)
    # Position table N(0, 0.02) (Keras' TruncatedNormal(0.02) would give 0.0176).
    assert _std(vit.get_layer("position_embedding").embedding) == pytest.approx(0.02, rel=0.03)
    assert not np.any(np.asarray(vit.get_layer("head").kernel))  # zero head
    block = vit.get_layer("encoder_block_0")
    assert block.weight_init == "big_vision" and block.attention.weight_init == "big_vision"

    mae = keras_zoo.MAE.from_preset("mae_vit_base_patch16")
    fan = 16 * 16 * 3
    assert _bound(mae.get_layer("patch_embedding").projection.kernel) == pytest.approx(
        math.sqrt(6 / (fan + 768)), rel=0.01)
    assert mae.get_layer("decoder_block_0").weight_init == "mae"
    assert np.std(np.asarray(mae.get_layer("class_token").token)) == pytest.approx(0.02, rel=0.2)

    dino = DINO(backbone="vit_small_patch16_224", out_dim=1024, hidden_dim=64,
                bottleneck_dim=16, num_local_crops=0)
    backbone = dino.student_backbone
    assert backbone.get_zoo_config()["weight_init"] == "dino"
    assert _std(backbone.get_layer("encoder_block_3").mlp.fc1.kernel) == pytest.approx(
        0.02, rel=0.02)
    assert _bound(backbone.get_layer("patch_embedding").projection.kernel) == pytest.approx(
        1 / math.sqrt(768), rel=0.01)


def test_dino_head_initialisation():
    head = DINOHead(out_dim=4096, hidden_dim=512, bottleneck_dim=256)
    head.build((None, 384))
    assert _std(head.mlp[0].kernel) == pytest.approx(0.02, rel=0.02)
    assert not np.any(np.asarray(head.mlp[0].bias))
    # v keeps torch's nn.Linear default: U(+-1/sqrt(256)).
    assert _bound(head.weight_v) == pytest.approx(1 / 16, rel=0.01)
    assert _std(head.weight_v) == pytest.approx(1 / 16 / math.sqrt(3), rel=0.02)


def test_absolute_truncated_normal_is_timms_trunc_normal():
    from keras_zoo.layers.initializers import AbsoluteTruncatedNormal

    n = 10**6  # sample std within 5 / sqrt(2n) = 0.35 % of the population's
    margin = 5 / math.sqrt(2 * n)
    w = np.asarray(AbsoluteTruncatedNormal(0.02)((1000, 1000)))
    # trunc_normal_(std=.02) cuts at +-2 absolute (100 std): std 0.02, not Keras'
    # TruncatedNormal(stddev=0.02) cut at 2 std (0.02 * 0.8796 = 0.0176)
    assert abs(w.std() / 0.02 - 1) < margin
    # with std 1 the absolute cut is at 2 std: the truncated normal's std
    # sqrt(1 - 4 phi(2) / (Phi(2) - Phi(-2))) = 0.87962566
    w = np.asarray(AbsoluteTruncatedNormal(1.0)((1000, 1000)))
    assert np.abs(w).max() <= 2.0 and abs(w.std() / 0.87962566 - 1) < margin
    config = AbsoluteTruncatedNormal(0.5, a=-1.0, b=3.0).get_config()
    assert AbsoluteTruncatedNormal.from_config(config).get_config() == config
    with pytest.raises(ValueError, match="stddev > 0 and a < b"):
        AbsoluteTruncatedNormal(0.0)
