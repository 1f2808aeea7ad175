"""Opening a trained generator, the one way: from a run's checkpoint or from a `.keras` export.

Lives here: `open_generator` (the EMA generator of a checkpoint or an export, its label definition,
the images it has seen and, only when asked, the discriminator; only the variables it returns are
built and restored, never the training model or its optimizers), `export` and `load_exported` (the
`.keras` file and the labels.json beside it). Not here: which checkpoint a name means
(checkpointing.choose_checkpoint), what is done with the generator (sampling.py, evaluation.py,
projection.py), training (gan.py, training.py).
"""

import dataclasses
import os
import zipfile

import keras
import tensorflow as tf
from absl import logging

import atomic
import labels
import runs
from checkpointing import candidates, choose_checkpoint, read_variables
from gan import make_discriminator, make_generator, set_precision   # gan's imports register the layers

EXPORT_NAME = "generator.keras"


@dataclasses.dataclass(frozen=True)
class Trained:
    """A trained generator and what a user of it needs to know."""
    generator: keras.Model                    # the EMA generator, not trainable
    spec: labels.LabelSpec | None             # a conditional generator's label definition; None: unconditional
    images_seen: int | None                   # the checkpoint's training progress; None for an export
    source: str                               # the checkpoint's prefix or the export's path
    discriminator: keras.Model | None = None  # only when asked for, and only from a checkpoint
    config: object = None                     # the run's config.Config; None for an export


def open_generator(run=None, checkpoint="auto", exported=None, discriminator=False):
    """The `Trained` generator of the `exported` .keras file, else of the run folder `run` at
    `checkpoint` (`checkpointing.choose_checkpoint`: best where the run kept one, else latest; a
    checkpoint that does not read falls back to the next newest, as a resume does). Only reads: no
    lock, no repair. discriminator=True also restores the discriminator (an export has none: None)."""
    if exported:
        g = load_exported(exported)
        return Trained(g, label_spec(g, exported_labels_path(exported)), None, exported)
    paths = runs.Paths(run)
    config = runs.read_config(paths)
    set_precision(config.precision)
    g = make_generator(config)
    g.trainable = False
    owners = {"generator_ema": g, "discriminator": make_discriminator(config) if discriminator else None}
    images_seen = tf.Variable(0, dtype=tf.int64)                  # the training counter, read in the same pass
    variables = {f"{owner}/{v.path}": v for owner, layer in owners.items() if layer is not None for v in layer.weights}
    prefix = _restore(paths, checkpoint, {**variables, "gan/images_seen": images_seen})
    return Trained(g, label_spec(g, paths.labels_file), int(images_seen.numpy()), prefix, owners["discriminator"],
                   config)


def _restore(paths, checkpoint, variables):
    """Read `variables` from the chosen checkpoint, or the newest on disk that reads. Returns its prefix."""
    chosen = choose_checkpoint(paths, checkpoint)
    tried = [chosen] if chosen else candidates(paths.checkpoints)
    if not tried:
        raise runs.RunError(f"no checkpoint found in {paths.checkpoints}: train first, or check --output_dir")
    problems = []
    for prefix in tried:
        try:
            read_variables(prefix, variables, "was it written with other settings than its config.json?")
            return prefix
        except runs.RunError as e:
            problems.append(str(e))
            if prefix != tried[-1]:
                logging.warning("skipped checkpoint %s (%s); trying an older one", prefix, e)
    if len(tried) == 1:
        raise runs.RunError(problems[0])
    raise runs.RunError(f"none of the checkpoints in {paths.checkpoints} can be read (" + "; ".join(problems)
                        + "). Restore the folder from a backup, or train again.")


def export(g, out_dir, spec=None):
    """Save the generator as a `.keras` file that `keras.models.load_model` opens once this project's
    modules are importable (`import generator` registers the layers), and a conditional one's label
    definition `spec` beside it (labels.json). Written atomically."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, EXPORT_NAME)
    with atomic.staged(path, suffix=".keras") as tmp:        # Keras insists on the extension
        g.save(tmp)
    if spec is not None:
        labels.save(spec, exported_labels_path(path))
    return path


def exported_labels_path(path):
    return os.path.join(os.path.dirname(os.path.abspath(path)), labels.LABEL_FILE)


def load_exported(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"no exported generator at {path}: run `python driver.py --mode export` first")
    try:
        return keras.models.load_model(path)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:    # truncated, or not a .keras file
        raise ValueError(f"{path} is not a whole .keras file ({type(e).__name__}: {str(e)[:200]}); export it again "
                         f"with python driver.py --mode export") from None


def label_spec(g, spec_path):
    """The label definition of generator `g`, read from `spec_path`: None for an unconditional one."""
    if g.c_dim == 0:
        return None
    spec = labels.load(spec_path)
    if spec is None or spec.dim != g.c_dim:
        raise labels.LabelError(f"this generator is conditional ({g.c_dim} label values), but {spec_path} "
                                f"{'is missing' if spec is None else f'describes {spec.dim}'}: put the run's "
                                f"checkpoints/labels.json there")
    return spec
