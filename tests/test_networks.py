"""Generator and discriminator: structure, guards against the earlier attempt's bugs, and
second-order gradients checked by finite differences."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from discriminator import Discriminator
from generator import Generator, num_ws_for
from layers import MIN_CHANNELS, channels_at

TINY = dict(resolution=8, channel_base=128, channel_max=16)


def tiny_generator(**kwargs):
    return Generator(**{**TINY, "z_dim": 8, "w_dim": 8, "mapping_layers": 2, **kwargs})


@pytest.mark.parametrize("resolution", [8, 16, 32, 64, 128, 256, 512, 1024])
def test_no_layer_thinner_than_eight_channels_at_default_settings(resolution):
    base, cmax = 8192, 256  # the defaults, checked by the next test
    for res in [2 ** i for i in range(2, int(np.log2(resolution)) + 1)]:
        assert channels_at(res, base, cmax) >= MIN_CHANNELS


def test_default_channel_settings_are_the_ones_checked():
    g, d = Generator(resolution=8, mapping_layers=1), Discriminator(resolution=8)
    assert (g.channel_base, g.channel_max, d.channel_base, d.channel_max) == (8192, 256, 8192, 256)


def test_too_few_channels_is_a_clear_error():
    with pytest.raises(ValueError, match="channel_base"):
        Generator(resolution=64, channel_base=256)
    with pytest.raises(ValueError, match="power of two"):
        Discriminator(resolution=48)


def test_every_built_conv_has_at_least_eight_filters_at_256():
    g, d = Generator(resolution=256, mapping_layers=2), Discriminator(resolution=256)
    kernels = [v for v in g.trainable_variables + d.trainable_variables
               if v.path.endswith("kernel") and len(v.shape) == 4 and "torgb" not in v.path
               and "from_rgb" not in v.path]
    assert kernels and min(k.shape[-1] for k in kernels) >= MIN_CHANNELS
    images = g(tf.random.stateless_normal([2, 512], seed=[0, 0]))
    assert images.shape == (2, 256, 256, 1)
    logits = d(images)
    assert logits.shape == (2, 1) and np.all(np.isfinite(logits.numpy()))


def test_mapping_network_is_trained():
    g = tiny_generator()
    trainable = {id(v) for v in g.trainable_variables}
    mapping_vars = g.mapping.trainable_variables
    assert len(mapping_vars) == 2 * 2                              # kernel + bias per dense layer
    assert all(id(v) in trainable for v in mapping_vars)
    assert id(g.mapping.w_avg) not in trainable                    # a running mean, not a weight
    z = tf.random.stateless_normal([2, 8], seed=[1, 1])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(g(z, noise_mode="const") ** 2)
    grads = tape.gradient(loss, mapping_vars)
    assert all(gr is not None and float(tf.reduce_sum(tf.abs(gr))) > 0 for gr in grads)


def test_discriminator_returns_unbounded_logits():
    d = Discriminator(**TINY)
    images = tf.random.stateless_normal([4, 8, 8, 1], seed=[2, 2])
    d.out.kernel.assign(d.out.kernel * 1000.0)
    logits = d(images).numpy()
    assert logits.min() < 0.0 and np.abs(logits).max() > 1.0      # no sigmoid, no tanh


def test_generator_structure_and_num_ws():
    g = tiny_generator(resolution=16)
    assert g.num_ws == num_ws_for(16) == 6
    ws = tf.random.stateless_normal([2, g.num_ws, 8], seed=[3, 3])
    out = g.synthesis(ws, noise_mode="const")
    # The last style only drives the final ToRGB: changing it changes the image but not its layout.
    ws2 = tf.concat([ws[:, :-1], ws[:, -1:] * 2.0], axis=1)
    out2 = g.synthesis(ws2, noise_mode="const")
    assert out.shape == (2, 16, 16, 1)
    assert not np.allclose(out.numpy(), out2.numpy())


def test_truncation_pulls_to_w_avg():
    g = tiny_generator()
    g.mapping.w_avg.assign(tf.random.stateless_normal([8], seed=[4, 4]))
    z = tf.random.stateless_normal([3, 8], seed=[5, 5])
    at_mean = g(z, psi=0.0, noise_mode="const").numpy()
    np.testing.assert_allclose(at_mean[0], at_mean[1], atol=1e-5)   # every z maps to w_avg
    free = g(z, psi=1.0, noise_mode="const").numpy()
    assert not np.allclose(free[0], free[1])
    partial = g(z, psi=0.0, truncation_cutoff=2, noise_mode="const").numpy()
    assert not np.allclose(partial[0], partial[1])                  # fine layers keep their own w


def test_generator_keras_round_trip(tmp_path):
    g = tiny_generator()
    for v in g.trainable_variables:
        v.assign(v + 0.05)
    z = np.random.default_rng(0).standard_normal([2, 8]).astype(np.float32)
    before = g(z, noise_mode="const").numpy()
    g.save(tmp_path / "g.keras")
    loaded = keras.models.load_model(tmp_path / "g.keras")
    np.testing.assert_array_equal(loaded(z, noise_mode="const").numpy(), before)


def test_second_order_gradients_through_d_match_finite_differences():
    """R1 differentiates D's input gradient w.r.t. D's weights; check that in float64."""
    keras.config.set_dtype_policy("float64")
    try:
        d = Discriminator(resolution=8, channel_base=64, channel_max=8, mbstd_group_size=2)
    finally:
        keras.config.set_dtype_policy("float32")
    images = tf.constant(np.random.default_rng(1).standard_normal([4, 8, 8, 1]))

    def r1():
        with tf.GradientTape() as tape:
            tape.watch(images)
            logits = tf.reduce_sum(d(images))
        return tf.reduce_sum(tf.square(tape.gradient(logits, images)))

    with tf.GradientTape() as outer:
        penalty = r1()
    grads = outer.gradient(penalty, d.trainable_variables)
    missing = [v.path for v, g in zip(d.trainable_variables, grads)
               if g is None or not np.all(np.isfinite(g.numpy()))]
    # Only the last layer's bias cannot influence the input gradient.
    assert missing == [d.out.bias.path]
    nonzero = [v.path for v, g in zip(d.trainable_variables, grads) if g is not None and np.any(g.numpy())]
    # After the (non-linear) minibatch stddev D is piecewise linear, so the input gradient cannot
    # depend on the biases there; every other weight must feed the penalty.
    after_mbstd = {d.conv4.bias.path, d.fc.bias.path, d.out.bias.path}
    assert set(v.path for v in d.trainable_variables) - set(nonzero) == after_mbstd

    rng = np.random.default_rng(2)
    direction = [rng.standard_normal(v.shape) for v in d.trainable_variables]
    analytic = sum(float(np.sum(g.numpy() * u)) for g, u in zip(grads, direction) if g is not None)
    eps = 1e-5
    original = [v.numpy() for v in d.trainable_variables]
    values = []
    for sign in (1.0, -1.0):
        for v, o, u in zip(d.trainable_variables, original, direction):
            v.assign(o + sign * eps * u)
        values.append(float(r1()))
    for v, o in zip(d.trainable_variables, original):
        v.assign(o)
    numeric = (values[0] - values[1]) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4)


@pytest.mark.parametrize("const_std", [0.05, 1.0])
def test_the_learned_constant_starts_at_the_chosen_spread(const_std):
    """StyleGAN2 starts the 4x4 constant at N(0, 1); this project's original default was 0.05."""
    g = Generator(resolution=8, channel_base=2048, channel_max=256, z_dim=8, w_dim=8, mapping_layers=2,
                  const_std=const_std)
    const = g.synthesis.const.numpy()                                           # [4, 4, 256]
    assert abs(const.std() - const_std) < 0.06 * const_std and abs(const.mean()) < 0.1 * const_std


