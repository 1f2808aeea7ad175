"""The run folder: what lives where, and what keeps a run from being lost.

Lives here: `Paths` (the layout of an --output_dir), the saved configuration and the rules for
changing it on resume, `Checkpointer` (atomic checkpoints of every variable; never a non-finite
one; restore falls back to the newest checkpoint that loads), the lock that keeps two trainings
out of one folder, the refusal to start a new run over an old one, the repair of what a killed
save leaves behind (temporary files, an unreadable index), `load_for_inference` and `--clear`.
Not here: the training loop and its ticks (training.py), flags (driver.py), the model (gan.py).

Every problem a user can cause or meet here (a folder that is a file, a run already in the
folder, another training holding the lock, a damaged checkpoint) is a `RunError` whose message
says what is wrong and what to do.
"""

import dataclasses
import datetime
import errno
import hashlib
import json
import os
import re
import shlex
import signal
import socket
import threading
import time

import numpy as np
import tensorflow as tf
from absl import logging
from google.protobuf import text_format
from tensorflow.python.checkpoint import checkpoint_management
from tensorflow.python.training.checkpoint_state_pb2 import CheckpointState

import atomic
import data
import labels
from config import Config
from gan import build_gan

CONFIG_FILE = "config.json"
DATA_FILE = "data.json"      # the data the run trains on (DATA_SETTINGS), so that a resume uses it again
HISTORY_FILE = "history.json"
LOCK_FILE = ".lock"
BEST_FOLDER, BEST_FILE = "best", "best.json"     # checkpoints/best/: the lowest held-out SWD so far
FRESH_LOCK_SECONDS = 10.0   # an unreadable lock younger than this is one being written, not a stale one
# Settings that may change when a run is resumed: they change neither the networks' shapes nor
# what the checkpointed state means (run options such as --tick_kimg and --eval_* change freely).
RESUMABLE = ("kimg", "g_lr", "d_lr", "r1_gamma", "ada_target")
# The run options that say what a run trains on; saved in DATA_FILE (a conditional run's label table
# and --labels_missing are in its labels.json).
DATA_SETTINGS = ("data_dir", "splits", "exclude_subjects")

# The files TensorFlow's CheckpointManager writes (and leaves behind when killed mid-save).
_CKPT_INDEX = re.compile(r"^ckpt-(\d+)\.index$")
_CKPT_DATA = re.compile(r"^ckpt-(\d+)\.data-\d{5}-of-\d{5}$")
_CKPT_TEMP_DIR = re.compile(r"^ckpt-\d+_temp$")               # SaveV2 writes here, MergeV2 renames
# The images training (samples/) and generate and project (generated/) write: a user's own are kept.
_OWN_IMAGE = re.compile(r"^((grid_\d{8}|latest|losses|seed\d{4,}|grid|style_mixing|sweep_\w+|interpolation|projected_.+)"
                        r"\.png|interpolation\.gif)$")
_CKPT_TEMP_PART = re.compile(r"^part-\d{5}-of-\d{5}\.(index|data-\d{5}-of-\d{5})$")
_INDEX_TEMP = re.compile(r"^checkpoint\.tmp[0-9a-f]+$")       # the index, written then renamed
_JSON_TEMP = re.compile(r"^(config|history|data)\.json\.tmp\d+$")  # atomic.write_json's temporary names


class RunError(RuntimeError):
    """A problem the user can fix (bad checkpoint, conflicting flags, busy folder); the message says how."""


class NonFiniteStateError(RunError):
    """The model or an optimizer holds NaN or infinite values: the run diverged. Nothing was saved."""


@dataclasses.dataclass(frozen=True)
class Paths:
    """Everything a run writes lives under `root`, in these folders."""
    root: str

    def __getattr__(self, name):
        folders = {"checkpoints": "checkpoints", "samples": "samples", "cache": "cache", "logs": "logs",
                   "generated": "generated", "exports": "exports", "evaluation": "evaluation"}
        if name not in folders:
            raise AttributeError(name)
        return os.path.join(self.root, folders[name])

    @property
    def config_file(self):
        return os.path.join(self.checkpoints, CONFIG_FILE)

    @property
    def data_file(self):
        return os.path.join(self.checkpoints, DATA_FILE)

    @property
    def labels_file(self):
        """A conditional run's label definition (labels.LabelSpec), beside its configuration."""
        return os.path.join(self.checkpoints, labels.LABEL_FILE)

    @property
    def history_file(self):
        return os.path.join(self.logs, HISTORY_FILE)

    @property
    def lock_file(self):
        return os.path.join(self.root, LOCK_FILE)

    def make(self, *names):
        """Create the run folder and these sub-folders; a path that is a file or cannot be written is
        a `RunError` naming it."""
        for path in [self.root] + [getattr(self, name) for name in names]:
            try:
                os.makedirs(path, exist_ok=True)
            except OSError as e:
                raise RunError(folder_problem(path, e)) from None


