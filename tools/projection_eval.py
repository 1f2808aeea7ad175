"""Measure projection on real slices: how well held-out and training slices are
reconstructed, how well the residual finds synthetic lesions against a mean-slice baseline, and how
long a projection takes. Not a test: it needs a trained run and real data.

    python -m tools.projection_eval RUN_DIR --data_dir ../shared/data/oasis1_fullhead
    python -m tools.projection_eval RUN_DIR --data_dir ... --steps 300 --slices 100 --lesions 64 \\
        --compare mse,l1,msssim,dfeat,mse+dfeat --compare_slices 16 --compare_steps 300

Run it from the repository root.

What it does, with the run's EMA generator (latest checkpoint in RUN_DIR, or --checkpoint):
- Reconstruction: projects --slices validate slices (evenly spaced over the axial levels) and as
  many training slices at the same levels (subjects taken in turn) and reports PSNR and SSIM of
  both; the gap says how much the model memorises its training subjects.
- Lesions: into --lesions of those validate slices (levels with enough brain) it inserts one
  synthetic lesion each, a bright or dark disc with a soft edge of three sizes and two contrasts
  (known mask), inside the brain (the head mask of the mean training slice of that level, eroded
  past scalp and skull), projects them and scores each pixel by the smoothed residual. Pixel
  AUROC: lesion pixels against the other brain pixels of the lesioned slices. Image AUROC: the
  maximum score inside the brain, lesioned slices against the same slices without a lesion. The
  baseline scores by the residual against the mean training slice of the same level (slice level
  z from names `case_<id>_slice_<z>.nii.png`, read by labels.slice_number; training subjects are in
  MNI space, so their levels align). Held-out slices are first put in the training orientation and
  paired with the level they match best (--orient auto), so that a subject stored upside down or with
  its levels numbered otherwise (oasis1_fullhead's validate subject before its re-cut of 2026-12-03)
  still meets the right mean slice; a subject stored as the training ones is kept as it is.
- Distances: with --compare, the same on --compare_slices slices and --compare_steps steps for
  each distance, plus recovery of --compare_generated generated slices whose w is known.
- Timing: seconds per projected slice one at a time and in batches of --batch.
- The encoder: with --encoder, every projection starts from the run's projection encoder (made by
  `driver.py --mode encoder`) at its refining settings, and --steps 0 is the encoder alone;
  the timing then also times the encoder alone and the encoder plus its default steps.

Prints markdown tables, writes docs/projection_real.png and docs/projection_lesions.png (--docs)
and every number as JSON (--json, default RUN_DIR/projection_eval.json).
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from absl import logging  # noqa: E402

import atomic  # noqa: E402
import data  # noqa: E402
import encoder as E  # noqa: E402
import inference  # noqa: E402
import labels  # noqa: E402
import metrics  # noqa: E402
import pixels  # noqa: E402
import projection as P  # noqa: E402
import runs  # noqa: E402

LESION_RADII = (1.5, 3.0, 5.0)        # pixels at 64x64 (scaled with the resolution): ~1, 2 and 3.5 cm wide
LESION_CONTRASTS = (0.15, 0.3)        # intensity change in [0, 1] units (brain tissue is about 0.3-0.7)
HEAD_LEVEL = 0.15                     # the mean slice is head above this ([0, 1] units) ...
SKULL_MARGIN = 5.0                    # ... and brain this many pixels (at 64x64) inside the head's edge
MIN_BRAIN_FRACTION = 0.2              # lesions only in slices whose brain region covers this much
# A whole slice's anomaly score from its map inside the brain: the peak finds a small lesion, a high
# quantile ignores a few stray pixels, the mean sums a large faint one.
IMAGE_STATISTICS = {"max": np.max, "q99": lambda v: np.quantile(v, 0.99), "mean": np.mean}


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

def load_split(data_dir, split, resolution):
    """Named slices of one split: (names, levels [N], subjects, uint8 [N, R, R, 1]), sorted by level."""
    files = [f for f in data.find_files(data_dir, (split,)) if data.file_kind(f) == "image"]
    names = [P.target_name(f) for f in files]
    images = np.stack([data.decode_file(f, resolution)[0] for f in files])[..., None]
    numbers = [labels.slice_number(n) for n in names]
    if None in numbers:
        raise data.DataError(f"{names[numbers.index(None)]}: the slice level must be in the name, as "
                             f"case_<id>_slice_<z>.nii.png")
    levels = np.array(numbers)
    order = np.lexsort((np.array(names), levels))
    return ([names[i] for i in order], levels[order], [data.subject_of(files[i]) for i in order], images[order])


def evenly_spaced(count, n):
    """n indices spread evenly over range(count) (all of them when n >= count)."""
    return np.unique(np.round(np.linspace(0, count - 1, min(n, count))).astype(int))


def split_subjects(levels, subjects, images, held_out):
    """Slices of a split divided into (kept, held): held are those of the `held_out` subject ids
    (written as in --exclude_subjects: 37, 0037 or case_0037), each part (levels, subjects, images)."""
    wanted = {data.subject_of(f"case_{str(s).strip().removeprefix('case_')}_") for s in held_out}
    held = np.array([s in wanted for s in subjects], bool)
    if wanted and not held.any():
        raise ValueError(f"held-out subjects {', '.join(map(str, held_out))} are not in the train split; "
                         f"its subjects are {', '.join(sorted(set(subjects)))}")
    part = lambda keep: (levels[keep], [s for s, k in zip(subjects, keep) if k], images[keep])  # noqa: E731
    return part(~held), part(held)


def matched_training(levels, train_levels, train_subjects):
    """For each wanted level, a training slice of that level, cycling through the subjects."""
    chosen = []
    for i, z in enumerate(levels):
        candidates = np.flatnonzero(train_levels == z)
        if not len(candidates):
            candidates = [int(np.argmin(np.abs(train_levels - z)))]
        candidates = sorted(candidates, key=lambda j: train_subjects[j])
        chosen.append(int(candidates[i % len(candidates)]))
    return np.array(chosen)


def mean_slices(train_levels, train_images):
    """The mean training slice of every level, in [-1, 1]: {z: [R, R, C]}."""
    unit = pixels.to_unit_range(train_images)
    return {int(z): unit[train_levels == z].mean(axis=0) for z in np.unique(train_levels)}


ORIENTATIONS = {"as stored": lambda x: x, "flipped up-down": lambda x: x[:, ::-1]}   # on [N, R, R, C]


def correlation(a, b):
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b) + 1e-12))


def best_levels(images, means):
    """Per slice, the level whose mean training slice it correlates with best, and that correlation."""
    levels = np.array(sorted(means))
    stack = np.stack([means[int(z)] for z in levels])
    scores = np.array([[correlation(x, m) for m in stack] for x in images])               # [N, levels]
    return levels[scores.argmax(axis=1)], scores.max(axis=1)


def match_orientation(images, means):
    """Held-out slices in the orientation, and with the levels, under which they look most like the
    training slices: for each in-plane orientation, every slice is paired with the mean training slice
    it correlates with best; the orientation with the higher mean correlation wins. For slices in the
    training subjects' space this returns them as stored, at their own levels (within a slice or two).
    Left-right is not tested (training mirrors slices left-right).
    Returns (images, levels [N], orientation name, {orientation: mean correlation})."""
    results = {name: (flip(images), *best_levels(flip(images), means)) for name, flip in ORIENTATIONS.items()}
    scores = {name: float(r[2].mean()) for name, r in results.items()}
    best = max(scores, key=scores.get)
    return results[best][0], results[best][1], best, scores


def mean_for(levels, means):
    """Mean slices for a list of levels (the nearest level when one is missing): [N, R, R, C]."""
    known = np.array(sorted(means))
    return np.stack([means[int(known[np.argmin(np.abs(known - z))])] for z in levels])


# ---------------------------------------------------------------------------------------------
# Brain region and synthetic lesions (pure functions)
# ---------------------------------------------------------------------------------------------

def box_erode(mask, radius):
    """Binary erosion with a (2r+1) square: a pixel stays when its whole neighbourhood is set. [H, W]"""
    r = int(radius)
    if r <= 0:
        return mask.copy()
    padded = np.pad(mask.astype(np.int64), r)
    summed = padded.cumsum(0).cumsum(1)
    summed = np.pad(summed, ((1, 0), (1, 0)))
    k = 2 * r + 1
    window = summed[k:, k:] - summed[:-k, k:] - summed[k:, :-k] + summed[:-k, :-k]
    return window == k * k


def fill_holes(mask):
    """Set every pixel not connected to the border through unset pixels (4-neighbourhood). [H, W]"""
    outside = np.zeros_like(mask, bool)
    outside[0, :], outside[-1, :], outside[:, 0], outside[:, -1] = ~mask[0, :], ~mask[-1, :], ~mask[:, 0], ~mask[:, -1]
    while True:
        grown = outside.copy()
        grown[1:] |= outside[:-1]
        grown[:-1] |= outside[1:]
        grown[:, 1:] |= outside[:, :-1]
        grown[:, :-1] |= outside[:, 1:]
        grown &= ~mask
        if np.array_equal(grown, outside):
            return ~outside
        outside = grown


def brain_region(mean_slice, resolution):
    """Where lesions go and pixels are scored: the filled head of a mean slice ([-1, 1], [R, R, C])
    eroded by SKULL_MARGIN pixels at 64x64 (scaled). [R, R] bool"""
    head = fill_holes(pixels.to_zero_one(mean_slice.mean(axis=-1)) > HEAD_LEVEL)
    return box_erode(head, round(SKULL_MARGIN * resolution / 64.0))


def lesion_profile(shape, centre, radius):
    """A disc with a one-pixel soft edge: 1 inside radius - 0.5, 0 outside radius + 0.5. [H, W] float"""
    yy, xx = np.indices(shape, dtype=np.float64)
    distance = np.hypot(yy - centre[0], xx - centre[1])
    return np.clip(radius + 0.5 - distance, 0.0, 1.0)


def insert_lesion(image, region, radius, contrast, bright, rng):
    """One lesion in `image` ([-1, 1], [R, R, C]) centred at a random pixel whose whole disc lies in
    `region`. Returns (lesioned image, mask [R, R] bool: the pixels within the radius)."""
    inside = box_erode(region, int(np.ceil(radius + 0.5)))
    candidates = np.argwhere(inside if inside.any() else region)
    centre = candidates[rng.integers(len(candidates))]
    profile = lesion_profile(region.shape, centre, radius)
    unit = (image + 1.0) / 2.0 + (1.0 if bright else -1.0) * contrast * profile[..., None]
    return (np.clip(unit, 0.0, 1.0) * 2.0 - 1.0).astype(np.float32), profile >= 0.5


def lesion_kinds():
    """Every (radius at 64 px, contrast, bright) combination, in a fixed order."""
    return [(r, c, b) for r in LESION_RADII for c in LESION_CONTRASTS for b in (True, False)]


# ---------------------------------------------------------------------------------------------
# Projection runs
# ---------------------------------------------------------------------------------------------

class EncoderAlone:
    """The encoder's reconstruction with no step, with what the study uses of a Projector."""

    def __init__(self, g, encoder, w_stats):
        self.g, self.encoder, self.w_std = g, encoder, w_stats[1]

    def project(self, targets):
        began = time.time()
        ws = E.encode(self.encoder, targets)
        images = np.asarray(E.reconstruct(self.g, ws))
        distance = np.mean(np.square(images - targets), axis=(1, 2, 3))
        return P.Projection(ws=ws, noises=[], images=images, distance=distance, history=distance[None],
                            frames=images[None], seconds=time.time() - began, first_step_seconds=0.0)


