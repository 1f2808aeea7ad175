"""A run is never lost, through the command line (tiny model; driver_cli's runs in this process, and in
a fork server where a run needs a process of its own):
a new run refuses a folder that holds one, two trainings cannot share a folder, a damaged or
half-saved folder resumes from its newest good checkpoint, a diverged run keeps its last good
checkpoint and resumes with lower learning rates, file-system problems and impossible settings are
one message, and a kill at every file operation of a checkpoint save resumes exactly.
The same pieces in-process are in test_runs.py."""

import errno
import json
import os
import re
import shutil
import signal

import numpy as np
import pytest
import tensorflow as tf
from driver_cli import QUICK_TIMING, TINY, checkpoint_variables, digest, latest_step, run, wait_for

import atomic
from config import Config


def copy_of(trained, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(trained[0], out)
    return out


def error_lines(stderr):
    return [line for line in stderr.splitlines() if " ERROR " in f" {line} " or line.startswith("E")]


# ---------------------------------------------------------------------------------------------
# Never delete a run by accident
# ---------------------------------------------------------------------------------------------

def test_a_new_run_refuses_a_folder_that_holds_a_run_until_it_is_cleared(trained, tmp_path):
    out = copy_of(trained, tmp_path)
    checkpoints, history = os.path.join(out, "checkpoints"), os.path.join(out, "logs", "history.json")
    before, history_before = digest(checkpoints), open(history).read()

    result = run(out, *TINY, "--kimg=0.032", expect=1)
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    for part in ("already holds a training run", "0.016 kimg in ckpt-4", "8x8, --loss=logistic, --batch_size=4",
                 "--load weights", "another --output_dir", "--clear checkpoints"):
        assert part in message, message
    assert digest(checkpoints) == before and open(history).read() == history_before

    result = run(out, "--clear=checkpoints")
    assert os.listdir(checkpoints) == [] and not os.path.exists(history)
    assert os.listdir(os.path.join(out, "samples")) and os.listdir(os.path.join(out, "cache"))   # not asked for
    assert "ckpt-4.index" in result.stderr

    import driver  # --help lists the way to discard a run
    assert "checkpoints: the run itself" in driver.FLAGS["clear"].help and "never checkpoints" in driver.FLAGS["clear"].help


def test_a_second_training_on_the_same_folder_is_refused_while_readers_need_no_lock(trained, fork_server, tmp_path):
    out = copy_of(trained, tmp_path)
    lock = os.path.join(out, ".lock")
    first = fork_server.start(out, "--load=weights", "--kimg=10", "--tick_kimg=0.004")
    try:
        wait_for(lambda: os.path.exists(lock) and os.path.getsize(lock), first)   # taken first thing
        assert json.load(open(lock))["pid"] == first.pid

        second = run(out, "--load=weights", "--kimg=0.024", expect=1)          # refused at once: no step taken
        assert f"in use by another training (pid {first.pid} on" in second.stderr
        assert "Traceback" not in second.stderr and "resumed" not in second.stderr

        run(out, "--mode=generate", "--num_images=2")                         # only reads: no lock needed
        assert os.path.exists(os.path.join(out, "generated", "seed0001.png"))
        wait_for(lambda: latest_step(out) > 4, first)                         # training, not starting up
    finally:
        first.send_signal(signal.SIGTERM)
    assert first.wait() == 0, first.log()[-3000:]
    assert not os.path.exists(lock)                                       # released by the SIGTERM stop


def test_a_missing_config_json_says_what_is_wrong_and_how_to_recover(trained, tmp_path):
    out = copy_of(trained, tmp_path)
    os.remove(os.path.join(out, "checkpoints", "config.json"))
    result = run(out, "--load=weights", expect=1)
    assert "config.json is missing" in result.stderr and "ckpt-4, ckpt-2" in result.stderr
    assert "train first" not in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------
# Recover from damage
# ---------------------------------------------------------------------------------------------

def test_a_damaged_folder_resumes_from_the_newest_good_checkpoint_exactly(trained, tmp_path):
    """The index garbled, the latest data file truncated and the leftovers of a save killed in the
    middle (ckpt-6_temp/ with a full-size data file, checkpoint.tmp*): the resume rebuilds the index
    from the ckpt-* files, skips ckpt-4 saying why, resumes ckpt-2, removes the leftovers, and its
    new ckpt-4 equals the uninterrupted run's."""
    out = copy_of(trained, tmp_path)
    ck = os.path.join(out, "checkpoints")
    with open(os.path.join(ck, "checkpoint"), "wb") as f:
        f.write(b"model_checkpoint_path: \x00\xff garbled")
    data_file = os.path.join(ck, "ckpt-4.data-00000-of-00001")
    with open(data_file, "r+b") as f:
        f.truncate(os.path.getsize(data_file) // 2)
    os.makedirs(os.path.join(ck, "ckpt-6_temp"))
    shutil.copy(os.path.join(ck, "ckpt-2.data-00000-of-00001"),
                os.path.join(ck, "ckpt-6_temp", "part-00000-of-00001.data-00000-of-00001"))
    open(os.path.join(ck, "checkpoint.tmp1f2e3d4c5b6a"), "w").close()

    result = run(out, "--load=weights", "--kimg=0.024", "--tick_kimg=0.008")
    log = result.stderr
    assert "removed the leftovers of an interrupted save" in log and "ckpt-6_temp" in log and "checkpoint.tmp" in log
    assert "rebuilt it from the files there (ckpt-4, ckpt-2)" in log
    skipped = [line for line in log.splitlines() if "skipped checkpoint" in line]
    assert len(skipped) == 1 and "ckpt-4" in skipped[0] and "is damaged" in skipped[0]
    assert "resumed ckpt-2 at 8 images" in log
    assert latest_step(out) == 6 and not [n for n in os.listdir(ck) if "_temp" in n or ".tmp" in n]

    straight = checkpoint_variables(trained[0])                         # the uninterrupted run's ckpt-4
    reader = tf.train.load_checkpoint(os.path.join(ck, "ckpt-4"))
    for name, value in straight.items():
        np.testing.assert_allclose(reader.get_tensor(name), value, rtol=1e-4, atol=1e-5, err_msg=name)


# ---------------------------------------------------------------------------------------------
# Divergence leaves a usable checkpoint and a way on
# ---------------------------------------------------------------------------------------------

def test_divergence_keeps_the_last_good_checkpoint_and_resume_takes_lower_learning_rates(trained, tmp_path):
    out = copy_of(trained, tmp_path)
    # A generator step this large (near float32's largest) makes G's weights infinite while that step's
    # losses are still finite, as in the run seen with d_loss 2.9e36: only the check of every variable
    # before the save catches it (a smaller one, 1e38, gives finite weights and NaN losses a step later).
    result = run(out, "--load=weights", "--kimg=0.032", "--g_lr=3e38", "--tick_kimg=0.004", expect=1)
    message = result.stderr.strip().splitlines()[-1]
    assert "variables hold NaN or infinite values (generator/" in message, result.stderr[-3000:]
    assert "no checkpoint was written and the last good checkpoint, ckpt-4, is kept" in message
    assert f"python driver.py --output_dir {out} --load weights --g_lr 1.5e+38 --d_lr 0.00125" in message
    assert latest_step(out) == 4
    assert all(np.isfinite(v).all() for v in checkpoint_variables(out).values() if v.dtype.kind == "f")

    result = run(out, "--load=weights", "--kimg=0.024", "--g_lr=0.001", "--d_lr=0.002", "--tick_kimg=0.004")
    assert "resumed ckpt-4 at 16 images" in result.stderr and latest_step(out) == 6
    changes = [h["changed"] for h in json.load(open(os.path.join(out, "logs", "history.json"))) if "changed" in h]
    assert changes == [{"g_lr": [0.0025, 3e38], "kimg": [0.016, 0.032]},          # the diverged attempt
                       {"g_lr": [3e38, 0.001], "d_lr": [0.0025, 0.002], "kimg": [0.032, 0.024]}]
    saved = checkpoint_variables(out)
    # The optimizers use the new rates (with the lazy-regularisation factors 4/5 and 16/17), not the restored ones.
    assert saved["g_optimizer/_learning_rate/.ATTRIBUTES/VARIABLE_VALUE"] == pytest.approx(0.001 * 4 / 5, rel=1e-6)
    assert saved["d_optimizer/_learning_rate/.ATTRIBUTES/VARIABLE_VALUE"] == pytest.approx(0.002 * 16 / 17, rel=1e-6)
    assert json.load(open(os.path.join(out, "checkpoints", "config.json")))["g_lr"] == 0.001


# ---------------------------------------------------------------------------------------------
# File-system problems and impossible settings are one message
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["output_dir is a file", "cache is a file"])
def test_a_folder_that_cannot_be_made_is_one_message_naming_it(tmp_path, case):
    out = tmp_path / "run"
    if case == "output_dir is a file":
        out.write_text("a file")
        blocker = out
    else:
        out.mkdir()
        blocker = out / "cache"
        blocker.write_text("a file")
    result = run(str(out), *TINY, "--kimg=0.004", expect=1)
    assert "Traceback" not in result.stderr
    assert f"{blocker} is a file, not a folder; move or delete it, or choose another --output_dir" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--kimg=0"], "--kimg=0 trains nothing"),
    (["--g_lr=-0.001", "--kimg=0.004"], "--g_lr=-0.001 must be positive"),
    (["--loss=bce", "--r1_gamma=1"], "--r1_gamma applies to the logistic and hinge losses, not --loss=bce"),
])
def test_what_cannot_be_meant_is_refused_before_anything_is_written(tmp_path, args, message):
    result = run(str(tmp_path), *TINY, *args, expect=1)
    assert message in result.stderr and "Traceback" not in result.stderr
    assert os.listdir(tmp_path) == []


