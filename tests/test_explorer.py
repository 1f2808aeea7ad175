"""The explorer (explorer.py, `--mode explore`): what the page shows equals what the command line
writes (a seed, a mixing-grid cell, a saved latent), a generated slice projects back to itself,
labels are checked as the CLI checks them, bad uploads get a message, and `--mode explore` serves
one page on 127.0.0.1 that answers a client, shows the message for a bad upload, goes on serving
and stops on SIGTERM. No browser."""

import os
import signal
import socket
import time

import numpy as np
import pytest
from driver_cli import run as cli
from PIL import Image

import explorer
import inference
import labels
import metrics
import pixels
import projection
import sampling
from config import Config
from gan import make_generator

TINY_CONDITIONAL = Config(resolution=8, channel_base=128, channel_max=16, z_dim=8, w_dim=8, mapping_layers=2, c_dim=3)
SPEC = labels.LabelSpec((labels.Column("slice", "slice"),
                         labels.Column("sex", "categorical", "M/F", categories=("F", "M"))))


@pytest.fixture(scope="module")
def opened(trained):
    out, _ = trained
    return out, inference.open_generator(out)


def cell(grid_png, row, column, size, padding=2):
    """One image of a visualize.tile mosaic."""
    y, x = padding + row * (size + padding), padding + column * (size + padding)
    return np.asarray(Image.open(grid_png))[y:y + size, x:x + size]


def test_a_seed_and_a_mix_are_the_pixels_generate_writes(opened, tmp_path):
    out, model = opened
    cli(out, "--mode=generate", "--seeds=3", "--psi=0.7", "--truncation_cutoff=1", "--mix_rows=3", "--mix_cols=5",
        "--mix_layers=1-2", f"--outdir={tmp_path}")
    view = explorer.Explorer(model, out_dir=str(tmp_path / "explored"))
    shown = explorer.picture(view.slice(3, psi=0.7, truncation_cutoff=1))
    np.testing.assert_array_equal(shown, np.asarray(Image.open(tmp_path / "seed0003.png")))
    row, column, mixed = view.mix(3, 5, 1, 2, psi=0.7, truncation_cutoff=1)
    size = model.generator.resolution
    for image, (r, c) in ((column, (0, 1)), (row, (1, 0)), (mixed, (1, 1))):
        np.testing.assert_array_equal(explorer.picture(image), cell(tmp_path / "style_mixing.png", r, c, size))
    assert not np.array_equal(mixed, row) and not np.array_equal(mixed, column)
    with pytest.raises(ValueError, match="first must not be after the last"):
        view.mix(3, 5, 2, 1)


@pytest.mark.parametrize("noise_mode", ["const", "none"])
def test_the_saved_latent_renders_the_shown_image_through_projected_w(opened, tmp_path, noise_mode):
    _, model = opened
    view = explorer.Explorer(model, out_dir=str(tmp_path))
    image = view.slice(7, psi=0.8, noise_mode=noise_mode)
    png, npz = view.save()
    rendered = projection.write_projected_images(model.generator, npz, str(tmp_path / "rendered"))
    np.testing.assert_array_equal(np.asarray(Image.open(rendered[0])), np.asarray(Image.open(png)))
    np.testing.assert_array_equal(np.asarray(Image.open(png)), explorer.picture(image))


def test_a_generated_slice_projects_back_to_itself(opened, tmp_path):
    _, model = opened
    settings = projection.ProjectionSettings(num_steps=150, w_avg_samples=500)
    view = explorer.Explorer(model, settings, out_dir=str(tmp_path))
    target_png = tmp_path / "seed0011.png"
    Image.fromarray(explorer.picture(view.slice(11))).save(target_png)
    steps = []
    target, image, heat, psnr, ssim = view.project(str(target_png), progress=lambda step, total: steps.append(
        (step, total)))
    assert steps[-1] == (150, 150) and len(steps) == 150
    mean_slice = np.full_like(target, target.mean())
    baseline = float(metrics.psnr(mean_slice[None], target[None])[0])
    assert psnr > baseline + 10 and psnr > 25, (psnr, baseline)
    assert heat.shape == target.shape[:2] and heat.max() < 0.1
    png, npz = view.save()                                  # the reconstruction is what is saved now
    names, ws, noises = projection.load_latents(npz, model.generator)
    np.testing.assert_allclose(projection.render_latents(model.generator, ws, noises)[0], image, atol=1e-5)


def test_bad_uploads_are_named_with_what_to_give(opened, tmp_path):
    _, model = opened
    view = explorer.Explorer(model)
    (tmp_path / "notes.txt").write_text("not an image")
    mask = np.repeat(np.array([0, 85, 170, 255], np.uint8), 64).reshape(16, 16)
    Image.fromarray(mask).save(tmp_path / "slice.png")
    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(tmp_path / "seg_001_slice_0.nii.png")
    Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4) * 16).save(tmp_path / "thumbnail.png")
    for name, message in (("notes.txt", "cannot be read"), ("slice.png", "only 4 grey levels"),
                          ("seg_001_slice_0.nii.png", "named like a segmentation mask"),
                          ("thumbnail.png", "smaller than the model's 8x8")):
        with pytest.raises(ValueError, match=message):
            view.project(str(tmp_path / name))
    with pytest.raises(ValueError, match="has 1 slice"):
        Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(tmp_path / "good.png")
        view.project(str(tmp_path / "good.png"), index=1)


