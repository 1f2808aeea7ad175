"""Running a training job: data, model, periodic outputs, resume and clean stops.

Lives here: `RunOptions`, distribution strategies, the `train` loop around `keras.Model.fit` and
its callbacks (ticks, clean stops). Not here: the run folder (runs.py), the lock (runlock.py),
checkpoints (checkpointing.py), the resume rules (resume.py), flags (driver.py), the training step
(gan.py), pictures (visualize.py), generation (sampling.py) and export (inference.py).

A run is divided into ticks of `tick_kimg` thousand images (Keras "epochs"); after each tick the
EMA generator draws a grid from fixed latents, the loss plot and TensorBoard are updated and a
checkpoint is written.
"""

import dataclasses
import functools
import json
import math
import os
import shutil
import signal
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

import atomic
import data
import evaluation
import labels
import metrics
import pixels
import visualize
from checkpointing import Checkpointer, clean_leftovers, repair_index, resume_command
from config import Config
from gan import NonFiniteLossError, StopOnNonFinite, build_gan
from resume import (initialize_from, record_changes, refuse_overwrite, resolve_resume_config, resolve_run_data,
                    resolve_run_settings, save_data, save_run_settings)
from runlock import RunLock
from runs import Paths, RunError


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a training run is carried out (not what is trained: that is `Config`)."""
    output_dir: str = "."
    data_dir: str | None = None
    splits: tuple = ("train",)
    tick_kimg: float = 2.0            # outputs and a checkpoint every this many thousand images
    keep_checkpoints: int = 3
    resume: bool = False
    strategy: str = "default"         # default, mirrored, multiworker, tpu
    grid_size: int = 36               # samples in the periodic grid
    exclude_subjects: tuple = ()      # hold these `case_<subject>_` prefixes out of training
    progress: bool = True
    eval_kimg: float = 0.0            # SWD against `eval_*` real slices every this many kimg (0 = off)
    eval_dir: str | None = None       # real slices for evaluation (None: data_dir)
    eval_splits: tuple = ("validate",)
    eval_subjects: tuple = ()         # evaluate against only these subjects (e.g. the held-out ones)
    eval_images: int = 500            # generated images per periodic evaluation
    eval_metrics: tuple = ("swd",)    # evaluation.METRICS computed then (swd always)
    best_by: str = "swd_each"         # evaluation.BEST_BY: the score that picks the best checkpoint
    inception_weights: str | None = None   # local InceptionV3 weights for fid, kid, pr in eval_metrics
    init_from: str | None = None      # a new run starts from this run's weights (resume.initialize_from)
    steps_per_execution: int = 1      # training steps per call into TensorFlow; the results do not change
    condition: tuple = ()             # label names of a conditional run (labels.py), e.g. ("slice", "age")
    labels: str | None = None         # the CSV of subject covariates for them
    labels_missing: str = "error"     # or "drop": slices of subjects without a value
    typed: frozenset = frozenset()    # the data and run flags the user typed: a resume uses the run's own for the rest

    def __post_init__(self):
        for name in ("tick_kimg", "eval_kimg"):
            value = getattr(self, name)
            if not (0 <= value < math.inf and (value > 0 or name == "eval_kimg")):      # also NaN
                raise ValueError(f"--{name}={value} must be {'positive' if name == 'tick_kimg' else 'at least 0'} "
                                 f"and finite, in thousands of images")
        if self.keep_checkpoints < 1:
            raise ValueError(f"--keep_checkpoints={self.keep_checkpoints} must be at least 1: the newest checkpoint "
                             f"is what a resume starts from")

    @property
    def reference_parts(self):
        """The real slices periodic evaluation compares with (evaluation.reference_parts)."""
        return evaluation.reference_parts(self.data_dir, self.splits, self.eval_dir, self.eval_splits,
                                          self.eval_subjects)


def make_strategy(name):
    """tf.distribute strategy by name. 'mirrored' uses every local GPU (or CPU when there is none),
    'multiworker' reads the cluster from TF_CONFIG, 'tpu' connects to the local TPU."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise RunError("--strategy=multiworker needs the TF_CONFIG environment variable; see the README")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise RunError(f"unknown strategy {name!r}; choose default, mirrored, multiworker or tpu")