def test_r1_gamma_0_turns_r1_off_for_a_loss_that_has_it(tmp_path):
    result = run(str(tmp_path), *TINY, "--loss=logistic", "--r1_gamma=0", "--pl_weight=0", "--dry_run")
    assert re.search(r"r1_gamma in use\s+0\n", result.stdout), result.stdout


@pytest.mark.parametrize("field, value, message", [
    ("g_lr", 0.0, "--g_lr=0.0 must be positive and finite"), ("d_lr", float("nan"), "--d_lr=nan must be positive"),
    ("kimg", -1.0, "--kimg=-1.0 must be finite and at least 0"), ("kimg", float("inf"), "--kimg=inf must be finite"),
    ("r1_gamma", -1.0, "--r1_gamma=-1.0 must be finite"), ("ema_kimg", -5.0, "--ema_kimg=-5.0 must be finite"),
    ("style_mixing_prob", 1.5, "--style_mixing_prob=1.5 must be at least 0 and at most 1"),
    ("augment_p", float("nan"), "--augment_p=nan must be at least 0 and at most 1"),
])
def test_every_number_of_the_configuration_is_checked(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Config(**{field: value})
    Config(**{field: {"g_lr": 1e-3, "d_lr": 1e-3}.get(field, 0.0)})      # the edge of the range is fine


def test_psi_outside_0_1_is_a_warning_not_a_refusal(trained, tmp_path):
    out = copy_of(trained, tmp_path)
    result = run(out, "--mode=generate", "--num_images=2", "--psi=1.5")
    assert "--psi 1.5 is outside [0, 1]" in result.stderr
    assert os.path.exists(os.path.join(out, "generated", "seed0001.png"))


# ---------------------------------------------------------------------------------------------
# A kill at every file operation of a checkpoint save
# ---------------------------------------------------------------------------------------------

FAULT_RUN = ["--resolution=8", "--channel_base=128", "--channel_max=16", "--z_dim=8", "--w_dim=8", "--batch_size=4",
             "--mapping_layers=1", "--loss=bce", "--pl_weight=0", "--style_mixing_prob=0", "--tick_kimg=0.004",
             "--keep_checkpoints=1", "--kimg=0.02"]         # 5 steps, a checkpoint after each, the last one kept
FAULT_STEPS = 5   # enough: a chain's kills move it on by at most 3 steps before its last run finishes


def fault_run(runs, out, fault=None, *args, log=None):
    """Exit status (0, or 9 when killed) and the log of one FAULT_RUN in the ForkServer `runs`."""
    child = runs.start(out, *FAULT_RUN, *args, env={"STYLEGAN_FAULT_AT": fault or "", "STYLEGAN_FAULT_LOG": log or ""})
    status, stderr = child.wait(), child.log()
    assert status in (0, 9) and "Traceback" not in stderr, stderr[-3000:]
    return status, stderr


def kill_chain(runs, out, operations):
    """Kill a run at each of `operations` in turn (a fresh run in its second save, then each resume in
    its first save, the first one that rotates), then finish it. Returns the operations at which a
    process was really killed (a resume after a kill in the middle of a rotation deletes more)."""
    killed = []
    for i, op in enumerate(operations + [None]):
        fault = None if op is None else f"2:{op}" if i == 0 else f"1:{op}"
        status, stderr = fault_run(runs, out, fault, *([] if i == 0 else ["--load=weights"]))
        if i:
            assert "resumed ckpt-" in stderr, stderr[-3000:]
        if status == 9:
            killed.append(op)
    return killed


@pytest.fixture(scope="module")
def straight(fork_server, tmp_path_factory):
    """An uninterrupted FAULT_RUN: its folder, and the file operations of its second save, by name."""
    folder = tmp_path_factory.mktemp("straight")
    log = str(folder / "operations.log")
    fault_run(fork_server, str(folder / "run"), log=log)
    return str(folder / "run"), [line.split()[1] for line in open(log) if line.startswith("2:")]


def test_a_rotating_save_makes_nine_file_operations(straight):
    out, operations = straight
    assert operations == ["recursive_create_dir_v2", "SaveV2", "MergeV2Checkpoints", "write_string_to_file",
                          "rename_v2", "delete_file_v2", "delete_file_v2", "write_string_to_file", "rename_v2"]
    variables = checkpoint_variables(out)
    steps = [k for k in variables if "_iterations" in k]
    assert steps and all(int(variables[k]) == FAULT_STEPS for k in steps)


@pytest.mark.parametrize("operations", [[1, 4, 7], [2, 5, 8], [3, 6, 9]])
def test_a_kill_at_every_file_operation_of_a_save_resumes_exactly(straight, fork_server, tmp_path, operations):
    """Each of the 9 file operations of a rotating save (see tests/fault_injection.py), three per
    chain: each resume starts from a whole checkpoint, cleans what the kill left, and the end result,
    step count and every variable, equals the uninterrupted run's."""
    out = str(tmp_path / "chain")
    assert kill_chain(fork_server, out, operations) == operations       # each one, really killed
    assert latest_step(out) == FAULT_STEPS
    resumed, expected = checkpoint_variables(out), checkpoint_variables(straight[0])
    assert resumed.keys() == expected.keys()
    for name in expected:
        np.testing.assert_allclose(resumed[name], expected[name], rtol=1e-4, atol=1e-5, err_msg=name)
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == [
        "checkpoint", f"ckpt-{FAULT_STEPS}.data-00000-of-00001", f"ckpt-{FAULT_STEPS}.index", "config.json",
        "data.json", "run.json"]


# ---------------------------------------------------------------------------------------------
# No flag combination changes a run by surprise
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, code, message", [
    (["--dry_run", "--clear=checkpoints"], 1, "--clear checkpoints deletes the run's checkpoints, and --dry_run"),
    (["--clear=checkpoints", "--load=weights"], 1, "and --load weights, which resumes from them: give one of them"),
    (["--clear=samples", "--load=weights", "--kimg=inf"], 1, "--kimg=inf must be finite and at least 0"),
    (["--load=weights", "--keep_checkpoints=0"], 1, "--keep_checkpoints=0 must be at least 1"),
    (["--load=weights", "--r1_gamma=-1"], 1, "--r1_gamma=-1.0 must be finite and at least 0"),
    (["--load=weights", "--ema_kimg=-5"], 1, "--ema_kimg=-5.0 must be finite and at least 0"),
    (["--load=weights", "--tick_kimg=-1"], 1, "--tick_kimg=-1.0 must be positive and finite"),
    (["--load=weights", "--tick_kimg=nan"], 1, "--tick_kimg=nan must be positive and finite"),
    (["--mode=generate", "--psi=nan"], 1, "--psi=nan must be a finite number"),
    (["--load=weights", "--kimg=0.008"], 0, "already trained for 0.016 kimg (the --kimg target); nothing to do"),
    (["--dry_run", "--clear=samples"], 0, None),
    (["--load=weights", "--kimg=0.032", "--data_dir=elsewhere"], 1,
     "--data_dir=elsewhere (this run: the built-in synthetic slices)"),
    (["--load=weights", "--kimg=0.032", "--splits=train,validate", "--exclude_subjects=0001"], 1,
     "--splits=train,validate (this run: train), --exclude_subjects=0001 (this run: none)"),
])
def test_a_refused_or_idle_command_leaves_every_file_of_the_run_as_it_was(trained, tmp_path, args, code, message):
    out = copy_of(trained, tmp_path)
    before = digest(out)
    result = run(out, *args, expect=code)
    assert digest(out) == before
    if message:
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
    if code:
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]      # the one message alone


