"""The offline event log the stream processor appends to: every valid event it consumed (impressions and actions),
as day-partitioned parquet, the record of served traffic that retraining and monitoring read.

    <root>/day=YYYY-MM-DD/part-<first>-<end>.parquet     the events of source offsets [first, end) on that day (UTC)
    <root>/day=YYYY-MM-DD/part-<name>-<first>-<end>.parquet   the same for one of several writers (a shard's
                                                             processor: their offsets are their own)

Exactly once with the processor's checkpoint: the events read since the last checkpoint are held in memory and
written at the next push, before the checkpoint (StreamProcessor.flush); on resume, parts that start at or after the
checkpoint's offset are deleted, since the replay writes those events again. So a crash between writing a part and
checkpointing leaves no duplicate. `compact(day)` merges a day's parts into one file, keeping the offset range.

Only the EVENT contract's columns are kept (components/data/contracts.py), so a day of the log reads like any
dataset's events. The root is a local directory (the workspace volume on a cluster); S3 is not written here.

As a data source (`log:<log dir>?catalog=<dataset dir>`, `to_dataset`): the log holds events only, so pins, users
and interests come from a catalog dataset (the one the serving models were trained on). The dataset's events are
the catalog's and the log's together, an event present in both (same user, pin, action, time and request) once, in
time order. An event of a user or pin the catalog does not know goes to the dead letter with that reason, as in
every dataset write: new users and pins reach the catalog through their own producers, not through the log.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.data.contracts import EVENT
from components.data.dataset import Dataset, WriteReport, validate_and_write

PART = re.compile(r"part-(?:([a-z0-9]+)-)?(\d{12})-(\d{12})\.parquet")


class OfflineEventLog:
    def __init__(self, root: Path | str, name: str = "") -> None:
        if name and not re.fullmatch(r"[a-z0-9]+", name):
            raise ValueError(f"an offline log writer's name is lowercase letters and digits, got {name!r}")
        self.root, self.name = Path(root), name
        self._held: list[pa.Table] = []

    def _part_name(self, first: int, end: int) -> str:
        return f"part-{self.name + '-' if self.name else ''}{first:012d}-{end:012d}.parquet"

    def hold(self, events: pa.Table) -> None:
        """Keep validated events (the contract's columns) until the next `write`."""
        if events.num_rows:
            self._held.append(events.select(EVENT.names()))

    def write(self, first: int, end: int) -> int:
        """Write what is held as the parts of offsets [first, end), one per day; returns the events written."""
        if not self._held:
            return 0
        table = pa.concat_tables(self._held)
        self._held = []
        days = pc.strftime(pc.cast(table["ts"], pa.timestamp("ms", tz="UTC")), "%Y-%m-%d")
        for day in pc.unique(days).to_pylist():
            part = self.root / f"day={day}" / self._part_name(first, end)
            part.parent.mkdir(parents=True, exist_ok=True)
            tmp = part.with_suffix(".tmp")
            pq.write_table(table.filter(pc.equal(days, day)), tmp)
            tmp.replace(part)  # a part appears whole or not at all
        return table.num_rows

    def discard_from(self, offset: int) -> int:
        """Delete this writer's parts that start at or after `offset` (written after the checkpoint a resume starts
        from) and drop what is held; returns how many parts were deleted."""
        self._held = []
        gone = 0
        for part in self.parts():
            name, first, _ = PART.fullmatch(part.name).groups()
            if (name or "") == self.name and int(first) >= offset:
                part.unlink()
                gone += 1
        return gone

    def parts(self, day: str | None = None) -> list[Path]:
        pattern = f"day={day}/part-*.parquet" if day else "day=*/part-*.parquet"
        return sorted(p for p in self.root.glob(pattern) if PART.fullmatch(p.name))

    def read(self, day: str | None = None) -> pa.Table:
        """Every event of the log (or of one day), in source order within each writer."""
        parts = sorted(self.parts(day), key=lambda p: (PART.fullmatch(p.name).group(1) or "", p.name))
        if not parts:
            return EVENT.schema.empty_table()
        return pa.concat_tables(pq.read_table(p) for p in parts)

    def compact(self, day: str) -> Path | None:
        """Merge a day's parts into one (named by the smallest first and largest end offset); None when it has
        none. Run it on days no processor writes to any more (any day but today's): the merged file belongs to no
        writer, so a resume would not discard from it."""
        parts = self.parts(day)
        if len(parts) < 2:
            return parts[0] if parts else None
        spans = [tuple(map(int, PART.fullmatch(p.name).groups()[1:])) for p in parts]
        first, end = min(s[0] for s in spans), max(s[1] for s in spans)
        merged = self.root / f"day={day}" / f"part-{first:012d}-{end:012d}.parquet"
        tmp = merged.with_suffix(".tmp")
        pq.write_table(self.read(day), tmp)
        tmp.replace(merged)
        for part in parts:
            if part != merged:
                part.unlink()
        return merged


EVENT_KEY = ["user_id", "pin_id", "action", "ts", "request_id"]  # what makes two records one event


def parse_log_source(arg: str) -> tuple[Path, Path]:
    """`<log dir>?catalog=<dataset dir>` -> (log dir, catalog dir); ValueError when either is missing."""
    parts = urlsplit(arg)
    catalog = parse_qs(parts.query).get("catalog", [""])[-1]
    if not parts.path or not catalog:
        raise ValueError(f"a log source is log:<log dir>?catalog=<dataset dir>, got log:{arg}")
    return Path(parts.path), Path(catalog)


def to_dataset(log_dir: Path, catalog_dir: Path, out: Path) -> WriteReport:
    """The dataset of the log's events over the catalog's (module docstring), written to `out`."""
    log, catalog = OfflineEventLog(log_dir), Dataset(catalog_dir)
    if not log.parts():
        raise FileNotFoundError(f"{log_dir} holds no offline event log (no day=YYYY-MM-DD/part-*.parquet)")
    source = catalog.manifest().get("source")  # FileNotFoundError unless the catalog is a dataset
    schema = EVENT.schema
    logged = log.read().cast(schema)
    history = catalog.read_arrow("events", columns=EVENT.names()).cast(schema)
    events = pa.concat_tables([history, logged]).to_pandas()
    events = events.drop_duplicates(subset=EVENT_KEY).sort_values(["ts", "request_id"], kind="stable")
    tables = {name: catalog.read_arrow(name) for name in ("pins", "users", "interests")}
    tables["events"] = events.reset_index(drop=True)
    manifest = {"source": f"log:{log_dir}?catalog={catalog_dir}", "catalog_source": source,
                "catalog_events": history.num_rows, "logged_events": logged.num_rows,
                "logged_days": sorted({p.parent.name.removeprefix("day=") for p in log.parts()})}  # fmt: skip
    return validate_and_write(out, tables, manifest)
