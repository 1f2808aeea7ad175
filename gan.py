"""The StyleGAN2 training model: a `keras.Model` whose `train_step` trains G and D from `fit()`.

Lives here: `StyleGAN2` (one D step per critic step with lazy R1 or gradient penalty, one G step
with lazy path-length regularisation and style mixing, generator EMA, w_avg tracking, optional
adaptive augmentation), the Adam defaults with the lazy-regularisation correction, and the
callback that stops a diverged run. Not here: the networks (generator.py, discriminator.py), the
loss formulas (losses.py), data (data.py), checkpoints (checkpointing.py) and outputs (training.py).

Randomness: every draw is stateless, keyed by (config.seed, step, purpose) (`stream_seed`), and made for the
global batch before each replica keeps its slice. So a step is reproducible, resumes exactly from
a checkpoint, and gives the same numbers on one device as on several.
"""

import math

import keras
import tensorflow as tf
from keras import ops

import augment as augment_module
from config import Config
from discriminator import Discriminator
from generator import Generator
from layers import fold_in, replica_normal, stateless_uniform
from losses import get_loss, gradient_penalty, path_lengths, r1_penalty, scaled_gradient

# The purposes of the random streams within one step.
(SALT_Z_D, SALT_Z_G, SALT_MIX_D, SALT_MIX_G, SALT_NOISE_D, SALT_NOISE_G, SALT_PL_Z, SALT_PL_NOISE, SALT_PL_Y,
 SALT_GP, SALT_AUG_REAL, SALT_AUG_FAKE, SALT_PL_MIX, SALT_Z2_D, SALT_Z2_G, SALT_PL_Z2) = range(16)


def stream_seed(seed, step, purpose):
    """The [2] int64 key of one random stream: [seed, 0] with the step, then the purpose, folded in.

    Folding (a keyed hash, `layers.fold_in`) instead of adding offsets keeps every (step, purpose)
    and, folded once more, every noise layer on a stream of its own; sums such as step * 16 + purpose
    or purpose + layer land on each other's streams.
    """
    key = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
    return fold_in(fold_in(key, step), purpose)


def make_generator(config):
    """The generator a configuration describes."""
    c = config
    return Generator(resolution=c.resolution, channels=c.channels, z_dim=c.z_dim, w_dim=c.w_dim,
                     mapping_layers=c.mapping_layers, channel_base=c.channel_base, channel_max=c.channel_max,
                     fused=c.fused_modconv, seed=c.seed, const_std=c.const_std, fp16_resolutions=c.half_resolutions,
                     conv_clamp=c.conv_clamp, c_dim=c.c_dim, name="generator")


def make_discriminator(config):
    """The discriminator a configuration describes."""
    c = config
    return Discriminator(resolution=c.resolution, channels=c.channels, channel_base=c.channel_base,
                         channel_max=c.channel_max, mbstd_group_size=c.mbstd_group_size,
                         down_mode=c.d_downsample, fp16_resolutions=c.half_resolutions, conv_clamp=c.conv_clamp,
                         c_dim=c.c_dim, mapping_layers=c.mapping_layers, name="discriminator")


def adam_for(lr, config, reg_interval):
    """Adam as in the paper; with lazy regularisation every k steps, lr and betas are raised to
    the power k/(k+1) to account for the extra regularisation steps (Karras et al. 2020, app. C)."""
    ratio = reg_interval / (reg_interval + 1.0) if reg_interval > 1 else 1.0
    return keras.optimizers.Adam(learning_rate=lr * ratio, beta_1=config.beta1 ** ratio,
                                 beta_2=config.beta2 ** ratio, epsilon=config.epsilon)


