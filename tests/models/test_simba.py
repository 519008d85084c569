"""SiMBA: the official code's parameter counts, EinFFT against a NumPy transcription
of the official forward, both DFT paths, options and clear errors."""

import math

import numpy as np
import pytest

import keras_zoo
from keras_zoo.models.simba import EinFFT, Simba


def official_parameter_count(stem_hidden_dim, embed_dims, depths, mlp_ratios=(8, 8, 4, 4),
                             channel_mixer="einfft", state_dim=64, num_classes=1000,
                             in_chans=3, token_label=False):
    """Trainable parameters of classification/simba.py's SiMBA, module by module
    (BatchNorm running statistics are buffers there, not parameters)."""
    h = stem_hidden_dim
    count = in_chans * h * 49 + 2 * h + 2 * (h * h * 9 + 2 * h)  # stem convs + BN

    def layer_norm(d):
        return 2 * d

    def mamba(d):  # mamba_ssm.Mamba(d, d_state, d_conv=4, expand=2), LayerNorm in front
        inner, rank = 2 * d, math.ceil(d / 16)
        return (layer_norm(d) + d * 2 * inner + inner * 4 + inner + inner * (rank + 2 * state_dim)
                + rank * inner + inner + inner * state_dim + inner + inner * d)

    def einfft(d):
        return 4 * d * d // 4 + 4 * d  # 2 x (2, 4, d/4, d/4) weights + 2 x (2, 4, d/4) biases

    previous = h
    for i, (d, depth, ratio) in enumerate(zip(embed_dims, depths, mlp_ratios)):
        count += previous * d * 9 + d + layer_norm(d)  # stem proj / DownSamples conv + LN
        hidden = d * ratio
        mixer = einfft(d) if channel_mixer == "einfft" else (
            d * hidden + hidden + hidden * 9 + hidden + hidden * d + d)  # PVT2FFN
        count += depth * (mamba(d) + layer_norm(d) + mixer)
        count += layer_norm(d)  # norm{i+1}
        previous = d
    d, hidden = embed_dims[-1], embed_dims[-1] * mlp_ratios[-1]
    count += layer_norm(d) + mamba(d) + (einfft(d) if channel_mixer == "einfft" else
                                         d * hidden + hidden + hidden * d + d)  # ClassBlock
    count += (d * num_classes + num_classes) * (2 if token_label else 1)  # head (+ aux_head)
    return count


OFFICIAL = {  # classification/simba.py: simba_s, simba_b, simba_l
    "s": {"stem_hidden_dim": 32, "embed_dims": (64, 128, 320, 448), "depths": (3, 4, 6, 3)},
    "b": {"stem_hidden_dim": 64, "embed_dims": (64, 128, 320, 512), "depths": (3, 4, 12, 3)},
    "l": {"stem_hidden_dim": 64, "embed_dims": (96, 192, 384, 512), "depths": (3, 6, 18, 3)},
}


@pytest.mark.slow
@pytest.mark.parametrize("size", sorted(OFFICIAL))
@pytest.mark.parametrize("mixer", ["einfft", "mlp"])
def test_parameter_counts_match_the_official_code(size, mixer):
    name = f"simba_{size}" + ("" if mixer == "einfft" else "_mlp")
    model = keras_zoo.from_preset(name)
    assert model.trainable_parameter_count() == official_parameter_count(
        **OFFICIAL[size], channel_mixer=mixer)


def test_token_label_head_adds_the_official_aux_head():
    model = keras_zoo.Simba.from_preset("simba_s", token_label=True)
    assert model.trainable_parameter_count() == official_parameter_count(
        **OFFICIAL["s"], token_label=True) == 15_309_104


def _official_einfft(x, w1, w2, b1, b2, blocks, threshold):
    """EinFFT.forward of the official code, in NumPy float64."""
    batch, n, c = x.shape
    x = np.fft.fft2(x.reshape(batch, n, blocks, c // blocks), axes=(1, 2), norm="ortho")

    def mul(t, w):
        return np.einsum("...bd,bdk->...bk", t, w)
    real_1 = np.maximum(mul(x.real, w1[0]) - mul(x.imag, w1[1]) + b1[0], 0)
    imag_1 = np.maximum(mul(x.real, w1[1]) + mul(x.imag, w1[0]) + b1[1], 0)
    z = np.stack([mul(real_1, w2[0]) - mul(imag_1, w2[1]) + b2[0],
                  mul(real_1, w2[1]) + mul(imag_1, w2[0]) + b2[1]], axis=-1)
    z = np.sign(z) * np.maximum(np.abs(z) - threshold, 0)
    z = z[..., 0] + 1j * z[..., 1]
    return np.fft.ifft2(z, axes=(1, 2), norm="ortho").real.reshape(batch, n, c)


@pytest.mark.parametrize("dft", ["fft", "matmul"])
def test_einfft_matches_the_official_forward(dft):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 49, 32)).astype("float32")
    layer = EinFFT(dft=dft)
    layer.build(x.shape)
    layer.set_weights([rng.normal(0, 0.3, w.shape).astype("float32")
                       for w in layer.get_weights()])
    expected = _official_einfft(x.astype("float64"), *(np.asarray(w, "float64") for w in (
        layer.weight_1, layer.weight_2, layer.bias_1, layer.bias_2)), 4, 0.01)
    np.testing.assert_allclose(layer(x), expected, atol=1e-5)


