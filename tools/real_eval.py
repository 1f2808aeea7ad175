"""Held-out quality of trained runs on real OASIS slices: the figures behind the README's real-data tables.

    python -m tools.real_eval RUN_DIR [RUN_DIR ...] --data_dir ../shared/data/oasis1_fullhead \
        --held_out 0037,0384 --plot docs/runs.png

For each run (a conditional one draws the held-out slices' own labels): SWD of its checkpoint against the held-out subjects (the validate split plus
`--held_out` training subjects), per level, with this project's normalisation and ProGAN's
(`normalization="each"`); the real floor (training subjects against held-out ones) the same way;
diversity (mean pairwise MS-SSIM) against the real set's; C2ST against the training slices (its floor: two
halves of them; the training subjects against the held-out ones shows why not those), the noise
share of pixel variance and the C2ST of noise-off slices (evaluation's "c2st" and "noise"); and how the generated slices spread over
the axial levels, by a ridge regressor of the level (levels.py) trained on real training slices and read
against the `--held_out` training subjects' own (the validate subject's levels cover another range). With
`--plot`, every run's periodic SWD curve in one figure, and a grid of samples beside real held-out
slices per run. A .npy file of another implementation's samples (NVlabs', say) in place of a run folder
is judged the same way, without the noise figures and the curve.

Lives here: this study only (a measurement script, not part of the package). Not here: the metrics'
maths (metrics.py), the level regressor (levels.py), loading (data.py and inference.py).
Run it from the repository root.
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import atomic  # noqa: E402
import data  # noqa: E402
import evaluation  # noqa: E402
import inference  # noqa: E402
import labels  # noqa: E402
import levels  # noqa: E402
import metrics  # noqa: E402
import pixels  # noqa: E402
import visualize  # noqa: E402

def swd_both(reals, fakes, seed=0):
    """SWD per level with both normalisations: {"swd_<level>": ..., "swd_each_<level>": ...}."""
    out = {f"swd_{k}": round(v, 1) for k, v in metrics.swd(reals, fakes, seed=seed).items()}
    out.update({f"swd_each_{k}": round(v, 1) for k, v in metrics.swd(reals, fakes, seed=seed,
                                                                        normalization="each").items()})
    return out


def load_samples(path, count, resolution):
    """Another implementation's generated slices from a .npy file: [N, R, R] or [N, R, R, 1], uint8 or float
    in [-1, 1]; the first `count`, as floats in [-1, 1]. A wrong shape or too few is a ValueError."""
    images = np.load(path)
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[1:] != (resolution, resolution, 1) or len(images) < count:
        raise ValueError(f"{path} holds slices shaped {images.shape}; expected at least {count} of "
                         f"{resolution}x{resolution} (set --images and --resolution to match)")
    images = images[:count]
    return pixels.to_unit_range(images) if images.dtype == np.uint8 else images.astype(np.float32)


def judged_points(runs, checkpoints):
    """(run, checkpoint, name in the results) for every run at every comma-separated checkpoint; the name
    is the run itself when there is one checkpoint, else "run@checkpoint". A .npy is judged once."""
    chosen = [c for c in checkpoints.split(",") if c]
    return [(run, c, run if len(chosen) == 1 or run.endswith(".npy") else f"{run}@{c}")
            for run in runs for c in (chosen[:1] if run.endswith(".npy") else chosen)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders (their --output_dir), or .npy files of another "
                        "implementation's samples (uint8 or [-1, 1] floats, [N, R, R(, 1)]; judged as trained on "
                        "flipped slices, like --mirror)")
    parser.add_argument("--data_dir", default="../shared/data/oasis1_fullhead")
    parser.add_argument("--held_out", default="0037,0384", help="training-split subjects held out of training")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--images", type=int, default=500, help="generated images per run")
    parser.add_argument("--checkpoint", default="best", help="best (when the run kept one), latest or a step "
                        "number; several, comma-separated, judge each run at each (a curve over training)")
    parser.add_argument("--plot", default=None, help="write the SWD curves here, and <name>_samples.png beside it")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    held_out = tuple(s for s in args.held_out.split(",") if s)
    r = args.resolution

    train_bytes, sources = data.load_slices(args.data_dir, r, None, splits=("train",), exclude_subjects=held_out,
                                            with_sources=True)
    train, train_levels, train_subjects = (pixels.to_unit_range(train_bytes), labels.slice_levels(sources),
                                           data.subjects_of(sources))
    parts = [levels.slices_with_levels(args.data_dir, r, ("validate",))]
    if held_out:
        parts.append(levels.slices_with_levels(args.data_dir, r, ("train",), subjects=held_out))
    reference = np.concatenate([p[0] for p in parts])
    # Levels are read on the held-out training subjects, not the validate one: that subject is cut over
    # another range of levels (README, "A data note"), so a regressor of the training subjects' levels
    # cannot read it (correlation at most 0.34 in any orientation, against 0.96 on held-out training subjects).
    # Without --held_out, only the validate split is left to read them on.
    level_images, reference_levels = parts[-1]

    # The regressor's penalty is chosen on those subjects, and its error there reported.
    errors = {p: float(np.mean(np.abs(levels.predict_levels(levels.fit_ridge(train, train_levels, p), level_images)
                                      - reference_levels))) for p in levels.PENALTIES}
    penalty = min(errors, key=errors.get)
    weights = levels.fit_ridge(train, train_levels, penalty)
    results = {"floor": {**swd_both(reference, train), "num_real": len(reference), "num_train": len(train),
                         "diversity_real": round(metrics.mean_pairwise_ms_ssim(reference), 3),
                         "levels_real": levels.thirds(reference_levels),
                         "levels_real_predicted": levels.thirds(levels.predict_levels(weights, level_images)),
                         "level_regressor_mae": round(errors[penalty], 3), "level_regressor_penalty": penalty}}

    def train_sample(mirror=True):                       # as a run that flipped (or did not flip) its slices saw them
        return evaluation.training_sample(train_bytes, args.images, subjects=train_subjects, mirror=mirror)
    results["floor"]["c2st_floor"] = round(evaluation.c2st_floor(train_sample()), 3)
    # Why C2ST folds by subject: with random folds it tells half the training subjects from the other half.
    names = np.unique(train_subjects)
    half = np.isin(train_subjects, names[::2])
    results["floor"]["c2st_subjects_apart_random_folds"] = round(metrics.c2st(train[half], train[~half]), 3)
    results["floor"]["c2st_train_vs_held_out"] = round(metrics.c2st(train_sample(False).images, reference), 3)
    print(json.dumps({"floor": results["floor"]}), flush=True)

    def judge(fakes, judged, kimg):
        return {"kimg": kimg, **swd_both(reference, fakes), "diversity": round(metrics.mean_pairwise_ms_ssim(fakes), 3),
                "levels": levels.thirds(levels.predict_levels(weights, fakes)),
                **{k: round(v, 3) for k, v in judged.items() if k.startswith(("c2st", "noise_share"))}}

    for run, checkpoint, name in judged_points(args.runs, args.checkpoint):
        if run.endswith(".npy"):            # another implementation's samples, trained on flipped slices
            fakes, noise_off = load_samples(run, args.images, r), None
            judged = evaluation.evaluate_images(fakes, reference, names=("c2st",), train_reals=train_sample())
            results[name] = judge(fakes, judged, None)
        else:
            trained = inference.open_generator(run, checkpoint)
            spec = trained.spec
            c = None
            if spec is not None:                # a conditional run: the held-out slices' own labels
                parts = [(args.data_dir, ("validate",), None)]
                parts += [(args.data_dir, ("train",), held_out)] if held_out else []
                c = labels.draw(evaluation.load_reference(parts, r, None, 1, spec)[1], args.images, seed=0)
            sets = evaluation.generate(trained.generator, args.images, c, names=("noise",))
            fakes, noise_off = sets["generated"], sets["noise_off"]
            judged = evaluation.evaluate_images(reals=reference, names=("c2st", "noise"),
                                                train_reals=train_sample(trained.config.mirror), **sets)
            results[name] = judge(fakes, judged, trained.images_seen / 1000)
            history_path = os.path.join(run, "logs", "history.json")
            history = json.load(open(history_path)) if os.path.exists(history_path) else []
            for key in ("swd_avg", "swd_each_avg"):     # the periodic curve's best and last (kimg, score)
                curve = [(h["kimg"], h[key]) for h in history if key in h]
                results[name][f"periodic_best_{key}"] = min(curve, key=lambda p: p[1]) if curve else None
                results[name][f"periodic_final_{key}"] = curve[-1] if curve else None
        print(json.dumps({name: results[name]}), flush=True)
        if args.plot:
            stem = os.path.splitext(args.plot)[0]
            # Real held-out slices, then samples with random noise, then the same latents with the noise off.
            cells = [reference[np.linspace(0, len(reference) - 1, 8).astype(int)], fakes[:16]]
            cells += [] if noise_off is None else [noise_off[:16]]
            stem_name = os.path.splitext(os.path.basename(os.path.normpath(name)))[0]
            visualize.save_grid(f"{stem}_{stem_name}_samples.png", np.concatenate(cells), columns=8)
    if args.plot:
        plot_curves(args.plot, [run for run in args.runs if not run.endswith(".npy")], results["floor"])
    if args.out:
        atomic.write_json(args.out, results)


def plot_curves(path, runs, floor):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for ax, (key, title) in zip(axes, (("swd_avg", "this project's normalisation"),
                                       ("swd_each_avg", "ProGAN's normalisation"))):
        for run in runs:
            history = json.load(open(os.path.join(run, "logs", "history.json")))
            points = [(h["kimg"], h[key]) for h in history if key in h]
            ax.plot(*zip(*points), marker=".", label=os.path.basename(os.path.normpath(run)))
        ax.axhline(floor[key], color="gray", linestyle="--", label="real floor (train vs held-out)")
        ax.set_title(title)
        ax.set_xlabel("kimg")
        ax.set_ylabel("SWD x1e3 vs held-out subjects")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
