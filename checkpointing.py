"""Checkpoints: every variable of a training saved atomically, restored with a fall-back, and the best kept.

Lives here: `Checkpointer` (never a non-finite checkpoint; restore falls back to the newest
checkpoint that loads), the names variables are saved under (`named_variables`), `read_variables`
(some variables from a checkpoint's files, every shape checked: opening a generator for inference
and --init_from), the best checkpoint (`read_best`, `choose_checkpoint`), the repair of what a killed
save leaves behind (temporary files, an unreadable index) and the deletion of a run's own files.
Not here: the folder's layout (runs.py), resume and --clear (resume.py), the model (gan.py).
"""

import hashlib
import json
import os
import re
import shlex

import numpy as np
import tensorflow as tf
from absl import logging
from google.protobuf import text_format
from tensorflow.python.checkpoint import checkpoint_management
from tensorflow.python.training.checkpoint_state_pb2 import CheckpointState

import atomic
import labels
from runs import (_CKPT_INDEX, CONFIG_FILE, DATA_FILE, HISTORY_FILE, RUN_FILE, NonFiniteStateError, RunError,
                  _first_line, checkpoints_on_disk)


BEST_FOLDER, BEST_FILE = "best", "best.json"     # checkpoints/best/: the lowest held-out SWD so far
_CKPT_DATA = re.compile(r"^ckpt-(\d+)\.data-\d{5}-of-\d{5}$")
_CKPT_TEMP_DIR = re.compile(r"^ckpt-\d+_temp$")               # SaveV2 writes here, MergeV2 renames
_CKPT_TEMP_PART = re.compile(r"^part-\d{5}-of-\d{5}\.(index|data-\d{5}-of-\d{5})$")
_INDEX_TEMP = re.compile(r"^checkpoint\.tmp[0-9a-f]+$")       # the index, written then renamed
_JSON_TEMP = re.compile(r"^(config|history|data)\.json\.tmp\d+$")  # atomic.write_json's temporary names


def checkpoint_images(prefix):
    """Images seen by the checkpoint `prefix`, read from its files (None if they cannot be read)."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        key = next(k for k in reader.get_variable_to_shape_map() if k.endswith("images_seen/.ATTRIBUTES/VARIABLE_VALUE"))
        return int(reader.get_tensor(key))
    except (tf.errors.OpError, StopIteration, ValueError, IndexError):
        return None



def weights_digest(gan):
    """A short fingerprint (sha256, 12 hex digits) of every network variable: the same on every worker
    of a cluster, and the same for two runs that trained alike bit for bit."""
    digest = hashlib.sha256()
    for name, variable in sorted(named_variables(gan).items()):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
    return digest.hexdigest()[:12]


def named_variables(gan):
    """Every variable of the GAN under a unique name: '<owner>/<keras path>'.

    tf.train.Checkpoint follows attributes, but Keras 3 layers keep their sub-layers in Python lists
    that it does not see (the generator's convs, the discriminator's blocks): checkpointing the model
    object would silently drop the EMA generator. So the checkpoint names each variable itself.
    """
    named, seen = {}, set()
    for owner in ("generator", "generator_ema", "discriminator", "augment"):
        layer = getattr(gan, owner, None)
        for v in layer.weights if layer is not None else []:
            named[f"{owner}/{v.path}"] = v
            seen.add(id(v))
    for v in gan.weights:                                   # counters, pl_mean
        if id(v) not in seen:
            named[f"gan/{v.name}"] = v                        # not .path: the model name is uniquified
    return named


def all_named_variables(gan):
    """named_variables plus both optimizers' (moments, iterations, learning rate, loss scale)."""
    named = dict(named_variables(gan))
    for owner in ("g_optimizer", "d_optimizer"):
        for v in getattr(gan, owner).variables:
            named[f"{owner}/{v.path}"] = v
    return named


def non_finite(gan):
    """Names of the floating-point variables (model and optimizers) holding a NaN or infinity."""
    named = {k: v for k, v in all_named_variables(gan).items() if tf.as_dtype(v.dtype).is_floating}
    finite = tf.stack([tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(v))) for v in named.values()])   # [V]
    if bool(tf.reduce_all(finite)):
        return []
    return [name for name, ok in zip(named, finite.numpy()) if not ok]


def resume_command(root, config):
    """The command that resumes the run in `root` with half its learning rates."""
    return (f"python driver.py --output_dir {shlex.quote(root)} --load weights --g_lr {config.g_lr / 2:g} "
            f"--d_lr {config.d_lr / 2:g}")


