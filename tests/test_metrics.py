"""Quality metrics: hand-computed values, closed forms, and orderings a broken metric would get wrong.
C2ST is about 0.5 for two draws of one phantom and near 1 for shifted or blurred ones; the noise
share matches the law of total variance's closed form; AUROC matches hand-counted pairs.

Images are small synthetic brain phantoms made here (nothing read from disk, nothing downloaded);
the InceptionV3 download is simulated to fail, and feature metrics use injected cheap features.
"""

import functools
import json
import math
import types

import numpy as np
import pytest
import tensorflow as tf
from keras.src.utils import file_utils

import evaluation
import inference
import labels
import levels
import metrics
from generator import Generator


def phantoms(n, size=32, seed=0):
    """Brain-like images in [-1, 1]: a bright textured ellipse (head) with two dark ellipses
    (ventricles) of random position and size on a black background. [n, size, size, 1]"""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) * 2.0 - 1.0                 # [S, S] in [-1, 1]

    def u(lo, hi):
        return rng.uniform(lo, hi, n)[:, None, None]                            # [n, 1, 1]

    def ellipse(cy, cx, ry, rx):
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0            # [n, S, S]

    head = ellipse(u(-0.1, 0.1), u(-0.1, 0.1), u(0.6, 0.85), u(0.5, 0.75))
    texture = np.sin(u(3, 9) * xx + u(0, 6)) * np.cos(u(3, 9) * yy)
    images = np.where(head, u(0.1, 0.5) + 0.3 * texture, -1.0)
    for side in (-1.0, 1.0):
        images = np.where(ellipse(u(-0.2, 0.2), side * u(0.1, 0.3), u(0.15, 0.35), u(0.05, 0.15)), -0.6, images)
    images = images + 0.05 * rng.standard_normal(images.shape)
    return np.clip(images, -1.0, 1.0)[..., None].astype(np.float32)


def box_blur(images, radius):
    """(2r+1)^2 box filter with edge padding: a blur independent of the pyramid's binomial filter."""
    size, k = images.shape[1], 2 * radius + 1
    padded = np.pad(images, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="edge")
    return sum(padded[:, i:i + size, j:j + size] for i in range(k) for j in range(k)) / k ** 2


@pytest.fixture(scope="module")
def sets():
    real, other = phantoms(48, seed=0), phantoms(48, seed=1)  # `other`: a second sample of the same distribution
    return real, other


# --------------------------------------------------------------------------------------------- SWD

@pytest.mark.parametrize("u, v, expected", [
    ([0.0, 1.0, 3.0], [5.0, 2.0, 1.0], 4.0 / 3.0),   # sorted [0 1 3] vs [1 2 5]: (1 + 1 + 2) / 3
    ([0.0, 1.0, 2.0, 3.0], [0.0, 2.0], 0.5),          # integral |F - G|: 0.25 on [0, 1), 0 on [1, 2), 0.25 on [2, 3)
    ([0.0, 2.0], [1.0], 1.0),                         # half the mass moves 1 each way
    ([4.0, 4.0], [1.0, 1.0, 1.0], 3.0),               # point masses: the distance between them
])
def test_wasserstein_1d_matches_hand_computed(u, v, expected):
    np.testing.assert_allclose(metrics.wasserstein_1d(np.array(u), np.array(v)), expected, rtol=1e-12)
    np.testing.assert_allclose(metrics.wasserstein_1d(np.array(v), np.array(u)), expected, rtol=1e-12)


def test_laplacian_pyramid_levels_reconstruct_the_images_and_keep_constants():
    images = phantoms(3, size=64)
    pyramid = metrics.laplacian_pyramid(images)
    assert [level.shape[1] for level in pyramid] == [64, 32, 16]
    rebuilt = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        rebuilt = metrics.pyr_up(rebuilt) + band
    np.testing.assert_allclose(rebuilt, images, atol=1e-5)
    flat = np.full((1, 16, 16, 1), 0.3, np.float32)  # the filter sums to 1 (down) and 4 (up) with mirrored borders
    np.testing.assert_allclose(metrics.pyr_down(flat), 0.3, rtol=1e-6)
    np.testing.assert_allclose(metrics.pyr_up(flat), 0.3, rtol=1e-6)


