"""Helpers for the tests that run the real command line on a tiny model (8x8, 4 images a batch).
Not a test module.

Three ways to run `driver.py`, cheapest first:
- `run(out, *flags)`: `driver.main` in the test process, through absl's own `app.run` and the
  driver's flag parser, with every flag reset to its default first (`reset_flags`). Its stdout
  and stderr (the log) are captured and returned as a `Result`, like `subprocess.run`'s.
- `ForkServer`: a process that imports TensorFlow once and forks a child per run, for runs that
  need a process of their own (signals, a kill, a lock held by another live process).
- `command(out, *flags)`: the argv of a real `python driver.py`, for the few tests whose point is
  a separate interpreter (two cluster workers, the smoke run of the README's first command).

`run` and the fork server's children run TensorFlow functions eagerly: tracing a tiny training
step costs more than the four steps it runs (a tiny run in one process: 10.5-12.9 s traced,
4.3-4.7 s eager, AMD EPYC), and these tests check the program around the step (files, flags,
resume, signals). The traced step is tested where it is built (test_gan.py, test_training.py)
and by the real subprocesses, which trace it as a user's run does.
"""

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import select
import subprocess
import sys
import threading
import time

import keras
import tensorflow as tf
from absl import app
from absl import logging as absl_logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
TINY = ["--resolution=8", "--channel_base=128", "--channel_max=16", "--z_dim=8", "--w_dim=8",
        "--batch_size=4", "--tick_kimg=0.008"]
STEPS = 4  # --kimg=0.016 at batch 4
# A dry run times one cycle of the lazy regularisers: 16 eager steps at the defaults, 1 with these off.
QUICK_TIMING = ["--r1_gamma=0", "--pl_weight=0"]


@dataclasses.dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def reset_flags():
    """Every absl flag back to its default and marked as not typed, as in a fresh process (absl keeps
    the values of the last parse otherwise)."""
    import driver
    driver.FLAGS.unparse_flags()


def run(out, *args, expect=0):
    """`python driver.py --output_dir=out *args` in this process: the exit status, stdout and the log.
    TensorFlow functions run eagerly (see the module docstring)."""
    import driver
    reset_flags()
    tf.config.run_functions_eagerly(True)
    keras.backend.clear_session()            # layer names and the graph as a new process has them
    stdout, stderr = io.StringIO(), io.StringIO()
    handler = absl_logging.get_absl_handler().python_handler
    stream, handler.stream = handler.stream, stderr
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            app.run(driver.main, argv=["driver.py", f"--output_dir={out}", *args], flags_parser=driver.parse_flags)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        handler.stream = stream
        reset_flags()
        tf.config.run_functions_eagerly(False)
    result = Result(code, stdout.getvalue(), stderr.getvalue())
    assert result.returncode == expect, result.stderr[-3000:]
    return result


def command(out, *args):
    """The argv of a new `python driver.py` (out None: no --output_dir, the current folder)."""
    return [sys.executable, os.path.join(ROOT, "driver.py"), *([f"--output_dir={out}"] if out else []), *args]


def env():
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": ROOT}


class ForkServer:
    """driver.py runs in children forked from one server process that has imported TensorFlow once
    (tests/fault_injection.py's serve()): a run costs its own work, not a new interpreter's imports.
    One run at a time; `start` returns a handle to signal and wait for, `run` waits for it."""

    def __init__(self, folder, timeout=400):
        code = f"import sys; sys.path.insert(0, {HERE!r}); import fault_injection; fault_injection.serve()"
        self.server = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       env=env(), cwd=ROOT, bufsize=0)
        os.makedirs(folder, exist_ok=True)
        self.folder, self.timeout, self.jobs, self.pending, self.watchdog = folder, timeout, 0, b"", None

    def start(self, out, *args, env=None):
        if self.watchdog:
            self.watchdog.cancel()
        self.watchdog = threading.Timer(self.timeout, self.server.kill)   # a hung run ends the server, and the test
        self.watchdog.start()
        self.jobs += 1
        job = {"argv": [f"--output_dir={out}", *args], "log": os.path.join(self.folder, f"job{self.jobs}.log"),
               "env": env or {}}
        self.server.stdin.write((json.dumps(job) + "\n").encode())
        return Forked(self, self._reply(None)["pid"], job["log"])

    def run(self, out, *args, env=None, expect=0):
        child = self.start(out, *args, env=env)
        result = Result(child.wait(), "", child.log())
        assert result.returncode == expect, result.stderr[-3000:]
        return result

    def _reply(self, timeout):
        """The server's next JSON line, or None when none comes within `timeout` seconds."""
        while b"\n" not in self.pending:
            if not select.select([self.server.stdout], [], [], timeout)[0]:
                return None
            chunk = os.read(self.server.stdout.fileno(), 4096)
            assert chunk, "the fork server ended (its watchdog, or a crash)"
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def close(self):
        if self.watchdog:
            self.watchdog.cancel()
        self.server.stdin.close()
        self.server.wait(timeout=60)


class Forked:
    """One forked run: `pid`, `poll()`, `wait()`, `send_signal()` and `kill()` as a Popen's; its
    stdout and stderr go to one log file."""

    def __init__(self, server, pid, log_path):
        self.server, self.pid, self.log_path, self.returncode = server, pid, log_path, None

    def poll(self, timeout=0.0):
        if self.returncode is None:
            reply = self.server._reply(timeout)
            self.returncode = None if reply is None else reply["status"]
        return self.returncode

    def wait(self, timeout=300):
        assert self.poll(timeout) is not None, f"pid {self.pid} still running after {timeout} s"
        return self.returncode

    def send_signal(self, signum):
        os.kill(self.pid, signum)

    def kill(self):
        self.send_signal(9)

    def log(self):
        return open(self.log_path).read() if os.path.exists(self.log_path) else ""


def wait_for(predicate, process, timeout=300):
    """Poll `predicate` until it holds, failing if `process` (a Popen or a Forked) ends first."""
    start = time.time()
    while not predicate():
        assert process.poll() is None, process.log()[-3000:] if isinstance(process, Forked) else "process ended"
        assert time.time() - start < timeout, "timed out"
        time.sleep(0.002)


def latest_step(out):
    path = tf.train.latest_checkpoint(os.path.join(out, "checkpoints"))
    return int(path.rsplit("-", 1)[1]) if path else 0


def checkpoint_variables(out):
    """Every saved variable of the latest checkpoint in `out`, by name."""
    reader = tf.train.load_checkpoint(os.path.join(out, "checkpoints"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if "save_counter" not in name and "OBJECT_GRAPH" not in name}


def digest(folder):
    """{path relative to folder: sha256} of every file below `folder` (checkpoints/best/ included)."""
    files = [os.path.relpath(os.path.join(root, name), folder) for root, _, names in os.walk(folder) for name in names]
    return {name: hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest() for name in sorted(files)}
