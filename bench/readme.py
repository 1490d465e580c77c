"""Writes the README's results section from bench/results/*.md, so the tables are never typed by hand.

The section lies between the markers below; everything else in the README is left as it is.
"""

from __future__ import annotations

from pathlib import Path

from bench.harness import RESULTS

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def render() -> str:
    parts = []
    for md in sorted(RESULTS.glob("*.md")):
        json_name = md.with_suffix(".json").name
        parts.append(md.read_text().rstrip() + f"\n\n<sub>from `bench/results/{json_name}`</sub>\n")
    return "\n".join(parts) if parts else "_No results yet: run `make bench`._\n"


def update_readme(readme: Path = README) -> None:
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme} lacks the {START} / {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{render()}{END}{tail}")


if __name__ == "__main__":
    update_readme()
