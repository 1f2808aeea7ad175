"""Projection (projection.py): the reference projector's schedule and noise regulariser against hand
values, the distances, the synthesis forward with supplied noise against the network's own, recovery
of a known latent, batch-equals-one-at-a-time, targets and their errors, anomaly-map maths, the
output files, and the command line (`--mode project`, `--mode generate --projected_w`)."""

import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import data
import inference
import metrics
import pixels
import projection as P
import runs
from discriminator import Discriminator
from generator import Generator

SMALL = dict(channel_base=256, channel_max=16, z_dim=16, w_dim=16, mapping_layers=2)


def small_generator(resolution=16, strength=0.0, seed=0):
    """A randomly initialised generator; `strength` sets every noise layer's (trained ones are non-zero)."""
    g = Generator(resolution=resolution, seed=seed, **SMALL)
    for layer in g.synthesis.noises:
        layer.strength.assign(strength)
    return g


def known_targets(g, n, seed=1):
    """Images of n known latents w (as the EMA generator renders them): (w [n, w_dim], images)."""
    w = np.asarray(g.mapping(np.random.default_rng(seed).standard_normal([n, g.z_dim]).astype(np.float32)))
    return w, np.asarray(g.synthesis(g.broadcast(w), noise_mode="const"))


# ---------------------------------------------------------------------------------------------
# Schedule and noise regulariser: hand values
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("step, expected", [
    (0, 0.0),                                   # ramp up starts at 0
    (25, 0.05),                                 # t = 0.025: half way up the 5% ramp
    (50, 0.1),                                  # t = 0.05: full rate
    (500, 0.1),                                 # the plateau
    (750, 0.1),                                 # t = 0.75: the cosine ramp down starts
    (875, 0.05),                                # t = 0.875: half way down, (1 - cos(pi / 2)) / 2 = 0.5
    (900, 0.1 * (0.5 - 0.5 * math.cos(0.4 * math.pi))),   # 0.0345492
    (1000, 0.0),
])
def test_learning_rate_schedule_is_the_reference(step, expected):
    assert P.learning_rate_at(step, P.ProjectionSettings()) == pytest.approx(expected, abs=1e-12)


def test_learning_rate_at_900_of_1000_by_hand():
    assert P.learning_rate_at(900, P.ProjectionSettings()) == pytest.approx(0.0345491503, rel=1e-9)


@pytest.mark.parametrize("step, expected", [
    (0, 2.0 * 0.05),                            # w_std * 0.05 at the start
    (375, 2.0 * 0.05 * 0.25),                   # t = 0.375 = half the 0.75 ramp: (1 - 0.5)^2
    (750, 0.0), (900, 0.0),                     # no latent noise in the last quarter
])
def test_latent_noise_scale_falls_quadratically_to_zero(step, expected):
    assert P.latent_noise_scale_at(step, P.ProjectionSettings(), w_std=2.0) == pytest.approx(expected, abs=1e-12)


def test_noise_regularization_hand_values():
    checker = np.indices([16, 16]).sum(axis=0) % 2 * 2.0 - 1.0      # +-1 checkerboard
    ones = np.ones([16, 16])
    maps = np.stack([checker, ones, np.zeros([16, 16])])[..., None].astype(np.float32)
    # checkerboard: every neighbour product is -1 (squares 1 + 1); its 2x2 average is 0 at 8x8.
    # ones: products 1 at 16x16 and again at 8x8, so 2 + 2. Zeros: 0. One value per target.
    np.testing.assert_allclose(P.noise_regularization(tf.constant(maps)).numpy(), [2.0, 4.0, 0.0], atol=1e-6)
    # 8x8 and smaller maps have one scale only.
    np.testing.assert_allclose(P.noise_regularization(tf.ones([1, 4, 4, 1])).numpy(), [2.0])


def test_noise_regularization_matches_a_loop_over_scales():
    noise = np.random.default_rng(0).standard_normal([2, 32, 32, 1]).astype(np.float32)
    expected = np.zeros(2)
    for b in range(2):
        n = noise[b, :, :, 0].astype(np.float64)
        while True:
            h, w = n.shape
            right = np.mean([n[y, x] * n[y, (x - 1) % w] for y in range(h) for x in range(w)])
            down = np.mean([n[y, x] * n[(y - 1) % h, x] for y in range(h) for x in range(w)])
            expected[b] += right ** 2 + down ** 2
            if h <= 8:
                break
            n = n.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(P.noise_regularization(tf.constant(noise)).numpy(), expected, rtol=1e-4)


