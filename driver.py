"""StyleGAN2 for brain MRI: the command line.

    python driver.py                                  # train on built-in synthetic brains (the 32x32 quick preset)
    python driver.py --data_dir ~/keras_png_slices_data
    python driver.py --load weights                   # resume the last run where it stopped
    python driver.py --clear samples|cache|both       # delete outputs (add --mode train to train after)
    python driver.py --clear checkpoints              # discard the run in --output_dir (to start a new one)
    python driver.py --dry_run --data_dir DATA        # settings, data, sizes and speed; writes nothing
    python driver.py --init_from OLD_RUN --data_dir NEW_DATA --output_dir NEW_RUN   # fine-tune
    python driver.py --mode generate --seeds 0-35 --psi 0.7
    python driver.py --data_dir DATA --condition slice,age,sex --labels oasis1_demographics.csv   # conditional
    python driver.py --mode generate --condition slice=0.5,age=80,sex=F --sweep age
    python driver.py --mode export                    # EMA generator as a .keras file
    python driver.py --mode evaluate                  # quality metrics against real slices
    python driver.py --mode project --target slice.png  # find a slice in latent space, with an anomaly map
    python driver.py --mode explore                   # a page at http://127.0.0.1:7860 to look at the model

Exit status: 0 success; 1 a problem with the input, data or run folder, told in one line that
says what to do (nothing already saved is lost); 2 a usage error that absl finds while reading
the flags (an unknown flag, a value of the wrong type or outside its range).

Lives here: every flag (the Config ones made from config.TUNABLES), the grouped --help, and one
small function per mode that turns flags into plain arguments. Not here: anything the modes do
(training.py, sampling.py, evaluation.py, projection.py, inference.py, resume.py); below this file
nothing reads flags, so everything is testable without a command line.
"""

import dataclasses
import logging as std_logging
import math
import os
import sys
import textwrap


