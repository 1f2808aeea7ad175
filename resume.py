"""What a training does with what its folder already holds: resume, fine-tune, refuse, clear.

Lives here: the rules for changing the saved configuration on resume (`resolve_resume_config`,
RESUMABLE), the run's own data (`save_data`, `resolve_run_data`), the refusal to start a new run
over an old one, --init_from (`initialize_from`) and --clear (`clear_outputs`). Not here: the
folder's layout (runs.py), the lock (runlock.py), checkpoint files (checkpointing.py), the
training loop (training.py).
"""

import dataclasses
import json
import os
import re
import shlex

from absl import logging

import atomic
import data
from checkpointing import (_delete_checkpoint_files, candidates, checkpoint_images, choose_checkpoint, named_variables,
                           read_variables)
from runlock import RunLock
from runs import RunError, _first_line, checkpoints_on_disk, read_config


# Settings that may change when a run is resumed: they change neither the networks' shapes nor
# what the checkpointed state means (run options such as --tick_kimg and --eval_* change freely).
RESUMABLE = ("kimg", "g_lr", "d_lr", "r1_gamma", "ada_target")
# The run options that say how a run ticks, keeps checkpoints and is judged; saved in RUN_FILE so a
# resume goes on as the run began (a typed one changes freely; --strategy and --steps_per_execution
# belong to the machine and are left to each launch).
RUN_SETTINGS = ("tick_kimg", "keep_checkpoints", "eval_kimg", "eval_images", "eval_metrics", "best_by", "eval_dir",
                "eval_splits", "inception_weights")
# The run options that say what a run trains on; saved in DATA_FILE (a conditional run's label table
# and --labels_missing are in its labels.json).
DATA_SETTINGS = ("data_dir", "splits", "exclude_subjects")

# The images training (samples/) and generate and project (generated/) write: a user's own are kept.
_OWN_IMAGE = re.compile(r"^((grid_\d{8}|latest|losses|seed\d{4,}|grid|style_mixing|sweep_\w+|interpolation|projected_.+)"
                        r"\.png|interpolation\.gif)$")


def resolve_resume_config(paths, requested, explicit):
    """The saved configuration with the explicitly given RESUMABLE settings applied, after checking
    that no other explicit setting contradicts it. Returns (config, changes) where changes maps
    each changed setting to [old, new] (R1 gamma as the value in effect)."""
    saved = read_config(paths)
    conflicts = [f"--{k}={getattr(requested, k)} (checkpoint: {getattr(saved, k)})"
                 for k in sorted(explicit) if k not in RESUMABLE and getattr(requested, k) != getattr(saved, k)]
    resumed = saved.replace(**{k: getattr(requested, k) for k in explicit if k in RESUMABLE})
    if resumed.r1_problem(explicit, saved):
        conflicts.append(resumed.r1_problem(explicit, saved))
    if conflicts:
        raise RunError("these settings conflict with the checkpoint being resumed: " + ", ".join(conflicts)
                       + ". Drop them, or train a new run in another --output_dir. Only "
                       + ", ".join(f"--{k}" for k in RESUMABLE) + " may change on resume.")
    changes = {}
    for k in RESUMABLE:
        old, new = getattr(saved, k), getattr(resumed, k)
        if k == "r1_gamma":
            old, new = saved.resolved_r1_gamma, resumed.resolved_r1_gamma
        if old != new:
            changes[k] = [old, new]
    return resumed, changes


def _save_settings(path, options, names, folders):
    """Write the run options `names` of `options` to `path` as JSON, the `folders` among them absolute."""
    saved = {name: getattr(options, name) for name in names}
    saved.update({name: saved[name] and os.path.abspath(saved[name]) for name in folders})
    atomic.write_json(path, {name: list(v) if isinstance(v, tuple) else v for name, v in saved.items()})


def _read_settings(path, names, records, flags):
    """The run options `names` saved at `path` (lists as tuples), or None for a run from before the
    file; unreadable or incomplete, one RunError saying what it `records` and how to go on."""
    try:
        with open(path) as f:
            saved = json.load(f)
        return {name: tuple(saved[name]) if isinstance(saved[name], list) else saved[name] for name in names}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RunError(f"{path} cannot be read ({_first_line(e)}); it records {records}: put it back from a copy of "
                       f"the run, or delete it and resume with the run's {flags}") from None


