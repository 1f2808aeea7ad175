"""The built-in synthetic brain: T1-like axial slices drawn from a parametric phantom.

Lives here: `synthetic_slices`, the default training data when no --data_dir is given (so that
`python driver.py` trains on a fresh machine) and the test suite's stand-in for MRI: skull, scalp,
CSF, grey and white matter, deep grey nuclei and ventricles on ellipses whose sizes, positions and
contrasts vary with the slice level and the subject. Not here: loading and caching it (data.py).
"""

import numpy as np

import pixels


def _smoothstep(lo, hi, x):
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _ellipse(x, y, cx, cy, ax, ay, angle, pixel):
    """Soft (antialiased) coverage in [0, 1] of a rotated ellipse; all arguments broadcast.
    Near the edge 1 - rho ~ (1 - rho^2) / 2, which saves a square root."""
    angle = np.asarray(angle, np.float32)       # a float64 scalar would promote the arrays to float64
    c, s = np.cos(angle), np.sin(angle)
    u, v = ((x - cx) * c + (y - cy) * s) / ax, ((y - cy) * c - (x - cx) * s) / ay
    return np.clip(0.5 + (0.5 - 0.5 * (u * u + v * v)) * (np.minimum(ax, ay) / pixel), 0.0, 1.0)


def _deep_structures(ax, y, sv, on, size, pixel):
    """Grey nuclei and the lateral ventricles on the mirrored coordinates (|x|, y) of the slices
    that reach them: two slits beside the midline that open into a butterfly deeper down.
    `sv` scales with the head, `on` (0..1) is how far below their top the slice is, `size` is the
    subject's ventricle size. Returns two coverages [c, R, R]."""
    nuclei = np.maximum.reduce([
        _ellipse(ax, y, 0.22 * sv, 0.0 * sv, 0.05 * sv, 0.14 * sv, -0.3, pixel),              # putamen
        _ellipse(ax, y, 0.08 * sv, -0.12 * sv, 0.07 * sv, 0.09 * sv, 0.0, pixel),             # thalamus
        _ellipse(ax, y, 0.11 * sv, 0.15 * sv, 0.045 * sv, 0.07 * sv, -0.3, pixel),            # caudate head
    ]) * on ** 3
    width = (0.014 + 0.03 * on * size) * sv
    front = _ellipse(ax, y, (0.035 + 0.02 * on) * sv + width, (0.07 + 0.07 * on) * sv,
                     width, (0.07 + 0.07 * on) * sv, -0.55 * on, pixel)
    back = _ellipse(ax, y, (0.045 + 0.06 * on) * sv + width, -(0.06 + 0.09 * on) * sv,
                    width * 1.15, (0.08 + 0.07 * on) * sv, 0.15 + 0.5 * on, pixel)
    return nuclei, np.maximum(front, back)


SYNTHETIC_CHUNK = 64                   # slices rendered at once (bounds memory at high resolution)


