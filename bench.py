"""Speed and memory benchmark: prints JSON, one record per configuration. Not a test.

    python bench.py                          # networks: G images/s, G+D forward+backward images/s
    python bench.py --train                  # also the full training step (lazy regularisers amortised)
    python bench.py --resolutions 64 --precisions float32,bfloat16 --variants nonfused,fused --xla

Reference configuration (issue 8): 64x64, batch 16, channel_base 8192, channel_max 256, mapping
depth 2, grayscale. Every variant runs in this one process, side by side, so ratios between
them are meaningful on a shared, noisy machine; absolute figures are not.
"""

import argparse
import json
import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from config import PRESETS  # noqa: E402
from gan import build_gan  # noqa: E402


def timed(fn, seconds, min_calls=3):
    """Calls per second of `fn` after two warm-up calls, timing for at least `seconds`."""
    fn(), fn()
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return calls / (time.perf_counter() - start)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench(resolution, precision, fused, xla, batch, seconds, train):
    config = PRESETS["reference"].replace(resolution=resolution, precision=precision, fused_modconv=fused,
                                          xla=xla, batch_size=batch)
    gan = build_gan(config)
    g, d = gan.generator, gan.discriminator
    z = tf.random.stateless_normal([batch, config.z_dim], seed=[0, 0])
    reals = tf.random.stateless_uniform([batch, resolution, resolution, 1], seed=[0, 1], minval=-1, maxval=1)

    generate = tf.function(lambda z: gan.generator_ema(z, noise_mode="const"), jit_compile=xla)

    @tf.function(jit_compile=xla)
    def forward_backward(z, reals):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(d(g(z))) - tf.reduce_mean(d(reals))
        return tape.gradient(loss, g.trainable_variables + d.trainable_variables)

    record = dict(resolution=resolution, precision=precision, modconv="fused" if fused else "nonfused",
                  xla=xla, batch=batch)
    record["generator_images_per_s"] = round(batch * timed(lambda: generate(z).numpy(), seconds), 2)
    record["g_d_fwd_bwd_images_per_s"] = round(
        batch * timed(lambda: tf.nest.map_structure(lambda t: t.numpy(), forward_backward(z, reals)[:1]), seconds), 2)
    if train:
        step = tf.function(gan.train_logs, jit_compile=xla)
        # One timed call covers lcm(16, 4) = 16 steps so every lazy regulariser runs its share.
        def sixteen_steps():
            for _ in range(16):
                logs = step(reals)
            return float(logs["d_loss"])
        record["train_images_per_s"] = round(16 * batch * timed(sixteen_steps, seconds, min_calls=1), 2)
    record["peak_rss_mb"] = round(peak_rss_mb())
    keras.backend.clear_session()
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", default="64,128", help="comma-separated resolutions")
    parser.add_argument("--precisions", default="float32", help="float32, bfloat16, float16 (comma-separated)")
    parser.add_argument("--variants", default="nonfused,fused", help="modulated conv variants: nonfused, fused")
    parser.add_argument("--xla", action="store_true", help="also measure with XLA")
    parser.add_argument("--train", action="store_true", help="also measure the full training step")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="timing per measurement")
    args = parser.parse_args()
    for resolution in [int(r) for r in args.resolutions.split(",")]:
        for precision in args.precisions.split(","):
            for variant in args.variants.split(","):
                for xla in ([False, True] if args.xla else [False]):
                    record = bench(resolution, precision, variant == "fused", xla, args.batch, args.seconds,
                                   args.train)
                    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
