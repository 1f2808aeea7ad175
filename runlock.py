"""The lock that keeps two trainings out of one run folder.

Lives here: `RunLock` (`<output_dir>/.lock`, taken atomically, a stale one taken over, SIGTERM
released through it). Not here: the folder's layout (runs.py), checkpoints (checkpointing.py).
"""

import datetime
import json
import os
import signal
import socket
import threading
import time

from absl import logging

from runs import RunError, folder_problem


FRESH_LOCK_SECONDS = 10.0   # an unreadable lock younger than this is one being written, not a stale one


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
