"""The axial level of a slice read from its pixels: the ridge regressor behind the README's level
figures (how generated slices spread over the levels, and whether a slice-conditional run gives the
level it is asked for).

Lives here: real slices with their levels (`slices_with_levels`, the levels as labels.py reads them
from file names), the regressor's features (`level_features`: 32x32 block means and a constant),
its closed-form fit and prediction (`fit_ridge`, `predict_levels`), the penalty chosen by
leave-one-subject-out (`choose_penalty`), and the summaries the studies report (`thirds`,
`agreement`). Not here: reading the slice number from a name (labels.slice_number), decoding
slices (data.py), the studies themselves and their flags (tools/real_eval.py, tools/condition_eval.py).

Ridge regression (Hoerl & Kennard 1970) in closed form: w = (X^T X + lambda I)^-1 X^T y, with the
constant column penalised like the pixels. A level is a slice's position within its subject in
[0, 1], the lowest slice 0 and the highest 1; predictions are clipped to that range.
"""

import numpy as np

import data
import labels
import pixels

THIRDS = ("low", "middle", "high")
PENALTIES = (1.0, 10.0, 100.0, 1000.0)       # the ridge penalties the studies choose among
# The penalty leave-one-subject-out chose on the OASIS training subjects (docs/conditional.md): the
# reader of a training's periodic level metric, which has no time to choose.
TRAINING_PENALTY = 1000.0
FEATURE_SIZE = 32                           # the regressor reads 32x32 block means


def slices_with_levels(folder, resolution, splits, subjects=None, exclude=()):
    """Real slices in [-1, 1] [N, R, R, 1] and each one's axial level in [0, 1] per subject
    (labels.slice_levels) -> (images, float64 levels [N])."""
    images, sources = data.load_slices(folder, resolution, None, splits=splits, subjects=subjects,
                                       exclude_subjects=exclude, with_sources=True)
    return pixels.to_unit_range(images), labels.slice_levels(sources)


def level_features(images):
    """Images [N, R, R, 1] -> the 32x32 block means per image (R <= 32: the pixels themselves),
    flattened, with a constant column: [N, 1025] (at R < 32, [N, R * R + 1])."""
    n, r, s = images.shape[0], images.shape[1], FEATURE_SIZE
    x = images[..., 0].reshape(n, s, r // s, s, r // s).mean(axis=(2, 4)) if r > s else images[..., 0]
    return np.concatenate([x.reshape(n, -1), np.ones([n, 1])], axis=1)


def fit_ridge(images, levels, penalty):
    """Ridge regression of the level on `level_features` (closed form). Returns the weights [1025]."""
    x = level_features(images)
    return np.linalg.solve(x.T @ x + penalty * np.eye(x.shape[1]), x.T @ levels)


def predict_levels(weights, images):
    """The levels `weights` read from `images` [N, R, R, 1], clipped to [0, 1]: [N]."""
    return np.clip(level_features(images) @ weights, 0.0, 1.0)


def choose_penalty(images, levels, subjects):
    """The ridge penalty of PENALTIES with the lowest leave-one-subject-out mean absolute error
    on the slices: (penalty, {penalty: error}). subjects [N]: each slice's subject id."""
    errors = {}
    for penalty in PENALTIES:
        folds = [np.abs(predict_levels(fit_ridge(images[subjects != s], levels[subjects != s], penalty),
                                       images[subjects == s]) - levels[subjects == s]) for s in np.unique(subjects)]
        errors[penalty] = float(np.mean(np.concatenate(folds)))
    return min(errors, key=errors.get), errors


def thirds(levels):
    """Percent of slices in the low, middle and high third of the level range (clipped to [0, 1]; a
    level of exactly 1/3 or 2/3 counts in the third above it): {"low": %, "middle": %, "high": %}."""
    counts = np.histogram(np.clip(levels, 0, 1), bins=[0, 1 / 3, 2 / 3, 1.0 + 1e-9])[0]
    return dict(zip(THIRDS, (100.0 * counts / max(len(levels), 1)).round(1).tolist()))


def requests(c, count, index):
    """Labels that ask for `count` slice levels evenly over [0, 1]: the rows of `c` [count, c_dim]
    (drawn like the real slices' labels) with the level at `index` replaced. -> (levels [count], labels)"""
    requested = np.linspace(0.0, 1.0, count, dtype=np.float32)
    asked = np.array(c, np.float32, copy=True)
    asked[:, index] = requested
    return requested, asked


def third_errors(requested, predicted):
    """Mean |requested - predicted| of the requests in each third of the level range
    ({"low", "middle", "high"}, as `thirds` bins them)."""
    bins = np.digitize(np.clip(requested, 0, 1), [1 / 3, 2 / 3])
    return {name: float(np.mean(np.abs(requested - predicted)[bins == i])) if np.any(bins == i) else None
            for i, name in enumerate(THIRDS)}


def agreement(requested, predicted):
    """{"corr": Pearson r, "mae": mean |requested - predicted|, "n": count} of two level arrays."""
    return {"corr": round(float(np.corrcoef(requested, predicted)[0, 1]), 3),
            "mae": round(float(np.mean(np.abs(requested - predicted))), 3), "n": int(len(requested))}
