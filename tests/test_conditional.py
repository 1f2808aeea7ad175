"""Conditional generation end to end: the label embedding and the projection discriminator against
NumPy, the labelled data stream, a conditional training step, and a conditional run's labels through
checkpoint, resume, export, generation and evaluation. Tiny shapes, CPU, data written into tmp_path."""

import json
import math
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from driver_cli import digest
from driver_cli import run as cli

import checkpointing
import evaluation
import inference
import labels
import runs
import sampling
import training
from config import Config
from data import make_dataset
from gan import build_gan, make_discriminator, make_generator

TINY = Config(resolution=8, channel_base=128, channel_max=16, z_dim=8, w_dim=8, mapping_layers=2, batch_size=4,
              mbstd_group_size=2, d_reg_interval=2, g_reg_interval=2, kimg=0.016)   # 4 steps of 4 images
RNG = np.random.default_rng(0)


def randomise(network):
    """Every weight random, so zero-initialised biases cannot hide a mistake."""
    for v in network.weights:
        v.assign(RNG.standard_normal(v.shape).astype(np.float32))


def dense(layer, x, lrelu):
    """The reference's FullyConnectedLayer: x @ (W * lr / sqrt(fan_in)) + b * lr, lrelu(0.2) * sqrt(2)."""
    lr = layer.lr_multiplier
    y = x @ (layer.kernel.numpy() * lr / math.sqrt(x.shape[-1])) + layer.bias.numpy() * lr
    return np.where(y >= 0, y, 0.2 * y) * math.sqrt(2) if lrelu else y


def normalize_2nd_moment(x):
    return x / np.sqrt(np.mean(x ** 2, axis=-1, keepdims=True) + 1e-8)


def mapping(network, z, c):
    """The reference MappingNetwork.forward: concat(norm(z), norm(embed(c))), then the fc layers;
    here c has an always-1 entry appended before the embedding (generator.MappingNetwork)."""
    parts = [normalize_2nd_moment(z)] if z is not None else []
    c = np.concatenate([c, np.ones([len(c), 1], c.dtype)], axis=1)
    parts.append(normalize_2nd_moment(dense(network.embed, c, lrelu=False)))
    x = np.concatenate(parts, axis=1)
    for layer in network.dense:
        x = dense(layer, x, lrelu=True)
    return x


def test_the_label_embedding_joins_z_in_the_mapping_network_as_the_reference():
    g = make_generator(TINY.replace(c_dim=3))
    randomise(g.mapping)
    z, c = RNG.standard_normal([5, 8]).astype(np.float32), RNG.standard_normal([5, 3]).astype(np.float32)
    assert g.mapping.embed.kernel.shape == (4, 8) and g.mapping.dense[0].kernel.shape == (16, 8)
    np.testing.assert_allclose(g.mapping(z, c).numpy(), mapping(g.mapping, z, c), rtol=1e-4, atol=1e-5)
    fresh = make_generator(TINY.replace(c_dim=3))                     # weights at their initial scales
    images = [fresh(z, row[None].repeat(5, 0), noise_mode="const").numpy() for row in np.eye(3, dtype=np.float32)]
    assert np.abs(images[0] - images[1]).mean() > 0.05 * np.abs(images[0]).mean()     # the label changes the image


def test_a_continuous_label_keeps_its_value_through_the_normalised_embedding_from_the_start():
    # The reference's embedding normalises c * k (zero bias at first): every positive level is the
    # same vector. With the always-1 entry, levels 0.25 and 1 start apart in G's w and D's cmap.
    g, d = make_generator(TINY.replace(c_dim=1)), make_discriminator(TINY.replace(c_dim=1))
    z = np.repeat(RNG.standard_normal([1, 8]).astype(np.float32), 2, axis=0)
    levels = np.asarray([[0.25], [1.0]], np.float32)
    cosine = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    w, cmap = g.mapping(z, levels).numpy(), d.mapping(None, levels).numpy()
    assert cosine(*w) < 0.999 and cosine(*cmap) < 0.99
    reference = normalize_2nd_moment(levels @ g.mapping.embed.kernel.numpy()[:1])         # without the 1
    assert cosine(*reference) == pytest.approx(1.0, abs=1e-6)


