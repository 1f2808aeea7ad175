"""Data benchmark and contact sheet: prints JSON, one record per measurement. Not a test.

    python -m tools.bench_data                       # phantom slices/s, cached pipeline batches/s at 64, 128, 256
    python -m tools.bench_data --decode DIR          # also first-time decoding files/s with 1, 2 and 4 threads
    python -m tools.bench_data --contact-sheet       # write docs/synthetic_vs_real.png (needs ../shared/data)

Both wall-clock and CPU-time rates are printed: on a shared machine the wall-clock figure depends on
what else runs, the CPU-time one much less. The training step takes roughly 3-10 images/s on CPU,
so the pipeline only has to stay well above that. Run it from the repository root.
"""

import argparse
import glob
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the repository: its docs, its data beside it

import numpy as np  # noqa: E402

import data  # noqa: E402
import phantom  # noqa: E402

SHARED_DATA = os.path.join(ROOT, "..", "shared", "data")
CONTACT_SHEET = os.path.join(ROOT, "docs", "synthetic_vs_real.png")


def rates(fn, count, repeats=3):
    """Best of `repeats` calls of `fn`, as (count per wall second, count per CPU second)."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return count / best_wall, count / best_cpu


def bench_phantom(resolution=64, n=data.SYNTHETIC_COUNT):
    wall, cpu = rates(lambda: phantom.synthetic_slices(n, resolution, seed=0), n)
    return {"what": "phantom", "resolution": resolution, "slices": n,
            "slices_per_s": round(wall), "slices_per_cpu_s": round(cpu)}


def bench_pipeline(resolution, batch=16, n=512, seconds=5.0):
    """make_dataset over cached uint8 arrays, as the trainer uses it."""
    images = phantom.synthetic_slices(n, resolution, seed=0)[..., None]
    iterator = iter(data.make_dataset(images, batch, seed=0))
    for _ in range(20):                                   # warm-up: tracing, prefetch buffers
        next(iterator)
    steps, wall, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        next(iterator)
        steps += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    skip_start = time.perf_counter()
    next(iter(data.make_dataset(images, batch, seed=0).skip(1000)))
    return {"what": "pipeline", "resolution": resolution, "batch": batch, "batches_per_s": round(steps / wall, 1),
            "images_per_s": round(steps * batch / wall), "batches_per_cpu_s": round(steps / cpu, 1),
            "skip_1000_batches_s": round(time.perf_counter() - skip_start, 2)}


def bench_decode(folder, resolution=64, workers=(1, 2, 4)):
    """First-time decoding (no cache) of every file in `folder`, with several thread counts."""
    files = data.find_files(folder, ("all",))
    for w in workers:
        wall, cpu = rates(lambda: data.decode_files(files, resolution, folder, workers=w), len(files), repeats=2)
        yield {"what": "decode", "folder": folder, "files": len(files), "resolution": resolution, "workers": w,
               "files_per_s": round(wall), "files_per_cpu_s": round(cpu)}


def real_examples(folder, count, resolution, pick=None):
    """`count` slices from `folder`, spread over its sorted files (or the ones `pick` keeps),
    decoded and resized exactly as for training."""
    files = sorted(glob.glob(os.path.join(folder, "*.png")))
    files = [f for f in files if pick is None or pick(f)]
    chosen = [files[i] for i in np.linspace(0, len(files) - 1, count).round().astype(int)]
    return np.stack([data.decode_file(f, resolution)[0] for f in chosen])


def contact_sheet(path=CONTACT_SHEET, shared=SHARED_DATA, columns=8, resolution=128):
    """A labelled grid: synthetic phantom slices (the built-in default) above real OASIS slices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    synthetic = phantom.synthetic_slices(data.SYNTHETIC_COUNT, resolution, seed=0)
    synthetic = synthetic[np.linspace(data.SYNTHETIC_COUNT * 0.15, data.SYNTHETIC_COUNT - 1, columns).astype(int)]
    # Full-head slices from the vertex down to the ventricles (z 85-140), one subject per column.
    fullhead = os.path.join(shared, "oasis1_fullhead", "keras_png_slices_train")
    by_subject_height = {(data.subject_of(f), int(f.split("_slice_")[1].split(".")[0])): f
                         for f in glob.glob(os.path.join(fullhead, "case_*.png"))}
    subjects = sorted({s for s, _ in by_subject_height})
    heights = np.linspace(140, 85, columns).round().astype(int)
    fullhead_slices = np.stack([data.decode_file(by_subject_height[s, z], resolution)[0]
                                for s, z in zip((subjects * columns)[:columns], heights)])
    learn2reg = real_examples(os.path.join(shared, "learn2reg_oasis", "slices"), columns, resolution,
                              pick=lambda f: 90 <= int(f[-7:-4]) <= 150)
    rows = [("synthetic phantom\n(built-in default)", synthetic),
            ("OASIS-1 full head\n(oasis1_fullhead)", fullhead_slices),
            ("OASIS skull-stripped\n(learn2reg_oasis)", learn2reg)]
    figure, axes = plt.subplots(len(rows), columns, figsize=(columns * 1.2 + 1.4, len(rows) * 1.25), dpi=110)
    for (label, images), row in zip(rows, axes):
        for image, ax in zip(images, row):
            ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        row[0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    figure.suptitle(f"{resolution}x{resolution} slices, resized the same way", fontsize=9)
    figure.subplots_adjust(left=0.15, right=0.995, top=0.92, bottom=0.01, wspace=0.03, hspace=0.05)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        rgba = os.path.join(tmp, "sheet.png")
        figure.savefig(rgba, facecolor="white")
        plt.close(figure)
        Image.open(rgba).convert("L").save(path, optimize=True)      # gray: a third of the size
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", default="64,128,256", help="pipeline resolutions (comma-separated)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--decode", metavar="DIR", help="also time first-time decoding of this folder")
    parser.add_argument("--contact-sheet", action="store_true", help=f"only write {CONTACT_SHEET}")
    args = parser.parse_args()
    if args.contact_sheet:
        print(json.dumps({"what": "contact_sheet", "path": contact_sheet(),
                          "kb": round(os.path.getsize(CONTACT_SHEET) / 1024)}), flush=True)
        return
    print(json.dumps(bench_phantom()), flush=True)
    for resolution in [int(r) for r in args.resolutions.split(",")]:
        print(json.dumps(bench_pipeline(resolution, args.batch)), flush=True)
    if args.decode:
        for record in bench_decode(args.decode):
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
