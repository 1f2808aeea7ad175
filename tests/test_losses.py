"""Loss registry as a table of hand-computed values, sign conventions, and penalties in closed form."""

import math

import numpy as np
import pytest
import tensorflow as tf

import losses

REAL = np.array([[2.0], [-1.0]], np.float32)
FAKE = np.array([[0.5], [-3.0]], np.float32)


def softplus(x):
    return math.log1p(math.exp(x))


# Hand-computed from the formulas in the docstrings, for REAL = [2, -1] and FAKE = [0.5, -3].
D_TABLE = {
    "logistic": (softplus(-2) + softplus(1)) / 2 + (softplus(0.5) + softplus(-3)) / 2,
    "bce": (softplus(-2) + softplus(1)) / 2 + (softplus(0.5) + softplus(-3)) / 2,
    "hinge": (0.0 + 2.0) / 2 + (1.5 + 0.0) / 2,
    "wgan-gp": (0.5 - 3.0) / 2 - (2.0 - 1.0) / 2 + 0.001 * (4.0 + 1.0) / 2,
}
G_TABLE = {
    "logistic": (softplus(-0.5) + softplus(3)) / 2,
    "bce": (softplus(-0.5) + softplus(3)) / 2,
    "hinge": -(0.5 - 3.0) / 2,
    "wgan-gp": -(0.5 - 3.0) / 2,
}


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_loss_values_match_hand_computed_table(name):
    spec = losses.get_loss(name)
    np.testing.assert_allclose(float(spec.d_loss(REAL, FAKE)), D_TABLE[name], rtol=1e-5)
    np.testing.assert_allclose(float(spec.g_loss(FAKE)), G_TABLE[name], rtol=1e-5)


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_sign_conventions(name):
    spec = losses.get_loss(name)
    base = float(spec.d_loss(REAL * 0.1, FAKE * 0.1))
    assert float(spec.d_loss(REAL * 0.1 + 0.5, FAKE * 0.1)) < base       # D likes higher real logits
    assert float(spec.d_loss(REAL * 0.1, FAKE * 0.1 - 0.5)) < base       # and lower fake logits
    assert float(spec.g_loss(FAKE * 0.1 + 0.5)) < float(spec.g_loss(FAKE * 0.1))  # G wants D fooled


def test_logistic_is_softplus_of_the_right_sign():
    # The earlier attempt flipped this: a confident correct D must have a loss near zero.
    assert float(losses.logistic_d_loss(np.array([[20.0]]), np.array([[-20.0]]))) < 1e-6
    assert float(losses.logistic_d_loss(np.array([[-20.0]]), np.array([[20.0]]))) > 39.0


def test_unknown_loss_lists_the_valid_ones():
    with pytest.raises(ValueError, match="logistic.*bce.*hinge.*wgan-gp"):
        losses.get_loss("lsgan")


@pytest.mark.parametrize("norm", [0.3, 1.0, 2.5])
def test_penalties_for_a_linear_critic_in_closed_form(norm):
    # D(x) = <a, x> has gradient a everywhere: R1 = |a|^2 and GP = (|a| - 1)^2, whatever the images.
    rng = np.random.default_rng(0)
    a = rng.standard_normal([1, 4, 4, 1]).astype(np.float32)
    a *= norm / np.linalg.norm(a)
    critic = lambda x: tf.reduce_sum(x * a, axis=[1, 2, 3])[:, None]  # noqa: E731
    real = tf.constant(rng.standard_normal([3, 4, 4, 1]), tf.float32)
    fake = tf.constant(rng.standard_normal([3, 4, 4, 1]), tf.float32)
    alpha = tf.random.stateless_uniform([3, 1, 1, 1], seed=[0, 1])
    np.testing.assert_allclose(float(losses.r1_penalty(critic, real)), norm ** 2, rtol=1e-5)
    np.testing.assert_allclose(float(losses.gradient_penalty(critic, real, fake, alpha)), (norm - 1) ** 2,
                               atol=1e-5)


def test_path_lengths_from_gradients():
    grads = np.zeros([2, 3, 4], np.float32)
    grads[0, :, 0] = 2.0                     # every layer's gradient has norm 2
    grads[1, 0, :2] = [3.0, 4.0]             # one layer with norm 5, two with 0: sqrt(25 / 3)
    np.testing.assert_allclose(losses.path_lengths(grads), [2.0, math.sqrt(25 / 3)], rtol=1e-6)


def test_scaled_gradient_recovers_what_float16_underflows():
    """d/dx of x * 1e-4 * 1e-4 is 1e-8, below float16's smallest subnormal (6e-8): without a loss
    scale the float16 backward pass gives 0, with 2^15 it gives 1e-8 to float16 precision."""
    x = tf.ones([3], tf.float16)

    def gradient(scale):
        with tf.GradientTape() as tape:
            tape.watch(x)
            small = x * tf.constant(1e-4, tf.float16) * tf.constant(1e-4, tf.float16)
            target = tf.reduce_sum(tf.cast(small, tf.float32))
        return losses.scaled_gradient(target, x, tape, scale).numpy()

    np.testing.assert_array_equal(gradient(1.0), 0.0)
    np.testing.assert_allclose(gradient(2.0 ** 15), 1e-8, rtol=2e-3)
