"""Pixel ranges: the one conversion between the networks' [-1, 1] and images' [0, 255].

Lives here: `to_unit_range` (uint8 -> [-1, 1]), `to_zero_one` ([-1, 1] -> [0, 1], clipped),
`to_byte_range` ([-1, 1] -> [0, 255] floats, what ImageNet networks' preprocessing expects),
`to_uint8` ([-1, 1] -> uint8) and `quantize` ([0, 255] floats -> uint8). They work on NumPy arrays
and on TensorFlow tensors alike. Not here: decoding or scaling MRI intensities (data.py), drawing
(visualize.py).
"""

import numpy as np
import tensorflow as tf


def to_unit_range(images):
    """uint8 [0, 255] -> float32 [-1, 1], the range the networks see."""
    if tf.is_tensor(images):
        return tf.cast(images, tf.float32) / 127.5 - 1.0
    return np.asarray(images, np.float32) / 127.5 - 1.0


def to_zero_one(images):
    """[-1, 1] -> [0, 1], clipped: what SSIM, TensorBoard and plots expect."""
    if tf.is_tensor(images):
        return tf.clip_by_value((images + 1.0) * 0.5, 0.0, 1.0)
    return np.clip((np.asarray(images) + 1.0) * 0.5, 0.0, 1.0)


def to_byte_range(images):
    """[-1, 1] -> float [0, 255] (not rounded or clipped): the input of ImageNet preprocessing."""
    return (images + 1.0) * 127.5


def to_uint8(images):
    """[-1, 1] floats -> uint8 [0, 255], clipping what the generator overshoots."""
    return quantize(to_byte_range(np.asarray(images, np.float32)))


def quantize(values):
    """[0, 255] floats -> uint8, rounded to the nearest level and clipped."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