def test_a_configuration_saved_before_the_faithful_options_keeps_its_networks():
    from config import Config
    saved = {k: v for k, v in Config().__dict__.items() if k not in ("const_std", "d_downsample")}
    restored = Config.from_dict(saved)
    assert (restored.const_std, restored.d_downsample) == (0.05, "decimate")
    assert Config.from_dict({**saved, "d_downsample": "strided"}).d_downsample == "strided"
    with pytest.raises(ValueError, match="d_downsample"):
        Config(d_downsample="average")



# ---------------------------------------------------------------------------------------------
# float16 by resolution, as the reference (num_fp16_res, conv_clamp)
# ---------------------------------------------------------------------------------------------

def test_the_float16_resolutions_are_the_highest_ones_never_4x4():
    from layers import half_precision_policy
    half = lambda resolution, n: [r for r in (4, 8, 16, 32, 64) if r <= resolution  # noqa: E731
                                  and half_precision_policy(r, resolution, n) == "mixed_float16"]
    assert half(64, 4) == [8, 16, 32, 64] and half(64, 2) == [32, 64] and half(64, 0) == []
    assert half(64, 9) == [8, 16, 32, 64] and half(8, 4) == [8]
    from config import Config
    assert (Config(precision="float16").half_resolutions, Config(precision="float16").conv_clamp) == (4, 256.0)
    for precision in ("float32", "bfloat16"):
        assert (Config(precision=precision).half_resolutions, Config(precision=precision).conv_clamp) == (0, None)


