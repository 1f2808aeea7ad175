"""The training model: gradients reach every weight, EMA and lazy schedules follow their formulas,
style mixing really mixes, divergence stops cleanly, and replicas give single-device results."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import gan as gan_module
import phantom
import pixels
from config import PRESETS, Config
from gan import NonFiniteLossError, StopOnNonFinite, StyleGAN2, mix_styles, set_precision
from losses import r1_penalty

TINY = Config(resolution=8, channel_base=128, channel_max=16, z_dim=8, w_dim=8, mapping_layers=2,
              batch_size=4, mbstd_group_size=2, d_reg_interval=2, g_reg_interval=2)


def real_batch(batch=4, res=8, seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(-1, 1, [batch, res, res, 1]), tf.float32)


def make_gan(**changes):
    gan = StyleGAN2(TINY.replace(**changes))
    gan.compile()
    return gan


def test_compile_builds_two_adam_optimizers_and_no_stray_one():
    gan = make_gan()
    assert gan.optimizer is None
    assert isinstance(gan.g_optimizer, keras.optimizers.Adam) and isinstance(gan.d_optimizer, keras.optimizers.Adam)
    assert gan.g_optimizer.built and gan.d_optimizer.built
    # Lazy regularisation correction (paper, appendix C): ratio k / (k + 1) with k = 2 here.
    np.testing.assert_allclose(float(gan.d_optimizer.learning_rate), 0.0025 * 2 / 3, rtol=1e-6)
    np.testing.assert_allclose(float(gan.d_optimizer.beta_2), 0.99 ** (2 / 3), rtol=1e-6)


@pytest.mark.parametrize("loss", ["logistic", "bce", "hinge", "wgan-gp"])
def test_every_weight_gets_a_finite_nonzero_gradient(loss):
    gan = make_gan(loss=loss)
    # Push D's output bias away from 0 so the hinge margins are not exactly balanced at init.
    gan.discriminator.out.bias.assign([1.5])
    d_grads, _, _ = gan.d_gradients(real_batch())
    g_grads, _, _, _ = gan.g_gradients(4)
    for variables, grads in [(gan.discriminator.trainable_variables, d_grads),
                             (gan.generator.trainable_variables, g_grads)]:
        for v, g in zip(variables, grads):
            assert g is not None, f"{loss}: no gradient for {v.path}"
            g = g.numpy()
            assert np.all(np.isfinite(g)) and np.any(g != 0), f"{loss}: bad gradient for {v.path}"
    mapping = {id(v) for v in gan.generator.mapping.trainable_variables}
    assert mapping and mapping <= {id(v) for v in gan.generator.trainable_variables}


def test_ema_follows_its_formula():
    gan = make_gan(ema_kimg=0.01, ema_rampup=None)
    before_ema = [v.numpy() for v in gan.generator_ema.trainable_variables]
    gan.train_logs(real_batch())
    beta = 0.5 ** (4 / 10.0)                                    # batch / half-life in images
    for e, g, e0 in zip(gan.generator_ema.trainable_variables, gan.generator.trainable_variables, before_ema):
        np.testing.assert_allclose(e.numpy(), g.numpy() + (e0 - g.numpy()) * beta, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(gan.generator_ema.mapping.w_avg.numpy(), gan.generator.mapping.w_avg.numpy())


def test_ema_rampup_shortens_the_half_life_early():
    gan = make_gan(ema_kimg=10.0, ema_rampup=0.05)
    gan.images_seen.assign(1000)
    assert abs(float(gan.update_ema(4.0)) - 0.5 ** (4 / 50.0)) < 1e-6   # min(10000, 1000 * 0.05) = 50


def test_w_avg_tracks_the_mean_w():
    gan = make_gan(w_avg_beta=0.0)
    gan.train_logs(real_batch())
    assert np.linalg.norm(gan.generator.mapping.w_avg.numpy()) > 0


def test_lazy_regularisation_fires_on_the_right_steps():
    gan = make_gan(d_reg_interval=3, g_reg_interval=2)
    fired = [(bool(logs["d_reg"]), float(logs["r1"]) > 0, bool(logs["g_reg"]), float(logs["pl"]) > 0)
             for logs in (gan.train_logs(real_batch(seed=i)) for i in range(6))]
    assert [f[0] for f in fired] == [True, False, False, True, False, False]
    assert [f[1] for f in fired] == [f[0] for f in fired]
    assert [f[2] for f in fired] == [True, False, True, False, True, False]
    assert [f[3] for f in fired] == [f[2] for f in fired]


def test_style_mixing_uses_two_different_latents():
    gan = make_gan(style_mixing_prob=1.0)
    ws, ws_plain = gan.sample_ws(4, gan_module.SALT_Z_G, gan_module.SALT_Z2_G, gan_module.SALT_MIX_G)
    ws, ws_plain = ws.numpy(), ws_plain.numpy()
    num_ws = gan.generator.num_ws
    same = [np.allclose(ws[:, i], ws_plain[:, i]) for i in range(num_ws)]
    cutoff = same.index(False)
    assert 1 <= cutoff < num_ws and all(same[:cutoff]) and not any(same[cutoff:])
    # The second half comes from one other latent: identical across its layers, unlike the first.
    np.testing.assert_allclose(ws[:, cutoff], ws[:, -1])
    assert not np.allclose(ws[:, 0], ws[:, -1])
    unmixed, _ = make_gan(style_mixing_prob=0.0).sample_ws(4, gan_module.SALT_Z_G, gan_module.SALT_Z2_G,
                                                             gan_module.SALT_MIX_G)
    np.testing.assert_allclose(unmixed.numpy()[:, 0], unmixed.numpy()[:, -1])


def test_mix_styles_takes_coarse_from_first_and_fine_from_second():
    a, b = tf.zeros([1, 4, 2]), tf.ones([1, 4, 2])
    np.testing.assert_array_equal(mix_styles(a, b, 3).numpy()[0, :, 0], [0, 0, 0, 1])


def test_every_random_stream_of_many_steps_and_layers_is_distinct():
    """Keys of every (step, purpose) and, folded once more, of every noise layer never coincide:
    with the old offsets, the second latent (salt + 1000) and layer noise (salt + layer) did."""
    gan = make_gan(resolution=16)
    layers = [n.seed for n in gan.generator.synthesis.noises]
    assert len(set(layers)) == len(layers)
    steps, purposes = tf.range(300, dtype=tf.int64), range(gan_module.SALT_PL_Z2 + 1)
    keys = tf.stack([tf.vectorized_map(lambda s: gan_module.stream_seed(0, s, p), steps) for p in purposes])
    keys = tf.reshape(keys, [-1, 2])                                              # [purposes * steps, 2]
    layer_keys = tf.stack([tf.vectorized_map(lambda k: tf.random.experimental.stateless_fold_in(k, seed), keys)
                           for seed in layers])
    every = np.concatenate([keys.numpy(), layer_keys.numpy().reshape(-1, 2)])
    assert len(np.unique(every, axis=0)) == len(every) == 300 * len(purposes) * (1 + len(layers))
    # Another run seed gives other streams, and equal arguments give equal keys.
    assert not np.array_equal(gan_module.stream_seed(1, 5, 0).numpy(), gan_module.stream_seed(0, 5, 0).numpy())
    np.testing.assert_array_equal(gan_module.stream_seed(0, 5, 3).numpy(), keys.numpy()[3 * 300 + 5])


def test_training_is_reproducible_from_the_seed():
    results = []
    for _ in range(2):
        keras.utils.set_random_seed(0)
        gan = make_gan()
        for i in range(2):
            logs = gan.train_logs(real_batch(seed=i))
        results.append((float(logs["d_loss"]), gan.generator.trainable_variables[0].numpy()))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_xla_step_equals_the_plain_step():
    """The quick preset's step, at 8x8 with 16 channels, compiled by XLA (one compiled pass each for D
    loss, R1, G loss and path length) trains like the plain step: one step with both lazy regularisers,
    one without. The plain step runs eagerly: the same arithmetic, without a 6 s trace."""
    config = PRESETS["quick"].replace(batch_size=4, resolution=8, channel_base=128, channel_max=16, z_dim=16, w_dim=16)
    reals = tf.random.stateless_uniform([4, 8, 8, 1], seed=[0, 1], minval=-1, maxval=1)
    plain, compiled = StyleGAN2(config), StyleGAN2(config.replace(xla=True))
    for source, net in zip([plain.generator, plain.discriminator, plain.generator_ema],
                           [compiled.generator, compiled.discriminator, compiled.generator_ema]):
        net.set_weights(source.get_weights())
    initial = [tf.identity(w) for w in plain.weights]
    results = []
    for gan in (plain, compiled):
        # SGD moves each weight by lr x its gradient; Adam would turn a gradient of round-off size
        # (XLA's CPU reductions are not even deterministic) into a whole step of either sign.
        gan.compile(g_optimizer=keras.optimizers.SGD(0.01), d_optimizer=keras.optimizers.SGD(0.01))
        step = gan.train_logs   # eager: the XLA passes compile themselves; a trace would add 6 s
        logs = [{k: float(v) for k, v in step(reals).items()} for _ in range(2)]
        results.append((logs, [w.numpy() for w in gan.weights]))
    assert [(logs["d_reg"], logs["g_reg"]) for logs in results[0][0]] == [(1, 1), (0, 0)]
    for plain_logs, xla_logs in zip(results[0][0], results[1][0]):
        for name, value in plain_logs.items():
            np.testing.assert_allclose(xla_logs[name], value, rtol=1e-4, atol=1e-6, err_msg=name)
    moved = max(np.abs(a - b).max() for a, b in zip(results[0][1], [w.numpy() for w in initial]))
    for plain_weight, xla_weight in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(xla_weight, plain_weight, atol=1e-3 * moved)


def test_non_finite_loss_stops_with_the_step():
    gan = make_gan()
    gan.compile(run_eagerly=True)   # the callback is under test here, not the compiled step
    nan_images = np.full([8, 8, 8, 1], np.nan, np.float32)
    data = tf.data.Dataset.from_tensor_slices(nan_images).batch(4, drop_remainder=True)
    with pytest.raises(NonFiniteLossError, match=r"diverged at step 1 \(4 images\)"):
        gan.fit(data, epochs=1, verbose=0, callbacks=[StopOnNonFinite()])


def test_mirrored_strategy_matches_one_device(mirrored):
    """Two logical CPUs with the global batch split in two give the single-device losses and weights."""
    batches = [real_batch(8, seed=i) for i in range(3)]
    # Adam's epsilon at 1e-4, not 1e-8: a gradient of ~1e-8 whose round-off differs between one device
    # and two would otherwise become whole steps of opposite sign.
    config = dict(batch_size=8, mbstd_group_size=2, d_reg_interval=2, g_reg_interval=2, epsilon=1e-4)

    def run(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            gan = make_gan(**config)
        step = gan.train_logs    # eager: tracing costs more than these tiny steps
        losses = []
        for batch in batches:
            dist = strategy.experimental_distribute_values_from_function(
                lambda ctx: tf.split(batch, ctx.num_replicas_in_sync)[ctx.replica_id_in_sync_group])
            logs = strategy.run(step, args=(dist,))
            losses.append([float(strategy.reduce("MEAN", logs[k], axis=None)) for k in ("d_loss", "g_loss", "r1", "pl")])
        return np.array(losses), [v.numpy() for v in gan.generator_ema.weights + gan.discriminator.weights]

    one_losses, one_weights = run(tf.distribute.OneDeviceStrategy("/cpu:0"))
    two_losses, two_weights = run(mirrored)
    np.testing.assert_allclose(two_losses, one_losses, rtol=1e-4, atol=1e-5)
    for a, b in zip(one_weights, two_weights):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-4)


@pytest.mark.parametrize("loss, precision", [("logistic", "float32"), ("bce", "float32"), ("hinge", "float32"),
                                             ("wgan-gp", "float32"), ("logistic", "bfloat16"), ("logistic", "float16")])
def test_a_short_run_on_the_phantom_learns_its_mean_with_every_loss_and_precision(loss, precision):
    """The CPU-scale version of the loss comparison: 48 compiled steps (fit, not eager) on phantom
    slices stay finite, report every metric and move the samples' mean image from far off to near the
    data's, with varied samples."""
    import data
    set_precision(precision)
    images = phantom.synthetic_slices(96, 8, seed=0)[..., None]
    real_mean = pixels.to_unit_range(images).mean(axis=0)
    gan = make_gan(loss=loss, precision=precision, ema_kimg=0.05)
    z = tf.random.stateless_normal([64, TINY.z_dim], seed=[5, 5])

    def error_and_spread():
        samples = tf.cast(gan(z), tf.float32).numpy()
        return np.abs(samples.mean(axis=0) - real_mean).mean(), samples.std(axis=0).mean()

    error_before, _ = error_and_spread()
    history = gan.fit(data.make_dataset(images, 4, seed=0), steps_per_epoch=48, epochs=1, verbose=0,
                      shuffle=False).history
    assert not gan.run_eagerly
    penalty = {"r1": {"r1"}, "gp": {"gp"}, None: set()}[gan.config.d_penalty]
    assert {"d_loss", "g_loss", "pl", "real_logits", "fake_logits"} | penalty <= set(history)
    assert all(np.isfinite(history[k][-1]) for k in ("d_loss", "g_loss", "real_logits", "fake_logits"))
    assert int(gan.images_seen.numpy()) == 192 and int(gan.d_steps.numpy()) == 48
    error_after, spread = error_and_spread()
    share = 0.9 if loss == "wgan-gp" else 0.5          # WGAN-GP moves slower: 0.72 to 0.59 in these steps
    assert error_before > 0.5 and error_after < share * error_before
    assert spread > 0.05                                                 # varied samples, not one image