def loss_scale(optimizer):
    """The current dynamic loss scale of a float16 `LossScaleOptimizer`, else 1."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.dynamic_scale
    return tf.constant(1.0)


def mix_styles(ws_a, ws_b, cutoff):
    """Layers before `cutoff` take styles from ws_a, the rest from ws_b. [B, L, W] x2 -> [B, L, W]"""
    layer = tf.range(tf.shape(ws_a)[1])[None, :, None]                        # [1, L, 1]
    return tf.where(layer < cutoff, ws_a, ws_b)


def gradients_or_zero(tape, target, variables):
    """d target / d variables, zeros for the variables the target does not depend on."""
    grads = tape.gradient(target, variables)
    return [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]


def assign_synced(variables, values):
    """Assign values that are identical on every replica, from cross-replica context when distributed
    (EMA weights and counters have no aggregation of their own)."""
    def update(strategy, values):
        for var, value in zip(variables, values):
            # The underlying tf.Variable: distribution strategies do not know Keras variables.
            strategy.extended.update(getattr(var, "value", var), lambda v, x: v.assign(x), args=(value,),
                                     group=False)
    tf.__internal__.distribute.interim.maybe_merge_call(update, tf.distribute.get_strategy(), values)


class NonFiniteLossError(RuntimeError):
    pass


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops training with a clear message at the first step whose losses are NaN or infinite.

    It reads only the logs Keras has already brought to the host, once per execution of
    `steps_per_execution` steps; they are the tick's running means, so a NaN in any step of the
    execution shows. The tick's save also refuses a non-finite state (checkpointing.Checkpointer)."""

    def on_train_batch_end(self, batch, logs=None):
        bad = {k: v for k, v in (logs or {}).items() if k.endswith("loss") and not math.isfinite(float(v))}
        if bad:
            self.model.stop_training = True
            step = int(self.model.d_steps.numpy())
            raise NonFiniteLossError(
                f"training diverged at step {step} ({int(self.model.images_seen.numpy())} images): "
                f"{', '.join(f'{k}={v}' for k, v in bad.items())}. Resume from the last checkpoint "
                f"with a lower learning rate (--g_lr/--d_lr) or a larger --r1_gamma.")


