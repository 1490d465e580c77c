"""The canonical data contracts: events, pins, users, interests.

Every producer (the world simulator, the dataset adapters, later the stream processor) passes its rows through
`validate`, which returns the rows that satisfy the contract as a typed Arrow table and a `Reject` for every row
that does not, naming the row, each bad field and what was expected. Rejected rows go to a dead-letter file; nothing
is dropped silently.

Validation is columnar (numpy masks), not row by row, so a 10M-event file validates in a few seconds.
(One module over 400 lines: the four tables' contracts are one document, each read next to the others it refers to.)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

# What a user did with a pin (click, repin and hide happen only on an impressed pin) and the user segments: declared
# once, in the shared schema, with their codes.
from models.schema import ACTIONS, SEGMENTS  # noqa: F401  (re-exported: the data layer's importers read them here)

# Timestamps are UTC epoch milliseconds. The bounds catch the common mistake of epoch seconds (a 2020 time in
# seconds reads as January 1970 in milliseconds, below every lower bound) and garbage far in the future. Content
# can be old (a film from 1922), activity cannot predate the web.
ACTIVITY_MIN_MS = 631_152_000_000  # 1990-01-01
CONTENT_MIN_MS = -2_208_988_800_000  # 1900-01-01
TS_MAX_MS = 4_102_444_800_000  # 2100-01-01
INT64_MAX = 2**63 - 1  # ids and timestamps are stored as int64


class ContractError(ValueError):
    """The input as a whole cannot be read against the contract (for example a required column is absent)."""


@dataclass(frozen=True)
class Field:
    """One column of a contract.

    Args:
        name: column name.
        kind: "int", "float", "str", "int_list" or "float_list".
        expect: what a valid value is, in words; it is the reason a reject carries.
        required: a missing value (null) is a problem when True.
        bad: vectorized check over the parsed non-null values; returns True where a value is invalid.
    """

    name: str
    kind: str
    expect: str
    required: bool = True
    bad: Callable[[np.ndarray], np.ndarray] | None = None


@dataclass(frozen=True)
class Contract:
    name: str
    fields: tuple[Field, ...]
    key: tuple[str, ...] = ()  # primary key: a repeated key is rejected after its first occurrence
    # For rows with no id of their own: within one file or dataset, a second row with the same values here is the
    # same fact recorded twice. Checked only when the caller validates a whole table (`validate(..., dedupe=True)`).
    natural_key: tuple[str, ...] = ()

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(f.name, _ARROW_TYPES[f.kind], nullable=not f.required) for f in self.fields])

    def names(self) -> list[str]:
        return [f.name for f in self.fields]


_ARROW_TYPES = {
    "int": pa.int64(),
    "float": pa.float64(),
    "str": pa.string(),
    "int_list": pa.list_(pa.int64()),
    "float_list": pa.list_(pa.float32()),
}


def _nonneg(v: np.ndarray) -> np.ndarray:
    return v < 0


class _TsRange:
    """Out-of-range check for epoch-millisecond timestamps; knows what a value in seconds looks like."""

    def __init__(self, lo_ms: int):
        self.lo_ms = lo_ms

    def __call__(self, v: np.ndarray) -> np.ndarray:
        return (v < self.lo_ms) | (v >= TS_MAX_MS)

    def seconds_like(self, v: np.ndarray) -> np.ndarray:
        as_ms = v.astype(np.float64) * 1000
        return (as_ms >= self.lo_ms) & (as_ms < TS_MAX_MS)


_ACTIVITY_TS = _TsRange(ACTIVITY_MIN_MS)
_CONTENT_TS = _TsRange(CONTENT_MIN_MS)


def _unit_interval(v: np.ndarray) -> np.ndarray:
    return ~((v >= 0.0) & (v <= 1.0))


def _one_of(allowed: Sequence[str]) -> Callable[[np.ndarray], np.ndarray]:
    allowed_set = np.array(sorted(allowed), dtype=object)
    return lambda v: ~np.isin(v, allowed_set)


def _blank(v: np.ndarray) -> np.ndarray:
    return pd.Series(v, dtype=object).str.strip().eq("").to_numpy()


# The surface of the simulated world's traffic, the homefeed page's actions and an experiment's users
HOMEFEED_SURFACE = "homefeed"

EVENT = Contract(
    name="events",
    fields=(
        Field("user_id", "int", "an integer user id >= 0", bad=_nonneg),
        Field("pin_id", "int", "an integer pin id >= 0", bad=_nonneg),
        Field("action", "str", f"one of {', '.join(ACTIONS)}", bad=_one_of(ACTIONS)),
        Field("ts", "int", "UTC epoch milliseconds between 1990-01-01 and 2100-01-01", bad=_ACTIVITY_TS),
        Field("request_id", "int", "an integer request id >= 0", bad=_nonneg),
        Field("surface", "str", "a non-empty surface name such as homefeed", bad=_blank),
    ),
    # A user cannot do the same thing to the same pin twice in one millisecond of one feed: such a row is a
    # double-logged event (a retried export, files concatenated twice) and would count twice in training and in
    # engagement rates. The request id is part of it: one pin shown in two feeds at the same millisecond is two
    # impressions. A client's batch and the stream carry an event id and are deduplicated by it instead.
    natural_key=("ts", "user_id", "pin_id", "action", "request_id"),  # ts first: nearly unique, finds candidates fast
)

PIN = Contract(
    name="pins",
    fields=(
        Field("pin_id", "int", "an integer pin id >= 0", bad=_nonneg),
        Field("interest_id", "int", "an integer interest id >= 0", bad=_nonneg),
        Field("created_ts", "int", "UTC epoch milliseconds between 1900-01-01 and 2100-01-01", bad=_CONTENT_TS),
        # Fine: the exact image (re-pins of one image share it). Coarse: a perceptual bucket in which near-duplicate
        # images collapse. Each fine signature belongs to exactly one coarse signature (checked across rows).
        Field("image_signature_fine", "int", "an integer image signature"),
        Field("image_signature_coarse", "int", "an integer image signature"),
        Field(
            "quality", "float", "a quality score in [0, 1], or empty when unknown", required=False, bad=_unit_interval
        ),
        Field("embedding", "float_list", "a list of finite floats (content embedding), or empty", required=False),
    ),
    key=("pin_id",),
)

USER = Contract(
    name="users",
    fields=(
        Field("user_id", "int", "an integer user id >= 0", bad=_nonneg),
        Field("segment", "str", f"one of {', '.join(SEGMENTS)}", bad=_one_of(SEGMENTS)),
        Field("signup_ts", "int", "UTC epoch milliseconds between 1990-01-01 and 2100-01-01", bad=_ACTIVITY_TS),
        Field("declared_interests", "int_list", "a list of interest ids >= 0 (may be empty)", required=False),
    ),
    key=("user_id",),
)

INTEREST = Contract(
    name="interests",
    fields=(
        Field("interest_id", "int", "an integer interest id >= 0", bad=_nonneg),
        Field("name", "str", "a non-empty interest name", bad=_blank),
    ),
    key=("interest_id",),
)

CONTRACTS = {c.name: c for c in (EVENT, PIN, USER, INTEREST)}


@dataclass
class Reject:
    """One invalid row: where it was, every problem with it, and its original values."""

    row: int
    errors: list[dict[str, str]]
    record: dict

    def to_json(self, source: str) -> str:
        return json.dumps(
            {"source": source, "row": self.row, "errors": self.errors, "record": _json_safe(self.record)},
            sort_keys=True,
        )


@dataclass
class ValidationResult:
    valid: pa.Table
    rejects: list[Reject] = field(default_factory=list)
    duplicates: int = 0  # rows among the rejects that repeat an earlier row's key (a row may have other problems too)

    @property
    def n_rejected(self) -> int:
        return len(self.rejects)


def validate(
    data: pd.DataFrame | pa.Table,
    contract: Contract,
    references: dict[str, tuple[np.ndarray, str]] | None = None,
    row_offset: int = 0,
    dedupe: bool = False,
) -> ValidationResult:
    """Split `data` into rows that satisfy `contract` (typed to its schema) and rejects.

    `references` maps a column to (the ids it may take, the table they come from): an event whose pin_id is not
    among the pins cannot be joined later, so it is rejected here. `row_offset` is added to row numbers so that a
    caller validating a file in chunks reports file rows. `dedupe` says `data` is a whole table (a file, a dataset):
    then a row repeating an earlier row's `natural_key` is rejected as a duplicate. Raises ContractError when a
    required column is absent: then no row can be judged and nothing is written.
    """
    arrow = data if isinstance(data, pa.Table) else None
    columns = data.column_names if arrow is not None else list(data.columns)
    missing = [f.name for f in contract.fields if f.required and f.name not in columns]
    if missing:
        expected = "; ".join(f"{f.name}: {f.expect}" for f in contract.fields if f.name in missing)
        raise ContractError(f"{contract.name}: missing column(s) {missing} (expected {expected})")

    n = data.num_rows if arrow is not None else len(data)
    problems: list[tuple[np.ndarray, str, str]] = []  # (bad-row mask, field, reason)
    parsed: dict[str, object] = {}
    readable: dict[str, np.ndarray] = {}  # rows whose value was read (it may still be out of range)
    for f in contract.fields:
        if f.name not in columns:  # an optional column that is absent: every value unknown
            values = np.full(n, None if f.kind in ("str", "int_list", "float_list") else np.nan, dtype=object)
            values, null, unparsable, overflow = _parse(pd.Series(values, dtype=object), f.kind)
        elif arrow is not None and f.kind.endswith("_list"):
            values, null, unparsable = _parse_arrow_list(arrow.column(f.name), f.kind)
            overflow = np.zeros(n, dtype=bool)
        else:
            raw = arrow.column(f.name).to_pandas() if arrow is not None else data[f.name]
            values, null, unparsable, overflow = _parse(raw, f.kind)
        if f.required:
            problems.append((null, f.name, f"missing value; expected {f.expect}"))
        problems.append((unparsable, f.name, f"{_show_kind(f.kind)} could not be read; expected {f.expect}"))
        if overflow.any():
            problems.append(
                (overflow, f.name, f"integer too large for 64 bits (at most {INT64_MAX}); expected {f.expect}")
            )
        ok = ~null & ~unparsable & ~overflow
        if f.bad is not None and ok.any():
            bad = np.zeros(n, dtype=bool)
            bad[ok] = _apply_check(f.bad, values, ok)
            problems.extend(_range_problems(f, values, bad))
        parsed[f.name] = values
        readable[f.name] = ok
    for name, (allowed, table) in (references or {}).items():
        unknown = ~np.isin(parsed[name], allowed)
        problems.append((unknown, name, f"unknown {name}: not in {table}"))
    duplicate = np.zeros(n, dtype=bool)
    for key in (contract.key, contract.natural_key if dedupe else ()):
        if key:
            dup = _duplicates(key, parsed, readable)
            problems.append((dup, key[0], f"duplicate {'/'.join(key)}: an earlier row has the same key"))
            duplicate |= dup
    if contract is PIN:
        problems.extend(_signature_problems(parsed))

    any_bad = np.zeros(n, dtype=bool)
    for mask, _, _ in problems:
        any_bad |= mask
    rejects = _collect_rejects(data, problems, any_bad, row_offset)
    keep = ~any_bad
    columns = [_to_arrow(parsed[f.name], f.kind, keep) for f in contract.fields]
    valid = pa.Table.from_arrays(columns, schema=contract.schema)
    return ValidationResult(valid=valid, rejects=rejects, duplicates=int(duplicate.sum()))


def _parse(raw: pd.Series, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parse a column into (values, null mask, unparsable mask, overflow mask). Values at masked rows are
    placeholders; overflow marks whole numbers beyond the int64 range of an "int" column."""
    null = raw.isna().to_numpy()
    none = np.zeros(len(raw), dtype=bool)
    if kind in ("int", "float"):
        if pd.api.types.is_bool_dtype(raw.dtype):
            return np.zeros(len(raw)), null, ~null, none  # a boolean is not a number here
        num = pd.to_numeric(raw, errors="coerce")
        unparsable = num.isna().to_numpy() & ~null
        if kind == "float":
            vals = num.to_numpy(dtype=np.float64, na_value=np.nan)
            unparsable |= ~null & ~unparsable & ~np.isfinite(vals)  # +-inf is not a number we can use
            return vals, null, unparsable, none
        if num.dtype.kind == "u":  # a CSV column with a value above int64's range is read as uint64
            unsigned = num.to_numpy(dtype=np.uint64)
            overflow = unsigned > INT64_MAX
            return np.where(overflow, 0, unsigned).astype(np.int64), null, none, overflow
        if num.dtype.kind != "f":  # already an integer column: keep exact int64 (no float round trip)
            return num.to_numpy(dtype=np.int64, na_value=0), null, unparsable, none
        vals = num.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = np.isfinite(vals)
        safe = np.where(finite, vals, 0)
        integral = finite & (np.floor(safe) == safe)
        overflow = ~null & integral & (np.abs(safe) >= 2.0**63)
        # a float is exact only to 2**53; one above 2**62 has long lost an id's low digits and is not read as one
        whole = integral & (np.abs(safe) < 2**62)
        unparsable |= ~null & ~unparsable & ~whole & ~overflow
        return np.where(whole, vals, 0).astype(np.int64), null, unparsable, overflow
    if kind == "str":
        if isinstance(raw.dtype, pd.CategoricalDtype):
            # Keep categories: checks then run once per category, not once per row (10M events, a few actions).
            return raw.array, null, none, none
        # dtype=bool: an empty column (a header-only file) would otherwise give an object array, not a mask
        is_str = raw.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool) if raw.dtype == object else None
        if is_str is None:
            if pd.api.types.is_string_dtype(raw.dtype):
                return raw.astype(object).to_numpy(), null, none, none
            return raw.astype(object).to_numpy(), null, ~null, none
        return raw.to_numpy(dtype=object), null, ~null & ~is_str, none
    # list kinds: each cell a sequence of numbers
    cast = int if kind == "int_list" else float
    out = np.empty(len(raw), dtype=object)
    unparsable = np.zeros(len(raw), dtype=bool)
    for i, cell in enumerate(raw.to_numpy(dtype=object)):
        if null[i]:
            continue
        try:
            items = [cast(x) for x in cell]
            if kind == "int_list" and any(x < 0 for x in items):
                raise ValueError("negative id")
            if kind == "float_list" and not all(math.isfinite(x) for x in items):
                raise ValueError("non-finite value")
            out[i] = items
        except (TypeError, ValueError):
            unparsable[i] = True
    return out, null, unparsable, none


