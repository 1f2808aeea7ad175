"""The run folder (runs.py, runlock.py, checkpointing.py, resume.py) in-process: checkpoints hold every variable (the EMA generator and optimizer
moments included) and restore into a freshly built model; restore falls back past damaged checkpoints
and puts back this run's learning rates; a non-finite state is never saved; the lock; --clear
checkpoints and the clean-up after a killed save touch only this program's files; the resume rules.
The same behaviour through the real command line is in test_safety.py."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import atomic
import checkpointing
import resume
import runlock
import runs
from config import Config
from gan import build_gan

TINY = Config(resolution=8, channel_base=128, channel_max=16, z_dim=8, w_dim=8, mapping_layers=2,
              batch_size=4, mbstd_group_size=2, d_reg_interval=2, g_reg_interval=2)


def all_variables(gan):
    return list(checkpointing.named_variables(gan).values()) + gan.g_optimizer.variables + gan.d_optimizer.variables


def test_named_variables_cover_every_weight_once():
    gan = build_gan(TINY.replace(augment="ada"))
    named = checkpointing.named_variables(gan)
    assert len({id(v) for v in named.values()}) == len(named) == len({id(v) for v in gan.weights})
    assert any(k.startswith("generator_ema/generator/synthesis/b8_conv1") for k in named)
    assert any(k.startswith("augment/") for k in named)


@pytest.mark.parametrize("precision", ["float32", "float16"])   # float16: the loss scales too
def test_checkpoint_restores_every_variable_into_a_new_model(tmp_path, precision):
    tf.keras.utils.set_random_seed(1)
    gan = build_gan(TINY.replace(precision=precision))
    gan.train_logs(tf.random.stateless_uniform([4, 8, 8, 1], [0, 0], -1.0, 1.0))
    path = checkpointing.Checkpointer(gan, str(tmp_path)).save(1)
    tf.keras.utils.set_random_seed(2)
    fresh = build_gan(TINY.replace(precision=precision))
    if precision == "float16":
        fresh.d_optimizer.dynamic_scale.assign(1.0)
    before = [v.numpy().copy() for v in all_variables(fresh)]
    checkpointing.Checkpointer(fresh, str(tmp_path)).restore(path)
    changed = 0
    for saved, restored, old in zip(all_variables(gan), all_variables(fresh), before):
        np.testing.assert_array_equal(restored.numpy(), saved.numpy())
        changed += not np.array_equal(old, saved.numpy())
    assert changed > 50              # the fresh model really started elsewhere: EMA, moments, counters


def test_a_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    gan = build_gan(TINY)
    checkpointing.Checkpointer(gan, str(tmp_path)).save(1)
    other = build_gan(TINY.replace(channel_max=32))
    with pytest.raises(runs.RunError, match="does not fit this model"):
        checkpointing.Checkpointer(other, str(tmp_path)).restore()


def test_checkpoints_move_between_one_device_and_mirrored_strategy(tmp_path, mirrored):
    """fit() under MirroredStrategy on two logical CPUs; its checkpoint restores without a strategy,
    and a single-device checkpoint restores under the strategy."""
    images = tf.random.stateless_uniform([8, 8, 8, 1], [0, 0], -1.0, 1.0)
    data = tf.data.Dataset.from_tensor_slices(images).batch(4, drop_remainder=True)
    tf.keras.utils.set_random_seed(1)
    distributed = build_gan(TINY, mirrored)
    distributed.fit(data, epochs=1, verbose=0, shuffle=False)
    assert int(distributed.images_seen.numpy()) == 8
    checkpointing.Checkpointer(distributed, str(tmp_path / "a")).save(2)

    single = build_gan(TINY)
    checkpointing.Checkpointer(single, str(tmp_path / "a")).restore()
    for a, b in zip(all_variables(distributed), all_variables(single)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    single.train_logs(images[:4])
    checkpointing.Checkpointer(single, str(tmp_path / "b")).save(3)
    back = build_gan(TINY, mirrored)
    checkpointing.Checkpointer(back, str(tmp_path / "b")).restore()
    assert int(back.images_seen.numpy()) == 12
    for a, b in zip(all_variables(single), all_variables(back)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# ---------------------------------------------------------------------------------------------
# Restore falls back past damaged checkpoints; learning rates are this run's
# ---------------------------------------------------------------------------------------------

def three_checkpoints(directory):
    """A model saved at steps 1, 2 and 3 with a different value of one weight each time."""
    gan = build_gan(TINY)
    checkpointer = checkpointing.Checkpointer(gan, directory, keep=3)
    weight = gan.generator.weights[0]
    for step in (1, 2, 3):
        weight.assign(tf.fill(weight.shape, float(step)))
        checkpointer.save(step)
    return gan


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


DAMAGE = {
    "truncated data": lambda prefix: truncate(prefix + ".data-00000-of-00001"),
    "zero-byte data": lambda prefix: open(prefix + ".data-00000-of-00001", "wb").close(),
    "missing data": lambda prefix: os.remove(prefix + ".data-00000-of-00001"),
    "garbage index": lambda prefix: open(prefix + ".index", "wb").write(b"\x00not an index" * 50),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_restore_falls_back_to_the_newest_checkpoint_that_restores(tmp_path, damage, caplog):
    directory = str(tmp_path)
    three_checkpoints(directory)
    DAMAGE[damage](os.path.join(directory, "ckpt-3"))
    fresh = build_gan(TINY)
    restored = checkpointing.Checkpointer(fresh, directory).restore()
    assert restored == os.path.join(directory, "ckpt-2")
    np.testing.assert_array_equal(fresh.generator.weights[0].numpy(), 2.0)
    skipped = [r.getMessage() for r in caplog.records if "skipped checkpoint" in r.getMessage()]
    assert len(skipped) == 1 and "ckpt-3" in skipped[0] and "damaged" in skipped[0]


def test_when_no_checkpoint_restores_the_error_lists_each_and_why(tmp_path):
    directory = str(tmp_path)
    three_checkpoints(directory)
    for step in (1, 2, 3):
        truncate(os.path.join(directory, f"ckpt-{step}.data-00000-of-00001"))
    with pytest.raises(runs.RunError, match="none of the checkpoints") as error:
        checkpointing.Checkpointer(build_gan(TINY), directory).restore()
    assert all(f"ckpt-{step} is damaged" in str(error.value) for step in (1, 2, 3))


def test_a_garbled_index_is_read_around_and_rebuilt_from_the_files(tmp_path):
    paths = runs.Paths(str(tmp_path))
    three_checkpoints(paths.checkpoints)
    index = os.path.join(paths.checkpoints, "checkpoint")
    with open(index, "w") as f:
        f.write("model_checkpoint_path: \x00garbled{{")
    fresh = build_gan(TINY)
    checkpointer = checkpointing.Checkpointer(fresh, paths.checkpoints)
    assert checkpointer.restore() == os.path.join(paths.checkpoints, "ckpt-3")   # from the files, no writing
    assert open(index).read().startswith("model_checkpoint_path: \x00")
    assert checkpointing.repair_index(paths)
    state = tf.train.get_checkpoint_state(paths.checkpoints)
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ["ckpt-1", "ckpt-2", "ckpt-3"]
    assert os.path.basename(state.model_checkpoint_path) == "ckpt-3"
    checkpointer.save(4)                                # the manager reads the rebuilt index and rotates
    assert sorted(n for n in os.listdir(paths.checkpoints) if n.endswith(".index")) == [
        "ckpt-2.index", "ckpt-3.index", "ckpt-4.index"]
    assert not checkpointing.repair_index(paths)                 # a good index is left alone


def test_restore_keeps_the_learning_rates_this_run_was_built_with(tmp_path):
    gan = build_gan(TINY)
    gan.train_logs(tf.random.stateless_uniform([4, 8, 8, 1], [0, 0], -1.0, 1.0))
    checkpointing.Checkpointer(gan, str(tmp_path)).save(1)
    slower = build_gan(TINY.replace(g_lr=0.001, d_lr=0.0004))
    checkpointing.Checkpointer(slower, str(tmp_path)).restore()
    # Lazy regularisation every 2 steps scales the learning rates by 2/3 (gan.adam_for).
    assert float(slower.g_optimizer.learning_rate) == pytest.approx(0.001 * 2 / 3, rel=1e-6)
    assert float(slower.d_optimizer.learning_rate) == pytest.approx(0.0004 * 2 / 3, rel=1e-6)
    assert int(slower.g_optimizer.iterations.numpy()) == 1                # the state did come back
    np.testing.assert_array_equal(slower.discriminator.weights[0].numpy(), gan.discriminator.weights[0].numpy())


# ---------------------------------------------------------------------------------------------
# Never a non-finite checkpoint
# ---------------------------------------------------------------------------------------------

def test_a_state_with_non_finite_variables_is_never_saved(tmp_path):
    gan = build_gan(TINY)
    checkpointer = checkpointing.Checkpointer(gan, str(tmp_path))
    checkpointer.save(1)
    before = sorted(os.listdir(tmp_path))
    weight = gan.generator.weights[0]
    weight.assign(tf.tensor_scatter_nd_update(weight, [[0] * len(weight.shape)], [np.nan]))
    moment = next(v for v in gan.d_optimizer.variables if "momentum" in v.path)
    moment.assign(tf.fill(moment.shape, np.inf))
    assert sorted(checkpointing.non_finite(gan)) == sorted([f"generator/{weight.path}", f"d_optimizer/{moment.path}"])
    with pytest.raises(runs.NonFiniteStateError) as error:
        checkpointer.save(2)
    message = str(error.value)
    assert "2 variables hold NaN or infinite values" in message and weight.path in message
    assert "no checkpoint was written" in message and "ckpt-1, is kept" in message
    assert f"--output_dir {tmp_path.parent} --load weights --g_lr 0.00125 --d_lr 0.00125" in message
    assert sorted(os.listdir(tmp_path)) == before and checkpointer.latest.endswith("ckpt-1")


def test_a_checkpoint_with_non_finite_values_is_skipped_on_restore(tmp_path, caplog):
    """Checkpoints written before the finite check existed may hold NaN: resume skips them."""
    directory = str(tmp_path)
    gan = three_checkpoints(directory)
    weight = gan.generator.weights[0]
    weight.assign(tf.fill(weight.shape, np.nan))
    checkpointing.Checkpointer(gan, directory).manager.save(checkpoint_number=4)    # around the check, as old code did
    fresh = build_gan(TINY)
    assert checkpointing.Checkpointer(fresh, directory).restore().endswith("ckpt-3")
    assert any("ckpt-4" in r.getMessage() and "NaN or infinite" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------------
# The lock
# ---------------------------------------------------------------------------------------------

def write_lock(paths, **holder):
    os.makedirs(paths.root, exist_ok=True)
    with open(paths.lock_file, "w") as f:
        json.dump({"host": runlock.socket.gethostname(), "started": "2026-01-01T00:00:00", **holder}, f)


def test_the_lock_refuses_a_live_holder_takes_over_a_dead_one_and_is_released(tmp_path, caplog):
    paths = runs.Paths(str(tmp_path))
    with runlock.RunLock(paths):
        holder = json.load(open(paths.lock_file))
        assert holder["pid"] == os.getpid() and holder["host"] == runlock.socket.gethostname()
    assert not os.path.exists(paths.lock_file)

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(paths, pid=sleeper.pid)
        with pytest.raises(runs.RunError, match=f"in use by another training \\(pid {sleeper.pid} on"):
            runlock.RunLock(paths).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    with runlock.RunLock(paths):                          # the same lock, its process now gone
        assert json.load(open(paths.lock_file))["pid"] == os.getpid()
    assert any(f"pid {sleeper.pid}" in r.getMessage() and "took over" in r.getMessage() for r in caplog.records)

    with pytest.raises(KeyError):
        with runlock.RunLock(paths):
            raise KeyError("an error inside the run")
    assert not os.path.exists(paths.lock_file)         # released on the way out of an exception


def test_a_lock_from_another_host_is_refused_with_how_to_remove_it(tmp_path):
    paths = runs.Paths(str(tmp_path))
    write_lock(paths, pid=1, host="elsewhere")
    with pytest.raises(runs.RunError, match="host elsewhere") as error:
        runlock.RunLock(paths).acquire()
    assert f"delete {paths.lock_file}" in str(error.value)
    assert json.load(open(paths.lock_file))["host"] == "elsewhere"          # left as it was


def test_an_unreadable_lock_is_one_being_written_when_young_and_stale_when_old(tmp_path):
    paths = runs.Paths(str(tmp_path))
    open(paths.lock_file, "w").close()                                     # O_EXCL done, JSON not yet
    with pytest.raises(runs.RunError, match="another training is starting"):
        runlock.RunLock(paths).acquire()
    old = os.path.getmtime(paths.lock_file) - 2 * runlock.FRESH_LOCK_SECONDS
    os.utime(paths.lock_file, (old, old))                                  # cut off long ago
    with runlock.RunLock(paths):
        assert json.load(open(paths.lock_file))["pid"] == os.getpid()


# ---------------------------------------------------------------------------------------------
# Only this program's files: --clear checkpoints and the leftovers of a killed save
# ---------------------------------------------------------------------------------------------

def a_run_folder(tmp_path):
    """A run's files, the leftovers of a killed save, and files that are not the program's."""
    paths = runs.Paths(str(tmp_path / "run"))
    ck = paths.checkpoints
    files = {
        "ours": ["ckpt-2.index", "ckpt-2.data-00000-of-00001", "checkpoint", "config.json", "labels.json"],
        "leftovers": ["checkpoint.tmp3f2a9c", "ckpt-1.data-00000-of-00001", "config.json.tmp4242",
                      "ckpt-3_temp/part-00000-of-00001.data-00000-of-00001", "ckpt-3_temp/part-00000-of-00001.index"],
        "foreign": ["notes.txt", "ckpt-2.index.bak"],
    }
    for name in sum(files.values(), []):
        os.makedirs(os.path.dirname(os.path.join(ck, name)), exist_ok=True)
        with open(os.path.join(ck, name), "w") as f:
            f.write("x")
    precious = tmp_path / "precious.index"
    precious.write_text("not ours")
    os.symlink(precious, os.path.join(ck, "ckpt-9.index"))                   # a link: never followed
    os.makedirs(paths.logs)
    for name in ("history.json", "events.out.tfevents.1.host"):
        open(os.path.join(paths.logs, name), "w").close()
    os.makedirs(paths.samples)
    open(os.path.join(paths.samples, "latest.png"), "w").close()
    return paths, files, precious


def test_leftovers_of_a_killed_save_are_removed_and_nothing_else(tmp_path):
    paths, files, precious = a_run_folder(tmp_path)
    deleted = checkpointing.clean_leftovers(paths)
    ck = paths.checkpoints
    assert deleted == sorted(os.path.join(ck, n) for n in
                             ["checkpoint.tmp3f2a9c", "ckpt-1.data-00000-of-00001", "config.json.tmp4242", "ckpt-3_temp"])
    assert sorted(os.listdir(ck)) == sorted(files["ours"] + files["foreign"] + ["ckpt-9.index"])
    assert precious.read_text() == "not ours"


def test_an_index_is_a_leftover_only_when_no_checkpoint_is_left(tmp_path):
    paths = runs.Paths(str(tmp_path))
    os.makedirs(paths.checkpoints)
    index = os.path.join(paths.checkpoints, "checkpoint")
    with open(index, "w") as f:
        f.write('model_checkpoint_path: "ckpt-4"\n')
    open(os.path.join(paths.checkpoints, "ckpt-3.index"), "w").close()
    assert checkpointing.clean_leftovers(paths) == [] and os.path.exists(index)      # ckpt-3 is still there
    os.remove(os.path.join(paths.checkpoints, "ckpt-3.index"))
    assert checkpointing.clean_leftovers(paths) == [index] and not os.path.exists(index)


def test_clear_checkpoints_deletes_the_run_and_only_this_programs_files(tmp_path):
    paths, files, precious = a_run_folder(tmp_path)
    assert resume.clear_outputs(paths, "both") == [os.path.join(paths.samples, "latest.png")]
    assert "config.json" in os.listdir(paths.checkpoints)                  # both = samples and cache only
    deleted = resume.clear_outputs(paths, "checkpoints")
    assert os.path.join(paths.logs, "history.json") in deleted
    assert sorted(os.listdir(paths.checkpoints)) == sorted(files["foreign"] + ["ckpt-9.index"])
    assert os.listdir(paths.logs) == ["events.out.tfevents.1.host"]
    assert precious.read_text() == "not ours" and not os.path.exists(paths.lock_file)


def test_clear_checkpoints_is_refused_while_a_training_holds_the_folder(tmp_path):
    paths, _, _ = a_run_folder(tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(paths, pid=sleeper.pid)
        with pytest.raises(runs.RunError, match="in use by another training"):
            resume.clear_outputs(paths, "checkpoints")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert "ckpt-2.index" in os.listdir(paths.checkpoints)


# ---------------------------------------------------------------------------------------------
# What may change on resume; folders that cannot be used
# ---------------------------------------------------------------------------------------------

def saved_run(tmp_path, config):
    paths = runs.Paths(str(tmp_path))
    os.makedirs(paths.checkpoints)
    atomic.write_json(paths.config_file, dataclasses.asdict(config))
    return paths


def test_resume_allows_learning_rates_gamma_kimg_and_ada_target_and_nothing_that_changes_shapes(tmp_path):
    paths = saved_run(tmp_path, TINY.replace(r1_gamma=1.0, augment="ada"))
    requested = TINY.replace(g_lr=0.001, d_lr=0.002, r1_gamma=0.5, kimg=50.0, ada_target=0.7, channel_max=16)
    config, changes = resume.resolve_resume_config(paths, requested, {"g_lr", "d_lr", "r1_gamma", "kimg", "ada_target",
                                                                    "channel_max"})
    assert changes == {"g_lr": [0.0025, 0.001], "d_lr": [0.0025, 0.002], "r1_gamma": [1.0, 0.5],
                       "kimg": [200.0, 50.0], "ada_target": [0.6, 0.7]}
    assert config == TINY.replace(r1_gamma=0.5, augment="ada", g_lr=0.001, d_lr=0.002, kimg=50.0, ada_target=0.7)
    for bad, message in [({"channel_max": 32}, "--channel_max=32 (checkpoint: 16)"),
                         ({"r1_gamma": 0.0}, "R1 cannot be turned on or off")]:
        with pytest.raises(runs.RunError, match=message.replace("(", "\\(").replace(")", "\\)")):
            resume.resolve_resume_config(paths, TINY.replace(**bad), set(bad))


def test_a_folder_that_cannot_be_written_is_one_message_naming_it(tmp_path, monkeypatch):
    """Root ignores permission bits, so a read-only folder is simulated (test_safety.py has the real
    file-instead-of-folder cases through the command line)."""
    paths = runs.Paths(str(tmp_path / "run"))

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", path)
    monkeypatch.setattr(runs.os, "makedirs", refuse)
    with pytest.raises(runs.RunError) as error:
        paths.make("checkpoints")
    assert str(error.value) == (f"cannot write in {paths.root} (Permission denied): make it writable or choose "
                                f"another --output_dir")


def test_the_best_checkpoint_survives_rotation_and_only_a_better_score_replaces_it(tmp_path):
    gan = build_gan(TINY)
    checkpointer = checkpointing.Checkpointer(gan, str(tmp_path), keep=2)
    kernel = gan.generator.trainable_variables[0]
    values = {}
    for step, swd in [(1, 50.0), (2, 60.0), (3, 40.0), (4, 45.0)]:
        kernel.assign(kernel + 1.0)
        values[step] = kernel.numpy()
        checkpointer.save(step)
        checkpointer.save_best(step, step / 1000, swd, "swd_each_avg")
    best = checkpointing.read_best(str(tmp_path))
    assert (best["step"], best["metric"], best["score"]) == (3, "swd_each_avg", 40.0)
    assert sorted(os.listdir(tmp_path / "best")) == ["best.json", "ckpt-3.data-00000-of-00001", "ckpt-3.index"]
    assert [os.path.basename(p) for p in runs.checkpoints_on_disk(str(tmp_path))] == ["ckpt-4", "ckpt-3"]
    checkpointer.restore(best["checkpoint"])
    np.testing.assert_array_equal(kernel.numpy(), values[3])
    # A save killed before best.json moved on leaves new files beside it; best.json still rules.
    checkpointer.checkpoint.write(str(tmp_path / "best" / "ckpt-9"))
    assert checkpointing.read_best(str(tmp_path))["step"] == 3


def test_a_best_chosen_by_another_metric_is_replaced_and_old_best_files_still_read(tmp_path):
    checkpointer = checkpointing.Checkpointer(build_gan(TINY), str(tmp_path))
    checkpointer.save_best(3, 0.003, 40.0, "swd_each_avg")
    with open(tmp_path / "best" / "best.json", "w") as f:           # as written before --best_by
        json.dump({"kimg": 0.003, "swd_avg": 40.0, "step": 3, "checkpoint": "ckpt-3"}, f)
    assert {k: checkpointing.read_best(str(tmp_path))[k] for k in ("metric", "score", "step")} == \
        {"metric": "swd_avg", "score": 40.0, "step": 3}
    assert not checkpointer.save_best(4, 0.004, 41.0, "swd_avg")     # same metric, worse: kept
    assert checkpointer.save_best(5, 0.005, 90.0, "swd_each_avg")    # another metric: its scores do not compare
    assert checkpointing.read_best(str(tmp_path))["step"] == 5
    assert sorted(os.listdir(tmp_path / "best")) == ["best.json", "ckpt-5.data-00000-of-00001", "ckpt-5.index"]


def test_choose_checkpoint_names_best_latest_steps_and_paths(tmp_path):
    paths = runs.Paths(str(tmp_path))
    gan = build_gan(TINY)
    checkpointer = checkpointing.Checkpointer(gan, paths.checkpoints)
    checkpointer.save(5)
    assert checkpointing.choose_checkpoint(paths, "auto") is None                   # no best: the newest that loads
    with pytest.raises(runs.RunError, match="no best checkpoint.*--eval_kimg"):
        checkpointing.choose_checkpoint(paths, "best")
    assert checkpointing.choose_checkpoint(paths, "5") == os.path.join(paths.checkpoints, "ckpt-5")
    assert checkpointing.choose_checkpoint(paths, os.path.join(paths.checkpoints, "ckpt-5.index")).endswith("ckpt-5")
    with pytest.raises(runs.RunError, match=r"a step \(5\)"):
        checkpointing.choose_checkpoint(paths, "7")
    checkpointer.save_best(5, 0.02, 33.0, "swd_each_avg")
    assert checkpointing.choose_checkpoint(paths, "auto") == checkpointing.choose_checkpoint(paths, "best") == \
        os.path.join(paths.checkpoints, "best", "ckpt-5")


def test_init_from_copies_the_networks_and_leaves_optimizers_and_counters_fresh(tmp_path):
    tf.keras.utils.set_random_seed(1)
    source = build_gan(TINY.replace(augment="ada"))
    for _ in range(2):
        source.train_logs(tf.random.stateless_uniform([4, 8, 8, 1], [0, 0], -1.0, 1.0))
    source.augment.p.assign(0.3)
    paths = runs.Paths(str(tmp_path))
    checkpointing.Checkpointer(source, paths.checkpoints).save(2)
    tf.keras.utils.set_random_seed(2)
    fresh = build_gan(TINY.replace(augment="ada"))
    prefix = resume.initialize_from(fresh, paths)
    assert prefix.endswith("ckpt-2")
    theirs, ours = checkpointing.named_variables(source), checkpointing.named_variables(fresh)
    copied = [k for k in ours if k.split("/")[0] in resume.INIT_OWNERS]
    assert len(copied) > 50 and any("w_avg" in k for k in copied) and any(k.startswith("generator_ema/") for k in copied)
    for name in copied:
        np.testing.assert_array_equal(ours[name].numpy(), theirs[name].numpy(), err_msg=name)
    assert int(source.images_seen.numpy()) == 8 and int(fresh.images_seen.numpy()) == 0
    assert int(fresh.g_optimizer.iterations.numpy()) == 0 and int(source.g_optimizer.iterations.numpy()) > 0
    assert ours["augment/augment/p"].numpy() == 0.0 and theirs["augment/augment/p"].numpy() == 0.3   # p starts again


def test_init_from_a_differently_shaped_run_names_the_layer_and_changes_nothing(tmp_path):
    paths = runs.Paths(str(tmp_path))
    checkpointing.Checkpointer(build_gan(TINY), paths.checkpoints).save(1)
    other = build_gan(TINY.replace(channel_max=32))
    before = {k: v.numpy().copy() for k, v in checkpointing.named_variables(other).items()}
    with pytest.raises(runs.RunError, match=r"layer generator/.* is \(.*16.*\) in .*ckpt-1 but \(.*32.*\) here"):
        resume.initialize_from(other, paths)
    assert all(np.array_equal(v.numpy(), before[k]) for k, v in checkpointing.named_variables(other).items())
    with pytest.raises(runs.RunError, match="no layer generator/generator/mapping/fc2"):
        resume.initialize_from(build_gan(TINY.replace(mapping_layers=3)), paths)
    with pytest.raises(runs.RunError, match="no checkpoint in"):
        resume.initialize_from(build_gan(TINY), runs.Paths(str(tmp_path / "empty")))
