"""StyleGAN2 generator: mapping network z -> w and skip-architecture synthesis network w -> image.

Lives here: `MappingNetwork`, `SynthesisNetwork`, `Generator`. Not here: the layers themselves and
the network sizes shared with the discriminator and config (layers.py), training, EMA and
style-mixing regularisation (gan.py).
"""

import keras
import numpy as np
from keras import ops

from layers import (BiasActivation, EqualizedDense, ModulatedConv2D, NoiseInjection, PixelNorm, ToRGB, channels_at,
                    check_resolution, fir_filter, half_precision_policy, register, upsample_2d)


def num_ws_for(resolution):
    """Style vectors the synthesis network consumes: one per conv plus the last ToRGB."""
    return 2 * check_resolution(resolution) - 2


@register
class MappingNetwork(keras.layers.Layer):
    """z (and a label c) -> w: `num_layers` equalized dense layers with lr multiplier 0.01 on the
    PixelNormed z, concatenated with the PixelNormed embedding of c when `c_dim` > 0 (the reference's
    conditioning). With z_dim 0 it maps c alone (the discriminator's label mapping).

    Unlike the reference, c gets an extra entry that is always 1 before the embedding, so the
    embedding is affine with an offset as large as its weights from the start. The reference's
    linear embedding, zero bias at first, is then normalised, which keeps only the direction of
    c * k: every positive value of a continuous label (a slice level, an age) gives the same
    embedding until the bias has grown. One-hot labels lose nothing either way.

    `w_avg` (non-trainable, only with `track_w_avg`) is the running mean of w, updated by the trainer
    and used for the truncation trick: w' = w_avg + psi * (w - w_avg).
    Shapes: z [B, z_dim], c [B, c_dim] -> w [B, w_dim]
    """

    def __init__(self, z_dim=512, w_dim=512, num_layers=8, lr_multiplier=0.01, c_dim=0, track_w_avg=True,
                 **kwargs):
        super().__init__(**kwargs)
        if not 1 <= num_layers <= 8:
            raise ValueError(f"mapping num_layers must be between 1 and 8, got {num_layers}")
        if z_dim + c_dim <= 0:
            raise ValueError("a mapping network needs a latent (z_dim > 0), a label (c_dim > 0) or both")
        self.z_dim, self.w_dim, self.num_layers = int(z_dim), int(w_dim), int(num_layers)
        self.c_dim, self.track_w_avg = int(c_dim), bool(track_w_avg)
        self.lr_multiplier = float(lr_multiplier)
        self.norm = PixelNorm()
        # The label's embedding: linear, learning rate 1, as wide as w (the reference's embed_features).
        self.embed = EqualizedDense(self.w_dim, name="embed") if self.c_dim else None
        self.dense = [EqualizedDense(self.w_dim, lr_multiplier=self.lr_multiplier, activation="lrelu",
                                     name=f"fc{i}") for i in range(self.num_layers)]

    def build(self, z_shape, c_shape=None):
        batch = z_shape[0]
        self.norm.build((batch, max(self.z_dim, self.w_dim)))
        if self.embed is not None:
            self.embed.build((batch, self.c_dim + 1))
        shape = (batch, self.z_dim + (self.w_dim if self.c_dim else 0))
        for layer in self.dense:
            layer.build(shape)
            shape = (batch, self.w_dim)
        if self.track_w_avg:
            # Mean aggregation: replicas update it with their local means (tf.distribute).
            self.w_avg = self.add_weight(name="w_avg", shape=(self.w_dim,), initializer="zeros",
                                         trainable=False, aggregation="mean")

    def call(self, z, c=None):
        parts = [self.norm(z)] if self.z_dim else []
        if self.c_dim:
            if c is None:
                raise ValueError(f"this network is conditional: it needs a label c [batch, {self.c_dim}]")
            c = ops.cast(c, self.compute_dtype)
            c = ops.concatenate([c, ops.ones_like(c[:, :1])], axis=-1)                            # [B, c + 1]
            parts.append(self.norm(self.embed(c)))                                                # [B, w]
        x = ops.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]                       # [B, z + w]
        for layer in self.dense:
            x = layer(x)
        return x

    def truncate(self, w, psi):
        return self.w_avg + psi * (w - self.w_avg)

    def compute_output_shape(self, z_shape, c_shape=None):
        return tuple(z_shape[:-1]) + (self.w_dim,)

    def get_config(self):
        return {**super().get_config(), "z_dim": self.z_dim, "w_dim": self.w_dim,
                "num_layers": self.num_layers, "lr_multiplier": self.lr_multiplier, "c_dim": self.c_dim,
                "track_w_avg": self.track_w_avg}