def _quiet_tensorflow():
    """TensorFlow's C++ start-up chatter (oneDNN, CPU features) goes straight to file descriptor 2,
    before Python logging exists; hide it during the import. Real errors still raise exceptions."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    stderr = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf
        for gpu in tf.config.list_physical_devices("GPU"):     # take GPU memory as needed, not all at once
            tf.config.experimental.set_memory_growth(gpu, True)
        # Initialises the runtime, which logs once more; not on a cluster (TF_CONFIG), where
        # MultiWorkerMirroredStrategy must configure the runtime before anything runs.
        if "TF_CONFIG" not in os.environ:
            tf.constant(0.0) + 1.0
    finally:
        os.dup2(stderr, 2)
        os.close(devnull)
        os.close(stderr)


_quiet_tensorflow()

from absl import app, flags, logging  # noqa: E402

import checkpointing  # noqa: E402
import config as config_module  # noqa: E402
import data  # noqa: E402
import encoder as encoder_module  # noqa: E402
import evaluation  # noqa: E402
import explorer  # noqa: E402
import inference  # noqa: E402
import labels  # noqa: E402
import projection  # noqa: E402
import resume  # noqa: E402
import runs  # noqa: E402
import sampling  # noqa: E402
import training  # noqa: E402
import visualize  # noqa: E402
from gan import NonFiniteLossError  # noqa: E402

DEFAULT = config_module.PRESETS["quick"]                 # the flags' defaults
USER_ERROR, USAGE_ERROR = 1, 2    # exit statuses (0: success); see the module docstring
FLAGS = flags.FLAGS

# What to do.
flags.DEFINE_enum("mode", "train", ["train", "generate", "export", "evaluate", "project", "encoder", "explore"],
                  "train: train or resume; generate: write images from a checkpoint (--checkpoint); export: save the "
                  "EMA generator as a .keras file; evaluate: quality metrics against real slices; project: find "
                  "real slices (--target, --target_dir) in the generator's latent space, with anomaly maps; "
                  "encoder: train the projection encoder of a checkpoint (RUN/encoder/), which project then starts "
                  "from; "
                  "explore: a local web page to look at the model (seeds, truncation, noise, style mixing, labels, "
                  "projection).")
flags.DEFINE_enum("load", None, ["weights"], "`--load weights` resumes from the latest checkpoint in --output_dir: "
                  "step, optimizers, EMA, augmentation state and configuration. Of the settings only "
                  + ", ".join(f"--{k}" for k in resume.RESUMABLE) + " may change; "
                  "each change is recorded in logs/history.json. The run's data (data.json) and its --tick_kimg, "
                  "--keep_checkpoints and --eval_* (run.json) are used again unless typed (the run flags may "
                  "change).")
flags.DEFINE_enum("clear", None, list(resume.CLEARABLE),
                  "Delete, then exit (add --mode or --load to go on afterwards): samples: the sample images "
                  "(samples/, generated/); cache: the decoded-data cache (cache/); both: samples and cache, "
                  "never checkpoints; checkpoints: the run itself (checkpoints/ckpt-*, its index, config.json, "
                  "data.json, run.json, labels.json, logs/history.json, leftovers of killed saves), so that a "
                  "new run can start in --output_dir. "
                  "Only files this program writes are deleted; links are never followed.")
# Where.
flags.DEFINE_string("output_dir", ".", "Folder for checkpoints/, samples/, cache/, logs/, generated/, exports/.")
flags.DEFINE_string("data_dir", None, "OASIS slices (PNG/JPEG/TIFF folder, e.g. keras_png_slices_data) or "
                    "NIfTI/Analyze volumes. Default: built-in synthetic brain slices.")
flags.DEFINE_list("splits", ["train"], "COMP3710 splits to train on (train, validate, test or all); "
                  "segmentation folders are never used.")
flags.DEFINE_list("exclude_subjects", [], "Subject ids to hold out of training (files case_<id>_*), e.g. for evaluation.")
flags.DEFINE_string("init_from", None, "train: start a new run from the weights of another run (its --output_dir): "
                    "generator, EMA and discriminator of its best checkpoint (else latest), with fresh optimizers and "
                    "counters, for fine-tuning on new "
                    "data or at a new learning rate. Settings come from that run, overridden by the flags you "
                    "type; the networks' shapes must match.")
flags.DEFINE_boolean("dry_run", False, "train: resolve the settings, scan the data (files per split, skipped "
                     "files, subjects, slice size), count parameters and time a few steps, then exit without "
                     "writing anything.")
flags.DEFINE_enum("preset", "quick", list(config_module.PRESETS), "Named settings to start from; the model, "
                  "objective and run flags override them. quick: 32x32 demo sized for a 2-core CPU; "
                  "reference: the 64x64 benchmark model; paper: config-f sizes. `--preset paper --help` shows "
                  "that preset's values as the defaults.")


def define_config_flags():
    """One flag per Config tunable: help text and choices come from the field, the default from the
    quick preset (--help shows the chosen preset's)."""
    for field in config_module.TUNABLES:
        default, text, choices = getattr(DEFAULT, field.name), field.metadata["help"], field.metadata["choices"]
        kinds = getattr(field.type, "__args__", (field.type,))                 # float | None -> (float, None)
        if choices:
            flags.DEFINE_enum(field.name, default, list(choices), text)
        elif bool in kinds:
            flags.DEFINE_boolean(field.name, default, text)
        elif int in kinds:
            flags.DEFINE_integer(field.name, default, text)
        else:
            flags.DEFINE_float(field.name, default, text)


define_config_flags()
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multiworker", "tpu"],
                  "tf.distribute strategy: default (one device), mirrored (all local GPUs), multiworker "
                  "(several machines, TF_CONFIG), tpu.")
flags.DEFINE_float("tick_kimg", 2.0, "Sample grid, loss plot and checkpoint every this many thousand images.")
flags.DEFINE_integer("keep_checkpoints", 3, "How many recent checkpoints to keep.")
flags.DEFINE_integer("steps_per_execution", 1, "train: training steps per call into TensorFlow (Keras "
                     "steps_per_execution). Larger values launch a GPU less often; the weights come out bit for bit "
                     "the same. Ticks and --kimg are rounded up to whole executions.", lower_bound=1)
# Conditioning (see README, "Conditional generation").
flags.DEFINE_string("condition", None, "train: the labels of a conditional model, comma-separated: slice (the "
                    "slice's level in its subject, 0 lowest to 1 highest, from names ..._slice_<n> or a volume's "
                    "order) and columns of --labels (age, sex, cdr, mmse, ...). generate: the label values of the "
                    "images, name=value in the user's units, e.g. slice=0.5,age=80,sex=F.")
flags.DEFINE_string("labels", None, "train: a CSV of subject covariates for --condition, one row per subject id "
                    "(column ID: OAS1_0037_MR1 or 0037, matched to case_0037_... names), e.g. "
                    "oasis1_demographics.csv. Numeric columns are standardised, others one-hot.")
flags.DEFINE_enum("labels_missing", "error", list(labels.MISSING_POLICIES), "train: a training subject without a "
                  "value in --labels: error (name them) or drop (train without their slices).")
