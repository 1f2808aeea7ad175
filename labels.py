"""Conditioning labels: what a conditional run is conditioned on, and the vectors c the networks see.

Lives here: `LabelSpec`, the label definition saved with a run (columns, scaling, categories);
building it from the training slices (the slice level from file names, read by `slice_number`, or
the volume loader; subject covariates from a CSV table); encoding slices and requests such as
"slice=0.5,age=80,sex=F" into label vectors; the values of a sweep. Not here: decoding images (data.py) or what the networks do
with c (generator.py, discriminator.py).

Encoding, per column, in the order the user named them:
- `slice`: the slice's level within its subject in [0, 1], the lowest slice 0 and the highest 1. From
  the number in the file name (`..._slice_<n>`, `..._z<n>`), scaled by the subject's lowest and highest
  number, or from a volume's own slice order (inferior to superior), so the 32 slices of a COMP3710
  case and the 126 of a full volume mean the same levels. Not standardised: [0, 1] is already small.
- a numeric covariate (age, MMSE, eTIV, CDR, ...): standardised with the training subjects' mean and
  standard deviation.
- a categorical covariate (sex, handedness): one-hot over the categories of the training subjects.
Covariates are per subject: each slice takes its subject's row, joined on the subject id in the file
name (`case_0037_...` matches `OAS1_0037_MR1`; the first session of a subject counts).
"""

import csv
import dataclasses
import json
import math
import os
import re

import numpy as np

import atomic
import data

SLICE = "slice"
ALIASES = {"sex": ("sex", "m/f", "gender"), "age": ("age",), "cdr": ("cdr",)}   # names in the OASIS table
MISSING_POLICIES = ("error", "drop")
LABEL_FILE = "labels.json"
_SLICE_NUMBER = re.compile(r"(?:_slice_|_z)(\d+)(?=\D|$)", re.IGNORECASE)
_TABLE_ID = re.compile(r"^OAS\d_(\d+)(?:_MR\d+)?$", re.IGNORECASE)
_ID_COLUMNS = ("id", "subject", "subject_id")


class LabelError(ValueError):
    """A problem with labels the user asked for; the message says what was wrong and what to do."""


@dataclasses.dataclass(frozen=True)
class Column:
    """One conditioning label. kind: slice, numeric or categorical; `source` is the table's column."""
    name: str
    kind: str
    source: str = ""
    mean: float = 0.0
    std: float = 1.0
    low: float = 0.0                  # the training range, in the user's units
    high: float = 1.0
    categories: tuple = ()

    @property
    def width(self):
        return len(self.categories) if self.kind == "categorical" else 1


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    """The label definition of a conditional run; `dim` is the length of c."""
    columns: tuple
    table: str | None = None          # the CSV the covariates came from
    missing: str = "error"

    @property
    def dim(self):
        return sum(c.width for c in self.columns)

    @property
    def names(self):
        return [c.name for c in self.columns]

    def to_dict(self):
        return {"columns": [{**dataclasses.asdict(c), "categories": list(c.categories)} for c in self.columns],
                "table": self.table, "missing": self.missing, "dim": self.dim}

    @classmethod
    def from_dict(cls, values):
        columns = tuple(Column(**{**c, "categories": tuple(c["categories"])}) for c in values["columns"])
        return cls(columns, values.get("table"), values.get("missing", "error"))


def save(spec, path):
    atomic.write_json(path, spec.to_dict())


