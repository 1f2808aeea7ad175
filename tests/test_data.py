"""data.py: finding and decoding slices, volumes, the cache, the phantom and the tf.data pipeline.

Every input is written by the tests into tmp_path (tiny images and volumes with known values), so
nothing is downloaded; the one test on real OASIS data skips when ../shared/data is absent.
"""

import logging
import os

import nibabel as nib
import numpy as np
import pytest
from conftest import SHARED_DATA
from PIL import Image

import data
from phantom import synthetic_slices

# COMP3710-style tree: every image is one constant value that encodes split and subject.
SPLIT_BASE = {"train": 100, "validate": 150, "test": 200}
SUBJECTS = {"train": ("001", "002", "003"), "validate": ("004",), "test": ("005",)}
MASK_LEVELS = (0, 85, 170, 255)


def save_png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path)


def image_value(split, subject):
    return SPLIT_BASE[split] + int(subject)


@pytest.fixture
def comp3710(tmp_path):
    """keras_png_slices_data with three splits, two 32x32 slices per subject, and mask twins whose
    stripes (0/85/170/255) would show up in any loaded image."""
    root = tmp_path / "keras_png_slices_data"
    stripes = np.repeat(np.array(MASK_LEVELS, np.uint8), 8)[None, :].repeat(32, 0)   # [32, 32]
    for split, subjects in SUBJECTS.items():
        for subject in subjects:
            for z in (0, 1):
                name = f"case_{subject}_slice_{z}.nii.png"
                save_png(str(root / f"keras_png_slices_{split}" / name),
                         np.full([32, 32], image_value(split, subject), np.uint8))
                save_png(str(root / f"keras_png_slices_seg_{split}" / f"seg_{subject}_slice_{z}.nii.png"), stripes)
    return root


def values_of(slices):
    """The constant value of each loaded slice (asserting it is constant, i.e. no mask got in)."""
    flat = slices.reshape(len(slices), -1)
    assert (flat == flat[:, :1]).all(), "a loaded slice is not constant: a mask or a wrong file was read"
    return sorted(flat[:, 0].tolist())


# ---------------------------------------------------------------------------------------------
# Folders, splits, subjects
# ---------------------------------------------------------------------------------------------

def test_train_split_by_default_and_masks_never_loaded(comp3710, tmp_path):
    slices = data.load_slices(str(comp3710), 16, str(tmp_path / "cache"))
    assert slices.shape == (6, 16, 16, 1) and slices.dtype == np.uint8
    assert values_of(slices) == [101, 101, 102, 102, 103, 103]


@pytest.mark.parametrize("splits, expected", [
    (("validate",), [154, 154]),
    (("train", "test"), [101, 101, 102, 102, 103, 103, 205, 205]),
    (("all",), [101, 101, 102, 102, 103, 103, 154, 154, 205, 205]),
])
def test_splits_are_honoured(comp3710, splits, expected):
    assert values_of(data.load_slices(str(comp3710), 16, None, splits=splits)) == expected


def test_a_split_folder_is_used_directly(comp3710):
    assert values_of(data.load_slices(str(comp3710 / "keras_png_slices_test"), 16, None)) == [205, 205]


def test_unknown_or_missing_split_says_what_exists(comp3710):
    with pytest.raises(data.DataError, match="unknown split 'valid'.*train, validate, test or all"):
        data.load_slices(str(comp3710), 16, None, splits=("valid",))
    os.rename(comp3710 / "keras_png_slices_test", comp3710 / "elsewhere")
    with pytest.raises(data.DataError, match="no test split.*found split folders for train, validate"):
        data.load_slices(str(comp3710), 16, None, splits=("test",))


