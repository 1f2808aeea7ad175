"""Every tunable of the project in one place, with its default and unit, plus named presets.

Lives here: the frozen `Config` dataclass, `PRESETS`, and the derived defaults (R1 gamma, lazy
regularisation ratios). Flags live in driver.py only; everything below it takes a `Config` or
plain arguments. Not here: parsing, file handling.
"""

import dataclasses
import json

from generator import check_resolution
from layers import DOWN_MODES
from losses import LOSSES


@dataclasses.dataclass(frozen=True)
class Config:
    # Data.
    resolution: int = 64               # pixels per side, power of two from 8 to 1024
    channels: int = 1                  # image channels; 1 = grayscale MRI
    mirror: bool = True                # flip each real slice left-right with probability 1/2 (x2 data)
    # Networks.
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 2            # 2-8; the paper uses 8, 2 is as good for single-domain MRI and cheaper
    channel_base: int = 8192           # feature maps at resolution r: min(channel_base / r, channel_max)
    channel_max: int = 256
    fused_modconv: bool = False        # grouped per-sample kernels instead of modulating activations
    const_std: float = 0.05            # initial std of the learned 4x4 constant; the reference's is 1.0
    d_downsample: str = "decimate"     # D's 3x3 downsampling conv: "decimate" (blur, decimate, conv at
                                       # half resolution) or "strided" (the reference: blur, stride-2 conv)
    mbstd_group_size: int = 4          # minibatch stddev group; must divide the per-replica batch
    # Objective.
    loss: str = "logistic"             # one of losses.LOSSES
    r1_gamma: float | None = None      # None: 0.0002 * resolution^2 / batch_size (paper's heuristic); only
                                       # logistic and hinge use R1 (bce has none, wgan-gp its own penalty)
    gp_lambda: float = 10.0            # WGAN-GP penalty weight
    wgan_drift: float = 0.001          # WGAN drift term weight
    n_critic: int = 1                  # D steps per G step (wgan-gp traditionally uses 5)
    pl_weight: float = 2.0             # path length regularisation weight (0 = off)
    pl_decay: float = 0.01             # decay of the running mean path length
    pl_batch_shrink: int = 2           # path length on batch / shrink samples
    style_mixing_prob: float = 0.9     # probability of mixing two latents in a G batch
    d_reg_interval: int = 16           # lazy R1/GP: every N D steps (1 = every step)
    g_reg_interval: int = 4            # lazy path length: every N G steps
    # Optimisation.
    batch_size: int = 16               # global batch (split across replicas)
    g_lr: float = 0.0025
    d_lr: float = 0.0025
    beta1: float = 0.0
    beta2: float = 0.99
    epsilon: float = 1e-8
    ema_kimg: float = 10.0             # half-life of the generator EMA, thousands of images
    ema_rampup: float | None = 0.05    # EMA half-life at most this fraction of images seen (None = off)
    w_avg_beta: float = 0.995          # decay of the tracked mean w used for truncation
    # Augmentation (ADA).
    augment: str = "off"               # "off", "ada" (adaptive p) or "fixed"
    augment_p: float = 0.0             # initial (ada) or constant (fixed) augmentation probability
    ada_target: float = 0.6            # target of the overfitting heuristic r_t = E[sign(D(real))]
    ada_interval: int = 4              # adjust p every N D steps
    ada_kimg: float = 500.0            # p can move from 0 to 1 in this many thousand images
    # Run.
    kimg: float = 200.0                # training length, thousands of real images shown to D
    seed: int = 0
    precision: str = "float32"         # "float32", "bfloat16" (CPU/TPU) or "float16" (GPU, loss scaled)
    xla: bool = False                  # jit_compile the train step

    def __post_init__(self):
        check_resolution(self.resolution)
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of: {', '.join(LOSSES)}")
        if self.augment not in ("off", "ada", "fixed"):
            raise ValueError(f"augment must be 'off', 'ada' or 'fixed', got {self.augment!r}")
        if self.d_downsample not in DOWN_MODES:
            raise ValueError(f"d_downsample must be one of {', '.join(DOWN_MODES)}, got {self.d_downsample!r}")
        if self.const_std <= 0:
            raise ValueError(f"const_std must be positive, got {self.const_std}")
        if self.precision not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"precision must be float32, bfloat16 or float16, got {self.precision!r}")
        if not 1 <= self.mapping_layers <= 8:
            raise ValueError(f"mapping_layers must be 2-8 (1 allowed for tests), got {self.mapping_layers}")
        if self.batch_size < 1 or self.n_critic < 1 or self.d_reg_interval < 1 or self.g_reg_interval < 1:
            raise ValueError("batch_size, n_critic and the regularisation intervals must be at least 1")
        for name in ("g_lr", "d_lr"):
            if not getattr(self, name) > 0:           # also NaN
                raise ValueError(f"--{name}={getattr(self, name)} must be positive (the default is 0.0025)")
        if not self.kimg >= 0:
            raise ValueError(f"--kimg={self.kimg} must be positive: the training length in thousands of images")

    @property
    def resolved_r1_gamma(self):
        """R1 weight: 0 for the losses trained without R1 (bce, wgan-gp), else r1_gamma or the heuristic."""
        if LOSSES[self.loss].penalty != "r1":
            return 0.0
        if self.r1_gamma is not None:
            return float(self.r1_gamma)
        return 0.0002 * self.resolution ** 2 / self.batch_size

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

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


# What a configuration saved before these fields existed meant by leaving them out.
BEFORE_FIELD = {"const_std": 0.05, "d_downsample": "decimate", "mirror": True}

PRESETS = {
    # The plain `python driver.py` run: about 11 minutes on 2 CPU cores, recognisable heads.
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
