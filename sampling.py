"""Using a trained generator: seeded images, style-mixing grids, latent interpolations.

Lives here: everything that turns a trained EMA generator into images and files. Not here: opening
or exporting it (inference.py), training (training.py), drawing (visualize.py).
A seed always gives the same latent z, so the same seed gives the same image.
"""

import os

import numpy as np
import tensorflow as tf

import labels
import visualize


def latents(seeds, z_dim):
    """One z per seed, from NumPy's PCG64: stable across platforms and TensorFlow versions. [N, z_dim]"""
    return np.stack([np.random.default_rng(s).standard_normal(z_dim) for s in seeds]).astype(np.float32)


def label_rows(g, c, count):
    """The labels of `count` images for generator `g`: None for an unconditional one; `c` is one
    label [c_dim] for all or one per image [count, c_dim]. float32 [count, c_dim]"""
    if g.c_dim == 0:
        if c is not None:
            raise labels.LabelError("this generator is unconditional: leave out --condition")
        return None
    if c is None:
        raise labels.LabelError(f"this generator is conditional ({g.c_dim} label values): give --condition "
                                f"name=value,... (the run's checkpoints/labels.json lists the names)")
    c = np.asarray(c, np.float32)
    return np.broadcast_to(c, [count, g.c_dim]) if c.ndim == 1 else c


def synthesize(g, seeds, psi=1.0, truncation_cutoff=None, batch_size=32, noise_mode="const", c=None):
    """Images [N, R, R, C] in [-1, 1] for `seeds` (and labels `c` for a conditional `g`: label_rows).

    noise_mode: "const" (one fixed noise map per layer, the default for pictures), "random" (fresh
    per-image noise as in training; what metrics must use, since one map shared by every image
    understates fine texture) or "none". Random noise is keyed by each batch's first seed, so it is
    reproducible too, for the same `batch_size`.
    """
    seeds = list(seeds)
    z = latents(seeds, g.z_dim)
    c = label_rows(g, c, len(z))
    out = []
    for i in range(0, len(z), batch_size):
        noise_seed = tf.constant([seeds[i], 1], tf.int64) if noise_mode == "random" else None
        out.append(g(z[i:i + batch_size], None if c is None else c[i:i + batch_size], psi=psi,
                     truncation_cutoff=truncation_cutoff, noise_mode=noise_mode, noise_seed=noise_seed).numpy())
    return np.concatenate(out).astype(np.float32)


def noise_draws(g, seeds, draws=4, c=None):
    """Each seed's latent rendered under `draws` different random noise draws, w held fixed: what
    changes across a row is made by the per-layer noise alone (metrics.noise_variance_share).
    [N, draws, R, R, C] in [-1, 1]"""
    ws = styles(g, seeds, c=c)                                                   # [N, L, w_dim]
    rows = [np.asarray(g.synthesis(ws, noise_mode="random", noise_seed=tf.constant([seeds[0], 2 + k], tf.int64)))
            for k in range(draws)]                                               # draws x [N, R, R, C]
    return np.stack(rows, axis=1).astype(np.float32)


def styles(g, seeds, psi=1.0, truncation_cutoff=None, c=None):
    """Per-layer styles [N, num_ws, w_dim] for `seeds` (and labels `c`), truncated towards w_avg by
    psi (the first `truncation_cutoff` layers only, when given)."""
    ws = g.broadcast(g.mapping(latents(seeds, g.z_dim), label_rows(g, c, len(seeds))))
    return np.asarray(g.truncate(ws, psi, truncation_cutoff))


def write_images(out_dir, g, seeds, psi=1.0, noise_mode="const", truncation_cutoff=None, c=None):
    """One PNG per seed at the training resolution (`seed0000.png`, ...) plus `grid.png`."""
    os.makedirs(out_dir, exist_ok=True)
    images = synthesize(g, seeds, psi, truncation_cutoff, noise_mode=noise_mode, c=c)
    paths = []
    for seed, image in zip(seeds, images):
        paths.append(os.path.join(out_dir, f"seed{seed:04d}.png"))
        visualize.save_image(paths[-1], image)
    visualize.save_grid(os.path.join(out_dir, "grid.png"), images)
    return paths


def parse_ranges(text, name="--seeds"):
    """'0-35,40' -> [0, 1, ..., 35, 40]: comma-separated integers and inclusive ranges, in order."""
    values = []
    for part in str(text).replace(" ", "").split(","):
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"{name} takes numbers and ranges like 0-35,40; {part!r} is neither")
        if dash and int(last) < int(first):
            raise ValueError(f"{name}: the range {part} runs backwards; write {last}-{first}")
        values += list(range(int(first), int(last) + 1)) if dash else [int(first)]
    return values


def style_mixing_grid(g, row_seeds, col_seeds, mix_layers=(0, 1, 2, 3), psi=1.0, noise_mode="const",
                      truncation_cutoff=None, c=None):
    """Each cell is its row's seed with the styles of `mix_layers` taken from its column's seed (as
    NVlabs style_mixing.py; the default 0-3 are the coarse layers: head size, pose, ventricles, so
    the fine styles, texture and contrast, stay the row's). The first row shows the column sources
    and the first column the row sources; the corner is blank. Returns [(R+1)*(C+1), H, W, ch]."""
    mix_layers = sorted(set(mix_layers))
    if not mix_layers or mix_layers[-1] >= g.num_ws:
        raise ValueError(f"--mix_layers must name layers from 0 to {g.num_ws - 1} (this generator has "
                         f"{g.num_ws} style inputs), got {mix_layers}")
    ws_rows, ws_cols = (styles(g, seeds, psi, truncation_cutoff, c) for seeds in (row_seeds, col_seeds))
    render = lambda ws: np.asarray(g.synthesis(ws, noise_mode=noise_mode))  # noqa: E731
    col_images, row_images = render(ws_cols), render(ws_rows)
    cells = [np.full_like(col_images[0], -1.0)] + list(col_images)
    for r, ws_row in enumerate(ws_rows):
        mixed = np.repeat(ws_row[None], len(ws_cols), axis=0)                        # [C, L, w]
        mixed[:, mix_layers] = ws_cols[:, mix_layers]
        cells += [row_images[r]] + list(render(mixed))
    return np.stack(cells)


def interpolation(g, seeds, steps=12, psi=1.0, truncation_cutoff=None, c=None):
    """Frames walking in w space through `seeds` in turn (linear in w, as the paper's PPL uses)."""
    ws = styles(g, seeds, psi, truncation_cutoff, c)
    t = np.linspace(0.0, 1.0, steps, endpoint=False, dtype=np.float32)[:, None, None]
    path = [ws[i] + t * (ws[i + 1] - ws[i]) for i in range(len(ws) - 1)] + [ws[-1:]]
    return np.asarray(g.synthesis(np.concatenate(path), noise_mode="const"))


def sweep_grid(g, spec, row_seeds, base, name, steps=8, psi=1.0, noise_mode="const"):
    """A grid that sweeps label `name` across the columns (labels.sweep_values) with one fixed z per
    row; the other labels stay at `base` ({name: value}, labels.parse_request). Returns
    ([rows * columns, R, R, ch], the column values)."""
    values = labels.sweep_values(labels.find_column(spec, name), steps)
    rows = []
    for seed in row_seeds:
        c = np.stack([labels.encode_values(spec, {**base, name: v}) for v in values])          # [C, c_dim]
        rows.append(synthesize(g, [seed] * len(values), psi, noise_mode=noise_mode, c=c))
    return np.concatenate(rows), values