flags.DEFINE_string("sweep", None, "generate: with a conditional model, also write sweep_<label>.png: this label "
                    "swept across the training range (each category) in --sweep_steps columns, one fixed seed per "
                    "row; the other labels from --condition.")
flags.DEFINE_integer("sweep_steps", 8, "generate: columns of a --sweep of a numeric label.", lower_bound=2)
# Generation and evaluation.
flags.DEFINE_integer("num_images", 16, "generate: how many images; evaluate: how many generated images "
                     "(default: as many as the real reference set).", lower_bound=1)
flags.DEFINE_integer("first_seed", 0, "generate: images use seeds first_seed, first_seed+1, ...")
flags.DEFINE_string("seeds", None, "generate: the seeds to render as numbers and ranges, e.g. 0-35,40 (instead "
                    "of --first_seed and --num_images).")
flags.DEFINE_float("psi", 1.0, "Truncation psi for generate (1 = off, smaller = more typical, less varied).")
flags.DEFINE_integer("truncation_cutoff", None, "generate: truncate only the first this many style layers "
                     "(coarse: head shape and level); default all.", lower_bound=1)
flags.DEFINE_string("mix_rows", None, "generate: seeds of the style-mixing grid's rows (their fine styles stay), "
                    "e.g. 0-4; default the first 5 seeds.")
flags.DEFINE_string("mix_cols", None, "generate: seeds of the style-mixing grid's columns (they give the "
                    "--mix_layers styles); default the next 6 seeds.")
flags.DEFINE_string("mix_layers", "0-3", "generate: the style layers the columns give, e.g. 0-3 (coarse: anatomy "
                    "and level) or 4-9 (fine: contrast and texture).")
flags.DEFINE_string("outdir", None, "generate, project, explore: where the images go (default: "
                    "--output_dir/generated, --output_dir/projected, --output_dir/explored).")
flags.DEFINE_enum("noise_mode", "const", ["const", "random", "none"],
                  "generate: per-layer noise: const (one fixed map per layer: the same seed gives the same image), "
                  "random (fresh noise, as in training and evaluation) or none.")
flags.DEFINE_string("exported", None, "generate, evaluate, project, explore: use this exported .keras generator "
                    "instead of a checkpoint.")
flags.DEFINE_string("checkpoint", "auto", "generate, export, evaluate, project, explore: which checkpoint of "
                    "--output_dir: best (lowest held-out SWD, kept when training with --eval_kimg), latest, a step "
                    "number, or a checkpoint path; auto = best when the run kept one, else latest.")
# Evaluation (see README, "Measuring quality").
flags.DEFINE_float("eval_kimg", 0.0, "During training, SWD against real slices every this many thousand images "
                   "(0 = off); logged to TensorBoard, logs/history.json and the loss plot.")
flags.DEFINE_string("eval_dir", None, "Real slices to evaluate against (default: --data_dir; without either, the "
                    "built-in synthetic slices).")
flags.DEFINE_list("eval_splits", ["validate"], "COMP3710 splits of --eval_dir to evaluate against.")
flags.DEFINE_list("eval_subjects", [], "Evaluate against only these subjects (default: the --exclude_subjects, "
                  "i.e. the held-out ones, taken from --splits).")
flags.DEFINE_integer("eval_images", 500, "Generated images per periodic evaluation during training.", lower_bound=2)
flags.DEFINE_list("metrics", None, "evaluate: the metrics to compute, from "
                  + "; ".join(f"{k}: {v}" for k, v in evaluation.METRICS.items())
                  + ". Default: every one that runs offline (fid, kid and pr only with InceptionV3 weights).")
flags.DEFINE_list("eval_metrics", ["swd"], "train: the metrics of each periodic evaluation (--eval_kimg), from "
                  + ", ".join(evaluation.METRICS) + " (swd is always computed).")
flags.DEFINE_enum("best_by", "swd_each", list(evaluation.BEST_BY), "train: the periodic score that picks the best "
                  "checkpoint (lowest wins): swd_each = SWD with ProGAN's per-set normalisation (what papers report; "
                  "the default), swd = this project's (also counts a brightness shift), fid, kid or c2st (add them to "
                  "--eval_metrics), c2st_swd = swd_each x 2 (c2st - 0.5), SWD scaled by how far the classifier is "
                  "above chance (add c2st), level_swd = swd_each x level_mae / 0.1, SWD scaled by how far a "
                  "slice-conditional model's level read-back is from a tenth of the range (add level).")
flags.DEFINE_string("inception_weights", None, "evaluate: local InceptionV3 'notop' .h5 weights for FID/KID/precision/"
                    "recall when Keras cannot download them (without either, those metrics are skipped).")