def project_all(projector, images, batch, label):
    """Reconstructions [N, R, R, C], their distances [N] and the seconds per slice-step (first steps,
    which trace, left out), projecting `batch` at a time."""
    recons, distances, seconds, steps = [], [], 0.0, 0
    for start in range(0, len(images), batch):
        result = projector.project(images[start:start + batch])
        recons.append(result.images)
        distances.append(result.distance)
        seconds += result.seconds - result.first_step_seconds
        steps += (len(result.history) - 1) * len(result.images)
        logging.info("%s: %d/%d projected (%.0f s)", label, min(start + batch, len(images)), len(images),
                     seconds)
    return np.concatenate(recons), np.concatenate(distances), seconds / max(steps, 1)


def quality(recons, targets):
    psnr, ssim = metrics.psnr(recons, targets), metrics.ssim(recons, targets)
    return {"psnr": float(psnr.mean()), "psnr_std": float(psnr.std()), "ssim": float(ssim.mean()),
            "ssim_std": float(ssim.std()), "n": int(len(targets))}


def reconstruction_study(projector, val, train, batch, held=None):
    """PSNR and SSIM of each set's reconstructions; `held` (optional) are slices of training-split
    subjects the model was not trained on (--held_out), which share the training subjects' space."""
    val_recon, _, seconds_per_step = project_all(projector, val, batch, "validate slices")
    train_recon, _, _ = project_all(projector, train, batch, "training slices")
    report = {"validate": quality(val_recon, val), "train": quality(train_recon, train),
              "seconds_per_slice_step": seconds_per_step}
    if held is not None:
        report["held_out_subjects"] = quality(project_all(projector, held, batch, "held-out subjects' slices")[0], held)
    return report, val_recon, train_recon


