"""Checkpoints hold every variable (the EMA generator and optimizer moments included) and restore
into a freshly built model; a checkpoint that does not fit is one clear error."""

import numpy as np
import pytest
import tensorflow as tf

import training
from config import Config
from gan import build_gan

TINY = Config(resolution=8, channel_base=128, channel_max=16, z_dim=8, w_dim=8, mapping_layers=2,
              batch_size=4, mbstd_group_size=2, d_reg_interval=2, g_reg_interval=2)


def all_variables(gan):
    return list(training.named_variables(gan).values()) + gan.g_optimizer.variables + gan.d_optimizer.variables


def test_named_variables_cover_every_weight_once():
    gan = build_gan(TINY.replace(augment="ada"))
    named = training.named_variables(gan)
    assert len({id(v) for v in named.values()}) == len(named) == len({id(v) for v in gan.weights})
    assert any(k.startswith("generator_ema/generator/synthesis/b8_conv1") for k in named)
    assert any(k.startswith("augment/") for k in named)


@pytest.mark.parametrize("precision", ["float32", "float16"])   # float16: the loss scales too
def test_checkpoint_restores_every_variable_into_a_new_model(tmp_path, precision):
    tf.keras.utils.set_random_seed(1)
    gan = build_gan(TINY.replace(precision=precision))
    gan.train_logs(tf.random.stateless_uniform([4, 8, 8, 1], [0, 0], -1.0, 1.0))
    path = training.Checkpointer(gan, str(tmp_path)).save(1)
    tf.keras.utils.set_random_seed(2)
    fresh = build_gan(TINY.replace(precision=precision))
    if precision == "float16":
        fresh.d_optimizer.dynamic_scale.assign(1.0)
    before = [v.numpy().copy() for v in all_variables(fresh)]
    training.Checkpointer(fresh, str(tmp_path)).restore(path)
    changed = 0
    for saved, restored, old in zip(all_variables(gan), all_variables(fresh), before):
        np.testing.assert_array_equal(restored.numpy(), saved.numpy())
        changed += not np.array_equal(old, saved.numpy())
    assert changed > 50              # the fresh model really started elsewhere: EMA, moments, counters


def test_a_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    gan = build_gan(TINY)
    training.Checkpointer(gan, str(tmp_path)).save(1)
    other = build_gan(TINY.replace(channel_max=32))
    with pytest.raises(training.RunError, match="does not fit this model"):
        training.Checkpointer(other, str(tmp_path)).restore()


def test_checkpoints_move_between_one_device_and_mirrored_strategy(tmp_path, mirrored):
    """fit() under MirroredStrategy on two logical CPUs; its checkpoint restores without a strategy,
    and a single-device checkpoint restores under the strategy."""
    images = tf.random.stateless_uniform([8, 8, 8, 1], [0, 0], -1.0, 1.0)
    data = tf.data.Dataset.from_tensor_slices(images).batch(4, drop_remainder=True)
    tf.keras.utils.set_random_seed(1)
    distributed = build_gan(TINY, mirrored)
    distributed.fit(data, epochs=1, verbose=0, shuffle=False)
    assert int(distributed.images_seen.numpy()) == 8
    training.Checkpointer(distributed, str(tmp_path / "a")).save(2)

    single = build_gan(TINY)
    training.Checkpointer(single, str(tmp_path / "a")).restore()
    for a, b in zip(all_variables(distributed), all_variables(single)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    single.train_logs(images[:4])
    training.Checkpointer(single, str(tmp_path / "b")).save(3)
    back = build_gan(TINY, mirrored)
    training.Checkpointer(back, str(tmp_path / "b")).restore()
    assert int(back.images_seen.numpy()) == 12
    for a, b in zip(all_variables(single), all_variables(back)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