def _parse_arrow_list(col: pa.ChunkedArray, kind: str) -> tuple[object, np.ndarray, np.ndarray]:
    """List columns straight from Arrow: flatten once and check every element with vectorized kernels."""
    import pyarrow.compute as pc

    arr = col.combine_chunks()
    if pa.types.is_fixed_size_list(arr.type) or pa.types.is_large_list(arr.type):
        arr = arr.cast(pa.list_(arr.type.value_type))
    if not pa.types.is_list(arr.type):
        return arr, arr.is_null().to_numpy(zero_copy_only=False), ~arr.is_null().to_numpy(zero_copy_only=False)
    null = arr.is_null().to_numpy(zero_copy_only=False)
    flat = arr.flatten()
    parents = pc.list_parent_indices(arr).to_numpy()
    n = len(arr)
    if kind == "int_list":
        numeric = pa.types.is_integer(flat.type)
        vals = flat.cast(pa.int64()).to_numpy(zero_copy_only=False) if numeric else None
        elem_bad = (vals < 0) if numeric else np.ones(len(flat), dtype=bool)
        target = pa.list_(pa.int64())
    else:
        numeric = pa.types.is_floating(flat.type) or pa.types.is_integer(flat.type)
        vals = flat.cast(pa.float64()).to_numpy(zero_copy_only=False) if numeric else None
        elem_bad = ~np.isfinite(vals) if numeric else np.ones(len(flat), dtype=bool)
        target = pa.list_(pa.float32())
    unparsable = np.zeros(n, dtype=bool)
    unparsable[parents[elem_bad]] = True
    return (arr.cast(target) if numeric else arr), null, unparsable & ~null


