"""Corrupt input files through the `homefeed validate` and `homefeed ingest` commands, in-process (click's runner).

A file that cannot be read as a whole is one error line naming the file and the problem, with a non-zero exit and
no uncaught exception; a bad row (an id beyond 64 bits, a repeated event) is rejected alone, to the dead letter.
"""

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from components.data.contracts import EVENT, validate
from homefeed.cli import main

pytestmark = pytest.mark.unit

TS = 1_767_225_600_000  # 2026-01-01 in ms
HEADER = ",".join(EVENT.names())
RANDOM_BYTES = random.Random(0).randbytes(4096)  # fixed: the same garbage every run


def events(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": np.arange(n),
            "pin_id": np.arange(n) + 10,
            "action": "click",
            "ts": TS + np.arange(n),
            "request_id": np.arange(n),
            "surface": "homefeed",
        }
    )


def _parquet_bytes(tmp_path: Path) -> bytes:
    pq.write_table(pa.Table.from_pandas(events(50), preserve_index=False), tmp_path / "whole.parquet")
    return (tmp_path / "whole.parquet").read_bytes()


def _invoke(args: list[str]):
    result = CliRunner().invoke(main, args)
    # An uncaught error is kept on result.exception (the runner swallows its traceback): only a SystemExit from
    # click's own error handling, or none, means the user saw a message and not a crash.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


def _said(result) -> str:
    """The output with whitespace collapsed: the console wraps long lines at the terminal's width."""
    return " ".join(result.output.split())


def _assert_one_line_error(result, path: Path, problem: str) -> None:
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert str(path) in errors[0] and problem in errors[0], errors[0]


