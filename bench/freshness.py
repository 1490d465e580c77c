"""Freshness (seed 003's engagement decay): a stale ranking model against one retrained twice a week, on the same
world without drift, with slow drift and with a sudden interest shift (`python -m bench.freshness [LABEL...]`, about
12 minutes a world on 2 cores; named labels are re-run, the others kept from the last results).

Every world is world:small with the intent scenario (so the realtime sequence matters, as in the paper); `+drift`
moves tastes 5% a day towards a second taste, `+shift` moves half the users onto 3 long-tail interests on day 17.
docs/monitoring.md cites the JSON.
"""

from __future__ import annotations

import json
import sys

from bench.harness import RESULTS, prepared_dataset, write_result
from components.evaluate.freshness import SUMMARY_HEAD, FreshnessOptions, markdown, run, summary_cells

WORLDS = {"no drift": "world:small+intent", "drift": "world:small+intent+drift", "shift": "world:small+intent+shift"}


def main(labels: list[str]) -> None:
    unknown = set(labels) - set(WORLDS)
    if unknown:
        raise SystemExit(f"unknown worlds {sorted(unknown)}; choose from {list(WORLDS)}")
    previous = RESULTS / "freshness.json"
    kept = json.loads(previous.read_text())["worlds"] if labels and previous.exists() else {}
    opts = FreshnessOptions()
    results = {}
    for label, source in WORLDS.items():
        if labels and label not in labels and label in kept:
            results[label] = kept[label]
            continue
        with prepared_dataset(source) as tmp:
            result = run(tmp / "dataset", tmp / "freshness", opts)
        result["dataset"] = source  # the temporary path is gone
        results[label] = result
    write_result("freshness", {"worlds": results, "command": "python -m bench.freshness"}, publish(results))


def publish(results: dict[str, dict]) -> str:
    """The markdown: one summary row per world and variant, then each world's days."""
    rows = [
        "| " + " | ".join([r["dataset"], kind, *summary_cells(s)]) + " |"
        for r in results.values()
        for kind, s in r["summary"].items()
    ]
    summary = f"""### Freshness: a stale ranking model against one retrained twice a week (summary)

Lift share = (HIT@3 repin - random) / (ground truth - random), 1 seed. Decay: the stale model's lift share in the first
and the last third of the {len(next(iter(results.values()))["days"])} days after its training window; recovery: both
arms over the days after the first retraining.

| world | sequence | {SUMMARY_HEAD} |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
    days = "\n".join(markdown(r) for r in results.values())
    return summary + "\n" + days + "\nReproduce: python -m bench.freshness (= homefeed eval freshness on each world).\n"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--markdown"]:  # rewrite the markdown from the last results, training nothing
        saved = json.loads((RESULTS / "freshness.json").read_text())
        (RESULTS / "freshness.md").write_text(publish(saved["worlds"]).rstrip() + "\n")
    else:
        main(sys.argv[1:])