def test_a_resume_trains_on_the_runs_own_data_and_a_folder_that_is_gone_is_named(eval_slices, tmp_path):
    data_dir, moved, out = str(tmp_path / "slices"), str(tmp_path / "moved"), str(tmp_path / "run")
    shutil.copytree(eval_slices, data_dir)
    run(out, *TINY, *QUICK_TIMING, "--kimg=0.008", f"--data_dir={data_dir}", "--exclude_subjects=001")  # quick dry run
    saved = json.load(open(os.path.join(out, "checkpoints", "data.json")))
    assert saved == {"data_dir": data_dir, "splits": ["train"], "exclude_subjects": ["001"]}

    os.rename(data_dir, moved)
    before = digest(out)
    result = run(out, "--load=weights", "--kimg=0.016", expect=1)             # the README's resume line
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
    assert f"this run trained on {data_dir}, which is gone: put it back, or give its new place with --data_dir" \
        in result.stderr
    assert digest(out) == before

    result = run(out, "--load=weights", "--kimg=0.016", f"--data_dir={moved}")
    assert f"which is gone; using --data_dir {moved}" in result.stderr and "built-in synthetic" not in result.stderr
    assert json.load(open(os.path.join(out, "checkpoints", "data.json")))["data_dir"] == moved
    result = run(out, "--load=weights", "--kimg=0.024", "--dry_run")            # the new place is the run's now
    assert f"data: {moved}\n" in result.stdout and "31 files (train)" in result.stdout     # 001 still held out
    result = run(out, "--load=weights", "--kimg=0.024")
    assert "data: cache hit, 31 slices" in result.stderr and "synthetic" not in result.stderr   # moved/, cached