def test_swd_is_zero_for_identical_sets_and_grows_with_each_degradation(sets):
    real, other = sets
    assert metrics.swd(real, real)["avg"] == 0.0
    floor = metrics.swd(real, other)
    blurred, more_blurred = metrics.swd(real, box_blur(other, 1)), metrics.swd(real, box_blur(other, 2))
    shifted = metrics.swd(real, np.clip(other + 0.3, -1.0, 1.0))
    collapsed = metrics.swd(real, np.repeat(other[:1], len(other), axis=0))
    for worse in (blurred, shifted, collapsed):
        assert worse["avg"] > 2.0 * floor["avg"]
    assert more_blurred["avg"] > blurred["avg"]
    # Blur removes detail: the fine band moves most. A brightness offset lives in the low-pass level only.
    assert blurred["32"] - floor["32"] > blurred["16"] - floor["16"]
    assert shifted["16"] > 4.0 * floor["16"]
    np.testing.assert_allclose(shifted["32"], floor["32"], rtol=0.05)


def test_swd_each_set_normalization_is_blind_to_offsets_as_in_progan(sets):
    real, other = sets
    floor = metrics.swd(real, other, normalization="each")
    np.testing.assert_allclose(metrics.swd(real, other + 0.3, normalization="each")["avg"], floor["avg"], rtol=1e-3)
    assert metrics.swd(real, other + 0.3)["avg"] > 3.0 * metrics.swd(real, other)["avg"]


def test_swd_is_deterministic_by_seed_and_takes_sets_of_different_sizes(sets):
    real, other = sets
    swd = functools.partial(metrics.swd, repeats=1)
    first, again = swd(real, other[:20], seed=3), swd(real, other[:20], seed=3)
    assert first == again
    assert swd(real, other[:20], seed=4)["avg"] != first["avg"]
    assert 0.0 < first["avg"] < swd(real, box_blur(other[:20], 1), seed=3)["avg"]


def test_swd_rejects_mismatched_resolutions():
    with pytest.raises(ValueError, match="same resolution"):
        metrics.swd(phantoms(4, 32), phantoms(4, 16))


# --------------------------------------------------------------------------------------------- FID

def random_spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_sqrtm_psd_squares_back_and_trace_sqrt_product_matches_independent_eigenvalues():
    rng = np.random.default_rng(0)
    s1, s2 = random_spd(rng, 6), random_spd(rng, 6)
    root = metrics.sqrtm_psd(s1)
    np.testing.assert_allclose(root @ root, s1, atol=1e-9)
    np.testing.assert_allclose(root, root.T, atol=1e-12)
    # S1 S2 is not symmetric, but its eigenvalues are real and positive: sum their square roots directly.
    independent = np.sum(np.sqrt(np.linalg.eigvals(s1 @ s2).real))
    np.testing.assert_allclose(metrics.trace_sqrt_product(s1, s2), independent, rtol=1e-9)
    # Commuting pair Q diag(a) Q^T, Q diag(b) Q^T: tr sqrt(S1 S2) = sum sqrt(a b).
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    a, b = rng.uniform(0.1, 3.0, 5), rng.uniform(0.1, 3.0, 5)
    np.testing.assert_allclose(metrics.trace_sqrt_product((q * a) @ q.T, (q * b) @ q.T), np.sum(np.sqrt(a * b)),
                               rtol=1e-9)


def test_fid_of_sampled_gaussians_matches_the_closed_form_and_is_zero_for_identical_sets():
    rng = np.random.default_rng(0)
    m1, m2 = np.zeros(4), np.array([1.0, 0.0, 0.5, 0.0])
    v1, v2 = np.array([1.0, 2.0, 0.5, 1.0]), np.array([2.0, 2.0, 1.0, 0.25])
    f1 = m1 + np.sqrt(v1) * rng.standard_normal((20000, 4))
    f2 = m2 + np.sqrt(v2) * rng.standard_normal((20000, 4))
    closed_form = np.sum((m1 - m2) ** 2) + np.sum(v1 + v2 - 2.0 * np.sqrt(v1 * v2))   # = 1.757
    np.testing.assert_allclose(metrics.fid(f1, f2), closed_form, rtol=0.04)
    features = rng.standard_normal((50, 8))
    assert abs(metrics.fid(features, features)) < 1e-9


# --------------------------------------------------------------------------------------------- KID

def test_mmd2_unbiased_matches_hand_computed_value():
    # k(a, b) = (ab + 1)^3 in 1-D. XX off-diagonal: 2 k(0,1) / 2 = 1; YY: 2 k(1,2) / 2 = 27;
    # XY: (k(0,1) + k(0,2) + k(1,1) + k(1,2)) / 4 = (1 + 1 + 8 + 27) / 4 = 9.25.  1 + 27 - 2 * 9.25 = 9.5
    assert metrics.mmd2_unbiased(np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]])) == pytest.approx(9.5)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((400, 16)), rng.standard_normal((400, 16))
    same = metrics.kid(x, y, num_subsets=20, subset_size=200)
    different = metrics.kid(x, y + 0.3, num_subsets=20, subset_size=200)
    assert abs(same) < 0.02
    assert different > 0.1
    assert metrics.kid(x, y + 0.6, num_subsets=20, subset_size=200) > different
    # Subsampling large sets first changes the random subsets, not what is estimated.
    pooled = metrics.kid(x, y + 0.3, num_subsets=20, subset_size=200, max_pool=300)
    assert pooled == pytest.approx(different, rel=0.15) and pooled != different