# Projection (see README, "Projection and anomaly maps").
flags.DEFINE_string("target", None, "project: one slice image to reconstruct (colour is converted to gray, other "
                    "sizes padded to a square and resized, as training data), with the latest checkpoint in "
                    "--output_dir, the one --checkpoint names, or an --exported generator.")
flags.DEFINE_string("target_dir", None, "project: a folder of slice images (searched recursively, masks skipped), "
                    "optimised --project_batch at a time.")
flags.DEFINE_enum("project_space", None, list(projection.SPACES), "project: optimise one w for every layer (w, "
                  "the default from w_avg) or one w per layer (wplus: closer reconstructions, less typical latents; "
                  "the default from the encoder's start, the space it predicts).")
flags.DEFINE_integer("project_steps", None, "project: Adam steps per target (default: the reference projector's "
                     f"{projection.ProjectionSettings.num_steps} from w_avg, or {encoder_module.REFINE_STEPS} from the "
                     "encoder's start when the run has one).", lower_bound=1)
flags.DEFINE_boolean("project_encoder", True, "project: start from the run's projection encoder (RUN/encoder/, made "
                     "by --mode encoder) where it has one; --noproject_encoder starts at w_avg as the reference does.")
flags.DEFINE_integer("encoder_steps", encoder_module.EncoderSettings.steps, "encoder: Adam steps of "
                     f"{encoder_module.EncoderSettings.batch_size} generated and as many training slices.",
                     lower_bound=1)
flags.DEFINE_integer("project_batch", 8, "project: targets optimised at once (results are the same as one at a "
                     "time; batches are faster per target).", lower_bound=1)
flags.DEFINE_string("project_distance", projection.ProjectionSettings.distance,
                    "project: what the optimiser minimises between reconstruction and target: "
                    + "; ".join(f"{k}: {v}" for k, v in projection.DISTANCES.items())
                    + ". Join several with '+' to sum them (e.g. mse+dfeat).")
flags.DEFINE_boolean("project_noise", True, "project: also optimise per-target noise maps, kept white by the "
                     "reference's regulariser (--noproject_noise: the generator's fixed noise).")
flags.DEFINE_integer("project_seed", 0, "project: seeds each target's random draws (with its pixels).")
flags.DEFINE_string("vgg16_weights", None, "project: local VGG16 ImageNet 'notop' .h5 weights for "
                    "--project_distance lpips (never downloaded).")
# The explorer.
flags.DEFINE_string("host", "127.0.0.1", "explore: the address to serve the page on. The default is this machine "
                    "only; another (e.g. 0.0.0.0) exposes the page, which has no authentication, to the network.")
flags.DEFINE_integer("port", explorer.DEFAULT_PORT, "explore: the port of the page.", lower_bound=1, upper_bound=65535)
flags.DEFINE_string("projected_w", None, "generate: render the latents of a projection .npz (projected/<name>/"
                    "projected_w.npz, or projected/projected_w.npz for all) instead of seeds.")


# --help: one section per purpose. Config flags join the section their field names (config.tunable).
HELP_GROUPS = {
    "what to do": ["mode", "load", "clear", "dry_run", "init_from", "preset"],
    "data": ["data_dir", "splits", "exclude_subjects"],
    "model": [],
    "objective": [],
    "run": ["output_dir", "strategy", "tick_kimg", "keep_checkpoints", "steps_per_execution"],
    "generation": ["checkpoint", "exported", "seeds", "first_seed", "num_images", "psi", "truncation_cutoff",
                   "noise_mode", "mix_rows", "mix_cols", "mix_layers", "outdir", "projected_w", "sweep", "sweep_steps"],
    "conditioning": ["condition", "labels", "labels_missing"],
    "evaluation": ["eval_kimg", "eval_metrics", "best_by", "eval_images", "eval_dir", "eval_splits", "eval_subjects",
                   "metrics", "inception_weights"],
    "projection": ["target", "target_dir", "project_space", "project_steps", "project_batch", "project_distance",
                   "project_noise", "project_seed", "vgg16_weights", "project_encoder", "encoder_steps"],
    "explorer": ["host", "port"],
}
for _field in config_module.TUNABLES:
    HELP_GROUPS[_field.metadata["group"]].append(_field.name)
HELP_ARGS = ("--help", "-h", "-?", "--helpshort")         # --helpfull stays absl's (every module's flags)


