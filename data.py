"""Training data: brain MRI slices from disk (or a built-in synthetic phantom) as a tf.data pipeline.

Lives here: finding slices in a folder (PNG/JPEG/TIFF/BMP files and NIfTI/Analyze volumes, the
COMP3710 `keras_png_slices_data` layout with its splits), decoding them to square uint8 arrays at
the training resolution, the on-disk cache of that work, the synthetic T1 phantom that is the
default data, and `make_dataset`, the endless shuffled, flipped, batched stream the trainer reads.
Not here: flags (driver.py), what the model does with the batches (gan.py), metrics on real
slices (evaluation code), pictures (visualize.py).

Choices a user can see:
- Segmentation masks are never training data: folders and files with a `seg` word in their name
  (`keras_png_slices_seg_train/`, `seg_001_slice_0.nii.png`, `*_fseg.nii.gz`, `aseg`) are skipped.
- Slices that are not square are padded to a square with background (zero) around the centre and
  then resized, so anatomy keeps its aspect ratio; a stretch would teach the GAN squashed heads.
  Resizing is Pillow's bicubic filter, which widens its kernel when shrinking (antialiasing).
- 8-bit files are used as stored (COMP3710 PNGs are already scaled). 16-bit and float files, and
  volumes, are scaled so the 99.5th percentile of their nonzero values becomes 255 (clipped): MRI
  exported as 16-bit rarely uses the full 0..65535 range, so dividing by 65535 would leave a nearly
  black image, and dividing by the maximum lets a single bright vessel or artefact darken the rest.
- Volumes are reoriented to the closest canonical (RAS) orientation and cut along the last
  (inferior-superior) axis; each slice is rotated so anterior is up and the subject's left is on
  the image's left, which reproduces the COMP3710 PNGs exactly (checked against OAS1_0001).
  A slice is near-empty, and dropped, when fewer than EMPTY_SLICE_FRACTION of its pixels are
  brighter than EMPTY_SLICE_LEVEL of the volume's robust maximum.

Shapes: `load_slices` returns uint8 [N, R, R, C]; `make_dataset` yields float32 [B, R, R, C] in [-1, 1].
"""

import concurrent.futures
import hashlib
import json
import os
import re
import sys
import time
import zlib

import keras
import nibabel as nib
import numpy as np
import tensorflow as tf
from absl import logging
from nibabel.filebasedimages import ImageFileError
from PIL import Image

