"""augment.py: each op against NumPy or its formula, exact identity at p=0, exact gradients of first
and second order, the p controller's arithmetic, replica independence, checkpoints and XLA."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import augment as A
from config import Config

ALL_OPS = A.ops_for("bgc", luma_flip=True)
SEED = tf.constant([3, 7], tf.int64)


def images(batch=4, res=8, seed=0, dtype=np.float32):
    return tf.constant(np.random.default_rng(seed).uniform(-1, 1, [batch, res, res, 1]).astype(dtype))


def with_params(batch, **changes):
    params = A.identity_params(batch)
    params.update({k: tf.constant(v, params[k].dtype) for k, v in changes.items()})
    return params


def params_for(x, seed, p, op_names):
    """The parameters `augment_batch` draws for these images and seed (same tables, same sampling)."""
    uniform, normal = A.random_tables(x.shape[0], seed)
    return A.sample_params(uniform, normal, p, op_names, x.shape[1], x.shape[2])


# ---------------------------------------------------------------------------------------------
# NumPy references, sharing no code with augment.py
# ---------------------------------------------------------------------------------------------

def np_resample(x, matrix, pad=64):
    """Pad by reflection, then bilinear interpolation at matrix @ (c - cx, r - cy, 1) + (cx, cy)."""
    b, h, w, c = x.shape
    xp = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)], mode="reflect")
    cx, cy = (w - 1) / 2, (h - 1) / 2
    out = np.zeros_like(x, dtype=np.float64)
    for n in range(b):
        for r in range(h):
            for col in range(w):
                sx, sy, _ = matrix[n] @ np.array([col - cx, r - cy, 1.0])
                sx, sy = sx + cx + pad, sy + cy + pad
                x0, y0 = int(np.floor(sx)), int(np.floor(sy))
                fx, fy = sx - x0, sy - y0
                out[n, r, col] = ((1 - fx) * (1 - fy) * xp[n, y0, x0] + fx * (1 - fy) * xp[n, y0, x0 + 1]
                                  + (1 - fx) * fy * xp[n, y0 + 1, x0] + fx * fy * xp[n, y0 + 1, x0 + 1])
    return out


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

def test_groups_select_ops_and_bad_arguments_are_named():
    assert A.ops_for("bgc") == ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
                                "brightness", "contrast")
    assert A.ops_for("c", luma_flip=True) == ("brightness", "contrast", "lumaflip")
    assert A.ops_for("gb") == A.GEOMETRIC_OPS
    with pytest.raises(ValueError, match="'bx'"):
        A.ops_for("bx")
    with pytest.raises(ValueError, match="'sometimes'"):
        A.AdaptiveAugment(mode="sometimes")
    with pytest.raises(ValueError, match="1.5"):
        A.AdaptiveAugment(initial_p=1.5)
    with pytest.raises(ValueError, match="0"):
        A.AdaptiveAugment(interval=0)
    with pytest.raises(ValueError, match="'off'"):
        A.from_config(Config(augment="off"))


def test_from_config_and_keras_serialization_round_trip():
    layer = A.from_config(Config(augment="fixed", augment_p=0.3, ada_target=0.7, ada_interval=8, ada_kimg=100.0))
    assert (layer.mode, float(layer.p), layer.target, layer.interval, layer.kimg) == ("fixed", pytest.approx(0.3),
                                                                                   0.7, 8, 100.0)
    copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(copy, A.AdaptiveAugment) and copy.get_config() == layer.get_config()


# ---------------------------------------------------------------------------------------------
# The ops
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ALL_OPS)
def test_each_op_alone_keeps_shape_dtype_and_changes_the_images(op):
    x = images()
    y = A.augment_batch(x, SEED, 1.0, (op,))
    assert y.shape == x.shape and y.dtype == x.dtype
    changed = [not np.allclose(a, b) for a, b in zip(x.numpy(), y.numpy())]
    assert any(changed), f"{op} at p=1 left every sample unchanged"
    if op in A.GEOMETRIC_OPS:
        # Bilinear weights with reflection are convex combinations of each sample's own pixels.
        lo, hi = x.numpy().min(axis=(1, 2, 3)), x.numpy().max(axis=(1, 2, 3))
        assert np.all(y.numpy().min(axis=(1, 2, 3)) >= lo - 1e-6)
        assert np.all(y.numpy().max(axis=(1, 2, 3)) <= hi + 1e-6)


@pytest.mark.parametrize("op", ["xflip", "rotate90", "xint"])
def test_blits_only_permute_pixels(op):
    x = images()
    y = A.augment_batch(x, SEED, 1.0, (op,)).numpy()
    for a, b in zip(x.numpy(), y):
        np.testing.assert_array_equal(np.sort(np.unique(b)), np.intersect1d(np.unique(b), a))


def test_brightness_adds_one_offset_per_sample():
    x = images()
    y = A.augment_batch(x, SEED, 1.0, ("brightness",)).numpy()
    b = params_for(x, SEED, 1.0, ("brightness",))["brightness"].numpy()
    np.testing.assert_array_equal(y, x.numpy() + b[:, None, None, None])
    assert np.all(np.abs(b) > 0) and len(set(b)) == len(b)


def test_contrast_scales_deviations_from_the_sample_mean():
    x = images().numpy()
    y = A.augment_batch(tf.constant(x), SEED, 1.0, ("contrast",)).numpy()
    c = params_for(tf.constant(x), SEED, 1.0, ("contrast",))["contrast"].numpy()
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(y, mean + c[:, None, None, None] * (x - mean), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)), atol=1e-6)
    assert np.all(c > 0) and np.all(c != 1.0)


def test_luma_flip_mirrors_intensities_about_the_mean_and_is_off_by_default():
    assert "lumaflip" not in A.ops_for("bgc")
    x = images().numpy()
    y = A.augment_batch(tf.constant(x), SEED, 1.0, ("lumaflip",)).numpy()
    flip = params_for(tf.constant(x), SEED, 1.0, ("lumaflip",))["lumaflip"].numpy()
    assert 0 < flip.sum() < len(flip)   # this seed flips some samples and not others
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    expected = np.where(flip[:, None, None, None] > 0, 2 * mean - x, x)
    np.testing.assert_allclose(y, expected, atol=1e-6)


def test_colour_transform_formula_on_hand_values():
    x = tf.constant([[[[0.0], [1.0]], [[2.0], [5.0]]]])                               # mean 2
    y = A.colour_transform(x, tf.constant([0.5]), tf.constant([2.0]), tf.constant([1.0]))
    # m + b - c (x - m) = 2.5 - 2 (x - 2)
    np.testing.assert_allclose(y.numpy().ravel(), [6.5, 4.5, 2.5, -3.5])


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_p_zero_is_exactly_the_identity(seed):
    x = images(seed=seed)
    layer = A.AdaptiveAugment(initial_p=0.0, luma_flip=True)
    y = layer(x, tf.constant([seed, 2 * seed + 1], tf.int64))
    np.testing.assert_array_equal(y.numpy(), x.numpy())


def test_xflip_and_quarter_turns_equal_numpy_exactly():
    x = images(batch=4, res=6)
    y = A.augment_images(x, with_params(4, xflip=[1, 0, 0, 0], rotate90=[0, 1, 2, 3]), colour=False).numpy()
    xn = x.numpy()
    np.testing.assert_array_equal(y[0], np.flip(xn[0], axis=1))
    for k in (1, 2, 3):
        np.testing.assert_array_equal(y[k], np.rot90(xn[k], k))


def test_flip_then_turn_compose_in_pipeline_order():
    x = images(batch=1, res=6)
    y = A.augment_images(x, with_params(1, xflip=[1], rotate90=[1]), colour=False).numpy()
    np.testing.assert_array_equal(y[0], np.rot90(np.flip(x.numpy()[0], axis=1)))


def test_integer_translation_shifts_content_with_reflection():
    x = images(batch=1, res=8)
    y = A.augment_images(x, with_params(1, xint=[[2.0, -1.0]]), colour=False).numpy()[0]
    padded = np.pad(x.numpy()[0], [(2, 2), (2, 2), (0, 0)], mode="reflect")
    # Content moves right by 2 and up by 1: out[r, c] = in[r + 1, c - 2].
    np.testing.assert_array_equal(y, padded[2 + 1:2 + 1 + 8, 2 - 2:2 - 2 + 8])


def test_continuous_rotation_by_a_right_angle_is_a_quarter_turn():
    x = images(batch=1, res=6)
    y = A.augment_images(x, with_params(1, rotate_pre=[math.pi / 2]), colour=False).numpy()
    np.testing.assert_allclose(y[0], np.rot90(x.numpy()[0]), atol=1e-5)


def test_resample_matches_numpy_bilinear_with_reflection():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, [2, 7, 9, 1])
    matrix = np.array([[[0.8, -0.3, 1.7], [0.4, 1.3, -2.2], [0, 0, 1]],
                       [[1.9, 0.2, -6.4], [-0.5, 0.6, 3.1], [0, 0, 1]]])
    y = A.resample(tf.constant(x), tf.constant(matrix))
    np.testing.assert_allclose(y.numpy(), np_resample(x, matrix), rtol=1e-10, atol=1e-12)


def test_reflect_index_matches_np_pad_far_outside():
    for size in (1, 2, 5):
        i = np.arange(-23, 23 + size)
        expected = np.pad(np.arange(size), 23, mode="reflect") if size > 1 else np.zeros_like(i)
        np.testing.assert_array_equal(A.reflect_index(tf.constant(i), size).numpy(), expected)


def test_sampling_matrix_composes_the_inverses_in_pipeline_order():
    """Scale 2 then translate by (3, 0): output point q samples (q - (3, 0)) / 2."""
    m = A.sampling_matrix(with_params(1, scale=[2.0], xfrac=[[3.0, 0.0]])).numpy()[0]
    np.testing.assert_allclose(m @ [5.0, 4.0, 1.0], [1.0, 2.0, 1.0], rtol=1e-6)


def test_probabilities_and_strengths_of_the_draws():
    n, p = 20000, 0.36
    rng = np.random.default_rng(0)
    uniform = tf.constant(rng.uniform(size=[n, len(A._UNIFORM)]), tf.float32)
    normal = tf.constant(rng.standard_normal([n, len(A._NORMAL)]), tf.float32)
    params = {k: v.numpy() for k, v in A.sample_params(uniform, normal, p, ALL_OPS, 16, 16).items()}
    gates = uniform.numpy()
    assert abs(np.mean(gates[:, A.U["scale"]] < p) - p) < 0.02
    scaled = params["scale"] != 1.0
    assert abs(scaled.mean() - p) < 0.02 and abs(np.log2(params["scale"][scaled]).std() - 0.2) < 0.01
    # Each rotation with 1 - sqrt(1 - p) = 0.2, so some rotation with probability p.
    pre, post = params["rotate_pre"] != 0, params["rotate_post"] != 0
    assert abs(pre.mean() - 0.2) < 0.015 and abs(post.mean() - 0.2) < 0.015
    assert abs((pre | post).mean() - p) < 0.02
    assert np.abs(params["rotate_pre"]).max() <= math.pi
    assert np.all(params["xint"] == np.round(params["xint"])) and np.abs(params["xint"]).max() == 2  # 0.125 * 16
    assert set(np.unique(params["rotate90"])) == {0, 1, 2, 3}
    bright = params["brightness"][params["brightness"] != 0]
    assert abs(bright.std() - 0.2) < 0.01
    assert abs(np.log2(params["contrast"][params["contrast"] != 1]).std() - 0.5) < 0.02


# ---------------------------------------------------------------------------------------------
# Randomness, dtypes, gradients
# ---------------------------------------------------------------------------------------------

def test_fixed_seed_reproduces_and_other_seeds_differ():
    layer = A.AdaptiveAugment(initial_p=1.0)
    x = images()
    a, b = layer(x, SEED).numpy(), layer(x, SEED).numpy()
    c = layer(x, SEED + [0, 1]).numpy()
    np.testing.assert_array_equal(a, b)
    assert all(not np.allclose(u, v) for u, v in zip(a, c))


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16, tf.float64])
def test_any_float_dtype_comes_back_in_kind(dtype):
    x = tf.cast(images(), dtype)
    y = A.AdaptiveAugment(initial_p=1.0)(x, SEED)
    assert y.dtype == dtype and y.shape == x.shape
    reference = A.AdaptiveAugment(initial_p=1.0)(tf.cast(x, tf.float32), SEED)
    np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), reference.numpy(), atol=0.02)


def test_gradient_matches_central_differences():
    layer = A.AdaptiveAugment(initial_p=1.0, luma_flip=True)
    x = images(batch=2, res=5, dtype=np.float64)
    rng = np.random.default_rng(2)
    weights = tf.constant(rng.standard_normal(x.shape))

    def loss(x):
        return tf.reduce_sum(tf.sin(2.0 * layer(tf.convert_to_tensor(x), SEED)) * weights)

    with tf.GradientTape() as tape:
        tape.watch(x)
        value = loss(x)
    grad = tape.gradient(value, x).numpy()
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)
    # Directional derivatives along random directions and along single pixels.
    directions = [rng.standard_normal(x.shape) for _ in range(4)]
    for idx in [(0, 0, 0, 0), (0, 2, 3, 0), (1, 4, 4, 0), (1, 1, 0, 0)]:
        directions.append(np.zeros(x.shape))
        directions[-1][idx] = 1.0
    eps, base = 1e-6, x.numpy()
    for d in directions:
        fd = (float(loss(base + eps * d)) - float(loss(base - eps * d))) / (2 * eps)
        np.testing.assert_allclose(np.sum(grad * d), fd, rtol=1e-6, atol=1e-8)


def test_second_order_gradient_like_r1_is_finite_and_exact():
    layer = A.AdaptiveAugment(initial_p=1.0)
    x = images(batch=2, res=6, dtype=np.float64)
    kernel0 = np.random.default_rng(3).standard_normal([3, 3, 1, 2])

    def r1(kernel):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = tf.reduce_sum(tf.tanh(tf.nn.conv2d(layer(x, SEED), kernel, 1, "SAME")), axis=[1, 2, 3])
        return tf.reduce_sum(tf.square(tape.gradient(logits, x)))

    kernel = tf.Variable(kernel0)
    with tf.GradientTape() as tape:
        penalty = r1(kernel)
    grad = tape.gradient(penalty, kernel)
    assert grad is not None
    grad = grad.numpy()
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)
    eps, d = 1e-6, np.zeros_like(kernel0)
    d[1, 2, 0, 1] = eps
    fd = (float(r1(tf.constant(kernel0 + d))) - float(r1(tf.constant(kernel0 - d)))) / (2 * eps)
    np.testing.assert_allclose(grad[1, 2, 0, 1], fd, rtol=1e-5)


def test_xla_compiles_the_transform_and_its_second_order_gradient():
    x = images()
    params = params_for(x, SEED, 1.0, ALL_OPS)
    kernel = tf.constant(np.random.default_rng(3).standard_normal([3, 3, 1, 2]), tf.float32)

    @tf.function(jit_compile=True)
    def compiled(x, params, seed, p):
        with tf.GradientTape() as outer:
            outer.watch(kernel)
            with tf.GradientTape() as inner:
                inner.watch(x)
                drawn = A.augment_batch(x, seed, p, ALL_OPS)
                logits = tf.reduce_sum(tf.tanh(tf.nn.conv2d(drawn, kernel, 1, "SAME")), axis=[1, 2, 3])
            r1 = tf.reduce_sum(tf.square(inner.gradient(logits, x)))
        return A.augment_images(x, params), drawn, outer.gradient(r1, kernel)

    given, drawn, r1_grad = compiled(x, params, SEED, tf.constant(1.0))
    np.testing.assert_allclose(given.numpy(), A.augment_images(x, params).numpy(), atol=1e-5)
    assert np.all(np.isfinite(r1_grad.numpy())) and np.any(r1_grad.numpy() != 0)
    # XLA's stateless random numbers differ from TensorFlow's kernels, so compiled draws are only
    # compared with themselves: reproducible, and the identity at p=0.
    np.testing.assert_array_equal(compiled(x, params, SEED, tf.constant(1.0))[1].numpy(), drawn.numpy())
    np.testing.assert_array_equal(compiled(x, params, SEED, tf.constant(0.0))[1].numpy(), x.numpy())
    assert not np.allclose(drawn.numpy(), x.numpy())


# ---------------------------------------------------------------------------------------------
# The p controller
# ---------------------------------------------------------------------------------------------

def test_adjust_p_table():
    cases = [  # p, r_t, target, images, kimg -> new p
        (0.5, 0.9, 0.6, 16, 1.0, 0.516),
        (0.5, 0.1, 0.6, 16, 1.0, 0.484),
        (0.5, 0.6, 0.6, 16, 1.0, 0.5),
        (0.99, 1.0, 0.6, 100, 1.0, 1.0),
        (0.01, -1.0, 0.6, 100, 1.0, 0.0),
    ]
    for p, rt, target, n, kimg, expected in cases:
        assert float(A.adjust_p(p, rt, target, n, kimg)) == pytest.approx(expected, abs=1e-7)


def run_steps(layer, logit_batches, global_batch):
    out = []
    for logits in logit_batches:
        layer.accumulate(tf.constant(logits, tf.float32)[:, None])
        layer.update(global_batch)
        out.append(float(layer.p))
    return out


def test_ada_moves_p_towards_the_target_every_interval():
    layer = A.AdaptiveAugment(mode="ada", initial_p=0.5, target=0.6, interval=2, kimg=0.1)
    overfit, fine = [3.0, 1.0, 2.0, 0.5], [3.0, -1.0, -2.0, 0.5]      # r_t 1 and 0
    step = 4 * 2 / 100.0                                                # batch * interval / (kimg * 1000)
    ps = run_steps(layer, [overfit, overfit, fine, fine, fine], 4)
    np.testing.assert_allclose(ps, [0.5, 0.5 + step, 0.5 + step, 0.5, 0.5], atol=1e-7)
    assert float(layer.rt) == 0.0 and int(layer.pending_steps) == 1
    assert float(layer.sign_sum) == 0.0 and float(layer.count) == 4.0
    high = A.AdaptiveAugment(initial_p=0.99, interval=2, kimg=0.1)
    assert run_steps(high, [overfit, overfit], 4) == [pytest.approx(0.99), 1.0]     # clipped
    low = A.AdaptiveAugment(initial_p=0.01, interval=2, kimg=0.1)
    assert run_steps(low, [fine, fine], 4) == [pytest.approx(0.01), 0.0]


def test_fixed_p_never_moves_but_r_t_is_reported():
    layer = A.AdaptiveAugment(mode="fixed", initial_p=0.3, interval=1, kimg=0.001)
    ps = run_steps(layer, [[1.0, 1.0, -1.0, 1.0]] * 3, 4)
    assert ps == [pytest.approx(0.3)] * 3 and float(layer.rt) == 0.5


def test_mirrored_strategy_matches_one_device(mirrored):
    """Uneven signs across replicas: summing the statistics (not averaging or taking replica 0's)
    is what gives the single-device p."""
    batches = [[1.0, 2.0, 3.0, 4.0, 5.0, -1.0, -2.0, -3.0],     # replica 0 all positive, replica 1 half
               [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0, 1.0],
               [-1.0, -1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0],
               [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
               [1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0]]

    def run(strategy):
        with strategy.scope():
            layer = A.AdaptiveAugment(initial_p=0.5, interval=2, kimg=0.1)

        @tf.function
        def train(logits):
            def step(local):
                layer.accumulate(local)
                layer.update(8)
            strategy.run(step, args=(logits,))

        history = []
        for batch in batches:
            logits = tf.constant(batch)[:, None]
            train(strategy.experimental_distribute_values_from_function(
                lambda ctx: tf.split(logits, ctx.num_replicas_in_sync)[ctx.replica_id_in_sync_group]))
            history.append([float(v.numpy()) for v in (layer.p, layer.rt, layer.sign_sum, layer.count,
                                                        layer.pending_steps)])
        return np.array(history)

    one = run(tf.distribute.OneDeviceStrategy("/cpu:0"))
    two = run(mirrored)
    np.testing.assert_array_equal(two, one)
    # r_t over steps 1-2 is 8/16 = 0.5, over steps 3-4 6/16: p down by 8 * 2 / 100 each time.
    np.testing.assert_allclose(one[:, 0], [0.5, 0.34, 0.34, 0.18, 0.18], atol=1e-6)
    np.testing.assert_array_equal(one[:, 2:], [[2, 8, 1], [0, 0, 0], [-2, 8, 1], [0, 0, 0], [0, 8, 1]])


def test_mirrored_augmentation_matches_one_device(mirrored):
    x = images(batch=4)
    layer_one = A.AdaptiveAugment(initial_p=1.0)
    expected = layer_one(x, SEED).numpy()
    strategy = mirrored
    with strategy.scope():
        layer = A.AdaptiveAugment(initial_p=1.0)
    dist = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.split(x, 2)[ctx.replica_id_in_sync_group])
    out = strategy.run(lambda local: layer(local, SEED), args=(dist,))
    got = np.concatenate([t.numpy() for t in strategy.experimental_local_results(out)])
    np.testing.assert_allclose(got, expected, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------

def test_checkpoint_round_trip_restores_p_and_statistics(tmp_path):
    layer = A.AdaptiveAugment(initial_p=0.25, interval=3, kimg=0.1)
    run_steps(layer, [[1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, -1.0, 1.0], [1.0, 2.0, 3.0]], 3)
    saved = [v.numpy() for v in layer.weights]
    assert saved[0] != np.float32(0.25) and saved[4] != 0        # p moved, statistics pending
    path = tf.train.Checkpoint(augment=layer).save(str(tmp_path / "ckpt"))
    fresh = A.AdaptiveAugment(initial_p=0.9)
    tf.train.Checkpoint(augment=fresh).restore(path).assert_existing_objects_matched()
    for a, b, v in zip(saved, [v.numpy() for v in fresh.weights], layer.weights):
        assert a == b, v.path


def test_gan_trains_with_ada_and_checkpoints_its_state(tmp_path):
    import gan as gan_module
    config = Config(resolution=8, channel_base=128, channel_max=16, z_dim=8, w_dim=8, mapping_layers=2,
                    batch_size=4, mbstd_group_size=2, augment="ada", augment_p=0.5, ada_interval=1, ada_kimg=0.1)
    model = gan_module.build_gan(config)
    for i in range(2):
        p_before = float(model.augment.p)
        logs = model.train_logs(images(batch=4, seed=i))
        assert all(np.isfinite(float(logs[k])) for k in ("d_loss", "g_loss", "augment_p", "ada_rt"))
        # Every step (interval 1) moves p by 4 / 100 towards the side r_t is on (r_t is k/4, never 0.6).
        step = 0.04 if float(model.augment.rt) > 0.6 else -0.04
        assert float(model.augment.p) == pytest.approx(p_before + step)
    path = tf.train.Checkpoint(gan=model).save(str(tmp_path / "ckpt"))
    for name in ("p", "rt", "sign_sum", "count", "pending_steps"):
        stored = tf.train.load_variable(path, f"gan/augment/{name}/.ATTRIBUTES/VARIABLE_VALUE")
        assert stored == getattr(model.augment, name).numpy(), name
