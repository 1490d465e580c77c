"""The `features` step on the tiny world: a real Feast store (SQLite online store, file offline store) built from the
dataset, read back online and compared with what the dataset says directly."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feast import FeatureStore

from components.data.dataset import Dataset
from components.features.repo import DEFINITIONS
from components.features.sequence import ActionLog
from components.features.store import build_feature_store, online_pin_features, online_user_features

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def world(tiny_world) -> dict[str, pd.DataFrame]:
    ds = Dataset(tiny_world)
    return {name: ds.read(name) for name in ("events", "users", "pins")}


@pytest.fixture(scope="module")
def built(tiny_world, tmp_path_factory) -> tuple[FeatureStore, Path]:
    repo_dir = tmp_path_factory.mktemp("feature_store")
    return build_feature_store(tiny_world, repo_dir), repo_dir


def _cutoff(world) -> int:
    return int(world["events"]["ts"].max()) + 1


def _assert_sequences_match(online: pd.DataFrame, events: pd.DataFrame, cutoff: int, max_len: int = 100) -> None:
    users = online["user_id"].to_numpy()
    expected = ActionLog(events).sequences_at(users, np.full(len(users), cutoff), max_len=max_len)
    for i, row in enumerate(online.itertuples(index=False)):
        n = int(expected.lengths[i])
        assert row.seq_len == n, f"user {row.user_id}"
        assert row.seq_pin_ids == expected.pin_ids[i, :n].tolist(), f"user {row.user_id}"
        assert row.seq_actions == expected.actions[i, :n].astype(int).tolist(), f"user {row.user_id}"
        assert row.seq_ts == expected.ts[i, :n].tolist(), f"user {row.user_id}"


def test_online_sequences_are_the_action_log_at_the_cutoff(built, world):
    store, _ = built
    online = online_user_features(store, world["users"]["user_id"].tolist())
    assert len(online) == len(world["users"])
    assert online["seq_len"].max() > 20  # the comparison below covers long sequences, not only empty ones
    _assert_sequences_match(online, world["events"], _cutoff(world))
    newest_first = online.loc[online["seq_len"] > 1, "seq_ts"]
    assert all(ts == sorted(ts, reverse=True) for ts in newest_first)


def test_user_profile_counts_are_the_events_counts(built, world):
    store, _ = built
    users = world["users"]
    online = online_user_features(store, users["user_id"].tolist()).set_index("user_id")
    counts = pd.crosstab(world["events"]["user_id"], world["events"]["action"]).reindex(users["user_id"], fill_value=0)
    for action in ("impression", "click", "repin", "hide"):
        assert online[f"n_{action}s"].astype(int).tolist() == counts[action].tolist(), action
    rate = np.where(counts["impression"] > 0, counts["repin"] / counts["impression"].clip(lower=1), 0.0)
    np.testing.assert_allclose(online["repin_rate"].to_numpy(), rate, rtol=1e-6)
    assert online["segment"].tolist() == users["segment"].tolist()
    assert online["declared_interests"].tolist() == [list(v) for v in users["declared_interests"]]


def test_pin_features_hold_the_pins_attributes_and_decayed_engagement(built, world):
    store, _ = built
    pins = world["pins"].sample(50, random_state=0)
    online = online_pin_features(store, pins["pin_id"].tolist())
    assert online["pin_id"].tolist() == pins["pin_id"].tolist()
    for col in ("interest_id", "image_signature_coarse", "created_ts"):
        assert online[col].astype("int64").tolist() == pins[col].tolist(), col
    np.testing.assert_array_equal(online["quality"].to_numpy(), pins["quality"].to_numpy(dtype=np.float32))
    for got, want in zip(online["embedding"], pins["embedding"], strict=True):
        np.testing.assert_array_equal(np.asarray(got, dtype=np.float32), want)

    events, cutoff = world["events"], _cutoff(world)
    shown = events[events["action"] == "impression"].groupby("pin_id").size()
    assert online["n_impressions"].astype(int).tolist() == shown.reindex(pins["pin_id"], fill_value=0).tolist()
    engaged = events[events["action"].isin(["click", "repin"])]
    weight = 0.5 ** ((cutoff - engaged["ts"]) / (7 * DAY_MS))
    score = weight.groupby(engaged["pin_id"]).sum().reindex(pins["pin_id"], fill_value=0.0)
    np.testing.assert_allclose(online["engagement_score"].to_numpy(), score.to_numpy(), rtol=1e-5)
    assert (online["engagement_score"] > 0).any()
    for action in ("click", "repin", "hide"):
        acted = events[events["action"] == action]
        weight = 0.5 ** ((cutoff - acted["ts"]) / (7 * DAY_MS))
        want = weight.groupby(acted["pin_id"]).sum().reindex(pins["pin_id"], fill_value=0.0)
        np.testing.assert_allclose(online[f"decayed_{action}s"].to_numpy(), want.to_numpy(), rtol=1e-5)
        assert (online[f"decayed_{action}s"] > 0).any(), action


def test_a_user_without_actions_has_an_empty_sequence_and_an_unknown_one_has_nulls(built, world):
    store, _ = built
    acted = set(world["events"].loc[world["events"]["action"] != "impression", "user_id"])
    idle = next(u for u in world["users"]["user_id"] if u not in acted)
    online = online_user_features(store, [idle, 10**9])
    assert online["seq_len"].tolist()[0] == 0
    assert online.loc[0, ["seq_pin_ids", "seq_actions", "seq_ts"]].tolist() == [[], [], []]
    assert online.loc[1, "segment"] is None and pd.isna(online.loc[1, "seq_len"])


def test_the_ranking_service_joins_user_and_pin_features(built, world):
    store, _ = built
    user, pin = int(world["users"]["user_id"].iloc[1]), int(world["pins"]["pin_id"].iloc[0])
    response = store.get_online_features(
        features=store.get_feature_service("ranking"),
        entity_rows=[{"user_id": user, "pin_id": pin}],
        full_feature_names=True,  # both views hold n_impressions and n_repins
    ).to_dict()
    events = world["events"]
    shown = events[events["action"] == "impression"]
    assert response["user_profile__n_impressions"] == [int((shown["user_id"] == user).sum())]
    assert response["pin_features__n_impressions"] == [int((shown["pin_id"] == pin).sum())]
    assert len(response["user_action_sequence__seq_pin_ids"][0]) == response["user_action_sequence__seq_len"][0]


def test_a_rebuild_in_the_same_directory_replaces_the_store(world, tiny_world, tmp_path):
    repo_dir = tmp_path / "store"
    users = world["users"]["user_id"].tolist()
    before = online_user_features(build_feature_store(tiny_world, repo_dir), users)
    again = online_user_features(build_feature_store(tiny_world, repo_dir), users)
    pd.testing.assert_frame_equal(again, before)

    # An earlier cut-off: sequences are cut there, and a pin created after it is gone, not left from the first build.
    cutoff = int(world["events"]["ts"].median())
    earlier = build_feature_store(tiny_world, repo_dir, as_of_ts=cutoff, max_len=5)
    online = online_user_features(earlier, users)
    signed_up = (world["users"]["signup_ts"] < cutoff).to_numpy()
    assert 0 < signed_up.sum() < len(users)
    assert online.loc[~signed_up, "segment"].isna().all()  # not a user yet at the cut-off
    online = online[signed_up]
    assert online["seq_len"].max() == 5
    _assert_sequences_match(online, world["events"], cutoff, max_len=5)
    pins = world["pins"]
    late = int(pins.loc[pins["created_ts"] >= cutoff, "pin_id"].iloc[0])
    early = int(pins.loc[pins["created_ts"] < cutoff, "pin_id"].iloc[0])
    got = online_pin_features(earlier, [late, early])
    assert (
        pd.isna(got.loc[0, "interest_id"])
        and got.loc[1, "interest_id"] == pins.set_index("pin_id").at[early, "interest_id"]
    )


def test_feast_apply_works_in_a_copy_of_the_feature_repo(tmp_path):
    repo_dir = tmp_path / "feature_repo"
    shutil.copytree(DEFINITIONS, repo_dir)
    feast = Path(sys.executable).parent / "feast"
    done = subprocess.run([str(feast), "apply"], cwd=repo_dir, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    store = FeatureStore(repo_path=str(repo_dir))
    assert sorted(v.name for v in store.list_feature_views()) == [
        "pin_features",
        "user_action_sequence",
        "user_profile",
    ]
    assert sorted(s.name for s in store.list_feature_services()) == ["ranking", "retrieval"]
