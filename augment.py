"""Adaptive discriminator augmentation (ADA; Karras et al. 2020, "Training Generative Adversarial
Networks with Limited Data").

Lives here: the non-leaking augmentations of the paper's "bgc" pipeline adapted to grayscale, as
small pure functions (parameter sampling, the 3x3 sampling matrix, bilinear resampling with
reflection, the colour transform, the p controller), and `AdaptiveAugment`, the Keras layer that
owns p and the r_t statistics as checkpointed variables. Not here: where augmentation is applied
(gan.py calls the layer on every image D sees, reals and fakes), flags (driver.py).

Groups: "b" pixel blitting (x-flip, 90-degree rotations, integer translation), "g" geometric
(isotropic scaling, pre-rotation, anisotropic scaling, post-rotation, fractional translation),
"c" colour (brightness, contrast and, off by default, luma flip). Hue and saturation are left out:
they mean nothing for one channel. Each op is applied to each sample with probability p (the two
rotations with 1 - sqrt(1 - p) each, so that some rotation happens with probability p).

Simplifications, on purpose: blit and geometric ops are composed into one 3x3 matrix per sample
and the image is resampled once with bilinear interpolation over an image reflected at its borders
(the paper pads by reflection too but upsamples 2x with a wide low-pass filter first, which aliases
less under strong downscaling). Bilinear weights are a convex combination of input pixels, so the
output never leaves the input's range, 90-degree rotations, flips and integer shifts are exact
copies, and the whole map is linear in the images: gradients of any order are exact (no
ImageProjectiveTransform, whose gradient is approximate). Colour ops act about each sample's mean
intensity rather than about 0 (mid-grey), so contrast does not lift a black MRI background.

Randomness is stateless: all per-sample parameters are drawn for the global batch from the given
seed and each replica keeps its rows (as `layers.replica_normal`), so a step is reproducible and
identical on one device and on several, and the same compiled by XLA or not (`layers.stateless_uniform`).
"""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from layers import accumulation_dtype, fold_in, register, stateless_normal, stateless_uniform

# Strengths as in the paper's pipeline (stylegan2-ada-pytorch `AugmentPipe` defaults).
XINT_MAX = 0.125         # integer translation: uniform in +-this fraction of the image size
SCALE_STD = 0.2          # isotropic scaling: log2 of the factor ~ N(0, std), i.e. lognormal std 0.2 ln 2
ROTATE_MAX = 1.0         # rotations: uniform in +-this fraction of pi
ANISO_STD = 0.2          # anisotropic scaling: log2 std
XFRAC_STD = 0.125        # fractional translation: N(0, std) as a fraction of the image size
BRIGHTNESS_STD = 0.2     # brightness: N(0, std) added, in units of the [-1, 1] pixel range
CONTRAST_STD = 0.5       # contrast: log2 std of the factor, i.e. lognormal std 0.5 ln 2

GROUPS = {
    "b": ("xflip", "rotate90", "xint"),
    "g": ("scale", "rotate", "aniso", "xfrac"),
    "c": ("brightness", "contrast", "lumaflip"),
}
GEOMETRIC_OPS = GROUPS["b"] + GROUPS["g"]
COLOUR_OPS = GROUPS["c"]
MODES = ("ada", "fixed")

# Columns of the per-sample random tables: gates decide whether an op applies, the rest are values.
_UNIFORM = ("xflip", "rotate90", "xint", "scale", "rotate_pre", "aniso", "rotate_post", "xfrac",
            "brightness", "contrast", "lumaflip",
            "xflip_value", "rotate90_value", "xint_x", "xint_y", "rotate_pre_value", "rotate_post_value",
            "lumaflip_value")
_NORMAL = ("scale", "aniso", "xfrac_x", "xfrac_y", "brightness", "contrast")
U = {name: i for i, name in enumerate(_UNIFORM)}
N = {name: i for i, name in enumerate(_NORMAL)}


# ---------------------------------------------------------------------------------------------
# Pure functions: choosing the ops and drawing their parameters
# ---------------------------------------------------------------------------------------------

def ops_for(groups="bgc", luma_flip=False):
    """The op names that groups (any of the letters "b", "g", "c") switch on, in pipeline order."""
    unknown = sorted(set(groups) - set(GROUPS))
    if not groups or unknown:
        raise ValueError(f"groups must be a non-empty combination of 'b' (blit), 'g' (geometric) and "
                         f"'c' (colour), got {groups!r}")
    names = [op for letter in "bgc" if letter in groups for op in GROUPS[letter]]
    return tuple(op for op in names if op != "lumaflip" or luma_flip)


