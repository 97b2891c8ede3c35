"""The one table layout every benchmark prints (what, ours, the baseline, their ratio),
and the one way they read a list of counts from the command line."""

from __future__ import annotations

HEADER = ("what", "ours", "baseline (same run)", "ratio")


def print_ratio_table(rows: list[tuple[str, str, str, str]]) -> None:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    for row in [HEADER, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))


def parse_counts(parser, text: str, option: str) -> tuple[int, ...]:
    """``"1,2,3"`` for ``option`` as counts 1-16; any other text is the parser's error."""
    try:
        counts = tuple(int(x) for x in text.split(","))
    except ValueError:
        parser.error(f"{option} must be numbers separated by commas, got {text!r}")
    if not all(1 <= k <= 16 for k in counts):
        parser.error(f"{option} counts must be 1-16")
    return counts