@register
class SynthesisNetwork(keras.layers.Layer):
    """Per-layer styles ws -> image, skip architecture (Karras et al. 2020, fig. 7b).

    A learned 4x4 constant, then per resolution: upsampling modulated conv, modulated conv (each
    followed by noise and bias + lrelu) and a ToRGB whose output is added to the FIR-upsampled image
    so far. Style i drives conv i; the last style drives the final ToRGB.
    `fp16_resolutions` (the reference's num_fp16_res): the layers of that many highest resolutions
    compute in float16 (never 4x4), the image sum stays in the network's own precision; `conv_clamp`
    limits every conv's output to [-conv_clamp, conv_clamp] (the reference: 256 with float16).
    Shapes: ws [B, num_ws, w_dim] -> [B, R, R, channels]
    """

    def __init__(self, resolution=64, channels=1, w_dim=512, channel_base=8192, channel_max=256,
                 fused=False, seed=0, const_std=0.05, fp16_resolutions=0, conv_clamp=None, **kwargs):
        super().__init__(**kwargs)
        self.fp16_resolutions = int(fp16_resolutions)
        self.conv_clamp = None if conv_clamp is None else float(conv_clamp)
        self.log2_res = check_resolution(resolution)
        self.const_std = float(const_std)  # Config.const_std; the reference starts it at N(0, 1)
        self.resolution, self.channels, self.w_dim = int(resolution), int(channels), int(w_dim)
        self.channel_base, self.channel_max = int(channel_base), int(channel_max)
        self.fused, self.seed = bool(fused), int(seed)
        self.num_ws = num_ws_for(resolution)
        self.fir = fir_filter()
        self.res_list = [2 ** i for i in range(2, self.log2_res + 1)]
        self.convs, self.noises, self.acts, self.torgbs = [], [], [], []
        for res in self.res_list:
            c = channels_at(res, self.channel_base, self.channel_max)
            dtype = half_precision_policy(res, self.resolution, self.fp16_resolutions)
            for j in range(1 if res == 4 else 2):
                index = len(self.convs)
                self.convs.append(ModulatedConv2D(c, 3, up=(res > 4 and j == 0), fused=self.fused,
                                                  dtype=dtype, name=f"b{res}_conv{j}"))
                self.noises.append(NoiseInjection(seed=self.seed * 1000 + index, dtype=dtype, name=f"b{res}_noise{j}"))
                self.acts.append(BiasActivation("lrelu", clamp=self.conv_clamp, dtype=dtype, name=f"b{res}_act{j}"))
            self.torgbs.append(ToRGB(self.channels, fused=self.fused, clamp=self.conv_clamp, dtype=dtype,
                                     name=f"b{res}_torgb"))

    def build(self, ws_shape):
        c4 = channels_at(4, self.channel_base, self.channel_max)
        self.const = self.add_weight(name="const", shape=(4, 4, c4),
                                     initializer=keras.initializers.RandomNormal(stddev=self.const_std))
        w_shape = (ws_shape[0], self.w_dim)
        x_shape = (ws_shape[0], 4, 4, c4)
        conv_index = 0
        for res, torgb in zip(self.res_list, self.torgbs):
            for _ in range(1 if res == 4 else 2):
                conv = self.convs[conv_index]
                conv.build(x_shape, w_shape)
                x_shape = conv.compute_output_shape(x_shape, w_shape)
                self.noises[conv_index].build(x_shape)
                self.acts[conv_index].build(x_shape)
                conv_index += 1
            torgb.build(x_shape, w_shape)

    def call(self, ws, noise_mode="random", noise_seed=None, noise_maps=None):
        """noise_maps: one [B or 1, h, w, 1] map per noise layer to add instead of drawn noise."""
        batch = ops.shape(ws)[0]
        x = ops.tile(ops.cast(self.const, self.compute_dtype)[None], [batch, 1, 1, 1])  # [B, 4, 4, C]
        image = None
        conv_index = 0
        for res, torgb in zip(self.res_list, self.torgbs):
            for _ in range(1 if res == 4 else 2):
                w = ws[:, conv_index]
                x = self.convs[conv_index](x, w)
                noise = None if noise_maps is None else noise_maps[conv_index]
                x = self.noises[conv_index](x, noise_mode=noise_mode, noise_seed=noise_seed, noise=noise)
                x = self.acts[conv_index](x)
                conv_index += 1
            y = ops.cast(torgb(x, ws[:, conv_index]), self.compute_dtype)             # style of next conv
            image = y if image is None else upsample_2d(image, self.fir) + y
        return image

    def compute_output_shape(self, ws_shape):
        return (ws_shape[0], self.resolution, self.resolution, self.channels)

    def get_config(self):
        return {**super().get_config(), "resolution": self.resolution, "channels": self.channels,
                "w_dim": self.w_dim, "channel_base": self.channel_base, "channel_max": self.channel_max,
                "fused": self.fused, "seed": self.seed, "const_std": self.const_std,
                "fp16_resolutions": self.fp16_resolutions, "conv_clamp": self.conv_clamp}