def synthetic_slices(n, resolution, seed=0):
    """Procedural T1-weighted axial brain slices: uint8 [n, resolution, resolution], a pure function of
    (n, resolution, seed). Slice i lies at depth t ~ i/n, from near the vertex (small section, no
    ventricles) down to the level of the lateral ventricles (large section, butterfly ventricles);
    each slice has its own head size, aspect ratio, scalp and skull, folding and ventricle size.

    Layers from outside in: skin, bright subcutaneous fat, dark skull with brighter marrow, dark CSF,
    grey cortex around dark sulci, bright white matter, grey nuclei and dark ventricles; then a
    smooth multiplicative bias field and a little noise inside the head.
    """
    n, resolution = int(n), int(resolution)
    rng = np.random.default_rng([int(seed), 0x5EED])
    p = {                                                            # each [n] or [n, k]
        "t": (np.arange(n) + rng.uniform(size=n)) / max(n, 1),       # depth: 0 vertex .. 1 ventricles
        "size": rng.normal(1.0, 0.04, n).clip(0.9, 1.08),
        "aspect": rng.uniform(0.76, 0.86, n),                        # left-right / anterior-posterior
        "shift": rng.normal(0.0, 0.01, [n, 2]),
        "tilt": rng.normal(0.0, 0.02, n),                            # radians
        "scalp": rng.uniform(0.045, 0.07, n),
        "skull": rng.uniform(0.03, 0.045, n),
        "gyri": rng.uniform(17.0, 22.0, n),                          # sulci per hemisphere, front to back
        "warp": rng.uniform(0, 2 * np.pi, [n, 3]),
        "warp_amp": rng.uniform(0.3, 0.8, n),
        "meander": rng.uniform(0.25, 0.4, n),                        # cycles of sulcus wander per wave
        "waves": np.concatenate([rng.normal(0.0, 9.0, [n, 4, 2]), rng.uniform(0, 2 * np.pi, [n, 4, 1])], -1),
        "sulcus_depth": rng.uniform(0.15, 0.24, n),
        "cortex": rng.uniform(0.022, 0.028, n),
        "ventricle": rng.lognormal(0.0, 0.3, n).clip(0.6, 2.0),
        "ventricle_start": rng.uniform(0.5, 0.65, n),
        "bias": rng.normal(0.0, 0.05, [n, 3]) * [0.6, 1.0, 1.0],   # x, y, radial
        "contrast": rng.normal(0.0, 0.045, [n, 2]),
    }
    out = np.empty([n, resolution, resolution], np.uint8)
    for start in range(0, n, SYNTHETIC_CHUNK):
        stop = min(n, start + SYNTHETIC_CHUNK)
        chunk = {k: v[start:stop] for k, v in p.items()}
        out[start:stop] = _render_phantom(chunk, resolution, np.random.default_rng([int(seed), 0x5EED, start]))
    return out


