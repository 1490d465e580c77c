"""Freshness (seed 003's engagement decay): a stale ranking model against one retrained twice a week, on the same
world with and without the drift knob (`python -m bench.freshness`, about 20 minutes on 2 cores).

Both worlds are world:small with the intent scenario (so the realtime sequence matters, as in the paper); the second
adds `+drift` (tastes move 5% a day towards a second taste). The monitoring issue (F8) reads the JSON.
"""

from __future__ import annotations

from bench.harness import prepared_dataset, write_result
from components.evaluate.freshness import FreshnessOptions, markdown, run

WORLDS = {"no drift": "world:small+intent", "drift": "world:small+intent+drift"}


def main() -> None:
    opts = FreshnessOptions()
    results = {}
    for label, source in WORLDS.items():
        with prepared_dataset(source) as tmp:
            result = run(tmp / "dataset", tmp / "freshness", opts)
        result["dataset"] = source  # the temporary path is gone
        results[label] = result
    md = "\n".join(markdown(r) for r in results.values())
    md += "\nReproduce: python -m bench.freshness (= homefeed eval freshness on each world).\n"
    write_result("freshness", {"worlds": results, "command": "python -m bench.freshness"}, md)


if __name__ == "__main__":
    main()
