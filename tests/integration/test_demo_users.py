"""The demo's choice of users: recent history, different segments, different main interests."""

from __future__ import annotations

import pytest

from components.data.dataset import Dataset
from homefeed.demo import pick_users

pytestmark = pytest.mark.integration


def test_demo_shows_users_of_different_segments_and_tastes(tiny_world):
    users = pick_users(tiny_world, n=3)
    assert len(users) == 3
    ds = Dataset(tiny_world)
    segment = ds.read("users").set_index("user_id")["segment"]
    assert len({segment[u] for u in users}) == 3
    ev = ds.read("events")
    recent = ev[(ev.ts >= ev.ts.max() - 86_400_000) & ev.user_id.isin(users) & (ev.action != "impression")]
    assert set(recent.user_id) == set(users)  # each has acted on the last day
    interest = ds.read("pins").set_index("pin_id")["interest_id"]
    main = recent.assign(i=interest.reindex(recent.pin_id).to_numpy()).groupby("user_id").i.agg(lambda x: x.mode()[0])
    assert main.nunique() == 3