def help_text(preset_name="quick"):
    """--help: the module docstring, then every flag of this program by section, with the defaults
    of `preset_name` for the config flags."""
    preset = config_module.PRESETS[preset_name]
    lines = [__doc__.strip(), "", f"Flags by purpose; config defaults are --preset {preset_name}'s."]
    for group, names in HELP_GROUPS.items():
        lines += ["", f"{group}:"]
        for name in names:
            flag = FLAGS[name]
            default = getattr(preset, name) if name in preset.__dataclass_fields__ else flag.default
            if name == "r1_gamma" and default is None:
                default = f"{preset.resolved_r1_gamma:g} (the heuristic)"
            elif isinstance(default, (list, tuple)):
                default = ",".join(map(str, default)) or "none"
            label = f"--[no]{name}" if flag.boolean else f"--{name}"
            text = f"{label}: {flag.help} (default: {'none' if default is None else default})"     # help has <choices>
            lines.append(textwrap.fill(text, 100, initial_indent="  ", subsequent_indent="      "))
    return "\n".join(lines)


def _preset_in(argv):
    """The --preset typed in argv (for --help's defaults), else quick."""
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--preset=") else (
            argv[i + 1] if arg == "--preset" and i + 1 < len(argv) else None)
        if value in config_module.PRESETS:
            return value
    return "quick"


def config_from_flags():
    """The chosen preset (or, with --init_from, that run's settings), overridden by every Config flag
    the user typed. Returns (config, typed names)."""
    base = runs.read_config(runs.Paths(FLAGS.init_from)) if FLAGS.init_from else config_module.PRESETS[FLAGS.preset]
    fields = {f.name for f in dataclasses.fields(config_module.Config)}
    typed = {name for name in fields if name in FLAGS and FLAGS[name].present}
    config = base.replace(**{name: FLAGS[name].value for name in typed})
    if config.r1_problem(typed):
        raise ValueError(config.r1_problem(typed))
    return config, typed


def run_options():
    if FLAGS.init_from and FLAGS.load:
        raise ValueError("--init_from starts a new run from another run's weights; --load weights resumes the run "
                         "in --output_dir: give one of them")
    eval_metrics = evaluation.check_metrics(["swd", *FLAGS.eval_metrics], "--eval_metrics")
    needed = evaluation.BEST_BY_NEEDS.get(FLAGS.best_by)
    if needed and needed not in eval_metrics:
        raise ValueError(f"--best_by {FLAGS.best_by} needs {needed} in --eval_metrics: add it (--eval_metrics "
                         f"{','.join(eval_metrics + (needed,))}) or choose --best_by swd_each")
    return training.RunOptions(
        output_dir=FLAGS.output_dir, data_dir=FLAGS.data_dir, splits=tuple(FLAGS.splits),
        tick_kimg=FLAGS.tick_kimg, keep_checkpoints=FLAGS.keep_checkpoints, resume=FLAGS.load == "weights",
        strategy=FLAGS.strategy, exclude_subjects=tuple(FLAGS.exclude_subjects),
        progress=sys.stderr.isatty(), eval_kimg=FLAGS.eval_kimg, eval_dir=FLAGS.eval_dir,
        eval_splits=tuple(FLAGS.eval_splits), eval_subjects=tuple(FLAGS.eval_subjects or FLAGS.exclude_subjects),
        eval_images=FLAGS.eval_images, eval_metrics=eval_metrics, best_by=FLAGS.best_by,
        inception_weights=FLAGS.inception_weights,
        init_from=FLAGS.init_from, steps_per_execution=FLAGS.steps_per_execution,
        condition=tuple(labels.parse_names(FLAGS.condition)) if FLAGS.mode == "train" else (),
        labels=FLAGS.labels, labels_missing=FLAGS.labels_missing,
        typed=frozenset(n for n in (*resume.DATA_SETTINGS, *resume.RUN_SETTINGS, "eval_subjects", "labels",
                                    "labels_missing") if FLAGS[n].present))


def train():
    config, typed = config_from_flags()
    options = run_options()
    if FLAGS.dry_run:
        return dry_run(config, typed, options)
    gan = training.train(config, options, typed)
    paths = runs.Paths(FLAGS.output_dir)
    logging.info("done at %g kimg: samples in %s, checkpoints in %s (weights %s)", int(gan.images_seen.numpy()) / 1000,
                 paths.samples, paths.checkpoints, checkpointing.weights_digest(gan))


