"""layers.py against independent NumPy references, plus Keras's own layer test harness."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src import testing

import layers as L

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------------------------------------
# NumPy references, written from the definitions, sharing no code with layers.py
# ---------------------------------------------------------------------------------------------

def np_upfirdn2d(x, f, up=1, down=1, pad=(0, 0), gain=1.0):
    """Zero-insert, pad, true 2D convolution with f, decimate. x [B, H, W, C]."""
    b, h, w, c = x.shape
    z = np.zeros([b, h * up, w * up, c], x.dtype)
    z[:, ::up, ::up] = x
    z = np.pad(z, [(0, 0), pad, pad, (0, 0)])
    k = f.shape[0]
    oh, ow = z.shape[1] - k + 1, z.shape[2] - k + 1
    out = np.zeros([b, oh, ow, c])
    for i in range(oh):
        for j in range(ow):
            # Convolution: output(i, j) = sum_{a, b} z(i + a, j + b) * f(k-1-a, k-1-b).
            out[:, i, j] = np.einsum("bhwc,hw->bc", z[:, i:i + k, j:j + k], f[::-1, ::-1]) * gain
    return out[:, ::down, ::down]


def np_conv_same(x, w):
    """Cross-correlation with 'same' zero padding, odd kernel. x [H, W, I], w [k, k, I, O]."""
    k = w.shape[0]
    p = (k - 1) // 2
    xp = np.pad(x, [(p, p), (p, p), (0, 0)])
    h, wd = x.shape[:2]
    return np.stack([np.stack([np.einsum("hwi,hwio->o", xp[i:i + k, j:j + k], w)
                               for j in range(wd)]) for i in range(h)])


def np_conv_transpose2(x, w):
    """Stride-2 transposed convolution by scatter-add: out[2i+a, 2j+b] += x[i, j] @ w[a, b]."""
    h, wd, _ = x.shape
    k, o = w.shape[0], w.shape[-1]
    out = np.zeros([2 * h + k - 2, 2 * wd + k - 2, o])
    for i in range(h):
        for j in range(wd):
            out[2 * i:2 * i + k, 2 * j:2 * j + k] += np.einsum("i,abio->abo", x[i, j], w)
    return out


def np_modulated_conv(x, weight, styles, demodulate, up):
    """Per-sample explicitly modulated (and demodulated) weights, then an ordinary convolution."""
    f = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0
    outs = []
    for xb, s in zip(x, styles):
        wb = weight * s[None, None, :, None]                          # [k, k, I, O]
        if demodulate:
            wb = wb / np.sqrt(np.sum(wb ** 2, axis=(0, 1, 2), keepdims=True) + 1e-8)
        if up:
            y = np_conv_transpose2(xb, wb)
            y = np_upfirdn2d(y[None], f, pad=(1, 1), gain=4.0)[0]
        else:
            y = np_conv_same(xb, wb)
        outs.append(y)
    return np.stack(outs)


# ---------------------------------------------------------------------------------------------
# FIR resampling
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("up,down,pad,gain", [(2, 1, (2, 1), 4.0), (1, 2, (1, 1), 1.0), (1, 1, (1, 2), 1.0)])
def test_upfirdn2d_matches_numpy(up, down, pad, gain):
    x = RNG.standard_normal([2, 6, 6, 3]).astype(np.float32)
    f = L.fir_filter()
    got = L.upfirdn2d(tf.constant(x), f, up=up, down=down, pad=pad, gain=gain).numpy()
    np.testing.assert_allclose(got, np_upfirdn2d(x, f, up, down, pad, gain), atol=1e-5)


def test_upfirdn2d_is_a_convolution_not_a_correlation():
    f = np.array([[0, 0], [0, 1]], np.float32)        # Asymmetric: flipping matters.
    x = np.zeros([1, 4, 4, 1], np.float32)
    x[0, 1, 1, 0] = 1.0
    got = L.upfirdn2d(tf.constant(x), f).numpy()
    np.testing.assert_allclose(got, np_upfirdn2d(x, f), atol=1e-6)


def test_fir_resampling_keeps_a_constant_image_constant():
    f = L.fir_filter()
    x = tf.fill([1, 8, 8, 2], 3.0)
    up = L.upsample_2d(x, f).numpy()
    down = L.downsample_2d(x, f).numpy()
    assert up.shape == (1, 16, 16, 2) and down.shape == (1, 4, 4, 2)
    # Away from the zero-padded border the value must be exactly preserved.
    np.testing.assert_allclose(up[:, 2:-2, 2:-2], 3.0, atol=1e-5)
    np.testing.assert_allclose(down[:, 1:-1, 1:-1], 3.0, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Modulated convolution
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("up", [False, True])
def test_modulated_conv_matches_numpy(fused, demodulate, up):
    x = RNG.standard_normal([3, 5, 5, 4]).astype(np.float32)
    weight = RNG.standard_normal([3, 3, 4, 6]).astype(np.float32)
    styles = RNG.uniform(0.2, 2.0, [3, 4]).astype(np.float32)
    f = L.fir_filter()
    got = L.modulated_conv2d(tf.constant(x), tf.constant(weight), tf.constant(styles),
                             demodulate=demodulate, up=up, fused=fused, f=f).numpy()
    want = np_modulated_conv(x, weight, styles, demodulate, up)
    assert got.shape == want.shape == (3, 10 if up else 5, 10 if up else 5, 6)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fused", [False, True])
def test_float16_modulated_conv_with_huge_styles_stays_finite_and_matches_numpy(fused):
    """Styles of 3e4-6e4 make the modulated activations (x * s) pass float16's largest value, 65504: the
    reference's pre-normalisation keeps the float16 convolution finite, within 1% of float64."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal([2, 6, 6, 8]).astype(np.float32)
    weight = rng.standard_normal([3, 3, 8, 5]).astype(np.float32)
    styles = rng.uniform(3e4, 6e4, [2, 8]).astype(np.float32)
    assert np.abs(x * styles[:, None, None, :]).max() > np.finfo(np.float16).max      # would overflow
    for up in (False, True):
        got = L.modulated_conv2d(tf.constant(x, tf.float16), tf.constant(weight, tf.float16),
                                 tf.constant(styles, tf.float16), up=up, fused=fused, f=L.fir_filter())
        want = np_modulated_conv(x.astype(np.float64), weight, styles, True, up)
        assert got.dtype == tf.float16 and np.all(np.isfinite(got.numpy()))
        np.testing.assert_allclose(got.numpy().astype(np.float64), want, atol=0.01 * np.abs(want).max())


