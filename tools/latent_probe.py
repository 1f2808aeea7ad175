"""Why a generator's slices are told from real ones: where its noise enters and at what scale the difference lies.

    python -m tools.latent_probe RUN_DIR --checkpoint best --data_dir ../shared/data/oasis1_fullhead \
        --held_out 0037,0384

Prints, for one checkpoint's EMA generator: per synthesis layer, the standard deviation of the
convolution's output (before the noise is added) over 64 latents next to the layer's learned
noise strength, so a noise that swamps small feature maps would show; then C2ST against the
training slices (the run's `--held_out` subjects left out; by subject and flipped as the run was,
evaluation.training_sample) on the slices as they are, after a
Gaussian blur of std 2 and 4 pixels (both sets), and as 4x4-pixel block means: if blurring leaves the
AUC near 1, what tells the sets apart is coarse anatomy, not texture.

Lives here: this diagnostic only (a measurement script, not part of the package). The metrics are
metrics.py, loading is data.py and inference.py. Run it from the repository root.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

import data  # noqa: E402
import evaluation  # noqa: E402
import inference  # noqa: E402
import metrics  # noqa: E402
import sampling  # noqa: E402


def layer_scales(g, count=64):
    """[(resolution, std of the conv output before noise, noise strength)] per synthesis layer."""
    ws = g.broadcast(g.mapping(sampling.latents(range(count), g.z_dim), None))
    syn, rows, i = g.synthesis, [], 0
    x = tf.tile(syn.const[None], [count, 1, 1, 1])
    for res in syn.res_list:
        for _ in range(1 if res == 4 else 2):
            y = syn.convs[i](x, ws[:, i])
            rows.append((res, float(tf.math.reduce_std(y)), float(syn.noises[i].strength.numpy())))
            x = syn.acts[i](syn.noises[i](y, noise_mode="random"))
            i += 1
    return rows


def blur(images, sigma):
    """The 5x5 binomial filter (std 1 px) applied sigma^2 times: a Gaussian of std `sigma` px."""
    for _ in range(int(round(sigma ** 2))):
        images = metrics.gaussian_blur(images)
    return images


def block_means(images, block=4):
    n, r, _, c = images.shape
    return images.reshape(n, r // block, block, r // block, block, c).mean(axis=(2, 4))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run folder (its --output_dir)")
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--data_dir", default="../shared/data/oasis1_fullhead")
    parser.add_argument("--held_out", default="0037,0384", help="training-split subjects held out of training")
    parser.add_argument("--images", type=int, default=500)
    args = parser.parse_args()
    trained = inference.open_generator(args.run, args.checkpoint)
    g = trained.generator
    print(f"{args.run} at {trained.images_seen / 1000:g} kimg")
    for res, std, strength in layer_scales(g):
        print(f"  {res:4d} px: conv output std {std:.4f}, noise strength {strength:+.4f}")
    held_out = tuple(s for s in args.held_out.split(",") if s)
    images, sources = data.load_slices(args.data_dir, g.resolution, None, exclude_subjects=held_out, with_sources=True)
    train = evaluation.training_sample(images, args.images, subjects=data.subjects_of(sources),
                                       mirror=trained.config.mirror)
    fake = sampling.synthesize(g, range(args.images), noise_mode="random")
    for name, view in (("as they are", lambda x: x), ("Gaussian blur, std 2 px", lambda x: blur(x, 2)),
                       ("Gaussian blur, std 4 px", lambda x: blur(x, 4)), ("4x4 block means", block_means)):
        auc = metrics.c2st(view(train.images), view(fake), real_groups=train.subjects)
        print(f"  C2ST against training slices, {name}: {auc:.3f}", flush=True)


if __name__ == "__main__":
    main()
