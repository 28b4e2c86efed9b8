"""Inline SVG charts drawn on the server from plain numbers: line charts, sparklines, bars.

Each function returns an ``<svg>`` element as a string, escaped, with a ``<title>`` per point
or bar (the browser shows it on hover) and an ``aria-label``; no JavaScript, no fonts to load.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

Point = tuple[float, float]
# A colour-blind-safe palette (Okabe & Ito, 2008), one per series.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00")


def fmt(value: float) -> str:
    """A number short enough for an axis label: 3 significant digits, thousands grouped."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def line_chart(
    series: Mapping[str, Sequence[Point]],
    *,
    title: str,
    x_label: str,
    width: int = 560,
    height: int = 220,
) -> str:
    """Lines through each series' ``(x, y)`` points on shared axes, with a legend."""
    points = [p for values in series.values() for p in values if _finite(p)]
    if not points:
        return _empty(title, width, height)
    left, right, top, bottom = 56, 12, 24, 34
    x0, x1 = _span([x for x, _ in points])
    y0, y1 = _span([y for _, y in points])

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)

    parts = [_axes(left, right, top, bottom, width, height)]
    parts.append(_text(left - 6, sy(y1) + 4, fmt(y1), anchor="end"))
    parts.append(_text(left - 6, sy(y0) + 4, fmt(y0), anchor="end"))
    parts.append(_text(left, height - 18, fmt(x0), anchor="start"))
    parts.append(_text(width - right, height - 18, fmt(x1), anchor="end"))
    parts.append(_text((left + width - right) / 2, height - 4, x_label, anchor="middle"))
    for index, (name, values) in enumerate(series.items()):
        colour = PALETTE[index % len(PALETTE)]
        kept = [p for p in values if _finite(p)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in kept)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        for x, y in kept:
            parts.append(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}">'
                f"<title>{escape(name)}: {fmt(y)} at {escape(x_label)} {fmt(x)}</title></circle>"
            )
        parts.append(
            f'<rect x="{left + 8 + index * 130}" y="6" width="10" height="10" fill="{colour}"/>'
        )
        parts.append(_text(left + 22 + index * 130, 15, name, anchor="start"))
    return _svg(title, width, height, parts)


def sparkline(values: Sequence[float], *, title: str, width: int = 120, height: int = 28) -> str:
    """A small trend line of ``values`` in order, no axes."""
    kept = [v for v in values if math.isfinite(v)]
    if len(kept) < 2:
        return _empty(title, width, height)
    low, high = _span(kept)
    step = (width - 4) / (len(kept) - 1)
    path = " ".join(
        f"{2 + i * step:.1f},{height - 2 - (v - low) / (high - low) * (height - 4):.1f}"
        for i, v in enumerate(kept)
    )
    line = f'<polyline fill="none" stroke="{PALETTE[0]}" stroke-width="1.5" points="{path}"/>'
    return _svg(title, width, height, [line])


def bar_chart(
    counts: Mapping[str, float], *, title: str, width: int = 560, bar_height: int = 18
) -> str:
    """Horizontal bars, one per label, longest first is the caller's order."""
    if not counts:
        return _empty(title, width, 40)
    label_width, gap = 180, 4
    height = len(counts) * (bar_height + gap) + gap
    top = max(counts.values()) or 1.0
    parts = []
    for index, (label, value) in enumerate(counts.items()):
        y = gap + index * (bar_height + gap)
        length = max(1.0, value / top * (width - label_width - 70))
        parts.append(_text(label_width - 6, y + bar_height - 5, label, anchor="end"))
        parts.append(
            f'<rect x="{label_width}" y="{y}" width="{length:.1f}" height="{bar_height}" '
            f'fill="{PALETTE[index % len(PALETTE)]}"><title>{escape(label)}: {fmt(value)}'
            "</title></rect>"
        )
        parts.append(
            _text(label_width + length + 6, y + bar_height - 5, fmt(value), anchor="start")
        )
    return _svg(title, width, height, parts)


def histogram(
    values: Sequence[float], *, title: str, unit: str, bins: int = 12, width: int = 560
) -> str:
    """Counts of ``values`` in ``bins`` equal-width bins, drawn as columns."""
    kept = [v for v in values if math.isfinite(v)]
    if not kept:
        return _empty(title, width, 40)
    low, high = min(kept), max(kept)
    if low >= 0:  # durations, sizes: bins from zero, never a negative range
        low = 0.0
    if high == low:
        high = low + 1.0
    size = (high - low) / bins
    counts = [0] * bins
    for value in kept:
        counts[min(bins - 1, int((value - low) / size))] += 1
    return columns(
        {
            f"{fmt(low + i * size)}–{fmt(low + (i + 1) * size)} {unit}": c
            for i, c in enumerate(counts)
        },
        title=title,
        width=width,
    )


def columns(counts: Mapping[str, float], *, title: str, width: int = 560, height: int = 160) -> str:
    """Vertical columns in the mapping's order, labelled under the first and the last."""
    if not counts:
        return _empty(title, width, 40)
    left, bottom, top = 8, 20, 8
    slot = (width - 2 * left) / len(counts)
    peak = max(counts.values()) or 1.0
    parts = []
    labels = list(counts)
    for index, (label, value) in enumerate(counts.items()):
        tall = value / peak * (height - top - bottom)
        x = left + index * slot
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{height - bottom - tall:.1f}" '
            f'width="{max(1.0, slot - 2):.1f}" '
            f'height="{tall:.1f}" fill="{PALETTE[0]}"><title>{escape(label)}: {fmt(value)}</title>'
            "</rect>"
        )
    parts.append(_text(left, height - 5, labels[0], anchor="start"))
    if len(labels) > 1:
        parts.append(_text(width - left, height - 5, labels[-1], anchor="end"))
    return _svg(title, width, height, parts)


def _span(values: Sequence[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high == low:  # a flat series still gets a visible range
        pad = abs(low) * 0.1 or 1.0
        return low - pad, high + pad
    return low, high


def _finite(point: Point) -> bool:
    return math.isfinite(point[0]) and math.isfinite(point[1])


def _axes(left: int, right: int, top: int, bottom: int, width: int, height: int) -> str:
    return (
        f'<path d="M{left},{top} V{height - bottom} H{width - right}" stroke="#888" fill="none"/>'
    )


def _text(x: float, y: float, text: str, *, anchor: str) -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{escape(text)}</text>'


def _svg(title: str, width: int, height: int, parts: Sequence[str]) -> str:
    body = "".join(parts)
    return (
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>{body}</svg>"
    )


def _empty(title: str, width: int, height: int) -> str:
    note = _text(width / 2, height / 2 + 4, "no data yet", anchor="middle")
    return _svg(title, width, height, [note])
