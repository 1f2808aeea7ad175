"""StyleGAN2 building blocks as Keras 3 layers (Karras et al. 2020, "Analyzing and Improving the
Image Quality of StyleGAN").

Lives here: the network sizes (valid resolutions, channels per resolution, mapping depths),
equalized-learning-rate dense and conv layers, modulated/demodulated convolution, FIR
resampling, noise injection, bias + activation, PixelNorm, minibatch standard deviation and the
ToRGB output layer. The maths sits in small pure functions (`upfirdn2d`, `modulated_conv2d`,
`minibatch_stddev`, ...) that the layers call, so tests can check each against NumPy.
Not here: how the layers are wired into networks (generator.py, discriminator.py) or trained (gan.py).

Layout is NHWC everywhere. Everything is twice differentiable (R1 and path-length regularisation
differentiate a gradient), which rules out ops without second-order gradients.
"""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

SQRT2 = math.sqrt(2.0)
FIR_TAPS = (1.0, 3.0, 3.0, 1.0)  # StyleGAN2's resampling filter (a binomial low-pass).
ACTIVATIONS = ("linear", "lrelu")
DOWN_MODES = ("decimate", "strided")  # how EqualizedConv2D downsamples: see its docstring

register = keras.saving.register_keras_serializable(package="stylegan2")


# ---------------------------------------------------------------------------------------------
# Network sizes (shared by generator.py, discriminator.py and config.py)
# ---------------------------------------------------------------------------------------------

MAPPING_DEPTHS = (1, 8)   # fewest and most mapping-network layers (the paper: 8; 1 for tiny tests)
MIN_CHANNELS = 8  # The earlier attempt trained with 1 filter; anything this thin cannot learn anatomy.


def check_resolution(resolution):
    """log2 of a valid resolution: a power of two from 8 to 1024."""
    if resolution < 8 or resolution > 1024 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two from 8 to 1024, got {resolution}")
    return int(math.log2(resolution))


def half_precision_policy(res, resolution, fp16_resolutions):
    """The dtype policy of a layer at `res` in a network of `resolution`: "mixed_float16" within the
    `fp16_resolutions` highest resolutions (never below 8x8, as the reference's num_fp16_res), else
    None (the global policy)."""
    if fp16_resolutions <= 0:
        return None
    lowest = max(2 ** (check_resolution(resolution) + 1 - fp16_resolutions), 8)
    return "mixed_float16" if res >= lowest else None


