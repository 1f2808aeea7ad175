"""Writing files so that a killed process never leaves a half-written one.

Lives here: `staged` (write under a temporary name in the same folder, then rename over the
target) and `write_bytes` / `write_json` built on it. Every file this project writes besides
TensorFlow's own checkpoint files goes through it; a killed write leaves only `<name>.tmp<pid>`,
which checkpointing.clean_leftovers and --clear remove. Not here: what is written (pictures: visualize.py,
the data cache: data.py, run records: runs.py and checkpointing.py).
"""

import contextlib
import json
import os


@contextlib.contextmanager
def staged(path, suffix=""):
    """Yields a temporary path beside `path` (ending in `suffix`, for writers that check the
    extension); on leaving the block it is renamed to `path`, or removed if the block raised."""
    tmp = f"{path}.tmp{os.getpid()}{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes(path, data):
    with staged(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_json(path, value):
    """A JSON report or history, sorted and indented for people to read."""
    write_bytes(path, json.dumps(value, indent=2, sort_keys=True).encode())
