"""Evaluating a generator: metrics of generated against real slices, and the JSON report.

Lives here: the metric names (`METRICS`), `reference_parts` (which real slices a run is judged
against), `evaluate_images` (chosen metrics of two image sets, as one flat dict, used by training's
periodic evaluation too), `summary_lines` and `evaluate_run` (a checkpoint or exported generator +
reference slices -> report files and the SWD curve in the run's `evaluation/` folder). Not here:
the metrics' maths (metrics.py), flags (driver.py), opening a model (inference.py), data loading (data.py).

Reports are flat dicts of numbers so they log on one line and compare across checkpoints. Metrics
that need InceptionV3 features are None when its weights are unavailable; the rest still run.
"""

import functools
import json
import os
import typing

import numpy as np
from absl import logging

import atomic
import data
import labels
import levels
import metrics
import pixels
import sampling
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


METRICS = {
    "swd": "sliced Wasserstein distance per pyramid level, x1e3 (cheap; lower is better)",
    "msssim": "diversity, mean pairwise MS-SSIM of generated and of real slices (closer to the real's is better)",
    "fid": "Frechet Inception distance (needs InceptionV3 weights; lower is better)",
    "kid": "kernel Inception distance, unbiased (needs InceptionV3 weights; lower is better)",
    "pr": "precision and recall in Inception features (needs InceptionV3 weights; higher is better)",
    "c2st": "classifier two-sample test, the ROC AUC of a small CNN trained to tell generated from training slices "
            "(0.5 is best, 1.0 always told apart; about 25 s for 500 64x64 slices on two cores)",
    "noise": "noise reliance: the share of a slice's pixel variance made by the per-layer noise, and the C2ST of "
             "noise-off slices (lower is better: the anatomy should come from the latent)",
    "level": "a slice-conditional model's level read-back: slices asked for at levels evenly over [0, 1], their level "
             "read by a ridge regressor fitted on the training slices (mean absolute error, lower is better)",
}
INCEPTION_METRICS = ("fid", "kid", "pr")
# --best_by: the periodic score (a logs/history.json key, lower is better) that picks the best checkpoint
BEST_BY = {"swd_each": "swd_each_avg", "swd": "swd_avg", "fid": "fid", "kid": "kid", "c2st": "c2st",
           "c2st_swd": "c2st_swd", "level_swd": "level_swd"}
BEST_BY_NEEDS = {"fid": "fid", "kid": "kid", "c2st": "c2st", "c2st_swd": "c2st", "level_swd": "level"}  # -> --eval_metrics
TRAINED_METRICS = ("c2st", "noise", "level")   # fit a model to the training slices: asked for by name
LEVEL_MAE_TARGET = 0.1   # the level read-back a slice-conditional model should reach (a tenth of the range)
LEVEL_THIRDS = tuple(f"level_mae_{name}" for name in levels.THIRDS)
NOISE_LATENTS, NOISE_DRAWS = 64, 4   # the noise share: this many latents, each under this many noise draws


