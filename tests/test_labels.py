"""labels.py: slice levels from names and volumes, covariates from a CSV, the saved definition, and
requests for generation, each against values worked out by hand. Tables are written into tmp_path."""

import numpy as np
import pytest

import labels
from labels import LabelError

TABLE = """ID,M/F,Hand,Age,Educ,CDR,Notes
OAS1_0001_MR1,F,R,74,2,0,x
OAS1_0002_MR1,M,R,55,4,0.5,
OAS1_0002_MR2,F,R,99,4,2,a second session: never used
OAS1_0003_MR1,F,L,20,,1,
"""


def sources(*subject_numbers):
    """COMP3710-style single-slice files: [(path, 0, 1)] for (subject, slice number) pairs."""
    return [(f"/d/case_{s}_slice_{n}.nii.png", 0, 1) for s, n in subject_numbers]


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "demographics.csv"
    path.write_text(TABLE)
    return str(path)


def test_slice_levels_run_from_each_subjects_lowest_to_its_highest():
    levels = labels.slice_levels(sources(("0001", 25), ("0001", 150), ("0001", 50), ("0002", 0), ("0002", 31),
                                         ("0002", 16)))
    np.testing.assert_allclose(levels, [0.0, 1.0, 25 / 125, 0.0, 1.0, 16 / 31], rtol=1e-6)


def test_slice_levels_from_z_names_and_from_a_volumes_own_order():
    named = labels.slice_levels([("/d/OAS1_0004_z10.png", 0, 1), ("/d/OAS1_0004_z30.png", 0, 1),
                                 ("/d/OAS1_0004_z20.png", 0, 1)])
    np.testing.assert_allclose(named, [0.0, 1.0, 0.5])
    volume = labels.slice_levels([("/v/OAS1_0005_MR1.nii.gz", i, 5) for i in range(5)])   # no number in the name
    np.testing.assert_allclose(volume, [0.0, 0.25, 0.5, 0.75, 1.0])


def test_the_slice_number_is_read_from_either_kind_of_name_or_is_none():
    assert labels.slice_number("/d/keras_png_slices_train/case_0037_slice_40.nii.png") == 40
    assert labels.slice_number("OAS1_0004_Z10.png") == 10 and labels.slice_number("case_0198_slice_100") == 100
    assert labels.slice_number("/d/case_1_slice_7/brain.png") is None               # only the file's own name counts


def test_the_slice_level_sits_after_the_labels_before_it(table):
    spec = labels.build(["sex", "slice", "age"], sources(("0001", 1), ("0002", 2)), table)
    assert labels.slice_index(spec) == 2                                 # after sex's two one-hot entries
    assert labels.slice_index(labels.build(["slice"], sources(("0001", 1), ("0001", 2)))) == 0
    assert labels.slice_index(labels.build(["age"], sources(("0001", 1), ("0002", 2)), table)) is None
    assert labels.slice_index(None) is None


def test_a_slice_without_a_number_is_a_clear_error():
    with pytest.raises(LabelError, match="brain.png has no slice number"):
        labels.slice_levels([("/d/brain.png", 0, 1)])


def test_table_ids_match_the_subject_ids_of_file_names():
    assert labels.table_id("OAS1_0037_MR1") == labels.table_id("0037") == labels.table_id("37") == "37"
    assert labels.table_id("sub-abc") == "sub-abc"


def test_numeric_columns_are_standardised_over_subjects_and_categories_one_hot(table):
    # Subject 1 has three slices, subject 2 one: the mean is over subjects, (74 + 55) / 2, not slices.
    slices = sources(("0001", 0), ("0001", 1), ("0001", 2), ("0002", 7))
    spec = labels.build(["age", "sex", "cdr"], slices, table)
    age, sex, cdr = spec.columns
    assert (age.kind, age.source, sex.kind, sex.source, sex.categories) == ("numeric", "Age", "categorical", "M/F",
                                                                            ("F", "M"))
    assert age.mean == pytest.approx(64.5) and age.std == pytest.approx(9.5)          # np.std of [74, 55]
    assert (age.low, age.high) == (55.0, 74.0) and cdr.kind == "numeric" and spec.dim == 4
    c, keep = labels.encode_sources(spec, slices)
    assert keep.all()
    np.testing.assert_allclose(c[0], [(74 - 64.5) / 9.5, 1.0, 0.0, (0 - 0.25) / 0.25])
    np.testing.assert_allclose(c[3], [(55 - 64.5) / 9.5, 0.0, 1.0, (0.5 - 0.25) / 0.25])   # MR1's row, not MR2's