def test_the_projection_discriminator_scores_its_features_against_the_mapped_label():
    d = make_discriminator(TINY.replace(c_dim=3))
    randomise(d)
    images = RNG.standard_normal([4, 8, 8, 1]).astype(np.float32)
    c = RNG.standard_normal([4, 3]).astype(np.float32)
    x = d.from_rgb(images)
    for conv0, conv1, skip in d.blocks:
        x = (skip(x) + conv1(conv0(x))) / math.sqrt(2)
    h = d.fc(np.reshape(d.conv4(d.mbstd(x)).numpy(), (4, -1))).numpy()                # [B, C] features
    features = dense(d.out, h, lrelu=False)                                            # [B, cmap_dim]
    cmap = mapping(d.mapping, None, c)                                                 # [B, cmap_dim]
    assert features.shape == cmap.shape == (4, 16)
    expected = np.sum(features * cmap, axis=1, keepdims=True) / math.sqrt(16)
    np.testing.assert_allclose(d(images, c).numpy(), expected, rtol=1e-3, atol=1e-3)


def test_an_unconditional_model_has_no_label_weights_and_takes_no_labels():
    assert Config().c_dim == 0 and Config.from_dict({}).c_dim == 0       # configurations saved before labels
    g, d = make_generator(TINY), make_discriminator(TINY)
    assert not [v.path for v in g.weights + d.weights if "embed" in v.path or "discriminator/mapping" in v.path]
    assert d.out.units == 1
    gan = build_gan(TINY)
    batch = np.zeros([4, 8, 8, 1], np.float32)
    with pytest.raises(ValueError, match="c_dim=0 needs images alone"):
        gan.train_step((batch, np.zeros([4, 2], np.float32), np.zeros([4, 2], np.float32)))
    with pytest.raises(ValueError, match=r"c_dim=2 needs \(images, labels, fake labels\)"):
        build_gan(TINY.replace(c_dim=2)).train_step(batch)


def test_labelled_batches_keep_each_images_label_and_draw_the_fakes_labels_from_all():
    n = 10
    images = np.arange(n, dtype=np.uint8).repeat(16).reshape(n, 4, 4, 1) * 20   # image i is the constant 20 i
    table = np.stack([np.arange(n), -np.arange(n)], axis=1).astype(np.float32)   # [N, 2]
    stream = make_dataset(images, 4, seed=3, labels=table)
    seen = []
    for x, real_c, fake_c in stream.take(25).as_numpy_iterator():
        index = np.round((x[:, 0, 0, 0] + 1) / 2 * 255 / 20).astype(int)
        np.testing.assert_array_equal(real_c, table[index])                     # each image's own label
        assert all(any((row == t).all() for t in table) for row in fake_c)       # rows of the table
        seen += fake_c[:, 0].tolist()
    assert set(seen) == set(range(n))                                            # drawn from all of them
    again = next(iter(make_dataset(images, 4, seed=3, labels=table)))
    first = next(iter(stream))
    for a, b in zip(again, first):
        np.testing.assert_array_equal(a.numpy(), b.numpy())                     # a function of the seed


def test_a_conditional_step_trains_the_label_paths_of_both_networks():
    config = TINY.replace(c_dim=2)
    gan = build_gan(config)
    before = {v.path: v.numpy() for v in gan.generator.mapping.embed.weights + gan.discriminator.mapping.weights}
    images = (RNG.random([4, 8, 8, 1]) * 2 - 1).astype(np.float32)
    c = np.eye(2, dtype=np.float32)[[0, 1, 0, 1]]
    batch = tuple(tf.constant(x) for x in (images, c, c[::-1]))
    for _ in range(2):
        logs = gan.train_step(batch)
    assert np.isfinite(float(logs["d_loss"])) and np.isfinite(float(logs["g_loss"]))
    after = {v.path: v.numpy() for v in gan.generator.mapping.embed.weights + gan.discriminator.mapping.weights}
    moved = [k for k in before if "kernel" in k and not np.allclose(before[k], after[k])]
    assert len(moved) == len([k for k in before if "kernel" in k])               # every label kernel learnt


