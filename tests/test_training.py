"""The training loop in-process (training.py): how fit() calls are laid over ticks, that several steps
per execution give the very same weights and resume the same, and that the device is read once per
execution, never per step. The same loop through the real command line is in test_driver.py."""

import threading

import keras
import numpy as np
import pytest
from keras.src.utils import python_utils

import checkpointing
import runs
import training
from config import Config

TINY = Config(resolution=8, channel_base=128, channel_max=16, z_dim=8, w_dim=8, mapping_layers=2, batch_size=4,
              mbstd_group_size=2, d_reg_interval=2, g_reg_interval=2, kimg=0.032)   # 8 steps of 4 images
# For the loop's bookkeeping alone: no regularisers, whose passes are 2.5 of the 6 s that tracing a step takes.
PLAIN = TINY.replace(r1_gamma=0.0, pl_weight=0.0)


def train(out, config=TINY, **options):
    options = {"output_dir": str(out), "tick_kimg": 0.016, "progress": False, **options}  # ticks of 4 steps
    return training.train(config, training.RunOptions(**options), explicit=("kimg",))


def weights(gan):
    values = {k: v.numpy() for k, v in checkpointing.named_variables(gan).items()}
    for name, optimizer in (("g", gan.g_optimizer), ("d", gan.d_optimizer)):
        values.update({f"{name}_optimizer/{i}": v.numpy() for i, v in enumerate(optimizer.variables)})
    return values


def assert_identical(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not different, f"{len(different)} of {len(a)} variables differ, e.g. {different[:3]}"


def test_fit_plan_ends_every_call_on_a_tick_and_covers_each_step_once():
    assert training.fit_plan(0, 8, 4) == [(0, 2, 4)]                       # whole ticks share one call
    assert training.fit_plan(0, 10, 4) == [(0, 2, 4), (2, 3, 2)]           # the run ends inside a tick
    assert training.fit_plan(3, 12, 4) == [(0, 1, 1), (1, 3, 4)]           # resumed inside a tick
    assert training.fit_plan(5, 7, 4) == [(1, 2, 2)]                       # both at once
    assert training.fit_plan(7, 7, 4) == training.fit_plan(8, 8, 4) == []  # nothing left to train
    assert training.fit_plan(3, 10**12 + 1, 2) == [(1, 2, 1), (2, 5 * 10**11, 2), (5 * 10**11, 5 * 10**11 + 1, 1)]
    for done, total, tick in [(0, 37, 5), (13, 37, 5), (36, 37, 5), (0, 3, 16)]:
        plan = training.fit_plan(done, total, tick)
        steps = done
        for first, last, per_epoch in plan:
            for epoch in range(first, last):
                assert steps + per_epoch == min((epoch + 1) * tick, total)  # the call stops where the tick ends
                steps += per_epoch
        assert steps == total


def test_the_timed_steps_are_one_cycle_of_the_lazy_regularisers_in_use():
    default = Config()
    assert (default.d_reg_interval, default.g_reg_interval) == (16, 4)
    assert training.regularisation_cycle(default) == 16                        # R1 every 16, path length every 4
    assert training.regularisation_cycle(default.replace(r1_gamma=0.0)) == 4   # path length alone
    assert training.regularisation_cycle(default.replace(pl_weight=0.0)) == 16
    assert training.regularisation_cycle(default.replace(r1_gamma=0.0, pl_weight=0.0)) == 1
    assert training.regularisation_cycle(default.replace(loss="wgan-gp", n_critic=5, pl_weight=0.0)) == 1  # GP each D step
    assert training.regularisation_cycle(default.replace(loss="bce", g_reg_interval=8)) == 8   # bce has no R1


@pytest.fixture(scope="module")
def one_step_per_call(tmp_path_factory):
    return weights(train(tmp_path_factory.mktemp("spe1")))


def test_four_steps_per_execution_give_the_same_weights_bit_for_bit(one_step_per_call, tmp_path):
    assert_identical(weights(train(tmp_path, steps_per_execution=4)), one_step_per_call)


def test_a_run_with_four_steps_per_execution_resumes_to_the_same_weights(one_step_per_call, tmp_path):
    train(tmp_path, TINY.replace(kimg=0.016), steps_per_execution=4)             # stops after the first tick
    resumed = train(tmp_path, resume=True, steps_per_execution=4)
    assert int(resumed.images_seen.numpy()) == 32
    assert_identical(weights(resumed), one_step_per_call)


def test_resuming_between_executions_says_which_steps_per_execution_fits(tmp_path):
    train(tmp_path, PLAIN.replace(kimg=0.024))                                  # 6 steps
    with pytest.raises(runs.RunError, match="after step 6, .* --steps_per_execution=4; resume with "
                                            "--steps_per_execution=1 \\(or a divisor of 6\\)"):
        train(tmp_path, PLAIN, resume=True, steps_per_execution=4)
    assert int(train(tmp_path, PLAIN, resume=True, steps_per_execution=2).images_seen.numpy()) == 32


def test_the_loop_reads_the_device_once_per_execution_and_its_counters_once_per_tick(tmp_path, monkeypatch):
    """On the training thread, with 4 steps per execution: reads of model variables are the same for two
    ticks of 4 steps as for two ticks of 12, and Keras's conversions of the step logs grow by one per
    execution (4 steps), not per step."""
    counts = {"variables": 0, "logs": 0}
    main = threading.get_ident()
    numpy, pythonify = keras.Variable.numpy, python_utils.pythonify_logs

    def counted(kind, fn):
        def wrapper(value):
            counts[kind] += threading.get_ident() == main and value is not None    # logs are None before a step
            return fn(value)
        return wrapper

    monkeypatch.setattr(keras.Variable, "numpy", counted("variables", numpy))
    monkeypatch.setattr(python_utils, "pythonify_logs", counted("logs", pythonify))
    found = []
    for steps_per_tick in (4, 12):
        counts.update(variables=0, logs=0)
        train(tmp_path / str(steps_per_tick), PLAIN.replace(kimg=0.008 * steps_per_tick),
              tick_kimg=0.004 * steps_per_tick, steps_per_execution=4)
        found.append(dict(counts))
    assert found[1]["variables"] == found[0]["variables"]
    assert found[1]["logs"] - found[0]["logs"] == (24 - 8) // 4