def test_a_resume_keeps_the_runs_ticks_checkpoints_and_evaluation_unless_typed(trained, eval_slices, tmp_path):
    """A resume without --tick_kimg, --keep_checkpoints and --eval_* once fell back to the defaults:
    the periodic evaluation stopped and the rotation deleted checkpoints the run had kept."""
    out = copy_of(trained, tmp_path)
    run_file = os.path.join(out, "checkpoints", "run.json")
    assert json.load(open(run_file)) == {
        "tick_kimg": 0.008, "keep_checkpoints": 3, "eval_kimg": 0.016, "eval_images": 16, "eval_metrics": ["swd"],
        "best_by": "swd_each", "eval_dir": eval_slices, "eval_splits": ["validate"], "inception_weights": None}

    run(out, "--load=weights", "--kimg=0.048", "--keep_checkpoints=5")     # one typed: it changes, and is saved
    assert json.load(open(run_file))["keep_checkpoints"] == 5
    kept = sorted(int(name[5:-6]) for name in os.listdir(os.path.join(out, "checkpoints")) if name.endswith(".index"))
    assert kept == [4, 6, 8, 10, 12]                                       # a tick every 2 steps, five kept
    history = json.load(open(os.path.join(out, "logs", "history.json")))
    assert [h["kimg"] for h in history if "swd_avg" in h] == [0.016, 0.032, 0.048]   # every 0.016, on eval_dir

    json.dump({**json.load(open(run_file)), "tick_kimg": -1}, open(run_file, "w"))
    before = digest(out)
    result = run(out, "--load=weights", "--kimg=0.064", expect=1)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]       # the one message alone
    assert f"{run_file}: --tick_kimg=-1 must be positive and finite" in result.stderr and digest(out) == before


