"""Helpers for the tests that run the real command line (`python driver.py`) as a subprocess on a
tiny model (8x8, 4 images a batch): test_driver.py and test_safety.py. Not a test module."""

import hashlib
import os
import subprocess
import sys

import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--resolution=8", "--channel_base=128", "--channel_max=16", "--z_dim=8", "--w_dim=8",
        "--batch_size=4", "--tick_kimg=0.008"]
STEPS = 4  # --kimg=0.016 at batch 4


def command(out, *args):
    return [sys.executable, os.path.join(ROOT, "driver.py"), f"--output_dir={out}", *args]


def env():
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": ROOT}


def run(out, *args, expect=0):
    result = subprocess.run(command(out, *args), capture_output=True, text=True, timeout=600, env=env(),
                            stdin=subprocess.DEVNULL)
    assert result.returncode == expect, result.stderr[-3000:]
    if expect == 0:
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


def checkpoint_variables(out):
    """Every saved variable of the latest checkpoint in `out`, by name."""
    reader = tf.train.load_checkpoint(os.path.join(out, "checkpoints"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if "save_counter" not in name and "OBJECT_GRAPH" not in name}


def digest(folder):
    """{path relative to folder: sha256} of every file below `folder` (checkpoints/best/ included)."""
    files = [os.path.relpath(os.path.join(root, name), folder) for root, _, names in os.walk(folder) for name in names]
    return {name: hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest() for name in sorted(files)}