def replica_rows(sample, local_batch, seed):
    """`sample(global_batch, seed)` drawn for the whole global batch; this replica's rows of it.

    So per-sample randomness does not depend on how the batch is split over devices.
    Shapes: -> [local_batch, ...]
    """
    ctx = tf.distribute.get_replica_context()
    replicas = ctx.num_replicas_in_sync if ctx is not None else 1
    full = sample(replicas * local_batch, seed)                                      # [R*b, ...]
    if replicas == 1:
        return full
    start = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * local_batch
    return full[start:start + local_batch]


def random_tables(local_batch, seed):
    """Uniform [b, len(_UNIFORM)] in [0, 1) and standard normal [b, len(_NORMAL)] draws for this
    replica's samples, from a [2] integer seed (two independent streams folded from it)."""
    seed = tf.cast(seed, tf.int64)
    uniform = replica_rows(lambda n, s: stateless_uniform(
        [n, len(_UNIFORM)], fold_in(s, 0)), local_batch, seed)
    normal = replica_rows(lambda n, s: stateless_normal(
        [n, len(_NORMAL)], fold_in(s, 1)), local_batch, seed)
    return uniform, normal


def identity_params(batch):
    """Parameters that leave every sample unchanged. Keys and units as in `sample_params`."""
    zeros, ones = tf.zeros([batch]), tf.ones([batch])
    return dict(xflip=zeros, rotate90=tf.zeros([batch], tf.int32), xint=tf.zeros([batch, 2]), scale=ones,
                rotate_pre=zeros, aniso=ones, rotate_post=zeros, xfrac=tf.zeros([batch, 2]),
                brightness=zeros, contrast=ones, lumaflip=zeros)


def sample_params(uniform, normal, p, op_names, height, width):
    """Per-sample parameters from the random tables; ops not in `op_names`, and ops whose gate
    (uniform < p) fails, keep their identity value.

    Keys (all float32 [B] unless said): xflip 0/1; rotate90 int32 quarter turns 0-3; xint [B, 2]
    whole pixels (x, y); scale factor; rotate_pre, rotate_post radians; aniso factor (x by a, y by
    1/a); xfrac [B, 2] pixels; brightness offset; contrast factor; lumaflip 0/1.
    Shapes: uniform [B, len(_UNIFORM)], normal [B, len(_NORMAL)]
    """
    p = tf.cast(p, tf.float32)
    p_rot = 1.0 - tf.sqrt(tf.maximum(1.0 - p, 0.0))   # P(pre or post rotation) = p
    batch = tf.shape(uniform)[0]
    params = identity_params(batch)
    size = tf.constant([width, height], tf.float32)                                 # [2] (x, y)

    def gate(key, value, prob=p, op=None):
        """params[key] = value where this sample's gate column `key` is below prob."""
        if (op or key) not in op_names:
            return
        applies = uniform[:, U[key]] < prob                                            # [B]
        if len(value.shape) == 2:
            applies = applies[:, None]                                                 # [B, 1]
        params[key] = tf.where(applies, value, params[key])

    def angle(column):
        return (uniform[:, U[column]] * 2.0 - 1.0) * math.pi * ROTATE_MAX              # uniform in +-pi

    gate("xflip", tf.floor(uniform[:, U["xflip_value"]] * 2.0))
    gate("rotate90", tf.cast(tf.floor(uniform[:, U["rotate90_value"]] * 4.0), tf.int32))
    xint = (tf.stack([uniform[:, U["xint_x"]], uniform[:, U["xint_y"]]], -1) * 2.0 - 1.0) * XINT_MAX
    gate("xint", tf.round(xint * size))                                                # [B, 2]
    gate("scale", tf.pow(2.0, normal[:, N["scale"]] * SCALE_STD))
    gate("rotate_pre", angle("rotate_pre_value"), p_rot, op="rotate")
    gate("aniso", tf.pow(2.0, normal[:, N["aniso"]] * ANISO_STD))
    gate("rotate_post", angle("rotate_post_value"), p_rot, op="rotate")
    xfrac = tf.stack([normal[:, N["xfrac_x"]], normal[:, N["xfrac_y"]]], -1) * XFRAC_STD
    gate("xfrac", xfrac * size)                                                        # [B, 2]
    gate("brightness", normal[:, N["brightness"]] * BRIGHTNESS_STD)
    gate("contrast", tf.pow(2.0, normal[:, N["contrast"]] * CONTRAST_STD))
    gate("lumaflip", tf.floor(uniform[:, U["lumaflip_value"]] * 2.0))
    return params