def lesion_set(images, levels, means, resolution, n, seed):
    """Up to n lesioned copies of the slices with enough brain: (indices, lesioned, masks, regions, kinds)."""
    regions = np.stack([brain_region(m, resolution) for m in mean_for(levels, means)])
    usable = np.flatnonzero(regions.mean(axis=(1, 2)) >= MIN_BRAIN_FRACTION)
    if not len(usable):
        raise ValueError(f"no slice has a brain region of {MIN_BRAIN_FRACTION:.0%} of the image to put lesions in")
    chosen = usable[evenly_spaced(len(usable), n)]
    rng = np.random.default_rng(seed)
    kinds = lesion_kinds()
    lesioned, masks, used = [], [], []
    scale = resolution / 64.0
    for i, index in enumerate(chosen):
        radius, contrast, bright = kinds[i % len(kinds)]
        image, mask = insert_lesion(images[index], regions[index], radius * scale, contrast, bright, rng)
        lesioned.append(image)
        masks.append(mask)
        used.append({"radius_px": radius * scale, "contrast": contrast, "bright": bright})
    return chosen, np.stack(lesioned), np.stack(masks), regions[chosen], used


def detection_scores(lesioned, clean, lesion_refs, clean_refs, masks, regions, sigma):
    """Pixel and image AUROC of residual maps against references (reconstructions or mean slices)."""
    heat_lesioned = P.anomaly_map(lesioned, lesion_refs, sigma)                 # [n, R, R]
    heat_clean = P.anomaly_map(clean, clean_refs, sigma)
    pixel = metrics.auroc(heat_lesioned[regions], masks[regions])
    truth = np.r_[np.ones(len(lesioned)), np.zeros(len(clean))].astype(bool)
    by_statistic = {}
    for name, statistic in IMAGE_STATISTICS.items():
        scores = [[statistic(h[r]) for h, r in zip(heat, regions)] for heat in (heat_lesioned, heat_clean)]
        by_statistic[name] = metrics.auroc(np.concatenate(scores), truth)
    return {"pixel_auroc": pixel, "image_auroc": by_statistic["max"], "image_auroc_by_statistic": by_statistic}, \
        heat_lesioned