def dry_run(config, typed, options):
    """Print what `train` would do (`training.plan`: settings, data, labels; network sizes, speed) and write nothing."""
    plan = training.plan(config, options, typed)
    config, options = plan.config, plan.options
    found = data.survey(options.data_dir, options.splits, options.exclude_subjects)
    source = "resumed run" if options.resume else f"--init_from {options.init_from}" if options.init_from \
        else f"preset {FLAGS.preset}"
    print(f"settings ({source}; * = typed):")
    for field in dataclasses.fields(config):
        print(f"  {field.name:18s} {getattr(config, field.name)!r}{' *' if field.name in typed else ''}")
    print(f"  {'r1_gamma in use':18s} {config.resolved_r1_gamma:g}")
    print(f"data: {found['folder'] or 'built-in synthetic slices'}")
    for split, counts in found["splits"].items():
        print(f"  {split:18s} {counts['files']} files, {counts['subjects']} subjects")
    print(f"  {'training':18s} {found['training_files']} files ({', '.join(options.splits)}), "
          f"{len(found['training_subjects'])} subjects; held out: {', '.join(found['held_out']) or 'none'}")
    if found["skipped"]:
        print("  skipped            " + ", ".join(f"{n} {kind}" for kind, n in found["skipped"].items()))
    if found["first_file_size"]:
        print(f"  slice size         {found['first_file_size']} (first file), trained at "
              f"{config.resolution}x{config.resolution}")
    if plan.spec:
        print(f"labels: {labels.describe(plan.spec)} (the resumed run's)")
    elif options.condition and not options.resume:
        print(f"labels: {training.preview_labels(options)}")
    gan, seconds_per_kimg = training.time_steps(config)
    print(f"parameters: generator {gan.generator.count_params():,} (mapping {gan.generator.mapping.count_params():,}), "
          f"discriminator {gan.discriminator.count_params():,}")
    print(f"speed: {seconds_per_kimg:.1f} s/kimg for the training step ({config.batch_size} images a step), so "
          f"--kimg {config.kimg:g} takes about {training.format_seconds(seconds_per_kimg * config.kimg)} before "
          f"ticks and evaluation")
    print("dry run: nothing written")


def open_generator(discriminator=False):
    """The `inference.Trained` generator that --exported, or --output_dir and --checkpoint, name."""
    return inference.open_generator(FLAGS.output_dir, FLAGS.checkpoint, FLAGS.exported, discriminator)


def requested_label(spec):
    """The --condition values of a generation: (label vector or None, {name: value})."""
    if spec is None:
        if FLAGS.condition or FLAGS.sweep:
            raise labels.LabelError("this generator is unconditional: leave out --condition and --sweep")
        return None, {}
    values = labels.parse_request(spec, FLAGS.condition, optional=[FLAGS.sweep] if FLAGS.sweep else [])
    swept = labels.find_column(spec, FLAGS.sweep) if FLAGS.sweep else None
    if swept is not None and swept.name not in values:             # the sweep's first value stands in for it
        values[swept.name] = labels.sweep_values(swept, FLAGS.sweep_steps)[0]
    return labels.encode_values(spec, values), values


def generate_images():
    out = FLAGS.outdir or runs.Paths(FLAGS.output_dir).generated
    if FLAGS.projected_w:
        g = open_generator().generator       # saved styles carry a conditional model's labels already
        paths = projection.write_projected_images(g, FLAGS.projected_w, out)
        logging.info("rendered %d projected latents from %s to %s", len(paths), FLAGS.projected_w, out)
        return
    if not math.isfinite(FLAGS.psi):
        raise ValueError(f"--psi={FLAGS.psi} must be a finite number: 1 is off, 0.5-0.8 the usual range")
    if not 0.0 <= FLAGS.psi <= 1.0:
        logging.warning("--psi %g is outside [0, 1]: psi > 1 exaggerates each image's distance from the average "
                        "(more artefacts), psi < 0 mirrors it; 1 is off, 0.5-0.8 is the usual range", FLAGS.psi)
    seeds = (sampling.parse_ranges(FLAGS.seeds) if FLAGS.seeds
             else list(range(FLAGS.first_seed, FLAGS.first_seed + FLAGS.num_images)))
    rows = sampling.parse_ranges(FLAGS.mix_rows, "--mix_rows") if FLAGS.mix_rows else seeds[:5]
    cols = sampling.parse_ranges(FLAGS.mix_cols, "--mix_cols") if FLAGS.mix_cols else seeds[5:11] or seeds[:5]
    layers = sampling.parse_ranges(FLAGS.mix_layers, "--mix_layers")
    trained = open_generator()
    g, spec = trained.generator, trained.spec
    c, values = requested_label(spec)
    truncation = {"psi": FLAGS.psi, "truncation_cutoff": FLAGS.truncation_cutoff, "c": c}
    sampling.write_images(out, g, seeds, noise_mode=FLAGS.noise_mode, **truncation)
    grid = sampling.style_mixing_grid(g, rows, cols, layers, noise_mode=FLAGS.noise_mode, **truncation)
    visualize.save_grid(os.path.join(out, "style_mixing.png"), grid, columns=len(cols) + 1)
    if FLAGS.sweep:
        sweep, swept = sampling.sweep_grid(g, spec, seeds[:8], values, FLAGS.sweep, FLAGS.sweep_steps, FLAGS.psi,
                                           FLAGS.noise_mode)
        path = os.path.join(out, f"sweep_{FLAGS.sweep.lower()}.png")
        visualize.save_grid(path, sweep, columns=len(swept))
        logging.info("wrote %s: %s = %s across, seeds %s down", path, FLAGS.sweep,
                     ", ".join(f"{v:g}" if isinstance(v, float) else v for v in swept), seeds[:8])
    frames = sampling.interpolation(g, (seeds * 2)[:4], **truncation)
    visualize.save_grid(os.path.join(out, "interpolation.png"), frames[::3], columns=len(frames[::3]))
    visualize.save_gif(os.path.join(out, "interpolation.gif"), frames)
    logging.info("wrote %d images (seeds %s, psi %.2f%s), grid.png, style_mixing.png (rows %s, columns %s, layers "
                 "%s) and interpolation.gif to %s", len(seeds), FLAGS.seeds or f"{seeds[0]}-{seeds[-1]}", FLAGS.psi,
                 "".join(f", {k} {v}" for k, v in values.items()), rows, cols, layers, out)