def is_chief(strategy):
    """Whether this process writes the run's outputs: yes, except on a cluster's non-chief workers."""
    return getattr(strategy.extended, "should_checkpoint", True)


def training_input(dataset, strategy, start, batch_size):
    """What fit() reads from step `start` on. On one machine, the stream of global batches itself
    (MirroredStrategy splits each between local replicas). On a cluster every worker builds the same
    seeded stream and keeps its own contiguous rows of each global batch (worker w of W, with R
    replicas each: rows w*R*b to (w+1)*R*b, b per replica), so the global batch is exactly the one
    a single process trains on, and each worker feeds its replicas only its share."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return dataset.skip(start)

    def per_worker(context):
        per_replica = context.get_per_replica_batch_size(batch_size)
        rows = per_replica * strategy.num_replicas_in_sync // context.num_input_pipelines
        first = context.input_pipeline_id * rows

        def own_rows(*batch):                   # images, or (images, their labels, the fakes' labels)
            kept = tuple(x[first:first + rows] for x in batch)
            return kept if len(kept) > 1 else kept[0]
        return (dataset.skip(start).map(own_rows).unbatch()
                .batch(per_replica, drop_remainder=True))

    return strategy.distribute_datasets_from_function(per_worker)


# ---------------------------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------------------------

class StopFlag:
    """Turns SIGINT/SIGTERM into a request to stop after the current step (then save and exit)."""

    def __init__(self):
        self.requested = None

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        if self.requested is not None:      # A second Ctrl-C stops at once.
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        logging.info("%s received: finishing this step, saving a checkpoint, then stopping "
                     "(press Ctrl-C again to stop at once without saving)", self.requested)

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


class TickOutputs(keras.callbacks.Callback):
    """At the end of every tick: sample grid, loss plot, TensorBoard, history, checkpoint, progress.

    Between ticks it reads nothing from the device: the step count comes from Keras's batch index
    and one read of the counter at the start of each tick, the losses from the logs Keras brings to
    the host anyway (once per execution of `steps_per_execution` steps), and fit() stops at a tick's
    end by itself (`fit_plan`), so no step waits for a check of the counter."""

    def __init__(self, paths, checkpointer, config, options, total_steps, stop_flag, history, reference=None,
                 reference_c=None, train_c=None, train_reals=None, spec=None, level_weights=None):
        super().__init__()
        self.paths, self.checkpointer, self.config, self.options = paths, checkpointer, config, options
        self.total_steps, self.stop_flag, self.history = total_steps, stop_flag, history
        self.reference = None if reference is None else pixels.to_unit_range(reference)
        self.train_reals = train_reals          # what C2ST compares with (evaluation.training_sample)
        self.spec, self.level_weights = spec, level_weights     # the level metric's labels and reader
        # A conditional run's evaluation draws labels from the reference slices, its grid from the training ones.
        self.reference_c = reference_c
        self.fixed_c = labels.draw(train_c, options.grid_size, config.seed)
        self.feature_fn = functools.partial(metrics.inception_features,
                                            weights=options.inception_weights or "imagenet")
        self.fixed_z = np.random.default_rng(config.seed).standard_normal(
            [options.grid_size, config.z_dim]).astype(np.float32)
        self.writer = tf.summary.create_file_writer(paths.logs)
        self.progbar = None

    def on_train_begin(self, logs=None):
        if not hasattr(self, "start_time"):             # the first of this run's fit() calls
            self.start_time, self.start_images = time.time(), int(self.model.images_seen.numpy())
            self.tick_time, self.tick_images = self.start_time, self.start_images
        if self.options.progress and self.progbar is None:
            self.progbar = keras.utils.Progbar(self.total_steps, unit_name="step",
                                               stateful_metrics=["kimg", "s/kimg"])
            self.progbar.update(self.steps_done())

    def on_epoch_begin(self, epoch, logs=None):
        self.tick_start_steps = self.steps_done()       # the one read of the counter per tick

    def steps_done(self):
        return int(self.model.images_seen.numpy()) // self.config.batch_size

    def on_train_batch_end(self, batch, logs=None):
        # `batch` is the index within this tick of the last step of the call just finished.
        steps = self.tick_start_steps + batch + 1
        if self.progbar is not None and steps % 5 < self.model.steps_per_execution:
            images = steps * self.config.batch_size
            rate = (time.time() - self.start_time) / max(images - self.start_images, 1) * 1000
            values = [("kimg", images / 1000), ("s/kimg", rate)]
            values += [(k, float(v)) for k, v in (logs or {}).items() if k in ("d_loss", "g_loss")]
            self.progbar.update(steps, values=values)
        if self.stop_flag.requested:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.save(logs)

    def evaluation_due(self, kimg):
        """At the first tick past each multiple of eval_kimg, and at the end of the run."""
        if self.reference is None:
            return False
        last = max((h["kimg"] for h in self.history if "swd_avg" in h), default=0.0)
        every = self.options.eval_kimg
        return kimg // every > last // every or kimg >= self.config.kimg

    def save(self, logs=None):
        images = int(self.model.images_seen.numpy())
        kimg = images / 1000
        now = time.time()
        seconds_per_kimg = (now - self.tick_time) / max(images - self.tick_images, 1) * 1000
        self.tick_time, self.tick_images = now, images
        entry = {"kimg": kimg, "seconds_per_kimg": seconds_per_kimg,
                 **{k: float(v) for k, v in (logs or {}).items()}}
        if self.history and self.history[-1]["kimg"] >= kimg:
            return  # Nothing new since the last save (a stop right after a tick).
        self.checkpointer.check_finite(self.steps_done())   # a diverged state writes nothing at all
        if self.evaluation_due(kimg):
            count = self.options.eval_images
            sets = evaluation.generate(self.model.generator_ema, count, labels.draw(self.reference_c, count, self.config.seed),
                                       self.options.eval_metrics, spec=self.spec)
            report = evaluation.evaluate_images(reals=self.reference, feature_fn=self.feature_fn, seed=self.config.seed,
                                                names=self.options.eval_metrics, train_reals=self.train_reals,
                                                level_weights=self.level_weights, **sets)
            entry.update({k: v for k, v in report.items() if v is not None and not k.startswith("num_")})
        self.history.append(entry)

        samples = self.model(self.fixed_z, self.fixed_c).numpy()
        name = f"grid_{int(round(kimg * 1000)):08d}.png"
        visualize.save_grid(os.path.join(self.paths.samples, name), samples)
        visualize.save_grid(os.path.join(self.paths.samples, "latest.png"), samples)
        visualize.plot_history(os.path.join(self.paths.samples, "losses.png"), self.history,
                               extra=(("swd_avg", "swd_each_avg"), "fid", "kid", ("c2st", "c2st_noise_off"), "level_mae", "diversity_generated", "r1", "gp",
                                      "pl", "augment_p", "ada_rt"))
        with self.writer.as_default(step=images):
            for k, v in entry.items():
                tf.summary.scalar(k, v)
            tf.summary.image("samples", pixels.to_zero_one(samples[:16]), max_outputs=16)
        key = evaluation.BEST_BY[self.options.best_by]
        if key in entry and self.checkpointer.save_best(self.steps_done(), kimg, entry[key], key):
            entry["best"] = True                        # this tick's state is now checkpoints/best/
        atomic.write_json(self.paths.history_file, self.history)
        path = self.checkpointer.save(self.steps_done())
        remaining = (self.config.kimg - kimg) * seconds_per_kimg
        if self.progbar is not None:
            print(flush=True)   # end the progress bar's line (stdout) before the log line (stderr)
        logging.info("kimg %.4g/%.4g | %.1f s/kimg | %s | left %s | saved %s", kimg, self.config.kimg,
                     seconds_per_kimg, " ".join(f"{k} {v:.3f}" for k, v in (logs or {}).items()
                                                if k in ("d_loss", "g_loss", "augment_p")),
                     format_seconds(max(remaining, 0)), os.path.basename(path))


def fit_plan(steps_done, total_steps, steps_per_tick):
    """The fit() calls that train from `steps_done` to `total_steps` with ticks (Keras epochs) ending
    on multiples of `steps_per_tick`: [(initial_epoch, epochs, steps_per_epoch)]. Runs of whole ticks
    share one call; a tick cut short (after a mid-tick stop, or by the end of the run) has its own,
    so every call stops exactly where a tick ends without a per-step check. At most three calls, in
    constant time however many ticks the run has."""
    plan, epoch = [], steps_done // steps_per_tick
    if steps_done % steps_per_tick and steps_done < total_steps:          # resumed inside a tick: finish it
        plan.append((epoch, epoch + 1, min((epoch + 1) * steps_per_tick, total_steps) - steps_done))
        epoch += 1
    whole = total_steps // steps_per_tick                                 # the ticks that end by total_steps
    if whole > epoch:
        plan.append((epoch, whole, steps_per_tick))
        epoch = whole
    start = max(epoch * steps_per_tick, steps_done)
    if total_steps > start:                                               # the run ends inside a tick
        plan.append((epoch, epoch + 1, total_steps - start))
    return plan


def round_up(steps, multiple):
    return math.ceil(steps / multiple) * multiple


def regularisation_cycle(config):
    """Training steps (each n_critic D steps and one G step) over which the lazy regularisers in use
    run in proportion: lazy R1 every d_reg_interval D steps, path length every g_reg_interval G steps.
    1 when neither is lazy (WGAN-GP's penalty runs every D step; R1 with weight 0, pl_weight 0)."""
    d_interval = config.d_reg_interval if config.d_penalty == "r1" else 1
    g_interval = config.g_reg_interval if config.pl_weight > 0 else 1
    return max(d_interval, g_interval)


def time_steps(config, steps=None):
    """Build the GAN for `config` and time its training step alone (no ticks, samples or
    evaluation) on random slices: one step that traces it, then `steps` (default one lazy-
    regularisation cycle, so the regularised steps count in proportion). Returns (gan, seconds per kimg)."""
    steps = steps or regularisation_cycle(config)
    images = np.random.default_rng(config.seed).integers(
        0, 256, [config.batch_size, config.resolution, config.resolution, config.channels], dtype=np.uint8)
    dataset = data.make_dataset(images, config.batch_size, seed=config.seed, channels=config.channels)
    gan = build_gan(config)
    gan.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)   # traces the step
    start = time.perf_counter()
    gan.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    return gan, (time.perf_counter() - start) / (steps * config.batch_size) * 1000