# ---------------------------------------------------------------------------------------------
# A conditional run through checkpoint, resume, export, generation and evaluation
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slices(tmp_path_factory):
    """Two training subjects with 4 slices each (brightness rises with the level) and one validate
    subject, in the COMP3710 layout, and a covariate table."""
    root = tmp_path_factory.mktemp("labelled")
    for split, subjects in (("train", ("0001", "0002")), ("validate", ("0003",))):
        folder = root / "data" / f"keras_png_slices_{split}"
        folder.mkdir(parents=True)
        for s in subjects:
            for n in range(4):
                pixels = RNG.integers(0, 60, [8, 8]) + 40 * n
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"case_{s}_slice_{n + 10}.nii.png")
    table = root / "table.csv"
    table.write_text("ID,M/F,Age\nOAS1_0001_MR1,F,70\nOAS1_0002_MR1,M,30\nOAS1_0003_MR1,F,50\n")
    return str(root / "data"), str(table)


def train(out, data_dir, table, **options):
    options = {"output_dir": str(out), "data_dir": data_dir, "tick_kimg": 0.008, "progress": False,
               "condition": ("slice", "age", "sex"), "labels": table, **options}
    return training.train(TINY, training.RunOptions(**options), explicit=("kimg",))


@pytest.fixture(scope="module")
def run(tmp_path_factory, slices):
    out = tmp_path_factory.mktemp("conditional")
    gan = train(out, *slices, eval_kimg=0.016, eval_images=8, eval_metrics=("swd", "level"), best_by="level_swd")
    return out, gan


def test_a_conditional_run_saves_its_label_definition_and_resumes_with_it(run, slices, tmp_path):
    out, gan = run
    paths = runs.Paths(str(out))
    spec = labels.load(paths.labels_file)
    assert spec.names == ["slice", "age", "sex"] and spec.dim == 4 and gan.config.c_dim == 4
    assert spec.columns[1].mean == 50.0 and spec.columns[1].std == 20.0 and spec.columns[2].categories == ("F", "M")
    assert runs.read_config(paths).c_dim == 4
    history = json.load(open(paths.history_file))
    evaluated = [h for h in history if "swd_avg" in h]                       # evaluated with drawn labels
    assert evaluated and all(0.0 <= h["level_mae"] <= 1.0 and "level_mae_low" in h for h in evaluated)
    best = checkpointing.read_best(paths.checkpoints)                    # kept by SWD and the level read-back
    assert best["metric"] == "level_swd" and best["score"] == min(h["level_swd"] for h in evaluated)
    with pytest.raises(runs.RunError, match=r"--eval_metrics level .*\(--condition slice\)"):
        train(tmp_path / "age_only", *slices, condition=("age",), eval_kimg=0.016, eval_metrics=("swd", "level"))
    assert not os.path.exists(tmp_path / "age_only" / "checkpoints" / "config.json")

    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    gan2 = training.train(TINY.replace(kimg=0.032), training.RunOptions(
        output_dir=str(resumed), data_dir=slices[0], tick_kimg=0.008, progress=False, resume=True),
        explicit=("kimg",))
    assert int(gan2.images_seen.numpy()) == 32 and labels.load(runs.Paths(str(resumed)).labels_file) == spec
    with pytest.raises(runs.RunError, match="--condition slice differs from the run being resumed"):
        training.train(TINY.replace(kimg=0.048), training.RunOptions(
            output_dir=str(resumed), data_dir=slices[0], progress=False, resume=True, condition=("slice",)),
            explicit=("kimg",))
    before = digest(str(resumed))
    for flag, message in ((f"--labels={tmp_path / 'other.csv'}", f"--labels {tmp_path / 'other.csv'} differs from "
                           f"the table of the run being resumed ({slices[1]}); leave --labels out to resume on it"),
                          ("--labels_missing=drop", "--labels_missing drop differs from the run being resumed (error)")):
        result = cli(str(resumed), "--load=weights", "--kimg=0.048", flag, expect=1)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
        assert message in result.stderr and digest(str(resumed)) == before