def export():
    paths = runs.Paths(FLAGS.output_dir)
    trained = open_generator()
    path = inference.export(trained.generator, paths.exports, trained.spec)
    logging.info("exported the EMA generator to %s; load it with keras.models.load_model after `import generator`", path)


def evaluate():
    paths = runs.Paths(FLAGS.output_dir)
    options = resume.resolve_run_data(paths, run_options(), resume=False)       # the run's data unless typed
    names = evaluation.check_metrics(FLAGS.metrics) if FLAGS.metrics else None
    evaluation.evaluate_run(paths, open_generator(), options.reference_parts,
                            num_images=FLAGS.num_images if FLAGS["num_images"].present else None,
                            inception_weights=FLAGS.inception_weights, names=names,
                            training=(options.data_dir, options.splits, options.exclude_subjects))


def projection_settings(encoded=False):
    """The --project_* settings; `encoded`: starting from an encoder (encoder.projection_settings)."""
    settings = projection.ProjectionSettings(distance=FLAGS.project_distance, optimize_noise=FLAGS.project_noise,
                                             seed=FLAGS.project_seed)
    return encoder_module.projection_settings(settings, encoded, space=FLAGS.project_space,
                                              num_steps=FLAGS.project_steps)


def run_encoder(trained):
    """The run's projection encoder for `trained`, or None (--noproject_encoder, an export, none saved)."""
    if not FLAGS.project_encoder or FLAGS.exported:
        return None
    found = encoder_module.find(runs.Paths(FLAGS.output_dir).encoder, trained.generator)
    if found is None:
        return None
    net, info = found
    if info.get("checkpoint") != os.path.basename(trained.source):
        logging.warning("the encoder was trained for %s, and this is %s: its start is less close (train it again "
                        "with --mode encoder)", info.get("checkpoint"), os.path.basename(trained.source))
    return net


def project_slices():
    trained = open_generator(discriminator=True)
    g, d = projection.unconditional(trained.generator), trained.discriminator
    net = run_encoder(trained)
    settings = projection_settings(encoded=net is not None)
    distance = projection.make_distance(settings.distance, d, FLAGS.vgg16_weights, g.resolution)
    names, targets = projection.load_targets(FLAGS.target, FLAGS.target_dir, g.resolution, g.channels)
    out = FLAGS.outdir or os.path.join(FLAGS.output_dir, "projected")
    logging.info("projecting %d slice(s) at %dx%d in %s, %d steps from %s, distance %s", len(names), g.resolution,
                 g.resolution, settings.space, settings.num_steps, "w_avg" if net is None else "the encoder's start",
                 distance.name)
    summary = projection.project_files(g, names, targets, settings, out, distance, FLAGS.project_batch,
                                       encoder=net)
    logging.info("projected %d slice(s): mean PSNR %.2f dB, SSIM %.3f, %.1f s per slice; outputs in %s",
                 len(names), summary["mean_psnr"], summary["mean_ssim"], summary["seconds_per_target"], out)


