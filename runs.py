"""The run folder: what lives where, and the configuration saved in it.

Lives here: `Paths` (the layout of an --output_dir), `RunError` (every problem a user can cause or
meet with a run folder: its message says what is wrong and what to do), `folder_problem` (one
sentence for an OSError met in a folder the user chose), the checkpoint files on disk and
`read_config`. Not here: the lock (runlock.py), saving and restoring checkpoints (checkpointing.py),
resume, fine-tune and --clear (resume.py), opening a model for inference (inference.py).
"""

import dataclasses
import errno
import json
import os
import re

import labels
from config import Config


CONFIG_FILE = "config.json"
DATA_FILE = "data.json"      # the data the run trains on (DATA_SETTINGS), so that a resume uses it again
RUN_FILE = "run.json"        # how it ticks, keeps checkpoints and is evaluated (RUN_SETTINGS), likewise
HISTORY_FILE = "history.json"
LOCK_FILE = ".lock"

# The files TensorFlow's CheckpointManager writes (and leaves behind when killed mid-save).
_CKPT_INDEX = re.compile(r"^ckpt-(\d+)\.index$")


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
                   "generated": "generated", "exports": "exports", "evaluation": "evaluation", "encoder": "encoder"}
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
    def run_file(self):
        return os.path.join(self.checkpoints, RUN_FILE)

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



def _first_line(error):
    return (str(error).strip().splitlines() or ["no details"])[0][:200]
