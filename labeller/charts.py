"""Small inline SVG charts rendered on the server (no JavaScript chart library).

Each function returns ``markupsafe.Markup`` ready to drop into a template; every text it writes is
escaped. Colours come from CSS classes in ``static/app.css`` (``.chart-*``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

#: CSS classes of the series of a line chart, in order.
SERIES_CLASSES = ("s0", "s1", "s2", "s3", "s4", "s5")


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.0f}"
    return f"{value:.3g}"


def histogram_svg(
    counts: Sequence[int], threshold: float | None = None, *, width: int = 360, height: int = 120,
    label: str = "",
) -> Markup:
    """Bars of ``counts`` over equal score bins of [0, 1], on a log scale, threshold marked.

    Bars of bins at or above the threshold get the class ``mine``; each bar has a tooltip.
    """
    bins = max(len(counts), 1)
    pad_l, pad_r, pad_t, pad_b = 6, 6, 8, 18
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    top = math.log10(max(max(counts, default=0), 1) + 1)
    bar_w = plot_w / bins
    parts = [f'<svg class="chart histogram" viewBox="0 0 {width} {height}" role="img"'
             f' aria-label="{escape(label or "score histogram")}">']
    for i, count in enumerate(counts):
        low, high = i / bins, (i + 1) / bins
        h = 0.0 if count <= 0 else max(plot_h * math.log10(count + 1) / top, 1.5)
        x = pad_l + i * bar_w
        cls = "bar mine" if threshold is not None and low >= threshold - 1e-9 else "bar"
        parts.append(
            f'<rect class="{cls}" x="{x + 0.5:.1f}" y="{pad_t + plot_h - h:.1f}"'
            f' width="{max(bar_w - 1, 0.5):.1f}" height="{h:.1f}">'
            f"<title>score {low:.2f}–{high:.2f}: {count:,} cells</title></rect>")
    base = pad_t + plot_h
    parts.append(f'<line class="axis" x1="{pad_l}" y1="{base}" x2="{width - pad_r}" y2="{base}"/>')
    if threshold is not None:
        tx = pad_l + plot_w * min(max(threshold, 0.0), 1.0)
        parts.append(f'<line class="threshold" x1="{tx:.1f}" y1="{pad_t - 4}" x2="{tx:.1f}"'
                     f' y2="{base}"><title>threshold {threshold:.2f}</title></line>')
        parts.append(f'<text class="tick" x="{tx:.1f}" y="{height - 4}" text-anchor="middle">'
                     f"{threshold:.2f}</text>")
    parts.append(f'<text class="tick" x="{pad_l}" y="{height - 4}">0</text>')
    parts.append(f'<text class="tick" x="{width - pad_r}" y="{height - 4}" text-anchor="end">'
                 "1</text>")
    parts.append("</svg>")
    return Markup("".join(parts))


def line_chart_svg(
    series: Mapping[str, Sequence[tuple[float, float]]], *, width: int = 360, height: int = 150,
    x_label: str = "", y_label: str = "", integer_x: bool = False,
) -> Markup:
    """Lines (one per named series of (x, y) points) with min/max ticks and a legend.

    A series of a single point is drawn as a dot. Empty input draws an empty frame.
    """
    points = [p for values in series.values() for p in values]
    pad_l, pad_r, pad_t, pad_b = 44, 10, 22, 28
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    parts = [f'<svg class="chart lines" viewBox="0 0 {width} {height}" role="img"'
             f' aria-label="{escape(y_label)} by {escape(x_label)}">']
    base = pad_t + plot_h
    parts.append(f'<line class="axis" x1="{pad_l}" y1="{base}" x2="{width - pad_r}" y2="{base}"/>')
    parts.append(f'<line class="axis" x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{base}"/>')
    if points:
        xs = [float(x) for x, _ in points]
        ys = [float(y) for _, y in points]
        x0, x1 = min(xs), max(xs)
        y0, y1 = min(0.0, min(ys)), max(ys)
        if x1 == x0:
            x0, x1 = x0 - 1, x1 + 1
        if y1 == y0:
            y1 = y0 + 1

        def sx(x: float) -> float:
            return pad_l + plot_w * (x - x0) / (x1 - x0)

        def sy(y: float) -> float:
            return pad_t + plot_h * (1 - (y - y0) / (y1 - y0))

        for index, (name, values) in enumerate(series.items()):
            cls = SERIES_CLASSES[index % len(SERIES_CLASSES)]
            coords = " ".join(f"{sx(float(x)):.1f},{sy(float(y)):.1f}" for x, y in values)
            if len(values) > 1:
                parts.append(f'<polyline class="line {cls}" points="{coords}">'
                             f"<title>{escape(name)}</title></polyline>")
            for x, y in values if len(values) <= 30 else values[-1:]:
                parts.append(f'<circle class="dot {cls}" cx="{sx(float(x)):.1f}"'
                             f' cy="{sy(float(y)):.1f}" r="2.5"><title>{escape(name)}: '
                             f"{_fmt(float(y))} at {_fmt(float(x))}</title></circle>")
            lx = pad_l + 4 + index * 92
            parts.append(f'<rect class="swatch {cls}" x="{lx}" y="5" width="10" height="10"/>'
                         f'<text class="legend" x="{lx + 14}" y="14">{escape(name)}</text>')
        parts.append(f'<text class="tick" x="{pad_l - 4}" y="{pad_t + 4}" text-anchor="end">'
                     f"{_fmt(y1)}</text>")
        parts.append(f'<text class="tick" x="{pad_l - 4}" y="{base}" text-anchor="end">'
                     f"{_fmt(y0)}</text>")
        fx = (lambda v: f"{int(round(v))}") if integer_x else _fmt
        parts.append(f'<text class="tick" x="{pad_l}" y="{base + 13}">{fx(x0)}</text>')
        parts.append(f'<text class="tick" x="{width - pad_r}" y="{base + 13}"'
                     f' text-anchor="end">{fx(x1)}</text>')
    else:
        parts.append(f'<text class="legend" x="{pad_l + 8}" y="{pad_t + plot_h / 2}">no data yet'
                     "</text>")
    if x_label:
        parts.append(f'<text class="axis-label" x="{pad_l + plot_w / 2}" y="{height - 3}"'
                     f' text-anchor="middle">{escape(x_label)}</text>')
    if y_label:
        parts.append(f'<text class="axis-label" x="12" y="{pad_t + plot_h / 2}"'
                     f' text-anchor="middle" transform="rotate(-90 12 {pad_t + plot_h / 2})">'
                     f"{escape(y_label)}</text>")
    parts.append("</svg>")
    return Markup("".join(parts))