def test_normalize_noise_hand_values():
    noise = tf.constant([[[[1.0], [2.0]], [[3.0], [4.0]]], [[[2.0], [2.0]], [[2.0], [6.0]]]])   # [2, 2, 2, 1]
    out = P.normalize_noise(noise).numpy()[..., 0]
    np.testing.assert_allclose(out[0], np.array([[-1.5, -0.5], [0.5, 1.5]]) / math.sqrt(1.25), rtol=1e-6)
    np.testing.assert_allclose(out[1], np.array([[-1.0, -1.0], [-1.0, 3.0]]) / math.sqrt(3.0), rtol=1e-6)


def test_latent_stats_are_the_mean_and_total_standard_deviation():
    g = small_generator()
    w_avg, w_std = P.latent_stats(g, num_samples=300, seed=5, batch_size=128)
    z = np.random.default_rng(5).standard_normal([300, g.z_dim]).astype(np.float32)
    w = np.asarray(g.mapping(z), np.float64)
    np.testing.assert_allclose(w_avg, w.mean(axis=0), rtol=1e-5, atol=1e-6)
    assert w_std == pytest.approx(math.sqrt(np.sum((w - w.mean(axis=0)) ** 2) / 300), rel=1e-5)


@pytest.mark.parametrize("changes, message", [
    (dict(num_steps=0), "at least 1"), (dict(space="z"), "space"),
    (dict(distance="vgg"), "unknown projection distance"), (dict(lr_rampup_length=0.0), "fraction"),
])
def test_bad_settings_are_clear_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        P.ProjectionSettings(**changes)


# ---------------------------------------------------------------------------------------------
# Synthesis with supplied noise
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("resolution", [8, 16])
def test_synthesis_with_const_noise_supplied_equals_the_networks_own(resolution):
    g = small_generator(resolution, strength=0.3)
    ws = tf.random.stateless_normal([2, g.num_ws, g.w_dim], seed=[4, 4])
    expected = g.synthesis(ws, noise_mode="const").numpy()
    np.testing.assert_array_equal(P.synthesize(g.synthesis, ws, P.const_noises(g.synthesis)).numpy(), expected)
    # And the supplied maps are really used: other maps, another image.
    other = [np.random.default_rng(100 + i).standard_normal(n.shape).astype(np.float32)
             for i, n in enumerate(P.const_noises(g.synthesis))]
    assert np.abs(P.synthesize(g.synthesis, ws, other).numpy() - expected).max() > 1e-3


def test_synthesis_rejects_the_wrong_number_of_noise_maps():
    g = small_generator(8)
    with pytest.raises(ValueError, match="noise layers"):
        P.synthesize(g.synthesis, tf.zeros([1, g.num_ws, g.w_dim]), P.const_noises(g.synthesis)[:-1])


# ---------------------------------------------------------------------------------------------
# Distances
# ---------------------------------------------------------------------------------------------

def test_pixel_distances_hand_values():
    a = np.zeros([2, 2, 2, 1], np.float32)
    b = a.copy()
    b[0, 0, 0, 0], b[1] = 1.0, -0.5                                          # one pixel off by 1; all off by 0.5
    np.testing.assert_allclose(P.pixel_mse(tf.constant(a), tf.constant(b)).numpy(), [0.25, 0.25])
    np.testing.assert_allclose(P.pixel_l1(tf.constant(a), tf.constant(b)).numpy(), [0.25, 0.5])


@pytest.mark.parametrize("size", [16, 32, 64])
def test_ms_ssim_equals_tensorflows_where_tensorflows_is_defined(size):
    rng = np.random.default_rng(size)
    a = rng.uniform(0, 1, [3, size, size, 1]).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1).astype(np.float32)
    filter_size, weights = metrics.ms_ssim_settings(size)
    expected = (tf.image.ssim_multiscale(a, b, 1.0, power_factors=weights, filter_size=filter_size) if len(weights) > 1
                else tf.image.ssim(a, b, 1.0, filter_size=filter_size)).numpy()
    np.testing.assert_allclose(P.ms_ssim(tf.constant(a), tf.constant(b), weights, filter_size).numpy(), expected,
                               rtol=1e-5)
    assert P.ms_ssim_distance(tf.constant(a * 2 - 1), tf.constant(a * 2 - 1)).numpy() == pytest.approx(0, abs=1e-5)