def lesion_study(projector, images, recons, levels, means, resolution, n, batch, seed):
    """Our residual maps and the mean-slice baseline's on the same lesioned slices."""
    chosen, lesioned, masks, regions, kinds = lesion_set(images, levels, means, resolution, n, seed)
    lesion_recon, _, _ = project_all(projector, lesioned, batch, "lesioned slices")
    sigma = P.default_sigma(resolution)
    clean = images[chosen]
    baseline_refs = mean_for(levels[chosen], means)
    ours, heat_ours = detection_scores(lesioned, clean, lesion_recon, recons[chosen], masks, regions, sigma)
    base, heat_base = detection_scores(lesioned, clean, baseline_refs, baseline_refs, masks, regions, sigma)
    by_kind = {}
    for key, select in [("bright", [k["bright"] for k in kinds]), ("dark", [not k["bright"] for k in kinds])] + [
            (f"radius {r:g}", [k["radius_px"] == r * resolution / 64.0 for k in kinds]) for r in LESION_RADII]:
        select = np.array(select)
        if not select.any():
            continue
        by_kind[key] = {name: metrics.auroc(heat[select][regions[select]], masks[select][regions[select]])
                        for name, heat in (("ours", heat_ours), ("baseline", heat_base))}
    report = {"ours": ours, "baseline": base, "pixel_auroc_by_kind": by_kind, "n": int(len(chosen)),
              "sigma_px": sigma}
    examples = dict(lesioned=lesioned, recon=lesion_recon, heat_ours=heat_ours, heat_base=heat_base, masks=masks,
                    regions=regions, kinds=kinds, names_index=chosen)
    return report, examples


