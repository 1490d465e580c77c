"""Writes docs/results.md from bench/results/*.md, so the tables are never typed by hand."""

from __future__ import annotations

from pathlib import Path

from bench.harness import RESULTS

PAGE = Path(__file__).resolve().parent.parent / "docs" / "results.md"
HEADER = """# Results

Generated from `bench/results/*.json` by `make bench` (bench/results_page.py); every figure below was measured
on this project's 2-core, 24 GiB build machine unless it names another.
"""


def render() -> str:
    parts = []
    for md in sorted(RESULTS.glob("*.md")):
        json_name = md.with_suffix(".json").name
        # the tables name their figures from the repository root; the page lives in docs/
        text = md.read_text().rstrip().replace("](bench/", "](../bench/")
        parts.append(text + f"\n\n<sub>from `bench/results/{json_name}`</sub>\n")
    return "\n".join(parts) if parts else "_No results yet: run `make bench`._\n"


def write_page(page: Path = PAGE) -> None:
    page.write_text(f"{HEADER}\n{render()}")


if __name__ == "__main__":
    write_page()