# ---------------------------------------------------------------------------------------------
# Pure functions: geometry
# ---------------------------------------------------------------------------------------------

def _matrix(rows):
    """3x3 nested lists of [B] tensors -> [B, 3, 3]."""
    return tf.stack([tf.stack(row, axis=-1) for row in rows], axis=-2)


def translate_matrix(tx, ty):
    one, zero = tf.ones_like(tx), tf.zeros_like(tx)
    return _matrix([[one, zero, tx], [zero, one, ty], [zero, zero, one]])


def scale_matrix(sx, sy):
    one, zero = tf.ones_like(sx), tf.zeros_like(sx)
    return _matrix([[sx, zero, zero], [zero, sy, zero], [zero, zero, one]])


def rotate_matrix(cos, sin):
    one, zero = tf.ones_like(cos), tf.zeros_like(cos)
    return _matrix([[cos, -sin, zero], [sin, cos, zero], [zero, zero, one]])


def sampling_matrix(params):
    """The per-sample map from output pixel to source position, in pixels about the image centre
    (x right, y down), as the reference's G_inv.

    Each parameter describes what happens to the image content, applied in pipeline order (x-flip
    first, fractional translation last); the sampling map is the inverse, composed left to right.
    A rotation by theta (or k quarter turns) turns the content like np.rot90 does.
    Shapes: params of batch B -> [B, 3, 3] float32
    """
    xflip = tf.cast(params["xflip"], tf.float32)
    k = params["rotate90"]
    # Quarter turns from a table, not cos(pi/2), so that they sample exactly on pixel centres.
    cos90 = tf.gather(tf.constant([1.0, 0.0, -1.0, 0.0]), k)
    sin90 = tf.gather(tf.constant([0.0, 1.0, 0.0, -1.0]), k)
    xint, xfrac = params["xint"], params["xfrac"]                                     # [B, 2]
    scale, aniso = params["scale"], params["aniso"]
    m = scale_matrix(1.0 - 2.0 * xflip, tf.ones_like(xflip))                         # [B, 3, 3]
    m = m @ rotate_matrix(cos90, sin90)
    m = m @ translate_matrix(-xint[:, 0], -xint[:, 1])
    m = m @ scale_matrix(1.0 / scale, 1.0 / scale)
    m = m @ rotate_matrix(tf.cos(params["rotate_pre"]), tf.sin(params["rotate_pre"]))
    m = m @ scale_matrix(1.0 / aniso, aniso)
    m = m @ rotate_matrix(tf.cos(params["rotate_post"]), tf.sin(params["rotate_post"]))
    return m @ translate_matrix(-xfrac[:, 0], -xfrac[:, 1])


def reflect_index(i, size):
    """Integer indices folded into [0, size) as np.pad(mode="reflect") extends an axis (the edge
    pixel is not repeated), for any distance outside."""
    if size == 1:
        return tf.zeros_like(i)
    period = 2 * (size - 1)
    i = tf.math.floormod(i, period)
    return tf.where(i < size, i, period - i)


def resample(images, matrix):
    """Bilinear resampling of an image reflected at its borders: output pixel (r, c) reads the input
    at matrix @ (c - cx, r - cy, 1) + (cx, cy), with (cx, cy) the image centre.

    Four gathers with explicit weights, so the result is linear in `images` with exact gradients of
    every order; the weights are a convex combination, so values stay within the input's range.
    Shapes: images [B, H, W, C], matrix [B, 3, 3] -> [B, H, W, C]
    """
    dtype = images.dtype
    b = tf.shape(images)[0]
    h, w, c = images.shape[1], images.shape[2], images.shape[3]
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    rows, cols = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
    grid = np.stack([cols.ravel(), rows.ravel(), np.ones(h * w)])                   # [3, HW]
    src = tf.matmul(tf.cast(matrix, dtype), tf.constant(grid, dtype))                # [B, 3, HW]
    x, y = src[:, 0] + cx, src[:, 1] + cy                                           # [B, HW]
    x0, y0 = tf.floor(x), tf.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]                               # [B, HW, 1]
    x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    # One flat gather over the whole batch: the gradient of a batch_dims gather has a transpose whose
    # own gradient XLA cannot compile (R1 differentiates through it twice).
    flat = tf.reshape(images, [b * h * w, c])                                        # [B*HW, C]
    offset = tf.range(b)[:, None] * (h * w)                                          # [B, 1]

    def tap(yi, xi):
        return tf.gather(flat, offset + reflect_index(yi, h) * w + reflect_index(xi, w))  # [B, HW, C]

    top = tap(y0, x0) * (1.0 - fx) + tap(y0, x0 + 1) * fx
    bottom = tap(y0 + 1, x0) * (1.0 - fx) + tap(y0 + 1, x0 + 1) * fx
    return tf.reshape(top * (1.0 - fy) + bottom * fy, [b, h, w, c])                  # [B, H, W, C]