def format_seconds(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


# ---------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------

def train(config, options, explicit=()):
    """Train (or resume) a run. `explicit` names the Config fields the user set by hand, so that a
    resume can tell a deliberate conflict from a default. Returns the trained `StyleGAN2`.

    The run folder is locked for the whole run (runlock.RunLock); a new run never starts over the
    checkpoints of an old one (resume.refuse_overwrite)."""
    # First of all: MultiWorkerMirroredStrategy must configure TensorFlow's collectives before any op runs.
    strategy = make_strategy(options.strategy)
    if not is_chief(strategy):
        return _train_as_worker(config, options, set(explicit), strategy)
    paths = Paths(options.output_dir)
    check_length(config, options)                 # before the folder is made: a refused run writes nothing
    paths.make()
    with RunLock(paths):
        return _train_locked(config, options, set(explicit), paths, strategy)


def _train_as_worker(config, options, explicit, strategy):
    """A cluster's non-chief worker trains in step with the chief but writes only into a temporary
    folder, deleted at the end, so the run folder (shared or not) holds the chief's outputs alone.
    To resume it starts from a copy of the run's checkpoints and history."""
    run = Paths(options.output_dir)
    with tempfile.TemporaryDirectory(prefix="stylegan2-worker-") as scratch:
        paths = Paths(scratch)
        if options.resume and os.path.isdir(run.checkpoints):
            shutil.copytree(run.checkpoints, paths.checkpoints)
            if os.path.exists(run.history_file):
                os.makedirs(paths.logs, exist_ok=True)
                shutil.copy2(run.history_file, paths.history_file)
        paths.make()
        options = dataclasses.replace(options, output_dir=scratch, progress=False)
        with RunLock(paths):
            return _train_locked(config, options, explicit, paths, strategy)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a training will do, decided before anything is written (`plan`)."""
    config: Config                 # with a resume's rules applied (resume.resolve_resume_config)
    options: RunOptions            # with the run's own data and run settings in place of what was not typed
    changes: dict                  # {setting: [old, new]} that a resume changes
    spec: labels.LabelSpec | None  # a resumed conditional run's saved label definition


def check_length(config, options):
    if not options.resume and config.kimg <= 0:
        raise RunError(f"--kimg={config.kimg:g} trains nothing: give the length of the new run in thousands of "
                       f"images (for example --kimg 20)")


def plan(config, options, explicit=(), replicas=1):
    """The one preparation of a training, shared by `--dry_run` (which prints it) and `train`: the
    resume rules (the saved configuration and data, the saved label definition checked against
    --condition, --labels and --labels_missing) or the refusal to start over an old run, and the
    checks of the batch against `replicas` and the minibatch-stddev group. Only reads the run folder."""
    check_length(config, options)
    paths = Paths(options.output_dir)
    changes, spec = {}, None
    if options.resume:
        config, changes = resolve_resume_config(paths, config, set(explicit))
        options = resolve_run_settings(paths, resolve_run_data(paths, options))
        spec = _saved_labels(config, options, paths)
    else:
        refuse_overwrite(paths)
    if "level" in options.eval_metrics and labels.SLICE not in (spec.names if spec else options.condition):
        raise RunError("--eval_metrics level reads back the slice level a model is asked for: it needs a run "
                       "conditioned on it (--condition slice)")
    if config.batch_size % replicas:
        raise RunError(f"--batch_size={config.batch_size} must be a multiple of the {replicas} replicas")
    local_batch = config.batch_size // replicas
    if local_batch % min(config.mbstd_group_size, local_batch):
        raise RunError(f"the per-replica batch {local_batch} must be a multiple of the minibatch-stddev "
                       f"group size {config.mbstd_group_size}")
    return Plan(config, options, changes, spec)


def _saved_labels(config, options, paths):
    """A resumed run's label definition (None: unconditional), checked against what was typed: its
    labels must keep their meaning."""
    spec = None
    if config.c_dim:
        spec = labels.load(paths.labels_file)
        if spec is None:
            raise RunError(f"this run is conditional but {paths.labels_file} is missing: it defines what the labels "
                           f"mean; put it back from a backup or a copy of the run")
    if options.condition and list(options.condition) != (spec.names if spec else []):
        raise RunError(f"--condition {','.join(options.condition)} differs from the run being resumed "
                       f"({','.join(spec.names) if spec else 'unconditional'}); leave --condition out to resume it")
    if spec and "labels" in options.typed and os.path.abspath(options.labels) != spec.table:
        raise RunError(f"--labels {options.labels} differs from the table of the run being resumed ({spec.table or 'none'}); "
                       f"leave --labels out to resume on it")
    if spec and "labels_missing" in options.typed and options.labels_missing != spec.missing:
        raise RunError(f"--labels_missing {options.labels_missing} differs from the run being resumed "
                       f"({spec.missing}); leave it out to resume")
    return spec


def preview_labels(options):
    """The label definition a new conditional run would fit, told from the file names and the table
    alone (a volume counts as one subject whose levels come from its slices' order), as one line."""
    if options.data_dir is None:
        raise data.DataError("the built-in synthetic slices have no labels to condition on: give --data_dir")
    files = data.filter_subjects(data.find_files(options.data_dir, options.splits), options.exclude_subjects,
                                 None, options.data_dir)
    sources = [(f, 0, 1 if data.file_kind(f) == "image" else 2) for f in files]
    spec = labels.build(list(options.condition), sources, options.labels, options.labels_missing)
    _, keep = labels.encode_sources(spec, sources)                  # names without a slice number fail here
    dropped = f"; {(~keep).sum()} of {len(keep)} files dropped (no value)" if not keep.all() else ""
    return labels.describe(spec) + dropped


def load_training_slices(config, options, paths, spec=None):
    """The training slices, and for a conditional run its label definition and their labels
    [N, c_dim]: a new run fits the definition to its slices (labels.build), a resumed one keeps its
    saved `spec` (`plan`), so its labels keep their meaning. Returns (images, spec or None, labels or None,
    each slice's subject or None: data.subjects_of)."""
    load = functools.partial(data.load_slices, options.data_dir, config.resolution, paths.cache,
                             splits=options.splits, channels=config.channels, seed=config.seed,
                             exclude_subjects=options.exclude_subjects)
    unlabelled = spec is None and (options.resume or not options.condition)
    if unlabelled and options.data_dir is None:          # the built-in phantom has no subjects
        return load(), None, None, None
    images, sources = load(with_sources=True)
    subjects = data.subjects_of(sources)
    if unlabelled:
        return images, None, None, subjects
    if spec is None:
        spec = labels.build(list(options.condition), sources, options.labels, options.labels_missing)
    c, keep = labels.encode_sources(spec, sources)
    if not keep.all():
        logging.warning("labels: dropped %d of %d slices whose subjects have no %s (--labels_missing drop)",
                        (~keep).sum(), len(keep), ", ".join(spec.names))
    logging.info("labels: conditioning on %s (%d values per slice), definition in %s", ", ".join(spec.names),
                 spec.dim, paths.labels_file)
    return images[keep], spec, c[keep], None if subjects is None else subjects[keep]


def _train_locked(config, options, explicit, paths, strategy):
    clean_leftovers(paths)
    prepared = plan(config, options, explicit, strategy.num_replicas_in_sync)
    config, options, changes = prepared.config, prepared.options, prepared.changes
    if config.precision == "float16" and not tf.config.list_physical_devices("GPU"):
        logging.warning("--precision float16 without a GPU: CPUs emulate float16 arithmetic and train "
                        "hundreds of times slower; use float32 here (bfloat16 on CPUs with AMX)")

    paths.make("checkpoints", "samples", "logs", "cache")
    images, spec, train_c, subjects = load_training_slices(config, options, paths, prepared.spec)
    config = config.replace(c_dim=spec.dim if spec else 0)
    if len(images) < config.batch_size:
        raise RunError(f"only {len(images)} usable slices, fewer than one batch of {config.batch_size}; "
                       f"add data or lower --batch_size")
    reference = reference_c = train_reals = level_weights = None
    if options.eval_kimg > 0:
        reference, reference_c = evaluation.load_reference(options.reference_parts, config.resolution, paths.cache,
                                                           config.channels, spec)
        logging.info("evaluating %s every %g kimg against %d real slices", ", ".join(options.eval_metrics),
                     options.eval_kimg, len(reference))
        if any(n in options.eval_metrics for n in evaluation.TRAINED_METRICS):
            train_reals = evaluation.training_sample(images, options.eval_images, config.seed, subjects, config.mirror)
            logging.info("C2ST against %d training slices%s; two halves of them give %.3f (the floor)",
                         len(train_reals.images), "" if train_reals.subjects is None else ", folded by subject",
                         evaluation.c2st_floor(train_reals, config.seed))
        if "level" in options.eval_metrics:
            level_weights = evaluation.level_reader(images, train_c, spec)

    # fit() runs whole executions of steps_per_execution steps, so ticks and the run end on multiples of it.
    execution = options.steps_per_execution
    steps_per_tick = round_up(max(1, math.ceil(options.tick_kimg * 1000 / config.batch_size)), execution)
    total_steps = round_up(math.ceil(config.kimg * 1000 / config.batch_size), execution)
    keras.utils.set_random_seed(config.seed)   # same seed, same initial weights: a run is reproducible
    gan = build_gan(config, strategy, options.steps_per_execution)
    if options.resume:
        repair_index(paths)
    checkpointer = Checkpointer(gan, paths.checkpoints, options.keep_checkpoints)
    history = []
    if options.resume:
        restored = checkpointer.restore()
        images_seen = int(gan.images_seen.numpy())
        if images_seen // config.batch_size >= total_steps:          # before anything in the run is rewritten
            logging.info("already trained for %g kimg (the --kimg target); nothing to do", images_seen / 1000)
            return gan
        if os.path.exists(paths.history_file):
            with open(paths.history_file) as f:
                history = [h for h in json.load(f) if h["kimg"] * 1000 <= images_seen]
        logging.info("resumed %s at %d images", os.path.basename(restored), images_seen)
        record_changes(paths, history, images_seen / 1000, changes)
    elif options.init_from:
        source = initialize_from(gan, Paths(options.init_from))
        atomic.write_json(os.path.join(paths.logs, "init_from.json"), {"run": os.path.abspath(options.init_from),
                                                                          "checkpoint": os.path.abspath(source)})
        logging.info("initialised from %s: its generator, EMA and discriminator weights; fresh optimizers and "
                     "counters", source)
    atomic.write_json(paths.config_file, dataclasses.asdict(config))
    save_data(paths, options)
    save_run_settings(paths, options)
    if spec:                                   # read only for a configuration with c_dim > 0
        labels.save(spec, paths.labels_file)

    steps_done = int(gan.images_seen.numpy()) // config.batch_size
    if steps_done % execution:
        raise RunError(f"this run stopped after step {steps_done}, which is not a whole number of executions of "
                       f"--steps_per_execution={execution}; resume with --steps_per_execution=1 (or a divisor "
                       f"of {steps_done}) until the next tick, then raise it again")
    # The data order is a fixed function of the seed, so skipping the batches already used makes a
    # resumed run see exactly what an uninterrupted one would.
    dataset = data.make_dataset(images, config.batch_size, seed=config.seed, channels=config.channels,
                                mirror=config.mirror, labels=train_c)

    with StopFlag() as stop_flag:
        ticks = TickOutputs(paths, checkpointer, config, options, total_steps, stop_flag, history, reference,
                            reference_c, train_c, train_reals, spec, level_weights)
        try:
            # Each Keras epoch is one tick. steps_per_epoch on the endless stream, not take(): a fit()
            # that runs out of data stops mid-step and leaves per-step state behind that fails the next
            # fit() (seen: AlreadyExistsError in AddN's temporary variable, with Grappler on).
            for initial_epoch, epochs, steps_per_epoch in fit_plan(steps_done, total_steps, steps_per_tick):
                if stop_flag.requested:
                    break
                start = int(gan.images_seen.numpy()) // config.batch_size
                gan.fit(training_input(dataset, strategy, start, config.batch_size), initial_epoch=initial_epoch, epochs=epochs,
                        steps_per_epoch=steps_per_epoch, verbose=0, shuffle=False,
                        callbacks=[StopOnNonFinite(), ticks])
        except NonFiniteLossError as e:
            latest = checkpointer.latest
            if latest:
                advice = (f"The last good checkpoint, {os.path.basename(latest)}, is kept; resume from it with lower "
                          f"learning rates: {resume_command(paths.root, config)}")
            else:
                advice = "No checkpoint was saved; start again with lower --g_lr and --d_lr."
            raise NonFiniteLossError(f"{e} {advice}") from None
        if stop_flag.requested:
            ticks.save()
            logging.info("stopped by %s; resume with: python driver.py --output_dir %s --load weights",
                         stop_flag.requested, paths.root)
    if ticks.progbar is not None:
        print()
    return gan
