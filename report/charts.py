"""Charts as inline SVG strings: horizontal bars, a histogram, a scatter map.

Hand-written SVG rather than matplotlib images: a few kB each, crisp at any zoom, text a browser
can search, and elements a test can find in the DOM (every mark carries data-label/data-value and a
<title> tooltip). Nothing here reads files; callers pass the numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import numpy as np

# matplotlib's tab20, dark shades first: the first ten are tab10's (trainer/plots.py), so a genre has
# the same colour in the report and in the model's plots; twenty before a colour repeats.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
           "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")
_FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def bars(items: Sequence[tuple[str, float]], *, chart_id: str, unit: str = "tracks", width: int = 500) -> str:
    """One horizontal bar per (label, value), in the order given."""
    if not items:
        return f'<p class="empty" id="{chart_id}">nothing to show</p>'
    row, label_w, value_w = 20, min(180, 8 + 7 * max(len(label) for label, _ in items)), 70
    bar_w = width - label_w - value_w
    top = max(value for _, value in items) or 1
    parts = [f'<svg class="chart bars" id="{chart_id}" width="{width}" height="{row * len(items) + 4}" '
             f'viewBox="0 0 {width} {row * len(items) + 4}" role="img" {_FONT}>']
    for index, (label, value) in enumerate(items):
        y = index * row + 2
        length = max(1.0, bar_w * value / top) if value else 0.0
        text = f"{label}: {_number(value)} {unit}"
        parts.append(
            f'<g class="bar" data-label="{escape(label)}" data-value="{_number(value)}"><title>{escape(text)}</title>'
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end">{escape(_clip(label, 26))}</text>'
            f'<rect x="{label_w}" y="{y + 2}" width="{length:.1f}" height="{row - 6}" fill="{colour(0)}"/>'
            f'<text x="{label_w + length + 4:.1f}" y="{y + 13}" fill="#444">{_number(value)}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(counts: Sequence[int], edges: Sequence[float], *, chart_id: str, threshold: float | None = None,
              width: int = 560, height: int = 180) -> str:
    """Vertical bars over [edges[i], edges[i+1]); a dashed line at `threshold` (the review cut-off)."""
    left, bottom, top_pad = 40, 24, 8
    plot_w, plot_h = width - left - 16, height - bottom - top_pad  # room for the last tick label
    top = max(counts) if len(counts) and max(counts) else 1
    span = edges[-1] - edges[0]
    parts = [f'<svg class="chart histogram" id="{chart_id}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" {_FONT}>',
             f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{left + plot_w}" y2="{top_pad + plot_h}" stroke="#999"/>',
             f'<text x="{left - 4}" y="{top_pad + 10}" text-anchor="end" fill="#444">{_number(top)}</text>']
    for index, count in enumerate(counts):
        x0 = left + plot_w * (edges[index] - edges[0]) / span
        x1 = left + plot_w * (edges[index + 1] - edges[0]) / span
        h = plot_h * count / top
        text = f"{edges[index]:.2f} to {edges[index + 1]:.2f}: {count} tracks"
        parts.append(f'<rect class="bin" data-value="{count}" x="{x0 + 0.5:.1f}" y="{top_pad + plot_h - h:.1f}" '
                     f'width="{max(x1 - x0 - 1, 0.5):.1f}" height="{h:.1f}" fill="{colour(0)}">'
                     f'<title>{escape(text)}</title></rect>')
    for tick in np.linspace(edges[0], edges[-1], 6):
        x = left + plot_w * (tick - edges[0]) / span
        parts.append(f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle" fill="#444">{tick:.1f}</text>')
    if threshold is not None and edges[0] <= threshold <= edges[-1]:
        x = left + plot_w * (threshold - edges[0]) / span
        parts.append(f'<line class="threshold" x1="{x:.1f}" y1="{top_pad}" x2="{x:.1f}" y2="{top_pad + plot_h}" '
                     f'stroke="{colour(3)}" stroke-dasharray="4 3"><title>review below {threshold:.2f}</title></line>')
    parts.append("</svg>")
    return "".join(parts)


def scatter(points: np.ndarray, groups: Sequence[str], names: Sequence[str], *, chart_id: str,
            width: int = 560, height: int = 420) -> str:
    """Points [n, 2], each coloured by its group (legend on the right), its name as the tooltip."""
    if len(points) == 0:
        return f'<p class="empty" id="{chart_id}">no embeddings to map</p>'
    legend_w, pad = 150, 12
    plot_w, plot_h = width - legend_w - 2 * pad, height - 2 * pad
    low, high = points.min(axis=0), points.max(axis=0)
    scale = np.where(high > low, high - low, 1.0)
    xy = (points - low) / scale
    order = sorted(set(groups))
    index_of = {group: index for index, group in enumerate(order)}
    parts = [f'<svg class="chart scatter" id="{chart_id}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" {_FONT}>',
             f'<rect x="{pad}" y="{pad}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ddd"/>']
    for (x, y), group, name in zip(xy, groups, names, strict=True):
        parts.append(f'<circle class="point" data-label="{escape(group)}" cx="{pad + 4 + x * (plot_w - 8):.1f}" '
                     f'cy="{pad + 4 + (1 - y) * (plot_h - 8):.1f}" r="3" fill="{colour(index_of[group])}" '
                     f'fill-opacity="0.75"><title>{escape(name)} ({escape(group)})</title></circle>')
    for index, group in enumerate(order[:24]):
        y = pad + 8 + index * 16
        parts.append(f'<g class="legend"><circle cx="{width - legend_w + 8}" cy="{y}" r="5" fill="{colour(index)}"/>'
                     f'<text x="{width - legend_w + 18}" y="{y + 4}">{escape(_clip(group, 20))}</text></g>')
    if len(order) > 24:
        parts.append(f'<text x="{width - legend_w + 8}" y="{pad + 8 + 24 * 16 + 4}" fill="#444">'
                     f'and {len(order) - 24} more</text>')
    parts.append("</svg>")
    return "".join(parts)


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) and not value.is_integer() else f"{int(value)}"


def _clip(text: str, size: int) -> str:
    return text if len(text) <= size else text[:size - 1] + "…"
