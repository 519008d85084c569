"""SelectiveScan and MambaMixer: parallel scan == recurrent step == naive loop."""

import keras
import numpy as np
import pytest

from keras_zoo.layers.ssm import (
    DtBiasInitializer,
    MambaMixer,
    SelectiveScan,
    chunked_selective_scan,
    naive_selective_scan,
)


def _scan_inputs(rng, batch, length, channels, state_dim):
    x = rng.standard_normal((batch, length, channels)).astype("float32")
    dt = rng.standard_normal((batch, length, channels)).astype("float32")
    b = rng.standard_normal((batch, length, state_dim)).astype("float32")
    c = rng.standard_normal((batch, length, state_dim)).astype("float32")
    return x, dt, b, c


def _random_scan(rng, channels, state_dim, chunk_size=None):
    scan = SelectiveScan(state_dim, chunk_size=chunk_size)
    scan.build((None, None, channels))
    # Random A (not the S4D init) and D, so a swapped axis cannot hide.
    scan.A_log.assign(rng.normal(0.0, 1.0, (channels, state_dim)).astype("float32"))
    scan.D.assign(rng.standard_normal(channels).astype("float32"))
    return scan


@pytest.mark.parametrize("length", [1, 2, 7, 16, 33, 100, 257])
def test_parallel_scan_step_and_naive_loop_agree(length):
    rng = np.random.default_rng(length)
    x, dt, b, c = _scan_inputs(rng, 2, length, 6, 5)
    scan = _random_scan(rng, 6, 5)
    h0 = rng.standard_normal((2, 6, 5)).astype("float32")
    reference, final = naive_selective_scan(x, dt, scan.A_log.numpy(), b, c, scan.D.numpy(), h0)
    parallel, state = scan(x, dt, b, c, initial_state=h0, return_state=True)
    np.testing.assert_allclose(parallel, reference, atol=1e-5, rtol=0)
    np.testing.assert_allclose(state, final, atol=1e-5, rtol=0)
    state, steps = h0, []
    for t in range(length):
        y, state = scan.step(x[:, t], dt[:, t], b[:, t], c[:, t], state)
        steps.append(np.asarray(y))
    np.testing.assert_allclose(np.stack(steps, axis=1), reference, atol=1e-5, rtol=0)
    np.testing.assert_allclose(state, final, atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk_size", [1, 3, 8, 64])
def test_chunk_size_does_not_change_the_result(chunk_size):
    rng = np.random.default_rng(0)
    x, dt, b, c = _scan_inputs(rng, 1, 50, 4, 3)
    scan = _random_scan(rng, 4, 3, chunk_size=chunk_size)
    reference, _ = naive_selective_scan(x, dt, scan.A_log.numpy(), b, c, scan.D.numpy())
    np.testing.assert_allclose(scan(x, dt, b, c), reference, atol=1e-5, rtol=0)


def test_scan_has_constant_size_state_and_needs_a_static_length():
    a = -np.ones((4, 3), "float32")
    x = np.ones((2, 9, 4), "float32")
    _, state = chunked_selective_scan(x, x, np.ones((2, 9, 3), "float32"),
                                      np.ones((2, 9, 3), "float32"), a)
    assert tuple(state.shape) == (2, 4, 3)

    import tensorflow as tf

    fn = tf.function(lambda v: chunked_selective_scan(v, v, v[..., :3], v[..., :3], a)[0],
                     input_signature=[tf.TensorSpec((None, None, 4))])
    with pytest.raises(ValueError, match="static sequence length"):
        fn.get_concrete_function()


def test_scan_runs_in_float32_under_mixed_precision():
    rng = np.random.default_rng(1)
    x, dt, b, c = _scan_inputs(rng, 1, 12, 4, 3)
    scan = SelectiveScan(3, dtype="mixed_bfloat16")
    y, state = scan(x, dt, b, c, return_state=True)
    assert y.dtype == "bfloat16" and state.dtype == "float32"
    assert scan.A_log.dtype == "float32"


def test_s4d_real_a_and_dt_bias_initialisation():
    scan = SelectiveScan(16)
    scan.build((None, None, 8))
    np.testing.assert_allclose(-np.exp(scan.A_log.numpy()), -np.tile(np.arange(1, 17), (8, 1)),
                               rtol=1e-6)
    np.testing.assert_array_equal(scan.D.numpy(), np.ones(8))
    bias = np.asarray(DtBiasInitializer()((20000,)))
    dt = np.log1p(np.exp(bias))  # softplus
    assert 1e-3 * 0.999 <= dt.min() and dt.max() <= 0.1 * 1.001
    # log-uniform: the log of dt is uniform over [log 1e-3, log 1e-1]
    quartiles = np.quantile(np.log(dt), [0.25, 0.5, 0.75])
    np.testing.assert_allclose(quartiles, np.log(1e-3) + np.array([0.25, 0.5, 0.75]) *
                               np.log(100.0), atol=0.05)


def limit(w):
    return np.abs(np.asarray(w)).max()


def test_mixer_initialisers_follow_mamba_simple():
    mixer = MambaMixer(state_dim=16, out_proj_scale=0.5)
    mixer.build((None, None, 64))  # inner 128, dt_rank 4, kernel 4
    assert mixer.rank == 4 and mixer.inner_dim == 128
    assert limit(mixer.dt_proj.kernel) <= 4 ** -0.5 and limit(mixer.dt_proj.kernel) > 0.4
    assert limit(mixer.in_proj.kernel) <= 64 ** -0.5
    assert limit(mixer.x_proj.kernel) <= 128 ** -0.5
    assert limit(mixer.out_proj.kernel) <= 0.5 * 128 ** -0.5
    assert limit(mixer.out_proj.kernel) > 0.9 * 0.5 * 128 ** -0.5
    assert limit(mixer.conv1d_kernel) <= 0.5 and limit(mixer.conv1d_bias) <= 0.5
    assert mixer.in_proj.bias is None and mixer.out_proj.bias is None and mixer.x_proj.bias is None


def _mixer(**kwargs):
    rng = np.random.default_rng(3)
    mixer = MambaMixer(state_dim=4, **kwargs)
    mixer.build((None, None, 16))
    mixer.set_weights([rng.normal(0, 0.3, w.shape).astype("float32")
                       for w in mixer.get_weights()])
    return mixer


def test_mixer_step_equals_parallel_form_and_returns_the_same_state():
    mixer = _mixer()
    h = np.random.default_rng(4).standard_normal((2, 11, 16)).astype("float32")
    out, conv_state, ssm_state = mixer(h, return_state=True)
    conv, ssm, steps = np.zeros((2, 3, 32), "float32"), np.zeros((2, 32, 4), "float32"), []
    for t in range(11):
        y, conv, ssm = mixer.step(h[:, t], conv, ssm)
        steps.append(np.asarray(y))
    np.testing.assert_allclose(np.stack(steps, 1), out, atol=1e-5)
    np.testing.assert_allclose(conv, conv_state, atol=1e-6)
    np.testing.assert_allclose(ssm, ssm_state, atol=1e-5)


def test_left_padding_is_the_same_as_no_padding():
    mixer = _mixer()
    rng = np.random.default_rng(5)
    h = rng.standard_normal((2, 9, 16)).astype("float32")
    padded = np.concatenate([rng.standard_normal((2, 4, 16)).astype("float32"), h], axis=1)
    mask = np.concatenate([np.zeros((2, 4)), np.ones((2, 9))], axis=1).astype("int32")
    out, conv, ssm = mixer(h, return_state=True)
    out_p, conv_p, ssm_p = mixer(padded, padding_mask=mask, return_state=True)
    np.testing.assert_allclose(np.asarray(out_p)[:, 4:], out, atol=1e-5)
    np.testing.assert_allclose(conv_p, conv, atol=1e-6)
    np.testing.assert_allclose(ssm_p, ssm, atol=1e-5)


def test_bidirectional_mixer_sees_the_future_and_the_causal_one_does_not():
    rng = np.random.default_rng(6)
    h = rng.standard_normal((1, 10, 16)).astype("float32")
    later = h.copy()
    later[:, 7:] += 1.0
    causal, both = _mixer(), _mixer(bidirectional=True)
    assert len(both.weights) == len(causal.weights) + 7  # conv w+b, x_proj, dt_proj w+b, A, D
    np.testing.assert_allclose(np.asarray(causal(later))[:, :7], np.asarray(causal(h))[:, :7],
                               atol=1e-6)
    assert np.abs(np.asarray(both(later))[:, :7] - np.asarray(both(h))[:, :7]).max() > 1e-3
    with pytest.raises(ValueError, match="no recurrent"):
        both.step(h[:, 0], np.zeros((1, 3, 32)), np.zeros((1, 32, 4)))


def test_width_that_expand_does_not_divide_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expand=1.5 x width 7 = 10.5 is not a whole number"):
        MambaMixer(expand=1.5).build((None, None, 7))


def test_mixer_config_round_trip():
    mixer = MambaMixer(state_dim=8, conv_kernel=3, expand=1, dt_rank=5, bidirectional=True,
                       projection_init_stddev=0.02, chunk_size=4)
    clone = MambaMixer.from_config(mixer.get_config())
    assert clone.get_config() == mixer.get_config()
    x = np.ones((1, 6, 12), "float32")
    mixer(x)
    clone(x)
    clone.set_weights(mixer.get_weights())
    np.testing.assert_allclose(clone(x), mixer(x), atol=0)
    assert keras.saving.get_registered_object("keras_zoo>SelectiveScan") is SelectiveScan