def train_encoder():
    if FLAGS.exported:
        raise ValueError("the encoder is trained for a checkpoint of a run, beside which it is saved: leave out "
                         "--exported and give the run's --output_dir")
    paths = runs.Paths(FLAGS.output_dir)
    options = resume.resolve_run_data(paths, run_options(), resume=False)       # the run's data unless typed
    trained = open_generator(discriminator=True)
    g = projection.unconditional(trained.generator)
    reals = data.load_slices(options.data_dir, g.resolution, paths.cache, splits=options.splits,
                             channels=g.channels, exclude_subjects=options.exclude_subjects)
    settings = encoder_module.EncoderSettings(steps=FLAGS.encoder_steps, seed=FLAGS.seed)
    logging.info("training the projection encoder of %s for %d steps on generated slices and %d training slices",
                 trained.source, settings.steps, len(reals))
    net, history = encoder_module.train_encoder(g, reals, settings, trained.discriminator)
    info = {"checkpoint": os.path.basename(trained.source), "images_seen": trained.images_seen,
            "settings": dataclasses.asdict(settings), "final": encoder_module.mean_terms(history)}
    encoder_module.save(paths.encoder, net, info)
    logging.info("saved the encoder to %s (last 100 steps: %s); --mode project now starts from it", paths.encoder,
                 ", ".join(f"{k} {v:.4g}" for k, v in info["final"].items()))


def explore():
    trained = open_generator(discriminator=True)
    net = None if trained.generator.c_dim else run_encoder(trained)
    settings = projection_settings(encoded=net is not None)
    distance = projection.make_distance(settings.distance, trained.discriminator, FLAGS.vgg16_weights,
                                        trained.generator.resolution)
    out = FLAGS.outdir or os.path.join(FLAGS.output_dir, "explored")
    explorer.serve(explorer.Explorer(trained, settings, distance, out, net), FLAGS.host, FLAGS.port)


def configure_logging():
    """Timestamped INFO lines from this project; from libraries (TensorFlow logs its checkpoint
    internals through absl too) only warnings and errors."""
    here = os.path.dirname(os.path.abspath(__file__))
    handler = logging.get_absl_handler()
    handler.setFormatter(std_logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    handler.addFilter(lambda record: record.levelno >= std_logging.WARNING or record.pathname.startswith(here))
    logging.set_verbosity(logging.INFO)


def parse_flags(argv):
    """absl's flag parsing, with exit status 2 for a usage error (absl's own is 1, which here means
    a user error found while running)."""
    if any(arg in HELP_ARGS for arg in argv[1:]):
        print(help_text(_preset_in(argv)))
        sys.exit(0)
    try:
        return FLAGS(argv)
    except flags.Error as error:
        sys.stderr.write(f"FATAL Flags parsing error: {error}\nPass --help to see every flag.\n")
        sys.exit(USAGE_ERROR)


def check_flags():
    """The refusals that need no file, before --clear deletes anything or a run writes anything."""
    if FLAGS.clear == "checkpoints" and (FLAGS.dry_run or FLAGS.load):
        other = "--dry_run, which deletes nothing" if FLAGS.dry_run else "--load weights, which resumes from them"
        raise ValueError(f"--clear checkpoints deletes the run's checkpoints, and {other}: give one of them")
    if FLAGS.mode == "train" and (not FLAGS.clear or FLAGS["mode"].present or FLAGS.load):
        config_from_flags()                  # each raises ValueError on a number out of range
        run_options()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; flags look like --name=value", exitcode=USAGE_ERROR)
    configure_logging()
    try:
        check_flags()
        if FLAGS.clear:
            paths = runs.Paths(FLAGS.output_dir)
            for path in resume.clear_outputs(paths, FLAGS.clear, delete=not FLAGS.dry_run):
                if FLAGS.dry_run:
                    print(f"--clear {FLAGS.clear} would delete {path}")
                else:
                    logging.info("deleted %s", path)
            if not (FLAGS["mode"].present or FLAGS.load):
                return 0
        {"train": train, "generate": generate_images, "export": export, "evaluate": evaluate,
         "project": project_slices, "encoder": train_encoder, "explore": explore}[FLAGS.mode]()
    except (data.DataError, runs.RunError, NonFiniteLossError, ValueError, FileNotFoundError) as e:
        logging.error("%s", e)
        return USER_ERROR
    except OSError as e:                     # a folder that is a file, read-only or full: one line, not a traceback
        flag = "--outdir" if FLAGS.outdir and FLAGS.mode in ("generate", "project", "explore") else "--output_dir"
        logging.error("%s", runs.folder_problem(e.filename or FLAGS.output_dir, e, flag))
        return USER_ERROR
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