def test_prenormalize_bounds_kernel_and_styles_and_demodulation_divides_it_out():
    weight = RNG.standard_normal([3, 3, 4, 6]).astype(np.float32) * 50
    styles = RNG.uniform(-300, 300, [2, 4]).astype(np.float32)
    w, s = (t.numpy() for t in L.prenormalize(tf.constant(weight), tf.constant(styles)))
    np.testing.assert_allclose(np.abs(w).max(axis=(0, 1, 2)), 1 / np.sqrt(3 * 3 * 4), rtol=1e-6)
    np.testing.assert_allclose(np.abs(s).max(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(w / weight, np.broadcast_to((w / weight)[0, 0, 0], weight.shape), rtol=1e-5)  # per O
    x = RNG.standard_normal([2, 5, 5, 4])
    np.testing.assert_allclose(np_modulated_conv(x, w, s, True, False), np_modulated_conv(x, weight, styles, True, False),
                               rtol=1e-4, atol=1e-5)


def test_clamp_limits_the_activation_after_bias_and_gain():
    x = tf.constant([[-400.0, -1.0, 0.5, 300.0]])
    got = L.bias_act(x, tf.constant([0.0, 0.0, 0.0, 10.0]), "lrelu", clamp=256.0).numpy()
    np.testing.assert_allclose(got, [[-80 * math.sqrt(2), -0.2 * math.sqrt(2), 0.5 * math.sqrt(2), 256.0]], rtol=1e-6)
    np.testing.assert_allclose(L.bias_act(x, 0.0, clamp=1.0).numpy(), [[-1.0, -1.0, 0.5, 1.0]])


def test_demodulated_output_has_unit_variance():
    # For i.i.d. unit-variance input, each output is a sum of k*k*I inputs with weights whose
    # squares sum to 1, so its variance is 1 whatever the styles (away from the padded border).
    layer = L.ModulatedConv2D(8, 3, demodulate=True)
    x = tf.random.stateless_normal([16, 24, 24, 16], seed=[1, 2])
    w = tf.random.stateless_normal([16, 32], seed=[3, 4]) * 3.0
    y = layer(x, w).numpy()[:, 1:-1, 1:-1]
    np.testing.assert_allclose(y.var(axis=(0, 1, 2)), 1.0, rtol=0.06)
    undemodulated = L.ModulatedConv2D(8, 3, demodulate=False)(x, w).numpy()[:, 1:-1, 1:-1]
    assert abs(undemodulated.var() - 1.0) > 0.2   # The check above can fail.


def test_modulated_conv_layer_uses_affine_styles_with_bias_one():
    layer = L.ModulatedConv2D(4, 3, demodulate=False)
    x = tf.random.stateless_normal([2, 4, 4, 3], seed=[0, 1])
    w = tf.zeros([2, 5])
    y = layer(x, w).numpy()
    # w = 0 gives styles equal to the affine bias, which starts at exactly 1.
    np.testing.assert_allclose(layer.affine(w).numpy(), 1.0)
    kernel = layer.kernel.numpy() / math.sqrt(3 * 9)
    np.testing.assert_allclose(y, np.stack([np_conv_same(xb, kernel) for xb in x.numpy()]), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Equalized learning rate
# ---------------------------------------------------------------------------------------------

def test_equalized_dense_effective_weight_and_output():
    layer = L.EqualizedDense(3, gain=2.0, lr_multiplier=0.01, bias_init=1.0)
    x = RNG.standard_normal([4, 5]).astype(np.float32)
    y = layer(x).numpy()
    w = layer.kernel.numpy()
    expected_w = w * 2.0 / math.sqrt(5) * 0.01
    np.testing.assert_allclose(layer.effective_kernel().numpy(), expected_w, rtol=1e-6)
    np.testing.assert_allclose(y, x @ expected_w + 1.0, atol=1e-5)
    # Stored weights start at N(0, 1/lr_mult^2), so effective weights start at N(0, gain^2/fan_in).
    big = L.EqualizedDense(256, lr_multiplier=0.01)
    big.build((None, 256))
    assert abs(np.std(big.kernel.numpy()) - 100.0) < 3.0
    assert abs(np.std(big.effective_kernel().numpy()) - 1 / 16) < 0.002


def test_equalized_conv_effective_weight_and_output():
    layer = L.EqualizedConv2D(4, 3, gain=1.5, lr_multiplier=0.5)
    x = RNG.standard_normal([2, 5, 5, 3]).astype(np.float32)
    y = layer(x).numpy()
    expected_w = layer.kernel.numpy() * 1.5 / math.sqrt(3 * 3 * 3) * 0.5
    np.testing.assert_allclose(layer.effective_kernel().numpy(), expected_w, rtol=1e-6)
    np.testing.assert_allclose(y, np.stack([np_conv_same(xb, expected_w) for xb in x]), atol=1e-5)


def np_conv_valid_stride2(x, w):
    """Cross-correlation without padding, stride 2. x [H, W, I], w [k, k, I, O]."""
    k = w.shape[0]
    oh, ow = (x.shape[0] - k) // 2 + 1, (x.shape[1] - k) // 2 + 1
    return np.stack([np.stack([np.einsum("hwi,hwio->o", x[2 * i:2 * i + k, 2 * j:2 * j + k], w)
                               for j in range(ow)]) for i in range(oh)])


def test_strided_downsampling_conv_matches_the_reference_order():
    """Reference (conv2d_resample, down=2, 3x3): upfirdn2d with padding 1 + 1 per side and no
    decimation, then a stride-2 'valid' convolution."""
    f = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0
    x = RNG.standard_normal([2, 8, 8, 3]).astype(np.float32)
    layer = L.EqualizedConv2D(4, 3, down=True, down_mode="strided")
    y = layer(x).numpy()
    w = layer.effective_kernel().numpy()
    blurred = np_upfirdn2d(x, f, pad=(2, 2))                                   # [2, 9, 9, 3]
    expected = np.stack([np_conv_valid_stride2(xb, w) for xb in blurred])     # [2, 4, 4, 4]
    np.testing.assert_allclose(y, expected, atol=1e-5)
    # Decimating first (test_decimating_conv_matches_numpy) is a different operation for 3x3...
    decimated = np.stack([np_conv_same(xb, w) for xb in np_upfirdn2d(x, f, down=2, pad=(1, 1))])
    assert np.abs(decimated - expected).max() > 0.1
    # ...but the same one for a 1x1 kernel, which therefore always takes the cheaper path.
    one = L.EqualizedConv2D(4, 1, down=True, down_mode="strided", use_bias=False)
    y1 = one(x).numpy()
    expected1 = np.einsum("bhwi,io->bhwo", np_upfirdn2d(x, f, down=2, pad=(1, 1)), one.effective_kernel().numpy()[0, 0])
    np.testing.assert_allclose(y1, expected1, atol=1e-5)


def test_decimating_conv_matches_numpy():
    f = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0
    x = RNG.standard_normal([2, 8, 8, 3]).astype(np.float32)
    layer = L.EqualizedConv2D(4, 3, down=True, use_bias=False)
    y = layer(x).numpy()
    expected = np.stack([np_conv_same(xb, layer.effective_kernel().numpy())
                         for xb in np_upfirdn2d(x, f, down=2, pad=(1, 1))])
    np.testing.assert_allclose(y, expected, atol=1e-5)


def test_lrelu_gain_preserves_second_moment():
    x = tf.random.stateless_normal([200000], seed=[0, 0])
    y = L.bias_act(x, 0.0, "lrelu").numpy()
    # E[lrelu(x)^2] * 2 = (1 + 0.2^2) for x ~ N(0, 1).
    np.testing.assert_allclose(np.mean(y ** 2), 1.04, rtol=0.02)


# ---------------------------------------------------------------------------------------------
# Normalisation, noise, minibatch stddev
# ---------------------------------------------------------------------------------------------

def test_pixel_norm_unit_rms():
    x = RNG.standard_normal([3, 7]).astype(np.float32) * 5
    y = L.pixel_norm(tf.constant(x)).numpy()
    np.testing.assert_allclose(y, x / np.sqrt(np.mean(x ** 2, axis=-1, keepdims=True) + 1e-8), rtol=1e-5)


@pytest.mark.parametrize("batch,group,features", [(8, 4, 1), (6, 2, 2), (2, 4, 1)])
def test_minibatch_stddev_matches_numpy(batch, group, features):
    x = RNG.standard_normal([batch, 3, 3, 4]).astype(np.float32)
    got = L.minibatch_stddev(tf.constant(x), group, features).numpy()
    g = min(group, batch)
    n = batch // g
    want = np.zeros([batch, 3, 3, features])
    for j in range(n):
        members = x[j * g:(j + 1) * g]                                  # contiguous groups
        std = np.sqrt(members.var(axis=0) + 1e-8)                       # [H, W, C]
        per_feature = std.reshape(3, 3, features, -1).mean(axis=(0, 1, 3))
        want[j * g:(j + 1) * g] = per_feature
    np.testing.assert_allclose(got[..., :4], x)
    np.testing.assert_allclose(got[..., 4:], want, rtol=1e-5)


def test_stateless_draws_are_the_same_compiled_by_xla_or_not():
    seed = tf.constant([3, 4], tf.int64)
    draw = lambda: (L.stateless_uniform([1001], seed), L.stateless_normal([7, 143], seed))  # noqa: E731
    uniform, normal = draw()
    xla_uniform, xla_normal = tf.function(draw, jit_compile=True)()
    np.testing.assert_array_equal(uniform.numpy(), xla_uniform.numpy())
    np.testing.assert_allclose(normal.numpy(), xla_normal.numpy(), rtol=1e-5, atol=1e-5)
    # TensorFlow's own generator gives other numbers under XLA for the same seed: the reason for these.
    tf_normal = lambda: tf.random.stateless_normal([64], seed)  # noqa: E731
    assert np.abs(tf_normal().numpy() - tf.function(tf_normal, jit_compile=True)().numpy()).max() > 0.1


def test_stateless_draws_have_their_distributions():
    u = L.stateless_uniform([200_000], [0, 1]).numpy()
    z = L.stateless_normal([200_001], [0, 1]).numpy()            # odd: the Box-Muller pairs end half used
    assert u.min() >= 0.0 and u.max() < 1.0
    # Kolmogorov-Smirnov distance to the exact CDFs; 0.005 is far beyond chance at n = 200,000 (p < 1e-4).
    grid = np.sort(u)
    assert np.abs(grid - np.arange(1, grid.size + 1) / grid.size).max() < 0.005
    phi = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in np.sort(z)])
    assert np.abs(phi - np.arange(1, z.size + 1) / z.size).max() < 0.005
    # The cos and sin halves of each pair are independent: no correlation between z_i and z_{i+n/2}.
    assert abs(np.corrcoef(z[:100_000], z[100_001:200_001])[0, 1]) < 0.01
    assert not np.array_equal(L.stateless_normal([8], [0, 2]).numpy(), z[:8])


def test_noise_injection_modes():
    layer = L.NoiseInjection(seed=3)
    x = tf.zeros([2, 4, 4, 2])
    layer.build(x.shape)
    layer.strength.assign(0.5)
    a, b = layer(x).numpy(), layer(x).numpy()
    assert not np.allclose(a, b)                                        # fresh noise each call
    np.testing.assert_allclose(a[..., 0], a[..., 1])                    # one map shared by channels
    c1, c2 = layer(x, noise_mode="const").numpy(), layer(x, noise_mode="const").numpy()
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_allclose(c1[0, ..., 0], 0.5 * layer.const_noise.numpy()[0, ..., 0])
    np.testing.assert_array_equal(layer(x, noise_mode="none").numpy(), 0.0)
    seeded = [layer(x, noise_seed=tf.constant([7, 1])).numpy() for _ in range(2)]
    np.testing.assert_array_equal(seeded[0], seeded[1])                 # stateless given a seed
    assert not np.allclose(seeded[0], layer(x, noise_seed=tf.constant([7, 2])).numpy())
    with pytest.raises(ValueError, match="noise_mode"):
        layer(x, noise_mode="bogus")


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="activation"):
        L.EqualizedDense(4, activation="relu6")
    with pytest.raises(ValueError, match="filters"):
        L.ModulatedConv2D(0, 3)
    with pytest.raises(ValueError, match="down_mode.*'fancy'"):
        L.EqualizedConv2D(4, 3, down=True, down_mode="fancy")