def check_metrics(names, flag="--metrics"):
    """The metric names in `names` (any order, repeats dropped), or ValueError naming the unknown ones."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in names if n.strip()))
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise ValueError(f"{flag}: unknown metric {', '.join(unknown) or '(none given)'}; choose from "
                         + "; ".join(f"{k}: {v}" for k, v in METRICS.items()))
    return names


def offline_metrics(inception_weights=None):
    """Every metric that can run without a download (`--mode evaluate`'s default): the Inception ones
    only with a local weights file (`inception_weights`, or Keras's copy in ~/.keras/models)."""
    cached = os.path.join(os.path.expanduser("~"), ".keras", "models", metrics.INCEPTION_WEIGHTS_FILE)
    if inception_weights or os.path.isfile(cached):
        return tuple(METRICS)
    logging.info("FID, KID, precision and recall skipped: no local InceptionV3 weights (--inception_weights; "
                 "%s)", metrics.INCEPTION_URL)
    return tuple(n for n in METRICS if n not in INCEPTION_METRICS)


def generate(g, count, c=None, names=("swd",), log_progress=False, spec=None):
    """What the metrics `names` need from generator `g`: `count` slices with random noise as in
    training (seeds 0..count-1, labels `c` [count, c_dim] for a conditional one), for "noise"
    the same seeds with the noise off and the first NOISE_LATENTS under NOISE_DRAWS noise draws
    each (sampling.noise_draws), and for "level" the same seeds asked for levels evenly over [0, 1]
    (levels.requests; `spec`: the label definition, which has the slice). -> keyword arguments of
    `evaluate_images`"""
    sets = {"generated": []}
    for start in range(0, count, 256):
        stop = min(start + 256, count)
        sets["generated"].append(sampling.synthesize(g, range(start, stop), noise_mode="random",
                                                     c=None if c is None else c[start:stop]))
        if log_progress:
            logging.info("generated %d/%d images", stop, count)
    sets["generated"] = np.concatenate(sets["generated"])                       # [count, R, R, C]
    if "noise" in names:
        sets["noise_off"] = sampling.synthesize(g, range(count), noise_mode="none", c=c)
        latents = min(count, NOISE_LATENTS)
        sets["draws"] = sampling.noise_draws(g, list(range(latents)), NOISE_DRAWS,
                                             None if c is None else c[:latents])
    if "level" in names:
        sets["level_requested"], asked = levels.requests(c, count, slice_index(spec))
        sets["level_generated"] = sampling.synthesize(g, range(count), noise_mode="random", c=asked)
    return sets


def slice_index(spec):
    """Where the slice level sits in `spec`'s labels; ValueError when the model has none to ask for."""
    index = labels.slice_index(spec)
    if index is None:
        raise ValueError("the level metric needs a model conditioned on the slice level (--condition slice)")
    return index


def level_reader(images, c, spec):
    """The ridge weights (levels.fit_ridge, penalty levels.TRAINING_PENALTY) that read a slice's level,
    fitted on the training slices `images` (uint8 [N, R, R, 1]) and their labels `c` [N, c_dim]."""
    return levels.fit_ridge(pixels.to_unit_range(images), c[:, slice_index(spec)], levels.TRAINING_PENALTY)


class TrainingSample(typing.NamedTuple):
    """What C2ST compares generated slices with (`training_sample`)."""
    images: np.ndarray               # [N, R, R, C] in [-1, 1]
    subjects: np.ndarray | None      # [N] each slice's subject, where there are enough to fold by


def c2st_floor(sample, seed=0):
    """C2ST between two halves of the training slices (a `TrainingSample`), what the test gives for
    sets that do not differ: with subjects, half the subjects against the other half, each folded by
    subject as the score is (about 0.5); without, two random halves."""
    images, subjects = sample
    names = np.unique(subjects) if subjects is not None else ()
    if len(names) < 2 * metrics.C2ST_FOLDS:
        return metrics.c2st(*metrics.split_halves(images, seed), seed=seed)
    half = np.isin(subjects, np.random.default_rng(seed).permutation(names)[:len(names) // 2])
    return metrics.c2st(images[half], images[~half], seed=seed, real_groups=subjects[half],
                        fake_groups=subjects[~half])


def training_sample(images, count, seed=0, subjects=None, mirror=False):
    """At most `count` of the training slices uint8 [N, R, R, C], drawn by `seed`, as a
    `TrainingSample` in [-1, 1]: what C2ST compares the generated slices with.

    Not the held-out reference: a small CNN tells one set of subjects from another by their heads
    alone (AUC 1.000 for 4 OASIS training subjects against the other 4 at 64x64, docs/quality.md).
    For the same reason the test folds by subject where `subjects` [N] names at least C2ST_FOLDS of
    them: it is then always tested on subjects it did not train on, and a generator is not asked to
    copy its training heads to pass. With `mirror` (a run that trained on slices flipped left-right at
    random), each is flipped with probability 1/2, as the generator saw them: a flipped set of real
    slices is told from the unflipped one at AUC 1.000."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.permutation(len(images))[:count])
    sample = pixels.to_unit_range(images[chosen])
    if mirror:
        flip = rng.random(len(sample)) < 0.5
        sample = np.where(flip[:, None, None, None], sample[:, :, ::-1], sample)
    if subjects is None or len(np.unique(np.asarray(subjects)[chosen])) < metrics.C2ST_FOLDS:
        if subjects is not None:
            logging.info("C2ST: fewer than %d subjects among the training slices, so its folds are random; "
                         "it may tell apart the subjects' heads, not only real from generated", metrics.C2ST_FOLDS)
        return TrainingSample(sample, None)
    return TrainingSample(sample, np.asarray(subjects)[chosen])


def evaluate_images(generated, reals, feature_fn=None, seed=0, names=tuple(n for n in METRICS if n not in TRAINED_METRICS),
                    noise_off=None, draws=None, train_reals=None, level_requested=None, level_generated=None,
                    level_weights=None):
    """The metrics `names` (see METRICS) of `generated` against `reals` (both [N, R, R, C] in
    [-1, 1]) as one flat dict. "c2st" and "noise" compare with `train_reals` instead (training
    slices and their subjects, a `TrainingSample`); "noise" also needs the same generator's `noise_off` slices and its
    noise `draws` [N, K, R, R, C] (`generate` makes all three). "level" reads the levels of
    `level_generated`, asked for at `level_requested`, with `level_weights` (`level_reader`).

    feature_fn: images -> features [N, D] for FID, KID, precision and recall (e.g. a partial of
    `metrics.inception_features`); None, or one that raises `metrics.FeaturesUnavailable`, leaves
    those None. Diversity is the mean pairwise MS-SSIM: higher than the real set's means less
    varied, 1 means every image is the same (mode collapse).
    """
    names = check_metrics(names)
    report = {"num_generated": len(generated), "num_real": len(reals)}
    if "swd" in names:
        report.update(swd_report(generated, reals, seed))
    wanted = [n for n in INCEPTION_METRICS if n in names]
    if wanted:
        report.update({k: None for n in wanted for k in (("precision", "recall") if n == "pr" else (n,))})
        try:
            if feature_fn is None:
                raise metrics.FeaturesUnavailable("no Inception feature function given")
            real_features, fake_features = feature_fn(reals), feature_fn(generated)
        except metrics.FeaturesUnavailable as e:
            logging.warning("%s", e)
        else:
            if min(len(real_features), len(fake_features)) < real_features.shape[1]:
                logging.info("FID from fewer images than feature dimensions (%d) is biased upwards: "
                             "compare runs by KID, or FID at equal image counts", real_features.shape[1])
            if "fid" in names:
                report["fid"] = metrics.fid(real_features, fake_features)
            if "kid" in names:
                report["kid"] = metrics.kid(real_features, fake_features, seed=seed)
            if "pr" in names:
                report["precision"], report["recall"] = metrics.precision_recall(real_features, fake_features)
    if train_reals is None and any(n in names for n in ("c2st", "noise")):
        raise ValueError("C2ST compares generated with training slices: give train_reals (evaluation.training_sample)")
    if train_reals is not None:
        train_reals, train_subjects = train_reals
    if "c2st" in names:
        report["c2st"] = metrics.c2st(train_reals, generated, seed=seed, real_groups=train_subjects)
        if "swd" in names:   # --best_by c2st_swd: ProGAN's SWD, scaled by how far the classifier is above chance
            report["c2st_swd"] = report["swd_each_avg"] * max(2.0 * (report["c2st"] - 0.5), 0.01)
    if "noise" in names:
        if noise_off is None or draws is None:
            raise ValueError("the noise metric needs the generator's noise-off slices and noise draws "
                             "(evaluation.generate makes them)")
        for level, share in metrics.noise_variance_shares(draws).items():
            report["noise_share" if level == "all" else f"noise_share_{level}"] = share
        report["c2st_noise_off"] = metrics.c2st(train_reals, noise_off, seed=seed,
                                                real_groups=train_subjects)
    if "level" in names:
        if level_weights is None or level_generated is None:
            raise ValueError("the level metric needs slices asked for at known levels and a level reader "
                             "(evaluation.generate and evaluation.level_reader make them)")
        predicted = levels.predict_levels(level_weights, level_generated)
        agreement = levels.agreement(level_requested, predicted)
        report.update(level_mae=agreement["mae"], level_corr=agreement["corr"],
                      **{f"level_mae_{k}": v for k, v in levels.third_errors(level_requested, predicted).items()})
        if "swd" in names:   # --best_by level_swd: ProGAN's SWD, scaled by the read-back error against its target
            report["level_swd"] = report["swd_each_avg"] * max(report["level_mae"], 0.01) / LEVEL_MAE_TARGET
    if "msssim" in names:
        report["diversity_generated"] = metrics.mean_pairwise_ms_ssim(generated, seed=seed)
        report["diversity_real"] = metrics.mean_pairwise_ms_ssim(reals, seed=seed)
    return report


def summary_lines(report):
    """One human-readable line per metric in `report` (an `evaluate_images` dict)."""
    def levels(prefix, unit=""):
        keys = sorted((k for k in report if k.startswith(prefix) and k[len(prefix):].isdigit()),
                      key=lambda k: -int(k[len(prefix):]))
        scale = 100 if unit == "%" else 1
        return ", ".join(f"{k[len(prefix):]}px {scale * report[k]:.{1 if unit else 2}f}{unit}" for k in keys)

    def value(key, digits=4):
        return "unavailable (no InceptionV3 weights)" if report.get(key) is None else f"{report[key]:.{digits}g}"

    lines = []
    if "swd_avg" in report:
        lines.append(f"SWD x1e3 (lower is better): {report['swd_avg']:.2f} average ({levels('swd_')}); "
                     f"ProGAN normalisation {report['swd_each_avg']:.2f} ({levels('swd_each_')})")
    if "fid" in report:
        lines.append(f"FID (lower is better): {value('fid')}")
    if "kid" in report:
        lines.append(f"KID (lower is better): {value('kid')}")
    if "precision" in report:
        lines.append(f"precision {value('precision', 3)}, recall {value('recall', 3)} (higher is better: "
                     f"realism and coverage)")
    if "c2st" in report:
        floor = f", two halves of them {report['c2st_floor']:.3f}" if "c2st_floor" in report else ""
        lines.append(f"C2ST against training slices, ROC AUC of a classifier (0.5 is best, 1.0 always told apart): "
                     f"{report['c2st']:.3f}{floor}")
    if "level_mae" in report:
        lines.append(f"level read-back (lower is better): asked against read, mean error {report['level_mae']:.3f} "
                     f"(thirds {', '.join('-' if report[k] is None else f'{report[k]:.3f}' for k in LEVEL_THIRDS)}), "
                     f"correlation {report['level_corr']:.3f}")
    if "noise_share" in report:
        lines.append(f"noise reliance (lower is better): the noise makes {100 * report['noise_share']:.1f}% of a slice's "
                     f"pixel variance ({levels('noise_share_', '%')}); C2ST with the noise off "
                     f"{report['c2st_noise_off']:.3f}")
    if "diversity_generated" in report:
        lines.append(f"diversity, mean pairwise MS-SSIM: generated {report['diversity_generated']:.3f}, real "
                     f"{report['diversity_real']:.3f} (higher than real: less varied; 1: one image)")
    return lines


def reference_parts(data_dir, splits=("train",), eval_dir=None, eval_splits=("validate",), eval_subjects=()):
    """Where the real slices a run is evaluated against come from: a list of (folder, splits,
    subjects). The `eval_splits` (COMP3710: validate) of `eval_dir` (default: the training data
    `data_dir`) where that folder has them, together with the held-out `eval_subjects` from the
    training `splits`; without either, the `eval_splits` as `data.load_slices` reads them (every
    slice of a folder without split folders, the whole phantom without data)."""
    folder = eval_dir or data_dir
    subjects = tuple(eval_subjects)
    present = data.split_folders(folder) if folder is not None else set()
    chosen = tuple(s for s in eval_splits if s in present)
    parts = [(folder, chosen, None)] if chosen else []
    if subjects:
        parts.append((folder, tuple(splits), subjects))
    return parts or [(folder, tuple(eval_splits), None)]


def load_reference(parts, resolution, cache_dir, channels=1, spec=None):
    """The real slices of every (folder, splits, subjects) part, together, and their labels under the
    label definition `spec` (a conditional model's; without the slices that have none,
    labels.encode_sources): (uint8 [N, R, R, C], float32 [N, c_dim] or None)."""
    if spec is None:
        return np.concatenate([data.load_slices(folder, resolution, cache_dir, splits=splits, channels=channels,
                                                subjects=subjects) for folder, splits, subjects in parts]), None
    images, sources = [], []
    for folder, splits, subjects in parts:
        part, part_sources = data.load_slices(folder, resolution, cache_dir, splits=splits, channels=channels,
                                              subjects=subjects, with_sources=True)
        images.append(part)
        sources += part_sources
    c, keep = labels.encode_sources(spec, sources)
    return np.concatenate(images)[keep], c[keep]


def evaluate_run(paths, trained, reference, num_images=None, seed=0, inception_weights=None, names=None,
                 training=(None, ("train",), ())):
    """Evaluate a trained generator (`inference.Trained`) against real slices; `paths`: its run folder.

    reference: [(folder, splits, subjects)] to compare with (`reference_parts`; folder None: the
    built-in synthetic slices), loaded at the generator's resolution. num_images: generated images
    (seeds 0..num_images-1, random per-layer noise as in training); default as many as the
    reference has, at least 256; a conditional generator's labels are drawn from the reference slices'
    own (labels.draw). inception_weights: a local InceptionV3 notop .h5 file for offline
    use; default Keras's ImageNet download. names: the metrics (default `offline_metrics`).
    training: (folder, splits, excluded subjects) of the training slices C2ST compares with
    (default: the built-in synthetic slices).
    Writes `report_<images seen, 8 digits>.json` (`report_exported.json`) and `latest.json` to
    `paths.evaluation`, and for a checkpoint of a run trained with periodic SWD `swd_curve.png`;
    returns the dict.
    """
    g, spec, images_seen = trained.generator, trained.spec, trained.images_seen
    names = check_metrics(names) if names else tuple(     # by default, the level only of a model that has one
        n for n in offline_metrics(inception_weights) if n != "level" or labels.slice_index(spec) is not None)
    exported = trained.source if images_seen is None else None
    reals, real_c = load_reference(reference, g.resolution, paths.cache, g.channels, spec)
    reals = pixels.to_unit_range(reals)
    count = num_images or max(len(reals), MIN_IMAGES)
    fake_c = labels.draw(real_c, count, seed)
    logging.info("evaluating %s: %d generated against %d real %dx%d slices (%s)",
                 exported or f"the checkpoint at {images_seen / 1000:g} kimg", count, len(reals), g.resolution,
                 g.resolution, ", ".join(names))
    sets = generate(g, count, fake_c, names, log_progress=True, spec=spec)
    if any(n in names for n in TRAINED_METRICS):
        folder, splits, excluded = training
        load = functools.partial(data.load_slices, folder, g.resolution, paths.cache, splits=splits,
                                 channels=g.channels, exclude_subjects=excluded)
        train, sources = load(with_sources=True) if folder else (load(), None)
        if "level" in names:
            train_c, keep = labels.encode_sources(spec, sources)
            sets["level_weights"] = level_reader(train[keep], train_c[keep], spec)
        sets["train_reals"] = training_sample(train, count, seed, data.subjects_of(sources),
                                              mirror=trained.config.mirror if trained.config else True)
    feature_fn = functools.partial(metrics.inception_features, weights=inception_weights or "imagenet")
    report = {"kimg": None if images_seen is None else images_seen / 1000, "resolution": g.resolution,
              "seed": seed, "exported": exported,
              "reference": [{"folder": folder or "synthetic", "splits": list(splits),
                             "subjects": list(subjects) if subjects else None}
                            for folder, splits, subjects in reference]}
    report.update(evaluate_images(reals=reals, feature_fn=feature_fn, seed=seed, names=names, **sets))
    if "c2st" in names:
        report["c2st_floor"] = c2st_floor(sets["train_reals"], seed)

    os.makedirs(paths.evaluation, exist_ok=True)
    name = "report_exported.json" if exported else f"report_{images_seen:08d}.json"
    atomic.write_json(os.path.join(paths.evaluation, name), report)
    atomic.write_json(os.path.join(paths.evaluation, "latest.json"), report)
    for line in summary_lines(report):
        logging.info("%s", line)
    logging.info("evaluation report written to %s", os.path.join(paths.evaluation, "latest.json"))
    curve = None if exported else plot_swd_curve(paths)
    if curve:
        logging.info("periodic SWD of the training run plotted in %s", curve)
    return report


def plot_swd_curve(paths):
    """The run's periodic held-out SWD, both normalisations (logs/history.json), against kimg, best marked, as
    `evaluation/swd_curve.png`; returns its path, or None for a run trained without --eval_kimg."""
    try:
        with open(paths.history_file) as f:
            history = [h for h in json.load(f) if "swd_avg" in h]
    except (OSError, ValueError):
        return None
    if not history:
        return None
    path = os.path.join(paths.evaluation, "swd_curve.png")
    curves = {f"held-out SWD x1e3, {label}'s normalisation": [h[key] for h in history]
              for key, label in (("swd_each_avg", "ProGAN"), ("swd_avg", "this project"))
              if all(key in h for h in history)}
    visualize.plot_curve(path, [h["kimg"] for h in history], curves,
                         marked=[h["kimg"] for h in history if h.get("best")])
    return path