# --------------------------------------------------------------------------------------- precision / recall

def test_precision_recall_on_hand_made_point_clouds():
    grid = np.stack(np.meshgrid(np.arange(10.0), np.arange(10.0)), -1).reshape(-1, 2)   # [100, 2], spacing 1
    assert metrics.precision_recall(grid, grid) == (1.0, 1.0)
    assert metrics.precision_recall(grid, grid + 100.0) == (0.0, 0.0)
    corner = grid[(grid[:, 0] < 3) & (grid[:, 1] < 3)] + 0.2    # inside the real manifold, covering a corner
    precision, recall = metrics.precision_recall(grid, corner)
    assert precision == 1.0 and recall < 0.3
    # 1-D, k = 1: every real radius is 1. Fakes 0.5 and 4.9 are inside, 10 is not -> precision 2/3.
    # Fake radii 4.4, 4.4, 5.1 cover every real point -> recall 1 (an outlier fake inflates recall).
    real, fake = np.array([[0.0], [1.0], [2.0], [3.0], [4.0]]), np.array([[0.5], [4.9], [10.0]])
    precision, recall = metrics.precision_recall(real, fake, k=1)
    assert precision == pytest.approx(2.0 / 3.0) and recall == 1.0


# ----------------------------------------------------------------------------------------- PSNR and SSIM

def test_psnr_and_ssim_hand_values():
    a = np.zeros([1, 16, 16, 1], np.float32)
    assert metrics.psnr(a + 0.2, a)[0] == pytest.approx(20.0)            # 0.1 in [0, 1] units: MSE 0.01
    assert metrics.psnr(a, a)[0] == pytest.approx(120.0)                  # capped, not infinite
    b = np.random.default_rng(0).uniform(-1, 1, a.shape).astype(np.float32)
    assert metrics.ssim(b, b)[0] == pytest.approx(1.0, abs=1e-6) and metrics.ssim(-b, b)[0] < 0


def test_ssim_terms_average_to_tensorflows_ssim_and_are_one_for_identical_images():
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 1, [2, 16, 16, 2]).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1).astype(np.float32)
    value, cs = metrics.ssim_terms(tf.constant(a), tf.constant(b), 11)               # [B, C] each
    expected = tf.image.ssim(a, b, 1.0, filter_size=11).numpy()                     # [B], the channels' mean
    np.testing.assert_allclose(tf.reduce_mean(value, axis=-1).numpy(), expected, rtol=1e-5)
    same, same_cs = metrics.ssim_terms(tf.constant(a), tf.constant(a), 11)
    np.testing.assert_allclose(same.numpy(), 1.0, atol=1e-5)
    np.testing.assert_allclose(same_cs.numpy(), 1.0, atol=1e-5)
    window = metrics.gaussian_window(3)                   # e^(-x^2 / (2 * 1.5^2)) at x = -1, 0, 1, normalised
    assert window[1, 1] == pytest.approx(1.0 / (1.0 + 2.0 * math.exp(-2.0 / 9.0)) ** 2, rel=1e-6)
    assert window.sum() == pytest.approx(1.0, rel=1e-6)


# --------------------------------------------------------------------------------------------- diversity

@pytest.mark.parametrize("size, filter_size, scales", [(8, 8, 1), (16, 11, 1), (32, 11, 2), (64, 11, 3),
                                                       (128, 11, 4), (256, 11, 5)])
def test_ms_ssim_uses_every_scale_the_resolution_allows(size, filter_size, scales):
    got_filter, weights = metrics.ms_ssim_settings(size)
    assert (got_filter, len(weights)) == (filter_size, scales)
    assert sum(weights) == pytest.approx(1.0)


def test_diversity_is_one_for_a_collapsed_set_and_lower_for_varied_sets(sets):
    real, _ = sets
    collapsed = np.repeat(real[:1], 8, axis=0)
    assert metrics.mean_pairwise_ms_ssim(collapsed, num_pairs=50) == pytest.approx(1.0, abs=1e-5)
    varied = metrics.mean_pairwise_ms_ssim(real, num_pairs=200)
    noise = metrics.mean_pairwise_ms_ssim(np.tanh(np.random.default_rng(0).standard_normal(real.shape)), 200)
    assert noise < varied < 0.9
    assert 0.0 < metrics.mean_pairwise_ms_ssim(phantoms(6, size=8), num_pairs=20) < 1.0   # plain SSIM, 8x8 window