class StyleGAN2(keras.Model):
    """Trains `generator` and `discriminator`; samples come from `generator_ema`.

    `fit(dataset)` takes batches of real images [B, R, R, C] in [-1, 1]; B is the global batch. A
    conditional model (config.c_dim > 0) takes (images, their labels, labels for the fakes) instead,
    the labels [B, c_dim] (data.make_dataset with labels).
    """

    def __init__(self, config=Config(), augment=None, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.loss_fns = get_loss(config.loss)
        self.generator, self.discriminator = make_generator(config), make_discriminator(config)
        self.generator_ema = make_generator(config)
        self.generator_ema.trainable = False
        for e, g in zip(self.generator_ema.weights, self.generator.weights):
            e.assign(g)
        self.augment = augment  # an augment.AdaptiveAugment or None
        counter = dict(shape=(), dtype="int64", initializer="zeros", trainable=False,
                       aggregation="only_first_replica")
        self.d_steps = self.add_weight(name="d_steps", **counter)
        self.g_steps = self.add_weight(name="g_steps", **counter)
        self.images_seen = self.add_weight(name="images_seen", **counter)
        self.pl_mean = self.add_weight(name="pl_mean", shape=(), initializer="zeros", trainable=False,
                                       aggregation="mean")
        names = ["d_loss", "g_loss", "real_logits", "fake_logits"]
        names += [config.d_penalty] if config.d_penalty else []
        names += ["pl"] if config.pl_weight > 0 else []
        if augment is not None:
            names += ["augment_p", "ada_rt"]
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}
        passes = dict(d_loss=self._d_loss_pass, d_penalty=self._d_penalty_pass, g_loss=self._g_loss_pass,
                      path_length=self._path_length_pass)
        compiled = (lambda f: tf.function(f, jit_compile=True)) if config.xla else (lambda f: f)
        self._passes = {name: compiled(f) for name, f in passes.items()}
        # Every sub-network is built above; without this, fit() under a distribution strategy would
        # try to build the model by calling it on a batch of images.
        self.built = True

    # -----------------------------------------------------------------------------------------
    # Set-up
    # -----------------------------------------------------------------------------------------

    def compile(self, g_optimizer=None, d_optimizer=None, **kwargs):
        """Two Adam optimizers (lr 0.0025, betas 0/0.99, eps 1e-8 by default), both built here so
        that the train step is traced once. Keras's own `optimizer` stays None.

        In float16 each is wrapped in a dynamic `LossScaleOptimizer`: losses (and the inner
        gradients of R1, the gradient penalty and path length) are multiplied by its scale so small
        float16 gradients do not underflow; a step with an inf/NaN gradient is skipped and the scale
        halved, and the scale doubles after 2,000 clean steps."""
        c = self.config
        self.g_optimizer = g_optimizer or adam_for(c.g_lr, c, c.g_reg_interval if c.pl_weight > 0 else 1)
        self.d_optimizer = d_optimizer or adam_for(c.d_lr, c, self.d_reg_interval if c.d_penalty else 1)
        if c.precision == "float16":
            self.g_optimizer = keras.optimizers.LossScaleOptimizer(self.g_optimizer)
            self.d_optimizer = keras.optimizers.LossScaleOptimizer(self.d_optimizer)
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)
        # With --xla the passes are compiled one by one (_passes), not the whole step.
        super().compile(optimizer=None, jit_compile=False, **kwargs)

    @property
    def d_reg_interval(self):
        # Lazy gradient penalties are unusual for WGAN-GP; its critic needs the constraint each step.
        return 1 if self.config.d_penalty == "gp" else self.config.d_reg_interval

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, z, c=None, psi=1.0, truncation_cutoff=None, noise_mode="const"):
        """Images from the EMA generator, as used for every sample and export."""
        return self.generator_ema(z, c, psi=psi, truncation_cutoff=truncation_cutoff, noise_mode=noise_mode)

    # -----------------------------------------------------------------------------------------
    # Sampling
    # -----------------------------------------------------------------------------------------

    def _seed(self, salt):
        return stream_seed(self.config.seed, self.d_steps, salt)

    def sample_ws(self, batch, z_salt, z2_salt, mix_salt, c=None):
        """Latents (with labels c [b, c_dim] when conditional) -> per-layer styles, mixing two
        independent latents of the same label with probability `style_mixing_prob` at a random
        crossover layer (one per batch, as the reference)."""
        g = self.generator
        z = replica_normal([batch, self.config.z_dim], self._seed(z_salt))                # [b, z]
        z2 = replica_normal([batch, self.config.z_dim], self._seed(z2_salt))
        ws = g.broadcast(g.mapping(z, c))                                                 # [b, L, w]
        if self.config.style_mixing_prob <= 0:
            return ws, ws
        u = stateless_uniform([2], self._seed(mix_salt))
        cutoff = tf.cast(tf.floor(u[0] * (g.num_ws - 1)), tf.int32) + 1                  # 1..L-1
        cutoff = tf.where(u[1] < self.config.style_mixing_prob, cutoff, g.num_ws)
        ws2 = g.broadcast(g.mapping(z2, c))
        return mix_styles(ws, ws2, cutoff), ws

    def _augment(self, images, salt):
        if self.augment is None:
            return images
        return self.augment(images, self._seed(salt))

    # -----------------------------------------------------------------------------------------
    # Training
    # -----------------------------------------------------------------------------------------

    def d_gradients(self, real_images, real_c=None, fake_c=None):
        """One critic step's gradients: D loss, plus the lazy R1 or gradient penalty on the steps
        where it is due, scaled by the interval. Returns (gradients, logs, real_logits)."""
        c = self.config
        grads, d_loss, real_logits, fake_logits, fake_images = self._passes["d_loss"](real_images, real_c, fake_c)
        do_reg = tf.equal(self.d_steps % self.d_reg_interval, 0)
        r1 = gp = tf.constant(0.0)
        if c.d_penalty:
            skip = lambda: ([tf.zeros_like(g) for g in grads], r1, gp)  # noqa: E731
            penalty = lambda: self._passes["d_penalty"](real_images, fake_images, real_c)  # noqa: E731
            with tf.control_dependencies(grads):       # one pass after the other: half the peak memory
                reg_grads, r1, gp = tf.cond(do_reg, penalty, skip)
            grads = [g + r for g, r in zip(grads, reg_grads)]
        logs = dict(d_loss=d_loss, real_logits=ops.mean(real_logits), fake_logits=ops.mean(fake_logits),
                    r1=r1, gp=gp, d_reg=do_reg)
        return grads, logs, real_logits

    def g_gradients(self, batch, fake_c=None):
        """One generator step's gradients: non-saturating/critic G loss on style-mixed latents, plus
        the lazy path-length penalty where due. Returns (gradients, logs, new pl_mean, plain ws)."""
        c = self.config
        grads, g_loss, ws_plain = self._passes["g_loss"](batch, fake_c)
        do_pl = tf.logical_and(tf.equal(self.g_steps % c.g_reg_interval, 0), c.pl_weight > 0)
        pl, pl_mean = tf.constant(0.0), tf.identity(self.pl_mean)
        if c.pl_weight > 0:
            skip = lambda: ([tf.zeros_like(g) for g in grads], pl, pl_mean)  # noqa: E731
            with tf.control_dependencies(grads):
                pl_grads, pl, pl_mean = tf.cond(do_pl, lambda: self._passes["path_length"](batch, fake_c), skip)
            grads = [g + p for g, p in zip(grads, pl_grads)]
        return grads, dict(g_loss=g_loss, pl=pl, g_reg=do_pl), pl_mean, ws_plain

    # The passes of a step (the reference's phases Dmain, Dreg, Gmain, Greg), each compiled on its own
    # with --xla: a lazy regulariser's tf.cond then chooses between compiled passes instead of
    # sitting inside one compiled step, where XLA's CPU backend turns every convolution in a branch
    # into plain loops (30x slower to run, and 1.8x the compile time of the quick preset's step).

    def _d_loss_pass(self, real_images, real_c=None, fake_c=None):
        """D loss gradients. Returns (gradients, d_loss, real_logits, fake_logits, fake_images)."""
        c = self.config
        ws, _ = self.sample_ws(real_images.shape[0], SALT_Z_D, SALT_Z2_D, SALT_MIX_D, fake_c)
        fake_images = self.generator.synthesis(ws, noise_seed=self._seed(SALT_NOISE_D))
        with tf.GradientTape() as tape:
            real_logits = self.discriminator(self._augment(real_images, SALT_AUG_REAL), real_c)
            fake_logits = self.discriminator(self._augment(fake_images, SALT_AUG_FAKE), fake_c)
            if self.loss_fns.penalty == "gp":
                d_loss = self.loss_fns.d_loss(real_logits, fake_logits, drift=c.wgan_drift)
            else:
                d_loss = self.loss_fns.d_loss(real_logits, fake_logits)
            total = d_loss * self._replica_share() * loss_scale(self.d_optimizer)
        grads = tape.gradient(total, self.discriminator.trainable_variables)
        return grads, d_loss, real_logits, fake_logits, fake_images

    def _d_penalty_pass(self, real_images, fake_images, real_c=None):
        """The gradients of the lazy R1 or gradient penalty, times the interval. Returns (gradients, r1, gp)."""
        c = self.config
        d_scale = loss_scale(self.d_optimizer)
        critic = lambda x: self.discriminator(self._augment(x, SALT_AUG_REAL), real_c)  # noqa: E731
        r1 = gp = tf.constant(0.0)
        with tf.GradientTape() as tape:
            if c.d_penalty == "r1":
                r1 = r1_penalty(critic, real_images, d_scale)
            if c.d_penalty == "gp":
                alpha = stateless_uniform([real_images.shape[0], 1, 1, 1], self._seed(SALT_GP))
                gp = gradient_penalty(critic, real_images, fake_images, alpha, d_scale)
            reg = (c.resolved_r1_gamma / 2.0 * r1 + c.gp_lambda * gp) * self.d_reg_interval
            total = reg * self._replica_share() * d_scale
        # The output layer's bias does not move an input gradient: its gradient is zero, not None.
        return gradients_or_zero(tape, total, self.discriminator.trainable_variables), r1, gp

    def _g_loss_pass(self, batch, fake_c=None):
        """G loss gradients on style-mixed latents. Returns (gradients, g_loss, unmixed ws)."""
        with tf.GradientTape() as tape:
            ws, ws_plain = self.sample_ws(batch, SALT_Z_G, SALT_Z2_G, SALT_MIX_G, fake_c)
            fake_images = self.generator.synthesis(ws, noise_seed=self._seed(SALT_NOISE_G))
            fake_logits = self.discriminator(self._augment(fake_images, SALT_AUG_FAKE), fake_c)
            g_loss = self.loss_fns.g_loss(fake_logits)
            total = g_loss * self._replica_share() * loss_scale(self.g_optimizer)
        return tape.gradient(total, self.generator.trainable_variables), g_loss, ws_plain

    def _path_length_pass(self, batch, fake_c=None):
        """The gradients of the lazy path-length penalty, times its weight and interval.
        Returns (gradients, penalty, new pl_mean)."""
        c = self.config
        g_scale = loss_scale(self.g_optimizer)
        pl_batch = max(batch // c.pl_batch_shrink, 1)
        with tf.GradientTape() as outer:
            ws, _ = self.sample_ws(pl_batch, SALT_PL_Z, SALT_PL_Z2, SALT_PL_MIX,
                                   None if fake_c is None else fake_c[:pl_batch])
            with tf.GradientTape() as tape:
                tape.watch(ws)
                images = tf.cast(self.generator.synthesis(ws, noise_seed=self._seed(SALT_PL_NOISE)), tf.float32)
                res = c.resolution
                y = replica_normal(images.shape, self._seed(SALT_PL_Y)) / math.sqrt(res * res)
                out = tf.reduce_sum(images * y)
            lengths = path_lengths(scaled_gradient(out, ws, tape, g_scale))                      # [b]
            pl_mean = tf.stop_gradient(self.pl_mean + c.pl_decay * (ops.mean(lengths) - self.pl_mean))
            penalty = ops.mean(ops.square(lengths - pl_mean))
            total = penalty * c.pl_weight * c.g_reg_interval * self._replica_share() * g_scale
        return gradients_or_zero(outer, total, self.generator.trainable_variables), penalty, pl_mean

    def _replica_share(self):
        return 1.0 / tf.distribute.get_strategy().num_replicas_in_sync

    def update_ema(self, global_batch):
        """G_ema <- G + (G_ema - G) * beta, beta = 0.5 ** (batch / half-life in images), with the
        half-life ramped up to `ema_rampup` x images seen early in training."""
        c = self.config
        half_life = tf.constant(c.ema_kimg * 1000.0)
        if c.ema_rampup is not None:
            half_life = tf.minimum(half_life, tf.cast(self.images_seen, tf.float32) * c.ema_rampup)
        beta = tf.pow(0.5, global_batch / tf.maximum(half_life, 1e-8))
        targets, values = [], []
        for e, g in zip(self.generator_ema.weights, self.generator.weights):
            targets.append(e)
            # Buffers (w_avg, constant noise) are copied, weights are averaged.
            values.append(g + (e - g) * beta if g.trainable else tf.identity(g))
        assign_synced(targets, values)
        return beta

    def train_logs(self, real_images, real_c=None, fake_c=None):
        """One full training step (n_critic D steps, one G step, EMA); returns this step's values.
        real_c, fake_c: the labels of the real images and of the fakes, for a conditional model."""
        c = self.config
        batch = real_images.shape[0]
        if batch is None:
            raise ValueError("real batches need a fixed size: batch the dataset with drop_remainder=True")
        global_batch = batch * tf.distribute.get_strategy().num_replicas_in_sync
        for _ in range(c.n_critic):
            grads, d_logs, real_logits = self.d_gradients(real_images, real_c, fake_c)
            self.d_optimizer.apply(grads, self.discriminator.trainable_variables)
            if self.augment is not None:
                self.augment.accumulate(real_logits)
            self.d_steps.assign_add(1)

        grads, g_logs, pl_mean, ws_plain = self.g_gradients(batch, fake_c)
        self.g_optimizer.apply(grads, self.generator.trainable_variables)
        # A float16 step whose inner gradient overflowed is skipped by the loss-scaled optimizer; its
        # path lengths are inf, and folding them in would leave every later penalty NaN.
        self.pl_mean.assign(tf.where(tf.math.is_finite(pl_mean), pl_mean, self.pl_mean))
        w_mean = ops.mean(tf.cast(ws_plain[:, 0], tf.float32), axis=0)  # mean w of unmixed latents, for truncation
        w_avg = self.generator.mapping.w_avg
        w_avg.assign(w_mean + (w_avg - w_mean) * c.w_avg_beta)
        self.g_steps.assign_add(1)

        self.images_seen.assign_add(global_batch)
        self.update_ema(float(global_batch))
        logs = {**d_logs, **g_logs}
        if self.augment is not None:
            self.augment.update(global_batch)
            logs["augment_p"] = self.augment.p
            logs["ada_rt"] = self.augment.rt
        return logs

    def train_step(self, batch):
        strategy = tf.distribute.get_strategy()
        batch = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)    # images[, real_c, fake_c]
        if batch[0].shape[0] is None and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            # Its iterators leave the batch size open (for partial batches, which training.training_input
            # never makes): pin it to the configured per-replica batch.
            local = self.config.batch_size // strategy.num_replicas_in_sync
            batch = tuple(tf.ensure_shape(x, [local, *x.shape[1:]]) for x in batch)
        if (len(batch) == 3) != (self.config.c_dim > 0):
            raise ValueError(f"a model with c_dim={self.config.c_dim} needs "
                             f"{'(images, labels, fake labels)' if self.config.c_dim else 'images alone'} per batch")
        logs = self.train_logs(*batch)
        # Penalties are averaged over the steps that computed them, not diluted by lazy zeros.
        weights = dict(r1=logs["d_reg"], gp=logs["d_reg"], pl=logs["g_reg"])
        for name, tracker in self.trackers.items():
            tracker.update_state(logs[name], sample_weight=tf.cast(weights.get(name, True), tf.float32))
        results = {name: tracker.result() for name, tracker in self.trackers.items()}
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            # Keras averages multi-worker logs along axis 0, which a scalar does not have (Keras 3.15).
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results


def set_precision(precision):
    """Keras mixed precision: variables stay float32; bfloat16 computes everything in bfloat16, while
    float16 leaves the global policy at float32 and the networks put their highest resolutions in
    float16 layer by layer (Config.half_resolutions)."""
    policy = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "float32"}[precision]
    keras.mixed_precision.set_global_policy(policy)


def build_gan(config, strategy=None, steps_per_execution=1):
    """A compiled `StyleGAN2` for `config`, its variables placed by `strategy`; `fit` runs
    `steps_per_execution` training steps per call into TensorFlow (the same steps, fewer launches)."""
    set_precision(config.precision)
    with (strategy or tf.distribute.get_strategy()).scope():
        augment = None
        if config.augment != "off":
            augment = augment_module.from_config(config)
        gan = StyleGAN2(config, augment=augment)
        gan.compile(steps_per_execution=steps_per_execution)
    return gan