def folder_problem(path, error, flag="--output_dir"):
    """One sentence for an OSError met while creating or writing in `path`: what and what to do
    (`flag` names the folder the user chose)."""
    blocker = next((p for p in _ancestors(path) if os.path.lexists(p) and not os.path.isdir(p)), None)
    if isinstance(error, (FileExistsError, NotADirectoryError)) or error.errno in (errno.EEXIST, errno.ENOTDIR):
        if blocker is not None:
            return (f"cannot create the folder {path}: {blocker} is a file, not a folder; move or delete it, "
                    f"or choose another {flag}")
    if isinstance(error, PermissionError) or error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write in {path} ({error.strerror or error}): make it writable or choose another {flag}"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"cannot write {path} ({error.strerror}): free some space or choose another {flag}"
    return f"cannot use {path} ({error.strerror or error}); check the path or choose another {flag}"


def _ancestors(path):
    path = os.path.abspath(path)
    while True:
        yield path
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


# ---------------------------------------------------------------------------------------------
# The lock: one training per folder
# ---------------------------------------------------------------------------------------------

class RunLock:
    """`<output_dir>/.lock`, held by a training for its whole run: JSON {pid, host, started}.

    Created atomically (O_CREAT | O_EXCL), so of two trainings started together exactly one gets
    it. A lock whose process is gone (same host, pid not running) is stale and taken over with a
    warning; a lock from another host cannot be checked and is refused with how to remove it.
    Released on leaving the `with` block, whatever the reason; SIGTERM outside the training steps
    (which stop cleanly on their own, see training.StopFlag) exits through that block too.
    Generating, exporting and evaluating only read a run and never take it.
    """

    def __init__(self, paths):
        self.paths = paths
        self.path = paths.lock_file
        self.owned = False
        self.previous_sigterm = None

    def __enter__(self):
        self.acquire()
        if threading.current_thread() is threading.main_thread():
            self.previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        return self

    def __exit__(self, *exc):
        if self.previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self.previous_sigterm)
        self.release()

    def acquire(self):
        mine = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now().isoformat(timespec="seconds")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = _read_lock(self.path)
                self._refuse_unless_stale(holder)
                if self._move_aside(holder):
                    logging.warning("took over the lock %s left by a training that is no longer running (%s)",
                                    self.path, _describe_holder(holder))
                continue
            except OSError as e:
                raise RunError(folder_problem(self.paths.root, e)) from None
            with os.fdopen(fd, "w") as f:
                json.dump(mine, f)
            self.owned = True
            return
        raise RunError(f"could not take the lock {self.path}: other trainings keep taking it; is another "
                       f"training starting in {self.paths.root}?")

    def _refuse_unless_stale(self, holder):
        if holder is None:
            # Unreadable: either a training is writing it this instant, or it was cut off long ago.
            try:
                fresh = time.time() - os.path.getmtime(self.path) < FRESH_LOCK_SECONDS
            except OSError:
                fresh = False
            if fresh:
                raise RunError(f"another training is starting in {self.paths.root} (its lock {self.path} is being "
                               f"written); wait for it, or use another --output_dir")
            return
        if holder.get("host") != socket.gethostname():
            raise RunError(f"{self.paths.root} is locked by a training on host {holder.get('host')} "
                           f"({_describe_holder(holder)}); if that training is no longer running, delete "
                           f"{self.path} and start again")
        if _alive(holder.get("pid")):
            raise RunError(f"{self.paths.root} is in use by another training ({_describe_holder(holder)}): wait "
                           f"for it to finish or stop it, or use another --output_dir (if no such training is "
                           f"running, delete {self.path})")

    def _move_aside(self, holder):
        """Remove a stale lock. Renaming is atomic, so of two processes taking over the same lock one
        wins; the loser, or one who finds that the file changed meanwhile, tries again from the start."""
        aside = f"{self.path}.stale-{os.getpid()}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        moved = _read_lock(aside)
        if moved != holder:                # a new holder came in between: put its lock back
            try:
                os.link(aside, self.path)
            except OSError:
                pass
            os.remove(aside)
            return False
        os.remove(aside)
        return True

    def release(self):
        if self.owned and (_read_lock(self.path) or {}).get("pid") == os.getpid():
            os.remove(self.path)
        self.owned = False


def _exit_on_sigterm(signum, frame):
    logging.info("SIGTERM received: stopping")
    raise SystemExit(128 + signum)


def _read_lock(path):
    try:
        with open(path) as f:
            holder = json.load(f)
        return holder if isinstance(holder, dict) else None
    except (OSError, ValueError):
        return None