# --------------------------------------------------------------------------------------------- InceptionV3

def test_inception_inputs_are_rgb_299_in_the_models_range():
    images = np.concatenate([np.full((1, 8, 8, 1), -1.0), np.full((1, 8, 8, 1), 0.5)]).astype(np.float32)
    x = metrics.inception_inputs(images)
    assert x.shape == (2, 299, 299, 3)
    np.testing.assert_allclose(x[0], -1.0, atol=1e-6)   # black stays -1 after [0, 255] -> [-1, 1]
    np.testing.assert_allclose(x[1], 0.5, atol=1e-5)


def test_inception_features_raise_a_clear_error_when_the_weights_cannot_be_downloaded(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- "
                        "[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline)   # where InceptionV3 downloads
    metrics.inception_model.cache_clear()
    with pytest.raises(metrics.FeaturesUnavailable) as error:
        metrics.inception_features(phantoms(2, size=16))
    message = str(error.value)
    assert "\n" not in message and "FID, KID, precision and recall are skipped" in message
    assert metrics.INCEPTION_WEIGHTS_FILE in message and "Temporary failure" in message
    with pytest.raises(metrics.FeaturesUnavailable, match="no InceptionV3 weights file at /nonexistent"):
        metrics.inception_features(phantoms(2, size=16), weights="/nonexistent/weights.h5")


def test_inception_features_shape_with_random_weights():
    images = phantoms(3, size=16)
    features = metrics.inception_features(images[[0, 1, 0]], weights=None, batch_size=2)
    assert features.shape == (3, metrics.INCEPTION_DIM) and np.all(np.isfinite(features))
    np.testing.assert_allclose(features[2], features[0], rtol=1e-4, atol=1e-6)   # batching does not matter
    assert not np.allclose(features[1], features[0])


# --------------------------------------------------------------------------------------------- C2ST

@pytest.mark.parametrize("scores, labels, expected", [
    ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),
    ([1, 2, 3, 4], [0, 0, 1, 1], 1.0),
    ([1, 2, 3, 4], [1, 1, 0, 0], 0.0),
    ([1, 1, 1, 1], [0, 1, 0, 1], 0.5),                          # ties count one half
    ([0.5, 0.5, 0.2, 0.9], [1, 0, 0, 1], 0.875),                # (1 + 0.5 + 1 + 1) / 4
])
def test_auroc_hand_values(scores, labels, expected):
    assert metrics.auroc(scores, labels) == pytest.approx(expected)


def test_auroc_needs_both_classes():
    with pytest.raises(ValueError, match="positives and negatives"):
        metrics.auroc([1, 2], [1, 1])


def test_c2st_is_chance_for_one_distribution_and_near_one_for_shifted_or_blurred_slices():
    real, other = phantoms(64, seed=0), phantoms(64, seed=1)            # two draws of one distribution
    same = metrics.c2st(real, other, seed=0)
    assert 0.35 < same < 0.65
    assert metrics.c2st(real, other, seed=0) == same                     # the seed fixes every choice
    assert metrics.c2st(real, np.roll(other, 6, axis=2), seed=0) > 0.95    # the anatomy moved 6 px
    assert metrics.c2st(real, box_blur(other, 1), seed=0) > 0.85         # the texture blurred


def marked_heads(subjects, per, seed):
    """`per` phantoms of each of `subjects` subjects, a subject being a bright 3x3 mark at its own place:
    (images [subjects * per, 16, 16, 1], subject of each)."""
    rng = np.random.default_rng(seed)
    images, groups = [], []
    for k in range(subjects):
        y, x = rng.integers(3, 13, 2)
        batch = phantoms(per, size=16, seed=seed * 100 + k).copy()
        batch[:, y:y + 3, x:x + 3] = 1.0
        images.append(batch)
        groups += [k] * per
    return np.concatenate(images), np.array(groups)


def test_c2st_folded_by_subject_does_not_ask_for_the_training_subjects_heads():
    """Real: 8 subjects of 12 slices. The other set draws a new subject for every slice, as a generator
    of new heads does. Random folds let the CNN learn the 8 subjects' marks, so it tells the sets
    apart; folded by subject it is tested on subjects it never saw, and cannot."""
    real, subjects = marked_heads(8, 12, seed=1)
    new, _ = marked_heads(96, 1, seed=2)
    random_folds = metrics.c2st(real, new, seed=0)
    by_subject = metrics.c2st(real, new, seed=0, real_groups=subjects)
    assert random_folds > 0.7 and by_subject < 0.6


