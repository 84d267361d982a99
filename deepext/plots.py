"""Line charts as standalone SVG, for what the CLI draws (`deepext jobs compare --plot`): no plotting
library is a dependency of the platform, and an SVG opens in any browser."""

from __future__ import annotations

from html import escape

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
WIDTH, HEIGHT, MARGIN = 420, 260, 44


def _ticks(low: float, high: float) -> list[float]:
    return [low + (high - low) * i / 4 for i in range(5)]


def line_panel(title: str, curves: dict[str, list[list[float]]], x: float, y: float) -> str:
    """One chart at (x, y): each curve's `[[step, value], ...]` as a polyline, with axes and a legend."""
    points = [p for curve in curves.values() for p in curve]
    parts = [
        f'<g transform="translate({x},{y})">',
        f'<text x="{WIDTH / 2}" y="16" text-anchor="middle">{escape(title)}</text>',
    ]
    if not points:
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" fill="#888">no data</text></g>')
        return "".join(parts)
    x_low, x_high = min(p[0] for p in points), max(p[0] for p in points)
    y_low, y_high = min(p[1] for p in points), max(p[1] for p in points)
    x_span, y_span = (x_high - x_low) or 1.0, (y_high - y_low) or 1.0
    plot_w, plot_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN

    def at(step: float, value: float) -> str:
        return (
            f"{MARGIN + (step - x_low) / x_span * plot_w:.1f},{MARGIN + plot_h - (value - y_low) / y_span * plot_h:.1f}"
        )

    parts.append(f'<rect x="{MARGIN}" y="{MARGIN}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#bbb"/>')
    for value in _ticks(y_low, y_low + y_span):
        ty = MARGIN + plot_h - (value - y_low) / y_span * plot_h
        parts.append(f'<text x="{MARGIN - 4}" y="{ty + 4:.1f}" text-anchor="end" font-size="10">{value:.3g}</text>')
    for step in _ticks(x_low, x_low + x_span):
        tx = MARGIN + (step - x_low) / x_span * plot_w
        parts.append(
            f'<text x="{tx:.1f}" y="{MARGIN + plot_h + 14}" text-anchor="middle" font-size="10">{step:.3g}</text>'
        )
    for index, (name, curve) in enumerate(curves.items()):
        color = COLORS[index % len(COLORS)]
        line = " ".join(at(step, value) for step, value in curve)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="1.6"/>')
        ly = MARGIN + 12 + 13 * index
        parts.append(f'<text x="{MARGIN + 6}" y="{ly}" font-size="11" fill="{color}">{escape(name)}</text>')
    parts.append("</g>")
    return "".join(parts)


def svg_panels(panels: dict[str, dict[str, list[list[float]]]]) -> str:
    """Charts side by side, one per panel name, in one SVG document."""
    body = "".join(line_panel(title, curves, i * WIDTH, 0) for i, (title, curves) in enumerate(panels.items()))
    width = max(1, len(panels)) * WIDTH
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{HEIGHT}" '
        f'font-family="sans-serif" font-size="12">{body}</svg>\n'
    )