def save_data(paths, options):
    """Record what the run trains on (DATA_SETTINGS of `options`; the folder as an absolute path)."""
    _save_settings(paths.data_file, options, DATA_SETTINGS, ("data_dir",))


def save_run_settings(paths, options):
    """Record how the run ticks, keeps checkpoints and is judged (RUN_SETTINGS of `options`)."""
    _save_settings(paths.run_file, options, RUN_SETTINGS, ("eval_dir", "inception_weights"))


def resolve_run_settings(paths, options):
    """The run options with the run's own RUN_SETTINGS (run.json) in place of every one the user did
    not type (`options.typed`), so a resume without them keeps its checkpoints and its periodic
    evaluation. A run from before run.json keeps the options as given."""
    saved = _read_settings(paths.run_file, RUN_SETTINGS, "how this run ticks, keeps checkpoints and is evaluated",
                           "--tick_kimg, --keep_checkpoints and --eval_* flags")
    if saved is None:
        return options
    try:
        return dataclasses.replace(options, **{k: v for k, v in saved.items() if k not in options.typed})
    except ValueError as e:
        raise RunError(f"{paths.run_file}: {e}") from None


def resolve_run_data(paths, options, resume=True):
    """The run options with the run's own data (data.json) in place of every data setting the user
    did not type (`options.typed`); evaluation follows the saved --exclude_subjects unless
    --eval_subjects is typed. On a resume a typed value that differs from the saved one is refused
    with the saved one named (an evaluation may compare with other data). A saved folder that is
    gone is an error naming --data_dir; a typed --data_dir then takes its place. A run from before
    data.json keeps the options as given."""
    saved = _read_settings(paths.data_file, DATA_SETTINGS, "the data this run trains on",
                           "--data_dir, --splits and --exclude_subjects")
    if saved is None:
        return options
    folder = saved["data_dir"]
    shown = {"data_dir": folder or "the built-in synthetic slices", "splits": ",".join(saved["splits"]),
             "exclude_subjects": ",".join(saved["exclude_subjects"]) or "none"}
    conflicts = []
    for name in DATA_SETTINGS:
        if name not in options.typed:
            continue
        value = getattr(options, name)
        if name == "data_dir":
            gone = folder is not None and not os.path.isdir(folder)
            if value is None or folder is None or os.path.realpath(value) != os.path.realpath(folder) and not gone:
                conflicts.append(f"--data_dir={value} (this run: {shown[name]})")
            elif gone:
                logging.warning("this run trained on %s, which is gone; using --data_dir %s", folder, value)
        elif tuple(value) != saved[name]:
            conflicts.append(f"--{name}={','.join(value)} (this run: {shown[name]})")
        saved[name] = value
    if conflicts and resume:
        raise RunError("these settings differ from the data of the run being resumed: " + ", ".join(conflicts)
                       + f". Leave them out to resume on the run's own data ({paths.data_file}), or train a new run "
                         f"in another --output_dir")
    if "data_dir" not in options.typed and folder is not None and not os.path.isdir(folder):
        raise RunError(f"this run trained on {folder}, which is gone: put it back, or give its new place with "
                       f"--data_dir")
    if "eval_subjects" not in options.typed:
        saved["eval_subjects"] = saved["exclude_subjects"]
    return dataclasses.replace(options, **saved)