def test_c2st_folds_keep_each_group_whole_and_random_folds_balanced():
    rng = np.random.default_rng(0)
    groups = np.repeat(["a", "b", "c", "d", "e"], [3, 1, 4, 2, 2])
    folds = metrics.c2st_folds(len(groups), 4, rng, groups)
    assert all(len(set(folds[groups == g])) == 1 for g in set(groups))        # a group never spans folds
    assert set(folds) == {0, 1, 2, 3}                                          # five groups fill four folds
    assert sorted(np.bincount(metrics.c2st_folds(10, 4, rng))) == [2, 2, 3, 3]
    with pytest.raises(ValueError, match="at least 4 groups, got 3"):
        metrics.c2st_folds(6, 4, rng, np.array([1, 1, 2, 2, 3, 3]))


def test_the_training_sample_flips_as_the_run_did_and_keeps_each_slices_subject():
    images = (np.arange(12 * 4 * 4).reshape(12, 4, 4, 1) % 251).astype(np.uint8)
    subjects = np.repeat(["1", "2", "3", "4"], 3)
    sample, chosen_subjects = evaluation.training_sample(images, 10, seed=3, subjects=subjects, mirror=True)
    unit = images.astype(np.float32) / 127.5 - 1.0
    flipped = 0
    for image, subject in zip(sample, chosen_subjects):
        k = next(i for i in range(12) if np.array_equal(unit[i], image) or np.array_equal(unit[i, :, ::-1], image))
        assert subjects[k] == subject
        flipped += not np.array_equal(unit[k], image)
    assert 0 < flipped < 10
    plain, _ = evaluation.training_sample(images, 10, seed=3, subjects=subjects)
    assert all(any(np.array_equal(p, u) for u in unit) for p in plain)          # nothing flipped
    assert evaluation.training_sample(images, 10, seed=3, subjects=np.repeat(["1", "2", "3"], 4)).subjects is None


def test_the_c2st_floor_sets_half_the_subjects_against_the_other_half(monkeypatch):
    seen = {}
    monkeypatch.setattr(evaluation.metrics, "c2st", lambda a, b, **kw: seen.update(a=a, b=b, **kw) or 0.5)
    images = np.arange(16, dtype=np.float32).reshape(16, 1, 1, 1)
    subjects = np.repeat(list("abcdefgh"), 2)
    evaluation.c2st_floor(evaluation.TrainingSample(images, subjects))
    assert set(seen["real_groups"]).isdisjoint(seen["fake_groups"]) and len(set(seen["real_groups"])) == 4
    assert sorted(np.r_[seen["a"].ravel(), seen["b"].ravel()]) == list(range(16))
    seen.clear()
    evaluation.c2st_floor(evaluation.TrainingSample(images, None))              # no subjects: random halves
    assert "real_groups" not in seen and len(seen["a"]) == len(seen["b"]) == 8


def test_c2st_checks_its_inputs():
    with pytest.raises(ValueError, match="at least 4 images per set"):
        metrics.c2st(phantoms(3), phantoms(8))
    with pytest.raises(ValueError, match="at least 2 folds"):
        metrics.c2st(phantoms(8), phantoms(8), folds=1)


def test_split_halves_are_disjoint_and_equal():
    a, b = metrics.split_halves(np.arange(9)[:, None], seed=3)
    assert len(a) == len(b) == 4 and not set(a.ravel()) & set(b.ravel())


def test_noise_share_is_the_noise_variance_over_the_whole():
    rng = np.random.default_rng(0)
    anatomy = rng.uniform(-1, 1, [6, 1, 16, 16, 1])                      # per latent; pixel variance 1/3
    noise = rng.standard_normal([6, 50, 16, 16, 1])                      # 50 draws each
    for sigma in (0.0, 0.3, 1.0):
        # Var over draws with ddof 0 keeps (K - 1) / K of sigma^2; the total is 1/3 + sigma^2.
        expected = sigma ** 2 * (49 / 50) / (1 / 3 + sigma ** 2)
        assert metrics.noise_variance_share(anatomy + sigma * noise) == pytest.approx(expected, abs=0.01)
    # A flat latent image: all noise, less the 1/K of it left in the mean over the draws.
    assert metrics.noise_variance_share(0.5 + noise) == pytest.approx(49 / 50, abs=0.005)
    with pytest.raises(ValueError, match="K >= 2 noise draws"):
        metrics.noise_variance_share(anatomy)


