"""The report's effects as a forest plot in SVG: one row per segment group and metric, the effect's point and its
95% interval against a zero line. Plain SVG text, no plotting library: the homefeed page draws it from report.json,
and `homefeed experiment` writes it beside the report (effects.svg).

Colour says what the interval shows: green where it excludes zero in the good direction (hides: down), red in the
bad one, grey where it includes zero.

Example:
    svg = effects_svg(json.loads(Path("run/report.json").read_text()))
"""

from __future__ import annotations

import math
from html import escape

PLOTTED = ("repin_rate", "hide_rate", "click_rate", "diversity")
LOWER_IS_BETTER = {"hide_rate", "hides"}
WIDTH, LABEL_W, ROW_H, TOP = 640, 230, 20, 28
COLOURS = {"good": "#1a7f37", "bad": "#cf222e", "unclear": "#6e7781"}


def _verdict(metric: str, lo: float, hi: float) -> str:
    if lo <= 0 <= hi:
        return "unclear"
    up = lo > 0
    return "good" if up != (metric in LOWER_IS_BETTER) else "bad"


def _tick_step(span: float) -> float:
    """The smallest round step (1, 2 or 5 times a power of ten) that puts at most ten ticks across `span`."""
    steps = sorted(m * 10.0**e for e in range(-3, 4) for m in (1, 2, 5))
    return next((step for step in steps if span / step <= 10), steps[-1])


def effects_svg(report: dict, metrics: tuple[str, ...] = PLOTTED) -> str:
    """Every treatment arm's effect on `metrics`, per segment group; rows without an interval are left out."""
    rows = []
    for arm in report["arms"][1:]:
        for group, seg in report["segments"].items():
            for metric in metrics:
                effect = seg["effects"][metric][arm]
                lo, hi = effect["ci"]
                if effect["relative"] is None or lo is None:
                    continue
                rows.append((f"{arm} · {group} · {metric}", metric, effect["relative"], lo, hi))
    lows = [r[3] for r in rows] + [0.0]
    highs = [r[4] for r in rows] + [0.0]
    span_lo, span_hi = min(lows), max(highs)
    pad = 0.05 * ((span_hi - span_lo) or 1.0)
    span_lo, span_hi = span_lo - pad, span_hi + pad

    def x(v: float) -> float:
        return LABEL_W + (v - span_lo) / (span_hi - span_lo) * (WIDTH - LABEL_W - 10)

    height = TOP + ROW_H * len(rows) + 24  # the rows, then the axis' ticks
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" '
        'font-size="11" role="img" aria-label="effects against the control with 95% intervals">',
        f'<text x="{LABEL_W}" y="14">effect against {escape(report["control"])} (relative), 95% interval</text>',
        f'<line x1="{x(0):.1f}" y1="{TOP - 8}" x2="{x(0):.1f}" y2="{height - 6}" stroke="#999" stroke-dasharray="3,3"/>',
    ]
    for i, (label, metric, point, lo, hi) in enumerate(rows):
        y = TOP + ROW_H * i + ROW_H / 2
        colour = COLOURS[_verdict(metric, lo, hi)]
        parts += [
            f'<text x="4" y="{y + 4:.1f}">{escape(label)}</text>',
            f'<line x1="{x(lo):.1f}" y1="{y:.1f}" x2="{x(hi):.1f}" y2="{y:.1f}" stroke="{colour}" stroke-width="2"/>',
            f'<circle cx="{x(point):.1f}" cy="{y:.1f}" r="4" fill="{colour}"><title>{escape(label)}: '
            f"{point:+.1%} [{lo:+.1%}, {hi:+.1%}]</title></circle>",
        ]
    step = _tick_step(span_hi - span_lo)
    for k in range(math.ceil(span_lo / step), math.floor(span_hi / step) + 1):
        label = f"{k * step:+.0%}" if k else "0%"
        parts.append(f'<text x="{x(k * step):.1f}" y="{height - 6}" text-anchor="middle" fill="#555">{label}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