def _apply_check(check: Callable[[np.ndarray], np.ndarray], values, ok: np.ndarray) -> np.ndarray:
    if isinstance(values, pd.Categorical):
        # evaluate on the categories, then look each row up by its code
        cat_bad = np.asarray(check(values.categories.to_numpy(dtype=object)), dtype=bool)
        return cat_bad[values.codes[ok]]
    return check(values[ok])


def _show_kind(kind: str) -> str:
    return {"int": "integer", "float": "number", "str": "text"}.get(kind, "list")


def _range_problems(f: Field, values, bad: np.ndarray) -> list[tuple[np.ndarray, str, str]]:
    if isinstance(f.bad, _TsRange):
        seconds = np.zeros_like(bad)
        seconds[bad] = f.bad.seconds_like(values[bad])
        return [
            (seconds, f.name, f"value looks like epoch seconds; expected {f.expect}"),
            (bad & ~seconds, f.name, f"out of range; expected {f.expect}"),
        ]
    return [(bad, f.name, f"invalid value; expected {f.expect}")]


def _duplicates(key: tuple[str, ...], parsed: dict, readable: dict[str, np.ndarray]) -> np.ndarray:
    """Rows that repeat an earlier row's key. Only rows whose key values were read take part: the placeholder of
    an unreadable value must not make a later, valid row look like its duplicate."""
    dup = np.zeros(len(readable[key[0]]), dtype=bool)
    rows = np.flatnonzero(np.logical_and.reduce([readable[k] for k in key]))
    if len(key) > 1:
        # Only a row whose first key value repeats can repeat the whole key. That one-column check is cheap, and on
        # event logs (ts nearly unique) it leaves few rows for the comparison of every key column, which over
        # millions of rows would cost about half as much again as the rest of the validation.
        rows = rows[pd.Series(parsed[key[0]][rows]).duplicated(keep=False).to_numpy()]
    keys = pd.DataFrame({k: parsed[k][rows] for k in key})
    dup[rows] = keys.duplicated(keep="first").to_numpy()
    return dup


