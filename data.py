"""Training data: brain MRI slices from disk (or a built-in synthetic phantom) as a tf.data pipeline.

Lives here: finding slices in a folder (PNG/JPEG/TIFF/BMP files and NIfTI/Analyze volumes, the
COMP3710 `keras_png_slices_data` layout with its splits), decoding them to square uint8 arrays at
the training resolution, the on-disk cache of that work (also of the synthetic phantom, the
default data), and `make_dataset`, the endless shuffled, flipped, batched stream the trainer reads.
Not here: drawing the phantom (phantom.py), pixel-range conversions (pixels.py), flags
(driver.py), what the model does with the batches (gan.py), metrics on real slices
(evaluation.py), pictures (visualize.py).

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
import zlib

import nibabel as nib
import numpy as np
import tensorflow as tf
from absl import logging
from nibabel.filebasedimages import ImageFileError
from PIL import Image

import atomic
import phantom
import pixels
from progress import Progress

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
                                       # by 1.3-2x on 2 shared cores (python tools/bench_data.py --decode DIR)
PROGRESS_SECONDS = 5.0                 # log decoding progress this often
# The cached slices and each file's slice count, and their temporary files (also older code's).
CACHE_PATTERN = re.compile(r"^(slices|synthetic)-[0-9a-f]{20}\.(npy|counts\.json)(\.tmp\d+|\.tmp-\d+-[0-9a-f]{8})?$")
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
                exclude_subjects=(), subjects=None, with_sources=False):
    """All usable slices under `data_dir` (or the synthetic phantom when it is None), fitted to
    `resolution` and cached in `cache_dir` (None: no cache). Returns uint8 [N, resolution, resolution, channels],
    and with `with_sources` also where each slice came from: [(path, index in its file, slices in its
    file)] (labels.py reads slice levels and subjects from them; the phantom has none).

    `splits` picks COMP3710 split folders ("train", "validate", "test" or "all"); `exclude_subjects`
    drops, and `subjects` keeps only, files named like `case_<id>_...` (also `OAS1_<id>_...`, `OASIS_<id>_...`;
    numeric ids compare as numbers, so "37" and "0037" are the same subject).
    """
    resolution, channels = int(resolution), int(channels)
    if resolution < 1 or channels not in (1, 3):
        raise ValueError(f"resolution must be positive and channels 1 or 3, got {resolution} and {channels}")
    if data_dir is None:
        if with_sources:
            raise DataError("the built-in synthetic slices have no subjects or slice levels to condition on; give "
                            "--data_dir with real slices (named like case_<id>_slice_<n>.png) or volumes")
        return _tile_channels(_load_synthetic(resolution, cache_dir, seed, exclude_subjects, subjects), channels)

    splits = check_splits(splits)
    files = find_files(data_dir, splits)
    files = filter_subjects(files, exclude_subjects, subjects, data_dir)
    # The cache holds gray slices; `channels` only tiles them afterwards, so it is not part of the key.
    key = cache_key(files, resolution=resolution, splits=splits, exclude_subjects=sorted(map(str, exclude_subjects)),
                    subjects=None if subjects is None else sorted(map(str, subjects)))
    path = None if cache_dir is None else os.path.join(cache_dir, f"slices-{key}.npy")
    slices = read_cache(path, resolution)
    counts = read_counts(path, files) if with_sources else None
    if slices is not None and (counts is not None or not with_sources):
        logging.info("data: cache hit, %d slices at %dx%d from %s", len(slices), resolution, resolution, path)
    else:
        logging.info("data: %s, decoding %d files from %s at %dx%d",
                     "no cache" if path is None else "cache miss", len(files), data_dir, resolution, resolution)
        slices, counts = decode_counted(files, resolution, data_dir)
        if path is not None:
            write_cache(path, slices, counts)
    if not with_sources:
        return _tile_channels(slices, channels)
    sources = [(f, i, k) for f, k in zip(files, counts) for i in range(k)]
    return _tile_channels(slices, channels), sources


def make_dataset(images, batch_size, seed=0, channels=1, mirror=True, labels=None):
    """Endless stream of float32 batches [batch_size, R, R, channels] in [-1, 1] from uint8 `images`
    [N, R, R, C]: every epoch a fresh permutation, with `mirror` each image flipped left-right with
    probability 1/2 (brains are roughly symmetric), batches of exactly `batch_size`, prefetched.
    With `labels` (float32 [N, c_dim], labels.py) each element is (images, their labels, labels for
    the generator): the latter drawn from all N at random, as the reference draws its fakes' labels.

    The order and the flips are a pure function of (`seed`, position in the stream), computed with
    stateless random ops, so `make_dataset(...).skip(k)` yields exactly what an uninterrupted run saw
    after k batches; a resumed run relies on that.
    """
    images = _tile_channels(_check_images(images), channels)
    batch_size, seed = int(batch_size), int(seed)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    n = images.shape[0]
    if labels is not None:
        label_table = tf.constant(np.asarray(labels, np.float32))              # [N, c_dim]
        if label_table.shape[0] != n:
            raise ValueError(f"{label_table.shape[0]} label vectors for {n} images")

    def epoch_indices(epoch):                    # a permutation of 0..N-1 fixed by (seed, epoch)
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=[seed, 2 * epoch])
        return tf.data.Dataset.from_tensor_slices(order)

    def make_batch(step, index, pool):
        x = pixels.to_unit_range(tf.gather(pool, index))                        # [B, R, R, C]
        if mirror:
            flip = tf.random.stateless_uniform([batch_size], seed=[seed, 2 * step + 1]) < 0.5
            x = tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)
        if labels is None:
            return x
        # Negative counters: a stream of its own beside the permutations' and flips' (both >= 0).
        drawn = tf.random.stateless_uniform([batch_size], seed=tf.stack([tf.constant(seed, tf.int64), -1 - step]),
                                            maxval=n, dtype=tf.int64)
        return x, tf.gather(label_table, index), tf.gather(label_table, drawn)   # [B, R, R, C], [B, c] x2

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


def clear_cache(cache_dir, delete=True):
    """Delete the cache files this module wrote in `cache_dir` (and temporary files left by killed
    writes). Nothing else is touched and links are never followed. Returns the sorted deleted paths
    (delete=False: the paths it would delete)."""
    if cache_dir is None or not os.path.isdir(cache_dir) or os.path.islink(cache_dir):
        return []
    found = sorted(entry.path for entry in os.scandir(cache_dir)
                   if CACHE_PATTERN.match(entry.name) and entry.is_file(follow_symlinks=False))
    for path in found if delete else ():
        os.remove(path)
    return found


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
    try:
        if first is not None and file_kind(os.path.basename(first)) == "image":
            with Image.open(first) as image:
                size = f"{image.width}x{image.height}"
        elif first is not None:
            size = "x".join(map(str, decode_volume(first).shape))
    except (_Unreadable, *_READ_ERRORS) as e:          # training skips such a file with a warning
        size = f"unknown ({os.path.basename(first)} cannot be read: {type(e).__name__})"
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


def subjects_of(sources):
    """Each slice's subject (`subject_of` its file) from `load_slices`' sources: [N] str, or None
    when there are no sources or a file is named without one."""
    subjects = [subject_of(path) for path, _, _ in sources or ()]
    return np.array(subjects) if subjects and None not in subjects else None


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
    return np.stack([pixels.quantize(resize(fit_square(s), resolution)) for s in slices])


def decode_files(files, resolution, data_dir="", workers=DECODE_WORKERS):
    """Decode every file (threads, order kept) with progress; unreadable files are skipped, counted
    and named in a warning. Returns uint8 [N, resolution, resolution, 1]."""
    return decode_counted(files, resolution, data_dir, workers)[0]


def decode_counted(files, resolution, data_dir="", workers=DECODE_WORKERS):
    """`decode_files`, and how many slices each file gave (0 for an unreadable one)."""
    decode = decode_file                       # looked up now, so tests can replace it

    def attempt(path):
        try:
            return decode(path, resolution), None
        except _Unreadable as e:
            return None, f"{os.path.basename(path)}: {e}"

    progress = Progress(len(files), sys.stderr.isatty() and len(files) > 1, _decoding_line, PROGRESS_SECONDS,
                        unit_name="file")
    slices, problems, counts = [], [], []
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        for result, problem in pool.map(attempt, files):
            if problem:
                problems.append(problem)
            else:
                slices.append(result)
            counts.append(0 if problem else len(result))
            progress.update(len(counts))
    seconds = progress.seconds()
    logging.info("data: decoded %d files into %d slices in %.1f s (%.0f files/s)", len(counts),
                 sum(len(s) for s in slices), seconds, len(counts) / max(seconds, 1e-9))
    if not slices:
        raise DataError(f"none of the {len(files)} files in {data_dir} gave usable slices ({'; '.join(problems[:2])}"
                        f"{'; ...' if len(problems) > 2 else ''}); check that they are complete images or volumes")
    if problems:
        logging.warning("data: skipped %d of %d files that cannot be used, e.g. %s", len(problems), len(files),
                        "; ".join(problems[:2]))
    return np.concatenate(slices)[..., None], counts                          # [N, R, R, 1]


def _decoding_line(done, total, seconds, values=None):
    """The log line while decoding without a bar: files so far, their rate and the time left."""
    rate = done / seconds
    return f"data: decoded {done}/{total} files ({rate:.0f} files/s, about {(total - done) / rate:.0f} s left)"


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


def counts_path(path):
    """Beside a cache of slices, how many slices each of its files gave: `<cache>.counts.json`."""
    return path[:-len(".npy")] + ".counts.json"


def read_counts(path, files):
    """The per-file slice counts cached beside `path`, or None when absent or not for `files`."""
    if path is None or not os.path.isfile(counts_path(path)):
        return None
    try:
        with open(counts_path(path)) as f:
            counts = json.load(f)
    except (OSError, ValueError):
        return None
    return counts if isinstance(counts, list) and len(counts) == len(files) else None


def write_cache(path, slices, counts=None):
    """Write atomically (atomic.staged), with the per-file `counts` beside it; a cache that cannot
    be written is a warning, not an error."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        with atomic.staged(path) as tmp, open(tmp, "wb") as f:
            np.save(f, slices)
        if counts is not None:
            atomic.write_json(counts_path(path), [int(k) for k in counts])
    except OSError as e:
        logging.warning("data: could not write the cache %s (%s); continuing without it", path, e)
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
# The synthetic phantom (drawn by phantom.py), cached like real slices
# ---------------------------------------------------------------------------------------------

def _load_synthetic(resolution, cache_dir, seed, exclude_subjects, subjects):
    if subjects is not None:
        raise DataError("the built-in synthetic slices have no subjects to choose from; give --data_dir "
                        "(or --eval_dir) with real slices to pick subjects")
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
    slices = phantom.synthetic_slices(SYNTHETIC_COUNT, resolution, seed)[..., None]
    if path is not None:
        write_cache(path, slices)
    return slices