def channels_at(res, channel_base, channel_max):
    """Feature maps at a resolution: min(channel_base / res, channel_max), as in the paper."""
    channels = min(channel_base // res, channel_max)
    if channels < MIN_CHANNELS:
        raise ValueError(
            f"channel_base={channel_base} gives {channels} channels at {res}x{res}; at least "
            f"{MIN_CHANNELS} are needed, so use channel_base >= {MIN_CHANNELS * res}")
    return channels


# ---------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------

def accumulation_dtype(dtype):
    """float32 for half-precision inputs (sums of squares overflow float16), else the input dtype."""
    return tf.float32 if tf.as_dtype(dtype) in (tf.float16, tf.bfloat16) else tf.as_dtype(dtype)


def fir_filter(taps=FIR_TAPS):
    """Separable 2D FIR filter from 1D taps, normalised to unit sum: [k, k] float32."""
    taps = np.asarray(taps, dtype=np.float64)
    f = np.outer(taps, taps)
    return (f / f.sum()).astype(np.float32)


def upfirdn2d(x, f, up=1, down=1, pad=(0, 0), gain=1.0):
    """Upsample by zero insertion, pad, convolve with FIR filter `f`, then keep every `down`-th pixel.

    The same operation as NVlabs' `upfirdn2d`, on NHWC, built from reshape, pad and a depthwise
    convolution so that it is twice differentiable on every device.

    Shapes: x [B, H, W, C] -> [B, (H*up + pad0 + pad1 - k) // down + 1, ..., C]
    """
    channels = x.shape[-1]
    if up > 1:
        b, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
        x = tf.reshape(x, [b, h, 1, w, 1, channels])                      # [B, H, 1, W, 1, C]
        x = tf.pad(x, [[0, 0], [0, 0], [0, up - 1], [0, 0], [0, up - 1], [0, 0]])
        x = tf.reshape(x, [b, h * up, w * up, channels])                  # [B, H*up, W*up, C]
    pad0, pad1 = pad
    x = tf.pad(x, [[0, 0], [pad0, pad1], [pad0, pad1], [0, 0]])
    # Flip so that this is a true convolution like upfirdn (irrelevant for symmetric filters).
    kernel = np.ascontiguousarray(f[::-1, ::-1]) * float(gain)
    kernel = tf.constant(np.tile(kernel[:, :, None, None], [1, 1, channels, 1]), dtype=x.dtype)  # [k, k, C, 1]
    return tf.nn.depthwise_conv2d(x, kernel, strides=[1, down, down, 1], padding="VALID")


def upsample_2d(x, f):
    """2x FIR upsampling that keeps a constant image constant: [B, H, W, C] -> [B, 2H, 2W, C]."""
    p = f.shape[0] - 2
    return upfirdn2d(x, f, up=2, pad=((p + 1) // 2 + 1, p // 2), gain=4.0)


def downsample_2d(x, f):
    """2x FIR downsampling (low-pass, then decimate): [B, H, W, C] -> [B, H/2, W/2, C]."""
    p = f.shape[0] - 2
    return upfirdn2d(x, f, down=2, pad=((p + 1) // 2, p // 2))


def conv2d_down_strided(x, kernel, f):
    """StyleGAN2's downsampling convolution: blur at full resolution, then a stride-2 convolution.

    The padding (k // 2 plus the filter's own) makes the FIR filter and the k x k kernel combine into
    one (k + 3) x (k + 3) kernel applied every other pixel, as the reference's `conv2d_resample` with
    down=2. Not the same as `downsample_2d` followed by a convolution for k > 1: there the kernel's
    taps sit two full-resolution pixels apart.
    Shapes: x [B, H, W, I], kernel [k, k, I, O] -> [B, H/2, W/2, O]
    """
    k, taps = kernel.shape[0], f.shape[0]
    pad = (k // 2 + (taps - 1) // 2, k // 2 + (taps - 2) // 2)
    x = upfirdn2d(x, f, pad=pad)                                                   # [B, H+k, W+k, I]
    return tf.nn.conv2d(x, kernel, strides=2, padding="VALID")


def bias_act(x, b, activation="linear", alpha=0.2, clamp=None):
    """Add a per-channel bias, then an activation; leaky ReLU carries gain sqrt(2) to keep variance.
    `clamp` (the reference's conv_clamp, 256 with float16) then limits the result to [-clamp, clamp]."""
    x = x + b
    if activation == "lrelu":
        x = ops.leaky_relu(x, negative_slope=alpha) * SQRT2
    if clamp is not None:
        x = ops.clip(x, -clamp, clamp)
    return x


def pixel_norm(x, epsilon=1e-8):
    """Normalise each feature vector to unit root-mean-square (ProGAN): x / sqrt(mean(x^2) + eps)."""
    return x * ops.rsqrt(ops.mean(ops.square(x), axis=-1, keepdims=True) + epsilon)


def prenormalize(weight, styles):
    """The reference's guard before a float16 demodulated convolution: each output channel's kernel
    scaled to largest magnitude 1 / sqrt(k * k * I), each sample's styles to largest magnitude 1, so
    the modulated activations cannot overflow. Demodulation divides both scales out again.
    Shapes: weight [k, k, I, O], styles [B, I] -> the same"""
    k, _, in_channels, _ = weight.shape
    weight = weight / (math.sqrt(k * k * in_channels) * tf.reduce_max(tf.abs(weight), axis=[0, 1, 2], keepdims=True))
    return weight, styles / tf.reduce_max(tf.abs(styles), axis=1, keepdims=True)


def modulated_conv2d(x, weight, styles, demodulate=True, up=False, fused=False, f=None, epsilon=1e-8):
    """StyleGAN2 modulated convolution (eq. 1-3): scale input channels by the style, convolve,
    and optionally rescale each output channel to unit expected variance.

    `weight` is the already-equalized kernel. With `up`, the convolution is a stride-2 transposed
    convolution followed by the [1,3,3,1] FIR filter, as in the reference. `fused` computes one
    kernel per sample and runs a grouped convolution; the other path modulates activations instead,
    which is mathematically the same. In float16 a demodulated convolution first `prenormalize`s.

    Shapes: x [B, H, W, I], weight [k, k, I, O], styles [B, I] -> [B, H', W', O] (H' = 2H with up)
    """
    k = weight.shape[0]
    compute_dtype = x.dtype
    # Demodulation in at least float32: a sum of k*k*I squares overflows float16 easily.
    acc = accumulation_dtype(compute_dtype)
    w32 = tf.cast(weight, acc)
    s32 = tf.cast(styles, acc)
    if demodulate and compute_dtype == tf.float16:
        w32, s32 = prenormalize(w32, s32)
        weight, styles = tf.cast(w32, compute_dtype), tf.cast(s32, compute_dtype)
    if demodulate:
        d = tf.math.rsqrt(tf.einsum("hwio,bi->bo", tf.square(w32), tf.square(s32)) + epsilon)  # [B, O]

    if not fused:
        x = x * tf.cast(styles, compute_dtype)[:, None, None, :]                    # [B, H, W, I]
        if up:
            b, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
            x = tf.nn.conv2d_transpose(
                x, tf.transpose(weight, [0, 1, 3, 2]),                               # [k, k, O, I]
                output_shape=[b, 2 * h + k - 2, 2 * w + k - 2, weight.shape[-1]],
                strides=2, padding="VALID")
        else:
            x = tf.nn.conv2d(x, weight, strides=1, padding="SAME")
        if demodulate:
            x = x * tf.cast(d, compute_dtype)[:, None, None, :]                      # [B, H', W', O]
    else:
        wb = w32[None] * s32[:, None, None, :, None]                                 # [B, k, k, I, O]
        if demodulate:
            wb = wb * d[:, None, None, None, :]
        wb = tf.cast(wb, compute_dtype)
        b, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
        in_ch, out_ch = weight.shape[2], weight.shape[3]
        xg = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, h, w, -1])              # [1, H, W, B*I]
        wg = tf.reshape(tf.transpose(wb, [1, 2, 3, 0, 4]), [k, k, in_ch, -1])       # [k, k, I, B*O]
        if up:
            # A stride-2 transposed convolution is a convolution with the flipped kernel over the
            # zero-stuffed input; grouped transposed convolutions do not exist in TensorFlow.
            xg = upfirdn2d(xg, np.ones([1, 1], np.float32), up=2, pad=(k - 1, k - 2))
            y = tf.nn.conv2d(xg, wg[::-1, ::-1], strides=1, padding="VALID")
            h, w = 2 * h + k - 2, 2 * w + k - 2
        else:
            y = tf.nn.conv2d(xg, wg, strides=1, padding="SAME")                     # [1, H, W, B*O]
        x = tf.transpose(tf.reshape(y, [h, w, b, out_ch]), [2, 0, 1, 3])           # [B, H', W', O]
    if up:
        # Blur the transposed-conv output back to exactly 2H x 2W (reference: conv2d_resample).
        p = f.shape[0] - 2 - (k - 1)
        x = upfirdn2d(x, f, pad=((p + 1) // 2 + 1, p // 2 + 1), gain=4.0)
    return x


def minibatch_stddev(x, group_size=4, num_features=1, epsilon=1e-8):
    """Append the average standard deviation over groups of samples as extra feature maps (ProGAN).

    Groups are contiguous runs of G samples (sample i is in group i // G), so splitting a batch
    into per-replica slices whose size is a multiple of G gives exactly the same result.
    Computed in at least float32. Shapes: x [B, H, W, C] -> [B, H, W, C + F]
    """
    dtype = x.dtype
    x32 = tf.cast(x, accumulation_dtype(dtype))
    batch = x.shape[0]
    g = min(group_size, batch) if batch is not None else group_size
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    f = num_features
    y = tf.reshape(x32, [-1, g, h, w, f, c // f])                                 # [n, G, H, W, F, c]
    y = y - tf.reduce_mean(y, axis=1, keepdims=True)
    y = tf.sqrt(tf.reduce_mean(tf.square(y), axis=1) + epsilon)                   # [n, H, W, F, c]
    y = tf.reduce_mean(y, axis=[1, 2, 4])                                          # [n, F]
    y = tf.reshape(tf.tile(y[:, None, :], [1, g, 1]), [-1, f])                      # [B, F]  (repeat, XLA-friendly)
    y = tf.tile(y[:, None, None, :], [1, h, w, 1])                                 # [B, H, W, F]
    return tf.concat([x, tf.cast(y, dtype)], axis=-1)


def stateless_bits(shape, seed):
    """Philox uint32 bits of `shape` from a [2] integer seed, the same compiled by XLA or not.

    The seed's words are the Philox key and the high word of its counter as they are: TensorFlow's
    own seed scrambling (StatelessRandomGetKeyCounter) differs under XLA for 64-bit seeds. A draw
    counts up the low word: seeds that differ in the first word use independent keys, seeds that
    differ in the second use disjoint counter ranges."""
    seed = tf.bitcast(tf.cast(seed, tf.int64), tf.uint64)                        # [2]
    key, counter = seed[:1], tf.stack([tf.constant(0, tf.uint64), seed[1]])
    return tf.raw_ops.StatelessRandomUniformFullIntV2(shape=shape, key=key, counter=counter,
                                                      alg=tf.random.Algorithm.PHILOX.value,
                                                      dtype=tf.uint32)


def fold_in(seed, data):
    """The [2] int64 seed of a sub-stream: a 64-bit Philox hash of `seed`, then `data` (an integer).
    Distinct (seed, data) pairs give distinct seeds, barring a 2^-64 hash collision; sums such as
    seed + [0, data] collide (seed + [0, 1] with data 0 is seed with data 1)."""
    hashed = tf.bitcast(tf.reshape(stateless_bits([2], seed), [1, 2]), tf.int64)   # [1]
    return tf.concat([hashed, tf.reshape(tf.cast(data, tf.int64), [1])], axis=0)


def stateless_uniform(shape, seed, dtype="float32"):
    """U[0, 1) from a [2] integer seed, the same numbers whether XLA compiles it or not.

    TensorFlow's own stateless generators turn the same Philox bits into other numbers under XLA,
    so a compiled step would train on other latents, noise and augmentations than a plain one.
    The top 23 bits become the mantissa of a float in [1, 2), minus 1: exact either way."""
    mantissa = tf.bitwise.right_shift(stateless_bits(shape, seed), tf.constant(9, tf.uint32))
    one_to_two = tf.bitcast(tf.bitwise.bitwise_or(mantissa, tf.constant(0x3F800000, tf.uint32)), tf.float32)
    return tf.cast(one_to_two - 1.0, dtype)


def stateless_normal(shape, seed, dtype="float32"):
    """N(0, 1) from a [2] integer seed by the Box-Muller transform of `stateless_uniform` pairs: the
    same numbers compiled by XLA or not, up to the last bits of log, cos and sin."""
    shape = tf.convert_to_tensor(shape, tf.int32)
    size = tf.reduce_prod(shape)
    half = (size + 1) // 2
    u = stateless_uniform(tf.stack([2, half]), seed)                              # [2, n/2]
    radius = tf.sqrt(-2.0 * tf.math.log(1.0 - u[0]))                              # 1 - u in (0, 1]
    angle = 2.0 * math.pi * u[1]
    normal = tf.concat([radius * tf.cos(angle), radius * tf.sin(angle)], axis=0)[:size]
    return tf.cast(tf.reshape(normal, shape), dtype)


def replica_normal(local_shape, seed, dtype="float32"):
    """Stateless N(0, 1) noise for this replica's slice of the global batch.

    Draws the noise of the whole global batch from `seed` and keeps this replica's rows, so that a
    step gives the same numbers on one device as split over several (cheap next to the convolutions).
    Shapes: local_shape [b, ...] -> [b, ...]
    """
    ctx = tf.distribute.get_replica_context()
    replicas = ctx.num_replicas_in_sync if ctx is not None else 1
    b = local_shape[0]
    full = stateless_normal([replicas * b, *local_shape[1:]], seed, dtype=dtype)
    if replicas == 1:
        return full
    start = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * b
    return full[start:start + b]


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------

def _check_activation(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


@register
class EqualizedDense(keras.layers.Layer):
    """Dense layer with equalized learning rate (Karras et al. 2018).

    The kernel is stored as N(0, 1/lr_multiplier^2) and scaled at run time by
    gain / sqrt(fan_in) * lr_multiplier, so every weight starts at N(0, gain^2/fan_in) and Adam's
    effective step on it is scaled by lr_multiplier (the mapping network uses 0.01).
    """

    def __init__(self, units, gain=1.0, lr_multiplier=1.0, use_bias=True, bias_init=0.0,
                 activation="linear", **kwargs):
        super().__init__(**kwargs)
        if units < 1:
            raise ValueError(f"units must be positive, got {units}")
        _check_activation(activation)
        self.units = int(units)
        self.gain = float(gain)
        self.lr_multiplier = float(lr_multiplier)
        self.use_bias = bool(use_bias)
        self.bias_init = float(bias_init)
        self.activation = activation

    def build(self, input_shape):
        fan_in = int(input_shape[-1])
        self.weight_gain = self.gain / math.sqrt(fan_in) * self.lr_multiplier
        self.kernel = self.add_weight(
            name="kernel", shape=(fan_in, self.units),
            initializer=keras.initializers.RandomNormal(stddev=1.0 / self.lr_multiplier))
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.units,),
                initializer=keras.initializers.Constant(self.bias_init / self.lr_multiplier))

    def effective_kernel(self):
        return self.kernel * self.weight_gain

    def call(self, x):
        y = ops.matmul(x, self.effective_kernel())
        b = self.bias * self.lr_multiplier if self.use_bias else 0.0
        return bias_act(y, b, self.activation)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "gain": self.gain,
                "lr_multiplier": self.lr_multiplier, "use_bias": self.use_bias,
                "bias_init": self.bias_init, "activation": self.activation}


@register
class EqualizedConv2D(keras.layers.Layer):
    """Stride-1 'same' convolution with equalized learning rate, optionally downsampling 2x.

    `down_mode` says how: "decimate" low-passes and decimates first, then convolves at half
    resolution (this project's original order); "strided" blurs at full resolution and convolves
    with stride 2 (the reference, `conv2d_down_strided`). The two are the same for 1x1 kernels, so a
    1x1 always takes the cheaper "decimate" path; for 3x3 they are different operations.
    """

    def __init__(self, filters, kernel_size, gain=1.0, lr_multiplier=1.0, use_bias=True,
                 activation="linear", down=False, down_mode="decimate", clamp=None, **kwargs):
        super().__init__(**kwargs)
        self.clamp = None if clamp is None else float(clamp)
        if filters < 1 or kernel_size < 1:
            raise ValueError(f"filters and kernel_size must be positive, got {filters}, {kernel_size}")
        _check_activation(activation)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.gain = float(gain)
        self.lr_multiplier = float(lr_multiplier)
        self.use_bias = bool(use_bias)
        self.activation = activation
        self.down = bool(down)
        if down_mode not in DOWN_MODES:
            raise ValueError(f"down_mode must be one of {DOWN_MODES}, got {down_mode!r}")
        self.down_mode = down_mode
        self.fir = fir_filter()

    def build(self, input_shape):
        in_channels = int(input_shape[-1])
        k = self.kernel_size
        self.weight_gain = self.gain / math.sqrt(in_channels * k * k) * self.lr_multiplier
        self.kernel = self.add_weight(
            name="kernel", shape=(k, k, in_channels, self.filters),
            initializer=keras.initializers.RandomNormal(stddev=1.0 / self.lr_multiplier))
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def effective_kernel(self):
        return self.kernel * self.weight_gain

    def call(self, x):
        if self.down and self.down_mode == "strided" and self.kernel_size > 1:
            y = conv2d_down_strided(x, self.effective_kernel(), self.fir)
        else:
            if self.down:
                x = downsample_2d(x, self.fir)
            y = tf.nn.conv2d(x, self.effective_kernel(), strides=1, padding="SAME")
        b = self.bias * self.lr_multiplier if self.use_bias else 0.0
        return bias_act(y, b, self.activation, clamp=self.clamp)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        if self.down:
            h, w = (None if h is None else h // 2), (None if w is None else w // 2)
        return (b, h, w, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "gain": self.gain, "lr_multiplier": self.lr_multiplier, "use_bias": self.use_bias,
                "activation": self.activation, "down": self.down, "down_mode": self.down_mode, "clamp": self.clamp}


@register
class ModulatedConv2D(keras.layers.Layer):
    """StyleGAN2 modulated convolution (Karras et al. 2020, eq. 1-3), without bias.

    A style affine (EqualizedDense, bias init 1 so styles start at 1) maps w to one scale per input
    channel. Shapes: x [B, H, W, I], w [B, w_dim] -> [B, H, W, filters] (2H, 2W with up=True).
    """

    def __init__(self, filters, kernel_size, demodulate=True, up=False, fused=False, **kwargs):
        super().__init__(**kwargs)
        if filters < 1 or kernel_size < 1:
            raise ValueError(f"filters and kernel_size must be positive, got {filters}, {kernel_size}")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.demodulate = bool(demodulate)
        self.up = bool(up)
        self.fused = bool(fused)
        self.fir = fir_filter()

    def build(self, x_shape, w_shape):
        in_channels = int(x_shape[-1])
        k = self.kernel_size
        self.affine = EqualizedDense(in_channels, bias_init=1.0, dtype=self.dtype_policy, name="affine")
        self.affine.build(w_shape)
        self.weight_gain = 1.0 / math.sqrt(in_channels * k * k)
        self.kernel = self.add_weight(name="kernel", shape=(k, k, in_channels, self.filters),
                                      initializer=keras.initializers.RandomNormal(stddev=1.0))

    def call(self, x, w):
        styles = self.affine(w)                                                      # [B, I]
        return modulated_conv2d(x, self.kernel * self.weight_gain, styles, demodulate=self.demodulate,
                                up=self.up, fused=self.fused, f=self.fir)

    def compute_output_shape(self, x_shape, w_shape):
        b, h, w, _ = x_shape
        if self.up:
            h, w = (None if h is None else 2 * h), (None if w is None else 2 * w)
        return (b, h, w, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "demodulate": self.demodulate, "up": self.up, "fused": self.fused}


NOISE_MODES = ("random", "const", "none")


@register
class NoiseInjection(keras.layers.Layer):
    """Adds per-pixel Gaussian noise scaled by a learned strength (init 0, so noise fades in).

    Modes: 'random' draws fresh noise from the layer's seed generator, 'const' uses one fixed noise
    map made at build time (for reproducible images), 'none' adds nothing.
    Shapes: x [B, H, W, C] -> [B, H, W, C]
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        h, w = int(input_shape[1]), int(input_shape[2])
        self.strength = self.add_weight(name="strength", shape=(), initializer="zeros")
        const = np.random.default_rng(0 if self.seed is None else self.seed).standard_normal([1, h, w, 1])
        self.const_noise = self.add_weight(
            name="const_noise", shape=(1, h, w, 1), trainable=False,
            initializer=keras.initializers.Constant(const.astype(np.float32)))

    def call(self, x, noise_mode="random", noise_seed=None, noise=None):
        """`noise_seed` ([2] int tensor), when given, makes 'random' noise stateless and replica-safe.
        `noise` [B or 1, h, w, 1], when given, is added instead of any drawn (projection optimises it)."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if noise is not None:
            noise = ops.cast(noise, x.dtype)
        elif noise_mode == "none":
            return x
        elif noise_mode == "const":
            noise = ops.cast(self.const_noise, x.dtype)
        elif noise_seed is not None:
            shape = (tf.shape(x)[0], x.shape[1], x.shape[2], 1)
            # Folded in, not added: seed + [0, i] would land on another purpose's stream.
            layer_seed = fold_in(noise_seed, self.seed or 0)
            noise = replica_normal(shape, layer_seed, dtype=x.dtype)
        else:
            shape = (ops.shape(x)[0], x.shape[1], x.shape[2], 1)
            noise = keras.random.normal(shape, seed=self.seed_generator, dtype=x.dtype)
        return x + noise * ops.cast(self.strength, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@register
class BiasActivation(keras.layers.Layer):
    """Learned per-channel bias followed by linear or leaky-ReLU(0.2) * sqrt(2) activation, then
    optionally clamped to [-clamp, clamp]."""

    def __init__(self, activation="lrelu", clamp=None, **kwargs):
        super().__init__(**kwargs)
        _check_activation(activation)
        self.activation = activation
        self.clamp = None if clamp is None else float(clamp)

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(int(input_shape[-1]),), initializer="zeros")

    def call(self, x):
        return bias_act(x, ops.cast(self.bias, x.dtype), self.activation, clamp=self.clamp)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "activation": self.activation, "clamp": self.clamp}


@register
class PixelNorm(keras.layers.Layer):
    """Normalises each vector along the last axis to unit RMS (applied to z in the mapping network)."""

    def call(self, x):
        return pixel_norm(x)

    def compute_output_shape(self, input_shape):
        return input_shape


@register
class MinibatchStdDev(keras.layers.Layer):
    """Appends `num_features` maps of per-group standard deviation, so D can see a lack of variety."""

    def __init__(self, group_size=4, num_features=1, **kwargs):
        super().__init__(**kwargs)
        if group_size < 1 or num_features < 1:
            raise ValueError(f"group_size and num_features must be positive, got {group_size}, {num_features}")
        self.group_size = int(group_size)
        self.num_features = int(num_features)

    def call(self, x):
        return minibatch_stddev(x, self.group_size, self.num_features)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (input_shape[-1] + self.num_features,)

    def get_config(self):
        return {**super().get_config(), "group_size": self.group_size, "num_features": self.num_features}


@register
class ToRGB(keras.layers.Layer):
    """Output layer: modulated 1x1 convolution without demodulation, plus bias.

    `channels` is the image channel count: 1 (grayscale MRI) by default.
    Shapes: x [B, H, W, C], w [B, w_dim] -> [B, H, W, channels]
    """

    def __init__(self, channels=1, fused=False, clamp=None, **kwargs):
        super().__init__(**kwargs)
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        self.channels = int(channels)
        self.fused = bool(fused)
        self.clamp = None if clamp is None else float(clamp)

    def build(self, x_shape, w_shape):
        self.conv = ModulatedConv2D(self.channels, 1, demodulate=False, fused=self.fused,
                                    dtype=self.dtype_policy, name="conv")
        self.conv.build(x_shape, w_shape)
        self.bias = self.add_weight(name="bias", shape=(self.channels,), initializer="zeros")

    def call(self, x, w):
        return bias_act(self.conv(x, w), ops.cast(self.bias, x.dtype), clamp=self.clamp)

    def compute_output_shape(self, x_shape, w_shape):
        return tuple(x_shape[:-1]) + (self.channels,)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "fused": self.fused, "clamp": self.clamp}
