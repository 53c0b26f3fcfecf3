"""Small inline-SVG charts for the HTML report: a step line over time, and evidence on a log scale
against its threshold. Plain strings, no plotting library, so a report is one self-contained file.

The ``svg`` elements carry no ``xmlns``: inside an HTML5 document the parser puts them in the SVG
namespace by itself, and the report then holds no URL at all.

>>> chart = step_chart({"weight": [(0.0, 0.0), (10.0, 5.0), (20.0, 50.0)]}, end=30.0, y_max=100.0)
>>> chart.startswith("<svg") and chart.count("<path") == 1
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from html import escape

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 120, 12, 32
# no red: red is the threshold's
COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f", "#bcbd22")

Series = Mapping[str, Sequence[tuple[float, float]]]


def _frame(y_ticks: Sequence[tuple[float, str]], x_end: float, y_of: Callable[[float], float], label: str) -> list[str]:
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(label)}" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}">',
        f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{HEIGHT - TOP - BOTTOM}" '
        'fill="none" stroke="#ccc"/>',
    ]
    for value, text in y_ticks:
        y = y_of(value)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{escape(text)}</text>')
    for index in range(5):
        seconds = x_end * index / 4
        x = LEFT + (WIDTH - LEFT - RIGHT) * index / 4
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" font-size="11">'
            f"{escape(duration(seconds))}</text>"
        )
    return parts


def _legend(names: Sequence[str]) -> list[str]:
    parts = []
    for index, name in enumerate(names):
        y = TOP + 14 + 16 * index
        colour = COLOURS[index % len(COLOURS)]
        parts.append(
            f'<line x1="{WIDTH - RIGHT + 8}" x2="{WIDTH - RIGHT + 22}" y1="{y - 4}" y2="{y - 4}" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
        parts.append(f'<text x="{WIDTH - RIGHT + 26}" y="{y}" font-size="11">{escape(name)}</text>')
    return parts


def _x(seconds: float, end: float) -> float:
    return LEFT + (WIDTH - LEFT - RIGHT) * (seconds / end if end > 0 else 0.0)


def step_chart(series: Series, *, end: float, y_max: float, unit: str = "%", label: str = "weight over time") -> str:
    """Each series holds ``(seconds, value)`` points, a value holding until the next point; the
    last one holds until ``end``."""
    height = HEIGHT - TOP - BOTTOM

    def y_of(value: float) -> float:
        return TOP + height * (1 - value / y_max if y_max > 0 else 1.0)

    ticks = [(y_max * i / 4, f"{y_max * i / 4:g}{unit}") for i in range(5)]
    parts = _frame(ticks, end, y_of, label)
    for index, points in enumerate(series.values()):
        if not points:
            continue
        path = [f"M{_x(points[0][0], end):.1f},{y_of(points[0][1]):.1f}"]
        for at, value in points[1:]:
            path.append(f"H{_x(at, end):.1f}V{y_of(value):.1f}")
        path.append(f"H{_x(end, end):.1f}")
        colour = COLOURS[index % len(COLOURS)]
        parts.append(f'<path d="{"".join(path)}" fill="none" stroke="{colour}" stroke-width="2"/>')
    parts += [*_legend(list(series)), "</svg>"]
    return "".join(parts)


def evidence_chart(series: Series, *, threshold: float, end: float, label: str = "evidence over time") -> str:
    """E-values on a log scale from 1/10 to beyond ``threshold`` (1/alpha), drawn as a dashed red
    line: a metric's evidence crossing it is what rolls a rollout back.

    >>> svg = evidence_chart({"error-rate": [(5.0, 2.0), (9.0, 30.0)]}, threshold=20.0, end=10.0)
    >>> 'stroke-dasharray' in svg and "1/alpha = 20" in svg
    True
    """
    values = [value for points in series.values() for _, value in points if value > 0]
    top = math.log10(max([threshold, *values]) * 3)
    bottom = min(-1.0, *(math.log10(value) for value in values)) if values else -1.0
    height = HEIGHT - TOP - BOTTOM

    def y_of(value: float) -> float:
        return TOP + height * (top - math.log10(max(value, 10**bottom))) / (top - bottom)

    ticks = [(10.0**power, f"{10.0**power:g}") for power in range(math.ceil(bottom), math.floor(top) + 1)]
    parts = _frame(ticks, end, y_of, label)
    y = y_of(threshold)
    parts.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d62728" stroke-dasharray="6 4"/>'
        f'<text x="{WIDTH - RIGHT - 4}" y="{y - 4:.1f}" text-anchor="end" font-size="11" fill="#d62728">'
        f"1/alpha = {threshold:.4g}</text>"
    )
    for index, points in enumerate(series.values()):
        colour = COLOURS[index % len(COLOURS)]
        if len(points) > 1:
            path = " ".join(f"{_x(at, end):.1f},{y_of(value):.1f}" for at, value in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for at, value in points:
            parts.append(
                f'<circle cx="{_x(at, end):.1f}" cy="{y_of(value):.1f}" r="3" fill="{colour}">'
                f"<title>{value:.3g}</title></circle>"
            )
    parts += [*_legend(list(series)), "</svg>"]
    return "".join(parts)


def duration(seconds: float) -> str:
    """
    >>> duration(42.0), duration(125.0), duration(7325.0)
    ('42s', '2m05s', '2h02m')
    """
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