def known_slices(g, n):
    """n generated slices of known w (seeds from 10,000, the constant noise): (w [n, w_dim], images)."""
    import sampling
    w = np.asarray(g.mapping(sampling.latents(list(range(10_000, 10_000 + n)), g.z_dim)))
    return w, np.asarray(g.synthesis(g.broadcast(w), noise_mode="const"))


def generated_recovery(projector, w_true, targets, batch):
    """Project generated slices of known w: PSNR and |w - w_true| / w_std (W space)."""
    recons, errors = [], []
    for start in range(0, len(targets), batch):
        result = projector.project(targets[start:start + batch])
        recons.append(result.images)
        errors.append(np.linalg.norm(result.ws.mean(axis=1) - w_true[start:start + batch], axis=1) / projector.w_std)
    return {"psnr": float(metrics.psnr(np.concatenate(recons), targets).mean()),
            "w_error_in_w_std": float(np.concatenate(errors).mean()), "n": len(targets)}


def noise_floor(g, w, targets, seed=0):
    """Mean PSNR against `targets` (rendered from `w` with the constant noise) of the same w with the noise
    off and with a fresh random draw: a projection that found w exactly but not the noise scores so."""
    return {mode: float(metrics.psnr(np.asarray(g.synthesis(g.broadcast(w), noise_mode=mode,
                                                            noise_seed=np.array([seed, 0]))), targets).mean())
            for mode in ("none", "random")}


def timing(g, settings, distance, w_stats, images, steps, batch, encoder=None):
    """Seconds per slice projected one at a time and in batches, measured after tracing each; with
    `encoder`, also the encoder alone and the encoder plus its default steps, batched."""
    out = {"steps": steps}
    if encoder is not None:
        for label, started in (("encoder_alone", EncoderAlone(g, encoder, w_stats)),
                               (f"encoder_and_{E.REFINE_STEPS}_steps", P.Projector(
                                   g, E.projection_settings(settings, True, snapshots=1), distance, w_stats, encoder))):
            started.project(images[:batch])                                   # traces
            seconds = sum(started.project(images[i:i + batch]).seconds for i in range(0, 2 * batch, batch))
            out[label] = {"batch": batch, "seconds_per_slice": seconds / (2 * batch)}
    settings = settings.replace(num_steps=steps, snapshots=1)
    for label, size in (("one_at_a_time", 1), ("batched", batch)):
        projector = P.Projector(g, settings, distance, w_stats)
        projector.project(images[:size])                                      # traces the step
        seconds = sum(projector.project(images[i:i + size]).seconds for i in range(0, 2 * size, size))
        per_slice_step = seconds / (2 * size) / steps
        out[label] = {"batch": size, "seconds_per_slice_step": per_slice_step,
                      "seconds_per_slice_1000_steps": per_slice_step * 1000}
    return out


# ---------------------------------------------------------------------------------------------
# Figures and tables
# ---------------------------------------------------------------------------------------------

def _gray(ax, image, title=None):
    ax.imshow(pixels.to_zero_one(image[..., 0]), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=7)