def test_the_exported_generator_takes_labels_and_carries_their_definition(run, tmp_path):
    out, gan = run
    spec = labels.load(runs.Paths(str(out)).labels_file)
    path = inference.export(gan.generator_ema, str(tmp_path / "exports"), spec)
    opened = inference.open_generator(exported=path)
    g = opened.generator
    assert g.c_dim == 4 and opened.spec == spec
    c = labels.encode_values(spec, labels.parse_request(spec, "slice=0.5,age=40,sex=M"))
    np.testing.assert_allclose(sampling.synthesize(g, [1, 2], c=c), sampling.synthesize(gan.generator_ema, [1, 2], c=c),
                               atol=1e-5)
    os.remove(inference.exported_labels_path(path))
    with pytest.raises(labels.LabelError, match="labels.json is missing"):
        inference.open_generator(exported=path)
    with pytest.raises(labels.LabelError, match="this generator is conditional"):
        sampling.synthesize(g, [1])


def test_the_explorer_draws_a_chosen_label_and_generate_renders_its_saved_latent(run, tmp_path):
    import explorer
    out, gan = run
    view = explorer.Explorer(inference.open_generator(str(out)), out_dir=str(tmp_path / "explored"))
    spec = view.spec
    c = labels.encode_values(spec, labels.parse_request(spec, "slice=0.75,age=40,sex=M"))
    image = view.slice(5, label_values=(0.75, 40, "M"))
    np.testing.assert_array_equal(image, sampling.synthesize(view.g, [5], c=c)[0])
    _, npz = view.save()
    cli(str(out), "--mode=generate", f"--projected_w={npz}", f"--outdir={tmp_path / 'rendered'}")
    rendered = np.asarray(Image.open(tmp_path / "rendered" / "projected_seed0005.png"))
    np.testing.assert_array_equal(rendered, explorer.picture(image))


def test_a_sweep_changes_one_label_across_the_columns_with_one_z_per_row(run):
    out, gan = run
    spec = labels.load(runs.Paths(str(out)).labels_file)
    g = gan.generator_ema
    base = labels.parse_request(spec, "slice=0.5,sex=F", optional=["age"])
    grid, values = sampling.sweep_grid(g, spec, [3, 4], base, "age", steps=3)
    assert values == [30.0, 50.0, 70.0] and grid.shape == (6, 8, 8, 1)
    for row, seed in enumerate([3, 4]):
        for col, age in enumerate(values):
            c = labels.encode_values(spec, {**base, "age": age})
            np.testing.assert_allclose(grid[row * 3 + col], sampling.synthesize(g, [seed], c=c)[0], atol=1e-5)


def test_evaluation_draws_the_labels_of_the_reference_slices(run, slices):
    out, _ = run
    report = evaluation.evaluate_run(runs.Paths(str(out)), inference.open_generator(str(out)),
                                     [(slices[0], ("validate",), None)], num_images=16, names=["swd"])
    assert report["num_generated"] == 16 and report["swd_avg"] > 0
    spec = labels.load(runs.Paths(str(out)).labels_file)
    reals, c = evaluation.load_reference([(slices[0], ("validate",), None)], 8, None, 1, spec)
    assert reals.shape == (4, 8, 8, 1)
    np.testing.assert_allclose(c[:, 0], [0, 1 / 3, 2 / 3, 1], rtol=1e-6)         # slices 10-13 of subject 3
    np.testing.assert_allclose(c[:, 1:], [[0.0, 1.0, 0.0]] * 4)                  # age 50 -> 0, sex F


def test_an_unconditional_generator_refuses_labels():
    g = make_generator(TINY)
    with pytest.raises(labels.LabelError, match="unconditional"):
        sampling.synthesize(g, [0], c=np.zeros(2, np.float32))