def refuse_overwrite(paths):
    """A new run in a folder that holds checkpoints would rotate them away within a few ticks and
    overwrite their configuration and history: refuse, saying what is there and the ways on."""
    found = checkpoints_on_disk(paths.checkpoints)
    if not found:
        return
    latest = found[0]
    try:
        saved = read_config(paths)
        settings = (f"{saved.resolution}x{saved.resolution}, --loss={saved.loss}, --batch_size={saved.batch_size}, "
                    f"--kimg={saved.kimg:g}")
    except RunError:
        saved, settings = None, "its config.json is missing or unreadable"
    images = checkpoint_images(latest)
    if images is None and saved is not None:
        images = int(latest.rsplit("-", 1)[1]) * saved.batch_size
    at = f"{images / 1000:g} kimg" if images is not None else os.path.basename(latest)
    root = shlex.quote(paths.root)
    raise RunError(
        f"{paths.root} already holds a training run ({at} in {os.path.basename(latest)}; {settings}); a new run "
        f"here would delete its checkpoints. Continue it with --load weights (python driver.py --output_dir {root} "
        f"--load weights), start the new run in another --output_dir, or discard the old one first with "
        f"--clear checkpoints (python driver.py --output_dir {root} --clear checkpoints --mode train ...).")


def record_changes(paths, history, kimg, changes):
    """Append {"kimg": ..., "changed": {name: [old, new]}} to the history and write it at once, so the
    change is on record even if the run stops before its next tick."""
    if not changes:
        return
    history.append({"kimg": kimg, "changed": changes})
    atomic.write_json(paths.history_file, history)
    logging.info("changed on resume at %g kimg: %s", kimg,
                 ", ".join(f"{k} {old:g} -> {new:g}" for k, (old, new) in changes.items()))



INIT_OWNERS = ("generator", "generator_ema", "discriminator")   # what --init_from copies


def initialize_from(gan, source, checkpoint="auto"):
    """Copy the generator, EMA generator and discriminator weights (w_avg included) of a checkpoint
    of another run (`source`, its Paths; `choose_checkpoint` picks which) into `gan`; optimizers,
    counters, path-length mean and augmentation strength stay fresh. Every shape is checked first,
    so a mismatch is one RunError naming the layer and `gan` is left untouched. Returns the prefix."""
    prefix = choose_checkpoint(source, checkpoint) or (candidates(source.checkpoints) or [None])[0]
    if prefix is None:
        raise RunError(f"--init_from {source.root}: no checkpoint in {source.checkpoints}; point it at the "
                       f"--output_dir of a trained run")
    wanted = {name: v for name, v in named_variables(gan).items() if name.split("/", 1)[0] in INIT_OWNERS}
    try:
        read_variables(prefix, wanted, "the networks must have the same shapes: leave out the size flags "
                                       "(resolution, channels, dims, mapping depth) to take the source run's")
    except RunError as e:
        raise RunError(f"--init_from: {e}") from None
    return prefix


# ---------------------------------------------------------------------------------------------
# --clear
# ---------------------------------------------------------------------------------------------

CLEARABLE = ("samples", "cache", "both", "checkpoints")


def clear_outputs(paths, which, delete=True):
    """Delete the run's own outputs: 'samples' (images in samples/ and generated/), 'cache', 'both'
    (samples and cache) or 'checkpoints' (the run itself: ckpt-*, the index, config.json,
    data.json, run.json, labels.json, logs/history.json and the leftovers of killed saves; taken
    under the run's lock, so never from under a running training). Returns what was deleted
    (delete=False: what would be, for samples and cache). Only files this project writes are
    touched, and links are never followed, so nothing outside the output folder can be lost."""
    if which not in CLEARABLE:
        raise ValueError(f"--clear takes one of {', '.join(CLEARABLE)}, got {which!r}")
    if which == "checkpoints" and not delete:
        raise ValueError("--clear checkpoints deletes the run itself; it has no dry run")
    deleted = []
    if which in ("samples", "both"):
        for folder in (paths.samples, paths.generated):
            deleted += _delete_own_images(folder, delete)
    if which in ("cache", "both"):
        deleted += data.clear_cache(paths.cache, delete)
    if which == "checkpoints" and os.path.isdir(paths.checkpoints):
        with RunLock(paths):
            deleted += _delete_checkpoint_files(paths, leftovers_only=False)
    return deleted


def _delete_own_images(folder, delete):
    if not os.path.isdir(folder) or os.path.islink(folder):
        return []
    found = sorted(entry.path for entry in os.scandir(folder)
                   if entry.is_file(follow_symlinks=False) and _OWN_IMAGE.match(entry.name))
    for path in found if delete else ():
        os.remove(path)
    return found