def _signature_problems(parsed: dict) -> list[tuple[np.ndarray, str, str]]:
    """A fine signature must map to a single coarse one: later rows that disagree with the first are rejected."""
    sig = pd.DataFrame({"fine": parsed["image_signature_fine"], "coarse": parsed["image_signature_coarse"]})
    first = sig.groupby("fine", sort=False)["coarse"].transform("first")
    bad = (first != sig["coarse"]).to_numpy()
    return [
        (bad, "image_signature_coarse", "coarse signature disagrees with an earlier row of the same fine signature")
    ]


def _collect_rejects(data, problems, any_bad: np.ndarray, row_offset: int) -> list[Reject]:
    rows = np.flatnonzero(any_bad)
    if len(rows) == 0:
        return []
    errors: dict[int, list[dict[str, str]]] = {int(r): [] for r in rows}
    for mask, name, reason in problems:
        for r in np.flatnonzero(mask):
            errors[int(r)].append({"field": name, "reason": reason})
    if isinstance(data, pa.Table):
        records = data.take(pa.array(rows)).to_pylist()
    else:
        records = data.iloc[rows].to_dict(orient="records")
    return [
        Reject(row=int(r) + row_offset, errors=errors[int(r)], record=rec) for r, rec in zip(rows, records, strict=True)
    ]