# ---------------------------------------------------------------------------------------------
# Pure functions: intensity, the whole pipeline, the controller
# ---------------------------------------------------------------------------------------------

def colour_transform(images, brightness, contrast, lumaflip):
    """Grayscale colour ops about each sample's mean m: y = x + b + (k - 1)(x - m) with
    k = contrast * (1 - 2 lumaflip); i.e. contrast scales, and luma flip mirrors, the deviations
    from m (all channels alike), and brightness shifts everything by b. Written so that identity
    parameters give exactly x, and brightness alone exactly x + b.
    Shapes: images [B, H, W, C], parameters [B] -> [B, H, W, C]
    """
    dtype = images.dtype
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)                    # [B, 1, 1, 1]
    k = tf.cast(contrast * (1.0 - 2.0 * lumaflip), dtype)[:, None, None, None]      # [B, 1, 1, 1]
    b = tf.cast(brightness, dtype)[:, None, None, None]
    return images + b + (k - 1.0) * (images - mean)


def augment_images(images, params, geometric=True, colour=True):
    """Applies given parameters: one resampling for blit and geometric ops, then the colour ops.
    Computes in at least float32 and returns the input dtype. Shapes: [B, H, W, C] -> same"""
    x = tf.cast(images, accumulation_dtype(images.dtype))
    if geometric:
        x = resample(x, sampling_matrix(params))
    if colour:
        x = colour_transform(x, params["brightness"], params["contrast"], params["lumaflip"])
    return tf.cast(x, images.dtype)


def augment_batch(images, seed, p, op_names):
    """The ADA pipeline on this replica's images with probability p per op and sample, randomness
    from a [2] integer seed. Shapes: images [b, H, W, C] -> [b, H, W, C], same dtype."""
    uniform, normal = random_tables(tf.shape(images)[0], seed)
    params = sample_params(uniform, normal, p, op_names, images.shape[1], images.shape[2])
    return augment_images(images, params, geometric=any(op in GEOMETRIC_OPS for op in op_names),
                          colour=any(op in COLOUR_OPS for op in op_names))


def overfitting_rt(sign_sum, count):
    """r_t = E[sign(D(x_real))] (paper, eq. 1): near 0 while D generalises, near 1 when it overfits."""
    return sign_sum / tf.maximum(count, 1.0)