def test_ms_ssim_gradient_stays_finite_for_anticorrelated_images():
    x = tf.Variable(np.random.default_rng(0).uniform(-1, 1, [2, 64, 64, 1]).astype(np.float32))
    target = tf.constant(-x.numpy())
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(P.ms_ssim_distance(x, target))
    assert np.all(np.isfinite(tape.gradient(loss, x).numpy()))
    # tf.image.ssim_multiscale's is NaN here (the derivative of 0^p), which is why ours exists.
    weights = metrics.ms_ssim_settings(64)[1]
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.image.ssim_multiscale(pixels.to_zero_one(x), pixels.to_zero_one(target), 1.0, power_factors=weights))
    assert not np.all(np.isfinite(tape.gradient(loss, x).numpy()))


def test_feature_distance_normalises_channels_hand_values():
    f = tf.constant([[[[3.0, 4.0]]]])                        # [1, 1, 1, 2]: unit vector (0.6, 0.8)
    t = tf.constant([[[[8.0, 6.0]]]])                        # (0.8, 0.6)
    np.testing.assert_allclose(P.feature_distance([f, f], [t, f * 10]).numpy(), [0.08], rtol=1e-5)


def test_discriminator_features_are_the_ones_its_logits_come_from():
    d = Discriminator(resolution=16, channel_base=256, channel_max=16)
    images = tf.random.stateless_normal([4, 16, 16, 1], seed=[1, 2])
    features = P.discriminator_features(d, images)
    assert [f.shape[1] for f in features] == [16, 8, 4]
    x = d.conv4(d.mbstd(features[-1]))
    np.testing.assert_allclose(d.out(d.fc(tf.reshape(x, [4, -1]))).numpy(), d(images).numpy(), rtol=1e-5, atol=1e-6)


def test_distances_are_zero_for_the_target_and_positive_otherwise():
    d = Discriminator(resolution=16, channel_base=256, channel_max=16)
    a = tf.random.stateless_uniform([2, 16, 16, 1], seed=[0, 1], minval=-1, maxval=1)
    b = tf.random.stateless_uniform([2, 16, 16, 1], seed=[0, 2], minval=-1, maxval=1)
    for spec in ["mse", "l1", "msssim", "dfeat", "mse+dfeat", "lpips"]:
        distance = P.make_distance(spec, d, vgg16_weights="random", resolution=16)
        same, other = distance(a, a).numpy(), distance(a, b).numpy()
        assert same.shape == (2,) and np.all(np.abs(same) < 1e-5), spec
        assert np.all(other > 1e-3), spec
    summed = P.make_distance("mse+l1")(a, b).numpy()
    np.testing.assert_allclose(summed, (P.pixel_mse(a, b) + P.pixel_l1(a, b)).numpy(), rtol=1e-6)


def test_distances_that_need_networks_say_what_to_give():
    with pytest.raises(ValueError, match="checkpoint"):
        P.make_distance("dfeat")
    with pytest.raises(ValueError, match="vgg16_weights"):
        P.make_distance("lpips")
    with pytest.raises(FileNotFoundError, match="no VGG16 weights"):
        P.make_distance("lpips", vgg16_weights="/no/such/vgg16.h5", resolution=16)


# ---------------------------------------------------------------------------------------------
# The optimiser
# ---------------------------------------------------------------------------------------------