def test_noise_shares_by_level_find_white_noise_in_the_fine_detail():
    rng = np.random.default_rng(1)
    anatomy = np.repeat(phantoms(4, size=32)[:, None], 8, axis=1)                 # [4, 8, 32, 32, 1]
    shares = metrics.noise_variance_shares(anatomy + 0.1 * rng.standard_normal(anatomy.shape))
    assert list(shares) == ["all", 32, 16]                                         # SWD's levels, finest first
    assert shares[32] > 5 * shares["all"] > 5 * shares[16] > 0.0                   # white noise is fine detail
    assert metrics.noise_variance_shares(anatomy)[32] == 0.0


# --------------------------------------------------------------------------------------------- evaluation

def block_features(images):
    """Cheap stand-in for InceptionV3: 4x4 block means. [N, R, R, 1] -> [N, (R/4)^2]"""
    n, r = images.shape[:2]
    return images.reshape(n, r // 4, 4, r // 4, 4).mean(axis=(2, 4)).reshape(n, -1).astype(np.float64)


EXPECTED_KEYS = {"num_generated", "num_real", "swd_32", "swd_16", "swd_avg", "swd_each_32", "swd_each_16",
                 "swd_each_avg", "fid", "kid", "precision", "recall", "diversity_generated", "diversity_real"}


def test_evaluate_images_reports_every_metric_and_the_floor_for_identical_sets(sets):
    real, other = sets
    same = evaluation.evaluate_images(real, real, feature_fn=block_features)
    assert set(same) == EXPECTED_KEYS
    assert same["swd_avg"] == same["swd_each_avg"] == 0.0 and abs(same["fid"]) < 1e-6   # round-off of the rank-deficient covariance
    assert same["precision"] == same["recall"] == 1.0
    assert same["diversity_generated"] == same["diversity_real"]
    collapsed = evaluation.evaluate_images(np.repeat(other[:1], len(other), axis=0), real, feature_fn=block_features)
    assert collapsed["fid"] > 0.1 and collapsed["kid"] > 0.0 and collapsed["recall"] < 0.1
    assert collapsed["diversity_generated"] == pytest.approx(1.0, abs=1e-5)
    assert same["diversity_real"] < 0.9


def test_evaluate_images_without_features_still_reports_swd_and_diversity(sets):
    real, other = sets

    def unavailable(images):
        raise metrics.FeaturesUnavailable("no weights")

    report = evaluation.evaluate_images(other, real, feature_fn=unavailable)
    assert set(report) == EXPECTED_KEYS
    assert report["fid"] is report["kid"] is report["precision"] is report["recall"] is None
    assert report["swd_avg"] > 0.0 and 0.0 < report["diversity_generated"] < 1.0


def level_slices(levels_, seed):
    """16x16 slices, a square "head" on a black background whose brightness tells the level (0 black,
    1 white), under a little noise: [-1, 1]. (The background lets the penalised ridge find its offset.)"""
    x = np.full([len(levels_), 16, 16, 1], -1.0)
    x[:, 4:12, 4:12] = 2.0 * np.asarray(levels_)[:, None, None, None] - 1.0
    return np.clip(x + np.random.default_rng(seed).normal(0.0, 0.05, x.shape), -1.0, 1.0).astype(np.float32)


def test_the_level_metric_reads_back_what_was_asked_for_and_scales_swd_by_its_error(sets):
    spec = labels.build(["slice"], [(f"/d/case_1_slice_{n}.png", 0, 1) for n in range(101)])
    train_levels = np.random.default_rng(0).random(400)
    train = ((level_slices(train_levels, 0) + 1.0) * 127.5).round().astype(np.uint8)
    weights = evaluation.level_reader(train, train_levels[:, None].astype(np.float32), spec)
    real, other = sets
    requested, asked = levels.requests(np.zeros([64, 1], np.float32), 64, labels.slice_index(spec))
    np.testing.assert_array_equal(asked[:, 0], requested)
    errors = {}
    for shift in (0.0, 0.2):           # a model that gives each level, and one that gives it 0.2 too high
        got = level_slices(np.clip(requested + shift, 0, 1), seed=1)
        report = evaluation.evaluate_images(other, real, names=("swd", "level"), level_requested=requested,
                                            level_generated=got, level_weights=weights)
        errors[shift] = report["level_mae"]
        assert report["level_swd"] == pytest.approx(report["swd_each_avg"] * max(report["level_mae"], 0.01) / 0.1)
    assert errors[0.0] < 0.04 and errors[0.2] > errors[0.0] + 0.1         # the reader shrinks a little (ridge)
    assert report["level_mae_low"] > 0.15 > report["level_mae_high"]      # too high is clipped at the top
    assert report["level_corr"] > 0.95
    with pytest.raises(ValueError, match="--condition slice"):
        evaluation.slice_index(None)                                # an unconditional model has no level to ask for
    with pytest.raises(ValueError, match="level reader"):
        evaluation.evaluate_images(other, real, names=("level",), level_requested=requested)


def test_swd_report_is_flat_and_named_by_level(sets):
    real, other = sets
    report = evaluation.swd_report(other, real)
    assert set(report) == {"swd_32", "swd_16", "swd_avg", "swd_each_32", "swd_each_16", "swd_each_avg"}
    assert report["swd_avg"] == pytest.approx((report["swd_32"] + report["swd_16"]) / 2)
    assert report["swd_each_avg"] == pytest.approx(metrics.swd(real, other, normalization="each")["avg"])
    # A brightness shift counts with the real set's normalisation, and not with ProGAN's.
    shifted = evaluation.swd_report(np.clip(real + 0.3, -1, 1), real)
    assert shifted["swd_avg"] > 3 * shifted["swd_each_avg"]


class FakeGenerator:
    """Stands in for the EMA generator: 16x16 images that are a fixed function of z."""
    z_dim, resolution, channels, c_dim = 256, 16, 1, 0                  # unconditional

    def __call__(self, z, c=None, psi=1.0, truncation_cutoff=None, noise_mode="const", noise_seed=None):
        return tf.constant(np.tanh(z.reshape(-1, 16, 16, 1)))


def test_evaluate_run_writes_the_report_with_fake_checkpoint_and_reference(tmp_path, monkeypatch):
    calls = {}

    def load_slices(reference_dir, resolution, cache, splits, channels, subjects=None, exclude_subjects=None,
                    with_sources=False):
        calls.setdefault("parts", []).append((reference_dir, splits, subjects) + ((exclude_subjects,) if exclude_subjects else ()))
        calls.update(resolution=resolution, channels=channels)
        images = ((phantoms(20, size=16) + 1.0) * 127.5).astype(np.uint8)
        return (images, [(f"case_{i % 5}_slice_{i}.png", 0, 1) for i in range(20)]) if with_sources else images

    trained = inference.Trained(FakeGenerator(), spec=None, images_seen=1234, source="ckpt-1")
    monkeypatch.setattr(evaluation.data, "load_slices", load_slices)
    paths = types.SimpleNamespace(evaluation=str(tmp_path / "evaluation"), cache=str(tmp_path / "cache"),
                                  history_file=str(tmp_path / "history.json"))
    with open(paths.history_file, "w") as f:      # a run trained with periodic SWD: evaluate plots its curve
        json.dump([{"kimg": 0.5, "swd_avg": 9.0, "swd_each_avg": 8.0},
                   {"kimg": 1.0, "swd_avg": 7.0, "swd_each_avg": 6.0, "best": True}, {"kimg": 1.2}], f)

    reference = [("data", ("validate",), None), ("data", ("train",), ("37",))]
    report = evaluation.evaluate_run(paths, trained, reference, inception_weights=str(tmp_path / "missing.h5"),
                                     names=("swd", "fid", "c2st"), training=("data", ("train",), ("37",)))
    training_call = calls["parts"].pop()                                  # C2ST's: the training slices
    assert calls == {"resolution": 16, "parts": reference, "channels": 1}     # both parts, together
    assert training_call == ("data", ("train",), None, ("37",))
    assert report["num_real"] == 40 and report["num_generated"] == evaluation.MIN_IMAGES
    assert report["kimg"] == 1.234 and report["fid"] is None and report["swd_avg"] > 0.0
    assert report["c2st"] > 0.9 and report["c2st_floor"] < 0.8          # tanh(z) is no phantom; halves of one set are alike
    assert report["c2st_swd"] == pytest.approx(report["swd_each_avg"] * 2 * (report["c2st"] - 0.5))
    with open(tmp_path / "evaluation" / "latest.json") as f:
        assert json.load(f) == report
    assert (tmp_path / "evaluation" / "report_00001234.json").exists()
    assert (tmp_path / "evaluation" / "swd_curve.png").exists()


def test_the_noise_metric_measures_the_generators_own_noise():
    g = Generator(resolution=16, channel_base=256, channel_max=16, z_dim=8, w_dim=8, mapping_layers=2)
    reals = phantoms(24, size=16)
    quiet = evaluation.evaluate_images(reals=reals, names=("noise",), train_reals=evaluation.TrainingSample(reals, None),
                                       **evaluation.generate(g, 24, names=("noise",)))
    assert quiet["noise_share"] == pytest.approx(0.0, abs=1e-6)           # noise strengths start at 0
    for noise in g.synthesis.noises:
        noise.strength.assign(3.0)
    sets = evaluation.generate(g, 24, names=("noise",))
    assert sets["draws"].shape == (24, evaluation.NOISE_DRAWS, 16, 16, 1) and sets["noise_off"].shape == (24, 16, 16, 1)
    loud = evaluation.evaluate_images(reals=reals, names=("noise",), train_reals=evaluation.TrainingSample(reals, None),
                                      **sets)
    assert loud["noise_share"] > 0.3 and 0.0 <= loud["c2st_noise_off"] <= 1.0
    with pytest.raises(ValueError, match="noise-off slices and noise draws"):
        evaluation.evaluate_images(sets["generated"], reals, names=("noise",),
                                   train_reals=evaluation.TrainingSample(reals, None))
    with pytest.raises(ValueError, match="give train_reals"):
        evaluation.evaluate_images(**sets, reals=reals, names=("noise",))


def test_chosen_metrics_only_are_computed_and_unknown_names_are_refused(sets):
    real, other = sets
    calls = []

    def features(images):
        calls.append(len(images))
        return block_features(images)

    swd_only = evaluation.evaluate_images(other, real, feature_fn=features, names=("swd",))
    assert set(swd_only) == {"num_generated", "num_real", "swd_32", "swd_16", "swd_avg", "swd_each_32",
                             "swd_each_16", "swd_each_avg"} and calls == []         # no Inception features
    pr = evaluation.evaluate_images(other, real, feature_fn=features, names=("pr", "PR"))
    assert set(pr) == {"num_generated", "num_real", "precision", "recall"} and len(calls) == 2
    assert evaluation.check_metrics(["kid", " swd", "kid"]) == ("kid", "swd")
    with pytest.raises(ValueError, match="unknown metric fd; choose from swd"):
        evaluation.check_metrics(["swd", "fd"])


def test_offline_default_leaves_out_inception_metrics_without_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))                              # no ~/.keras/models copy
    assert evaluation.offline_metrics() == ("swd", "msssim", "c2st", "noise", "level")
    assert evaluation.offline_metrics(str(tmp_path / "w.h5")) == tuple(evaluation.METRICS)
    (tmp_path / ".keras" / "models").mkdir(parents=True)
    (tmp_path / ".keras" / "models" / metrics.INCEPTION_WEIGHTS_FILE).write_bytes(b"")
    assert evaluation.offline_metrics() == tuple(evaluation.METRICS)