def test_segmentation_names_skipped_in_any_folder(tmp_path):
    folder = tmp_path / "my_slices"
    save_png(str(folder / "case_7_slice_0.png"), np.full([8, 8], 60, np.uint8))
    save_png(str(folder / "seg_7_slice_0.png"), np.full([8, 8], 170, np.uint8))
    save_png(str(folder / "brain_fseg.png"), np.full([8, 8], 85, np.uint8))
    save_png(str(folder / "segmentations" / "case_7_slice_1.png"), np.full([8, 8], 255, np.uint8))
    save_png(str(folder / "nested" / "case_7_slice_2.png"), np.full([8, 8], 61, np.uint8))
    assert values_of(data.load_slices(str(folder), 8, None)) == [60, 61]
    with pytest.raises(data.DataError, match="segmentation folder"):
        data.load_slices(str(folder / "segmentations"), 8, None)


def test_exclude_subjects_and_subjects(comp3710):
    assert values_of(data.load_slices(str(comp3710), 16, None, exclude_subjects=("0001", "3"))) == [102, 102]
    assert values_of(data.load_slices(str(comp3710), 16, None, splits=("all",), subjects=("004", "005"))) == \
        [154, 154, 205, 205]
    with pytest.raises(data.DataError, match="no slices left.*present: 1, 2, 3"):
        data.load_slices(str(comp3710), 16, None, subjects=("0037",))


def test_survey_counts_splits_subjects_and_skips_without_writing(comp3710, tmp_path):
    os.symlink(tmp_path / "gone.png", comp3710 / "keras_png_slices_train" / "case_009_slice_0.nii.png")
    (comp3710 / "notes.txt").write_text("not a slice")
    before = sorted(p for p in comp3710.rglob("*"))
    found = data.survey(str(comp3710), ("train",), exclude_subjects=("2",))
    assert found["splits"] == {"test": {"files": 2, "subjects": 1}, "train": {"files": 7, "subjects": 4},
                               "validate": {"files": 2, "subjects": 1}}
    assert found["training_files"] == 5 and found["training_subjects"] == ["1", "3", "9"]
    assert found["held_out"] == ["2"] and found["first_file_size"] == "32x32"
    assert found["skipped"] == {"segmentation": 3, "other": 1, "broken links": 1}
    assert sorted(p for p in comp3710.rglob("*")) == before
    assert data.survey(None)["training_files"] == data.SYNTHETIC_COUNT


