"""Test helper, not a test module: runs driver.py and kills it (os._exit, as abrupt as SIGKILL: no
clean-up, no `finally`) at one file operation of a checkpoint save.

    python -c "import fault_injection; fault_injection.main()" --output_dir=... <driver flags>
    python -c "import fault_injection; fault_injection.serve()"    # many runs: driver_cli.ForkServer

STYLEGAN_FAULT_AT="S:K" exits with status 9 just before the K-th file operation (from 1) of the S-th
checkpoint save of this process. STYLEGAN_FAULT_LOG=<file> appends "S:K name" for every operation
instead, to count them. The operations are every step of TensorFlow's CheckpointManager.save that
touches the disk: the two C++ ops (SaveV2 writes ckpt-N_temp/, MergeV2Checkpoints moves it into
place as ckpt-N.*) and the Python file_io calls that create the folder, write the index through a
temporary file and rename it, and delete rotated-out checkpoints. Only this helper reads the
variables; the program itself knows nothing of them.
"""

import functools
import json
import os
import runpy
import sys
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Innermost calls only, so that one operation on the disk counts once (rename calls rename_v2, ...).
FILE_IO = ("recursive_create_dir_v2", "write_string_to_file", "rename_v2", "delete_file_v2", "delete_recursively_v2")

_state = {"save": 0, "op": 0, "in_save": False}


def _operation(name, function):
    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        if _state["in_save"]:
            _state["op"] += 1
            where = f"{_state['save']}:{_state['op']}"
            if os.environ.get("STYLEGAN_FAULT_LOG"):
                with open(os.environ["STYLEGAN_FAULT_LOG"], "a") as f:
                    f.write(f"{where} {name}\n")
            if os.environ.get("STYLEGAN_FAULT_AT") == where:
                sys.stderr.flush()
                os._exit(9)
        return function(*args, **kwargs)
    return wrapped


def install():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, ROOT)
    from tensorflow.python.lib.io import file_io
    from tensorflow.python.ops import gen_io_ops, io_ops

    import checkpointing
    for name in FILE_IO:
        setattr(file_io, name, _operation(name, getattr(file_io, name)))
    io_ops.save_v2 = _operation("SaveV2", io_ops.save_v2)
    gen_io_ops.merge_v2_checkpoints = _operation("MergeV2Checkpoints", gen_io_ops.merge_v2_checkpoints)

    save = checkpointing.Checkpointer.save

    @functools.wraps(save)
    def counted_save(self, step):
        _state["save"] += 1
        _state["op"] = 0
        _state["in_save"] = True
        try:
            return save(self, step)
        finally:
            _state["in_save"] = False
    checkpointing.Checkpointer.save = counted_save


def main():
    install()
    driver = os.path.join(ROOT, "driver.py")
    sys.argv = [driver] + sys.argv[1:]
    runpy.run_path(driver, run_name="__main__")


def serve():
    """Run many driver.py processes cheaply: import TensorFlow once, then for each job read from stdin
    (one JSON line: {"argv": [...], "env": {...}, "log": path}) fork a child that runs driver.py with
    its stdout and stderr in `log`, print {"pid": its pid} at once (to signal it) and {"status": exit
    status, or minus the signal that ended it} when it ends. No TensorFlow op
    runs in this process, so each child starts the runtime itself, as a fresh process would; only
    the 5 s of imports are shared."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import absl.app  # noqa: F401
    import keras  # noqa: F401
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import nibabel  # noqa: F401
    import PIL.Image  # noqa: F401
    import tensorflow  # noqa: F401
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(job)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"status": os.waitstatus_to_exitcode(status)}), flush=True)


def _child(job):
    log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.environ.update(job["env"])
    import tensorflow as tf
    tf.config.run_functions_eagerly(True)     # as in driver_cli.run: see its module docstring
    code = 0
    try:
        sys.argv = ["driver.py"] + job["argv"]
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
