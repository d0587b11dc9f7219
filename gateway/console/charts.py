"""Charts for the dashboard, rendered here as SVG rather than in the browser.

Why server-side SVG and not a vendored charting library: the numbers come from the
store's queries in one place (``storage/reads.py``), the chart is text in the page's
DOM (each bar carries its value, a ``<title>`` for pointer users and the figure a
summary for screen readers), it needs no script and no inline style (the console's
Content-Security-Policy allows neither), and the gateway ships no JavaScript bundle.
Colours are presentation attributes, which CSP does not treat as inline style.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 34, 40
MAX_DAYS = 366
SERIES = (("conversations", "conversations", "#2563eb"), ("turns", "chat turns", "#0d9488"))


def _range(days: list[dict[str, Any]], first: str | None, last: str | None) -> list[str]:
    """Every day from ``first`` to ``last`` (the data's own when not given), at most MAX_DAYS."""
    known = sorted(d["day"] for d in days)
    start = date.fromisoformat(first) if first else (date.fromisoformat(known[0]) if known else None)
    end = date.fromisoformat(last) if last else (date.fromisoformat(known[-1]) if known else None)
    if start is None or end is None or end < start:
        return known
    count = min((end - start).days + 1, MAX_DAYS)
    end_shown = start + timedelta(days=count - 1)
    return [(end_shown - timedelta(days=i)).isoformat() for i in reversed(range(count))]


def _nice_max(value: int) -> int:
    for step in (1, 2, 5):
        for scale in (1, 10, 100, 1000, 10_000, 100_000, 1_000_000):
            if step * scale * 4 >= value:
                return step * scale * 4
    return value


def activity_chart(days: list[dict[str, Any]], first: str | None, last: str | None) -> str:
    """Grouped bars: conversations and chat turns per day."""
    by_day = {d["day"]: d for d in days}
    shown = _range(days, first, last)
    totals = {key: sum(int(by_day.get(day, {}).get(key, 0)) for day in shown) for key, _, _ in SERIES}
    summary = (
        f"{totals['conversations']} conversations and {totals['turns']} chat turns"
        + (f" from {shown[0]} to {shown[-1]}" if shown else "; no activity yet")
    )
    top = _nice_max(max([1, *(int(by_day.get(d, {}).get(k, 0)) for d in shown for k, _, _ in SERIES)]))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="activity-title activity-desc" class="chart" data-chart="activity">',
        '<title id="activity-title">Conversations and chat turns per day</title>',
        f'<desc id="activity-desc">{escape(summary)}</desc>',
    ]
    for i in range(5):  # grid lines and the y axis
        value = top * i // 4
        y = TOP + plot_h - plot_h * i / 4
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d4d4d8"/>')
        out.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#52525b">{value}</text>'
        )
    slot = plot_w / max(len(shown), 1)
    bar = max(min(slot * 0.8 / len(SERIES), 24), 1)
    label_every = max(1, round(len(shown) / 8))
    for index, day in enumerate(shown):
        x0 = LEFT + index * slot + (slot - bar * len(SERIES)) / 2
        for s, (key, name, colour) in enumerate(SERIES):
            value = int(by_day.get(day, {}).get(key, 0))
            h = plot_h * value / top
            out.append(
                f'<rect x="{x0 + s * bar:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{colour}" data-series="{key}" data-day="{day}" data-value="{value}">'
                f"<title>{day}: {value} {name}</title></rect>"
            )
        if index % label_every == 0:
            out.append(
                f'<text x="{LEFT + index * slot + slot / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
                f'font-size="11" fill="#52525b">{day[5:]}</text>'
            )
    for s, (_, name, colour) in enumerate(SERIES):  # the legend
        x = LEFT + s * 150
        out.append(f'<rect x="{x}" y="10" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{x + 18}" y="20" font-size="12" fill="#18181b">{name}</text>')
    out.append("</svg>")
    return "\n".join(out)