def test_summary_has_one_line_per_metric_with_the_reported_values(sets):
    real, other = sets
    report = evaluation.evaluate_images(other, real, feature_fn=block_features)
    lines = evaluation.summary_lines(report)
    assert len(lines) == 5 and [line.split()[0] for line in lines] == ["SWD", "FID", "KID", "precision", "diversity,"]
    assert f"{report['swd_avg']:.2f} average (32px {report['swd_32']:.2f}, 16px {report['swd_16']:.2f})" in lines[0]
    assert f"{report['fid']:.4g}" in lines[1] and f"recall {report['recall']:.3g}" in lines[3]
    lines = evaluation.summary_lines({**report, "fid": None})
    assert lines[1] == "FID (lower is better): unavailable (no InceptionV3 weights)"


def test_real_eval_reads_another_implementations_samples_into_the_unit_range(tmp_path):
    from tools import real_eval
    images = np.array([[[0, 255], [51, 204]]] * 3, np.uint8)             # [3, 2, 2]: no channel axis
    np.save(tmp_path / "nv.npy", images)
    got = real_eval.load_samples(str(tmp_path / "nv.npy"), 2, 2)
    np.testing.assert_allclose(got, (images[:2, ..., None] / 127.5 - 1).astype(np.float32), atol=1e-6)
    floats = np.linspace(-1, 1, 3 * 4).reshape(3, 2, 2, 1)
    np.save(tmp_path / "float.npy", floats)
    np.testing.assert_allclose(real_eval.load_samples(str(tmp_path / "float.npy"), 3, 2), floats, atol=1e-6)
    for count, resolution in ((4, 2), (2, 4)):                           # too few; another resolution
        with pytest.raises(ValueError, match=r"\(3, 2, 2, 1\)"):
            real_eval.load_samples(str(tmp_path / "nv.npy"), count, resolution)


def test_real_eval_judges_each_run_at_each_checkpoint_and_a_npy_once():
    from tools import real_eval
    assert real_eval.judged_points(["a", "nv.npy"], "best") == [("a", "best", "a"), ("nv.npy", "best", "nv.npy")]
    assert real_eval.judged_points(["a", "b", "nv.npy"], "best,2079") == [
        ("a", "best", "a@best"), ("a", "2079", "a@2079"), ("b", "best", "b@best"), ("b", "2079", "b@2079"),
        ("nv.npy", "best", "nv.npy")]
