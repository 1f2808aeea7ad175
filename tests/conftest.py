"""Shared pytest setup: CPU only, quiet TensorFlow, fixed seeds, two logical CPUs for strategy tests."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices so MirroredStrategy can be tested without a GPU. Must happen before
# TensorFlow initialises its devices, i.e. before any op runs.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

# Grappler's graph rewrites pay off for long runs, not for the tiny graphs a test runs once or twice.
tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})

SHARED_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")


@pytest.fixture(autouse=True)
def _seed_and_policy():
    """Fixed seeds before each test; float32 again after it, whatever precision the test set. A test
    of the traced step must not run eagerly because a command-line run before it left TensorFlow so."""
    assert not tf.config.functions_run_eagerly(), "a previous test left tf.config.run_functions_eagerly on"
    keras.utils.set_random_seed(0)
    np.random.seed(0)
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="session")
def mirrored():
    """One MirroredStrategy over the two logical CPUs for the whole session: several strategies in one
    process can hand out the same collective instance keys and abort each other's all-reduces."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture(scope="session")
def eval_slices(tmp_path_factory):
    """A folder of 32 phantom slices (PNG, 32x32) to evaluate tiny runs against: the built-in default
    reference is 2,048 slices, and its SWD alone took 18 s of a 29 s tiny run."""
    import phantom
    from PIL import Image
    folder = tmp_path_factory.mktemp("eval_slices")
    for i, image in enumerate(phantom.synthetic_slices(32, 32, seed=1)):
        Image.fromarray(image).save(folder / f"case_{i:03d}_slice_0.png")
    return str(folder)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, eval_slices):
    """One tiny run through the command line (in this process): STEPS steps, two ticks (ckpt-2 and
    ckpt-4), SWD at the end, on the built-in synthetic data. Shared by every test that needs a trained
    run: copy it to change it."""
    from driver_cli import TINY, run
    out = str(tmp_path_factory.mktemp("run"))
    result = run(out, *TINY, "--kimg=0.016", "--eval_kimg=0.016", "--eval_images=16", f"--eval_dir={eval_slices}")
    return out, result


@pytest.fixture(scope="session")
def fork_server(tmp_path_factory):
    """One driver_cli.ForkServer for the session's runs that need a process of their own."""
    from driver_cli import ForkServer
    server = ForkServer(str(tmp_path_factory.mktemp("forked")))
    yield server
    server.close()
