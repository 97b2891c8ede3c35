"""The one table layout every benchmark prints: what, ours, the baseline, their ratio."""

from __future__ import annotations

HEADER = ("what", "ours", "baseline (same run)", "ratio")


def print_ratio_table(rows: list[tuple[str, str, str, str]]) -> None:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    for row in [HEADER, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