def _describe_holder(holder):
    if not holder:
        return "unreadable lock file"
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"


def _alive(pid):
    """Whether process `pid` runs on this host (a zombie does not count; our own pid is a reused one)."""
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# ---------------------------------------------------------------------------------------------
# The saved configuration and what may change on resume
# ---------------------------------------------------------------------------------------------

def checkpoints_on_disk(directory):
    """Prefixes of the checkpoints whose index file is in `directory`, newest (highest step) first."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    steps = sorted((int(m.group(1)) for m in map(_CKPT_INDEX.match, names) if m), reverse=True)
    return [os.path.join(directory, f"ckpt-{step}") for step in steps]


def read_config(paths):
    path = paths.config_file
    if not os.path.exists(path):
        found = checkpoints_on_disk(paths.checkpoints)
        if found:
            names = ", ".join(os.path.basename(p) for p in found)
            raise RunError(
                f"{path} is missing, but {paths.checkpoints} holds checkpoints ({names}): config.json records the "
                f"settings they were trained with, which are needed to rebuild the networks. Put it back from a "
                f"backup or a copy of this run; or write it again with the run's settings (python driver.py "
                f"--output_dir SCRATCH <the run's flags> --kimg 0.001, then copy SCRATCH/checkpoints/config.json "
                f"here). Loading checks the networks' shapes against the checkpoint.")
        raise RunError(f"no checkpoint to load in {paths.checkpoints}: train first (python driver.py) "
                       f"or point --output_dir at the folder of an earlier run")
    try:
        with open(path) as f:
            return Config.from_dict(json.load(f))
    except (ValueError, TypeError) as e:
        raise RunError(f"{path} is not a configuration this version understands ({e})") from None


def resolve_resume_config(paths, requested, explicit):
    """The saved configuration with the explicitly given RESUMABLE settings applied, after checking
    that no other explicit setting contradicts it. Returns (config, changes) where changes maps
    each changed setting to [old, new] (R1 gamma as the value in effect)."""
    saved = read_config(paths)
    conflicts = [f"--{k}={getattr(requested, k)} (checkpoint: {getattr(saved, k)})"
                 for k in sorted(explicit) if k not in RESUMABLE and getattr(requested, k) != getattr(saved, k)]
    resumed = saved.replace(**{k: getattr(requested, k) for k in explicit if k in RESUMABLE})
    if "r1_gamma" in explicit:
        old, new = saved.resolved_r1_gamma, resumed.resolved_r1_gamma
        if old == 0.0 or new == 0.0:
            conflicts.append(f"--r1_gamma={requested.r1_gamma} (checkpoint: {old} with --loss={saved.loss}; R1 "
                             f"cannot be turned on or off in the middle of a run)")
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


def save_data(paths, options):
    """Record what the run trains on (DATA_SETTINGS of `options`; the folder as an absolute path)."""
    atomic.write_json(paths.data_file, {"data_dir": options.data_dir and os.path.abspath(options.data_dir),
                                        "splits": list(options.splits),
                                        "exclude_subjects": list(options.exclude_subjects)})


def resolve_run_data(paths, options, resume=True):
    """The run options with the run's own data (data.json) in place of every data setting the user
    did not type (`options.typed`); evaluation follows the saved --exclude_subjects unless
    --eval_subjects is typed. On a resume a typed value that differs from the saved one is refused
    with the saved one named (an evaluation may compare with other data). A saved folder that is
    gone is an error naming --data_dir; a typed --data_dir then takes its place. A run from before
    data.json keeps the options as given."""
    try:
        with open(paths.data_file) as f:
            saved = json.load(f)
        saved = {"data_dir": saved["data_dir"], "splits": tuple(saved["splits"]),
                 "exclude_subjects": tuple(saved["exclude_subjects"])}
    except FileNotFoundError:
        return options
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RunError(f"{paths.data_file} cannot be read ({_first_line(e)}); it records the data this run trains "
                       f"on: put it back from a copy of the run, or delete it and resume with the run's --data_dir, "
                       f"--splits and --exclude_subjects") from None
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
    overwrite their configuration and history: refuse, saying what is there and the ways on. (An
    index file left without any checkpoint is removed: it describes nothing.)"""
    found = checkpoints_on_disk(paths.checkpoints)
    if not found:
        index = os.path.join(paths.checkpoints, "checkpoint")
        if os.path.isfile(index) and not os.path.islink(index):
            os.remove(index)           # names checkpoints that are gone; the new run writes its own
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