def figure_real(path, val, val_recon, train, train_recon, columns=8):
    import matplotlib.pyplot as plt
    rows = [("held-out", val), ("reconstruction", val_recon), ("training", train), ("reconstruction", train_recon)]
    pick = evenly_spaced(len(val), columns)
    fig, axes = plt.subplots(4, len(pick), figsize=(1.3 * len(pick), 5.6), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c, i in enumerate(pick):
            _gray(axes[r, c], images[i])
        axes[r, 0].text(-0.1, 0.5, label, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=8,
                        rotation=90)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_lesions(path, examples, rows=4):
    import matplotlib.pyplot as plt
    n = len(examples["lesioned"])
    pick = evenly_spaced(n, rows)
    fig, axes = plt.subplots(len(pick), 5, figsize=(8.0, 1.75 * len(pick)), squeeze=False)
    vmax = float(max(examples["heat_ours"].max(), examples["heat_base"].max()))
    for r, i in enumerate(pick):
        kind = examples["kinds"][i]
        label = f"{'bright' if kind['bright'] else 'dark'} r={kind['radius_px']:g} c={kind['contrast']:g}"
        _gray(axes[r, 0], examples["lesioned"][i], label if r else f"with lesion\n{label}")
        _gray(axes[r, 1], examples["recon"][i], None if r else "reconstruction")
        for c, (key, title) in enumerate((("heat_ours", "ours: |x - G(w)|"), ("heat_base", "baseline: |x - mean|"))):
            shown = axes[r, 2 + c].imshow(np.where(examples["regions"][i], examples[key][i], 0), cmap="inferno",
                                          vmin=0, vmax=vmax)
            axes[r, 2 + c].set_axis_off()
            if not r:
                axes[r, 2 + c].set_title(title, fontsize=7)
        axes[r, 4].imshow(examples["masks"][i] * 1.0 + examples["regions"][i] * 0.3, cmap="gray", vmin=0, vmax=1.3)
        axes[r, 4].set_axis_off()
        if not r:
            axes[r, 4].set_title("lesion (brain region grey)", fontsize=7)
    fig.subplots_adjust(right=0.9, wspace=0.08, hspace=0.25)
    fig.colorbar(shown, cax=fig.add_axes([0.92, 0.2, 0.015, 0.6]), label="smoothed |residual|, [0, 1] units")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def print_tables(report):
    """Markdown tables of whatever the report holds."""
    if "reconstruction" in report:
        r = report["reconstruction"]
        start = "the encoder" if report.get("encoder") else "w_avg"
        print(f"\n### Reconstruction ({report['distance']}, {report['space']}, {report['steps']} steps from {start})\n")
        print("| slices | n | PSNR (dB) | SSIM |\n|---|---|---|---|")
        for key, label in (("validate", "held-out (validate)"), ("held_out_subjects", "held-out training-split "
                           "subjects, same levels"), ("train", "training, same levels")):
            if key not in r:
                continue
            q = r[key]
            print(f"| {label} | {q['n']} | {q['psnr']:.2f} ± {q['psnr_std']:.2f} | {q['ssim']:.3f} ± "
                  f"{q['ssim_std']:.3f} |")
    if "lesions" in report:
        les = report["lesions"]
        print(f"\n### Synthetic lesions ({les['n']} slices, smoothing sigma {les['sigma_px']:g} px)\n")
        print("| scoring | pixel AUROC | image AUROC |\n|---|---|---|")
        print(f"| ours: residual to the projection | {les['ours']['pixel_auroc']:.3f} | "
              f"{les['ours']['image_auroc']:.3f} |")
        print(f"| baseline: residual to the mean training slice of the level | {les['baseline']['pixel_auroc']:.3f} | "
              f"{les['baseline']['image_auroc']:.3f} |")
        print("\n| image score inside the brain | image AUROC, ours | image AUROC, baseline |\n|---|---|---|")
        for name in IMAGE_STATISTICS:
            print(f"| {name} | {les['ours']['image_auroc_by_statistic'][name]:.3f} | "
                  f"{les['baseline']['image_auroc_by_statistic'][name]:.3f} |")
        print("\n| lesions | pixel AUROC, ours | pixel AUROC, baseline |\n|---|---|---|")
        for kind, values in les["pixel_auroc_by_kind"].items():
            print(f"| {kind} | {values['ours']:.3f} | {values['baseline']:.3f} |")
    if "timing" in report:
        t = report["timing"]
        print(f"\n### Time per projected slice ({report['resolution']}x{report['resolution']}, timed over "
              f"{t['steps']} steps, {report.get('cpu', '')})\n")
        print("| | batch | s per slice-step | s per slice at 1000 steps |\n|---|---|---|---|")
        for key in ("one_at_a_time", "batched"):
            print(f"| {key.replace('_', ' ')} | {t[key]['batch']} | {t[key]['seconds_per_slice_step']:.4f} | "
                  f"{t[key]['seconds_per_slice_1000_steps']:.1f} |")
        for key in [k for k in t if k.startswith("encoder")]:
            print(f"| {key.replace('_', ' ')} | {t[key]['batch']} | | {t[key]['seconds_per_slice']:.3f} s per slice |")
    if report.get("comparison"):
        print(f"\n### Distances compared ({report['compare_steps']} steps)\n")
        print("| distance | held-out PSNR | held-out SSIM | training PSNR | pixel AUROC | image AUROC | generated: "
              "PSNR | generated: w error / w_std | s per slice-step |\n|---|---|---|---|---|---|---|---|---|")
        for name, c in report["comparison"].items():
            print(f"| {name} | {c['validate']['psnr']:.2f} | {c['validate']['ssim']:.3f} | {c['train']['psnr']:.2f} | "
                  f"{c['lesions']['ours']['pixel_auroc']:.3f} | {c['lesions']['ours']['image_auroc']:.3f} | "
                  f"{c['generated']['psnr']:.2f} | {c['generated']['w_error_in_w_std']:.3f} | "
                  f"{c['seconds_per_slice_step']:.4f} |")
        base = next(iter(report["comparison"].values()))["lesions"]["baseline"]
        print(f"| (baseline: mean slice) | | | | {base['pixel_auroc']:.3f} | {base['image_auroc']:.3f} | | | |")
        floor = report["noise_floor"]
        print(f"\nThe generated slices' own w, rendered without their noise draw: {floor['none']:.2f} dB with the "
              f"noise off, {floor['random']:.2f} dB with a fresh one (what finding w alone can reach).")


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a training run folder (its checkpoints/ are used)")
    parser.add_argument("--data_dir", default=os.path.join("..", "shared", "data", "oasis1_fullhead"),
                        help="real slices in the COMP3710 layout (train and validate splits)")
    parser.add_argument("--checkpoint", default=None, help="which checkpoint, as driver.py's --checkpoint "
                        "(default: driver.py's default)")
    parser.add_argument("--slices", type=int, default=100, help="held-out slices, and as many training slices")
    parser.add_argument("--lesions", type=int, default=64, help="lesioned held-out slices (one per validate "
                        "slice with enough brain, so --slices bounds them: --slices 8 gave 5)")
    parser.add_argument("--steps", type=int, default=1000, help="projection steps (the reference's 1000; with "
                        "--encoder, 0 is the encoder alone)")
    parser.add_argument("--distance", default="mse", help="distance of the main study (see driver --help)")
    parser.add_argument("--space", default=None, choices=P.SPACES,
                        help="w (the default from w_avg) or wplus (the default from the encoder's start)")
    parser.add_argument("--fixed_noise", action="store_true", help="keep the generator's fixed noise maps instead "
                        "of optimising per-target ones (the reference optimises them)")
    parser.add_argument("--batch", type=int, default=8, help="targets projected at once")
    parser.add_argument("--compare", default="", help="comma-separated distances to compare, e.g. mse,msssim,dfeat")
    parser.add_argument("--compare_slices", type=int, default=16, help="slices per set in the comparison")
    parser.add_argument("--compare_steps", type=int, default=300, help="projection steps in the comparison")
    parser.add_argument("--compare_generated", type=int, default=8, help="generated slices of known w per distance")
    parser.add_argument("--timing_steps", type=int, default=50, help="steps timed per slice (0: no timing)")
    parser.add_argument("--docs", default="docs", help="folder for the figures ('' for none)")
    parser.add_argument("--json", default=None, help="where to write every number (default RUN_DIR/projection_eval.json)")
    parser.add_argument("--orient", default="auto", choices=("auto", "none"),
                        help="auto: flip held-out slices up-down if that matches the training slices better, and pair "
                             "each with the training level it matches best (for a subject stored otherwise than the "
                             "training ones); none: as stored, levels from names")
    parser.add_argument("--held_out", default="", help="comma-separated train-split subjects the run was trained "
                        "without (its --exclude_subjects): left out of the training slices and reconstructed as "
                        "a further held-out set at the same levels")
    parser.add_argument("--seed", type=int, default=0, help="lesion placement and projection seed")
    parser.add_argument("--encoder", action="store_true", help="start every projection from the run's encoder "
                        "(driver.py --mode encoder) at its refining settings; --steps 0: the encoder alone")
    args = parser.parse_args()
    logging.set_verbosity(logging.INFO)
    try:
        study_run(args)
    except (data.DataError, ValueError, FileNotFoundError, RuntimeError) as e:   # RunError is a RuntimeError
        sys.exit(f"projection_eval: {e}")


def study_run(args):
    # Without --checkpoint, the project's rule for which checkpoint (best where kept, else latest) applies.
    trained = inference.open_generator(args.run_dir, args.checkpoint or "auto", discriminator=True)
    g, d = P.unconditional(trained.generator), trained.discriminator
    resolution = g.resolution
    _, val_levels, _, val_images = load_split(args.data_dir, "validate", resolution)
    _, train_levels, train_subjects, train_images = load_split(args.data_dir, "train", resolution)
    held_out = [s for s in args.held_out.split(",") if s.strip()]
    (train_levels, train_subjects, train_images), (held_levels, held_subjects, held_images) = split_subjects(
        train_levels, train_subjects, train_images, held_out)
    means = mean_slices(train_levels, train_images)
    orientation = "as stored, levels from the names"
    if args.orient == "auto":
        unit, val_levels, orientation, scores = match_orientation(pixels.to_unit_range(val_images), means)
        val_images = pixels.to_uint8(unit)
        order = np.argsort(val_levels, kind="stable")
        val_images, val_levels = val_images[order], val_levels[order]
        orientation += ", levels matched to the training mean slices"
        logging.info("held-out slices: %s (mean correlation with the best-matching training mean slice: %s)",
                     orientation, ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    logging.info("%d validate and %d training slices at %dx%d", len(val_images), len(train_images), resolution,
                 resolution)
    w_stats = P.latent_stats(g)
    reference = P.ProjectionSettings(seed=args.seed, optimize_noise=not args.fixed_noise)   # from w_avg
    net = None
    if args.encoder:
        found = E.find(runs.Paths(args.run_dir).encoder, g)
        if found is None:
            raise FileNotFoundError(f"no projection encoder in {args.run_dir}: train one with python driver.py "
                                    f"--mode encoder --output_dir {args.run_dir}")
        net = found[0]
        logging.info("starting from the encoder trained for %s", found[1].get("checkpoint"))
    elif args.steps < 1:
        raise ValueError("--steps 0 is the encoder alone: add --encoder")
    base = E.projection_settings(reference, net is not None, space=args.space)

    def study(spec, n_slices, n_lesions, steps):
        settings = base.replace(distance=spec)
        projector = (EncoderAlone(g, net, w_stats) if net is not None and steps == 0 else
                     P.Projector(g, settings.replace(num_steps=steps), P.make_distance(spec, d, resolution=resolution),
                                 w_stats, net))
        pick = evenly_spaced(len(val_images), n_slices)
        levels = val_levels[pick]
        val = pixels.to_unit_range(val_images[pick])
        train = pixels.to_unit_range(train_images[matched_training(levels, train_levels, train_subjects)])
        held = (pixels.to_unit_range(held_images[matched_training(levels, held_levels, held_subjects)])
                if held_out else None)
        recon_report, val_recon, train_recon = reconstruction_study(projector, val, train, args.batch, held)
        lesion_report, examples = lesion_study(projector, val, val_recon, levels, means, resolution, n_lesions,
                                               args.batch, args.seed)
        return projector, recon_report, lesion_report, (val, val_recon, train, train_recon, examples)

    report = {"run_dir": args.run_dir, "resolution": resolution, "distance": args.distance, "space": base.space,
              "optimize_noise": base.optimize_noise,
              "steps": args.steps, "compare_steps": args.compare_steps, "held_out_orientation": orientation,
              "encoder": bool(net)}
    specs = [s for s in args.compare.split(",") if s]
    comparison, known = {}, known_slices(g, args.compare_generated) if specs else None
    for spec in specs:
        start = time.time()
        projector, recon, lesions, _ = study(spec, args.compare_slices, args.compare_slices, args.compare_steps)
        comparison[spec] = {**recon, "lesions": lesions,
                            "generated": generated_recovery(projector, *known, args.batch)}
        logging.info("compared %s in %.0f s", spec, time.time() - start)
    report["comparison"] = comparison
    if comparison:
        report["noise_floor"] = noise_floor(g, *known)        # what the known w reach without their noise draw

    if args.slices > 0:
        _, recon, lesions, (val, val_recon, train, train_recon, examples) = study(
            args.distance, args.slices, args.lesions, args.steps)
        report["reconstruction"], report["lesions"] = recon, lesions
        if args.docs:
            os.makedirs(args.docs, exist_ok=True)
            figure_real(os.path.join(args.docs, "projection_real.png"), val, val_recon, train, train_recon)
            figure_lesions(os.path.join(args.docs, "projection_lesions.png"), examples)
    if args.timing_steps > 0:
        images = pixels.to_unit_range(val_images[evenly_spaced(len(val_images), 2 * args.batch)])
        report["timing"] = timing(g, reference.replace(distance=args.distance),
                                  P.make_distance(args.distance, d, resolution=resolution), w_stats, images,
                                  args.timing_steps, args.batch, net)
        report["cpu"] = cpu_model()
    atomic.write_json(args.json or os.path.join(args.run_dir, "projection_eval.json"), report)
    print_tables(report)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
