"""The table every benchmark prints: measure, value, target, met."""

from __future__ import annotations


def print_table(title: str, rows: list[tuple[str, str, str, bool | None]]) -> None:
    """`met` None: a reported number with no target (the column stays empty)."""
    widths = [max(len(r[i]) for r in rows + [("measure", "value", "target", None)]) for i in range(3)]
    print(f"\n{title}\n")
    print("  ".join(h.ljust(w) for h, w in zip(("measure", "value", "target"), widths)) + "  met")
    print("  ".join("-" * w for w in widths) + "  ---")
    for name, value, target, met in rows:
        cells = "  ".join(c.ljust(w) for c, w in zip((name, value, target), widths))
        print(f"{cells}  {'' if met is None else 'yes' if met else 'NO'}")
