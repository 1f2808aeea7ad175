"""The projection encoder: a network from a slice straight to its per-layer styles (W+), to start the projector.

Lives here: `build_encoder` (the network), `EncoderSettings`, `train_encoder` (on generated (image, w)
pairs and on real slices through the frozen generator, in the spirit of f-AnoGAN's izi training,
Schlegl et al. 2019, and of encoder-initialised inversion, e4e / pSp), `encode`, and saving and
opening it beside a run (`save`, `find`). Not here: the optimiser it starts
(projection.Projector), the study that measures it (tools/projection_eval.py), flags (driver.py).

The encoder's last dense layer starts with a zero kernel and w_avg as its bias, so an untrained
encoder gives every slice w_avg: exactly the reference projector's start. Training moves it from there.
It is a functional Keras model of stock layers: `keras.models.load_model` opens it without this project.

Images are float [B, R, R, C] in [-1, 1]; styles [B, num_ws, w_dim].
"""

import dataclasses
import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

import atomic
import pixels
import projection
from progress import Progress

MODEL_FILE, INFO_FILE = "encoder.keras", "encoder.json"
REFINE_STEPS = 100               # --project_steps from the encoder's start
# In W+, the encoder's own space: averaged into one w its start lost 3.6 dB (docs/projection.md).
REFINE_SETTINGS = dict(space="wplus", num_steps=REFINE_STEPS, initial_learning_rate=0.01, initial_noise_factor=0.0)
PROGRESS_SECONDS = 10.0


def projection_settings(settings, encoded, **chosen):
    """The projector's settings: `settings` (projection.ProjectionSettings), refined as REFINE_SETTINGS
    says when it starts from an encoder (`encoded`), then each of `chosen` that is not None: what a
    user set explicitly wins over either default."""
    settings = settings.replace(**REFINE_SETTINGS) if encoded else settings
    return settings.replace(**{k: v for k, v in chosen.items() if v is not None})


@dataclasses.dataclass(frozen=True)
class EncoderSettings:
    """Every tunable of encoder training with its default and unit."""
    steps: int = 2000                # Adam steps
    batch_size: int = 16             # generated slices per step, and as many real ones
    learning_rate: float = 1e-3
    latent_weight: float = 1.0       # mean squared error of generated slices' predicted styles, / (w_std^2 / w_dim)
    pixel_weight: float = 1.0        # mean squared pixel error of the reconstructions, generated and real
    feature_weight: float = 1.0      # the discriminator-feature distance of real slices' reconstructions ('dfeat')
    width: int = 32                  # feature maps at full resolution, doubled at each halving ...
    width_max: int = 256             # ... up to this many
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"encoder training needs at least one step of at least one slice, got "
                             f"{self.steps} steps of {self.batch_size}")


def build_encoder(resolution, channels, num_ws, w_dim, w_avg, width=32, width_max=256):
    """Slices [B, R, R, C] -> styles [B, num_ws, w_dim]: 3x3 convolutions halving to 4x4, a dense
    layer of 512, and one to every style, which starts at w_avg for every slice (zero kernel)."""
    x = inputs = keras.Input((resolution, resolution, channels), name="slice")
    x = keras.layers.Conv2D(width, 3, padding="same", activation="leaky_relu")(x)
    size, k = resolution, 0
    while size > 4:
        k += 1
        filters = min(width << k, width_max)
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="leaky_relu")(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="leaky_relu")(x)
        size //= 2
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(512, activation="leaky_relu")(x)
    start = np.tile(np.asarray(w_avg, np.float32).reshape(1, w_dim), [num_ws, 1]).reshape(-1)
    x = keras.layers.Dense(num_ws * w_dim, kernel_initializer="zeros",
                           bias_initializer=keras.initializers.Constant(start), name="styles")(x)
    return keras.Model(inputs, keras.layers.Reshape((num_ws, w_dim))(x), name="encoder")


def encode(encoder, images, batch_size=64):
    """Styles [N, num_ws, w_dim] of float images [N, R, R, C] in [-1, 1], in batches."""
    images = np.asarray(images, np.float32)
    return np.concatenate([np.asarray(encoder(images[i:i + batch_size], training=False))
                           for i in range(0, len(images), batch_size)])


def reconstruct(g, ws):
    """What the encoder's styles alone give: the synthesis with the generator's fixed noise maps."""
    return g.synthesis(ws, noise_mode="const")


def _training_line(done, total, seconds, values):
    values = dict(values)
    return (f"encoder: step {done}/{total}, latent {values['latent']:.4g}, pixel {values['pixel']:.4g}, "
            f"feature {values['feature']:.4g}, {seconds:.0f} s")


