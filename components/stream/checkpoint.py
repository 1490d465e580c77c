"""The processor's checkpoint: the source offset to resume at, the full state, the counters, the dead letter's size,
and, for a source that has one, its own position (the Redis bus: the last entry id of each stream the checkpoint
covers, so that entries redelivered after a crash between checkpoint and acknowledgement are known as covered).

Written atomically (temp file in the same directory, fsync, os.replace), so a kill -9 at any moment leaves either
the previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

VERSION = 1


@dataclass
class Checkpoint:
    offset: int  # the next record to read
    state: dict  # SequenceState.to_json()
    metrics: dict  # StreamMetrics.to_json()
    dead_letter_bytes: int  # the dead-letter file's size when the checkpoint was taken
    source: dict = field(default_factory=dict)  # the source's position (see the module docstring); {} for files

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        data = {"version": VERSION, **self.__dict__}
        # dumps, not dump: json.dump streams through the pure-Python encoder, several times slower on a state of
        # thousands of users; the text is written in one piece anyway
        text = json.dumps(data, separators=(",", ":"))
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        """The checkpoint at `path`, or None when there is none yet."""
        path = Path(path)
        if not path.exists():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != VERSION:
            raise ValueError(f"checkpoint {path} has version {data.get('version')}, expected {VERSION}")
        return cls(data["offset"], data["state"], data["metrics"], data["dead_letter_bytes"], data.get("source", {}))
