"""What the homefeed page knows of the dataset: who the users are, what the interests are called, which interest each
pin belongs to, and when the world ends. Everything that changes (profiles, sequences) is read from the online store,
with the predictors' own code (serving/online.py), so the page shows what the models see.

Example:
    world = World.load(Path("workspace/datasets/world-small-seed0"))
    world.interest_name(world.pin_interest[17])   # "travel"
    user_view(store, world, 7)["sequence"][0]     # the newest action: {"pin_id", "action", "interest_id", ...}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from feast import FeatureStore

from components.data.dataset import Dataset
from models.schema import ACTIONS, PAD_PIN, SEGMENTS, SEQ_LEN
from serving.online import declared_interests, online_users


class UnknownUser(LookupError):
    """A user id the dataset does not have (the page answers 404)."""


class UnknownPin(LookupError):
    """A pin id the dataset does not have (the page answers 404)."""


@dataclass
class World:
    """The dataset's fixed facts, loaded once (only the columns the page needs: never the pins' embeddings)."""

    segments: dict[int, str]  # user id -> segment, from the users table
    interests: dict[int, str]  # interest id -> name
    pin_interest: dict[int, int]  # pin id -> interest id
    end_ts: int  # the newest event's ts (UTC epoch ms): the page's clock starts there
    last_request_id: int  # the largest request id of the event log: the page's feeds are numbered after it

    @classmethod
    def load(cls, dataset_dir: Path) -> World:
        ds = Dataset(dataset_dir)
        missing = [t for t in ("events", "pins", "users", "interests") if not ds.path(t).exists()]
        if missing:
            raise FileNotFoundError(f"{dataset_dir} is not a dataset: {', '.join(missing)} table(s) missing")
        users = ds.read("users", columns=["user_id", "segment"])
        interests = ds.read("interests", columns=["interest_id", "name"])
        pins = ds.read("pins", columns=["pin_id", "interest_id"])
        events = ds.read_arrow("events", columns=["ts", "request_id"])
        if events.num_rows == 0:
            raise ValueError(f"{dataset_dir} has no events: the page's clock starts at the world's last event")
        return cls(
            segments=dict(zip(users["user_id"].tolist(), users["segment"].tolist(), strict=True)),
            interests=dict(zip(interests["interest_id"].tolist(), interests["name"].tolist(), strict=True)),
            pin_interest=dict(zip(pins["pin_id"].tolist(), pins["interest_id"].tolist(), strict=True)),
            end_ts=int(np.max(events.column("ts").to_numpy())),
            last_request_id=int(np.max(events.column("request_id").to_numpy())),
        )

    @property
    def n_interests(self) -> int:
        """The interest-id range the profiles' declared interests lie in (the models' n_interests)."""
        return max(self.interests, default=-1) + 1

    def interest_name(self, interest_id: int | None) -> str | None:
        return None if interest_id is None else self.interests.get(int(interest_id), f"interest {interest_id}")

    def require_user(self, user_id: int) -> None:
        if user_id not in self.segments:
            raise UnknownUser(f"user {user_id} is not in the dataset (its users have ids {self._id_range()})")

    def require_pin(self, pin_id: int) -> None:
        if pin_id not in self.pin_interest:
            raise UnknownPin(f"pin {pin_id} is not in the dataset's pins table")

    def users(self, limit: int) -> list[dict]:
        """The first `limit` users by id, with their segment (the page's picker)."""
        return [{"user_id": u, "segment": self.segments[u]} for u in sorted(self.segments)[:limit]]

    def _id_range(self) -> str:
        return f"{min(self.segments)}..{max(self.segments)}" if self.segments else "none"


def user_view(store: FeatureStore, world: World, user_id: int) -> dict:
    """The user as the models see them online: segment, declared interests and realtime sequence (newest first),
    read by `online_users` like the retrieval and ranking predictors read them. Raises UnknownUser."""
    world.require_user(user_id)
    users = online_users(store, [user_id], world.n_interests, seq_len=SEQ_LEN)
    pins, actions, ts = users.seq_pin_ids[0], users.seq_actions[0], users.seq_ts[0]
    sequence = [
        {
            "pin_id": int(p),
            "action": ACTIONS[int(a)],
            "interest_id": world.pin_interest.get(int(p)),
            "interest": world.interest_name(world.pin_interest.get(int(p))),
            "ts": int(t),
        }
        for p, a, t in zip(pins, actions, ts, strict=True)
        if p != PAD_PIN
    ]
    return {
        "user_id": user_id,
        # the dataset's segment; the online profile's (what the models read) is `new` for a user it lacks
        "segment": world.segments[user_id],
        "online_segment": SEGMENTS[int(users.segment[0])],
        "known_online": bool(users.known[0]),
        "interests": [{"interest_id": i, "name": world.interest_name(i)} for i in declared_interests(users, 0)],
        "sequence": sequence,
    }