# (file name, its bytes (from tmp_path), what the error must say)
UNREADABLE = {
    "empty-csv": ("events.csv", lambda tmp: b"", "the file is empty (0 bytes)"),
    "empty-parquet": ("events.parquet", lambda tmp: b"", "the file is empty (0 bytes)"),
    "truncated-parquet": (
        "events.parquet",
        lambda tmp: _parquet_bytes(tmp)[: len(_parquet_bytes(tmp)) // 2],
        "not a readable parquet file",
    ),
    "random-bytes-csv": ("events.csv", lambda tmp: RANDOM_BYTES, "not UTF-8 text"),
    "random-bytes-parquet": ("events.parquet", lambda tmp: RANDOM_BYTES, "not a readable parquet file"),
    "not-utf8-csv": (
        "events.csv",
        lambda tmp: f"{HEADER}\n1,2,click,{TS},3,caf\xe9\n".encode("latin-1"),
        "not UTF-8 text (line 2 has byte 0xe9)",
    ),
    "blank-lines-csv": ("events.csv", lambda tmp: b"\n\n\n", "no header line"),
    "unterminated-quote-csv": ("events.csv", lambda tmp: f'{HEADER}\n1,"2\n'.encode(), "not a readable CSV file"),
    "bad-json-line": ("events.jsonl", lambda tmp: b'{"user_id": 1}\n{not json\n', "line 2 is not valid JSON"),
}


@pytest.mark.parametrize("case", list(UNREADABLE), ids=list(UNREADABLE))
def test_validate_names_the_unreadable_file_and_the_problem(tmp_path, case):
    name, content, problem = UNREADABLE[case]
    src = tmp_path / name
    src.write_bytes(content(tmp_path))
    out = tmp_path / "out"
    result = _invoke(["validate", "events", str(src), "--out", str(out)])
    _assert_one_line_error(result, src, problem)
    assert not (out / "events.parquet").exists()  # nothing is written for a file that could not be read


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_validate_header_only_file_passes_empty_and_says_so(tmp_path, suffix):
    src = tmp_path / f"events{suffix}"
    if suffix == ".csv":
        src.write_text(HEADER + "\n")
    else:
        pq.write_table(EVENT.schema.empty_table(), src)
    result = _invoke(["validate", "events", str(src), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0
    assert f"{src} has the events columns but no rows" in _said(result)
    written = pq.read_table(tmp_path / "out" / "events.parquet")
    assert written.num_rows == 0 and written.schema == EVENT.schema


def _big_id_file(tmp_path: Path, suffix: str, big: int) -> Path:
    src = tmp_path / f"events{suffix}"
    rows = events(3).to_dict(orient="records")
    rows[1]["pin_id"] = big
    if suffix == ".jsonl":
        src.write_text("".join(json.dumps({k: _py(v) for k, v in r.items()}) + "\n" for r in rows))
    else:
        src.write_text(HEADER + "\n" + "".join(",".join(str(r[c]) for c in EVENT.names()) + "\n" for r in rows))
    return src


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


@pytest.mark.parametrize(
    "suffix,big",
    [(".csv", 99_999_999_999_999_999_999), (".csv", 12_345_678_901_234_567_890), (".jsonl", 10**20)],
    ids=["csv-beyond-uint64", "csv-within-uint64", "jsonl"],
)
def test_validate_rejects_only_the_row_with_an_id_beyond_64_bits(tmp_path, suffix, big):
    src = _big_id_file(tmp_path, suffix, big)
    out = tmp_path / "out"
    result = _invoke(["validate", "events", str(src), "--out", str(out)])
    assert result.exit_code == 1  # rows were rejected
    assert "2 valid, 1 rejected rows" in _said(result)
    assert pq.read_table(out / "events.parquet").column("pin_id").to_pylist() == [10, 12]
    (dead,) = [json.loads(line) for line in (out / "dead_letter" / "events.jsonl").read_text().splitlines()]
    assert dead["row"] == 1
    assert [e["field"] for e in dead["errors"]] == ["pin_id"]
    assert "too large for 64 bits" in dead["errors"][0]["reason"]
    assert int(dead["record"]["pin_id"]) == big  # the original value, not a wrapped or rounded one


def test_validate_counts_and_dead_letters_duplicate_events(tmp_path):
    unique = events(100)
    repeated = pd.concat([unique] * 3, ignore_index=True)  # 300 rows, each one an earlier row again
    src = tmp_path / "events.csv"
    pd.concat([unique, repeated], ignore_index=True).to_csv(src, index=False)
    out = tmp_path / "out"
    result = _invoke(["validate", "events", str(src), "--out", str(out)])
    assert result.exit_code == 1
    assert "100 valid, 300 rejected rows (300 duplicates of an earlier row)" in _said(result)
    assert pq.read_table(out / "events.parquet").num_rows == 100
    dead = [json.loads(line) for line in (out / "dead_letter" / "events.jsonl").read_text().splitlines()]
    assert sorted(d["row"] for d in dead) == list(range(100, 400))  # the first occurrence is kept
    assert all(len(d["errors"]) == 1 and d["errors"][0]["reason"].startswith("duplicate ") for d in dead)


def test_duplicates_are_checked_only_for_a_whole_table_and_only_among_readable_keys():
    df = events(3)
    df.loc[1] = df.loc[0]
    # a client's batch carries event ids and is deduplicated by them: the contract alone does not reject the repeat
    assert validate(df, EVENT).n_rejected == 0
    result = validate(df, EVENT, dedupe=True)
    assert result.duplicates == 1 and [r.row for r in result.rejects] == [1]
    # an unreadable user id is not "0": it must not turn the later, valid user 0 into a duplicate
    df = events(2).astype({"user_id": object})
    df.loc[0, "user_id"] = "x"
    df.loc[1, ["user_id", "pin_id", "ts"]] = [0, 10, TS]
    result = validate(df, EVENT, dedupe=True)
    assert [r.row for r in result.rejects] == [0] and result.duplicates == 0


# ---- ingest sequences: a file of "user item" lines


@pytest.mark.parametrize(
    "content,problem",
    [
        (b"", "no data lines"),
        (RANDOM_BYTES, "no usable line"),
        (b"user_id item_id\n", "no usable line"),
        ("1 caf\xe9\n".encode("latin-1"), "no usable line"),
    ],
    ids=["empty", "random-bytes", "header-only", "not-utf8"],
)
def test_ingest_sequences_without_a_usable_line_is_an_error(tmp_path, content, problem):
    src = tmp_path / "seq.txt"
    src.write_bytes(content)
    out = tmp_path / "out"
    result = _invoke(["ingest", "sequences", str(src), "--out", str(out)])
    _assert_one_line_error(result, src, problem)
    assert not (out / "dataset.json").exists()
    if content.strip():  # the rejected lines are kept, with their reasons
        assert (out / "dead_letter" / "seq.txt.jsonl").exists()


def test_ingest_sequences_rejects_only_the_line_with_an_id_beyond_64_bits(tmp_path):
    src = tmp_path / "seq.txt"
    src.write_text("1 10\n99999999999999999999 11\n2 12\n")
    out = tmp_path / "out"
    result = _invoke(["ingest", "sequences", str(src), "--out", str(out)])
    assert result.exit_code == 0
    assert "2 events" in _said(result) and "'seq.txt': 1" in _said(result)
    (dead,) = [json.loads(line) for line in (out / "dead_letter" / "seq.txt.jsonl").read_text().splitlines()]
    assert dead["row"] == 2 and dead["errors"][0]["field"] == "user_id"
    assert "too large for 64 bits" in dead["errors"][0]["reason"]
    assert sorted(pq.read_table(out / "events.parquet").column("user_id").to_pylist()) == [1, 2]


# ---- ingest movielens: a folder of u.data, u.item, u.genre

GENRE_FLAGS = "|".join(["0"] * 18 + ["1"])
RATINGS = ["1\t1\t5\t881250949", "1\t2\t3\t881250950", "2\t1\t2\t881250951"]


def _movielens(root: Path, **overrides: bytes) -> Path:
    root.mkdir()
    files = {
        "u.genre": b"unknown|0\nWestern|18\n",
        "u.item": "".join(f"{i}|Film {i}|01-Jan-1995||url|{GENRE_FLAGS}\n" for i in (1, 2)).encode(),
        "u.data": ("\n".join(RATINGS) + "\n").encode(),
    }
    for name, content in {**files, **overrides}.items():
        (root / name).write_bytes(content)
    return root


@pytest.mark.parametrize(
    "name,content,problem",
    [
        ("u.data", b"", "no data lines"),
        ("u.data", RANDOM_BYTES, "no usable line"),
        ("u.data", b"1\t1\t9\t881250949\n", "expected ratings of 1-5"),
        ("u.item", b"", "no data lines"),
        ("u.item", RANDOM_BYTES, "no usable line"),
        ("u.genre", b"", "no genre lines"),
    ],
    ids=["empty-ratings", "random-ratings", "no-valid-rating", "empty-items", "random-items", "empty-genres"],
)
def test_ingest_movielens_with_an_unusable_file_names_it(tmp_path, name, content, problem):
    src = _movielens(tmp_path / "ml", **{name: content})
    result = _invoke(["ingest", "movielens", str(src), "--out", str(tmp_path / "out")])
    _assert_one_line_error(result, src / name, problem)


def test_ingest_movielens_without_a_required_file_is_an_error(tmp_path):
    src = _movielens(tmp_path / "ml")
    (src / "u.genre").unlink()
    result = _invoke(["ingest", "movielens", str(src), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "u.genre is missing" in _said(result)


def test_ingest_movielens_dead_letters_a_huge_id_and_duplicate_ratings(tmp_path):
    lines = [*RATINGS, "12345678901234567890\t1\t4\t881250960", RATINGS[0], RATINGS[0]]
    src = _movielens(tmp_path / "ml", **{"u.data": ("\n".join(lines) + "\n").encode()})
    out = tmp_path / "out"
    result = _invoke(["ingest", "movielens", str(src), "--out", str(out)])
    assert result.exit_code == 0
    # each rating is an impression and an action: the two repeated ratings are four repeated events
    assert "duplicates of an earlier row: {'events': 4}" in _said(result)
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["rows"]["events"] == 6 and manifest["rejected"]["events"] == 4
    assert manifest["raw_rejected"] == {"u.data": 1}
    (huge,) = [json.loads(line) for line in (out / "dead_letter" / "u.data.jsonl").read_text().splitlines()]
    assert huge["row"] == 4 and "too large for 64 bits" in huge["errors"][0]["reason"]
    dups = [json.loads(line) for line in (out / "dead_letter" / "events.jsonl").read_text().splitlines()]
    assert len(dups) == 4 and all(d["errors"][0]["reason"].startswith("duplicate ") for d in dups)
