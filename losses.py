"""GAN losses and penalties, each a pure function of logits (or of a critic and images).

Lives here: the D/G loss pairs behind `--loss` (one registry, `LOSSES`), the R1 and WGAN-GP
gradient penalties and the path-length penalty's maths. Not here: when they are applied, lazy
regularisation intervals or optimizers (gan.py).

Every loss takes raw, unbounded logits [B, 1] and returns a scalar mean over the local batch.
"""

import dataclasses

import keras
import tensorflow as tf
from keras import ops


def logistic_d_loss(real_logits, fake_logits):
    """StyleGAN2 logistic D loss (Goodfellow et al. 2014; Karras et al. 2019): E[softplus(-D(x))] + E[softplus(D(G(z)))]."""
    return ops.mean(ops.softplus(-real_logits)) + ops.mean(ops.softplus(fake_logits))


def logistic_g_loss(fake_logits):
    """Non-saturating G loss (Goodfellow et al. 2014): E[softplus(-D(G(z)))] = -E[log sigmoid(D(G(z)))]."""
    return ops.mean(ops.softplus(-fake_logits))


def bce_d_loss(real_logits, fake_logits):
    """Binary cross-entropy on logits with labels 1 (real) and 0 (fake), as in DCGAN (Radford et al. 2016)."""
    real = keras.losses.binary_crossentropy(ops.ones_like(real_logits), real_logits, from_logits=True)
    fake = keras.losses.binary_crossentropy(ops.zeros_like(fake_logits), fake_logits, from_logits=True)
    return ops.mean(real) + ops.mean(fake)


def bce_g_loss(fake_logits):
    """Non-saturating BCE G loss: cross-entropy of fake logits against the 'real' label 1."""
    return ops.mean(keras.losses.binary_crossentropy(ops.ones_like(fake_logits), fake_logits, from_logits=True))


def hinge_d_loss(real_logits, fake_logits):
    """Hinge loss for D (Lim & Ye 2017): E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
    return ops.mean(ops.relu(1.0 - real_logits)) + ops.mean(ops.relu(1.0 + fake_logits))


def hinge_g_loss(fake_logits):
    """Hinge G loss (Lim & Ye 2017; Miyato et al. 2018): -E[D(G(z))]."""
    return -ops.mean(fake_logits)


def wgan_d_loss(real_logits, fake_logits, drift=0.001):
    """Wasserstein critic loss (Arjovsky et al. 2017) with ProGAN's drift term (Karras et al. 2018):
    E[D(G(z))] - E[D(x)] + drift * E[D(x)^2]. The gradient penalty is added separately."""
    return ops.mean(fake_logits) - ops.mean(real_logits) + drift * ops.mean(ops.square(real_logits))


def wgan_g_loss(fake_logits):
    """Wasserstein generator loss: -E[D(G(z))]."""
    return -ops.mean(fake_logits)


def scaled_gradient(target, sources, tape, loss_scale=1.0):
    """d target / d sources in float32, backpropagated as d (target * loss_scale) and divided back.

    With float16 compute, small gradients underflow to zero on the way back through a network;
    scaling the target first (as the outer loss is scaled) keeps them representable. An overflow
    shows up as inf in the penalty, so the loss-scaled optimizer skips that step and lowers the scale.
    """
    with tape:                                  # record the scaling on the caller's tape
        scaled = target * tf.cast(loss_scale, target.dtype)
    grads = tape.gradient(scaled, sources)
    return tf.cast(grads, tf.float32) / tf.cast(loss_scale, tf.float32)


def _input_gradients(critic, images, loss_scale=1.0):
    with tf.GradientTape() as tape:
        tape.watch(images)
        logits = critic(images)
        # Summing is exact: sample i's logit depends only on image i (minibatch stddev aside).
        total = tf.reduce_sum(tf.cast(logits, tf.float32))
    return scaled_gradient(total, images, tape, loss_scale)


def r1_penalty(critic, real_images, loss_scale=1.0):
    """R1 (Mescheder et al. 2018): E[|grad_x D(x)|^2] on real images. Loss term: gamma / 2 * R1.
    `loss_scale` (float16 training) scales the inner gradient; the value does not depend on it."""
    grads = _input_gradients(critic, real_images, loss_scale)
    return ops.mean(ops.sum(ops.square(grads), axis=[1, 2, 3]))


def gradient_penalty(critic, real_images, fake_images, alpha, loss_scale=1.0):
    """WGAN-GP (Gulrajani et al. 2017): E[(|grad D(x_hat)| - 1)^2], x_hat = x + alpha (G(z) - x).

    `alpha` [B, 1, 1, 1] must be uniform in [0, 1] (the earlier attempt drew it from a normal).
    """
    x_hat = real_images + alpha * (fake_images - real_images)
    grads = _input_gradients(critic, x_hat, loss_scale)
    norms = ops.sqrt(ops.sum(ops.square(grads), axis=[1, 2, 3]) + 1e-12)
    return ops.mean(ops.square(norms - 1.0))


def path_lengths(ws_grads):
    """sqrt(mean over layers of |dL/dw_l|^2): the path length of each sample. [B, num_ws, w_dim] -> [B]"""
    return ops.sqrt(ops.mean(ops.sum(ops.square(ws_grads), axis=2), axis=1))


@dataclasses.dataclass(frozen=True)
class Loss:
    """A D/G loss pair and the regulariser it is trained with: 'r1', 'gp' or None."""
    d_loss: callable
    g_loss: callable
    penalty: str | None


LOSSES = {
    "logistic": Loss(logistic_d_loss, logistic_g_loss, "r1"),
    "bce": Loss(bce_d_loss, bce_g_loss, None),
    "hinge": Loss(hinge_d_loss, hinge_g_loss, "r1"),
    "wgan-gp": Loss(wgan_d_loss, wgan_g_loss, "gp"),
}


def get_loss(name):
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}")
    return LOSSES[name]
