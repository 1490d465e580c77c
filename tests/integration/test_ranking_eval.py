"""`homefeed eval ranking` end to end on the tiny world: prepared data, variants trained, the table written."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from homefeed.cli import main


@pytest.mark.slow
def test_eval_ranking_writes_the_comparison_with_the_reference_first(tiny_world, tmp_path):
    out = tmp_path / "eval"
    args = ["eval", "ranking", "--dataset", str(tiny_world), "--variants", "transact_v11,none", "--seeds", "2"]
    args += ["--epochs", "1", "--max-train", "3000", "--device", "cpu", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    r = json.loads((out / "ranking_eval.json").read_text())
    assert list(r["variants"]) == ["none", "transact_v11"]  # the reference first whatever the order asked
    assert r["reference"] == "none" and r["seeds"] == 2 and r["train_examples"] == 3000
    ref, v11 = r["variants"]["none"], r["variants"]["transact_v11"]
    assert ref["rel_hit@3_pct"]["repin"] == [0.0, 0.0]
    for metric in ("hit@3", "served_hit@3", "auc"):
        values = [m[0] for v in (ref, v11) for m in v[metric].values()]
        assert all(0.0 <= x <= 1.0 for x in values if not np.isnan(x))
    assert "| transact_v11 |" in (out / "ranking_eval.md").read_text()
    # the prepared data the training half reads is plain numpy
    assert {p.name for p in (out / "data").iterdir()} >= {"train.npz", "eval.npz", "user_emb.npy", "meta.json"}


def test_eval_ranking_refuses_an_unknown_variant(tiny_world, tmp_path):
    args = ["eval", "ranking", "--dataset", str(tiny_world), "--variants", "gru", "--out", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and "unknown variants ['gru']" in result.output
