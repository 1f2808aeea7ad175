"""The projection encoder (encoder.py): its start is the reference's w_avg, training brings its styles
closer to the true ones than w_avg, the projector starts where it says, it saves and opens as it
was, and the command line trains it (`--mode encoder`) and projects from it (`--mode project`)."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import encoder as E
import projection as P
from test_projection import _slice, cli, known_targets, small_generator


def test_an_untrained_encoder_starts_every_slice_at_w_avg():
    w_avg = np.linspace(-1, 1, 16).astype(np.float32)
    net = E.build_encoder(16, 1, 6, 16, w_avg)
    slices = np.random.default_rng(0).uniform(-1, 1, [3, 16, 16, 1]).astype(np.float32)
    ws = E.encode(net, slices)
    assert ws.shape == (3, 6, 16)
    np.testing.assert_allclose(ws, np.broadcast_to(w_avg, ws.shape), atol=1e-6)


def test_training_brings_the_styles_of_generated_slices_closer_than_w_avg():
    g = small_generator(strength=0.0)
    w_stats = P.latent_stats(g, 2000)
    w, images = known_targets(g, 32, seed=5)
    reals = np.clip(np.round((images + 1) * 127.5), 0, 255).astype(np.uint8)
    settings = E.EncoderSettings(steps=150, batch_size=8, width=8, width_max=16)
    net, history = E.train_encoder(g, reals, settings, w_stats=w_stats, progress=False)
    predicted = E.encode(net, images)                                          # [32, num_ws, w_dim]
    error = np.mean((predicted - w[:, None]) ** 2)
    baseline = np.mean((w_stats[0] - w[:, None]) ** 2)
    assert error < 0.5 * baseline
    assert history[-1]["latent"] < history[0]["latent"]
    reconstructed = np.asarray(E.reconstruct(g, predicted))
    start = np.asarray(E.reconstruct(g, np.broadcast_to(w_stats[0], predicted.shape).copy()))
    assert np.mean((reconstructed - images) ** 2) < np.mean((start - images) ** 2)


@pytest.mark.parametrize("space", P.SPACES)
def test_the_projector_starts_from_the_given_styles(space):
    g = small_generator(strength=0.0)
    _, targets = known_targets(g, 2, seed=2)
    start = np.random.default_rng(3).standard_normal([2, g.num_ws, g.w_dim]).astype(np.float32)
    settings = P.ProjectionSettings(num_steps=1, w_avg_samples=500, space=space)   # step 0 has learning rate 0
    result = P.Projector(g, settings, P.make_distance("mse")).project(targets, start=start)
    used = start if space == "wplus" else np.repeat(start.mean(axis=1, keepdims=True), g.num_ws, axis=1)
    np.testing.assert_allclose(result.ws, used, atol=1e-6)
    np.testing.assert_allclose(result.images, np.asarray(E.reconstruct(g, used)), atol=1e-5)


def test_from_the_encoder_the_projector_refines_in_wplus_unless_told_otherwise():
    plain = P.ProjectionSettings(seed=3)
    assert E.projection_settings(plain, False, space=None, num_steps=None) == plain
    started = E.projection_settings(plain, True, space=None)
    assert (started.space, started.num_steps, started.initial_learning_rate, started.seed) == (
        "wplus", E.REFINE_STEPS, E.REFINE_SETTINGS["initial_learning_rate"], 3)
    chosen = E.projection_settings(plain, True, space="w", num_steps=7)
    assert (chosen.space, chosen.num_steps, chosen.initial_learning_rate) == ("w", 7, started.initial_learning_rate)
    assert E.projection_settings(plain, False, space="wplus").space == "wplus" and plain.space == "w"


def test_a_saved_encoder_opens_as_it_was_and_refuses_another_generator(tmp_path):
    g = small_generator()
    net = E.build_encoder(g.resolution, g.channels, g.num_ws, g.w_dim, np.zeros(g.w_dim), width=4, width_max=8)
    net.get_layer("styles").bias.assign(np.arange(g.num_ws * g.w_dim, dtype=np.float32))
    slices = np.random.default_rng(0).uniform(-1, 1, [2, 16, 16, 1]).astype(np.float32)
    assert E.find(str(tmp_path / "none"), g) is None
    E.save(str(tmp_path), net, {"checkpoint": "ckpt-4"})
    opened, info = E.find(str(tmp_path), g)
    assert info == {"checkpoint": "ckpt-4"}
    np.testing.assert_array_equal(E.encode(opened, slices), E.encode(net, slices))
    with pytest.raises(ValueError, match="train it again"):
        E.find(str(tmp_path), small_generator(resolution=32))


def test_command_line_trains_the_encoder_and_projects_from_it(tmp_path, trained):
    run, targets = tmp_path / "run", tmp_path / "targets"
    shutil.copytree(trained[0], run)
    targets.mkdir()
    Image.fromarray(_slice(seed=0)).save(targets / "case_9_slice_0.nii.png")
    result = cli(run, "--mode=encoder", "--encoder_steps=2")
    assert "saved the encoder" in result.stderr
    info = json.load(open(run / "encoder" / E.INFO_FILE))
    assert info["checkpoint"] == "ckpt-4" and info["settings"]["steps"] == 2
    result = cli(run, "--mode=project", f"--target_dir={targets}", "--checkpoint=2")
    assert f"{E.REFINE_STEPS} steps from the encoder's start" in result.stderr
    assert "the encoder was trained for ckpt-4, and this is ckpt-2" in result.stderr
    summary = json.load(open(run / "projected" / "summary.json"))
    assert summary["encoder"] and summary["settings"]["num_steps"] == E.REFINE_STEPS
    assert summary["settings"]["initial_learning_rate"] == E.REFINE_SETTINGS["initial_learning_rate"]
    assert summary["settings"]["space"] == "wplus"                       # the encoder's own space
    result = cli(run, "--mode=project", f"--target_dir={targets}", "--project_steps=1", "--project_space=w")
    assert json.load(open(run / "projected" / "summary.json"))["settings"]["space"] == "w"
    result = cli(run, "--mode=project", f"--target_dir={targets}", "--project_steps=2", "--noproject_encoder")
    assert "2 steps from w_avg" in result.stderr
    summary = json.load(open(run / "projected" / "summary.json"))
    assert not summary["encoder"] and summary["settings"]["space"] == "w"
    bad = cli(run, "--mode=encoder", f"--exported={os.path.join(trained[0], 'missing.keras')}", expect=1)
    assert "leave out --exported" in bad.stderr


def test_the_explorer_starts_a_projection_from_the_encoder(tmp_path):
    import explorer
    import inference
    g = small_generator(strength=0.0)
    net = E.build_encoder(g.resolution, g.channels, g.num_ws, g.w_dim, np.zeros(g.w_dim), width=4, width_max=8)
    ws = np.random.default_rng(4).standard_normal([1, g.num_ws, g.w_dim]).astype(np.float32)
    net.get_layer("styles").bias.assign(ws.reshape(-1))                  # zero kernel: these styles for any slice
    Image.fromarray(_slice((16, 16), seed=1)).save(tmp_path / "case_1_slice_0.png")
    settings = P.ProjectionSettings(num_steps=1, w_avg_samples=200, space="wplus")   # step 0 has learning rate 0
    view = explorer.Explorer(inference.Trained(g, None, None, "ckpt-1"), settings, out_dir=str(tmp_path), encoder=net)
    _, image, *_ = view.project(str(tmp_path / "case_1_slice_0.png"))
    np.testing.assert_allclose(image, np.asarray(E.reconstruct(g, ws))[0], atol=1e-5)