def test_float16_scales_the_loss_and_skips_a_step_whose_gradients_overflow():
    set_precision("float16")
    gan = make_gan(precision="float16")
    assert isinstance(gan.d_optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(gan.g_optimizer, keras.optimizers.LossScaleOptimizer)
    # Keras starts the scale at 2^15; there the path-length gradient of this fresh model overflows
    # (the float16 convs' demodulation factors are ~8 after pre-normalisation), so the step is skipped
    # and the scale halved (in 48 phantom steps it settles at 2^13). Start this check at 2^12.
    gan.g_optimizer.dynamic_scale.assign(2.0 ** 12)
    d_before = [v.numpy() for v in gan.discriminator.trainable_variables]
    logs = gan.train_logs(real_batch())                       # step 0: R1 and path length are due
    assert all(np.isfinite(float(logs[k])) and float(logs[k]) > 0 for k in ("d_loss", "g_loss", "r1", "pl"))
    assert any(np.any(v.numpy() != b) for v, b in zip(gan.discriminator.trainable_variables, d_before))

    # A scale of 2^60 overflows float16 on the way back: the D step must be skipped and the scale halved.
    gan.d_optimizer.dynamic_scale.assign(2.0 ** 60)
    d_before = [v.numpy() for v in gan.discriminator.trainable_variables]
    gan.train_logs(real_batch(seed=1))
    for v, b in zip(gan.discriminator.trainable_variables, d_before):
        np.testing.assert_array_equal(v.numpy(), b)
    assert float(gan.d_optimizer.dynamic_scale.numpy()) == 2.0 ** 59

    # The same for G on a path-length step (step 2): the skipped step's inf lengths leave pl_mean as it was.
    pl_mean = float(gan.pl_mean.numpy())
    gan.g_optimizer.dynamic_scale.assign(2.0 ** 60)
    g_before = [v.numpy() for v in gan.generator.trainable_variables]
    logs = gan.train_logs(real_batch(seed=2))
    assert bool(logs["g_reg"]) and not np.isfinite(float(logs["pl"]))
    for v, b in zip(gan.generator.trainable_variables, g_before):
        np.testing.assert_array_equal(v.numpy(), b)
    assert float(gan.pl_mean.numpy()) == pl_mean and np.isfinite(pl_mean)


def test_loss_scaled_r1_equals_unscaled_r1():
    """R1 from the gradient of a scaled target, divided back, equals plain R1 (float32: no underflow)."""
    gan = make_gan()
    images = real_batch()
    critic = gan.discriminator
    np.testing.assert_allclose(float(r1_penalty(critic, images, 1024.0)), float(r1_penalty(critic, images)),
                               rtol=1e-5)
