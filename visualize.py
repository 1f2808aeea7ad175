"""Pictures for people: sample grids, loss plots, interpolation GIFs, written atomically (atomic.py).

Lives here: turning arrays and training history into PNG/GIF files. Not here: producing the
images (gan.py, sampling.py), deciding when to draw them (training.py), the pixel-range
conversion (pixels.py).
Images come in as float arrays in [-1, 1], [N, H, W, C] with C = 1 (or 3).
"""

import io

import matplotlib

matplotlib.use("Agg")  # No display on servers and CI.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import atomic  # noqa: E402
import pixels  # noqa: E402


def _png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def tile(images, columns, padding=2):
    """Arrange images [N, H, W, C] in [-1, 1] into one uint8 mosaic [rows*H, columns*W] (or RGB)."""
    levels = pixels.to_uint8(images)
    n, h, w, c = levels.shape
    rows = -(-n // columns)
    grid = np.zeros([rows * (h + padding) + padding, columns * (w + padding) + padding, c], np.uint8)
    for i in range(n):
        r, col = divmod(i, columns)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y:y + h, x:x + w] = levels[i]
    return grid[..., 0] if c == 1 else grid


def save_grid(path, images, columns=None):
    columns = columns or int(np.ceil(np.sqrt(len(images))))
    atomic.write_bytes(path, _png_bytes(tile(images, columns)))


def save_image(path, image):
    """One [H, W, C] image in [-1, 1] as an 8-bit PNG at its own resolution."""
    levels = pixels.to_uint8(image)
    atomic.write_bytes(path, _png_bytes(levels[..., 0] if levels.shape[-1] == 1 else levels))


def save_gif(path, frames, duration_ms=80):
    """Frames [T, H, W, C] in [-1, 1] -> looping GIF that plays forwards then backwards."""
    images = [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in pixels.to_uint8(frames)]
    images = images + images[-2:0:-1]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    atomic.write_bytes(path, buffer.getvalue())


def plot_history(path, history, keys=("d_loss", "g_loss"), extra=()):
    """Loss curves against thousands of images seen. `history` is a list of per-tick dicts with a
    'kimg' entry; further panels for `extra` keys (e.g. r1, pl, augment_p, swd; a tuple of keys shares
    a panel) that are present."""
    if not history:
        return
    kimg = [h["kimg"] for h in history]
    panels = [list(keys)] + [[*k] if isinstance(k, tuple) else [k] for k in extra]
    panels = [names for names in panels if any(n in h for h in history for n in names)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.6 * len(panels)), sharex=True, squeeze=False)
    for ax, names in zip(axes[:, 0], panels):
        for name in names:
            points = [(k, h[name]) for k, h in zip(kimg, history) if name in h]
            if points:
                ax.plot(*zip(*points), marker=".", label=name)
        ax.legend(loc="upper right")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("thousands of real images shown to D (kimg)")
    axes[0, 0].set_title("Training losses")
    save_figure(path, fig)


def plot_curve(path, x, curves, marked=()):
    """Metrics against kimg, `curves` {label: values at x}, the points at `marked` x values ringed
    (e.g. the best checkpoint)."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ring = []
    for label, y in curves.items():
        ax.plot(x, y, marker=".", label=label)
        ring += [(a, b) for a, b in zip(x, y) if a in set(marked)]
    if ring:
        ax.scatter(*zip(*ring), s=120, facecolors="none", edgecolors="red", label="best")
    ax.set_xlabel("thousands of real images shown to D (kimg)")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    save_figure(path, fig)


def save_figure(path, fig):
    """Write a matplotlib figure as PNG, atomically, and close it."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic.write_bytes(path, buffer.getvalue())
