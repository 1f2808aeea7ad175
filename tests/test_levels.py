"""levels.py: the slice-level ridge regressor against a fit solved by hand and an independent
least-squares solve, its features, penalty choice and summaries against hand values, and real
slices' levels on a tiny folder of generated PNGs (nothing read from the shared data)."""

import numpy as np
import pytest
from PIL import Image

import levels


def constant_images(values, size=32):
    """One image per value, every pixel that value: [N, size, size, 1]."""
    return np.asarray(values, np.float64)[:, None, None, None] * np.ones([1, size, size, 1])


def test_features_are_32x32_block_means_and_a_constant():
    images = np.zeros([2, 64, 64, 1])
    images[0, :2, :2, 0] = [[1.0, 2.0], [3.0, 4.0]]                  # the first 2x2 block: mean 2.5
    images[1, 62:, 62:, 0] = -1.0                                     # the last block: mean -1
    x = levels.level_features(images)
    assert x.shape == (2, 1025)
    assert x[0, 0] == 2.5 and np.count_nonzero(x[0, :1024]) == 1
    assert x[1, 1023] == -1.0 and np.count_nonzero(x[1, :1024]) == 1
    np.testing.assert_array_equal(x[:, 1024], [1.0, 1.0])
    small = np.arange(2 * 16 * 16, dtype=np.float64).reshape(2, 16, 16, 1)   # at most 32: the pixels themselves
    np.testing.assert_array_equal(levels.level_features(small)[:, :256], small.reshape(2, 256))


def test_ridge_fit_on_two_constant_images_matches_the_hand_solution():
    # Rows (0,...,0, 1) and (1,...,1, 1), levels 0 and 1, penalty 1. By symmetry w = (a,...,a, b); the
    # normal equations (X^T X + I) w = X^T y are 1025 a + b = 1 and 1024 a + 3 b = 1, so a = 2/2051, b = 1/2051.
    weights = levels.fit_ridge(constant_images([0.0, 1.0]), np.array([0.0, 1.0]), 1.0)
    np.testing.assert_allclose(weights[:1024], 2 / 2051, rtol=1e-10)
    assert weights[1024] == pytest.approx(1 / 2051, rel=1e-10)
    predicted = levels.predict_levels(weights, constant_images([0.0, 1.0]))
    np.testing.assert_allclose(predicted, [1 / 2051, 2049 / 2051], rtol=1e-10)


def test_ridge_fit_equals_an_independent_least_squares_solve():
    # Ridge is least squares on X stacked over sqrt(penalty) I, with zeros stacked under y.
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, [40, 64, 64, 1])
    y = rng.uniform(0, 1, 40)
    x = levels.level_features(images)
    for penalty in (1.0, 100.0):
        stacked = np.concatenate([x, np.sqrt(penalty) * np.eye(x.shape[1])])
        expected = np.linalg.lstsq(stacked, np.concatenate([y, np.zeros(x.shape[1])]), rcond=None)[0]
        np.testing.assert_allclose(levels.fit_ridge(images, y, penalty), expected, rtol=1e-7, atol=1e-10)


def test_predictions_are_clipped_to_the_level_range():
    weights = np.zeros(1025)
    weights[1024] = 1.7                                              # the constant alone: every prediction 1.7
    np.testing.assert_array_equal(levels.predict_levels(weights, constant_images([0.0, 0.5])), [1.0, 1.0])
    weights[1024] = -0.2
    np.testing.assert_array_equal(levels.predict_levels(weights, constant_images([0.0])), [0.0])


def test_the_penalty_chosen_by_leaving_subjects_out_is_the_smallest_when_pixels_tell_the_level():
    # Three subjects, five levels each, the image a constant equal to its level: the least penalised fit is best.
    level = np.tile(np.linspace(0.0, 1.0, 5), 3)
    subjects = np.repeat(["1", "2", "3"], 5)
    penalty, errors = levels.choose_penalty(constant_images(level), level, subjects)
    assert sorted(errors) == list(levels.PENALTIES) and penalty == 1.0
    assert errors[1.0] < errors[10.0] < errors[100.0] < errors[1000.0]


