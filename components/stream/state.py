"""Per-user last-N action state, kept in exactly the order `ActionLog.sequences_at` defines.

Each user holds at most N entries (ts, pin_id, action code, request_id), sorted ascending; the sequence is the
entries reversed (newest first). `ActionLog` sorts actions by (ts, pin_id) and takes the last N, so ordering the
held entries by (ts, pin_id, code, request_id) gives the same sequence: entries that tie on (ts, pin_id, code) are
identical in every column a sequence shows, and a tie on (ts, pin_id) with different actions, which `ActionLog`
leaves to input order, is resolved here by action code so a replay in any order gives one answer.

Why bounded state is exact: the final last-N of a user is the N largest keys among all their actions. An event whose
key is below the smallest of N held keys can never be among them (the held minimum only grows), so it is dropped and
counted as "too_old". Duplicate detection uses the held entries themselves as the memory of event identities (at
most N per user): a duplicate of a held event is found there; a duplicate of an evicted event has a key below every
held key, so it is dropped by the too-old rule. No identity memory beyond the window is ever needed.

A user's entries can also be seeded from the online store (`seed`): a processor that starts without the features
step's replay (a cluster's first start) takes each user's history from the sequence the online store holds before
its first push, which would otherwise replace that history with the live actions alone. The online sequence has no
request ids, so a seeded entry carries SEEDED and matches any event with its (ts, pin_id, action): an event the
online sequence already holds is a duplicate, not a second action.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from components.features.sequence import Sequences
from models.schema import ACTIONS, PAD_ACTION, PAD_PIN, SEQ_LEN, SEQUENCE_ACTIONS

_SEQUENCE_CODES = frozenset(ACTIONS.index(a) for a in SEQUENCE_ACTIONS)

Entry = tuple[int, int, int, int]  # (ts, pin_id, action code, request_id): also the event's identity per user
SEEDED = -1  # the request id of an entry taken from the online store (event request ids are >= 0)


class Outcome:
    """What `SequenceState.add` did with one event (the metric each result increments)."""

    APPLIED = "applied"
    LATE = "late"  # applied, but older than the user's newest held action
    IGNORED = "ignored"  # not an action (impression)
    DUPLICATE = "duplicate"
    TOO_OLD = "too_old"


@dataclass
class SequenceState:
    """Each user's newest `max_len` actions.

    Example:
        >>> s = SequenceState(max_len=2)
        >>> s.add(1, 10, "click", 1000, 0)
        'applied'
        >>> s.sequence(1)
        [(1000, 10, 1)]
    """

    max_len: int = SEQ_LEN
    users: dict[int, list[Entry]] = field(default_factory=dict)

    def add(self, user_id: int, pin_id: int, action: str, ts: int, request_id: int) -> str:
        """Insert one validated event at its place; returns an `Outcome` value."""
        code = ACTIONS.index(action)
        if code not in _SEQUENCE_CODES:
            return Outcome.IGNORED
        entry = (int(ts), int(pin_id), code, int(request_id))
        held = self.users.setdefault(int(user_id), [])
        if len(held) >= self.max_len and entry < held[0]:
            return Outcome.TOO_OLD
        at = bisect.bisect_left(held, entry)
        if at < len(held) and held[at] == entry:
            return Outcome.DUPLICATE
        if at and held[at - 1][3] == SEEDED and held[at - 1][:3] == entry[:3]:  # sorts just before its event
            return Outcome.DUPLICATE
        late = bool(held) and entry[0] < held[-1][0]
        held.insert(at, entry)
        if len(held) > self.max_len:
            del held[0]
        return Outcome.LATE if late else Outcome.APPLIED

    def seed(self, user_id: int, sequence: Iterable[tuple[int, int, int]]) -> int:
        """Merge a user's online sequence ((ts, pin_id, action code), any order) into what is held for them, keeping
        the newest `max_len`; an entry whose (ts, pin_id, action) is already held (the event was delivered again) is
        not added twice. Returns how many entries were added."""
        held = self.users.setdefault(int(user_id), [])
        have = {e[:3] for e in held}
        added = 0
        for ts, pin_id, code in sequence:
            key = (int(ts), int(pin_id), int(code))
            if key not in have:
                bisect.insort(held, (*key, SEEDED))
                have.add(key)
                added += 1
        del held[: max(0, len(held) - self.max_len)]
        return added

    def sequence(self, user_id: int) -> list[tuple[int, int, int]]:
        """(ts, pin_id, action code) newest first."""
        return [(e[0], e[1], e[2]) for e in reversed(self.users.get(int(user_id), []))]

    def sequences_at(self, users: Iterable[int], at_ts: np.ndarray, max_len: int = SEQ_LEN) -> Sequences:
        """The `ActionLog.sequences_at` interface over the held state, so `tables.sequence_table` builds the pushed
        table from it unchanged. Only held actions strictly before each at_ts count, as there."""
        users = np.asarray(users, dtype=np.int64)
        at_ts = np.asarray(at_ts, dtype=np.int64)
        pins = np.full((len(users), max_len), PAD_PIN, dtype=np.int64)
        acts = np.full((len(users), max_len), PAD_ACTION, dtype=np.int8)
        ts = np.zeros((len(users), max_len), dtype=np.int64)
        lengths = np.zeros(len(users), dtype=np.int64)
        for i, (user, cut) in enumerate(zip(users.tolist(), at_ts.tolist(), strict=True)):
            seq = [e for e in self.sequence(user) if e[0] < cut][:max_len]
            if seq:
                arr = np.asarray(seq, dtype=np.int64)
                n = len(seq)
                ts[i, :n], pins[i, :n], acts[i, :n], lengths[i] = arr[:, 0], arr[:, 1], arr[:, 2], n
        return Sequences(pin_ids=pins, actions=acts, ts=ts, lengths=lengths)

    def to_json(self) -> dict:
        """Plain data for the checkpoint (JSON object keys are strings)."""
        return {"max_len": self.max_len, "users": {str(u): [list(e) for e in held] for u, held in self.users.items()}}

    @classmethod
    def from_json(cls, data: dict) -> SequenceState:
        users = {int(u): [tuple(int(x) for x in e) for e in held] for u, held in data["users"].items()}
        return cls(max_len=int(data["max_len"]), users=users)