def test_a_dry_run_prints_what_clear_would_delete_and_clear_keeps_a_users_own_images(trained, tmp_path):
    out = copy_of(trained, tmp_path)
    samples = os.path.join(out, "samples")
    ours = sorted(name for name in os.listdir(samples) if name.endswith(".png"))
    assert "latest.png" in ours and "losses.png" in ours
    os.makedirs(os.path.join(out, "generated"))
    for folder in (samples, os.path.join(out, "generated")):
        open(os.path.join(folder, "mine.png"), "wb").write(b"a user's own picture")
    result = run(out, "--dry_run", "--clear=samples")
    assert result.stdout.splitlines() == [f"--clear samples would delete {os.path.join(samples, name)}" for name in ours]
    run(out, "--clear=samples")
    assert os.listdir(samples) == ["mine.png"] and os.listdir(os.path.join(out, "generated")) == ["mine.png"]


@pytest.mark.parametrize("mode, blocked, flag", [
    (["--mode=generate", "--seeds=0-1"], "outdir", "--outdir"),
    (["--mode=export"], "exports", "--output_dir"),
    (["--mode=evaluate", "--num_images=8", "--metrics=swd"], "evaluation", "--output_dir"),
    (["--mode=project", "--project_steps=2"], "outdir", "--outdir"),
])
def test_a_file_where_an_output_folder_goes_is_one_message_naming_it(trained, eval_slices, tmp_path, mode, blocked,
                                                                     flag):
    out = copy_of(trained, tmp_path)
    blocker = str(tmp_path / "a file") if blocked == "outdir" else os.path.join(out, blocked)
    open(blocker, "w").write("a user's file")
    args = [*mode, f"--eval_dir={eval_slices}", f"--target={os.path.join(eval_slices, 'case_000_slice_0.png')}",
            *([f"--outdir={blocker}"] if blocked == "outdir" else [])]
    before = digest(out)
    result = run(out, *args, expect=1)
    assert result.stderr.strip().splitlines()[-1].endswith(
        f"{blocker} is a file, not a folder; move or delete it, or choose another {flag}"), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert digest(out) == before