def _to_arrow(values, kind: str, keep: np.ndarray) -> pa.Array:
    if isinstance(values, pa.Array):  # list columns parsed in Arrow
        return values.filter(pa.array(keep)).cast(_ARROW_TYPES[kind])
    if isinstance(values, pd.Categorical):
        return pa.array(values[keep]).cast(pa.string())  # dictionary -> string in Arrow's C++ kernels
    kept = values[keep]
    if kind == "float":
        return pa.array(kept, type=pa.float64(), from_pandas=True)  # NaN (unknown) becomes null
    if kind in ("int_list", "float_list"):
        return pa.array(list(kept), type=_ARROW_TYPES[kind])
    return pa.array(kept, type=_ARROW_TYPES[kind])


def _json_safe(record: dict) -> dict:
    out = {}
    for k, v in record.items():
        if isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            v = None if math.isnan(v) else str(v)
        try:
            json.dumps(v)
        except TypeError:
            v = repr(v)
        out[str(k)] = v
    return out


class DeadLetter:
    """Appends rejects to `<dir>/<source>.jsonl`, one JSON object per line with row, errors and the original record."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.counts: dict[str, int] = {}

    def write(self, source: str, rejects: Sequence[Reject]) -> None:
        if not rejects:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / f"{source}.jsonl", "a", encoding="utf-8") as fh:
            for rej in rejects:
                fh.write(rej.to_json(source) + "\n")
        self.counts[source] = self.counts.get(source, 0) + len(rejects)

    def read(self, source: str) -> list[dict]:
        path = self.directory / f"{source}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