def adjust_p(p, rt, target, images, kimg):
    """ADA's controller (paper, sec. 3): p += sign(r_t - target) * images / (kimg * 1000), clipped to
    [0, 1]; `images` is the number of real images shown since the last adjustment, so p can cross
    0 -> 1 in `kimg` thousand images."""
    step = tf.sign(rt - target) * tf.cast(images, tf.float32) / (kimg * 1000.0)
    return tf.clip_by_value(p + step, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Layer
# ---------------------------------------------------------------------------------------------

def _tf_variable(variable):
    """The tf.Variable under a Keras variable. Keras's assign_add is assign(self + delta): under a
    distribution strategy a "sum" variable would then add every replica's copy of the old value too;
    TensorFlow's own assign_add sums only the deltas."""
    return getattr(variable, "value", variable)


@register
class AdaptiveAugment(keras.layers.Layer):
    """Augments every image D sees with probability p; with mode "ada", p follows the overfitting
    heuristic r_t towards `target`, with "fixed" it stays at `initial_p`.

    `call(images, seed)`: images [B, H, W, C] of any float dtype, seed [2] int -> same shape, dtype.
    `accumulate(real_logits)` after each D step; `update(global_batch)` once per training step.
    State (checkpointed): p, rt (last r_t), sign_sum and count of real logits since the last
    adjustment (aggregation "sum": replicas add their shares), pending_steps (D steps since then).
    """

    def __init__(self, mode="ada", initial_p=0.0, target=0.6, interval=4, kimg=500.0, groups="bgc",
                 luma_flip=False, **kwargs):
        kwargs.pop("autocast", None)
        # No autocast: fakes stay in the compute dtype, reals in float32; the maths runs in float32.
        super().__init__(autocast=False, **kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not 0.0 <= initial_p <= 1.0:
            raise ValueError(f"initial_p must be in [0, 1], got {initial_p}")
        if interval < 1:
            raise ValueError(f"interval must be at least 1 D step, got {interval}")
        if not kimg > 0:
            raise ValueError(f"kimg must be positive, got {kimg}")
        self.mode = mode
        self.initial_p = float(initial_p)
        self.target = float(target)
        self.interval = int(interval)
        self.kimg = float(kimg)
        self.groups = groups
        self.luma_flip = bool(luma_flip)
        self.op_names = ops_for(groups, luma_flip)
        state = dict(shape=(), trainable=False, autocast=False)
        synced = dict(state, aggregation="only_first_replica")   # every replica computes the same value
        summed = dict(state, dtype="float32", initializer="zeros", aggregation="sum")
        self.p = self.add_weight(name="p", dtype="float32",
                                 initializer=keras.initializers.Constant(self.initial_p), **synced)
        self.rt = self.add_weight(name="rt", dtype="float32", initializer="zeros", **synced)
        self.pending_steps = self.add_weight(name="pending_steps", dtype="int64", initializer="zeros", **synced)
        self.sign_sum = self.add_weight(name="sign_sum", **summed)
        self.count = self.add_weight(name="count", **summed)
        self.built = True

    def call(self, images, seed):
        return augment_batch(images, seed, ops.convert_to_tensor(self.p), self.op_names)

    def accumulate(self, real_logits):
        """Adds this replica's sum of sign(D(real)) and logit count; counts one D step."""
        logits = tf.cast(real_logits, tf.float32)
        _tf_variable(self.sign_sum).assign_add(tf.reduce_sum(tf.sign(logits)))
        _tf_variable(self.count).assign_add(tf.cast(tf.size(logits), tf.float32))
        self.pending_steps.assign_add(1)

    def update(self, global_batch):
        """Once `interval` D steps have accumulated: r_t from the summed statistics, p moved by
        sign(r_t - target) * global_batch * steps / (kimg * 1000) (ada only), statistics reset.
        Unconditional assignments, no tf.cond: under MirroredStrategy a synchronising write inside
        control flow is not supported."""
        p = ops.convert_to_tensor(self.p)
        rt = ops.convert_to_tensor(self.rt)
        steps = ops.convert_to_tensor(self.pending_steps)
        sign_sum = ops.convert_to_tensor(self.sign_sum)
        count = ops.convert_to_tensor(self.count)
        due = steps >= self.interval
        new_rt = overfitting_rt(sign_sum, count)
        new_p = p
        if self.mode == "ada":
            new_p = adjust_p(p, new_rt, self.target, tf.cast(global_batch, tf.int64) * steps, self.kimg)
        self.p.assign(tf.where(due, new_p, p))
        self.rt.assign(tf.where(due, new_rt, rt))
        self.pending_steps.assign(tf.where(due, tf.zeros_like(steps), steps))
        # Replicas' deltas are summed: the first one subtracts the total, the others add nothing.
        ctx = tf.distribute.get_replica_context()
        first = True if ctx is None else tf.equal(ctx.replica_id_in_sync_group, 0)
        reset = tf.logical_and(due, first)
        _tf_variable(self.sign_sum).assign_add(tf.where(reset, -sign_sum, 0.0))
        _tf_variable(self.count).assign_add(tf.where(reset, -count, 0.0))

    def compute_output_shape(self, images_shape, seed_shape=None):
        return images_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "initial_p": self.initial_p, "target": self.target,
                "interval": self.interval, "kimg": self.kimg, "groups": self.groups, "luma_flip": self.luma_flip}


def from_config(config):
    """The augmentation layer a `config.Config` asks for (config.augment "ada" or "fixed")."""
    if config.augment not in MODES:
        raise ValueError(f"augment must be one of {MODES} to build an augmentation layer, got {config.augment!r}")
    return AdaptiveAugment(mode=config.augment, initial_p=config.augment_p, target=config.ada_target,
                           interval=config.ada_interval, kimg=config.ada_kimg, name="augment")
