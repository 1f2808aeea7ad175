"""Opening a trained generator (inference.py), the one way: from a checkpoint only the EMA generator
(and the discriminator when asked) is built and restored, equal to the training model's, never the
training model or its optimizers; a damaged newest checkpoint falls back to an older one; a
checkpoint of other settings is one clear error; an export opens to the same images."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

import atomic
import checkpointing
import gan as gan_module
import inference
import runs
import sampling
from config import Config
from gan import build_gan

TINY = Config(resolution=8, channel_base=128, channel_max=16, z_dim=8, w_dim=8, mapping_layers=2,
              batch_size=4, mbstd_group_size=2, d_reg_interval=2, g_reg_interval=2)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder with checkpoints at steps 1 and 2 of a tiny GAN, and the GAN as it was at step 2."""
    tf.keras.utils.set_random_seed(1)
    gan = build_gan(TINY)
    paths = runs.Paths(str(tmp_path_factory.mktemp("run")))
    paths.make("checkpoints")
    atomic.write_json(paths.config_file, dataclasses.asdict(TINY))
    checkpointer = checkpointing.Checkpointer(gan, paths.checkpoints)
    for step in (1, 2):
        gan.train_logs(tf.random.stateless_uniform([4, 8, 8, 1], [0, step], -1.0, 1.0))
        checkpointer.save(step)
    return paths, gan


def test_a_checkpoint_opens_to_the_ema_generator_alone(run, monkeypatch):
    paths, gan = run
    monkeypatch.setattr(gan_module, "StyleGAN2", None)          # building the training model would fail
    trained = inference.open_generator(paths.root)
    assert trained.discriminator is None and trained.spec is None and trained.config == TINY
    assert trained.images_seen == int(gan.images_seen.numpy()) == 8 and trained.source.endswith("ckpt-2")
    assert not trained.generator.trainable
    ours, theirs = trained.generator.weights, gan.generator_ema.weights
    assert [v.path for v in ours] == [v.path for v in theirs] and len(ours) > 30
    for mine, saved in zip(ours, theirs):
        np.testing.assert_array_equal(mine.numpy(), saved.numpy(), err_msg=mine.path)
    assert any(not np.array_equal(g.numpy(), e.numpy()) for g, e in zip(gan.generator.weights, theirs))  # EMA, not G
    np.testing.assert_array_equal(sampling.synthesize(trained.generator, [3, 4]),
                                  sampling.synthesize(gan.generator_ema, [3, 4]))


def test_the_discriminator_is_restored_only_when_asked(run):
    paths, gan = run
    trained = inference.open_generator(paths.root, checkpoint="1", discriminator=True)
    assert trained.images_seen == 4 and trained.source.endswith("ckpt-1")
    step1 = tf.train.load_checkpoint(trained.source)
    name = f"discriminator/{trained.discriminator.weights[0].path}"
    np.testing.assert_array_equal(trained.discriminator.weights[0].numpy(),
                                  step1.get_tensor(checkpointing._checkpoint_key(name)))
    assert not np.array_equal(trained.discriminator.weights[0].numpy(), gan.discriminator.weights[0].numpy())


def test_a_damaged_newest_checkpoint_falls_back_to_the_older_one(run, tmp_path):
    paths, _ = run
    copy = runs.Paths(str(tmp_path / "copy"))
    copy.make("checkpoints")
    for name in os.listdir(paths.checkpoints):
        with open(os.path.join(paths.checkpoints, name), "rb") as f:
            data = f.read()
        if name.startswith("ckpt-2.data"):
            data = data[:16]                                            # a truncated newest checkpoint
        with open(os.path.join(copy.checkpoints, name), "wb") as f:
            f.write(data)
    trained = inference.open_generator(copy.root, checkpoint="latest")
    assert trained.source.endswith("ckpt-1") and trained.images_seen == 4
    with pytest.raises(runs.RunError, match="ckpt-2"):
        inference.open_generator(copy.root, checkpoint="2")          # named explicitly: no fall-back


def test_a_checkpoint_of_other_settings_names_the_layer(run, tmp_path):
    paths, _ = run
    other = runs.Paths(str(tmp_path / "other"))
    other.make("checkpoints")
    for name in os.listdir(paths.checkpoints):
        if name.startswith("ckpt-"):
            os.link(os.path.join(paths.checkpoints, name), os.path.join(other.checkpoints, name))
    atomic.write_json(other.config_file, dataclasses.asdict(TINY.replace(channel_max=32)))
    with pytest.raises(runs.RunError, match=r"layer generator_ema/generator/.* is \(.*16.*\) in .*ckpt-2 but "
                                            r"\(.*32.*\) here: was it written with other settings"):
        inference.open_generator(other.root, checkpoint="2")
    with pytest.raises(runs.RunError, match="no checkpoint to load"):
        inference.open_generator(str(tmp_path / "empty"))


def test_an_export_opens_to_the_same_images(run, tmp_path):
    paths, _ = run
    trained = inference.open_generator(paths.root)
    path = inference.export(trained.generator, str(tmp_path))
    exported = inference.open_generator(exported=path, discriminator=True)
    assert exported.images_seen is None and exported.discriminator is None and exported.source == path
    np.testing.assert_allclose(sampling.synthesize(exported.generator, [5]), sampling.synthesize(trained.generator, [5]),
                               atol=1e-6)