@register
class Generator(keras.Model):
    """Mapping plus synthesis network. `generator(z)` returns images in roughly [-1, 1].

    Keyword arguments of `call`: `c`, the label of a conditional generator (`c_dim` > 0, labels.py),
    `psi` and `truncation_cutoff` for the truncation trick (psi=1 is off), `noise_mode` ('random',
    'const', 'none'), `noise_seed` (stateless random noise).
    Shapes: z [B, z_dim], c [B, c_dim] -> [B, R, R, channels]
    """

    def __init__(self, resolution=64, channels=1, z_dim=512, w_dim=512, mapping_layers=8,
                 channel_base=8192, channel_max=256, fused=False, seed=0, const_std=0.05, fp16_resolutions=0,
                 conv_clamp=None, c_dim=0, **kwargs):
        super().__init__(**kwargs)
        self.fp16_resolutions, self.conv_clamp, self.c_dim = int(fp16_resolutions), conv_clamp, int(c_dim)
        self.resolution, self.channels = int(resolution), int(channels)
        self.const_std = float(const_std)
        self.z_dim, self.w_dim, self.mapping_layers = int(z_dim), int(w_dim), int(mapping_layers)
        self.channel_base, self.channel_max = int(channel_base), int(channel_max)
        self.fused, self.seed = bool(fused), int(seed)
        self.mapping = MappingNetwork(self.z_dim, self.w_dim, self.mapping_layers, c_dim=self.c_dim, name="mapping")
        self.synthesis = SynthesisNetwork(self.resolution, self.channels, self.w_dim, self.channel_base,
                                          self.channel_max, self.fused, self.seed, self.const_std,
                                          self.fp16_resolutions, conv_clamp, name="synthesis")
        self.num_ws = self.synthesis.num_ws
        self.build((None, self.z_dim))

    def build(self, z_shape):
        self.mapping.build(z_shape)
        self.synthesis.build((z_shape[0], self.num_ws, self.w_dim))
        self.built = True

    def broadcast(self, w):
        """One w for every layer: [B, w_dim] -> [B, num_ws, w_dim]."""
        return ops.tile(w[:, None, :], [1, self.num_ws, 1])  # tile, not repeat: XLA needs static shapes

    def truncate(self, ws, psi=1.0, truncation_cutoff=None):
        """Pull styles towards w_avg; only the first `truncation_cutoff` layers (all when None)."""
        if psi == 1.0:
            return ws
        cutoff = self.num_ws if truncation_cutoff is None else int(truncation_cutoff)
        layer = np.arange(self.num_ws)[None, :, None]
        return ops.where(layer < cutoff, self.mapping.truncate(ws, psi), ws)

    def call(self, z, c=None, psi=1.0, truncation_cutoff=None, noise_mode="random", noise_seed=None):
        ws = self.truncate(self.broadcast(self.mapping(z, c)), psi, truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, noise_seed=noise_seed)

    def compute_output_shape(self, z_shape):
        return (z_shape[0], self.resolution, self.resolution, self.channels)

    def get_config(self):
        return {"resolution": self.resolution, "channels": self.channels, "z_dim": self.z_dim,
                "w_dim": self.w_dim, "mapping_layers": self.mapping_layers,
                "channel_base": self.channel_base, "channel_max": self.channel_max,
                "fused": self.fused, "seed": self.seed, "const_std": self.const_std,
                "fp16_resolutions": self.fp16_resolutions, "conv_clamp": self.conv_clamp, "c_dim": self.c_dim,
                "name": self.name}
