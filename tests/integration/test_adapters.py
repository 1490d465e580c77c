"""The real-data adapters, on the shared datasets (skipped when ../shared/datasets is absent) and on small files
with broken lines."""

import numpy as np
import pytest

from components.data.adapters.movielens import ingest_movielens
from components.data.adapters.sequences import ingest_sequences
from components.data.dataset import Dataset

pytestmark = pytest.mark.integration


@pytest.mark.data
def test_movielens_100k_maps_every_rating_to_an_impression_and_an_action(shared_datasets, tmp_path):
    report = ingest_movielens(shared_datasets / "movielens_100k", tmp_path)
    assert report.rejected == {"interests": 0, "pins": 0, "users": 0, "events": 0}
    ds = Dataset(tmp_path)
    ev = ds.read("events")
    counts = ev.action.value_counts().to_dict()
    # u.data's rating histogram (README): 1:6110 2:11370 3:27145 4:34174 5:21201
    assert counts == {"impression": 100_000, "repin": 34_174 + 21_201, "click": 27_145, "hide": 6_110 + 11_370}
    assert ds.manifest()["rows"] == {"events": 200_000, "users": 943, "pins": 1_682, "interests": 19}
    # each action follows its own impression in the same request
    first = ev.groupby(["request_id", "pin_id"]).action.first()
    assert (first == "impression").all()
    assert ev.ts.is_monotonic_increasing
    pins = ds.read("pins")
    assert pins.loc[pins.pin_id == 1, "interest_id"].item() == 3  # Toy Story: first genre flag is Animation
    assert np.allclose([np.linalg.norm(e) for e in pins.embedding.dropna()], 1.0, atol=1e-5)
    assert set(ds.read("users").segment) <= {"core", "casual", "new", "resurrected"}


@pytest.mark.data
def test_bert4rec_beauty_sequences_keep_each_users_order(shared_datasets, tmp_path):
    src = shared_datasets / "bert4rec_beauty" / "beauty.txt"
    ingest_sequences(src, tmp_path)
    ds = Dataset(tmp_path)
    # dataset README: 353,962 actions, 40,226 users, 54,542 items
    assert ds.manifest()["rows"] == {"events": 353_962, "users": 40_226, "pins": 54_542, "interests": 1}
    ev = ds.read("events")
    raw = np.loadtxt(src, dtype=np.int64)
    for user in (1, 2, 40_226):
        expected = raw[raw[:, 0] == user, 1]
        got = ev[ev.user_id == user].sort_values("ts").pin_id.to_numpy()
        np.testing.assert_array_equal(got, expected)
    assert (ev.action == "repin").all()


def test_sequence_file_with_broken_lines_goes_to_dead_letter(tmp_path):
    src = tmp_path / "seq.txt"
    src.write_text("1 10\n1 11\nnot a line\n2 x\n2 12\n\n3\n")
    report = ingest_sequences(src, tmp_path / "out")
    assert report.rows["events"] == 3
    dead = {r["row"]: r for r in Dataset(tmp_path / "out").dead_letter.read("seq.txt")}
    assert set(dead) == {3, 4, 7}
    assert "not an integer" in dead[4]["errors"][0]["reason"] and dead[4]["errors"][0]["field"] == "item_id"
    assert "expected 2 fields" in dead[7]["errors"][0]["reason"]
    assert Dataset(tmp_path / "out").manifest()["raw_rejected"] == {"seq.txt": 3}


def _tiny_movielens(root, data_lines):
    root.mkdir()
    (root / "u.genre").write_text("unknown|0\nAction|1\n")
    flags = "|".join(["0"] * 19)
    item = "{}|Film {}|01-Jan-1995||url|" + flags
    (root / "u.item").write_text("\n".join(item.format(i, i) for i in (1, 2)) + "\n")
    (root / "u.data").write_text("\n".join(data_lines) + "\n")


def test_movielens_bad_rating_and_unknown_movie_are_rejected_with_reasons(tmp_path):
    src = tmp_path / "ml"
    _tiny_movielens(src, ["1\t1\t5\t881250949", "1\t2\t9\t881250950", "2\t3\t4\t881250951", "2\t1\t2\t881250952"])
    report = ingest_movielens(src, tmp_path / "out")
    ds = Dataset(tmp_path / "out")
    raw = ds.dead_letter.read("u.data")
    assert [(r["row"], r["errors"][0]["field"]) for r in raw] == [(2, "rating")]
    # movie 3 is not in u.item: its impression and action are rejected, naming the pin
    assert report.rejected["events"] == 2
    reasons = {e["reason"] for r in ds.dead_letter.read("events") for e in r["errors"]}
    assert reasons == {"unknown pin_id: not in pins"}
    assert report.rows["events"] == 4