class Checkpointer:
    """tf.train.CheckpointManager over every GAN variable, both optimizers and all training state.

    TensorFlow writes a checkpoint's files first and then swaps the small index file that names the
    latest one with an atomic rename, so a process killed mid-save leaves the previous checkpoint
    as the latest and loadable. On top of that:
    - `save` refuses a state with any NaN or infinite variable: a diverged run keeps its last good
      checkpoint instead of rotating it away for a useless one.
    - `restore` tries the checkpoints newest first (the index's latest, then every ckpt-N on disk)
      and takes the first that loads completely and is finite, warning about each one it skips.
    - Learning rates are settings, not state: after a restore they are put back to the values this
      model was compiled with, so a resume with a new --g_lr/--d_lr really uses them.
    """

    def __init__(self, gan, directory, keep=3):
        self.gan, self.directory, self.keep = gan, directory, keep
        self.checkpoint = tf.train.Checkpoint(model=tf.train.Checkpoint(**named_variables(gan)),
                                              g_optimizer=gan.g_optimizer, d_optimizer=gan.d_optimizer)
        self._manager = None

    @property
    def manager(self):
        # Made on first use: creating it reads the index, which may need repair_index first.
        if self._manager is None:
            self._manager = tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=self.keep)
        return self._manager

    @property
    def latest(self):
        candidates = self.candidates()
        return candidates[0] if candidates else None

    def candidates(self):
        return candidates(self.directory)

    def check_finite(self, step):
        """Raise NonFiniteStateError, naming the variables, if any holds a NaN or infinity."""
        bad = non_finite(self.gan)
        if bad:
            latest = self.latest
            kept = (f"the last good checkpoint, {os.path.basename(latest)}, is kept" if latest
                    else "there is no earlier checkpoint")
            raise NonFiniteStateError(
                f"training diverged by step {step} ({int(self.gan.images_seen.numpy())} images): {len(bad)} "
                f"variables hold NaN or infinite values ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}), "
                f"so no checkpoint was written and {kept}. Resume from it with lower learning rates: "
                f"{resume_command(os.path.dirname(os.path.abspath(self.directory)), self.gan.config)}")

    def save(self, step):
        """Write checkpoint ckpt-`step` (only of a finite state) and rotate out the oldest."""
        self.check_finite(step)
        return self.manager.save(checkpoint_number=step)

    def save_best(self, step, kimg, score, metric):
        """Keep this state as the best (lowest held-out `metric`, a logs/history.json key such as
        swd_each_avg) when it beats the best so far, in checkpoints/best/, which rotation never touches;
        a best chosen by another metric (a run resumed with another --best_by) is replaced. The new files are written first and best.json, which names
        them, is then replaced atomically; the old files go last. So a kill at any moment leaves
        best.json naming a complete checkpoint. Returns True if this state was kept."""
        best = read_best(self.directory)
        if best is not None and best["metric"] == metric and best["score"] <= score:
            return False
        folder = os.path.join(self.directory, BEST_FOLDER)
        os.makedirs(folder, exist_ok=True)
        name = f"ckpt-{step}"
        self.checkpoint.write(os.path.join(folder, name))
        atomic.write_json(os.path.join(folder, BEST_FILE), {"kimg": kimg, "metric": metric, "score": score,
                                                                "step": step, "checkpoint": name})
        for entry in os.scandir(folder):
            if entry.name.startswith("ckpt-") and not entry.name.startswith(name + "."):
                os.remove(entry.path)
        return True

    def restore(self, path=None, expect_partial=False):
        """Restore `path`, or the newest checkpoint that restores cleanly. Returns the path restored."""
        candidates = [path] if path else self.candidates()
        if not candidates:
            raise RunError(f"no checkpoint found in {self.directory}: train first, or check --output_dir")
        optimizers = (self.gan.g_optimizer, self.gan.d_optimizer)
        learning_rates = [float(np.asarray(o.learning_rate)) for o in optimizers]
        problems = []
        for candidate in candidates:
            problem = self._try_restore(candidate, expect_partial)
            if problem is None:
                for optimizer, lr in zip(optimizers, learning_rates):
                    optimizer.learning_rate = lr
                return candidate
            problems.append((os.path.basename(candidate), problem))
            if candidate != candidates[-1]:
                logging.warning("skipped checkpoint %s: it %s; trying an older one", candidate, problem)
        if all(problem.startswith("does not fit") for _, problem in problems):
            raise RunError(f"checkpoint {candidates[0]} {problems[0][1]}; was it written with other settings?")
        raise RunError(f"none of the checkpoints in {self.directory} can be restored ("
                       + "; ".join(f"{name} {problem}" for name, problem in problems)
                       + "). Restore the folder from a backup, or start a new run in another --output_dir.")

    def _try_restore(self, prefix, expect_partial):
        """None if `prefix` restored completely and finite, else why not (a phrase after 'it')."""
        try:
            status = self.checkpoint.restore(prefix)
            if expect_partial:
                status.expect_partial()
            else:
                status.assert_existing_objects_matched()
        except (AssertionError, ValueError) as e:
            return f"does not fit this model ({_first_line(e)})"
        except (tf.errors.OpError, IndexError, OSError) as e:
            return f"is damaged ({type(e).__name__}: {_first_line(e)})"
        bad = non_finite(self.gan)
        if bad:
            return f"holds {len(bad)} NaN or infinite variables (e.g. {bad[0]})"
        return None



