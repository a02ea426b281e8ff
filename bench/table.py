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


def write_section(md: str, results, name: str) -> None:
    """Put a report between `<!-- name:start -->` and `<!-- name:end -->` in RESULTS.md (replaced if there,
    appended if not); the rest of the file is kept, and the file is replaced atomically."""
    from pathlib import Path

    results = Path(results)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + start + "\n" + md + "\n" + end + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + start + "\n" + md + "\n" + end + "\n"
    tmp = results.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(results)