def checkpoint_images(prefix):
    """Images seen by the checkpoint `prefix`, read from its files (None if they cannot be read)."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        key = next(k for k in reader.get_variable_to_shape_map() if k.endswith("images_seen/.ATTRIBUTES/VARIABLE_VALUE"))
        return int(reader.get_tensor(key))
    except (tf.errors.OpError, StopIteration, ValueError, IndexError):
        return None


def record_changes(paths, history, kimg, changes):
    """Append {"kimg": ..., "changed": {name: [old, new]}} to the history and write it at once, so the
    change is on record even if the run stops before its next tick."""
    if not changes:
        return
    history.append({"kimg": kimg, "changed": changes})
    atomic.write_json(paths.history_file, history)
    logging.info("changed on resume at %g kimg: %s", kimg,
                 ", ".join(f"{k} {old:g} -> {new:g}" for k, (old, new) in changes.items()))


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------

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
        """Checkpoint prefixes to try, best first: the index's latest, then the others on disk by step."""
        listed = []
        state = _read_index(self.directory)
        if state is not None:
            listed.append(os.path.normpath(_absolute(self.directory, state.model_checkpoint_path)))
        for prefix in checkpoints_on_disk(self.directory):
            if os.path.normpath(prefix) not in listed:
                listed.append(os.path.normpath(prefix))
        return [p for p in listed if os.path.exists(p + ".index")]

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


def _first_line(error):
    return (str(error).strip().splitlines() or ["no details"])[0][:200]


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
    temporaries, and data files whose index is gone (a killed rotation). Training only, under the
    lock. Returns the deleted paths."""
    deleted = _delete_checkpoint_files(paths, leftovers_only=True)
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
               or entry.name in ("checkpoint", CONFIG_FILE, DATA_FILE, labels.LABEL_FILE))
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


def load_for_inference(paths, checkpoint="auto"):
    """The EMA generator of the chosen checkpoint in `paths` (`choose_checkpoint`), and the
    configuration it was trained with. Only reads: no lock, no repair."""
    config = read_config(paths)
    gan = build_gan(config)
    Checkpointer(gan, paths.checkpoints).restore(choose_checkpoint(paths, checkpoint), expect_partial=True)
    return gan, config


INIT_OWNERS = ("generator", "generator_ema", "discriminator")   # what --init_from copies


def _checkpoint_key(name):
    """The key Checkpointer stores variable `name` under (TensorFlow escapes '.' and '/')."""
    return "model/" + name.replace(".", "..").replace("/", ".S") + "/.ATTRIBUTES/VARIABLE_VALUE"


def initialize_from(gan, source, checkpoint="auto"):
    """Copy the generator, EMA generator and discriminator weights (w_avg included) of a checkpoint
    of another run (`source`, its Paths; `choose_checkpoint` picks which) into `gan`; optimizers,
    counters, path-length mean and augmentation strength stay fresh. Every shape is checked first,
    so a mismatch is one RunError naming the layer and `gan` is left untouched. Returns the prefix."""
    prefix = choose_checkpoint(source, checkpoint)
    prefix = prefix or Checkpointer(gan, source.checkpoints).latest
    if prefix is None:
        raise RunError(f"--init_from {source.root}: no checkpoint in {source.checkpoints}; point it at the "
                       f"--output_dir of a trained run")
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as e:
        raise RunError(f"--init_from: cannot read {prefix} ({_first_line(e)})") from None
    saved = reader.get_variable_to_shape_map()
    wanted = {name: v for name, v in named_variables(gan).items() if name.split("/", 1)[0] in INIT_OWNERS}
    for name, v in wanted.items():
        key = _checkpoint_key(name)
        if key not in saved:
            raise RunError(f"--init_from: {prefix} has no layer {name}: the networks differ (for example "
                           f"--mapping_layers or --resolution); leave such flags out to take the source run's")
        if tuple(saved[key]) != tuple(v.shape):
            raise RunError(f"--init_from: layer {name} is {tuple(saved[key])} in {prefix} but {tuple(v.shape)} "
                           f"here; the networks must have the same shapes: leave out the size flags (resolution, "
                           f"channels, dims, mapping depth) to take the source run's")
    for name, v in wanted.items():
        v.assign(reader.get_tensor(_checkpoint_key(name)))
    return prefix


# ---------------------------------------------------------------------------------------------
# --clear
# ---------------------------------------------------------------------------------------------

CLEARABLE = ("samples", "cache", "both", "checkpoints")


def clear_outputs(paths, which, delete=True):
    """Delete the run's own outputs: 'samples' (images in samples/ and generated/), 'cache', 'both'
    (samples and cache) or 'checkpoints' (the run itself: ckpt-*, the index, config.json,
    logs/history.json and the leftovers of killed saves; taken under the run's lock, so never from
    under a running training). Returns what was deleted (delete=False: what would be, for samples
    and cache). Only files this project writes are touched, and links are never followed, so
    nothing outside the output folder can be lost."""
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
