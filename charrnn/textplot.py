"""Line charts drawn with characters, for loss curves in a terminal (no plotting dependency).

    4.10 │•
         │ •◆
    3.05 │   ••◆◆◆
         │        •••••◆◆◆◆◆
    2.00 │                  ••••••••◆◆◆◆◆◆
         └──────────────────────────────────
          20                             400

Each series is linearly interpolated between its points, one value per column, and drawn with
its own marker; later series are drawn over earlier ones. The caller colours the markers.
"""

from __future__ import annotations

import math

AXIS_Y, AXIS_CORNER, AXIS_X = "│", "└", "─"


def line_chart(
    series: dict[str, list[tuple[float, float]]],
    markers: dict[str, str],
    width: int = 60,
    height: int = 12,
) -> list[str]:
    """Lines of text drawing every series' (x, y) points against shared axes.

    Points of each series must be in increasing x; points that are not finite numbers are left
    out. Returns [] when there is nothing to draw.
    """
    series = {name: [(x, y) for x, y in values if math.isfinite(x) and math.isfinite(y)]
              for name, values in series.items()}  # fmt: skip
    points = [point for values in series.values() for point in values]
    if not points:
        return []
    x_low, x_high = min(x for x, _ in points), max(x for x, _ in points)
    y_low, y_high = min(y for _, y in points), max(y for _, y in points)

    def column(x: float) -> int:
        return round(_share(x, x_low, x_high) * (width - 1)) if x_high > x_low else 0

    middle = (height - 1) // 2  # a labelled row: a flat curve is drawn on it, by its label

    def row(y: float) -> int:  # row 0 is the top
        if y_high == y_low:
            return middle
        return round((1 - _share(y, y_low, y_high)) * (height - 1))

    grid = [[" "] * width for _ in range(height)]
    for name, values in series.items():
        marker = markers[name]
        for (x0, y0), (x1, y1) in zip(values, values[1:], strict=False):
            for col in range(column(x0), column(x1) + 1):
                # The x of this column, then the segment's y there.
                x = _between(x_low, x_high, col / max(width - 1, 1))
                share = _share(x, x0, x1) if x1 > x0 else 0.0
                grid[row(_between(y0, y1, min(max(share, 0.0), 1.0)))][col] = marker
        for x, y in values:  # the measured points themselves, also for a single point
            grid[row(y)][column(x)] = marker

    # y labels on the top, middle and bottom rows: the value each row stands for. A flat curve
    # has one value, the middle row's: the others stand for none, and "2.00" on all three
    # would not say which row the line is on.
    labelled_rows = {middle} if y_high == y_low else {0, middle, height - 1}
    labels = {r: _label(_between(y_high, y_low, r / max(height - 1, 1))) for r in labelled_rows}
    margin = max(len(label) for label in labels.values())
    lines = [
        f"{labels.get(r, ''):>{margin}} {AXIS_Y}{''.join(cells)}" for r, cells in enumerate(grid)
    ]
    lines.append(f"{'':>{margin}} {AXIS_CORNER}{AXIS_X * width}")
    left, right = f"{x_low:.10g}", f"{x_high:.10g}"
    gap = max(width - len(left) - len(right), 1)
    lines.append(f"{'':>{margin}}  {left}{' ' * gap}{right}" if x_high > x_low else
                 f"{'':>{margin}}  {left}")  # fmt: skip
    return lines


# Computed so that no step overflows, even between -1e308 and 1e308 (a damaged file's values).
def _share(value: float, low: float, high: float) -> float:
    """Where `value` stands between `low` and `high` (< high), from 0 to 1."""
    return (value / 2 - low / 2) / (high / 2 - low / 2)


def _between(low: float, high: float, share: float) -> float:
    return low * (1 - share) + high * share


def _label(value: float) -> str:
    return f"{value:.2f}" if abs(value) < 1e6 else f"{value:.3g}"