# ---------------------------------------------------------------------------------------------
# Keras's own layer harness and serialization
# ---------------------------------------------------------------------------------------------

class TestKerasHarness(testing.TestCase):
    def test_equalized_dense(self):
        self.run_layer_test(L.EqualizedDense, {"units": 3, "lr_multiplier": 0.1, "activation": "lrelu"},
                            input_shape=(2, 5), expected_output_shape=(2, 3),
                            expected_num_trainable_weights=2)

    def test_equalized_conv(self):
        self.run_layer_test(L.EqualizedConv2D, {"filters": 3, "kernel_size": 3, "down": True},
                            input_shape=(2, 8, 8, 2), expected_output_shape=(2, 4, 4, 3),
                            expected_num_trainable_weights=2)

    def test_modulated_conv(self):
        for fused in (False, True):
            self.run_layer_test(L.ModulatedConv2D, {"filters": 3, "kernel_size": 3, "up": True, "fused": fused},
                                input_shape={"x_shape": (2, 4, 4, 2), "w_shape": (2, 6)},
                                expected_output_shape=(2, 8, 8, 3), expected_num_trainable_weights=3,
                                run_training_check=False)  # The harness trains single-input layers only.

    def test_to_rgb(self):
        self.run_layer_test(L.ToRGB, {"channels": 1}, input_shape={"x_shape": (2, 4, 4, 2), "w_shape": (2, 6)},
                            expected_output_shape=(2, 4, 4, 1), expected_num_trainable_weights=4,
                            run_training_check=False)

    def test_noise_injection(self):
        self.run_layer_test(L.NoiseInjection, {"seed": 1}, input_shape=(2, 4, 4, 3),
                            expected_output_shape=(2, 4, 4, 3), expected_num_trainable_weights=1,
                            expected_num_non_trainable_weights=1, expected_num_seed_generators=1)

    def test_bias_activation(self):
        self.run_layer_test(L.BiasActivation, {"activation": "lrelu"}, input_shape=(2, 4, 4, 3),
                            expected_output_shape=(2, 4, 4, 3), expected_num_trainable_weights=1)

    def test_pixel_norm(self):
        self.run_layer_test(L.PixelNorm, {}, input_shape=(2, 5), expected_output_shape=(2, 5),
                            expected_num_trainable_weights=0)

    def test_minibatch_stddev(self):
        self.run_layer_test(L.MinibatchStdDev, {"group_size": 2, "num_features": 1}, input_shape=(4, 4, 4, 2),
                            expected_output_shape=(4, 4, 4, 3), expected_num_trainable_weights=0)


