"""The command line end to end, as a user runs it: train, resume, clear, generate, export, stop and
crash, on a tiny model (8x8, 4 images a batch). Most runs go through `driver.main` in this process
(driver_cli.run); the signals and the kill fork a process of their own (driver_cli.ForkServer); a
new interpreter only where that is the point (the README's first command, loading an export)."""

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from driver_cli import QUICK_TIMING, STEPS, TINY, checkpoint_variables, command, digest, env, latest_step, run, wait_for


def test_training_writes_checkpoints_samples_plots_logs_and_config(trained):
    out, result = trained
    assert "built-in synthetic" in result.stderr
    files = set(os.listdir(os.path.join(out, "checkpoints")))
    assert {"config.json", "checkpoint", f"ckpt-{STEPS}.index", "ckpt-2.index"} <= files
    assert {"latest.png", "losses.png", "grid_00000008.png", "grid_00000016.png"} <= set(
        os.listdir(os.path.join(out, "samples")))
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(out, "logs")))
    history = json.load(open(os.path.join(out, "logs", "history.json")))
    assert [h["kimg"] for h in history] == [0.008, 0.016]
    assert "swd_avg" not in history[0] and history[1]["swd_avg"] > 0       # --eval_kimg=0.016
    assert all(np.isfinite(h["d_loss"]) and np.isfinite(h["g_loss"]) for h in history)
    assert json.load(open(os.path.join(out, "checkpoints", "config.json")))["resolution"] == 8


