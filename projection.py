"""Projection: find a slice in the generator's latent space, and map where the slice departs from it.

Lives here: the reference projector's schedule (Karras et al. 2020, "Analyzing and Improving the
Image Quality of StyleGAN", sec. 5 and appendix D; NVlabs' `projector.py`) as pure functions
(`learning_rate_at`, `latent_noise_scale_at`, `noise_regularization`, `normalize_noise`), the
image distances (`DISTANCES`, `make_distance`), the synthesis forward with supplied per-layer noise
maps (`synthesize`), the batch optimiser (`Projector`), loading targets, the anomaly
map and the files `--mode project` writes. Not here: PSNR and SSIM (metrics.py; the MS-SSIM
distance uses its SSIM terms), flags (driver.py), the networks (generator.py, discriminator.py),
opening them (inference.py), the measurement study (tools/projection_eval.py).

The optimisation follows the reference: Adam (betas 0.9/0.999) on one w (W) or one w per layer
(W+) starting at w_avg, plus one noise map per noise layer started at N(0, 1); the learning rate
ramps up over the first 5% of the steps and down along a cosine over the last 25%; Gaussian noise
of w_std * 0.05 * (1 - t / 0.75)^2 is added to w during the first 75%; the noise maps are kept
white by a multi-scale autocorrelation penalty (weight 1e5) and renormalised to zero mean and unit
variance after every step.

Batching is exact: every loss term is a per-target mean, summed over the batch, so each target's
gradient is independent of the others, and Adam is elementwise; each target's random draws come
from its own generator, seeded by its pixels. A target gives the same latent alone or in any batch
(up to float rounding of batched convolutions).

Images are float [B, R, R, C] in [-1, 1] (C = 1 for MRI); targets on disk are 8-bit slices.
"""

import dataclasses
import io
import math
import os
import sys
import time
import zlib

import keras
import numpy as np
import tensorflow as tf
from absl import logging

import atomic
import data
import metrics
import pixels
import visualize
from progress import Progress

SPACES = ("w", "wplus")
W_STATS_SEED = 123               # z draws for w_avg and w_std, as the reference
PROGRESS_SECONDS = 10.0          # log progress this often when stderr is not a terminal
VGG16_LAYERS = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3")
VGG16_MIN_SIZE = 64              # VGG16 pools five times; smaller slices are upsampled to this first
MASK_LEVELS = 8                  # a target of at most this many grey levels is a segmentation mask