def float16_pair(network, **kwargs):
    """The same weights twice: float16 in the 2 highest resolutions, and all float32; both clamped at 256."""
    half, full = network(fp16_resolutions=2, conv_clamp=256, **kwargs), network(conv_clamp=256, **kwargs)
    for a, b in zip(full.weights, half.weights):
        a.assign(b)
    return half, full


G_SIZES = dict(resolution=32, z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=32)


def test_the_generator_computes_its_two_highest_resolutions_in_float16_and_matches_float32():
    half, full = float16_pair(Generator, **G_SIZES)
    dtypes = {layer.name: layer.compute_dtype for layer in half.synthesis.convs + half.synthesis.torgbs}
    assert {k for k, v in dtypes.items() if v == "float16"} == {"b16_conv0", "b16_conv1", "b16_torgb",
                                                                "b32_conv0", "b32_conv1", "b32_torgb"}
    assert half.mapping.compute_dtype == "float32"
    z = tf.random.stateless_normal([4, 16], seed=[1, 2])
    y_half, y_full = half(z, noise_mode="const"), full(z, noise_mode="const")
    assert y_half.dtype == tf.float32                                    # the image sum stays float32
    assert np.abs(y_half.numpy() - y_full.numpy()).max() < 0.05 * y_full.numpy().std()


def test_a_float16_discriminator_that_overflowed_before_now_stays_finite_and_matches_float32():
    """Kernels 8x their start gain each layer past float16's 65504 (a D grown during training)."""
    sizes = dict(resolution=32, channel_base=256, channel_max=32)
    images = tf.random.stateless_normal([4, 32, 32, 1], seed=[3, 4])
    keras.mixed_precision.set_global_policy("mixed_float16")                        # before: all float16, no clamp
    before = Discriminator(**sizes)
    keras.mixed_precision.set_global_policy("float32")
    for v in before.weights:
        if v.path.endswith("kernel"):
            v.assign(v * 8.0)
    assert not np.all(np.isfinite(before(images).numpy()))
    half, full = float16_pair(Discriminator, **sizes)
    for network in (half, full):
        for a, b in zip(network.weights, before.weights):
            a.assign(b)
    assert half.from_rgb.compute_dtype == half.blocks[1][0].compute_dtype == "float16"
    assert half.blocks[2][0].compute_dtype == half.conv4.compute_dtype == "float32"
    got, want = half(images).numpy(), full(images).numpy()
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, atol=0.02 * np.abs(want).max())


def test_float16_discriminator_at_its_start_matches_float32():
    half, full = float16_pair(Discriminator, resolution=32, channel_base=256, channel_max=32)
    images = tf.random.stateless_normal([4, 32, 32, 1], seed=[5, 6])
    want = full(images).numpy()
    np.testing.assert_allclose(half(images).numpy(), want, atol=0.02 * np.abs(want).max())


def test_a_float16_generator_survives_keras_save_and_load(tmp_path):
    half, _ = float16_pair(Generator, **G_SIZES)
    z = tf.random.stateless_normal([2, 16], seed=[7, 8])
    half.save(tmp_path / "g.keras")
    loaded = keras.models.load_model(tmp_path / "g.keras")
    assert loaded.synthesis.convs[-1].compute_dtype == "float16" and loaded.conv_clamp == 256
    np.testing.assert_array_equal(loaded(z, noise_mode="const").numpy(), half(z, noise_mode="const").numpy())
