"""Does a slice-conditional run give the level it is asked for? The figures behind the README's
"Conditional generation" section.

    python -m tools.condition_eval RUN_DIR --data_dir ../shared/data/oasis1_fullhead --held_out 0037,0384 \
        --sweep docs/conditional_sweep.png

A ridge regressor of the axial level on 32x32 pixels (levels.fit_ridge), its penalty chosen by
leave-one-subject-out on the real training subjects, is scored on real slices it never saw: the
held-out training subjects, and the validate split. Then the run's generator draws `--images`
slices with requested levels evenly spread over [0, 1] (its other labels drawn from the held-out
slices' own), and the regressor reads their levels back: the correlation and mean absolute error
between requested and read levels, beside the regressor's own error on real held-out slices.

The validate subject of oasis1_fullhead (0198) is scored as stored: since its re-cut of 2026-12-03
it is upright, with its levels numbered as the training subjects' (../shared/data/README.md).

Lives here: this study only (a measurement script, not part of the package). Not here: the level
regressor and its scores (levels.py), opening the model (inference.py). Run it from the
repository root.
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
import sampling  # noqa: E402
import visualize  # noqa: E402

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run trained with --condition slice[,...] (its --output_dir)")
    parser.add_argument("--data_dir", default="../shared/data/oasis1_fullhead")
    parser.add_argument("--held_out", default="0037,0384", help="training-split subjects held out of training")
    parser.add_argument("--images", type=int, default=500, help="generated slices with requested levels")
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--sweep", default=None, help="write a sweep grid of the slice level here (PNG)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    held_out = tuple(s for s in args.held_out.split(",") if s)

    trained = inference.open_generator(args.run, args.checkpoint)
    g, spec, r = trained.generator, trained.spec, trained.generator.resolution
    if spec is None or labels.SLICE not in spec.names:
        raise SystemExit(f"{args.run} is not conditioned on slice (--condition slice,...)")

    train, train_levels = levels.slices_with_levels(args.data_dir, r, ("train",), exclude=held_out)
    files = data.filter_subjects(data.find_files(args.data_dir, ("train",)), held_out, None, args.data_dir)
    subjects = np.array([data.subject_of(f) for f in files])
    penalty, cv_errors = levels.choose_penalty(train, train_levels, subjects)
    weights = levels.fit_ridge(train, train_levels, penalty)
    results = {"run": args.run, "kimg": trained.images_seen / 1000, "penalty": penalty,
               "cv_mae": round(cv_errors[penalty], 3)}

    real, real_levels = levels.slices_with_levels(args.data_dir, r, ("train",), subjects=held_out)
    results["real_held_out"] = levels.agreement(real_levels, levels.predict_levels(weights, real))
    validate, validate_levels = levels.slices_with_levels(args.data_dir, r, ("validate",))
    results["real_validate"] = levels.agreement(validate_levels, levels.predict_levels(weights, validate))

    # Requested levels evenly over [0, 1]; the other labels as the held-out slices have them.
    parts = [(args.data_dir, ("train",), held_out)] if held_out else [(args.data_dir, ("validate",), None)]
    _, reference_c = evaluation.load_reference(parts, r, None, 1, spec)
    requested, c = levels.requests(labels.draw(reference_c, args.images, seed=1), args.images, labels.slice_index(spec))
    fakes = sampling.synthesize(g, range(args.images), noise_mode="random", c=c)
    predicted = levels.predict_levels(weights, fakes)
    results["generated"] = levels.agreement(requested, predicted)
    results["generated"].update({f"mae_{k}": round(v, 3) for k, v in levels.third_errors(requested, predicted).items()})
    print(json.dumps(results), flush=True)

    if args.sweep:
        base = labels.parse_request(spec, "", optional=spec.names)
        for column in spec.columns:        # the other labels: the middle of their range, or the first category
            if column.name != labels.SLICE:
                base[column.name] = labels.sweep_values(column, 3)[1 if column.kind != "categorical" else 0]
        grid, values = sampling.sweep_grid(g, spec, range(8), base, labels.SLICE, steps=8)
        real_row = [real[np.argmin(np.abs(real_levels - v))] for v in values]       # a real held-out slice per level
        visualize.save_grid(args.sweep, np.concatenate([np.stack(real_row), grid]), columns=len(values))
        print(f"wrote {args.sweep}: first row real held-out slices at levels {[round(v, 2) for v in values]}, "
              f"then one seed per row", flush=True)
    if args.out:
        atomic.write_json(args.out, results)


if __name__ == "__main__":
    main()