def test_resume_continues_exactly_like_an_uninterrupted_run(trained, tmp_path):
    uninterrupted, _ = trained
    out = str(tmp_path)
    run(out, *TINY, "--kimg=0.008")                                   # stop after 2 steps
    result = run(out, "--load=weights", "--kimg=0.016")               # settings come from the checkpoint
    assert "resumed ckpt-2 at 8 images" in result.stderr
    resumed, straight = checkpoint_variables(out), checkpoint_variables(uninterrupted)
    assert resumed.keys() == straight.keys()
    optimizer_steps = [k for k in straight if "optimizer" in k and "iteration" in k]
    assert optimizer_steps and all(int(straight[k]) == STEPS for k in optimizer_steps)
    for name in straight:
        np.testing.assert_allclose(resumed[name], straight[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_resume_from_the_middle_of_a_tick_continues_exactly(trained, tmp_path):
    uninterrupted, _ = trained
    out = str(tmp_path)
    run(out, *TINY, "--kimg=0.012")                                   # 3 steps: stops inside the second tick
    result = run(out, "--load=weights", "--kimg=0.016")
    assert "resumed ckpt-3 at 12 images" in result.stderr and "ran out of data" not in result.stderr
    resumed, straight = checkpoint_variables(out), checkpoint_variables(uninterrupted)
    for name in straight:
        np.testing.assert_allclose(resumed[name], straight[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_a_flag_that_conflicts_with_the_checkpoint_is_refused(trained):
    out, _ = trained
    result = run(out, "--load=weights", "--resolution=16", expect=1)
    assert "--resolution=16 (checkpoint: 8)" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--load=weights"], "no checkpoint to load"),
    (["--data_dir=/no/such/folder"], "/no/such/folder"),
    (["--resolution=48"], "power of two"),
    (["--eval_kimg=0.004", "--best_by=fid"], "--best_by fid needs fid in --eval_metrics: add it (--eval_metrics "
                                             "swd,fid)"),
    (["--eval_kimg=0.004", "--best_by=c2st_swd"], "--best_by c2st_swd needs c2st in --eval_metrics: add it "
                                                  "(--eval_metrics swd,c2st)"),
])
def test_bad_input_is_one_clear_error(tmp_path, args, message):
    result = run(str(tmp_path), *TINY, *args, expect=1)
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not os.listdir(tmp_path) or not os.path.exists(os.path.join(tmp_path, "checkpoints", "checkpoint"))


def test_clear_deletes_only_the_chosen_outputs_and_never_follows_links(trained, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(trained[0], out)
    outside = tmp_path / "precious.png"
    outside.write_bytes(b"not ours")
    os.symlink(outside, os.path.join(out, "samples", "link.png"))
    cache_before = os.listdir(os.path.join(out, "cache"))
    assert cache_before

    result = run(out, "--clear=samples")
    assert "deleted" in result.stderr
    assert os.listdir(os.path.join(out, "samples")) == ["link.png"] and outside.read_bytes() == b"not ours"
    assert os.listdir(os.path.join(out, "cache")) == cache_before

    run(out, "--clear=cache")
    assert os.listdir(os.path.join(out, "cache")) == []
    assert os.path.exists(os.path.join(out, "checkpoints", "checkpoint"))

    run(out, "--clear=both")                                          # nothing left: still fine
    assert os.path.exists(os.path.join(out, "checkpoints", f"ckpt-{STEPS}.index"))


@pytest.mark.subprocess
def test_generate_is_reproducible_and_the_export_loads_in_a_fresh_process(trained, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(trained[0], out)
    generated = os.path.join(out, "generated")
    run(out, "--mode=generate", "--num_images=6", "--first_seed=3")
    first = digest(generated)
    assert {"seed0003.png", "seed0008.png", "grid.png", "style_mixing.png", "interpolation.gif"} <= set(first)
    shutil.rmtree(generated)
    run(out, "--mode=generate", "--num_images=6", "--first_seed=3")
    assert digest(generated) == first

    run(out, "--mode=export")
    exported = os.path.join(out, "exports", "generator.keras")
    # Plain keras.models.load_model in a new interpreter, after importing the project's layers.
    check = ("import sys, numpy as np, keras, generator, sampling, pixels; from PIL import Image;"
             f"g = keras.models.load_model({exported!r});"
             "images = pixels.to_uint8(sampling.synthesize(g, [3, 8]));"
             f"png = [np.asarray(Image.open({generated!r} + f'/seed{{s:04d}}.png')) for s in (3, 8)];"
             "sys.exit(0 if all((a[..., 0] == b).all() for a, b in zip(images, png)) else 3)")
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env(),
                            cwd=str(tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_best_checkpoint_is_kept_and_chosen_by_checkpoint(trained, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(trained[0], out)
    history = json.load(open(os.path.join(out, "logs", "history.json")))
    best = json.load(open(os.path.join(out, "checkpoints", "best", "best.json")))
    assert history[-1]["swd_each_avg"] != history[-1]["swd_avg"]         # so the score says which picked it
    assert history[-1].get("best") and best == {"kimg": 0.016, "metric": "swd_each_avg", "step": STEPS,
                                                "score": history[-1]["swd_each_avg"], "checkpoint": f"ckpt-{STEPS}"}
    generated = os.path.join(out, "generated")
    pictures = {}
    for which in ("best", "latest", os.path.join(out, "checkpoints", "ckpt-2")):   # the rest: test_runs.py
        run(out, "--mode=generate", "--num_images=2", f"--checkpoint={which}")
        pictures[which] = digest(generated)["seed0000.png"]
        shutil.rmtree(generated)
    assert pictures["best"] == pictures["latest"] != pictures[os.path.join(out, "checkpoints", "ckpt-2")]
    result = run(out, "--mode=generate", "--checkpoint=99", expect=1)
    assert "no checkpoint" in result.stderr and f"a step ({STEPS}, 2)" in result.stderr
    assert "Traceback" not in result.stderr


def test_evaluate_writes_a_report_and_skips_inception_metrics_in_one_line(trained, eval_slices, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(trained[0], out)
    result = run(out, "--mode=evaluate", "--num_images=16", f"--inception_weights={tmp_path}/missing.h5",
                 f"--eval_dir={eval_slices}")
    report = json.load(open(os.path.join(out, "evaluation", "latest.json")))
    assert report["num_generated"] == 16 and report["swd_avg"] > 0 and report["fid"] is None
    assert report["kimg"] == 0.016 and 0 < report["diversity_generated"] <= 1
    assert 0 <= report["c2st"] <= 1 and 0 <= report["c2st_floor"] <= 1 and 0 <= report["noise_share_8"] <= 1
    assert "C2ST against training slices" in result.stderr and "C2ST with the noise off" in result.stderr
    assert sum("missing.h5" in line for line in result.stderr.splitlines()) == 1
    assert sum("SWD x1e3 (lower is better)" in line for line in result.stderr.splitlines()) == 1
    assert "FID (lower is better): unavailable" in result.stderr and "mean pairwise MS-SSIM" in result.stderr
    assert os.path.exists(os.path.join(out, "evaluation", "swd_curve.png"))     # trained with --eval_kimg


def test_evaluate_computes_the_metrics_named_and_an_exported_generator_scores_the_same(trained, eval_slices, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(trained[0], out)
    run(out, "--mode=evaluate", "--num_images=16", "--metrics=swd", f"--eval_dir={eval_slices}")
    from_checkpoint = json.load(open(os.path.join(out, "evaluation", "latest.json")))
    assert "swd_avg" in from_checkpoint and "fid" not in from_checkpoint and "diversity_real" not in from_checkpoint
    run(out, "--mode=export")
    run(out, "--mode=evaluate", "--num_images=16", "--metrics=swd", f"--eval_dir={eval_slices}",
        f"--exported={os.path.join(out, 'exports', 'generator.keras')}")
    exported = json.load(open(os.path.join(out, "evaluation", "report_exported.json")))
    assert exported["kimg"] is None and exported["swd_avg"] == pytest.approx(from_checkpoint["swd_avg"], rel=1e-4)


def test_generate_takes_seed_lists_truncation_cutoff_mixing_layers_and_outdir(trained, tmp_path):
    from PIL import Image

    import sampling
    import inference
    import pixels
    out, images = trained[0], str(tmp_path / "images")
    run(out, "--mode=generate", "--seeds=1-2,7", "--psi=0", "--truncation_cutoff=1", "--mix_rows=1,2",
        "--mix_cols=3-5", "--mix_layers=0", f"--outdir={images}")
    assert set(os.listdir(images)) == {"seed0001.png", "seed0002.png", "seed0007.png", "grid.png", "style_mixing.png",
                                       "interpolation.png", "interpolation.gif"}
    assert not os.path.exists(os.path.join(out, "generated"))
    g = inference.open_generator(out).generator
    # psi 0 sets the truncated layers to w_avg: with a cutoff of 1 the other layers keep each seed's own.
    expected = pixels.to_uint8(sampling.synthesize(g, [1, 2, 7], psi=0.0, truncation_cutoff=1))[..., 0]
    written = np.stack([np.asarray(Image.open(os.path.join(images, f"seed{s:04d}.png"))) for s in (1, 2, 7)])
    np.testing.assert_array_equal(written, expected)
    assert not np.array_equal(written[0], written[1])
    width, height = Image.open(os.path.join(images, "style_mixing.png")).size
    assert (width, height) == (4 * 10 + 2, 3 * 10 + 2)          # 3 columns and 2 rows of 8x8 cells, plus sources


def test_init_from_starts_a_new_run_from_another_runs_weights(trained, eval_slices, tmp_path):
    source = trained[0]
    out = str(tmp_path / "tuned")
    result = run(out, *TINY, f"--init_from={source}", "--kimg=0.004", "--g_lr=1e-9", "--d_lr=1e-9", "--nomirror",
                 "--eval_kimg=0.004", "--eval_images=16", "--eval_metrics=swd,msssim,c2st", "--best_by=c2st_swd",
                 f"--eval_dir={eval_slices}")
    assert f"initialised from {source}/checkpoints/best/ckpt-{STEPS}" in result.stderr
    assert "C2ST against 16 training slices; two halves of them give" in result.stderr
    config = json.load(open(os.path.join(out, "checkpoints", "config.json")))
    assert config["mirror"] is False and config["g_lr"] == 1e-9
    history = json.load(open(os.path.join(out, "logs", "history.json")))
    assert [h["kimg"] for h in history] == [0.004] and 0 < history[0]["diversity_generated"] <= 1
    assert history[0]["best"] and history[0]["c2st_swd"] == pytest.approx(
        history[0]["swd_each_avg"] * max(2 * (history[0]["c2st"] - 0.5), 0.01))
    tuned, before = checkpoint_variables(out), checkpoint_variables(source)
    networks = [k for k in before if k.startswith(("model/generator.S", "model/discriminator.S")) and "w_avg" not in k]
    assert len(networks) > 30
    for name in networks:                          # one step at a learning rate of 1e-9 moves nothing visibly
        np.testing.assert_allclose(tuned[name], before[name], atol=1e-6, err_msg=name)
    optimizer_steps = [k for k in tuned if "optimizer" in k and "iteration" in k]
    assert optimizer_steps and all(int(tuned[k]) == 1 for k in optimizer_steps)       # fresh optimizers
    result = run(str(tmp_path / "wrong"), *TINY, f"--init_from={source}", "--kimg=0.004", "--channel_max=8", expect=1)
    assert "layer generator/generator/synthesis/const is (4, 4, 16)" in result.stderr


def test_dry_run_prints_settings_data_and_speed_and_writes_nothing(tmp_path):
    from PIL import Image
    root = tmp_path / "keras_png_slices_data"
    for split, subject, z in [("train", 1, 0), ("train", 1, 1), ("train", 2, 0), ("validate", 3, 0)]:
        for folder in (f"keras_png_slices_{split}", f"keras_png_slices_seg_{split}"):
            os.makedirs(root / folder, exist_ok=True)
            Image.fromarray(np.full([32, 24], 100, np.uint8)).save(root / folder / f"case_00{subject}_slice_{z}.nii.png")
    out = str(tmp_path / "run")
    result = run(out, *TINY, *QUICK_TIMING, "--dry_run", f"--data_dir={root}", "--exclude_subjects=2", "--kimg=5")
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert "resolution 8 *" in lines and "mirror True" in lines and "kimg 5.0 *" in lines
    assert "train 3 files, 2 subjects" in lines and "validate 1 files, 1 subjects" in lines
    assert "training 2 files (train), 1 subjects; held out: 2" in lines
    assert "skipped 2 segmentation, 0 other, 0 broken links" in lines
    assert "slice size 24x32 (first file), trained at 8x8" in lines
    assert any(line.startswith("parameters: generator ") for line in lines)
    assert any(line.startswith("speed: ") and " s/kimg " in line for line in lines)
    assert not os.path.exists(out)


@pytest.mark.parametrize("args", [["--no_such_flag"], ["positional"]])
def test_usage_errors_exit_with_status_2(tmp_path, args):
    result = run(str(tmp_path), *args, expect=2)
    assert "Traceback" not in result.stderr and not os.listdir(tmp_path)


def test_sigterm_saves_and_exits_cleanly(fork_server, tmp_path):
    out = str(tmp_path)
    process = fork_server.start(out, *TINY, "--kimg=10")
    wait_for(lambda: latest_step(out) >= 2, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait() == 0, process.log()[-3000:]
    assert "stopped by SIGTERM" in process.log()
    assert latest_step(out) >= 2


def test_sigkill_at_any_moment_leaves_a_resumable_run(fork_server, tmp_path):
    """Kill the process while a checkpoint is being written (TensorFlow writes ckpt-N_temp first), then
    a second time at once after start-up; every time --load weights resumes from a whole checkpoint."""
    out = str(tmp_path)
    ckpt_dir = os.path.join(out, "checkpoints")
    tick_every_step = ["--tick_kimg=0.004"]
    mid_save = False
    process = fork_server.start(out, *TINY, *tick_every_step, "--kimg=10")

    def saving():
        nonlocal mid_save
        names = os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []
        mid_save = latest_step(out) >= 2 and any("_temp" in n for n in names)
        return mid_save or latest_step(out) >= 12
    wait_for(saving, process)
    process.kill()
    assert process.wait() == -signal.SIGKILL
    killed_at = latest_step(out)
    assert killed_at >= 1

    result = run(out, "--load=weights", f"--kimg={(killed_at + 2) * 4 / 1000}")
    assert f"resumed ckpt-{killed_at}" in result.stderr
    assert "took over the lock" in result.stderr and "no longer running" in result.stderr   # the killed run's
    assert latest_step(out) == killed_at + 2


def test_a_slice_conditional_run_generates_a_chosen_level_and_a_sweep(tmp_path):
    from PIL import Image
    data_dir = tmp_path / "slices"
    data_dir.mkdir()
    for subject in ("0001", "0002"):
        for n in range(4):
            Image.fromarray(np.full([8, 8], 40 * n + int(subject) * 10, np.uint8)).save(
                data_dir / f"case_{subject}_slice_{n}.nii.png")
    out = str(tmp_path / "run")
    table = tmp_path / "table.csv"
    table.write_text("ID,Age\nOAS1_0001_MR1,70\n")
    result = run(out, *TINY, *QUICK_TIMING, "--dry_run", f"--data_dir={data_dir}", "--condition=slice,age", f"--labels={table}",
                 "--labels_missing=drop")
    assert "labels: slice (level in its subject, 0-1); age (Age: mean 70, sd 1, range 70-70); 2 values per slice; " \
           "4 of 8 files dropped" in result.stdout and not os.path.exists(out)
    run(out, *TINY, "--kimg=0.008", f"--data_dir={data_dir}", "--condition=slice")
    assert json.load(open(os.path.join(out, "checkpoints", "labels.json")))["dim"] == 1
    result = run(out, "--mode=generate", "--num_images=3", "--condition=slice=0.25", "--sweep=slice",
                 "--sweep_steps=4")
    sweep = np.asarray(Image.open(os.path.join(out, "generated", "sweep_slice.png")))
    assert sweep.shape == (3 * 10 + 2, 4 * 10 + 2)                  # 3 seeds down, 4 levels across, 2 px gaps
    assert "slice = 0, 0.333333, 0.666667, 1 across" in result.stderr
    result = run(out, "--mode=generate", "--condition=slice=2", expect=1)
    assert "slice 0 to 1 only" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.subprocess
def test_the_readmes_first_command_trains_in_a_new_process_and_logs_to_stderr(tmp_path):
    """`python driver.py` as the quick start types it (in the current folder, no --output_dir), with
    the tiny model's flags and one tick."""
    result = subprocess.run(command(None, *TINY, "--kimg=0.008"), capture_output=True,
                            text=True, timeout=600, env=env(), cwd=str(tmp_path), stdin=subprocess.DEVNULL)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "built-in synthetic" in result.stderr and "done at 0.008 kimg" in result.stderr
    assert os.path.exists(tmp_path / "checkpoints" / "ckpt-2.index") and result.stdout == ""


def test_reset_flags_returns_every_flag_to_its_default_and_untyped(tmp_path):
    """driver_cli.run's reset: without it a flag typed in one call would stay set in the next."""
    import driver
    from driver_cli import reset_flags
    driver.FLAGS(["driver.py", "--resolution=16", "--exclude_subjects=1,2", "--nomirror"])
    assert driver.FLAGS.resolution == 16 and driver.FLAGS["resolution"].present
    reset_flags()
    assert not driver.FLAGS.is_parsed()
    driver.FLAGS(["driver.py"])
    assert driver.FLAGS.resolution == driver.DEFAULT.resolution and not driver.FLAGS["resolution"].present
    assert driver.FLAGS.exclude_subjects == [] and driver.FLAGS.mirror == driver.DEFAULT.mirror
    reset_flags()
    result = run(str(tmp_path), "--resolution=48", expect=1)          # a refusal, then a clean slate
    assert "power of two" in result.stderr and not driver.FLAGS.is_parsed()
