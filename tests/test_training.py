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


def test_checkpoint_restores_every_variable_into_a_new_model(tmp_path):
    tf.keras.utils.set_random_seed(1)
    gan = build_gan(TINY)
    gan.train_logs(tf.random.stateless_uniform([4, 8, 8, 1], [0, 0], -1.0, 1.0))
    path = training.Checkpointer(gan, str(tmp_path)).save(1)
    tf.keras.utils.set_random_seed(2)
    fresh = build_gan(TINY)
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
