"""`homefeed eval seqrec` end to end: the two-tower trains on a sequence file and is measured with the SASRec
protocol against popularity; on the real MovieLens-100K when ../shared/datasets is present."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from components.evaluate.seqrec import evaluate_seqrec, markdown, training_options
from homefeed.cli import main

pytestmark = pytest.mark.integration


def _chain_walks(path, n_chains=30, chain_len=10, n_users=400, seed=0):
    """Users walk along item chains: each takes 4-8 consecutive items of one chain (wrapping around), so the next
    item follows from the previous ones while every item is about equally popular."""
    rng = np.random.default_rng(seed)
    lines = []
    for user in range(1, n_users + 1):
        chain, start, length = rng.integers(n_chains), rng.integers(chain_len), rng.integers(4, 9)
        items = chain * chain_len + (start + np.arange(length)) % chain_len + 1
        lines += [f"{user} {item}" for item in items]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.quality
def test_the_tower_learns_the_chains_that_popularity_cannot_see(tmp_path):
    data = _chain_walks(tmp_path / "chains.txt")
    opts = training_options(epochs=30, batch_size=128, seed=0)
    result = evaluate_seqrec(data, "sasrec", tmp_path / "out", opts, on_ray=False)
    assert result["counts"] == {
        "users": 400, "items": 300, "actions": result["counts"]["actions"], "evaluated_users": 400,
        "train_examples": result["counts"]["actions"] - 3 * 400,
    }  # fmt: skip
    tower, pop = result["models"]["two_tower"], result["models"]["popularity"]
    for part in ("test", "validation"):
        # popularity is near chance (10 of 101 candidates); the chain a user walks narrows them to a few items
        assert pop[part]["HR@10"] < 0.3
        assert tower[part]["HR@10"] > pop[part]["HR@10"] + 0.3, result["models"]
        assert tower[part]["NDCG@10"] > pop[part]["NDCG@10"] + 0.2, result["models"]
    written = json.loads((tmp_path / "out" / "seqrec_eval.json").read_text())
    assert written == result
    assert (tmp_path / "out" / "seqrec_eval.md").read_text() == markdown(result)


@pytest.mark.slow
def test_cli_trains_on_ray_and_writes_the_tables(tmp_path):
    data = _chain_walks(tmp_path / "chains.txt")
    out = tmp_path / "out"
    args = ["eval", "seqrec", "--data", str(data), "--epochs", "2", "--batch-size", "64", "--workers", "2"]
    result = CliRunner().invoke(main, [*args, "--max-users", "100", "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads((out / "seqrec_eval.json").read_text())
    assert written["counts"]["evaluated_users"] == 100 and written["training"]["runner"] == "ray:2"
    assert written["command"].startswith(f"homefeed eval seqrec --data {data} --format sasrec --epochs 2")
    for model in ("two_tower", "popularity"):
        assert 0.0 <= written["models"][model]["test"]["NDCG@10"] <= written["models"][model]["test"]["HR@10"] <= 1
    assert "| two_tower |" in (out / "seqrec_eval.md").read_text()


def test_cli_says_what_is_wrong_with_a_bad_file(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2\n1 3 9\n")
    result = CliRunner().invoke(main, ["eval", "seqrec", "--data", str(bad), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "bad.txt:2: expected 2 fields (user item), got 3" in result.output
    missing = CliRunner().invoke(main, ["eval", "seqrec", "--data", str(tmp_path / "nope.txt")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


@pytest.mark.slow
@pytest.mark.quality
@pytest.mark.data
def test_movielens_100k_beats_popularity(shared_datasets, tmp_path):
    opts = training_options(epochs=2, batch_size=512, seed=0)  # 2 x 190 steps: about 30 s
    result = evaluate_seqrec(shared_datasets / "movielens_100k", "movielens", tmp_path, opts, on_ray=False)
    assert result["counts"] == {
        "users": 943, "items": 1682, "actions": 100_000, "evaluated_users": 943, "train_examples": 100_000 - 3 * 943,
    }  # fmt: skip
    tower, pop = result["models"]["two_tower"]["test"], result["models"]["popularity"]["test"]
    assert tower["HR@10"] > pop["HR@10"] and tower["NDCG@10"] > pop["NDCG@10"], result["models"]