def test_labels_are_checked_and_encoded_as_the_command_line_does():
    g = make_generator(TINY_CONDITIONAL)
    view = explorer.Explorer(inference.Trained(g, SPEC, None, "test"))
    for values in ((1.5, "F"), (0.5, "X")):
        with pytest.raises(labels.LabelError) as page_error:
            view.slice(0, label_values=values)
        with pytest.raises(labels.LabelError) as cli_error:
            labels.parse_request(SPEC, f"slice={values[0]},sex={values[1]}")
        assert str(page_error.value) == str(cli_error.value)
    c = labels.encode_values(SPEC, labels.parse_request(SPEC, "slice=0.25,sex=M"))
    np.testing.assert_array_equal(view.slice(4, label_values=(0.25, "M")), sampling.synthesize(g, [4], c=c)[0])
    assert not np.array_equal(view.slice(4, label_values=(0.25, "F")), view.slice(4, label_values=(0.25, "M")))
    with pytest.raises(ValueError, match="conditional"):
        view.project("any.png")


def test_only_loopback_addresses_are_served_without_a_warning():
    assert explorer.exposure_warning("127.0.0.1", 7860) is None and explorer.exposure_warning("localhost", 1) is None
    assert "no authentication" in explorer.exposure_warning("0.0.0.0", 7860)
    assert "no authentication" in explorer.exposure_warning("no such host.invalid", 7860)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_explore_serves_a_run_answers_a_client_refuses_a_bad_upload_and_stops_on_sigterm(opened, fork_server,
                                                                                           tmp_path):
    """The one served page of the suite: `--mode explore` in a forked process, driven by gradio_client."""
    import urllib.request
    from driver_cli import wait_for
    from gradio_client import Client, handle_file
    out, model = opened
    port = free_port()
    process = fork_server.start(out, "--mode=explore", f"--port={port}", "--project_steps=3",
                                f"--outdir={tmp_path / 'explored'}")

    def answers():
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200
        except OSError:
            time.sleep(0.1)
            return False
    try:
        wait_for(answers, process)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        view = explorer.Explorer(model)
        shown = np.asarray(Image.open(client.predict(9, 1.0, model.generator.num_ws, "const", api_name="/slice")))
        expected = explorer.enlarged(view.slice(9))
        np.testing.assert_array_equal(shown[..., 0] if shown.ndim == 3 else shown, expected)
        factor = explorer.DISPLAY_SIZE // model.generator.resolution             # each pixel repeated, not smoothed
        np.testing.assert_array_equal(expected[::factor, ::factor], explorer.picture(view.slice(9)))
        (tmp_path / "notes.txt").write_text("not an image")
        with pytest.raises(Exception, match="cannot be read"):
            client.predict(handle_file(str(tmp_path / "notes.txt")), 0, 3, api_name="/project")
        Image.fromarray(explorer.picture(view.slice(2))).save(tmp_path / "seed0002.png")
        target, reconstruction, heat, text = client.predict(handle_file(str(tmp_path / "seed0002.png")), 0, 3,
                                                            api_name="/project")
        assert "PSNR" in text and "over 3 steps" in text and np.asarray(Image.open(heat)).ndim == 3   # colour, RGB
        saved = client.predict(api_name="/save")
        assert sorted(os.path.basename(p) for p in saved) == ["seed0002.npz", "seed0002.png"]
        assert sorted(os.listdir(tmp_path / "explored")) == ["seed0002.npz", "seed0002.png"]
        process.send_signal(signal.SIGTERM)
        assert process.wait() == 0, process.log()[-3000:]
        assert f"the page is at http://127.0.0.1:{port}" in process.log() and "stopped by SIGTERM" in process.log()
    finally:                                       # a failed check must not leave the page serving
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_volume_gives_one_target_per_axial_slice_and_the_picked_one_is_projected(opened, tmp_path, monkeypatch):
    import nibabel as nib
    import phantom
    _, model = opened
    view = explorer.Explorer(model, projection.ProjectionSettings(num_steps=2, w_avg_samples=100))
    load_targets = projection.load_targets
    volume = np.stack(list(phantom.synthetic_slices(5, 32, seed=3)), axis=-1).astype(np.float32)   # [32, 32, 5]
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "OAS1_0001_MR1.nii.gz"))
    decoded = []
    monkeypatch.setattr(projection, "load_targets", lambda **kw: decoded.append(kw) or load_targets(**kw))
    names, targets = view.targets(str(tmp_path / "OAS1_0001_MR1.nii.gz"))
    assert len(names) == len(targets) > 2 and len(set(names)) == len(names)
    target, *_ = view.project(str(tmp_path / "OAS1_0001_MR1.nii.gz"), index=2)
    np.testing.assert_array_equal(pixels.to_uint8(target), targets[2])
    assert view.shown.name == names[2] and len(decoded) == 1              # the upload, and the projection after it
    os.utime(tmp_path / "OAS1_0001_MR1.nii.gz", (1, 1))                      # a new file at that path: read again
    view.targets(str(tmp_path / "OAS1_0001_MR1.nii.gz"))
    assert len(decoded) == 2
    with pytest.raises(ValueError, match=f"has {len(names)} slice"):
        view.project(str(tmp_path / "OAS1_0001_MR1.nii.gz"), index=len(names))
