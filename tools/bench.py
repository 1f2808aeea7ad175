"""Speed and memory benchmark: prints JSON, one record per configuration. Not a test.

    python -m tools.bench                          # networks: G images/s, G+D forward+backward images/s
    python -m tools.bench --train                  # also the full training step (lazy regularisers amortised)
    python -m tools.bench --resolutions 64 --precisions float32,bfloat16 --variants nonfused,fused --xla
    python -m tools.bench --ceiling --precisions float32,bfloat16,float16   # what a plain conv reaches here
    python -m tools.bench --resolutions 64 --variants nonfused --fit 1,4    # fit() with 1 and 4 steps per execution
    python -m tools.bench --preset quick --resolutions 32 --variants nonfused --train --xla  # XLA compile time

The first record says which of the CPU's bf16/fp16 units oneDNN can use (AMX or only AVX-512),
and `--ceiling` measures a plain 3x3 convolution at the reference's busiest shape in each precision:
the best this machine does per FLOP. Training is quoted against it as `fraction_of_ceiling`, using
55 GFLOP per trained image (G forward 3.85 + D forward 3.98 GFLOP, backward passes and
the lazy regularisers).

Reference configuration: 64x64, batch 16, channel_base 8192, channel_max 256, mapping
depth 2, grayscale. Every variant runs in this one process, side by side, so ratios between
them are meaningful on a shared, noisy machine; absolute figures are not. Run it from the
repository root.
"""

import argparse
import json
import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import data  # noqa: E402
from config import PRESETS  # noqa: E402
from gan import StopOnNonFinite, build_gan  # noqa: E402
from tools import bench_data  # noqa: E402

GFLOP_PER_TRAINED_IMAGE = 55.0


