"""The on-disk dataset every producer writes and every consumer reads.

```
<dataset>/
  events.parquet      canonical events, sorted by (ts, request_id)
  pins.parquet        canonical pins (with the content embedding)
  users.parquet       canonical users
  interests.parquet   interest ids and names
  dataset.json        manifest: source, counts, time span, dead-letter counts, producer config
  dead_letter/        <contract>.jsonl: every rejected row with its reasons
  ground_truth.npz    only for simulated worlds: the latent state the world's behaviour is drawn from
```
Parquet files are written with fixed settings and no timestamps in their metadata, so the same rows give the same
bytes (the determinism tests rely on this).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.data import contracts
from components.data.contracts import DeadLetter

SCHEMA_VERSION = 1
TABLES = ("events", "pins", "users", "interests")
_ROW_GROUP = 1_000_000


@dataclass
class Dataset:
    """Paths of one dataset directory; tables load lazily so large events files are read only when asked for."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def path(self, table: str) -> Path:
        return self.root / f"{table}.parquet"

    @property
    def manifest_path(self) -> Path:
        return self.root / "dataset.json"

    @property
    def dead_letter(self) -> DeadLetter:
        return DeadLetter(self.root / "dead_letter")

    def manifest(self) -> dict:
        if not self.manifest_path.exists():
            raise FileNotFoundError(f"{self.root} is not a dataset: {self.manifest_path.name} is missing")
        return json.loads(self.manifest_path.read_text())

    def read(self, table: str, columns: list[str] | None = None) -> pd.DataFrame:
        return pq.read_table(self.path(table), columns=columns).to_pandas()

    def read_arrow(self, table: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.path(table), columns=columns)


@dataclass
class WriteReport:
    """What a dataset write kept and rejected, per table."""

    rows: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)  # of the rejected, rows repeating an earlier row's key


def write_table(path: Path, table: pa.Table) -> None:
    pq.write_table(
        table,
        path,
        compression="zstd",
        compression_level=1,
        row_group_size=_ROW_GROUP,
        write_statistics=True,
        store_schema=True,
    )


def validate_and_write(
    root: Path,
    tables: dict[str, pd.DataFrame | pa.Table],
    manifest: dict,
) -> WriteReport:
    """Validate each table against its contract, reject events that reference unknown users or pins or repeat an
    earlier event, and write the dataset. Rejected rows go to `dead_letter/`; the manifest records the counts."""
    ds = Dataset(root)
    ds.root.mkdir(parents=True, exist_ok=True)
    dead = ds.dead_letter
    for name in TABLES:  # a rewrite replaces these tables' dead letters; a producer's own (raw lines) stay
        (dead.directory / f"{name}.jsonl").unlink(missing_ok=True)
    report = WriteReport()
    valid: dict[str, pa.Table] = {}
    for name in ("interests", "pins", "users", "events"):
        refs = None
        if name == "events":  # events must join to the users and pins of this dataset
            refs = {
                "user_id": (valid["users"].column("user_id").to_numpy(), "users"),
                "pin_id": (valid["pins"].column("pin_id").to_numpy(), "pins"),
            }
        # each table is whole here, so a repeated event is a duplicate (see contracts.EVENT)
        result = contracts.validate(tables[name], contracts.CONTRACTS[name], references=refs, dedupe=True)
        dead.write(name, result.rejects)
        write_table(ds.path(name), result.valid)
        valid[name] = result.valid
        report.rows[name] = result.valid.num_rows
        report.rejected[name] = result.n_rejected
        report.duplicates[name] = result.duplicates
    ts = valid["events"].column("ts")
    full = {
        "schema_version": SCHEMA_VERSION,
        **manifest,
        "rows": report.rows,
        "rejected": report.rejected,
        "time_span_ms": [int(pa.compute.min(ts).as_py() or 0), int(pa.compute.max(ts).as_py() or 0)],
    }
    ds.manifest_path.write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    return report
