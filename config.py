"""Every tunable of the project in one place, with its default and unit, plus named presets.

Lives here: the frozen `Config` dataclass, `PRESETS`, and the derived defaults (R1 gamma, lazy
regularisation ratios). Flags live in driver.py only; everything below it takes a `Config` or
plain arguments. Not here: parsing, file handling.
"""

import dataclasses
import math

from layers import DOWN_MODES, MAPPING_DEPTHS, check_resolution
from losses import LOSSES


def tunable(default, help, group, choices=None):
    """A Config field that is also a command-line flag (driver.py makes one per tunable): `help` is
    its --help text, `group` the --help section, `choices` the allowed values of a string."""
    return dataclasses.field(default=default, metadata={"help": help, "group": group, "choices": choices})


# The numbers that may be 0 but not negative, NaN or above their bound (inf: any finite number).
RANGES = {"kimg": math.inf, "r1_gamma": math.inf, "pl_weight": math.inf, "gp_lambda": math.inf, "ema_kimg": math.inf,
          "ema_rampup": math.inf, "style_mixing_prob": 1, "augment_p": 1, "ada_target": 1, "pl_decay": 1,
          "w_avg_beta": 1}


@dataclasses.dataclass(frozen=True)
class Config:
    # Data.
    resolution: int = tunable(64, "Training resolution in pixels (a power of two, 8-1024).", "data")
    channels: int = 1                  # image channels; 1 = grayscale MRI
    c_dim: int = 0                     # label length of a conditional run (labels.py; set from --condition)
    mirror: bool = tunable(True, "Flip each real slice left-right with probability 1/2 (brains are nearly "
                           "symmetric; --nomirror for data where left and right differ).", "data")
    # Networks.
    z_dim: int = tunable(512, "Latent z size.", "model")
    w_dim: int = tunable(512, "Style w size.", "model")
    mapping_layers: int = tunable(2, f"Depth of the mapping network ({MAPPING_DEPTHS[0]}-{MAPPING_DEPTHS[1]}; the "
                                  "paper uses 8, 2 is as good for single-domain MRI and cheaper).", "model")
    channel_base: int = tunable(8192, "Feature maps at resolution r: min(channel_base / r, channel_max).", "model")
    channel_max: int = tunable(256, "Most feature maps in any layer.", "model")
    fused_modconv: bool = tunable(False, "Grouped per-sample convolution instead of modulating activations.",
                                  "model")
    const_std: float = tunable(0.05, "Initial standard deviation of the generator's learned 4x4 constant; "
                               "StyleGAN2 uses 1.0 (README, Differences from the reference).", "model")
    d_downsample: str = tunable("strided", "How the discriminator's 3x3 convs downsample: strided (StyleGAN2: "
                                "blur at full resolution, then a stride-2 conv; measured better on held-out "
                                "slices, README) or decimate (blur and decimate, then convolve at half "
                                "resolution: this project's first version).", "model", DOWN_MODES)
    mbstd_group_size: int = 4          # minibatch stddev group; must divide the per-replica batch
    # Objective.
    loss: str = tunable("logistic", "logistic: StyleGAN2's non-saturating loss with R1; bce: binary "
                        "cross-entropy without R1; hinge: hinge loss with R1; wgan-gp: Wasserstein loss with "
                        "gradient penalty.", "objective", tuple(LOSSES))
    r1_gamma: float | None = tunable(None, "R1 weight gamma (logistic and hinge only); none set: 0.0002 * "
                                     "resolution^2 / batch_size, the paper's heuristic.", "objective")
    gp_lambda: float = 10.0            # WGAN-GP penalty weight
    wgan_drift: float = 0.001          # WGAN drift term weight
    n_critic: int = tunable(1, "Discriminator steps per generator step (wgan-gp traditionally uses 5).",
                            "objective")
    pl_weight: float = tunable(2.0, "Path-length regularisation weight (0 turns it off).", "objective")
    pl_decay: float = 0.01             # decay of the running mean path length
    pl_batch_shrink: int = 2           # path length on batch / shrink samples
    style_mixing_prob: float = tunable(0.9, "Probability of style-mixing regularisation (two latents in a "
                                       "generator batch).", "objective")
    d_reg_interval: int = 16           # lazy R1/GP: every N D steps (1 = every step)
    g_reg_interval: int = 4            # lazy path length: every N G steps
    # Optimisation.
    batch_size: int = tunable(16, "Global batch size (split across replicas).", "run")
    g_lr: float = tunable(0.0025, "Generator Adam learning rate.", "run")
    d_lr: float = tunable(0.0025, "Discriminator Adam learning rate.", "run")
    beta1: float = 0.0
    beta2: float = 0.99
    epsilon: float = 1e-8
    ema_kimg: float = tunable(10.0, "Half-life of the generator's moving average, in thousands of images.", "run")
    ema_rampup: float | None = 0.05    # EMA half-life at most this fraction of images seen (None = off)
    w_avg_beta: float = 0.995          # decay of the tracked mean w used for truncation
    # Augmentation (ADA).
    augment: str = tunable("off", "Discriminator augmentation: off, ada (adaptive p, for small datasets) or "
                           "fixed p.", "objective", ("off", "ada", "fixed"))
    augment_p: float = tunable(0.0, "Augmentation probability: the start value for ada, the constant for fixed.",
                               "objective")
    ada_target: float = tunable(0.6, "ADA's target for r_t = E[sign(D(real))].", "objective")
    ada_interval: int = 4              # adjust p every N D steps
    ada_kimg: float = tunable(500.0, "ADA speed: p can move from 0 to 1 in this many thousand images (the "
                              "paper's 500 suits GPU-length runs; use 10-50 for short CPU runs).", "objective")
    # Run.
    kimg: float = tunable(200.0, "Training length in thousands of real images shown to D.", "run")
    seed: int = tunable(0, "Random seed: same seed, same run.", "run")
    precision: str = tunable("float32", "Compute precision (variables stay float32): bfloat16 for TPUs and CPUs "
                             "with AMX, float16 with dynamic loss scaling for NVIDIA GPUs. Without AMX, bfloat16 "
                             "convolutions are slower than float32 on CPU (README, Speed).", "run",
                             ("float32", "bfloat16", "float16"))
    fp16_resolutions: int = tunable(4, "With --precision float16: the layers of this many highest resolutions "
                                    "of G and D compute in float16, the rest (4x4 always) in float32, and every "
                                    "conv output is clamped to +-256 (the reference's num_fp16_res and "
                                    "conv_clamp). 0: all float32.", "run")
    xla: bool = tunable(False, "Compile the training step with XLA (jit_compile).", "run")

    def __post_init__(self):
        check_resolution(self.resolution)
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if self.fp16_resolutions < 0:
            raise ValueError(f"fp16_resolutions must be 0 or more, got {self.fp16_resolutions}")
        if self.const_std <= 0:
            raise ValueError(f"const_std must be positive, got {self.const_std}")
        low, high = MAPPING_DEPTHS
        if not low <= self.mapping_layers <= high:
            raise ValueError(f"mapping_layers must be {low}-{high}, got {self.mapping_layers}")
        if self.batch_size < 1 or self.n_critic < 1 or self.d_reg_interval < 1 or self.g_reg_interval < 1:
            raise ValueError("batch_size, n_critic and the regularisation intervals must be at least 1")
        for name in ("g_lr", "d_lr", "ada_kimg"):
            if not 0 < getattr(self, name) < math.inf:           # also NaN
                raise ValueError(f"--{name}={getattr(self, name)} must be positive and finite")
        for name, high in RANGES.items():
            value = getattr(self, name)
            if value is not None and not (0 <= value <= high and math.isfinite(value)):    # also NaN
                raise ValueError(f"--{name}={value} must be {'finite and ' * (high == math.inf)}at least 0"
                                 + (f" and at most {high:g}" if high < math.inf else ""))

    @property
    def half_resolutions(self):
        """How many highest resolutions compute in float16: fp16_resolutions with float16, else 0
        (bfloat16 runs the whole network in bfloat16, its range needs no split and no clamp)."""
        return self.fp16_resolutions if self.precision == "float16" else 0

    @property
    def conv_clamp(self):
        """The reference's conv_clamp: 256 wherever float16 is used, else none."""
        return 256.0 if self.half_resolutions > 0 else None

    @property
    def resolved_r1_gamma(self):
        """R1 weight: 0 for the losses trained without R1 (bce, wgan-gp), else r1_gamma or the heuristic."""
        if LOSSES[self.loss].penalty != "r1":
            return 0.0
        if self.r1_gamma is not None:
            return float(self.r1_gamma)
        return 0.0002 * self.resolution ** 2 / self.batch_size

    @property
    def d_penalty(self):
        """The discriminator's penalty term: "r1" (weight resolved_r1_gamma), "gp" (WGAN-GP's gradient
        penalty) or None (bce, or R1 with weight 0)."""
        if LOSSES[self.loss].penalty == "gp":
            return "gp"
        return "r1" if self.resolved_r1_gamma > 0 else None

    def r1_problem(self, typed, saved=None):
        """What is wrong with a typed --r1_gamma, or None. The R1 rules, in one place (the weight itself is
        `resolved_r1_gamma`): --r1_gamma is for the losses trained with R1, and a resume (`saved`: the
        run's configuration) turns R1 neither on nor off."""
        if "r1_gamma" not in typed:
            return None
        if LOSSES[self.loss].penalty != "r1":
            return f"--r1_gamma applies to the logistic and hinge losses, not --loss={self.loss}"
        if saved is not None and (saved.resolved_r1_gamma == 0.0 or self.resolved_r1_gamma == 0.0):
            return (f"--r1_gamma={self.r1_gamma} (checkpoint: {saved.resolved_r1_gamma} with --loss={saved.loss}; R1 "
                    f"cannot be turned on or off in the middle of a run)")
        return None

    @classmethod
    def from_dict(cls, values):
        """A saved configuration. Keys it lacks take the value they had before the field existed
        (`BEFORE_FIELD`), so an old run resumes with the networks it was trained with."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
        return cls(**{**BEFORE_FIELD, **values})

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


TUNABLES = [f for f in dataclasses.fields(Config) if "help" in f.metadata]          # one flag each
CHOICES = {f.name: f.metadata["choices"] for f in TUNABLES if f.metadata["choices"]}

# What a configuration saved before these fields existed meant by leaving them out.
BEFORE_FIELD = {"const_std": 0.05, "d_downsample": "decimate", "mirror": True, "c_dim": 0}

PRESETS = {
    # The plain `python driver.py` run, sized for two CPU cores (its time: README, Quick start).
    # r1_gamma 1.0 instead of the heuristic's 0.0128: head-shaped samples by 6 kimg instead of noise.
    "quick": Config(resolution=32, channel_base=4096, channel_max=128, z_dim=128, w_dim=128,
                    mapping_layers=2, batch_size=16, kimg=20.0, ema_kimg=2.0, r1_gamma=1.0),
    # The benchmark reference: 64x64, batch 16, channel_base 8192, channel_max 256, mapping depth 2.
    "reference": Config(),
    # NVlabs' `--cfg stylegan2` (config F) at 256x256, for GPUs: the reference networks, lr 0.002,
    # R1 gamma 10, EMA half-life 10 kimg without ramp-up, batch 32, mapping depth 8.
    "paper": Config(resolution=256, channel_base=32768, channel_max=512, mapping_layers=8, batch_size=32,
                    kimg=25000.0, g_lr=0.002, d_lr=0.002, r1_gamma=10.0, ema_kimg=10.0, ema_rampup=None,
                    const_std=1.0, d_downsample="strided"),
}
