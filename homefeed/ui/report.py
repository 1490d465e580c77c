"""The latest experiment report (`homefeed experiment` writes `<experiments>/<name>/run/report.md`), as an HTML page.

Markdown is rendered by markdown-it-py (already installed with rich) with tables on and raw HTML off, so a report
cannot inject markup into the page. The effects' forest plot is drawn from report.json beside it, when there is one
(homefeed/experiment/plot.py: numbers in, escaped labels), not read from a file of markup.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from markdown_it import MarkdownIt

REPORT_GLOB = "*/run/report.md"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
code { background: #f3f3f3; padding: 0 0.2rem; }
"""


def latest_report(experiments: Path) -> Path | None:
    """The most recently written `*/run/report.md` under `experiments`, or None when there is none (or no folder)."""
    found = sorted(Path(experiments).glob(REPORT_GLOB), key=lambda p: (p.stat().st_mtime, str(p)))
    return found[-1] if found else None


def report_page(path: Path) -> str:
    """The report at `path` as a standalone HTML page titled with its experiment's folder name."""
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(path.read_text(encoding="utf-8"))
    data = path.with_name("report.json")
    if data.exists():
        from homefeed.experiment.plot import effects_svg

        body = f"<figure>{effects_svg(json.loads(data.read_text()))}</figure>" + body
    title = html.escape(path.parent.parent.name)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>experiment {title}</title>"
        f"<style>{_STYLE}</style></head><body><p><a href='/'>&larr; homefeed</a> · {html.escape(str(path))}</p>"
        f"{body}</body></html>"
    )