def test_a_target_made_from_a_known_w_is_recovered():
    """The reference's defaults (1000 steps, noise maps optimised): the image to > 60 dB and w to within
    2% of its distance from w_avg. (W is identifiable here because noise strengths are 0, as at
    initialisation; 300 steps leave some targets at 20-30% in this random network's flat directions.)"""
    g = small_generator(16)
    w_true, targets = known_targets(g, 2)
    settings = P.ProjectionSettings(w_avg_samples=2000)
    projector = P.Projector(g, settings, P.make_distance("mse"))
    result = projector.project(targets)
    assert np.all(metrics.psnr(result.images, targets) > 60.0)
    error = np.linalg.norm(result.ws[:, 0] - w_true, axis=1) / np.linalg.norm(w_true - projector.w_avg, axis=1)
    assert np.all(error < 0.02), error
    assert np.all(result.ws == result.ws[:, :1])                              # W: one w for every layer
    assert result.history.shape == (1000, 2) and result.history[-1].mean() < 1e-4 * result.history[0].mean()
    # W+ (one w per layer) reaches the image too, in fewer steps.
    wplus = P.Projector(g, settings.replace(space="wplus", num_steps=300), P.make_distance("mse"),
                        (projector.w_avg, projector.w_std))
    assert np.all(metrics.psnr(wplus.project(targets).images, targets) > 40.0)


def test_a_batch_gives_the_same_results_as_one_target_at_a_time():
    g = small_generator(16, strength=0.05)
    _, targets = known_targets(g, 3, seed=7)
    settings = P.ProjectionSettings(num_steps=25, w_avg_samples=500, space="wplus", snapshots=5)
    distance = P.make_distance("mse+msssim")
    projector = P.Projector(g, settings, distance)
    order = [2, 0, 1]
    batched = projector.project(targets[order])
    for position, index in enumerate(order):
        single = projector.project(targets[index:index + 1])
        np.testing.assert_allclose(batched.ws[position], single.ws[0], rtol=1e-4, atol=2e-5)
        np.testing.assert_allclose(batched.images[position], single.images[0], rtol=1e-4, atol=2e-5)
        np.testing.assert_allclose(batched.history[:, position], single.history[:, 0], rtol=1e-4, atol=1e-6)
        for n_batched, n_single in zip(batched.noises, single.noises):
            np.testing.assert_allclose(n_batched[position], n_single[0], rtol=1e-4, atol=2e-5)
    # The noise maps were optimised (not the start values) and stayed normalised.
    assert all(abs(float(n.mean())) < 1e-4 and abs(float((n ** 2).mean()) - 1.0) < 1e-3 for n in batched.noises)
    # Different targets got different random draws: their noise maps differ.
    assert np.abs(batched.noises[-1][0] - batched.noises[-1][1]).max() > 0.1