def test_survey_names_a_first_file_that_cannot_be_read(tmp_path):
    nib.save(nib.Nifti1Image(tagged_volume(), np.eye(4)), str(tmp_path / "OAS1_0001_MR1.nii.gz"))
    whole = (tmp_path / "OAS1_0001_MR1.nii.gz").read_bytes()
    (tmp_path / "OAS1_0001_MR1.nii.gz").write_bytes(whole[:len(whole) // 2])
    assert data.survey(str(tmp_path))["first_file_size"].startswith("unknown (OAS1_0001_MR1.nii.gz cannot be read: ")
    (tmp_path / "OAS1_0001_MR1.nii.gz").unlink()
    (tmp_path / "case_001_slice_0.png").write_bytes(b"not a PNG")
    assert data.survey(str(tmp_path))["first_file_size"] == \
        "unknown (case_001_slice_0.png cannot be read: UnidentifiedImageError)"


def test_the_evaluation_reference_is_the_validate_split_and_the_held_out_subjects(comp3710, tmp_path):
    import evaluation
    import training
    assert data.split_folders(str(comp3710)) == {"train", "validate", "test"}
    assert data.split_folders(str(comp3710 / "keras_png_slices_test")) == {"test"}
    held_out = training.RunOptions(data_dir=str(comp3710), exclude_subjects=("2",), eval_subjects=("2",))
    parts = held_out.reference_parts
    assert parts == [(str(comp3710), ("validate",), None), (str(comp3710), ("train",), ("2",))]
    # Subject 004 (validate, 154) and the held-out training subject 002 (102), never the others.
    images, c = evaluation.load_reference(parts, 16, None)
    assert values_of(images) == [102, 102, 154, 154] and c is None
    assert training.RunOptions(data_dir=str(comp3710)).reference_parts == \
        [(str(comp3710), ("validate",), None)]
    # A folder without split folders: every slice, as before; no data: the phantom.
    flat = tmp_path / "flat"
    save_png(str(flat / "case_009_slice_0.png"), np.full([32, 32], 9, np.uint8))
    assert training.RunOptions(data_dir=str(flat)).reference_parts == [(str(flat), ("validate",), None)]
    assert training.RunOptions().reference_parts == [(None, ("validate",), None)]


def test_missing_and_empty_folders_say_what_to_do(tmp_path):
    with pytest.raises(data.DataError, match=f"{tmp_path / 'nope'} does not exist.*--data_dir"):
        data.load_slices(str(tmp_path / "nope"), 16, None)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(data.DataError, match=r"no usable images.*\.png .*\.tiff.*\.nii\.gz.*1 other files"):
        data.load_slices(str(tmp_path), 16, None)


# ---------------------------------------------------------------------------------------------
# Decoding 2D files
# ---------------------------------------------------------------------------------------------

def test_formats_and_colour(tmp_path):
    for ext in ("png", "jpg", "tif", "bmp"):
        Image.fromarray(np.full([16, 16], 90, np.uint8)).save(tmp_path / f"gray.{ext}")
    Image.fromarray(np.full([16, 16, 3], [255, 0, 0], np.uint8)).save(tmp_path / "red.png")
    slices = data.load_slices(str(tmp_path), 16, None)
    assert len(slices) == 5
    values = sorted(int(np.median(s)) for s in slices)
    assert values[0] == 76                                  # ITU-R 601 luma of pure red
    assert all(abs(v - 90) <= 2 for v in values[1:])        # JPEG may be off by a grey level or two


def test_16bit_scaled_by_robust_percentile_not_by_65535(tmp_path):
    scan = np.linspace(1, 1000, 32 * 32).reshape(32, 32).astype(np.uint16)   # MRI-like range
    scan[0, 0] = 65535                                                       # one hot pixel
    Image.fromarray(scan).save(tmp_path / "scan16.png")
    assert Image.open(tmp_path / "scan16.png").mode.startswith("I")
    (slice_,) = data.load_slices(str(tmp_path), 32, None)[..., 0]
    assert slice_[0, 0] == 255                                               # clipped, not dominant
    assert abs(int(slice_[16, 0]) - 128) <= 3                                # value ~500 -> ~mid-grey
    assert slice_[-1, -1] == 255                                             # the top of the range is white


def test_non_square_is_padded_not_stretched(tmp_path):
    save_png(str(tmp_path / "wide.png"), np.full([16, 64], 255, np.uint8))   # 4:1 white bar
    (slice_,) = data.load_slices(str(tmp_path), 32, None)[..., 0]
    bright_rows = np.flatnonzero(slice_.mean(axis=1) > 128)
    assert list(bright_rows) == list(range(12, 20))                          # 8 rows high, centred
    assert (slice_[14:18] > 250).all()                                       # the full width
    assert (slice_[:10] == 0).all() and (slice_[22:] == 0).all()             # zero padding


def test_corrupt_and_empty_files_are_skipped_and_counted(tmp_path, caplog):
    for i in range(3):
        save_png(str(tmp_path / f"case_1_slice_{i}.png"), np.full([16, 16], 50 + i, np.uint8))
    good = (tmp_path / "case_1_slice_0.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "garbage.jpg").write_bytes(b"this is not a jpeg" * 10)
    with caplog.at_level(logging.WARNING):
        slices = data.load_slices(str(tmp_path), 16, None)
    assert values_of(slices) == [50, 51, 52]
    assert "skipped 3 of 6 files" in caplog.text and "empty file (0 bytes)" in caplog.text


def test_a_dangling_link_is_skipped_and_counted_like_an_unreadable_file(tmp_path, caplog):
    folder = tmp_path / "slices"
    for i in range(2):
        save_png(str(folder / f"case_1_slice_{i}.png"), np.full([16, 16], 60 + i, np.uint8))
    os.symlink(tmp_path / "gone.png", folder / "case_1_slice_2.png")
    with caplog.at_level(logging.WARNING):
        slices = data.load_slices(str(folder), 16, str(tmp_path / "cache"))
    assert values_of(slices) == [60, 61]
    assert "skipped 1 of 3 files" in caplog.text and f"a link to {tmp_path / 'gone.png'}, which does not exist" in caplog.text
    assert values_of(data.load_slices(str(folder), 16, str(tmp_path / "cache"))) == [60, 61]   # cached as it is


def test_nothing_readable_is_one_clear_error(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(data.DataError, match="none of the 2 files.*gave usable slices.*a.png: empty file"):
        data.load_slices(str(tmp_path), 16, None)


# ---------------------------------------------------------------------------------------------
# Volumes
# ---------------------------------------------------------------------------------------------

def tagged_volume():
    """[x=12 (left->right), y=14 (posterior->anterior), z=10 (inferior->superior)] in RAS. Slices
    z=1..7 hold tissue of value 10*(z+1) and a bright 200 marker in the anterior-left corner
    (x < 4, y >= 10); z=0 and z=9 are empty and z=8 has one voxel (< 1% tissue), so all three go."""
    volume = np.zeros([12, 14, 10], np.float32)
    for z in range(1, 8):
        volume[:, :, z] = 10.0 * (z + 1)
        volume[:4, 10:, z] = 200.0
    volume[5, 5, 8] = 100.0
    return volume


def check_tagged_slices(slices):
    """Expected after RAS, rot90, pad 12 -> 14 wide: anterior up, the subject's left on the left."""
    slices = slices[..., 0].astype(int)
    assert slices.shape == (7, 14, 14)
    assert (slices[:, :4, 1:5] == 255).all()                                 # marker: top left
    assert (slices[:, :, [0, 13]] == 0).all()                                # padding columns
    tissue = slices[:, 8, 8]                                                 # posterior right: tissue
    assert (np.diff(tissue) > 0).all()                                       # inferior -> superior
    np.testing.assert_allclose(tissue, 12.75 * np.arange(2, 9), atol=1)      # 99.5th percentile (200) -> 255


def test_nifti_volume_orientation_and_empty_slices(tmp_path):
    nib.save(nib.Nifti1Image(tagged_volume(), np.eye(4)), str(tmp_path / "OAS1_0042_MR1.nii.gz"))
    nib.save(nib.Nifti1Image((tagged_volume() > 0).astype(np.float32), np.eye(4)),
             str(tmp_path / "OAS1_0042_MR1_fseg.nii.gz"))                   # segmentation: skipped
    check_tagged_slices(data.load_slices(str(tmp_path), 14, None))


def test_analyze_volume_stored_radiologically(tmp_path):
    # OASIS-1 discs hold Analyze .img/.hdr pairs stored left-to-right flipped (LAS).
    flipped = np.ascontiguousarray(tagged_volume()[::-1])
    nib.save(nib.AnalyzeImage(flipped, np.diag([-1.0, 1.0, 1.0, 1.0])), str(tmp_path / "scan.img"))
    assert sorted(os.listdir(tmp_path)) == ["scan.hdr", "scan.img"]
    assert nib.aff2axcodes(nib.load(str(tmp_path / "scan.img")).affine) == ("L", "A", "S")
    save_png(str(tmp_path / "extra.png"), np.full([14, 14], 33, np.uint8))  # folders may mix both
    slices = data.load_slices(str(tmp_path), 14, None)
    assert len(slices) == 8 and values_of(slices[:1]) == [33]
    check_tagged_slices(slices[1:])


def test_volume_with_one_slice_or_no_tissue_is_explained(tmp_path):
    nib.save(nib.Nifti1Image(np.ones([12, 14, 1], np.float32), np.eye(4)), str(tmp_path / "one.nii"))
    with pytest.raises(data.DataError, match=r"one.nii: a volume needs several axial slices.*\(12, 14, 1\)"):
        data.load_slices(str(tmp_path), 16, None)
    os.remove(tmp_path / "one.nii")
    nib.save(nib.Nifti1Image(np.zeros([12, 14, 6], np.float32), np.eye(4)), str(tmp_path / "blank.nii.gz"))
    with pytest.raises(data.DataError, match="blank.nii.gz: every axial slice is empty"):
        data.load_slices(str(tmp_path), 16, None)


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "volumes")), reason="no ../shared/data/volumes")
def test_real_oasis_volume(tmp_path):
    folder = os.path.join(SHARED_DATA, "volumes")
    slices = data.load_slices(folder, 32, None)
    assert 120 <= len(slices) <= 176                      # 176 axial slices, the empty ends dropped
    assert slices.max() == 255 and np.median(slices) < 40  # mostly background around the brain
    brain = slices[len(slices) // 2, ..., 0]
    assert brain[:3, :3].max() == 0 and brain[12:20, 12:20].mean() > 80
    # The _fseg segmentation next to it was skipped: only the T1 volume's slices are here.
    assert [os.path.basename(f) for f in data.find_files(folder)] == \
        ["OAS1_0001_MR1_mpr_n4_anon_111_t88_masked_gfc.nii.gz"]


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------

REAL_DECODE = data.decode_file


def counting_decoder(monkeypatch):
    calls = []

    def decode(path, resolution):
        calls.append(os.path.basename(path))
        return REAL_DECODE(path, resolution)
    monkeypatch.setattr(data, "decode_file", decode)
    return calls


def test_cache_hit_and_misses(comp3710, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    calls = counting_decoder(monkeypatch)
    first = data.load_slices(str(comp3710), 16, cache)
    assert len(calls) == 6 and len(os.listdir(cache)) == 2                # the slices and each file's count

    def fail(path, resolution):
        raise AssertionError("decoded although the cache should have been used")
    monkeypatch.setattr(data, "decode_file", fail)
    np.testing.assert_array_equal(data.load_slices(str(comp3710), 16, cache), first)     # hit

    calls = counting_decoder(monkeypatch)
    assert data.load_slices(str(comp3710), 8, cache).shape == (6, 8, 8, 1) and len(calls) == 6  # resolution
    data.load_slices(str(comp3710), 16, cache, exclude_subjects=("2",))
    assert len(calls) == 10                                                                # subjects
    one = comp3710 / "keras_png_slices_train" / "case_001_slice_0.nii.png"
    os.utime(one, ns=(1, 1))
    data.load_slices(str(comp3710), 16, cache)
    assert len(calls) == 16                                                                # file changed


def test_corrupt_cache_file_is_a_miss(comp3710, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = data.load_slices(str(comp3710), 16, str(cache))
    (path,) = cache.glob("*.npy")
    path.write_bytes(path.read_bytes()[:100])              # as if the disk filled up mid-write
    calls = counting_decoder(monkeypatch)
    np.testing.assert_array_equal(data.load_slices(str(comp3710), 16, str(cache)), first)
    assert len(calls) == 6
    np.testing.assert_array_equal(np.load(path), first)    # rewritten whole


def test_sources_name_each_slices_file_and_level_and_survive_the_cache(comp3710, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    slices, sources = data.load_slices(str(comp3710), 16, cache, with_sources=True)
    names = [os.path.basename(p) for p, _, _ in sources]
    assert names == sorted(f"case_{s}_slice_{z}.nii.png" for s in SUBJECTS["train"] for z in (0, 1))
    assert [(i, k) for _, i, k in sources] == [(0, 1)] * 6
    assert slices[:, 0, 0, 0].tolist() == [image_value("train", n.split("_")[1]) for n in names]

    def fail(path, resolution):
        raise AssertionError("decoded although the cache should have been used")
    monkeypatch.setattr(data, "decode_file", fail)
    assert data.load_slices(str(comp3710), 16, cache, with_sources=True)[1] == sources            # hit
    # A cache written before sources existed serves plain loads but is decoded again for sources.
    (counts,) = [p for p in os.listdir(cache) if p.endswith(".counts.json")]
    os.remove(os.path.join(cache, counts))
    data.load_slices(str(comp3710), 16, cache)
    calls = counting_decoder(monkeypatch)
    assert data.load_slices(str(comp3710), 16, cache, with_sources=True)[1] == sources and len(calls) == 6
    assert len(data.clear_cache(cache)) == 2                                                   # both files


def test_the_sources_of_a_volume_count_its_kept_slices(tmp_path):
    path = str(tmp_path / "OAS1_0042_MR1.nii.gz")
    nib.save(nib.Nifti1Image(tagged_volume(), np.eye(4)), path)
    slices, sources = data.load_slices(str(tmp_path), 14, None, with_sources=True)
    assert sources == [(path, i, 7) for i in range(7)]                 # the empty slice is not counted
    with pytest.raises(data.DataError, match="synthetic slices have no subjects or slice levels"):
        data.load_slices(None, 8, None, with_sources=True)


def test_clear_cache_deletes_only_its_own_files(comp3710, tmp_path):
    cache = tmp_path / "cache"
    data.load_slices(str(comp3710), 16, str(cache))
    own, counts = sorted(cache.iterdir(), key=lambda p: p.suffix == ".json")    # slices-*.npy, slices-*.counts.json
    stray = cache / f"{own.name}.tmp-4242-0123abcd"         # left by a killed write
    stray.write_bytes(b"partial")
    outside = tmp_path / "precious.npy"
    outside.write_bytes(b"keep")
    (cache / "slices-0123456789abcdef0123.npy").symlink_to(outside)
    (cache / "notes.npy").write_bytes(b"keep")
    (cache / "README").write_text("keep")
    assert data.clear_cache(str(cache)) == sorted([str(own), str(counts), str(stray)])
    assert sorted(os.listdir(cache)) == ["README", "notes.npy", "slices-0123456789abcdef0123.npy"]
    assert outside.read_bytes() == b"keep"
    assert data.clear_cache(str(tmp_path / "absent")) == []


def test_synthetic_default_is_cached_and_tiled(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "SYNTHETIC_COUNT", 24)
    cache = str(tmp_path / "cache")
    slices = data.load_slices(None, 16, cache, channels=3, seed=1)
    assert slices.shape == (24, 16, 16, 3) and (slices[..., :1] == slices).all()
    np.testing.assert_array_equal(slices[..., 0], synthetic_slices(24, 16, seed=1))

    def fail(*args):
        raise AssertionError("generated although the cache should have been used")
    monkeypatch.setattr(data.phantom, "synthetic_slices", fail)
    np.testing.assert_array_equal(data.load_slices(None, 16, cache, seed=1)[..., 0], slices[..., 0])
    with pytest.raises(AssertionError):
        data.load_slices(None, 16, cache, seed=2)            # another seed is another data set
    with pytest.raises(data.DataError, match="synthetic slices have no subjects"):
        data.load_slices(None, 16, cache, subjects=("1",))


# ---------------------------------------------------------------------------------------------
# The synthetic phantom
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def phantom():
    return synthetic_slices(16, 64, seed=0)


def test_phantom_is_deterministic_and_varied(phantom):
    np.testing.assert_array_equal(phantom, synthetic_slices(16, 64, seed=0))
    other = synthetic_slices(16, 64, seed=1)
    assert np.abs(phantom.astype(int) - other).mean() > 10                   # seeds differ
    head_area = (phantom > 20).mean(axis=(1, 2))                              # [16]
    assert head_area[-1] > 1.8 * head_area[0]                                 # small near the vertex
    pairwise = np.abs(phantom[:, None].astype(int) - phantom[None]).mean(axis=(2, 3))
    assert pairwise[~np.eye(16, dtype=bool)].min() > 3                        # no two slices alike


def test_phantom_is_roughly_left_right_symmetric(phantom):
    # On 4x4 block means, so that noise and one-pixel sulcus offsets do not count.
    blocks = phantom.reshape(16, 16, 4, 16, 4).mean(axis=(2, 4))            # [16, 16, 16]
    mirror_error = np.abs(blocks - blocks[:, :, ::-1]).mean(axis=(1, 2))
    neighbour_error = np.abs(blocks[1:] - blocks[:-1]).mean(axis=(1, 2))
    assert mirror_error.max() < 10 and mirror_error.mean() < 0.5 * neighbour_error.mean()


def test_phantom_looks_like_a_t1_slice(phantom):
    assert (phantom[:, :4, :4] < 8).all() and (phantom[:, -4:, -4:] < 8).all()   # dark background
    low, high = np.percentile(phantom[phantom > 20], [5, 95])
    assert phantom.max() > 230 and high - low > 120                               # wide grey range
    for slice_ in phantom:
        row = slice_[:, 32].astype(int)                                           # front edge -> centre
        outer = int(np.argmax(row > 40))                                          # the skin
        ring = row[outer:outer + 8]
        assert ring.max() > 160                                                   # bright scalp fat ...
        assert row[outer + int(np.argmax(ring)):32].min() < 60                    # ... then dark skull
    # Beside the midline (not on the fissure): white matter half way down, dark ventricles at the bottom.
    beside = np.concatenate([phantom[:, 22:42, 25:31], phantom[:, 22:42, 33:39]], axis=2)
    dark = (beside < 60).mean(axis=(1, 2))                                        # [16]
    assert dark[5:10].max() < 0.05 and dark[-3:].min() > 0.12


# ---------------------------------------------------------------------------------------------
# make_dataset
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_images():
    return synthetic_slices(10, 16, seed=3)[..., None]                      # [10, 16, 16, 1]


def take(dataset, count):
    return [batch.numpy() for batch in dataset.take(count)]


def test_dataset_values_shapes_and_flips(small_images):
    batches = take(data.make_dataset(small_images, 5, seed=0), 8)
    assert all(b.shape == (5, 16, 16, 1) and b.dtype == np.float32 for b in batches)
    assert min(b.min() for b in batches) == -1.0 and max(b.max() for b in batches) <= 1.0
    originals = small_images.astype(np.float32) / 127.5 - 1.0
    flips = 0
    for image in np.concatenate(batches):
        same = [i for i in range(10) if np.allclose(image, originals[i])]
        mirrored = [i for i in range(10) if np.allclose(image, originals[i, :, ::-1])]
        assert same or mirrored                                   # nothing but flips is done
        flips += bool(mirrored)
    assert 8 <= flips <= 32                                       # about half of 40


def test_without_mirror_every_image_is_the_original_in_the_same_order(small_images):
    plain = np.concatenate(take(data.make_dataset(small_images, 5, seed=0, mirror=False), 4))
    mirrored = np.concatenate(take(data.make_dataset(small_images, 5, seed=0), 4))
    originals = small_images.astype(np.float32) / 127.5 - 1.0
    ids = [next(i for i in range(10) if np.array_equal(image, originals[i])) for image in plain]   # never flipped
    assert sorted(ids[:10]) == list(range(10))
    for image, flipped_or_not in zip(plain, mirrored):                    # the same order as with flips
        assert np.array_equal(image, flipped_or_not) or np.array_equal(image[:, ::-1], flipped_or_not)


def test_dataset_epochs_are_permutations(small_images):
    (first, second) = take(data.make_dataset(small_images, 5, seed=0), 2)
    ids = [int(np.argmin([min(np.abs(x - o).sum(), np.abs(x[:, ::-1] - o).sum())
                          for o in small_images.astype(np.float32) / 127.5 - 1.0]))
           for x in np.concatenate([first, second])]
    assert sorted(ids) == list(range(10)) and ids != list(range(10))


def test_dataset_is_deterministic_and_resumable(small_images):
    run = take(data.make_dataset(small_images, 4, seed=7), 9)
    again = take(data.make_dataset(small_images, 4, seed=7), 9)
    resumed = take(data.make_dataset(small_images, 4, seed=7).skip(5), 4)
    other = take(data.make_dataset(small_images, 4, seed=8), 1)
    assert all(np.array_equal(a, b) for a, b in zip(run, again))
    assert all(np.array_equal(a, b) for a, b in zip(run[5:], resumed))
    assert not np.array_equal(run[0], other[0])


def test_dataset_rejects_wrong_input():
    with pytest.raises(ValueError, match="uint8"):
        data.make_dataset(np.zeros([4, 8, 8, 1], np.float32), 2)
    with pytest.raises(ValueError, match="cannot make 1"):
        data.make_dataset(np.zeros([4, 8, 8, 3], np.uint8), 2, channels=1)