def _absolute(directory, path):
    return path if os.path.isabs(path) else os.path.join(directory, path)


def _read_index(directory):
    """The index file's CheckpointState if it is readable and names an existing checkpoint, else None.
    Parsed here rather than by tf.train.get_checkpoint_state, which logs a garbled file's bytes."""
    path = os.path.join(directory, "checkpoint")
    if not os.path.isfile(path):
        return None
    state = CheckpointState()
    try:
        with open(path, encoding="utf-8") as f:
            text_format.Merge(f.read(), state)
    except (OSError, UnicodeDecodeError, text_format.ParseError):
        return None
    if not state.model_checkpoint_path or not os.path.exists(
            _absolute(directory, state.model_checkpoint_path) + ".index"):
        return None
    return state


def repair_index(paths):
    """Rewrite an index file that is unreadable or names a checkpoint that is not there, from the
    ckpt-N files on disk (training only: it writes). Returns True if it was rewritten."""
    directory = paths.checkpoints
    found = checkpoints_on_disk(directory)
    if not found or _read_index(directory) is not None:
        return False
    oldest_first = found[::-1]
    stamps = [os.path.getmtime(p + ".index") for p in oldest_first]
    checkpoint_management.update_checkpoint_state_internal(
        directory, found[0], all_model_checkpoint_paths=oldest_first, save_relative_paths=True,
        all_model_checkpoint_timestamps=stamps, last_preserved_timestamp=min(stamps) - 1.0)
    what = "unreadable" if os.path.exists(os.path.join(directory, "checkpoint")) else "missing"
    logging.warning("the checkpoint index %s was %s or named no checkpoint: rebuilt it from the files there (%s)",
                    os.path.join(directory, "checkpoint"), what, ", ".join(os.path.basename(p) for p in found))
    return True


def clean_leftovers(paths):
    """Delete what a save killed part-way leaves behind: ckpt-N_temp/ folders, index and JSON
    temporaries, data files whose index is gone (a killed rotation), and an index file when no
    checkpoint is left (it names checkpoints that are gone). Training only, under the lock. Returns
    the deleted paths."""
    deleted = _delete_checkpoint_files(paths, leftovers_only=True)
    index = os.path.join(paths.checkpoints, "checkpoint")
    if not checkpoints_on_disk(paths.checkpoints) and os.path.isfile(index) and not os.path.islink(index):
        os.remove(index)
        deleted.append(index)
    if deleted:
        logging.info("removed the leftovers of an interrupted save: %s",
                     ", ".join(os.path.relpath(p, paths.root) for p in deleted))
    return deleted


def _delete_checkpoint_files(paths, leftovers_only):
    """This project's own files in checkpoints/ (and logs/history.json): all of them, or only the
    leftovers of an interrupted save. Links are never followed nor deleted."""
    directory = paths.checkpoints
    if not os.path.isdir(directory) or os.path.islink(directory):
        return []
    entries = list(os.scandir(directory))
    indexed = {m.group(1) for m in (_CKPT_INDEX.match(e.name) for e in entries) if m}
    deleted = []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False) and _CKPT_TEMP_DIR.match(entry.name):
            parts = [p for p in os.scandir(entry.path) if p.is_file(follow_symlinks=False)
                     and _CKPT_TEMP_PART.match(p.name)]
            for part in parts:
                os.remove(part.path)
            try:
                os.rmdir(entry.path)
                deleted.append(entry.path)
            except OSError:
                deleted += [p.path for p in parts]
                logging.warning("left %s in place: it holds files this program did not write", entry.path)
            continue
        if not entry.is_file(follow_symlinks=False):
            continue
        data_match = _CKPT_DATA.match(entry.name)
        leftover = (_INDEX_TEMP.match(entry.name) or _JSON_TEMP.match(entry.name)
                    or (data_match and data_match.group(1) not in indexed))
        own = (leftover or _CKPT_INDEX.match(entry.name) or data_match
               or entry.name in ("checkpoint", CONFIG_FILE, DATA_FILE, RUN_FILE, labels.LABEL_FILE))
        if leftover or (own and not leftovers_only):
            os.remove(entry.path)
            deleted.append(entry.path)
    best = os.path.join(directory, BEST_FOLDER)
    if not leftovers_only and os.path.isdir(best) and not os.path.islink(best):
        for entry in os.scandir(best):
            if entry.is_file(follow_symlinks=False) and (entry.name == BEST_FILE or _CKPT_INDEX.match(entry.name)
                                                         or _CKPT_DATA.match(entry.name)):
                os.remove(entry.path)
                deleted.append(entry.path)
        if not os.listdir(best):
            os.rmdir(best)
    logs = paths.logs
    if os.path.isdir(logs) and not os.path.islink(logs):
        for entry in os.scandir(logs):
            if entry.is_file(follow_symlinks=False) and (
                    _JSON_TEMP.match(entry.name) or (entry.name == HISTORY_FILE and not leftovers_only)):
                os.remove(entry.path)
                deleted.append(entry.path)
    return sorted(deleted)