# What changes the decoded arrays. Bump when decoding, fitting, scaling or the phantom change, so
# that caches written by older code are never reused.
PREPROCESS_VERSION = 1
SYNTHETIC_COUNT = 2048                 # slices in the built-in synthetic data set
SPLITS = ("train", "validate", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VOLUME_EXTENSIONS = (".nii", ".nii.gz", ".img")   # .img is read together with its .hdr (Analyze)
ROBUST_PERCENTILE = 99.5               # of nonzero values -> 255 for 16-bit images and volumes
EMPTY_SLICE_LEVEL = 0.05               # a volume pixel counts as tissue above 5% of the robust maximum ...
EMPTY_SLICE_FRACTION = 0.01            # ... and a slice with fewer than 1% tissue pixels is dropped
DECODE_WORKERS = 4                     # decoding threads: Pillow and zlib release the GIL; 4 beat 1 and 2
                                       # by 1.3-2x on 2 shared cores (python bench_data.py --decode DIR)
PROGRESS_SECONDS = 5.0                 # log decoding progress this often
CACHE_PATTERN = re.compile(r"^(slices|synthetic)-[0-9a-f]{20}\.npy(\.tmp-\d+-[0-9a-f]{8})?$")
SUBJECT_PATTERNS = (re.compile(r"^case_([^_]+)_"), re.compile(r"^OAS\d_(\d+)_"), re.compile(r"^OASIS_(\d+)_"))
_SPLIT_FOLDER = re.compile(r"(?:^|[_\-])(train|validate|test)$")


class DataError(ValueError):
    """A problem with the user's data; the message says what was wrong and what to do."""


class _Unreadable(Exception):
    """One file that cannot be used; the message is the reason, shown to the user."""


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------

def load_slices(data_dir, resolution, cache_dir, splits=("train",), channels=1, seed=0,
                exclude_subjects=(), subjects=None):
    """All usable slices under `data_dir` (or the synthetic phantom when it is None), fitted to
    `resolution` and cached in `cache_dir` (None: no cache). Returns uint8 [N, resolution, resolution, channels].

    `splits` picks COMP3710 split folders ("train", "validate", "test" or "all"); `exclude_subjects`
    drops, and `subjects` keeps only, files named like `case_<id>_...` (also `OAS1_<id>_...`, `OASIS_<id>_...`;
    numeric ids compare as numbers, so "37" and "0037" are the same subject).
    """
    resolution, channels = int(resolution), int(channels)
    if resolution < 1 or channels not in (1, 3):
        raise ValueError(f"resolution must be positive and channels 1 or 3, got {resolution} and {channels}")
    if data_dir is None:
        return _tile_channels(_load_synthetic(resolution, cache_dir, seed, exclude_subjects, subjects), channels)

    splits = check_splits(splits)
    files = find_files(data_dir, splits)
    files = filter_subjects(files, exclude_subjects, subjects, data_dir)
    # The cache holds gray slices; `channels` only tiles them afterwards, so it is not part of the key.
    key = cache_key(files, resolution=resolution, splits=splits, exclude_subjects=sorted(map(str, exclude_subjects)),
                    subjects=None if subjects is None else sorted(map(str, subjects)))
    path = None if cache_dir is None else os.path.join(cache_dir, f"slices-{key}.npy")
    slices = read_cache(path, resolution)
    if slices is not None:
        logging.info("data: cache hit, %d slices at %dx%d from %s", len(slices), resolution, resolution, path)
    else:
        logging.info("data: %s, decoding %d files from %s at %dx%d",
                     "no cache" if path is None else "cache miss", len(files), data_dir, resolution, resolution)
        slices = decode_files(files, resolution, data_dir)
        if path is not None:
            write_cache(path, slices)
    return _tile_channels(slices, channels)


def make_dataset(images, batch_size, seed=0, channels=1, mirror=True):
    """Endless stream of float32 batches [batch_size, R, R, channels] in [-1, 1] from uint8 `images`
    [N, R, R, C]: every epoch a fresh permutation, with `mirror` each image flipped left-right with
    probability 1/2 (brains are roughly symmetric), batches of exactly `batch_size`, prefetched.

    The order and the flips are a pure function of (`seed`, position in the stream), computed with
    stateless random ops, so `make_dataset(...).skip(k)` yields exactly what an uninterrupted run saw
    after k batches; a resumed run relies on that.
    """
    images = _tile_channels(_check_images(images), channels)
    batch_size, seed = int(batch_size), int(seed)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    n = images.shape[0]

    def epoch_indices(epoch):                    # a permutation of 0..N-1 fixed by (seed, epoch)
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=[seed, 2 * epoch])
        return tf.data.Dataset.from_tensor_slices(order)

    def make_batch(step, index, pool):
        x = tf.cast(tf.gather(pool, index), tf.float32) / 127.5 - 1.0         # [B, R, R, C]
        if not mirror:
            return x
        flip = tf.random.stateless_uniform([batch_size], seed=[seed, 2 * step + 1]) < 0.5
        return tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)

    indices = tf.data.Dataset.counter().flat_map(epoch_indices).batch(batch_size, drop_remainder=True)
    # The images travel as one dataset element instead of a constant captured by the map function,
    # which would be copied into the function's graph.
    pool = tf.data.Dataset.from_tensors(tf.constant(images)).repeat()
    dataset = tf.data.Dataset.zip(indices.enumerate(), pool)
    dataset = dataset.map(lambda step_index, pool: make_batch(step_index[0], step_index[1], pool),
                          num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def clear_cache(cache_dir):
    """Delete the cache files this module wrote in `cache_dir` (and temporary files left by killed
    writes). Nothing else is touched and links are never followed. Returns the sorted deleted paths."""
    if cache_dir is None or not os.path.isdir(cache_dir) or os.path.islink(cache_dir):
        return []
    deleted = []
    for entry in os.scandir(cache_dir):
        if CACHE_PATTERN.match(entry.name) and entry.is_file(follow_symlinks=False):
            os.remove(entry.path)
            deleted.append(entry.path)
    return sorted(deleted)


# ---------------------------------------------------------------------------------------------
# Finding files
# ---------------------------------------------------------------------------------------------

def check_splits(splits):
    """Validated split names as a sorted tuple; ("all",) stands for every split."""
    splits = tuple(splits) if not isinstance(splits, str) else (splits,)
    unknown = [s for s in splits if s not in SPLITS + ("all",)]
    if unknown or not splits:
        raise DataError(f"unknown split {', '.join(map(repr, unknown)) or '(none given)'}; "
                        f"choose from {', '.join(SPLITS)} or all (e.g. --splits train,validate)")
    return ("all",) if "all" in splits else tuple(sorted(set(splits)))


def is_segmentation(name):
    """True for names of segmentation folders and files: a word that starts with `seg` or ends in
    it (keras_png_slices_seg_train, seg_001_slice_0.nii.png, *_fseg.nii.gz, aseg.mgz, segmentations)."""
    return any(w.startswith("seg") or w.endswith("seg") for w in re.split(r"[^a-z0-9]+", name.lower()) if w)


def file_kind(name):
    """'image', 'volume' or None (not a file this module reads), from the file name."""
    lower = name.lower()
    if lower.endswith(IMAGE_EXTENSIONS):
        return "image"
    if lower.endswith(VOLUME_EXTENSIONS):
        return "volume"
    return None


def split_of(folder_name):
    """'train', 'validate' or 'test' for a split folder such as keras_png_slices_train, else None."""
    match = _SPLIT_FOLDER.search(folder_name.lower())
    return match.group(1) if match else None


def find_files(data_dir, splits=("train",)):
    """Sorted paths of the slice files and volumes under `data_dir` (searched recursively, links
    followed once) that belong to `splits`; segmentation folders and files are never included.
    An Analyze volume is listed by its .img file (the .hdr must sit next to it)."""
    data_dir = os.path.expanduser(str(data_dir))
    splits = check_splits(splits)
    if not os.path.exists(data_dir):
        raise DataError(f"data folder {data_dir} does not exist: check --data_dir (it should hold the slices, "
                        f"e.g. keras_png_slices_data), or leave --data_dir out to train on synthetic slices")
    if os.path.isfile(data_dir):
        if file_kind(os.path.basename(data_dir)) is None:
            raise DataError(f"{data_dir} is not a slice image or volume; point --data_dir at a folder of slices")
        return [data_dir]
    root_name = os.path.basename(os.path.normpath(os.path.abspath(data_dir)))
    if is_segmentation(root_name):
        raise DataError(f"{data_dir} looks like a segmentation folder (masks, not MRI); point --data_dir at the "
                        f"images, e.g. keras_png_slices_data or keras_png_slices_train")

    found, skipped = _walk(data_dir, root_name)
    present = sorted({s for _, s in found if s})
    if split_of(root_name):
        if splits != ("all",) and splits != (split_of(root_name),):
            logging.info("data: %s is itself the %s split; using it as it is (--splits ignored)",
                         data_dir, split_of(root_name))
        files = [p for p, _ in found]
    elif present:
        missing = [s for s in splits if s != "all" and s not in present]
        if missing:
            raise DataError(f"no {', '.join(missing)} split under {data_dir} (found split folders for "
                            f"{', '.join(present)}); choose --splits from those")
        files = [p for p, s in found if s and (splits == ("all",) or s in splits)]
    else:
        if splits != ("train",):
            logging.info("data: no split folders in %s; --splits ignored, using every slice", data_dir)
        files = [p for p, _ in found]
    if not files:
        raise DataError(f"no usable images in {data_dir}: looked recursively for 2D slices "
                        f"({' '.join(IMAGE_EXTENSIONS)}) and volumes (.nii .nii.gz .img/.hdr), found none "
                        f"({skipped['segmentation']} segmentation folders/files skipped, {skipped['other']} other "
                        f"files); point --data_dir at the folder that holds the slices")
    if skipped["segmentation"]:
        logging.info("data: skipped %d segmentation folders/files (masks are never training data)",
                     skipped["segmentation"])
    return sorted(files)


def _walk(data_dir, root_name):
    """Every slice file or volume under `data_dir` as (path, split or None), and the counts of what
    was skipped: {"segmentation": masks, "other": files that are neither}."""
    found, skipped = [], {"segmentation": 0, "other": 0}
    seen = set()
    for folder, subfolders, names in os.walk(data_dir, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:                     # a link back up the tree
            subfolders[:] = []
            continue
        seen.add(real)
        relative = os.path.relpath(folder, data_dir)
        parts = [root_name] + ([] if relative == "." else relative.split(os.sep))
        split = next((s for s in map(split_of, reversed(parts)) if s), None)
        skipped["segmentation"] += sum(is_segmentation(d) for d in subfolders)
        subfolders[:] = sorted(d for d in subfolders if not is_segmentation(d) and not d.startswith("."))
        for name in names:
            kind = file_kind(name)
            if name.startswith(".") or kind is None:               # .hdr headers are read with their .img
                skipped["other"] += not name.lower().endswith(".hdr")
            elif is_segmentation(name):
                skipped["segmentation"] += 1
            else:
                found.append((os.path.join(folder, name), split))
    return found, skipped


def survey(data_dir, splits=("train",), exclude_subjects=()):
    """What `load_slices` would train on, without decoding or caching anything: a dict with the
    files and subjects per split folder, the training files and subjects after `exclude_subjects`,
    the held-out subjects, what was skipped, and the first training file's size (for a volume, its
    shape). For the synthetic phantom (data_dir None), its slice count."""
    if data_dir is None:
        return {"folder": None, "training_files": SYNTHETIC_COUNT, "training_subjects": [], "held_out": [],
                "splits": {}, "skipped": {}, "first_file_size": None}
    files = find_files(data_dir, splits)
    kept = filter_subjects(files, exclude_subjects, None, data_dir)
    found, skipped = _walk(os.path.expanduser(str(data_dir)), os.path.basename(os.path.normpath(
        os.path.abspath(os.path.expanduser(str(data_dir))))))
    skipped["broken links"] = sum(not os.path.exists(p) for p, _ in found)
    per_split = {}
    for path, split in found:
        entry = per_split.setdefault(split or "(no split folder)", {"files": 0, "subjects": set()})
        entry["files"] += 1
        entry["subjects"].add(subject_of(path))
    first, size = next((p for p in kept if os.path.exists(p)), None), None
    if first is not None and file_kind(os.path.basename(first)) == "image":
        with Image.open(first) as image:
            size = f"{image.width}x{image.height}"
    elif first is not None:
        size = "x".join(map(str, decode_volume(first).shape))
    subjects = lambda paths: sorted({subject_of(p) for p in paths} - {None})  # noqa: E731
    return {"folder": data_dir, "training_files": len(kept), "training_subjects": subjects(kept),
            "held_out": sorted(set(subjects(files)) - set(subjects(kept))),
            "splits": {k: {"files": v["files"], "subjects": len(v["subjects"] - {None})}
                       for k, v in sorted(per_split.items())},
            "skipped": skipped, "first_file_size": size}


def split_folders(data_dir):
    """The COMP3710 splits (train, validate, test) that have a folder of images under `data_dir`
    (or that `data_dir` itself is); segmentation folders do not count."""
    data_dir = os.path.expanduser(str(data_dir))
    found = {split_of(os.path.basename(os.path.normpath(os.path.abspath(data_dir))))}
    for _, subfolders, _ in os.walk(data_dir, followlinks=False):
        subfolders[:] = [d for d in subfolders if not is_segmentation(d) and not d.startswith(".")]
        found.update(map(split_of, subfolders))
    return found - {None}


def subject_of(path):
    """Subject id from a file name (`case_<id>_...`, `OAS1_<id>_...`, `OASIS_<id>_...`), else None."""
    name = os.path.basename(path)
    for pattern in SUBJECT_PATTERNS:
        match = pattern.match(name)
        if match:
            return _normal_id(match.group(1))
    return None


def _normal_id(subject):
    subject = str(subject)
    subject = subject[5:] if subject.startswith("case_") else subject
    return str(int(subject)) if subject.isdigit() else subject


def filter_subjects(files, exclude_subjects=(), subjects=None, data_dir=""):
    """Files without the excluded subjects, and only the wanted ones when `subjects` is given."""
    exclude = {_normal_id(s) for s in exclude_subjects}
    wanted = None if subjects is None else {_normal_id(s) for s in subjects}
    kept = [f for f in files if subject_of(f) not in exclude and (wanted is None or subject_of(f) in wanted)]
    if not kept:
        known = sorted({subject_of(f) for f in files if subject_of(f) is not None})
        raise DataError(f"no slices left in {data_dir} after choosing subjects (subjects={sorted(wanted or [])}, "
                        f"excluded={sorted(exclude)}); subjects come from names like case_<id>_slice_0.png and "
                        f"these are present: {', '.join(known[:12]) or 'none'}{' ...' if len(known) > 12 else ''}")
    return kept


# ---------------------------------------------------------------------------------------------
# Decoding: one file -> uint8 slices [k, R, R]
# ---------------------------------------------------------------------------------------------

def fit_square(image):
    """Pad a 2D image [h, w] with zeros to [s, s], s = max(h, w), keeping it centred."""
    h, w = image.shape
    s = max(h, w)
    top, left = (s - h) // 2, (s - w) // 2
    return np.pad(image, ((top, s - h - top), (left, s - w - left)))


def resize(image, resolution):
    """float32 [s, s] -> float32 [resolution, resolution] with Pillow's antialiased bicubic filter."""
    if image.shape[0] == resolution:
        return image
    return np.asarray(Image.fromarray(image.astype(np.float32))
                      .resize((resolution, resolution), Image.Resampling.BICUBIC))


def robust_scale(values):
    """float array -> float32 in [0, 255]: the 99.5th percentile of the nonzero values maps to 255."""
    values = np.asarray(values, np.float32)
    nonzero = values[values > 0]
    if nonzero.size == 0:
        return np.zeros_like(values)
    top = float(np.percentile(nonzero, ROBUST_PERCENTILE))
    return np.clip(values * (255.0 / top), 0.0, 255.0)


def to_unit_range(images):
    """uint8 slices [0, 255] -> float32 [-1, 1], the range the networks see (NumPy)."""
    return np.asarray(images, np.float32) / 127.5 - 1.0


def to_uint8(slices):
    return np.clip(np.rint(slices), 0, 255).astype(np.uint8)


def decode_image(path):
    """One 2D image file -> float32 [h, w] in [0, 255]. Colour becomes luma; 8-bit values are kept,
    16-bit and float images are scaled by `robust_scale`."""
    with Image.open(path) as image:
        image.load()
        if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
            return robust_scale(np.asarray(image, dtype=np.float32))
        return np.asarray(image.convert("L"), dtype=np.float32)


def decode_volume(path):
    """A NIfTI or Analyze volume -> float32 [k, h, w] in [0, 255]: canonical (RAS) orientation,
    axial slices along the last axis from inferior to superior, anterior up, near-empty slices dropped."""
    if path.lower().endswith(".img") and not os.path.exists(path[:-4] + ".hdr") and \
            not os.path.exists(path[:-4] + ".HDR"):
        raise _Unreadable("an Analyze .img without its .hdr header next to it")
    image = nib.as_closest_canonical(nib.load(path))
    volume = np.asarray(image.dataobj, dtype=np.float32)
    while volume.ndim > 3 and volume.shape[-1] == 1:
        volume = volume[..., 0]
    if volume.ndim == 4:
        raise _Unreadable(f"a 4D series of {volume.shape[-1]} volumes; save the one to use as a 3D file")
    if volume.ndim != 3 or volume.shape[2] < 2:
        raise _Unreadable(f"a volume needs several axial slices, this one has shape {volume.shape}; "
                          f"save single slices as PNG instead")
    volume = robust_scale(np.nan_to_num(volume))
    slices = np.rot90(volume, k=1, axes=(0, 1)).transpose(2, 0, 1)       # [z, y (anterior first), x]
    tissue = (slices > EMPTY_SLICE_LEVEL * 255.0).mean(axis=(1, 2))       # [z]
    slices = slices[tissue >= EMPTY_SLICE_FRACTION]
    if not len(slices):
        raise _Unreadable("every axial slice is empty (no tissue above "
                          f"{EMPTY_SLICE_LEVEL:.0%} of the 99.5th percentile)")
    return slices


# What Pillow, nibabel, gzip and zlib raise for truncated, corrupt or unsupported files.
_READ_ERRORS = (OSError, ValueError, EOFError, SyntaxError, zlib.error, MemoryError, Image.DecompressionBombError,
                ImageFileError)


def decode_file(path, resolution):
    """One image or volume -> uint8 [k, resolution, resolution]. Raises _Unreadable with the reason."""
    if os.path.islink(path) and not os.path.exists(path):
        raise _Unreadable(f"a link to {os.readlink(path)}, which does not exist")
    try:
        if os.path.getsize(path) == 0:
            raise _Unreadable("empty file (0 bytes)")
        slices = decode_volume(path) if file_kind(path) == "volume" else decode_image(path)[None]   # [k, h, w]
    except _READ_ERRORS as e:
        reason = str(e).splitlines()[0][:120] if str(e) else "no details"
        raise _Unreadable(f"cannot be read ({type(e).__name__}: {reason})") from None
    return np.stack([to_uint8(resize(fit_square(s), resolution)) for s in slices])


def decode_files(files, resolution, data_dir="", workers=DECODE_WORKERS):
    """Decode every file (threads, order kept) with progress; unreadable files are skipped, counted
    and named in a warning. Returns uint8 [N, resolution, resolution, 1]."""
    decode = decode_file                       # looked up now, so tests can replace it

    def attempt(path):
        try:
            return decode(path, resolution), None
        except _Unreadable as e:
            return None, f"{os.path.basename(path)}: {e}"

    progress = _Progress(len(files))
    slices, problems = [], []
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        for result, problem in pool.map(attempt, files):
            if problem:
                problems.append(problem)
            else:
                slices.append(result)
            progress.update()
    progress.done(sum(len(s) for s in slices))
    if not slices:
        raise DataError(f"none of the {len(files)} files in {data_dir} gave usable slices ({'; '.join(problems[:2])}"
                        f"{'; ...' if len(problems) > 2 else ''}); check that they are complete images or volumes")
    if problems:
        logging.warning("data: skipped %d of %d files that cannot be used, e.g. %s", len(problems), len(files),
                        "; ".join(problems[:2]))
    return np.concatenate(slices)[..., None]                                  # [N, R, R, 1]


class _Progress:
    """Decoding progress: a Keras progress bar on a terminal, else a log line every few seconds."""

    def __init__(self, total):
        self.total, self.count, self.start = total, 0, time.time()
        self.last_log = self.start
        self.bar = None
        if sys.stderr.isatty() and total > 1:
            self.bar = keras.utils.Progbar(total, unit_name="file")

    def update(self):
        self.count += 1
        now = time.time()
        if self.bar is not None:
            self.bar.update(self.count)
        elif now - self.last_log >= PROGRESS_SECONDS and self.count < self.total:
            self.last_log = now
            rate = self.count / (now - self.start)
            logging.info("data: decoded %d/%d files (%.0f files/s, about %.0f s left)", self.count, self.total,
                         rate, (self.total - self.count) / rate)

    def done(self, slices):
        seconds = time.time() - self.start
        logging.info("data: decoded %d files into %d slices in %.1f s (%.0f files/s)", self.count, slices,
                     seconds, self.count / max(seconds, 1e-9))


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------

def cache_key(files, **settings):
    """Hex digest of everything that changes the decoded arrays: each file's path, size and
    modification time, the settings, and PREPROCESS_VERSION."""
    stats = []
    for f in files:
        try:
            st = os.stat(f)
        except OSError:                   # a dangling link or a file gone meanwhile: decoding skips it
            stats.append([os.path.abspath(f), None, None])
            continue
        stats.append([os.path.abspath(f), st.st_size, st.st_mtime_ns])
    blob = json.dumps({"version": PREPROCESS_VERSION, "files": stats, **settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def read_cache(path, resolution):
    """The cached uint8 [N, R, R, 1] array, or None when absent, unreadable or not what is expected."""
    if path is None or not os.path.isfile(path):
        return None
    try:
        slices = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        logging.warning("data: ignoring unreadable cache file %s (%s); decoding again", path, e)
        return None
    if slices.dtype != np.uint8 or slices.ndim != 4 or slices.shape[1:] != (resolution, resolution, 1) \
            or not len(slices):
        logging.warning("data: ignoring cache file %s with unexpected shape %s", path, slices.shape)
        return None
    return slices


def write_cache(path, slices):
    """Write atomically: a temporary name in the same folder, then os.replace."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        with open(tmp, "wb") as f:
            np.save(f, slices)
        os.replace(tmp, path)
    except OSError as e:
        logging.warning("data: could not write the cache %s (%s); continuing without it", path, e)
        if os.path.exists(tmp):
            os.remove(tmp)
        return
    logging.info("data: cached %d slices in %s", len(slices), path)


# ---------------------------------------------------------------------------------------------
# Helpers for arrays
# ---------------------------------------------------------------------------------------------

def _check_images(images):
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != images.shape[2] or not len(images):
        raise ValueError(f"images must be a non-empty uint8 array [N, R, R, C], got {images.dtype} {images.shape}")
    return images


def _tile_channels(images, channels):
    """uint8 [N, R, R, 1] -> [N, R, R, channels] (gray repeated for 3-channel models)."""
    if images.shape[-1] == channels:
        return images
    if images.shape[-1] == 1:
        return np.repeat(images, channels, axis=-1)
    raise ValueError(f"images have {images.shape[-1]} channels, cannot make {channels}")


# ---------------------------------------------------------------------------------------------
# The synthetic phantom
# ---------------------------------------------------------------------------------------------

def _load_synthetic(resolution, cache_dir, seed, exclude_subjects, subjects):
    if subjects is not None:
        raise DataError("the built-in synthetic slices have no subjects to choose from; give --data_dir "
                        "(or --reference_dir) with real slices to pick subjects")
    if exclude_subjects:
        logging.warning("data: --exclude_subjects has no effect on the built-in synthetic slices")
    logging.info("data: no data folder given, using %d built-in synthetic brain slices; for OASIS use "
                 "--data_dir /path/to/keras_png_slices_data", SYNTHETIC_COUNT)
    key = hashlib.sha256(json.dumps([PREPROCESS_VERSION, SYNTHETIC_COUNT, resolution, int(seed)]).encode())
    path = None if cache_dir is None else os.path.join(cache_dir, f"synthetic-{key.hexdigest()[:20]}.npy")
    slices = read_cache(path, resolution)
    if slices is not None:
        logging.info("data: cache hit, synthetic slices from %s", path)
        return slices
    logging.info("data: %s, generating synthetic slices", "no cache" if path is None else "cache miss")
    slices = synthetic_slices(SYNTHETIC_COUNT, resolution, seed)[..., None]
    if path is not None:
        write_cache(path, slices)
    return slices


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
    return to_uint8(image * 255.0)
