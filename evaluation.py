"""Evaluating a generator: metrics of generated against real slices, and the JSON report.

Lives here: `swd_report` (cheap, for the training loop), `evaluate_images` (every metric of two
image sets, as one flat dict) and `evaluate_run` (latest checkpoint + reference slices -> report
files in the run's `evaluation/` folder). Not here: the metrics' maths (metrics.py), flags
(driver.py), checkpoints (runs.py), data loading (data.py).

Reports are flat dicts of numbers so they log on one line and compare across checkpoints. Metrics
that need InceptionV3 features are None when its weights are unavailable; the rest still run.
"""

import functools
import os

import numpy as np
from absl import logging

import metrics
import visualize

MIN_IMAGES = 256  # fewer generated images than this make SWD and KID too noisy to compare runs


def swd_report(generated, reals, seed=0):
    """SWD per pyramid level and averaged, x 1e3 (see `metrics.swd`), normalised by the real set's
    statistics (`swd_<level>`, this project's) and by each set's own (`swd_each_<level>`, ProGAN's,
    as papers report). generated [M, R, R, C], reals [N, R, R, C] in [-1, 1]; a few seconds for 500
    64x64 images per set."""
    report = {}
    for prefix, normalization in (("swd", "real"), ("swd_each", "each")):
        for level, value in metrics.swd(reals, generated, seed=seed, normalization=normalization).items():
            report[f"{prefix}_{level}"] = float(value)
    return report


def evaluate_images(generated, reals, feature_fn=None, seed=0):
    """Every metric of `generated` against `reals` (both [N, R, R, C] in [-1, 1]) as one flat dict.

    feature_fn: images -> features [N, D] for FID, KID, precision and recall (e.g. a partial of
    `metrics.inception_features`); None, or one that raises `metrics.FeaturesUnavailable`, leaves
    those four None. Diversity is the mean pairwise MS-SSIM: higher than the real set's means
    less varied, 1 means every image is the same (mode collapse).
    """
    report = {"num_generated": len(generated), "num_real": len(reals)}
    report.update(swd_report(generated, reals, seed))
    report.update(fid=None, kid=None, precision=None, recall=None)
    if feature_fn is not None:
        try:
            real_features, fake_features = feature_fn(reals), feature_fn(generated)
        except metrics.FeaturesUnavailable as e:
            logging.warning("%s", e)
        else:
            if min(len(real_features), len(fake_features)) < real_features.shape[1]:
                logging.info("FID from fewer images than feature dimensions (%d) is biased upwards: "
                             "compare runs by KID, or FID at equal image counts", real_features.shape[1])
            report["fid"] = metrics.fid(real_features, fake_features)
            report["kid"] = metrics.kid(real_features, fake_features, seed=seed)
            report["precision"], report["recall"] = metrics.precision_recall(real_features, fake_features)
    report["diversity_generated"] = metrics.mean_pairwise_ms_ssim(generated, seed=seed)
    report["diversity_real"] = metrics.mean_pairwise_ms_ssim(reals, seed=seed)
    return report


def load_reference(parts, resolution, cache_dir, channels=1):
    """The real slices of every (folder, splits, subjects) part, together: uint8 [N, R, R, C]."""
    import data
    return np.concatenate([data.load_slices(folder, resolution, cache_dir, splits=splits, channels=channels,
                                            subjects=subjects) for folder, splits, subjects in parts])


def evaluate_run(paths, reference, num_images=None, seed=0, inception_weights=None, checkpoint="auto"):
    """Evaluate the EMA generator of a checkpoint in `paths` (`runs.choose_checkpoint`: best where the
    run kept one, else latest) against real slices.

    reference: [(folder, splits, subjects)] to compare with (`training.reference_parts`; folder None:
    the built-in synthetic slices), loaded at the run's resolution. num_images: generated images
    (seeds 0..num_images-1, random per-layer noise as in training); default as many as the
    reference has, at least 256. inception_weights: a local InceptionV3 notop .h5 file for offline
    use; default Keras's ImageNet download.
    Writes `report_<images seen, 8 digits>.json` and `latest.json` to `paths.evaluation`; returns the dict.
    """
    # Imported here, not at the top: training imports this module for `swd_report`.
    import data
    import generate
    import runs

    gan, config = runs.load_for_inference(paths, checkpoint)
    images_seen = int(gan.images_seen.numpy())
    reals = data.to_unit_range(load_reference(reference, config.resolution, paths.cache, config.channels))
    count = num_images or max(len(reals), MIN_IMAGES)
    logging.info("evaluating the checkpoint at %.1f kimg: %d generated against %d real %dx%d slices",
                 images_seen / 1000, count, len(reals), config.resolution, config.resolution)
    generated = []
    for start in range(0, count, 256):
        generated.append(generate.synthesize(gan.generator_ema, range(start, min(start + 256, count)),
                                             noise_mode="random"))
        logging.info("generated %d/%d images", start + len(generated[-1]), count)
    generated = np.concatenate(generated)                                        # [count, R, R, C]
    feature_fn = functools.partial(metrics.inception_features, weights=inception_weights or "imagenet")
    report = {"kimg": images_seen / 1000, "resolution": config.resolution, "seed": seed,
              "reference": [{"folder": folder or "synthetic", "splits": list(splits),
                             "subjects": list(subjects) if subjects else None}
                            for folder, splits, subjects in reference]}
    report.update(evaluate_images(generated, reals, feature_fn=feature_fn, seed=seed))

    os.makedirs(paths.evaluation, exist_ok=True)
    visualize.write_json(os.path.join(paths.evaluation, f"report_{images_seen:08d}.json"), report)
    visualize.write_json(os.path.join(paths.evaluation, "latest.json"), report)
    logging.info("evaluation report written to %s", os.path.join(paths.evaluation, "latest.json"))
    return report
