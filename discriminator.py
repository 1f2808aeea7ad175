"""StyleGAN2 discriminator, residual architecture (Karras et al. 2020, fig. 7c).

Lives here: `Discriminator`. FromRGB at full resolution, then one residual block per resolution
(two 3x3 convs, the second downsampling by `down_mode`, plus a downsampled 1x1 skip, summed and
scaled by 1/sqrt(2)), then minibatch stddev, a 3x3 conv and a dense head; a conditional D (c_dim > 0)
projects the head's output onto its mapped label (the projection discriminator, Miyato & Koyama
2018, as StyleGAN2-ADA). It returns raw logits: there is no sigmoid,
because the hinge, WGAN and logistic losses all need unbounded scores (the earlier attempt squashed
them and stopped learning). Not here: the losses (losses.py) or the layers (layers.py).
"""

import math

import keras
from keras import ops

from generator import MappingNetwork
from layers import (EqualizedConv2D, EqualizedDense, MinibatchStdDev, channels_at, check_resolution,
                    half_precision_policy, register)

INV_SQRT2 = 1.0 / math.sqrt(2.0)


@register
class Discriminator(keras.Model):
    """Image (and its label) -> one logit per image. Shapes: images [B, R, R, channels], c [B, c_dim] -> [B, 1]

    Conditional: a mapping network (depth `mapping_layers`, lr multiplier 0.01) maps c to cmap
    [B, cmap_dim], cmap_dim = the 4x4 block's width; the head outputs cmap_dim features h and the
    logit is sum(h * cmap) / sqrt(cmap_dim).

    `fp16_resolutions`: FromRGB and the blocks of that many highest resolutions compute in float16
    (the 4x4 epilogue never does); `conv_clamp` limits every conv's output (not the 1x1 skips'), as
    the generator's."""

    def __init__(self, resolution=64, channels=1, channel_base=8192, channel_max=256,
                 mbstd_group_size=4, mbstd_num_features=1, down_mode="strided", fp16_resolutions=0,
                 conv_clamp=None, c_dim=0, mapping_layers=2, **kwargs):
        super().__init__(**kwargs)
        self.c_dim, self.mapping_layers = int(c_dim), int(mapping_layers)
        self.fp16_resolutions, self.conv_clamp = int(fp16_resolutions), conv_clamp
        half = lambda res: half_precision_policy(res, resolution, self.fp16_resolutions)  # noqa: E731
        log2_res = check_resolution(resolution)
        self.resolution, self.channels = int(resolution), int(channels)
        self.channel_base, self.channel_max = int(channel_base), int(channel_max)
        self.mbstd_group_size, self.mbstd_num_features = int(mbstd_group_size), int(mbstd_num_features)
        self.down_mode = down_mode
        ch = lambda res: channels_at(res, self.channel_base, self.channel_max)  # noqa: E731

        self.from_rgb = EqualizedConv2D(ch(resolution), 1, activation="lrelu", clamp=conv_clamp,
                                        dtype=half(resolution), name="from_rgb")
        self.blocks = []
        for res in [2 ** i for i in range(log2_res, 2, -1)]:
            self.blocks.append((
                EqualizedConv2D(ch(res), 3, activation="lrelu", clamp=conv_clamp, dtype=half(res), name=f"b{res}_conv0"),
                EqualizedConv2D(ch(res // 2), 3, activation="lrelu", down=True, down_mode=down_mode,
                                clamp=conv_clamp, dtype=half(res), name=f"b{res}_conv1"),
                EqualizedConv2D(ch(res // 2), 1, use_bias=False, down=True, dtype=half(res), name=f"b{res}_skip"),
            ))
        self.mbstd = MinibatchStdDev(self.mbstd_group_size, self.mbstd_num_features, name="mbstd")
        self.conv4 = EqualizedConv2D(ch(4), 3, activation="lrelu", clamp=conv_clamp, name="b4_conv")
        self.fc = EqualizedDense(ch(4), activation="lrelu", name="b4_fc")
        self.cmap_dim = ch(4) if self.c_dim else 0
        self.out = EqualizedDense(self.cmap_dim or 1, name="b4_out")
        self.mapping = None
        if self.c_dim:
            self.mapping = MappingNetwork(0, self.cmap_dim, self.mapping_layers, c_dim=self.c_dim, track_w_avg=False,
                                          name="mapping")
        self.build((None, self.resolution, self.resolution, self.channels))

    def build(self, input_shape):
        shape = input_shape
        self.from_rgb.build(shape)
        shape = self.from_rgb.compute_output_shape(shape)
        for conv0, conv1, skip in self.blocks:
            conv0.build(shape)
            conv1.build(conv0.compute_output_shape(shape))
            skip.build(shape)
            shape = skip.compute_output_shape(shape)
        self.mbstd.build(shape)
        shape = self.mbstd.compute_output_shape(shape)
        self.conv4.build(shape)
        shape = self.conv4.compute_output_shape(shape)
        self.fc.build((shape[0], shape[1] * shape[2] * shape[3]))
        self.out.build((shape[0], self.fc.units))
        if self.mapping is not None:
            self.mapping.build((shape[0], 0), (shape[0], self.c_dim))
        self.built = True

    def call(self, images, c=None):
        x = self.from_rgb(ops.cast(images, self.compute_dtype))
        for conv0, conv1, skip in self.blocks:
            x = (skip(x) + conv1(conv0(x))) * INV_SQRT2
        x = self.conv4(self.mbstd(x))                                   # [B, 4, 4, C]
        x = self.fc(ops.reshape(x, (ops.shape(x)[0], -1)))              # [B, C]
        x = ops.cast(self.out(x), "float32")                            # [B, cmap_dim or 1]
        if self.mapping is None:
            return x                                                    # [B, 1] raw logits
        cmap = ops.cast(self.mapping(None, c), "float32")               # [B, cmap_dim]
        return ops.sum(x * cmap, axis=1, keepdims=True) * (1.0 / self.cmap_dim ** 0.5)    # [B, 1]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        return {"resolution": self.resolution, "channels": self.channels,
                "channel_base": self.channel_base, "channel_max": self.channel_max,
                "mbstd_group_size": self.mbstd_group_size,
                "mbstd_num_features": self.mbstd_num_features, "down_mode": self.down_mode,
                "fp16_resolutions": self.fp16_resolutions, "conv_clamp": self.conv_clamp, "c_dim": self.c_dim,
                "mapping_layers": self.mapping_layers, "name": self.name}