def test_projection_without_noise_optimisation_uses_the_generators_noise():
    g = small_generator(8, strength=0.2)
    _, targets = known_targets(g, 1)
    result = P.Projector(g, P.ProjectionSettings(num_steps=5, w_avg_samples=100, optimize_noise=False),
                         P.make_distance("mse")).project(targets)
    for n, const in zip(result.noises, P.const_noises(g.synthesis)):
        np.testing.assert_array_equal(n, const)
    np.testing.assert_allclose(result.images, g.synthesis(result.ws, noise_mode="const").numpy(), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Quality and anomaly maths
# ---------------------------------------------------------------------------------------------

def test_smoothing_keeps_constants_and_spreads_an_impulse_as_a_gaussian():
    taps = P.gaussian_taps(1.0)
    assert len(taps) == 7 and taps.sum() == pytest.approx(1.0) and taps[3] == taps.max()
    np.testing.assert_allclose(P.smooth(np.full([1, 16, 16], 0.3), 1.0), 0.3)
    impulse = np.zeros([1, 17, 17])
    impulse[0, 8, 8] = 1.0
    np.testing.assert_allclose(P.smooth(impulse, 1.0)[0, 5:12, 5:12], np.outer(taps, taps), atol=1e-12)
    residual = P.anomaly_map(np.ones([1, 16, 16, 1]), np.zeros([1, 16, 16, 1]), sigma=0)
    np.testing.assert_allclose(residual, 0.5)                         # |1 - 0| / 2 in [0, 1] units


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------

def _slice(size=(24, 24), seed=0):
    return np.random.default_rng(seed).integers(0, 256, size[::-1], dtype=np.uint8)


def test_targets_are_fitted_like_training_data(tmp_path):
    gray = _slice()
    Image.fromarray(gray).save(tmp_path / "case_1_slice_5.nii.png")
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(tmp_path / "rgb.png")        # colour -> luma
    Image.fromarray(_slice((30, 20), 1)).save(tmp_path / "wide.png")                  # not square, not 16
    names, targets = P.load_targets(target_dir=str(tmp_path), resolution=16)
    assert names == ["case_1_slice_5", "rgb", "wide"] and targets.shape == (3, 16, 16, 1)
    np.testing.assert_array_equal(targets[0], targets[1])
    expected = data.decode_file(str(tmp_path / "wide.png"), 16)[0]
    np.testing.assert_array_equal(targets[2, ..., 0], expected)
    one_name, one = P.load_targets(target=str(tmp_path / "wide.png"), resolution=16, channels=3)
    assert one_name == ["wide"] and one.shape == (1, 16, 16, 3)


def test_bad_targets_are_one_clear_error(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        P.load_targets(target=str(tmp_path / "missing.png"), resolution=16)
    with pytest.raises(data.DataError, match="does not exist"):
        P.load_targets(target_dir=str(tmp_path / "nowhere"), resolution=16)
    with pytest.raises(data.DataError, match="no usable images"):
        P.load_targets(target_dir=str(tmp_path), resolution=16)                    # empty folder
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(data.DataError, match="broken.png cannot be read"):
        P.load_targets(target=str(tmp_path / "broken.png"), resolution=16)
    with pytest.raises(ValueError, match="exactly one of"):
        P.load_targets(target="a.png", target_dir=str(tmp_path), resolution=16)
    with pytest.raises(ValueError, match="exactly one of"):
        P.load_targets(resolution=16)
    Image.fromarray(_slice()).save(tmp_path / "good.png")                           # a folder: skipped, not fatal
    names, targets = P.load_targets(target_dir=str(tmp_path), resolution=16)
    assert names == ["good"] and len(targets) == 1


def test_repeated_names_are_made_unique():
    assert P.unique_names(["a", "b", "a", "a"]) == ["a", "b", "a_2", "a_3"]
    assert P.target_name("/x/case_0198_slice_100.nii.png") == "case_0198_slice_100"
    assert P.target_name("scan.v2.PNG") == "scan.v2"


# ---------------------------------------------------------------------------------------------
# The measurement script's lesions, brain region and orientation matching (tools/projection_eval.py)
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def study():
    from tools import projection_eval
    return projection_eval


def test_box_erosion_and_hole_filling(study):
    square = np.zeros([9, 9], bool)
    square[2:7, 2:7] = True
    expected = np.zeros([9, 9], bool)
    expected[3:6, 3:6] = True
    np.testing.assert_array_equal(study.box_erode(square, 1), expected)
    ring = square.copy()
    ring[3:6, 3:6] = False
    np.testing.assert_array_equal(study.fill_holes(ring), square)


def test_a_lesion_lies_inside_the_region_with_its_known_mask_and_contrast(study):
    region = np.zeros([32, 32], bool)
    region[6:26, 8:24] = True
    image = np.zeros([32, 32, 1], np.float32)                                    # mid grey: 0.5 in [0, 1]
    for bright in (True, False):
        lesioned, mask = study.insert_lesion(image, region, 3.0, 0.3, bright, np.random.default_rng(0))
        assert mask.sum() == 29 and np.all(region[mask])                          # pixels within radius 3
        change = (lesioned - image)[..., 0] / 2.0                                  # in [0, 1] units
        sign = 1.0 if bright else -1.0
        assert np.all(sign * change[mask] >= 0.15 - 1e-6)                           # at least half the contrast
        assert np.max(sign * change) == pytest.approx(0.3, abs=1e-6)               # all of it inside the edge
        assert np.all(change[study.box_erode(~mask, 1)] == 0)                      # nothing beyond the soft edge


def test_held_out_slices_stored_upside_down_are_found_and_paired_with_their_level(study):
    rng = np.random.default_rng(0)
    means = {z: rng.uniform(-1, 1, [16, 16, 1]).astype(np.float32) for z in range(10, 15)}
    held_out = np.stack([means[z] + rng.normal(0, 0.3, [16, 16, 1]) for z in (14, 11, 12)]).astype(np.float32)
    images, levels, orientation, _ = study.match_orientation(held_out, means)
    assert orientation == "as stored" and list(levels) == [14, 11, 12]
    images, levels, orientation, scores = study.match_orientation(held_out[:, ::-1], means)
    assert orientation == "flipped up-down" and list(levels) == [14, 11, 12]
    np.testing.assert_array_equal(images, held_out)
    assert scores["flipped up-down"] > scores["as stored"]


def test_each_image_statistic_scores_a_small_bright_lesion_against_a_faint_overall_change(study):
    """One pixel 0.5 off in each lesioned slice, 0.1 everywhere in each clean one (sigma 0): the peak and
    the 99th percentile (0.425 here) find the lesions, the mean inside the brain ranks the clean ones higher."""
    lesioned = np.zeros([2, 4, 4, 1], np.float32)
    lesioned[:, 1, 2] = 1.0                                                        # residual 0.5 in [0, 1] units
    clean = np.full([2, 4, 4, 1], 0.2, np.float32)                                  # residual 0.1 everywhere
    refs, regions, masks = np.zeros_like(lesioned), np.ones([2, 4, 4], bool), lesioned[..., 0] > 0
    scores, _ = study.detection_scores(lesioned, clean, refs, refs, masks, regions, sigma=0)
    assert scores["image_auroc_by_statistic"] == {"max": 1.0, "q99": 1.0, "mean": 0.0}
    assert scores["image_auroc"] == 1.0 and scores["pixel_auroc"] == 1.0


def test_the_noise_floor_is_exact_without_noise_and_falls_as_the_noise_strengthens(study):
    """The true w renders its own target exactly when the noise layers add nothing (PSNR's cap, 120 dB);
    with noise, a fresh draw misses by more than switching the noise off does (it adds a second draw)."""
    floors = []
    for strength in (0.0, 0.05, 0.2):
        g = small_generator(8, strength=strength)
        w, targets = known_targets(g, 4)
        floors.append(study.noise_floor(g, w, targets))
    assert floors[0] == {"none": pytest.approx(120.0), "random": pytest.approx(120.0)}
    for weak, strong in zip(floors[1:], floors[2:]):
        assert strong["none"] < weak["none"] and strong["random"] < weak["random"]
    assert all(f["random"] < f["none"] < 100.0 for f in floors[1:])


def test_held_out_subjects_leave_the_training_slices_whatever_way_their_ids_are_written(study):
    levels = np.array([1, 2, 1, 2, 1])
    subjects = ["37", "37", "384", "5", "5"]
    images = np.arange(5)[:, None]
    for ids in (["0037", "384"], ["case_0037", " 384"], [37, 384]):
        (k_levels, k_subjects, k_images), (h_levels, h_subjects, h_images) = study.split_subjects(
            levels, subjects, images, ids)
        assert k_subjects == ["5", "5"] and list(k_levels) == [2, 1] and list(k_images[:, 0]) == [3, 4]
        assert h_subjects == ["37", "37", "384"] and list(h_images[:, 0]) == [0, 1, 2]
    kept, held = study.split_subjects(levels, subjects, images, [])
    assert kept[1] == subjects and len(held[1]) == 0
    with pytest.raises(ValueError, match="not in the train split; its subjects are 37, 384, 5"):
        study.split_subjects(levels, subjects, images, ["0198"])


# ---------------------------------------------------------------------------------------------
# Output files, saved latents, the command line
# ---------------------------------------------------------------------------------------------

def test_project_files_writes_every_output_and_the_latents_render_the_reconstruction(tmp_path):
    g = small_generator(8, strength=0.1)
    _, images = known_targets(g, 3)
    targets = pixels.quantize((np.clip(images, -1, 1) + 1) * 127.5)
    settings = P.ProjectionSettings(num_steps=6, w_avg_samples=100, snapshots=3)
    summary = P.project_files(g, ["a", "b", "c"], targets, settings, str(tmp_path), P.make_distance("mse"),
                              batch_size=2, progress=False)
    for name in "abc":
        assert set(os.listdir(tmp_path / name)) == {"projected_w.npz", "target.png", "reconstruction.png",
                                                    "comparison.png", "anomaly.png", "optimisation.gif"}
        with Image.open(tmp_path / name / "comparison.png") as im:
            assert im.size == (3 * 8 + 4 * 2, 8 + 2 * 2)                       # target | reconstruction | residual
        with Image.open(tmp_path / name / "optimisation.gif") as im:
            assert im.n_frames > 3
        names, ws, noises = P.load_latents(str(tmp_path / name / "projected_w.npz"), g)
        rendered = P.render_latents(g, ws, noises)
        with Image.open(tmp_path / name / "reconstruction.png") as im:
            np.testing.assert_array_equal(np.asarray(im), pixels.quantize((np.clip(rendered[0, ..., 0], -1, 1) + 1) * 127.5))
    on_disk = json.load(open(tmp_path / "summary.json"))
    assert [t["name"] for t in on_disk["targets"]] == ["a", "b", "c"] and on_disk == json.loads(json.dumps(summary))
    assert all(np.isfinite([t["psnr"], t["ssim"], t["distance"]]).all() for t in on_disk["targets"])
    names, ws, _ = P.load_latents(str(tmp_path / "projected_w.npz"), g)
    assert names == ["a", "b", "c"] and ws.shape == (3, g.num_ws, g.w_dim)


def test_saved_latents_are_checked_against_the_generator(tmp_path):
    g = small_generator(8)
    np.savez(tmp_path / "w.npz", w=np.zeros(g.w_dim, np.float32))                   # one plain w is broadcast
    names, ws, noises = P.load_latents(str(tmp_path / "w.npz"), g)
    assert ws.shape == (1, g.num_ws, g.w_dim) and noises is None
    np.savez(tmp_path / "other.npz", ws=np.zeros([1, 3, 5], np.float32))
    with pytest.raises(ValueError, match="another model"):
        P.load_latents(str(tmp_path / "other.npz"), g)
    with pytest.raises(FileNotFoundError, match="mode project"):
        P.load_latents(str(tmp_path / "missing.npz"), g)


def test_an_exported_generator_projects_with_pixel_distances(tmp_path):
    g = small_generator(8, strength=0.1)
    path = inference.export(g, str(tmp_path))
    opened = inference.open_generator(exported=path, discriminator=True)
    loaded = P.unconditional(opened.generator)
    assert opened.discriminator is None and opened.images_seen is None and opened.source == path
    _, targets = known_targets(g, 1)
    settings = P.ProjectionSettings(num_steps=3, w_avg_samples=100)
    ours = P.Projector(loaded, settings, P.make_distance("mse")).project(targets)
    theirs = P.Projector(g, settings, P.make_distance("mse")).project(targets)
    np.testing.assert_allclose(ours.ws, theirs.ws, atol=1e-6)


TINY_RUN = ["--resolution=8", "--channel_base=128", "--channel_max=16", "--z_dim=8", "--w_dim=8",
            "--batch_size=4", "--tick_kimg=0.008", "--kimg=0.008"]


def cli(out, *args, expect=0):
    from driver_cli import run
    return run(out, *args, expect=expect)


def test_command_line_projects_from_a_checkpoint_and_generate_renders_the_latents(tmp_path):
    out, targets = tmp_path / "run", tmp_path / "targets"
    targets.mkdir()
    for i in range(2):
        Image.fromarray(_slice(seed=i)).save(targets / f"case_9_slice_{i}.nii.png")
    cli(out, *TINY_RUN)
    result = cli(out, "--mode=project", f"--target_dir={targets}", "--project_steps=4", "--project_batch=2",
                 "--project_distance=mse+dfeat", "--project_space=wplus")
    assert "projected 2 slice(s)" in result.stderr
    summary = json.load(open(out / "projected" / "summary.json"))
    assert summary["distance"] == "mse+dfeat" and summary["settings"]["space"] == "wplus"
    cli(out, "--mode=generate", f"--projected_w={out / 'projected' / 'projected_w.npz'}", "--checkpoint=2")
    for i in range(2):
        rendered = np.asarray(Image.open(out / "generated" / f"projected_case_9_slice_{i}.png"))
        expected = np.asarray(Image.open(out / "projected" / f"case_9_slice_{i}" / "reconstruction.png"))
        np.testing.assert_array_equal(rendered, expected)
    cli(out, "--mode=generate", "--checkpoint=2", "--num_images=2")                 # seeds, from a chosen checkpoint
    assert os.path.exists(out / "generated" / "seed0001.png")
    bad = cli(out, "--mode=project", f"--target={tmp_path / 'missing.png'}", expect=1)
    assert "missing.png does not exist" in bad.stderr
    with pytest.raises(runs.RunError, match="no checkpoint"):
        inference.open_generator(str(out), checkpoint="7")