def _render_phantom(p, resolution, rng):
    """Render one chunk of phantom slices from their parameters: uint8 [c, R, R]. Lengths are in
    units of half the image width; every edge is drawn with a one-pixel ramp (antialiased)."""
    c = len(p["t"])
    col = lambda a: np.asarray(a, np.float32).reshape(c, 1, 1)       # noqa: E731  [c] -> [c, 1, 1]
    pixel = 2.0 / resolution
    coords = (np.arange(resolution, dtype=np.float32) + 0.5) * pixel - 1.0
    x0, y0 = coords[None, None, :], -coords[None, :, None]          # [1, 1, R], [1, R, 1]; y up = anterior
    t, tilt = col(p["t"]), col(p["tilt"])
    dx, dy = x0 - col(p["shift"][:, 0]), y0 - col(p["shift"][:, 1])
    x = dx * np.cos(tilt) - dy * np.sin(tilt)                        # [c, R, R]
    y = dx * np.sin(tilt) + dy * np.cos(tilt)

    # Head outline: an ellipse, a little wider at the back, shrinking towards the vertex.
    section = 0.45 + 0.55 * np.sqrt(np.clip(1.0 - (1.0 - t) ** 2, 0.0, 1.0))                        # [c, 1, 1]
    b = 0.8 * col(p["size"]) * section                               # anterior-posterior semi-axis
    a = b * col(p["aspect"]) * (1.0 - 0.06 * y / b)                  # left-right, wider posteriorly
    r = np.sqrt(x * x + y * y) + 1e-4
    rho = np.sqrt((x / a) ** 2 + (y / b) ** 2) + 1e-4                # 1 on the skin
    depth = r / rho - r                                              # distance in from the skin, along the ray
    oblique = 1.0 + 1.5 * (1.0 - t) ** 3                             # near the vertex the cut is oblique
    scalp, skull = col(p["scalp"]) * oblique, col(p["skull"]) * oblique
    ramp = lambda d: np.clip(0.5 + d / pixel, 0.0, 1.0)              # noqa: E731  coverage of "d > 0"
    ax = np.abs(x)                                                   # mirrored: the hemispheres match

    # Cortex: sulci are lines running in from the brain surface, `gyri` of them from front to back in
    # each hemisphere (mirrored on |x|, with a small asymmetric warp); grey matter is everything
    # within `cortex` of the surface or of a sulcus, white matter the rest.
    theta = np.arctan2(ax * (b / a), y)                              # 0 anterior .. pi posterior
    w, gyri = p["warp"], col(p["gyri"]) * section                   # gyri keep their width in small sections
    waves = p["waves"]                                               # [c, k, 3]: frequency x, y, phase
    meander = sum(np.sin(col(waves[:, k, 0]) * ax + col(waves[:, k, 1]) * y + col(waves[:, k, 2]))
                  for k in range(waves.shape[1]))
    phase = (gyri * theta / np.pi + col(p["warp_amp"]) * np.sin(2.0 * theta + col(w[:, 0]))
             + col(p["meander"]) * meander + 0.05 * np.sign(x) * np.sin(4.0 * theta + col(w[:, 1])))
    # Distance to the nearest sulcus (an integer level of `phase`): |phase - level| / |grad phase|.
    gy, gx = np.gradient(phase, pixel, axis=(1, 2))
    spacing = 1.0 / (np.sqrt(gx * gx + gy * gy) + 1e-3)              # distance per unit of phase
    index = np.rint(phase)
    arc = np.abs(phase - index) * spacing
    brain_top = scalp + skull + 0.012
    into_brain = depth - brain_top
    sulcus_end = col(p["sulcus_depth"]) * section * (0.65 + 0.35 * np.cos(2.4 * index + col(w[:, 2])))
    to_sulcus = np.sqrt(arc * arc + np.maximum(into_brain - sulcus_end, 0.0) ** 2)
    cortex = col(p["cortex"])
    brain = ramp(into_brain)
    sulcus = ramp(0.003 + 0.25 * pixel - to_sulcus)
    white = ramp(np.minimum(into_brain, to_sulcus) - cortex)

    # Interhemispheric fissure, interrupted by the corpus callosum at ventricle level.
    ventricles_on = _smoothstep(col(p["ventricle_start"]), 1.0, t)   # [c, 1, 1] 0..1
    along = ramp(np.abs(y) - b * (0.05 + 0.4 * ventricles_on))
    fissure = ramp(0.003 + 0.25 * pixel - np.abs(x)) * along
    white = white * (1.0 - ramp(cortex - np.abs(x)) * along)

    # Deep grey nuclei and lateral ventricles, only in the slices deep enough to have them.
    nuclei, ventricle = np.zeros_like(x), np.zeros_like(x)
    deep = np.flatnonzero(ventricles_on.ravel() > 0.02)
    if deep.size:
        nuclei[deep], ventricle[deep] = _deep_structures(
            ax[deep], y[deep], b[deep] / 0.8, ventricles_on[deep], col(p["ventricle"])[deep], pixel)

    # Paint from the outside in, each layer over the last; T1 intensities in [0, 1].
    grey_level, white_level = 0.43 + col(p["contrast"][:, 0]), 0.75 + col(p["contrast"][:, 1]) + 0.015 * meander
    image = 0.5 * ramp(depth)                                        # skin
    image += (0.92 - image) * ramp(depth - 0.01)                     # subcutaneous fat: bright
    temples = np.minimum(ax / a, 1.0) ** 4                           # 0 front and back .. 1 at the sides
    image += (0.38 - image) * ramp(depth - scalp * (0.85 - 0.45 * temples))   # muscle, thick at the temples
    image += (0.05 - image) * ramp(depth - scalp)                    # skull: dark
    image += (0.28 - image) * ramp(depth - scalp - 0.35 * skull) * ramp(scalp + 0.65 * skull - depth)  # marrow
    image += (0.10 - image) * ramp(depth - scalp - skull)            # CSF
    image += (grey_level - image) * brain
    image += (white_level - image) * white * brain
    image += (0.60 - image) * nuclei * brain
    image += (0.12 - image) * np.maximum(sulcus, fissure) * brain
    image += (0.08 - image) * ventricle * brain

    bias = 1.0 + col(p["bias"][:, 0]) * x + col(p["bias"][:, 1]) * y + col(p["bias"][:, 2]) * r * r
    image = image * bias + ramp(depth) * 0.08 * (rng.random(image.shape, dtype=np.float32) - 0.5)  # sd 0.023
    return pixels.quantize(image * 255.0)