@pytest.mark.parametrize("code, message", [(errno.ENOSPC, "free some space"), (errno.EROFS, "make it writable")])
def test_a_full_or_read_only_disk_is_one_message(trained, tmp_path, monkeypatch, code, message):
    out = copy_of(trained, tmp_path)

    def refuse(path, content):
        raise OSError(code, os.strerror(code), path)
    monkeypatch.setattr(atomic, "write_bytes", refuse)
    result = run(out, "--mode=generate", "--seeds=0", expect=1)
    assert result.stderr.strip().splitlines()[-1].endswith(
        f"{os.path.join(out, 'generated', 'seed0000.png')} ({os.strerror(code)}): {message} or choose another "
        f"--output_dir"), result.stderr[-2000:]


def test_a_truncated_export_is_one_message_that_says_to_export_again(trained, tmp_path):
    out = copy_of(trained, tmp_path)
    run(out, "--mode=export")
    whole = open(os.path.join(out, "exports", "generator.keras"), "rb").read()
    truncated = tmp_path / "generator.keras"
    truncated.write_bytes(whole[:len(whole) // 2])
    result = run(out, "--mode=generate", f"--exported={truncated}", expect=1)
    assert f"{truncated} is not a whole .keras file" in result.stderr and "--mode export" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]


def test_a_new_run_that_diverges_before_its_first_checkpoint_says_to_start_again(tmp_path):
    result = run(str(tmp_path / "run"), *TINY, "--kimg=0.008", "--g_lr=3e38", "--d_lr=3e38", expect=1)
    assert "No checkpoint was saved; start again with lower --g_lr and --d_lr." in result.stderr
    assert "resume from it" not in result.stderr