def test_serving_signature_uses_the_matmul_dft_with_the_same_weights():
    model = keras_zoo.from_preset("simba_tiny_digits")
    rng = np.random.default_rng(1)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) if w.ndim else w
                       for w in model.get_weights()])
    serving = model.serving_signatures()["serving_default"]
    assert serving is not model and serving.get_zoo_config()["einfft_dft"] == "matmul"
    x = rng.random((2, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(serving(x), model(x), atol=1e-5)


def test_bidirectional_scan_adds_a_backward_path():
    base = {"image_size": 32, "num_channels": 1, "num_classes": 10, "stem_hidden_dim": 8,
            "embed_dims": [16], "depths": [1], "mlp_ratios": [2], "state_dim": 4}
    one, both = Simba(**base), Simba(**base, bidirectional=True)
    inner, rank = 32, 1
    backward = inner * 4 + inner + inner * (rank + 8) + rank * inner + inner + inner * 4 + inner
    assert both.count_params() - one.count_params() == backward
    assert both(np.zeros((1, 32, 32, 1), "float32")).shape == (1, 10)


def test_mlp_variant_and_feature_output():
    model = Simba(image_size=32, num_channels=1, num_classes=None, stem_hidden_dim=8,
                  embed_dims=[16, 24], depths=[1, 1], mlp_ratios=[2, 2], state_dim=4,
                  channel_mixer="mlp")
    assert model(np.zeros((2, 32, 32, 1), "float32")).shape == (2, 24)


def test_width_not_divisible_by_einfft_blocks_is_a_clear_error():
    with pytest.raises(ValueError, match=r"embed dim 30 is not divisible by einfft_blocks=4"):
        keras_zoo.Simba.from_preset("simba_tiny_digits", embed_dims=[30, 64])


def test_image_size_not_divisible_by_the_pyramid_stride():
    with pytest.raises(ValueError, match=r"image_size=36 is not divisible by 8"):
        keras_zoo.Simba.from_preset("simba_tiny_digits", image_size=36)


def test_keras_file_round_trip_and_channel_check(tmp_path):
    import keras

    model = keras_zoo.from_preset("simba_tiny_digits")
    rng = np.random.default_rng(2)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) if w.ndim else w
                       for w in model.get_weights()])
    x = rng.random((2, 32, 32, 1)).astype("float32")
    before = np.asarray(model(x))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(np.asarray(loaded(x)), before)
    with pytest.raises(ValueError, match=r"expects inputs of shape \(batch, 32, 32, 1\)"):
        model(np.zeros((1, 32, 32, 3), "float32"))


# SiMBA paper (Patro & Agneeswaran 2024, arXiv:2403.15360), Table 2 (ImageNet-1K,
# 224x224), "#Param." column, in millions as printed. The paper's models train with
# token labelling, so its counts include the auxiliary token head (``aux_head``).
PAPER_TABLE_MILLIONS = {("s", "einfft"): 15.3, ("b", "einfft"): 22.8, ("l", "einfft"): 36.6,
                        ("s", "mlp"): 26.5, ("b", "mlp"): 40.0}


@pytest.mark.parametrize("size, mixer", sorted(PAPER_TABLE_MILLIONS))
def test_preset_counts_against_the_papers_table(size, mixer):
    """EinFFT presets with the token-labelling head round to the paper's figure
    exactly; the MLP rows (which the paper prints less precisely) lie within 0.6 %
    of it. Our presets' counts equal ``official_parameter_count`` (the slow test
    above), so this ties the presets to the table."""
    with_aux = official_parameter_count(**OFFICIAL[size], channel_mixer=mixer, token_label=True)
    paper = PAPER_TABLE_MILLIONS[size, mixer]
    if mixer == "einfft":
        assert round(with_aux / 1e6, 1) == paper
    else:
        assert abs(with_aux / 1e6 - paper) / paper < 0.006
    without = official_parameter_count(**OFFICIAL[size], channel_mixer=mixer)
    assert with_aux - without == OFFICIAL[size]["embed_dims"][-1] * 1000 + 1000


def test_linear_layers_are_timms_trunc_normal_002():
    # _init_weights: trunc_normal_(m.weight, std=.02) on every nn.Linear, the Mamba
    # modules' included: N(0, 0.02) (cut at +-2 absolute), not 2-std-cut 0.0176
    model = keras_zoo.from_preset("simba_tiny_digits")
    kernels = [v for v in model.weights if v.path.endswith(("proj/kernel", "head/kernel"))
               and "stem" not in v.path and "downsample" not in v.path]  # not the convs
    w = np.concatenate([np.asarray(v).ravel() for v in kernels])
    assert w.size > 30_000
    assert abs(w.std() / 0.02 - 1) < 5 / math.sqrt(2 * w.size)  # 0.0176 is 12 % away