@dataclasses.dataclass(frozen=True)
class ProjectionSettings:
    """Every tunable of the projector with its default (the reference's) and unit."""
    num_steps: int = 1000                  # Adam steps per target
    w_avg_samples: int = 10000             # mapped z samples for w_avg and w_std
    initial_learning_rate: float = 0.1
    lr_rampup_length: float = 0.05         # fraction of num_steps: linear ramp up from 0
    lr_rampdown_length: float = 0.25       # fraction of num_steps: cosine ramp down to 0 at the end
    initial_noise_factor: float = 0.05     # latent noise at step 0, in units of w_std
    noise_ramp_length: float = 0.75        # fraction of num_steps: latent noise falls quadratically to 0
    regularize_noise_weight: float = 1e5   # weight of `noise_regularization`
    beta_1: float = 0.9                    # Adam, as torch.optim.Adam's defaults in the reference
    beta_2: float = 0.999
    epsilon: float = 1e-8
    space: str = "w"                       # "w": one w for every layer; "wplus": one w per layer
    distance: str = "mse"                  # a key of DISTANCES, or several joined by "+" (summed)
    optimize_noise: bool = True            # optimise per-target noise maps (the reference does)
    seed: int = 0                          # with each target's pixels, seeds its random draws
    snapshots: int = 40                    # frames kept for the optimisation GIF

    def __post_init__(self):
        if self.num_steps < 1:
            raise ValueError(f"the number of projection steps must be at least 1, got {self.num_steps}")
        if self.space not in SPACES:
            raise ValueError(f"projection space must be one of {SPACES}, got {self.space!r}")
        for name in ("lr_rampup_length", "lr_rampdown_length", "noise_ramp_length"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a fraction of the steps in (0, 1], got {getattr(self, name)}")
        parse_distance(self.distance)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------------------
# The schedule and the noise regulariser (pure functions)
# ---------------------------------------------------------------------------------------------

def learning_rate_at(step, settings):
    """Adam's learning rate at `step` of `settings.num_steps`, t = step / num_steps:
    lr0 * min(1, t / rampup) * (1 - cos(pi * min(1, (1 - t) / rampdown))) / 2."""
    t = step / settings.num_steps
    ramp = 0.5 - 0.5 * math.cos(math.pi * min(1.0, (1.0 - t) / settings.lr_rampdown_length))
    return settings.initial_learning_rate * ramp * min(1.0, t / settings.lr_rampup_length)


def latent_noise_scale_at(step, settings, w_std):
    """Standard deviation of the Gaussian noise added to w at `step`:
    w_std * initial_noise_factor * max(0, 1 - t / noise_ramp_length)^2."""
    t = step / settings.num_steps
    return w_std * settings.initial_noise_factor * max(0.0, 1.0 - t / settings.noise_ramp_length) ** 2


def noise_regularization(noise):
    """Multi-scale autocorrelation penalty that keeps an optimised noise map white: at every scale
    from full resolution down to 8x8 (2x2 average pooling between scales; maps of 8x8 or less get one
    scale), the squared mean product of the map with itself shifted by one pixel, horizontally and
    vertically (with wrap-around). Per target: [B, H, W, 1] -> [B]."""
    total = tf.zeros([tf.shape(noise)[0]], noise.dtype)
    while True:
        total += tf.square(tf.reduce_mean(noise * tf.roll(noise, 1, axis=2), axis=[1, 2, 3]))
        total += tf.square(tf.reduce_mean(noise * tf.roll(noise, 1, axis=1), axis=[1, 2, 3]))
        if noise.shape[1] <= 8:
            return total
        noise = tf.nn.avg_pool2d(noise, 2, 2, "VALID")                          # [B, H/2, W/2, 1]


def normalize_noise(noise):
    """Each target's map to zero mean and unit mean square: [B, H, W, 1] -> [B, H, W, 1]."""
    noise = noise - tf.reduce_mean(noise, axis=[1, 2, 3], keepdims=True)
    return noise * tf.math.rsqrt(tf.reduce_mean(tf.square(noise), axis=[1, 2, 3], keepdims=True))


def latent_stats(g, num_samples=10000, seed=W_STATS_SEED, batch_size=1000):
    """w_avg [w_dim] and the scalar w_std = sqrt(E|w - w_avg|^2) of `num_samples` mapped z (float32)."""
    z = np.random.default_rng(seed).standard_normal([num_samples, g.z_dim]).astype(np.float32)
    w = np.concatenate([np.asarray(g.mapping(z[i:i + batch_size])) for i in range(0, num_samples, batch_size)])
    w_avg = w.mean(axis=0, dtype=np.float64)
    w_std = math.sqrt(np.sum((w - w_avg) ** 2) / num_samples)
    return w_avg.astype(np.float32), float(w_std)


# ---------------------------------------------------------------------------------------------
# Synthesis with supplied noise maps
# ---------------------------------------------------------------------------------------------

def synthesize(synthesis, ws, noises):
    """`synthesis(ws)` with each noise layer's map supplied instead of drawn (`noise_maps`). With
    every layer's `const_noise` this equals `synthesis(ws, noise_mode="const")` exactly (tested).
    Shapes: ws [B, num_ws, w_dim], noises one per conv: [B or 1, h, w, 1] -> [B, R, R, C]"""
    if len(noises) != len(synthesis.noises):
        raise ValueError(f"the synthesis network has {len(synthesis.noises)} noise layers, got {len(noises)} maps")
    return synthesis(ws, noise_maps=list(noises))


def const_noises(synthesis):
    """Every noise layer's fixed map, as `noise_mode="const"` uses them: [[1, h, w, 1], ...]."""
    return [np.asarray(layer.const_noise) for layer in synthesis.noises]


# ---------------------------------------------------------------------------------------------
# Distances: (images, prepared targets) -> [B], one value per target
# ---------------------------------------------------------------------------------------------

def pixel_mse(images, targets):
    """Mean squared pixel difference, in the networks' [-1, 1] units. [B, R, R, C] x2 -> [B]"""
    return tf.reduce_mean(tf.square(images - targets), axis=[1, 2, 3])


def pixel_l1(images, targets):
    """Mean absolute pixel difference, in [-1, 1] units. [B, R, R, C] x2 -> [B]"""
    return tf.reduce_mean(tf.abs(images - targets), axis=[1, 2, 3])


def ms_ssim(x, y, power_factors, filter_size, floor=1e-4):
    """MS-SSIM (Wang et al. 2003): prod_j cs_j^p_j over the scales, with SSIM itself at the coarsest,
    halving by 2x2 average pooling between scales. Equal to tf.image.ssim_multiscale except that each
    factor is floored at `floor` instead of 0 before its fractional power: TF's gradient of 0^p is
    NaN, which an optimiser meets when a structure term turns negative. One scale is plain SSIM.
    x, y [B, H, W, C] in [0, 1] -> [B]"""
    factors = []
    for j, power in enumerate(power_factors):
        if j > 0:
            x, y = tf.nn.avg_pool2d(x, 2, 2, "VALID"), tf.nn.avg_pool2d(y, 2, 2, "VALID")
        value, cs = metrics.ssim_terms(x, y, filter_size)
        factors.append((cs if j < len(power_factors) - 1 else value, power))
    if len(factors) == 1:
        return tf.reduce_mean(factors[0][0], axis=-1)
    product = tf.add_n([p * tf.math.log(tf.maximum(f, floor)) for f, p in factors])  # log of the product
    return tf.reduce_mean(tf.exp(product), axis=-1)                              # mean over channels


def ms_ssim_distance(images, targets):
    """1 - MS-SSIM on [0, 1] pixels, with as many scales as the size allows (`metrics.ms_ssim_settings`:
    three at 64 px, plain SSIM below 22 px). [B, R, R, C] x2 in [-1, 1] -> [B]"""
    filter_size, weights = metrics.ms_ssim_settings(images.shape[1])
    return 1.0 - ms_ssim(pixels.to_zero_one(images), pixels.to_zero_one(targets), weights, filter_size)


def unit_normalize(features, epsilon=1e-10):
    """Scale each pixel's feature vector to unit length (LPIPS, Zhang et al. 2018, eq. 1). [B, h, w, c]"""
    return features * tf.math.rsqrt(tf.reduce_sum(tf.square(features), axis=-1, keepdims=True) + epsilon)


def feature_distance(features, target_features):
    """LPIPS with uniform layer weights: sum over layers of the spatial mean of the squared difference
    of channel-normalised features. Lists of [B, h, w, c] -> [B]"""
    return tf.add_n([tf.reduce_mean(tf.reduce_sum(tf.square(unit_normalize(f) - unit_normalize(t)), axis=-1),
                                    axis=[1, 2]) for f, t in zip(features, target_features)])


def discriminator_features(d, images):
    """The trained discriminator's activations after FromRGB and after each residual block, before
    minibatch stddev (which mixes samples): [B, R, R, C] -> [[B, R, R, c0], [B, R/2, R/2, c1], ...]"""
    inv_sqrt2 = 1.0 / math.sqrt(2.0)
    x = d.from_rgb(tf.cast(images, d.compute_dtype))
    features = [x]
    for conv0, conv1, skip in d.blocks:
        x = (skip(x) + conv1(conv0(x))) * inv_sqrt2
        features.append(x)
    return [tf.cast(f, tf.float32) for f in features]


@dataclasses.dataclass(frozen=True)
class Distance:
    """`prepare(targets)` once per batch (e.g. target features), then `compare(images, prepared)` -> [B]."""
    name: str
    prepare: object
    compare: object

    def __call__(self, images, targets):
        return self.compare(images, self.prepare(targets))


DISTANCES = {
    "mse": "mean squared pixel difference",
    "l1": "mean absolute pixel difference",
    "msssim": "1 - MS-SSIM (plain SSIM below 22 px)",
    "dfeat": "LPIPS-style distance on the trained discriminator's block features (needs a checkpoint)",
    "lpips": "LPIPS-style distance on VGG16 features (needs local ImageNet weights, --vgg16_weights)",
}


def parse_distance(spec):
    """'mse', 'msssim', 'mse+dfeat', ... -> the list of terms (summed with equal weight)."""
    terms = [t.strip() for t in str(spec).split("+")]
    unknown = [t for t in terms if t not in DISTANCES]
    if unknown or not terms:
        raise ValueError(f"unknown projection distance {spec!r}; choose from {', '.join(DISTANCES)}, or join "
                         f"several with '+' (e.g. mse+dfeat)")
    return terms


def vgg16_features(weights, resolution):
    """A function images [B, R, R, 1 or 3] in [-1, 1] -> VGG16 activations at VGG16_LAYERS. `weights`:
    a local notop .h5 file (ImageNet), or None for random weights (tests only)."""
    if weights is not None and not os.path.isfile(weights):
        raise FileNotFoundError(f"no VGG16 weights file at {weights}: pass the path of "
                                f"vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5, or choose another distance")
    size = max(resolution or 0, VGG16_MIN_SIZE)
    vgg = keras.applications.VGG16(include_top=False, weights=weights, input_shape=(size, size, 3))
    model = keras.Model(vgg.input, [vgg.get_layer(name).output for name in VGG16_LAYERS])
    model.trainable = False

    def features(images):
        if images.shape[-1] == 1:
            images = tf.tile(images, [1, 1, 1, 3])                                # [B, R, R, 3]
        if images.shape[1] < size:
            images = tf.image.resize(images, (size, size), method="bilinear")
        return model(keras.applications.vgg16.preprocess_input(pixels.to_byte_range(images)), training=False)
    return features


def make_distance(spec, discriminator=None, vgg16_weights=None, resolution=None):
    """The Distance for `spec` (see `parse_distance`). 'dfeat' needs the trained `discriminator`,
    'lpips' a VGG16 weights file (or vgg16_weights='random' for tests)."""
    terms = parse_distance(spec)
    parts = []
    for term in terms:
        if term == "mse":
            parts.append((lambda t: t, pixel_mse))
        elif term == "l1":
            parts.append((lambda t: t, pixel_l1))
        elif term == "msssim":
            parts.append((lambda t: t, ms_ssim_distance))
        elif term == "dfeat":
            if discriminator is None:
                raise ValueError("the 'dfeat' distance needs the trained discriminator, which only a checkpoint "
                                 "has: project from a run folder (--output_dir) or choose another distance "
                                 "(--project_distance mse)")
            d = discriminator
            parts.append((lambda t, d=d: discriminator_features(d, t),
                          lambda x, f, d=d: feature_distance(discriminator_features(d, x), f)))
        elif term == "lpips":
            if vgg16_weights is None:
                raise ValueError("the 'lpips' distance needs local VGG16 ImageNet weights (--vgg16_weights "
                                 "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5); nothing is downloaded")
            vgg = vgg16_features(None if vgg16_weights == "random" else vgg16_weights, resolution)
            parts.append((lambda t, vgg=vgg: vgg(t), lambda x, f, vgg=vgg: feature_distance(vgg(x), f)))

    def prepare(targets):
        return [p(targets) for p, _ in parts]

    def compare(images, prepared):
        return tf.add_n([c(images, f) for (_, c), f in zip(parts, prepared)])
    return Distance("+".join(terms), prepare, compare)


# ---------------------------------------------------------------------------------------------
# The optimiser
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Projection:
    """What `Projector.project` returns for a batch of B targets."""
    ws: np.ndarray            # [B, num_ws, w_dim] per-layer styles (W: the same w repeated)
    noises: list              # one [B, h, w, 1] map per noise layer (the const maps when not optimised)
    images: np.ndarray        # [B, R, R, C] the reconstructions, from ws and noises without latent noise
    distance: np.ndarray      # [B] final distance of the reconstructions to the targets
    history: np.ndarray       # [num_steps, B] distance at each step (with latent noise, as optimised)
    frames: np.ndarray        # [F, B, R, R, C] reconstructions during the optimisation
    seconds: float            # wall time of the optimisation (the first step of a new batch size traces)
    first_step_seconds: float  # of which the first step


def target_seed(target, seed):
    """A target's random draws depend on its pixels and `seed` only, never on its batch or position."""
    pixels = np.ascontiguousarray(np.asarray(target, np.float32))
    return np.random.default_rng([int(seed), zlib.crc32(pixels.tobytes())])


class Projector:
    """Optimises latents (and noise maps) of batches of targets through one generator.

    Per batch size it keeps one set of variables, an Adam optimizer and a compiled step; a new batch
    of the same size resets them, so projecting many batches traces once per size. With an
    `encoder` (encoder.py: slices -> styles), every batch starts from its styles (`project`'s start).
    """

    def __init__(self, g, settings, distance, w_stats=None, encoder=None):
        self.g, self.settings, self.distance, self.encoder = g, settings, distance, encoder
        self.w_avg, self.w_std = w_stats or latent_stats(g, settings.w_avg_samples)
        self.noise_shapes = [tuple(layer.const_noise.shape[1:]) for layer in g.synthesis.noises]  # [(h, w, 1), ...]
        self.num_latents = g.num_ws if settings.space == "wplus" else 1
        self.slots = {}

    def _slot(self, batch):
        if batch in self.slots:
            return self.slots[batch]
        s, g = self.settings, self.g
        w = keras.Variable(np.zeros([batch, self.num_latents, g.w_dim], np.float32), name="w")
        if s.optimize_noise:
            noises = [keras.Variable(np.zeros([batch, *shape], np.float32), name=f"noise{i}")
                      for i, shape in enumerate(self.noise_shapes)]
        else:
            noises = [tf.constant(n) for n in const_noises(g.synthesis)]
        variables = [w] + (noises if s.optimize_noise else [])
        optimizer = keras.optimizers.Adam(learning_rate=0.0, beta_1=s.beta_1, beta_2=s.beta_2, epsilon=s.epsilon)
        optimizer.build(variables)
        repeats = [1, g.num_ws // self.num_latents, 1]

        @tf.function(jit_compile=False)
        def step(prepared, targets, w_noise):
            with tf.GradientTape() as tape:
                ws = tf.tile(w + w_noise, repeats)                                   # [B, num_ws, w_dim]
                images = synthesize(g.synthesis, ws, noises)
                dist = self.distance.compare(images, prepared)                       # [B]
                loss = dist
                if s.optimize_noise:
                    loss += s.regularize_noise_weight * tf.add_n([noise_regularization(n) for n in noises])
                total = tf.reduce_sum(loss)  # a sum of per-target terms: targets do not interact
            optimizer.apply(tape.gradient(total, variables), variables)
            if s.optimize_noise:
                for n in noises:
                    n.assign(normalize_noise(n))
            return dist

        @tf.function(jit_compile=False)
        def render(prepared):
            images = synthesize(g.synthesis, tf.tile(w, repeats), noises)
            return images, self.distance.compare(images, prepared)

        self.slots[batch] = dict(w=w, noises=noises, optimizer=optimizer, step=step, render=render)
        return self.slots[batch]

    def project(self, targets, progress=None, start=None):
        """targets float [B, R, R, C] in [-1, 1] -> Projection. `progress`: a callable(step, distances)
        called after every step (e.g. a progress bar), or None. `start`: styles [B, num_ws, w_dim] to
        start from (averaged over the layers in W) with the generator's fixed noise maps, so that step
        0 renders what `start` alone gives; None: the encoder's styles where the projector has one
        (its pass counts in `seconds`), else w_avg and random maps."""
        s = self.settings
        began = time.time()
        if start is None and self.encoder is not None:
            start = self.encoder(np.asarray(targets, np.float32), training=False)
        targets = tf.constant(np.asarray(targets, np.float32))
        batch = int(targets.shape[0])
        slot = self._slot(batch)
        rngs = [target_seed(t, s.seed) for t in np.asarray(targets)]
        # Each target's generator draws its noise maps first, then its latent noise step by step.
        if start is None:
            slot["w"].assign(np.tile(self.w_avg[None, None], [batch, self.num_latents, 1]))
        else:
            start = np.asarray(start, np.float32)
            slot["w"].assign(start if s.space == "wplus" else start.mean(axis=1, keepdims=True))
        if s.optimize_noise:
            for i, variable in enumerate(slot["noises"]):
                maps = np.stack([rng.standard_normal(self.noise_shapes[i]) for rng in rngs])  # drawn either way
                if start is not None:
                    maps = np.repeat(np.asarray(self.g.synthesis.noises[i].const_noise), batch, axis=0)
                variable.assign(maps.astype(np.float32))
        for variable in slot["optimizer"].variables:    # fresh Adam: zero moments and iteration count
            variable.assign(tf.zeros_like(variable))

        prepared = self.distance.prepare(targets)
        snapshot_every = max(1, s.num_steps // max(1, s.snapshots))
        history, frames = [], []
        for step in range(s.num_steps):
            slot["optimizer"].learning_rate = learning_rate_at(step, s)
            scale = latent_noise_scale_at(step, s, self.w_std)
            w_noise = np.stack([rng.standard_normal([self.num_latents, self.g.w_dim]) for rng in rngs]) * scale
            history.append(np.asarray(slot["step"](prepared, targets, tf.constant(w_noise, tf.float32))))
            if step == 0:
                first_step_seconds = time.time() - began
            if step % snapshot_every == 0:
                frames.append(np.asarray(slot["render"](prepared)[0]))
            if progress is not None:
                progress(step + 1, history[-1])
        images, distance = slot["render"](prepared)
        frames.append(np.asarray(images))
        seconds = time.time() - began
        ws = np.tile(np.asarray(slot["w"]), [1, self.g.num_ws // self.num_latents, 1])
        noises = [np.asarray(n) if s.optimize_noise else np.tile(np.asarray(n), [batch, 1, 1, 1])
                  for n in slot["noises"]]
        return Projection(ws=ws, noises=noises, images=np.asarray(images), distance=np.asarray(distance),
                          history=np.stack(history), frames=np.stack(frames), seconds=seconds,
                          first_step_seconds=first_step_seconds)


# ---------------------------------------------------------------------------------------------
# The anomaly map
# ---------------------------------------------------------------------------------------------

def gaussian_taps(sigma):
    """Normalised 1D Gaussian of standard deviation `sigma` pixels, radius ceil(3 sigma): [2r + 1]."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()


def smooth(maps, sigma):
    """Separable Gaussian blur with mirrored borders; sigma 0 returns the maps. [N, H, W] -> [N, H, W]"""
    maps = np.asarray(maps, np.float64)
    if sigma <= 0:
        return maps
    taps = gaussian_taps(sigma)
    r = len(taps) // 2
    h, w = maps.shape[1:]
    if r >= min(h, w):
        raise ValueError(f"a blur of sigma {sigma} is too wide for {h}x{w} maps")
    padded = np.pad(maps, ((0, 0), (r, r), (0, 0)), mode="reflect")
    maps = sum(k * padded[:, i:i + h] for i, k in enumerate(taps))
    padded = np.pad(maps, ((0, 0), (0, 0), (r, r)), mode="reflect")
    return sum(k * padded[:, :, i:i + w] for i, k in enumerate(taps))


def default_sigma(resolution):
    """Anomaly-map blur: 1 pixel at 64x64, proportionally more or less at other sizes."""
    return resolution / 64.0


def reconstruction_scores(target, image):
    """One target [R, R, C] against its reconstruction: (anomaly map [R, R] at the default blur, PSNR
    dB, SSIM), what `--mode project` reports for it."""
    heat = anomaly_map(target[None], image[None], default_sigma(target.shape[0]))[0]
    return heat, float(metrics.psnr(image[None], target[None])[0]), float(metrics.ssim(image[None], target[None])[0])


def anomaly_map(targets, references, sigma):
    """Smoothed absolute residual |target - reference| in [0, 1] intensity units, channels averaged.
    The reference is the reconstruction (ours) or any stand-in (a baseline). [B, R, R, C] x2 -> [B, R, R]"""
    residual = np.abs(np.clip(targets, -1, 1) - np.clip(references, -1, 1)).mean(axis=-1) / 2.0
    return smooth(residual, sigma)


# ---------------------------------------------------------------------------------------------
# Targets, networks, saved latents
# ---------------------------------------------------------------------------------------------

def target_name(path):
    """'case_0198_slice_100.nii.png' -> 'case_0198_slice_100': the file name without its extensions."""
    name = os.path.basename(path)
    while True:
        stem, ext = os.path.splitext(name)
        if not ext or ext.lower() not in data.IMAGE_EXTENSIONS + (".nii", ".gz", ".img"):
            return name
        name = stem


def load_targets(target=None, target_dir=None, resolution=64, channels=1):
    """The slices to project, fitted like training data (colour to gray, padded to a square,
    resized with antialiasing). One of `target` (a file) or `target_dir` (searched recursively,
    segmentation files skipped). Returns (names, uint8 [N, R, R, channels]); a volume gives one
    target per axial slice. Raises data.DataError with what was wrong."""
    if (target is None) == (target_dir is None):
        raise ValueError("project needs exactly one of --target (a slice image) or --target_dir (a folder of them)")
    if target is not None:
        if not os.path.isfile(target):
            raise data.DataError(f"target {target} does not exist or is not a file: check --target")
        check_target(target, resolution)
        files = [target]
    else:
        if not os.path.isdir(target_dir):
            raise data.DataError(f"target folder {target_dir} does not exist: check --target_dir")
        files = data.find_files(target_dir, splits=("all",))
    names, slices, problems = [], [], []
    for path in files:
        try:
            decoded = data.decode_file(path, resolution)                             # uint8 [k, R, R]
        except data._Unreadable as e:  # noqa: SLF001  the loader's own per-file reasons
            if target is not None:
                raise data.DataError(f"target {path} {e}; give an 8/16-bit PNG, JPEG, TIFF or BMP slice") from None
            problems.append(f"{os.path.basename(path)}: {e}")
            continue
        stem = target_name(path)
        names += [stem] if len(decoded) == 1 else [f"{stem}_z{k:03d}" for k in range(len(decoded))]
        slices.append(decoded)
    if not slices:
        raise data.DataError(f"none of the {len(files)} files in {target_dir} can be projected "
                             f"({'; '.join(problems[:2])}); check that they are complete images")
    if problems:
        logging.warning("project: skipped %d of %d files that cannot be read, e.g. %s", len(problems), len(files),
                        "; ".join(problems[:2]))
    names = unique_names(names)
    images = np.concatenate(slices)[..., None]                                       # [N, R, R, 1]
    return names, np.repeat(images, channels, axis=-1) if channels > 1 else images


def check_target(path, resolution):
    """Refuse, with what to give instead, a single target that would project into nonsense: a
    segmentation mask (by its name, or an image of a few grey levels such as COMP3710's 0/85/170/255)
    or an image smaller than the generator's slices (upsampled, its blur would show as anomaly).
    What cannot be read at all is load_targets' to report."""
    name = os.path.basename(path)
    if data.is_segmentation(name):
        raise data.DataError(f"{name} is named like a segmentation mask, not an MRI slice: give the image itself "
                             f"(e.g. case_001_slice_0.nii.png, not seg_001_slice_0.nii.png)")
    if data.file_kind(name) == "volume":
        return
    try:
        image = data.decode_image(path)                                      # [h, w] in [0, 255]
    except data._READ_ERRORS:  # noqa: SLF001  load_targets names what is wrong with it
        return
    levels = len(np.unique(image))
    if 1 < levels <= MASK_LEVELS:
        raise data.DataError(f"{name} has only {levels} grey levels, like a segmentation mask: give the MRI slice "
                             f"it was drawn on")
    if min(image.shape) < resolution:
        raise data.DataError(f"{name} is {image.shape[1]}x{image.shape[0]}, smaller than the model's "
                             f"{resolution}x{resolution} slices: give a slice at least {resolution} pixels a side")


def unique_names(names):
    """Append _2, _3, ... to repeated names (same file name in different folders)."""
    seen, out = {}, []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def unconditional(g):
    """`g`, checked to be unconditional: projecting with a conditional one would also have to find
    each slice's labels."""
    if g.c_dim:
        raise ValueError("projection needs an unconditional generator: this one is conditional (--condition), and "
                         "projecting would also have to find each slice's labels")
    return g


def save_latents(path, ws, noises, names, space):
    """One .npz of projected latents: ws [N, num_ws, w_dim], noise_<i> [N, h, w, 1], names, space."""
    buffer = io.BytesIO()
    np.savez(buffer, ws=np.asarray(ws, np.float32), names=np.asarray(names), space=np.asarray(space),
             **{f"noise_{i}": np.asarray(n, np.float32) for i, n in enumerate(noises)})
    atomic.write_bytes(path, buffer.getvalue())


def load_latents(path, g):
    """(names, ws [N, num_ws, w_dim], noises or None) from a projection .npz; a file with only a `w`
    [N, w_dim] (or [w_dim]) is broadcast to every layer. Checks the shapes against generator `g`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no projected latents at {path}: run `python driver.py --mode project` first")
    try:
        with np.load(path) as f:
            contents = {k: f[k] for k in f.files}
    except (OSError, ValueError, zlib.error) as e:
        raise ValueError(f"{path} is not a projection .npz ({e})") from None
    if "ws" in contents:
        ws = contents["ws"].astype(np.float32)
    elif "w" in contents:
        w = np.atleast_2d(contents["w"]).astype(np.float32)
        ws = np.tile(w[:, None], [1, g.num_ws, 1])
    else:
        raise ValueError(f"{path} holds neither 'ws' nor 'w' (it has {', '.join(contents) or 'nothing'})")
    if ws.ndim != 3 or ws.shape[1:] != (g.num_ws, g.w_dim):
        raise ValueError(f"{path} holds latents of shape {ws.shape[1:]}, but this generator takes "
                         f"({g.num_ws}, {g.w_dim}): it was projected with another model")
    noises = None
    if all(f"noise_{i}" in contents for i in range(len(g.synthesis.noises))):
        noises = [contents[f"noise_{i}"].astype(np.float32) for i in range(len(g.synthesis.noises))]
    names = [str(n) for n in contents.get("names", [f"w{i:04d}" for i in range(len(ws))])]
    return names, ws, noises


def render_latents(g, ws, noises=None):
    """Images [N, R, R, C] from saved styles; with the saved noise maps, exactly the reconstruction."""
    if noises is None:
        return np.asarray(g.synthesis(ws, noise_mode="const"))
    return np.asarray(synthesize(g.synthesis, tf.constant(ws), [tf.constant(n) for n in noises]))


def write_projected_images(g, npz_path, out_dir):
    """`--mode generate --projected_w`: one PNG per latent of `npz_path` in `out_dir`. Returns the paths."""
    names, ws, noises = load_latents(npz_path, g)
    images = render_latents(g, ws, noises)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, image in zip(names, images):
        paths.append(os.path.join(out_dir, f"projected_{name}.png"))
        visualize.save_image(paths[-1], image)
    return paths


# ---------------------------------------------------------------------------------------------
# Output files
# ---------------------------------------------------------------------------------------------

def save_heat_map(path, heat, title, vmax=None):
    """An anomaly map [H, W] (smoothed residual, [0, 1] intensity units) with a colour bar, as PNG."""
    atomic.write_bytes(path, heat_map_png(heat, title, vmax))


def heat_map_png(heat, title, vmax=None):
    """The PNG bytes of `save_heat_map`'s picture."""
    import matplotlib.pyplot as plt  # visualize selects the Agg backend
    fig, ax = plt.subplots(figsize=(3.6, 3.0))
    shown = ax.imshow(heat, cmap="inferno", vmin=0.0, vmax=vmax or max(float(np.max(heat)), 1e-6))
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="|target - reconstruction|")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def write_target_outputs(folder, name, target, result, index, space):
    """Everything for one target of a projected batch in `folder`; returns its summary entry."""
    os.makedirs(folder, exist_ok=True)
    image = result.images[index]
    save_latents(os.path.join(folder, "projected_w.npz"), result.ws[index:index + 1],
                 [n[index:index + 1] for n in result.noises], [name], space)
    visualize.save_image(os.path.join(folder, "target.png"), target)
    visualize.save_image(os.path.join(folder, "reconstruction.png"), image)
    residual = np.abs(np.clip(target, -1, 1) - np.clip(image, -1, 1)) - 1.0             # 0 -> black, 2 -> white
    visualize.save_grid(os.path.join(folder, "comparison.png"), np.stack([target, image, residual]), columns=3)
    heat, psnr, ssim = reconstruction_scores(target, image)
    save_heat_map(os.path.join(folder, "anomaly.png"), heat, f"{name}: anomaly map")
    frames = [np.concatenate([target, f[index]], axis=1) for f in result.frames]       # target | reconstruction
    visualize.save_gif(os.path.join(folder, "optimisation.gif"), np.stack(frames))
    return {"name": name, "psnr": psnr, "ssim": ssim, "distance": float(result.distance[index]),
            "anomaly_max": float(heat.max())}


def _projection_line(done, total, seconds, values):
    """The log line while projecting without a bar: steps of the whole job so far, the mean distance."""
    return f"projection: step {done}/{total}, mean distance {dict(values)['distance']:.4g}, {seconds:.0f} s"


def project_files(g, names, targets, settings, out_dir, distance, batch_size=8, progress=None, encoder=None):
    """Project uint8 `targets` [N, R, R, C] named `names` in batches; write `out_dir/<name>/` and
    `out_dir/summary.json`. `progress`: True for a progress bar, False for log lines every few
    seconds, None for a bar only on a terminal. `encoder` (encoder.py), when given, gives each
    batch its start (`Projector`). Returns the summary dict."""
    if targets.shape[1] != g.resolution or targets.shape[-1] != g.channels:
        raise ValueError(f"targets are {targets.shape[1:]}, the generator makes "
                         f"{(g.resolution, g.resolution, g.channels)}")
    batch_size = max(1, int(batch_size))
    projector = Projector(g, settings, distance, encoder=encoder)
    show_bar = sys.stderr.isatty() if progress is None else progress
    bar = Progress(settings.num_steps * math.ceil(len(targets) / batch_size), show_bar, _projection_line,
                   PROGRESS_SECONDS, unit_name="step", stateful_metrics=["distance"], log_end=True)
    images = pixels.to_unit_range(targets)
    entries, seconds = [], 0.0
    all_ws, all_noises = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        done = start // batch_size * settings.num_steps                      # the earlier batches' steps
        result = projector.project(batch, progress=lambda step, distances, done=done: bar.update(
            done + step, [("distance", float(np.mean(distances)))]))
        seconds += result.seconds
        for i in range(len(batch)):
            name = names[start + i]
            entries.append(write_target_outputs(os.path.join(out_dir, name), name, batch[i], result, i,
                                                settings.space))
            entries[-1]["seconds"] = result.seconds / len(batch)
        all_ws.append(result.ws)
        all_noises.append(result.noises)
    if bar.bar is not None:
        print(file=sys.stderr, flush=True)
    save_latents(os.path.join(out_dir, "projected_w.npz"), np.concatenate(all_ws),
                 [np.concatenate(n) for n in zip(*all_noises)], names, settings.space)
    summary = {"settings": dataclasses.asdict(settings), "distance": distance.name, "targets": entries,
               "mean_psnr": float(np.mean([e["psnr"] for e in entries])),
               "mean_ssim": float(np.mean([e["ssim"] for e in entries])),
               "mean_distance": float(np.mean([e["distance"] for e in entries])),
               "seconds_per_target": seconds / len(entries), "batch_size": batch_size, "encoder": encoder is not None,
               "resolution": int(g.resolution)}
    atomic.write_json(os.path.join(out_dir, "summary.json"), summary)
    return summary

