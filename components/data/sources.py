"""Reading a user's file of rows (parquet, CSV or JSON lines) for `contracts.validate`.

A file that cannot be read as a whole (empty, truncated, not the format its name says, not UTF-8) raises
`SourceError`, one line naming the file and what is wrong. Each reader's own error classes are caught here, at the
boundary, so a bug anywhere else still shows its traceback. A row that reads but breaks the contract is not this
module's business: `contracts.validate` rejects it and it goes to the dead letter with the other bad rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SUFFIXES = (".parquet", ".csv", ".jsonl", ".json")


class SourceError(ValueError):
    """A source file cannot be used as a whole: unreadable, empty, or without a single usable row."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


def read_rows(path: Path) -> pd.DataFrame | pa.Table:
    """The rows of a .parquet, .csv (UTF-8, with a header line), .jsonl (one JSON object per line) or .json (a list
    of row objects, or an object of columns) file. Raises SourceError when the file cannot be read as a whole."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise SourceError(path, f"unsupported file type {suffix or '(none)'!r}; use {', '.join(SUFFIXES)}")
    if path.stat().st_size == 0:
        expected = "a header line" if suffix == ".csv" else f"a {suffix[1:]} file"
        raise SourceError(path, f"the file is empty (0 bytes); expected {expected}")
    if suffix == ".parquet":
        return _read_parquet(path)
    if suffix == ".csv":
        return _read_csv(path)
    return _read_json(path, lines=suffix == ".jsonl")


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:  # ArrowInvalid for a bad footer or page, OSError for I/O
        reason = _one_line(exc).replace(f"Could not open Parquet input source '{path}': ", "")  # named already
        raise SourceError(path, f"not a readable parquet file: {reason}") from exc


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(path, _not_utf8(path)) from exc
    except pd.errors.EmptyDataError as exc:  # only blank lines: not even a header to check the columns against
        raise SourceError(path, "no header line: the file holds only blank lines") from exc
    except pd.errors.ParserError as exc:
        raise SourceError(path, f"not a readable CSV file: {_one_line(exc)}") from exc


def _read_json(path: Path, lines: bool) -> pd.DataFrame:
    """Parsed with the standard library, not pandas: its JSON reader refuses a whole file for one integer beyond
    64 bits, where the contract should reject only that row."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(path, _not_utf8(path)) from exc
    if not lines:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SourceError(path, f"not valid JSON: {exc.msg} at line {exc.lineno}") from exc
        if isinstance(doc, list) and all(isinstance(row, dict) for row in doc):
            return pd.DataFrame.from_records(doc)
        shape = "expected a list of row objects or an object of columns"
        if not isinstance(doc, dict):
            got = "a list with items that are not objects" if isinstance(doc, list) else _json_kind(doc)
            raise SourceError(path, f"{shape}, got {got}")
        try:
            return pd.DataFrame(doc)
        except ValueError as exc:  # columns of single values, or of unequal lengths
            raise SourceError(path, f"{shape}: {exc}") from exc
    records = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SourceError(path, f"line {line_no} is not valid JSON: {exc.msg}") from exc
        if not isinstance(record, dict):
            raise SourceError(path, f"line {line_no} is {_json_kind(record)}, expected an object (a row)")
        records.append(record)
    if not records:
        raise SourceError(path, "no JSON lines: the file holds only blank lines")
    return pd.DataFrame.from_records(records)


def _json_kind(value: object) -> str:
    kinds = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _not_utf8(path: Path) -> str:
    """Where the first byte that is not UTF-8 is: the decoder's own offset is relative to the chunk it was given."""
    with open(path, "rb") as fh:
        for line_no, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"not UTF-8 text (line {line_no} has byte {line[exc.start]:#04x}); save the file as UTF-8"
    return "not UTF-8 text; save the file as UTF-8"


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