def test_functional_model_with_every_layer_survives_keras_save_load(tmp_path):
    x_in = keras.Input((8, 8, 2), batch_size=4)
    w_in = keras.Input((6,), batch_size=4)
    w = L.EqualizedDense(6, activation="lrelu")(L.PixelNorm()(w_in))
    x = L.ModulatedConv2D(8, 3, up=True)(x_in, w)
    x = L.NoiseInjection(seed=1)(x, noise_mode="const")
    x = L.BiasActivation("lrelu")(x)
    x = L.ModulatedConv2D(8, 3, fused=True)(x, w)
    img = L.ToRGB(1)(x, w)
    y = L.EqualizedConv2D(8, 3, down=True, activation="lrelu")(img)
    y = L.MinibatchStdDev(group_size=2)(y)
    model = keras.Model([x_in, w_in], [img, y])
    for v in model.weights:   # Non-trivial biases and noise strengths, so a lost weight shows.
        v.assign(v + tf.random.stateless_normal(v.shape, seed=[len(v.path), 0]) * 0.1)
    inputs = [RNG.standard_normal([4, 8, 8, 2]).astype(np.float32), RNG.standard_normal([4, 6]).astype(np.float32)]
    before = model.predict(inputs, verbose=0)
    path = tmp_path / "every_layer.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    after = loaded.predict(inputs, verbose=0)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