def train_encoder(g, reals, settings=EncoderSettings(), discriminator=None, w_stats=None, progress=None):
    """An encoder for the unconditional generator `g`, trained for `settings.steps` Adam steps. Each
    step draws `batch_size` z, maps them to w (one w for every layer) and renders them with random
    noise; the encoder is taught their styles (latent term: 1 for w_avg's error) and to reconstruct them
    (pixel term). It also reconstructs as many real slices from `reals` (uint8 [N, R, R, C], mirrored
    at random): pixel term, plus the distance on `discriminator`'s features when one is given. The
    generator (and discriminator) stay frozen. Returns (encoder, history: [steps] dicts of the terms)."""
    s = settings
    projection.unconditional(g)
    w_avg, w_std = w_stats or projection.latent_stats(g)
    encoder = build_encoder(g.resolution, g.channels, g.num_ws, g.w_dim, w_avg, s.width, s.width_max)
    optimizer = keras.optimizers.Adam(s.learning_rate)
    variables = encoder.trainable_variables
    optimizer.build(variables)
    use_features = discriminator is not None and s.feature_weight > 0

    @tf.function(jit_compile=False)
    def step(z, real):
        ws = g.broadcast(g.mapping(z))                                              # [B, num_ws, w_dim]
        fake = g.synthesis(ws, noise_mode="random")
        with tf.GradientTape() as tape:
            predicted = encoder(tf.concat([fake, real], 0), training=True)           # [2B, num_ws, w_dim]
            latent = tf.reduce_mean(tf.square(predicted[:s.batch_size] - ws)) / (w_std ** 2 / g.w_dim)  # 1: w_avg
            images = reconstruct(g, predicted)
            pixel = tf.reduce_mean(projection.pixel_mse(images, tf.concat([fake, real], 0)))
            feature = tf.constant(0.0)
            if use_features:
                feature = tf.reduce_mean(projection.feature_distance(
                    projection.discriminator_features(discriminator, images[s.batch_size:]),
                    projection.discriminator_features(discriminator, real)))
            loss = s.latent_weight * latent + s.pixel_weight * pixel + s.feature_weight * feature
        optimizer.apply(tape.gradient(loss, variables), variables)
        return latent, pixel, feature

    rng = np.random.default_rng(s.seed)
    reals = np.asarray(reals)
    bar = Progress(s.steps, sys.stderr.isatty() if progress is None else progress, _training_line,
                   PROGRESS_SECONDS, unit_name="step", stateful_metrics=["latent", "pixel", "feature"], log_end=True)
    history = []
    for i in range(s.steps):
        chosen = reals[rng.integers(0, len(reals), s.batch_size)]
        flip = rng.random(s.batch_size) < 0.5
        chosen = np.where(flip[:, None, None, None], chosen[:, :, ::-1], chosen)
        z = rng.standard_normal([s.batch_size, g.z_dim]).astype(np.float32)
        terms = [float(t) for t in step(tf.constant(z), tf.constant(pixels.to_unit_range(chosen)))]
        history.append(dict(zip(("latent", "pixel", "feature"), terms)))
        bar.update(i + 1, list(history[-1].items()))
    if bar.bar is not None:
        print(file=sys.stderr, flush=True)
    return encoder, history


def save(folder, encoder, info):
    """The encoder as `folder/encoder.keras` and what it was trained for (`info`) as `folder/encoder.json`."""
    os.makedirs(folder, exist_ok=True)
    with atomic.staged(os.path.join(folder, MODEL_FILE), suffix=".keras") as tmp:
        encoder.save(tmp)
    atomic.write_json(os.path.join(folder, INFO_FILE), info)


def find(folder, g):
    """(encoder, info) saved in `folder` for a generator shaped like `g`, or None when there is none.
    One saved for another shape of generator is a ValueError saying what to do."""
    path = os.path.join(folder, MODEL_FILE)
    if not os.path.isfile(path):
        return None
    try:
        encoder = keras.models.load_model(path)
        with open(os.path.join(folder, INFO_FILE)) as f:
            info = json.load(f)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path} cannot be read ({type(e).__name__}: {str(e)[:200]}): train it again with "
                         f"python driver.py --mode encoder, or project without it (--noproject_encoder)") from None
    expected = (None, g.resolution, g.resolution, g.channels), (None, g.num_ws, g.w_dim)
    if (tuple(encoder.input_shape), tuple(encoder.output_shape)) != expected:
        raise ValueError(f"the encoder in {folder} maps {encoder.input_shape[1:]} slices to styles "
                         f"{encoder.output_shape[1:]}, but this generator makes {expected[0][1:]} from "
                         f"{expected[1][1:]}: train it again with python driver.py --mode encoder")
    return encoder, info


def mean_terms(history, last=100):
    """The mean of each loss term over the last `last` steps."""
    tail = history[-last:]
    return {k: float(np.mean([h[k] for h in tail])) for k in tail[0]} if tail else {}