def load(path):
    """The LabelSpec saved at `path`, or None when there is none (an unconditional run)."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return LabelSpec.from_dict(json.load(f))


def parse_names(text):
    """'slice,age,sex' -> ['slice', 'age', 'sex'] (lower case, no repeats)."""
    names = [n.strip().lower() for n in str(text or "").split(",") if n.strip()]
    if any("=" in n for n in names):
        raise LabelError(f"--condition {text}: in training it names the labels (e.g. slice,age,sex); values such as "
                         f"slice=0.5 are for --mode generate")
    if len(set(names)) != len(names):
        raise LabelError(f"--condition names a label twice: {text}")
    return names


# ---------------------------------------------------------------------------------------------
# Raw values: slice levels from names, covariates from a table
# ---------------------------------------------------------------------------------------------

def subject_key(path):
    """The subject a slice belongs to: the id in its name (data.subject_of), else the file itself
    (a volume is one subject)."""
    return data.subject_of(path) or os.path.abspath(path)


def slice_number(path):
    """The slice number in a file name (`..._slice_<n>` or `..._z<n>`, any case), or None. The one
    reader of it: the level studies in tools/ (levels.py, tools/projection_eval.py) use it too."""
    match = _SLICE_NUMBER.search(os.path.basename(path))
    return None if match is None else int(match.group(1))


def slice_levels(sources):
    """Level in [0, 1] of each slice, per subject. sources: [(path, index in file, slices in file)] -> float64 [N]
    (encode_values makes the label vector float32; the level regressor, levels.py, fits in float64)."""
    levels = np.zeros(len(sources), np.float64)
    numbered = {}                                              # subject -> [(row, number in the name)]
    for row, (path, index, count) in enumerate(sources):
        if count > 1:                                          # a volume: its own order
            levels[row] = index / (count - 1)
            continue
        number = slice_number(path)
        if number is None:
            raise LabelError(f"--condition slice: {os.path.basename(path)} has no slice number in its name "
                             f"(expected ..._slice_<n> or ..._z<n>, as case_0037_slice_40.nii.png); rename the "
                             f"files or leave slice out of --condition")
        numbered.setdefault(subject_key(path), []).append((row, float(number)))
    for pairs in numbered.values():
        rows, numbers = (np.asarray(v) for v in zip(*pairs))
        low, high = numbers.min(), numbers.max()
        levels[rows] = (numbers - low) / (high - low) if high > low else 0.5
    return levels


def table_id(value):
    """A subject id as data.subject_of writes it: 'OAS1_0037_MR1' and '0037' -> '37'."""
    value = str(value).strip()
    match = _TABLE_ID.match(value)
    value = match.group(1) if match else value
    return str(int(value)) if value.isdigit() else value


def read_table(path):
    """A CSV of subject covariates -> ({subject id: {column: text}}, column names). The id column is
    the first one named ID, subject or subject_id; a subject's first row counts (OASIS lists a
    second session of some subjects as MR2)."""
    if not os.path.isfile(path):
        raise LabelError(f"--labels {path} does not exist: give a CSV with a subject id column (e.g. "
                         f"oasis1_demographics.csv)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        id_column = next((c for c in columns if c.strip().lower() in _ID_COLUMNS), None)
        if id_column is None:
            raise LabelError(f"--labels {path} has no subject id column (one of {', '.join(_ID_COLUMNS)}); "
                             f"its columns are {', '.join(columns) or 'none'}")
        rows = {}
        for row in reader:
            rows.setdefault(table_id(row[id_column]), {k: (v or "").strip() for k, v in row.items()})
    return rows, [c for c in columns if c != id_column]


def table_column(name, columns, path):
    """The table column that label `name` reads (case-insensitive, with ALIASES: sex is M/F)."""
    lower = {c.strip().lower(): c for c in columns}
    for candidate in ALIASES.get(name, (name,)):
        if candidate in lower:
            return lower[candidate]
    raise LabelError(f"--condition {name}: no such column in {path}; its columns are {', '.join(columns)}")


def _number(text):
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------------------------------
# Building the definition and encoding
# ---------------------------------------------------------------------------------------------

def build(names, sources, table=None, missing="error"):
    """The LabelSpec for conditioning the slices `sources` on `names`, fitted to them (with
    missing="drop", to the subjects that have every value; encode_sources then drops the rest)."""
    if missing not in MISSING_POLICIES:
        raise LabelError(f"--labels_missing must be error or drop, got {missing!r}")
    covariates = [n for n in names if n != SLICE]
    if covariates and table is None:
        raise LabelError(f"--condition {','.join(covariates)} needs a table of subject covariates: give --labels "
                         f"file.csv (for OASIS-1: oasis1_demographics.csv)")
    if not names:
        raise LabelError("--condition is empty; name labels such as slice or slice,age,sex")
    rows, columns = read_table(table) if covariates else ({}, [])
    subjects = [subject_key(p) for p, _, _ in sources]
    keep = np.ones(len(sources), bool)
    texts, sources_of = {}, {name: table_column(name, columns, table) for name in covariates}
    for name, source in sources_of.items():
        texts[name] = [rows.get(s, {}).get(source, "") for s in subjects]
        lacking = sorted({s for s, t in zip(subjects, texts[name]) if not t})
        if lacking and missing == "error":
            raise LabelError(f"--condition {name}: no {source} value in {table} for subject(s) "
                             f"{', '.join(lacking[:10])}{' ...' if len(lacking) > 10 else ''}; add them, hold them "
                             f"out with --exclude_subjects, or drop their slices with --labels_missing drop")
        keep &= np.asarray([bool(t) for t in texts[name]])
    if not keep.any():
        raise LabelError(f"no training slice has every label of --condition {','.join(names)} in {table}")
    spec_columns = []
    for name in names:
        if name == SLICE:
            spec_columns.append(Column(SLICE, SLICE))
            continue
        source = sources_of[name]
        values = [t for t, k in zip(texts[name], keep) if k]
        numbers = [_number(t) for t in values]
        bad = sorted({t for t, v in zip(values, numbers) if v is None})
        if bad and len(bad) < len(set(values)):                # some numbers, some not: a typo
            raise LabelError(f"--condition {name}: column {source} of {table} holds numbers but also "
                             f"{', '.join(map(repr, bad[:5]))}; fix those cells (leave a cell empty for no value)")
        if bad:
            spec_columns.append(Column(name, "categorical", source, categories=tuple(sorted(set(values)))))
        else:
            # Mean and spread over subjects, not slices: a subject with more slices weighs no more.
            per_subject = np.asarray(list({s: v for s, v, k in zip(subjects, map(_number, texts[name]), keep)
                                           if k}.values()), np.float64)
            std = float(per_subject.std()) or 1.0
            spec_columns.append(Column(name, "numeric", source, float(per_subject.mean()), std,
                                       float(per_subject.min()), float(per_subject.max())))
    return LabelSpec(tuple(spec_columns), None if table is None else os.path.abspath(table), missing)


def encode_values(spec, values):
    """{name: raw value (a number, or a category as text)} -> float32 [dim]."""
    parts = []
    for column in spec.columns:
        value = values[column.name]
        if column.kind == "categorical":
            parts += [float(str(value) == c) for c in column.categories]
        elif column.kind == "numeric":
            parts.append((float(value) - column.mean) / column.std)
        else:
            parts.append(float(value))
    return np.asarray(parts, np.float32)


def encode_sources(spec, sources):
    """Label vectors of the slices `sources` under `spec`: float32 [N, dim], and a bool mask of the
    slices that have every value (missing values: LabelError, or dropped with spec.missing drop)."""
    covariates = [c for c in spec.columns if c.kind != SLICE]
    rows = {}
    if covariates:
        if not spec.table or not os.path.isfile(spec.table):
            raise LabelError(f"this run's labels came from {spec.table}, which is gone; put it back (its subjects' "
                             f"covariates label the reference slices)")
        rows, _ = read_table(spec.table)
    levels = slice_levels(sources) if any(c.kind == SLICE for c in spec.columns) else None
    out, keep, lacking = np.zeros([len(sources), spec.dim], np.float32), np.ones(len(sources), bool), set()
    for i, (path, _, _) in enumerate(sources):
        subject = subject_key(path)
        values = {}
        for column in spec.columns:
            if column.kind == SLICE:
                values[column.name] = levels[i]
                continue
            text = rows.get(subject, {}).get(column.source, "")
            if not text or (column.kind == "categorical" and text not in column.categories):
                keep[i] = False
                lacking.add(subject)
                break
            values[column.name] = text
        if keep[i]:
            out[i] = encode_values(spec, values)
    if lacking and spec.missing != "drop":
        raise LabelError(f"subject(s) {', '.join(sorted(lacking)[:10])} have no usable "
                         f"{', '.join(c.source for c in covariates)} in {spec.table}; add them to the table or leave "
                         f"them out of the slices (--labels_missing drop drops them)")
    return out, keep


def parse_request(spec, text, optional=()):
    """'slice=0.5,age=80,sex=F' -> {name: value}, checked against what the model was trained on: every
    label given (but those `optional`), numbers within the training range, categories among the
    training ones."""
    values = {}
    for part in str(text or "").split(","):
        if not part.strip():
            continue
        name, eq, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not eq or not value:
            raise LabelError(f"--condition for generation takes name=value pairs such as "
                             f"{example(spec)}; {part!r} is not one")
        values[name] = value
    unknown = sorted(set(values) - set(spec.names))
    if unknown:
        raise LabelError(f"this model is conditioned on {', '.join(spec.names)}, not {', '.join(unknown)}; "
                         f"give for example --condition {example(spec)}")
    absent = [n for n in spec.names if n not in values and n not in {o.lower() for o in optional}]
    if absent:
        raise LabelError(f"give a value for every label the model was trained with (missing: {', '.join(absent)}); "
                         f"for example --condition {example(spec)}")
    return {c.name: check_value(c, values[c.name]) for c in spec.columns if c.name in values}


def check_value(column, value):
    """A user's value for `column`: a category among the training ones, or a number within the
    training range (a model has learnt nothing outside it)."""
    if column.kind == "categorical":
        if str(value) not in column.categories:
            raise LabelError(f"{column.name}={value}: the model was trained on {column.name} "
                             f"{', '.join(column.categories)} only")
        return str(value)
    number = _number(value)
    if number is None:
        raise LabelError(f"{column.name}={value!r} is not a number")
    if not column.low - 1e-9 <= number <= column.high + 1e-9:
        raise LabelError(f"{column.name}={value}: the training slices cover {column.name} {column.low:g} to "
                         f"{column.high:g} only; a model cannot be trusted outside what it was trained on")
    return number


def example(spec):
    """A request the model accepts: the first category, or the middle of the training range."""
    middle = lambda c: c.categories[0] if c.kind == "categorical" else f"{(c.low + c.high) / 2:g}"  # noqa: E731
    return ",".join(f"{c.name}={middle(c)}" for c in spec.columns)


def sweep_values(column, steps):
    """What a sweep across `column` shows: every category, or `steps` evenly spaced numbers over the
    training range."""
    if column.kind == "categorical":
        return list(column.categories)
    return [float(v) for v in np.linspace(column.low, column.high, steps)]


def slice_index(spec):
    """Where the slice level sits in a label vector of `spec`, or None when `spec` has no slice label."""
    start = 0
    for column in spec.columns if spec is not None else ():
        if column.kind == SLICE:
            return start
        start += column.width
    return None


def find_column(spec, name):
    for column in spec.columns:
        if column.name == name.lower():
            return column
    raise LabelError(f"--sweep {name}: this model is conditioned on {', '.join(spec.names)}")


def draw(table, count, seed=0):
    """`count` rows of the label vectors `table` [N, c_dim], drawn at random (NumPy PCG64, `seed`):
    labels for generated images distributed like the real ones. None for no table."""
    if table is None:
        return None
    return table[np.random.default_rng(seed).integers(0, len(table), count)]


def describe(spec):
    """One line for people: each label with its scaling or categories, and the length of c."""
    parts = []
    for c in spec.columns:
        if c.kind == SLICE:
            parts.append("slice (level in its subject, 0-1)")
        elif c.kind == "numeric":
            parts.append(f"{c.name} ({c.source}: mean {c.mean:.4g}, sd {c.std:.4g}, range {c.low:g}-{c.high:g})")
        else:
            parts.append(f"{c.name} ({c.source}: one-hot {', '.join(c.categories)})")
    return f"{'; '.join(parts)}; {spec.dim} values per slice"