@pytest.mark.parametrize("values, expected", [
    ([0.0, 0.1, 0.4, 0.5, 0.9, 1.0, 1.2, -0.1], {"low": 37.5, "middle": 25.0, "high": 37.5}),  # clipped ends
    ([1 / 3, 2 / 3, 0.2], {"low": 33.3, "middle": 33.3, "high": 33.3}),      # an edge counts in the third above
    ([], {"low": 0.0, "middle": 0.0, "high": 0.0}),
])
def test_thirds_hand_values(values, expected):
    assert levels.thirds(np.asarray(values)) == expected


def test_agreement_hand_values():
    result = levels.agreement(np.array([0.0, 0.5, 1.0]), np.array([0.1, 0.5, 0.9]))
    assert result == {"corr": 1.0, "mae": 0.067, "n": 3}                     # (0.1 + 0 + 0.1) / 3
    assert levels.agreement(np.array([0.0, 0.5, 1.0]), np.array([1.0, 0.5, 0.0]))["corr"] == -1.0


def test_real_slices_get_their_subjects_levels_in_the_order_of_their_images(tmp_path):
    folder = tmp_path / "keras_png_slices_train"
    folder.mkdir()
    numbers = {"0001": (10, 20, 30), "0002": (5, 7)}
    for subject, zs in numbers.items():
        for z in zs:                                                     # the pixel value tells the slice apart
            Image.fromarray(np.full([16, 16], 8 * z, np.uint8)).save(folder / f"case_{subject}_slice_{z}.nii.png")
    images, found = levels.slices_with_levels(str(tmp_path), 16, ("train",))
    assert images.shape == (5, 16, 16, 1) and found.dtype == np.float64
    by_value = {round(float(i.mean()), 4): lev for i, lev in zip(images, found)}
    expected = {10: 0.0, 20: 0.5, 30: 1.0, 5: 0.0, 7: 1.0}                # per subject, lowest 0 to highest 1
    assert by_value == {round(8 * z / 127.5 - 1.0, 4): lev for z, lev in expected.items()}
    _, kept = levels.slices_with_levels(str(tmp_path), 16, ("train",), subjects=("2",))
    np.testing.assert_array_equal(np.sort(kept), [0.0, 1.0])
    _, left = levels.slices_with_levels(str(tmp_path), 16, ("train",), exclude=("0002",))
    np.testing.assert_array_equal(np.sort(left), [0.0, 0.5, 1.0])


def test_requests_ask_for_evenly_spread_levels_and_keep_the_other_labels():
    c = np.array([[0.9, 1.0, 0.0], [0.1, 0.0, 1.0], [0.5, 1.0, 0.0]], np.float32)      # slice, then sex one-hot
    requested, asked = levels.requests(c, 3, index=0)
    np.testing.assert_allclose(requested, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(asked, [[0.0, 1.0, 0.0], [0.5, 0.0, 1.0], [1.0, 1.0, 0.0]])
    assert c[0, 0] == np.float32(0.9)                                                  # the drawn labels untouched


def test_third_errors_hand_values():
    requested = np.array([0.0, 0.2, 1 / 3, 0.5, 2 / 3, 1.0])
    predicted = np.array([0.1, 0.2, 0.5, 0.5, 0.6, 0.7])
    errors = levels.third_errors(requested, predicted)
    # low: 0.0 and 0.2 (errors 0.1, 0); middle: 1/3 and 0.5 (1/6, 0); high: 2/3 and 1.0 (1/15, 0.3)
    assert errors == pytest.approx({"low": 0.05, "middle": 1 / 12, "high": (1 / 15 + 0.3) / 2})
    assert levels.third_errors(np.array([0.0, 1.0]), np.array([0.0, 1.0]))["middle"] is None