def timed(fn, seconds, min_calls=3, warmup=2):
    """Calls per second of `fn` after `warmup` calls, timing for at least `seconds`."""
    for _ in range(warmup):
        fn()
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return calls / (time.perf_counter() - start)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_features():
    """The CPU flags that decide whether half precision can be fast: AMX tiles or AVX-512 only."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    return [f for f in ("amx_bf16", "amx_fp16", "avx512_bf16", "avx512_fp16") if f in flags]


def conv_ceiling(precision, seconds):
    """GFLOP/s of one plain 3x3 convolution, 16x32x32x256 -> 256 channels (the reference G and D's
    widest layers), in `precision`: an upper bound for what the networks can reach."""
    dtype = tf.as_dtype(precision)
    x = tf.cast(tf.random.stateless_normal([16, 32, 32, 256], seed=[0, 0]), dtype)
    w = tf.cast(tf.random.stateless_normal([3, 3, 256, 256], seed=[0, 1]), dtype)
    conv = tf.function(lambda: tf.nn.conv2d(x, w, 1, "SAME"))
    flop = 2.0 * 16 * 32 * 32 * 256 * 256 * 9
    return dict(what="conv_ceiling", precision=precision,
                gflop_per_s=round(flop * timed(lambda: conv().numpy(), seconds) / 1e9, 1))


def fit_images_per_s(config, steps_per_execution, seconds):
    """Images/s of the training step run by `fit` as a training run runs it (`StopOnNonFinite` on,
    which reads the logs Keras brings to the host once per execution), 16 steps per epoch."""
    images = tf.random.stateless_uniform([64, config.resolution, config.resolution, 1], seed=[0, 2], maxval=256,
                                         dtype=tf.int32).numpy().astype("uint8")
    dataset = data.make_dataset(images, config.batch_size, seed=0)
    gan = build_gan(config, steps_per_execution=steps_per_execution)
    fit = lambda: gan.fit(dataset, epochs=1, steps_per_epoch=16, verbose=0, shuffle=False,  # noqa: E731
                          callbacks=[StopOnNonFinite()])
    fit()                                                                              # traces
    rate = 16 * config.batch_size * timed(fit, seconds, min_calls=1, warmup=0)
    keras.backend.clear_session()
    return rate


def bench(preset, resolution, precision, fused, xla, batch, seconds, train):
    config = PRESETS[preset].replace(resolution=resolution, precision=precision, fused_modconv=fused,
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

    record = dict(preset=preset, resolution=resolution, precision=precision, modconv="fused" if fused else "nonfused",
                  xla=xla, batch=batch)
    start = time.perf_counter()
    generate(z).numpy()
    record["generator_first_call_s"] = round(time.perf_counter() - start, 1)   # tracing (+ XLA compile)
    record["generator_images_per_s"] = round(batch * timed(lambda: generate(z).numpy(), seconds), 2)
    record["g_d_fwd_bwd_images_per_s"] = round(
        batch * timed(lambda: tf.nest.map_structure(lambda t: t.numpy(), forward_backward(z, reals)[:1]), seconds), 2)
    if train:
        step = tf.function(gan.train_logs)             # with xla its passes are compiled (StyleGAN2._passes)
        # One timed call covers lcm(16, 4) = 16 steps so every lazy regulariser runs its share.
        def sixteen_steps():
            for _ in range(16):
                logs = step(reals)
            return float(logs["d_loss"])
        start = time.perf_counter()
        step(reals)                                    # trace and compile every pass: step 0 regularises both
        record["train_first_call_s"] = round(time.perf_counter() - start, 1)
        record["train_images_per_s"] = round(16 * batch * timed(sixteen_steps, seconds, min_calls=1, warmup=0), 2)
    record["pipeline_images_per_s"] = bench_data.bench_pipeline(resolution, batch, seconds=1.0)["images_per_s"]
    record["peak_rss_mb"] = round(peak_rss_mb())
    keras.backend.clear_session()
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="reference", choices=sorted(PRESETS),
                        help="the networks to measure (their resolution is replaced by --resolutions)")
    parser.add_argument("--resolutions", default="64,128", help="comma-separated resolutions")
    parser.add_argument("--precisions", default="float32", help="float32, bfloat16, float16 (comma-separated)")
    parser.add_argument("--variants", default="nonfused,fused", help="modulated conv variants: nonfused, fused")
    parser.add_argument("--xla", action="store_true", help="also measure with XLA")
    parser.add_argument("--train", action="store_true", help="also measure the full training step")
    parser.add_argument("--fit", default="", help="also time fit() with these steps_per_execution values, "
                        "e.g. 1,4 (one record each)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="timing per measurement")
    parser.add_argument("--ceiling", action="store_true",
                        help="first measure a plain convolution's GFLOP/s in each precision")
    args = parser.parse_args()
    gpus = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
            for gpu in tf.config.list_physical_devices("GPU")]
    print(json.dumps(dict(what="machine", cpu_half_precision_units=cpu_features(), cores=os.cpu_count(),
                          gpus=gpus, tensorflow=tf.__version__, keras=keras.__version__)), flush=True)
    ceilings = {}
    if args.ceiling:
        for precision in args.precisions.split(","):
            record = conv_ceiling(precision, args.seconds)
            ceilings[precision] = record["gflop_per_s"]
            print(json.dumps(record), flush=True)
    for resolution in [int(r) for r in args.resolutions.split(",")]:
        for precision in args.precisions.split(","):
            for variant in args.variants.split(","):
                for xla in ([False, True] if args.xla else [False]):
                    record = bench(args.preset, resolution, precision, variant == "fused", xla, args.batch, args.seconds,
                                   args.train)
                    if "train_images_per_s" in record and precision in ceilings:
                        record["fraction_of_ceiling"] = round(
                            record["train_images_per_s"] * GFLOP_PER_TRAINED_IMAGE / ceilings[precision], 3)
                    print(json.dumps(record), flush=True)
            for execution in [int(n) for n in args.fit.split(",") if n]:
                config = PRESETS["reference"].replace(resolution=resolution, precision=precision,
                                                      batch_size=args.batch)
                print(json.dumps(dict(resolution=resolution, precision=precision, steps_per_execution=execution,
                                      fit_images_per_s=round(fit_images_per_s(config, execution, args.seconds), 2))),
                      flush=True)


if __name__ == "__main__":
    main()