def test_slice_and_covariates_together_in_the_order_named(table):
    slices = sources(("0001", 0), ("0001", 10), ("0003", 4), ("0003", 8))
    spec = labels.build(["slice", "hand"], slices, table)
    c, _ = labels.encode_sources(spec, slices)
    np.testing.assert_allclose(c, [[0, 0, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0]])        # hand: L, R


def test_subjects_missing_from_the_table_are_named_or_dropped(table):
    slices = sources(("0001", 0), ("0003", 0), ("0009", 0))
    with pytest.raises(LabelError, match=r"no Educ value .* subject\(s\) 3, 9.*--labels_missing drop"):
        labels.build(["educ"], slices, table)
    spec = labels.build(["educ"], slices, table, missing="drop")
    c, keep = labels.encode_sources(spec, slices)
    assert keep.tolist() == [True, False, False] and spec.columns[0].mean == 2.0


def test_bad_numbers_unknown_columns_and_absent_tables_are_clear_errors(table, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("ID,Age\nOAS1_0001_MR1,74\nOAS1_0002_MR1,7O\n")
    with pytest.raises(LabelError, match=r"column Age .* holds numbers but also '7O'"):
        labels.build(["age"], sources(("0001", 0), ("0002", 0)), str(bad))
    with pytest.raises(LabelError, match="mmse: no such column.*Age"):
        labels.build(["mmse"], sources(("0001", 0)), table)
    with pytest.raises(LabelError, match="needs a table"):
        labels.build(["age"], sources(("0001", 0)))
    with pytest.raises(LabelError, match="does not exist"):
        labels.build(["age"], sources(("0001", 0)), str(tmp_path / "nope.csv"))
    no_id = tmp_path / "no_id.csv"
    no_id.write_text("name,Age\na,1\n")
    with pytest.raises(LabelError, match="no subject id column"):
        labels.build(["age"], sources(("0001", 0)), str(no_id))
    with pytest.raises(LabelError, match="values such as slice=0.5 are for --mode generate"):
        labels.parse_names("slice=0.5")


def test_the_definition_survives_saving(table, tmp_path):
    spec = labels.build(["slice", "age", "sex"], sources(("0001", 0), ("0002", 3)), table)
    labels.save(spec, str(tmp_path / "labels.json"))
    assert labels.load(str(tmp_path / "labels.json")) == spec
    assert labels.load(str(tmp_path / "absent.json")) is None


def test_requests_are_checked_against_what_the_model_was_trained_on(table):
    spec = labels.build(["slice", "age", "sex"], sources(("0001", 0), ("0002", 3)), table)
    values = labels.parse_request(spec, "slice=0.25, AGE=60,sex=M")
    assert values == {"slice": 0.25, "age": 60.0, "sex": "M"}
    np.testing.assert_allclose(labels.encode_values(spec, values), [0.25, (60 - 64.5) / 9.5, 0, 1], rtol=1e-6)
    for text, message in [("slice=0.5,age=80,sex=F", "cover age 55 to 74 only"),
                          ("slice=0.5,age=60,sex=X", "trained on sex F, M only"),
                          ("slice=1.5,age=60,sex=F", "slice 0 to 1 only"),
                          ("slice=0.5,age=sixty,sex=F", "'sixty' is not a number"),
                          ("slice=0.5,sex=F", "missing: age"),
                          ("slice=0.5,age=60,sex=F,cdr=1", "not cdr"),
                          ("slice", "name=value pairs such as slice=0.5,age=64.5,sex=F")]:
        with pytest.raises(LabelError, match=message):
            labels.parse_request(spec, text)
    assert labels.parse_request(spec, "slice=0.5,sex=F", optional=["age"]) == {"slice": 0.5, "sex": "F"}


def test_sweep_values_cover_the_training_range_or_every_category(table):
    spec = labels.build(["age", "sex"], sources(("0001", 0), ("0002", 3)), table)
    assert labels.sweep_values(spec.columns[0], 3) == [55.0, 64.5, 74.0]
    assert labels.sweep_values(spec.columns[1], 3) == ["F", "M"]


def test_drawn_labels_are_rows_of_the_table_in_their_proportions():
    table = np.asarray([[0.0], [1.0], [1.0], [1.0]], np.float32)
    drawn = labels.draw(table, 4000, seed=1)
    assert drawn.shape == (4000, 1) and set(np.unique(drawn)) == {0.0, 1.0}
    assert drawn.mean() == pytest.approx(0.75, abs=0.02)
    np.testing.assert_array_equal(drawn, labels.draw(table, 4000, seed=1))
    assert labels.draw(None, 5) is None