def read_best(directory):
    """{"kimg", "metric", "score", "step", "checkpoint" (its prefix)} of the run's best checkpoint, or None."""
    path = os.path.join(directory, BEST_FOLDER, BEST_FILE)
    try:
        with open(path) as f:
            best = json.load(f)
    except (OSError, ValueError):
        return None
    if "metric" not in best:                    # written before --best_by: chosen by this project's SWD
        best["metric"], best["score"] = "swd_avg", best.pop("swd_avg")
    best["checkpoint"] = os.path.join(directory, BEST_FOLDER, best["checkpoint"])
    return best if os.path.exists(best["checkpoint"] + ".index") else None


def choose_checkpoint(paths, which="auto"):
    """The checkpoint prefix that `--checkpoint` names: 'best' (lowest held-out SWD, kept by
    --eval_kimg), 'latest', a step number, or a checkpoint path; 'auto' is best where the run kept
    one, else latest (None: let the Checkpointer take the newest that loads)."""
    which = str(which)
    best = read_best(paths.checkpoints)
    if which == "auto":
        return best["checkpoint"] if best else None
    if which == "latest":
        return None
    if which == "best":
        if best is None:
            raise RunError(f"{paths.checkpoints} has no best checkpoint (it is kept only by runs trained with "
                           f"--eval_kimg); use --checkpoint latest")
        return best["checkpoint"]
    prefix = os.path.join(paths.checkpoints, f"ckpt-{which}") if which.isdigit() else which
    prefix = prefix[:-len(".index")] if prefix.endswith(".index") else prefix
    if not os.path.exists(prefix + ".index"):
        steps = [os.path.basename(p)[5:] for p in checkpoints_on_disk(paths.checkpoints)]
        raise RunError(f"no checkpoint {prefix}: --checkpoint takes best, latest, a step ({', '.join(steps) or 'none here'}) "
                       f"or the path of a checkpoint (its prefix, without .index)")
    return prefix



def _checkpoint_key(name):
    """The key Checkpointer stores variable `name` under (TensorFlow escapes '.' and '/')."""
    return "model/" + name.replace(".", "..").replace("/", ".S") + "/.ATTRIBUTES/VARIABLE_VALUE"


def candidates(directory):
    """Checkpoint prefixes in `directory` to try, best first: the index's latest, then the others on
    disk by step."""
    listed = []
    state = _read_index(directory)
    if state is not None:
        listed.append(os.path.normpath(_absolute(directory, state.model_checkpoint_path)))
    for prefix in checkpoints_on_disk(directory):
        if os.path.normpath(prefix) not in listed:
            listed.append(os.path.normpath(prefix))
    return [p for p in listed if os.path.exists(p + ".index")]


def read_variables(prefix, variables, advice):
    """Assign `variables` ({name: variable}, named as `named_variables` names them) from the checkpoint
    `prefix`. Every one is checked first (saved there, same shape, finite), so a problem is one
    RunError naming the variable and ending in `advice`, and nothing is assigned."""
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as e:
        raise RunError(f"cannot read {prefix} ({_first_line(e)})") from None
    saved = reader.get_variable_to_shape_map()
    for name, v in variables.items():
        key = _checkpoint_key(name)
        if key not in saved:
            raise RunError(f"{prefix} has no layer {name}: {advice}")
        if tuple(saved[key]) != tuple(v.shape):
            raise RunError(f"layer {name} is {tuple(saved[key])} in {prefix} but {tuple(v.shape)} here: {advice}")
    try:
        values = {name: reader.get_tensor(_checkpoint_key(name)) for name in variables}
    except (tf.errors.OpError, IndexError, OSError) as e:
        raise RunError(f"{prefix} is damaged ({type(e).__name__}: {_first_line(e)})") from None
    bad = [name for name, x in values.items() if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all()]
    if bad:
        raise RunError(f"{prefix} holds NaN or infinite values ({', '.join(bad[:3])}): {advice}")
    for name, v in variables.items():
        v.assign(values[name])
