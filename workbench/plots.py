"""PNG figures the CLI writes: circuit curves with the circuit's map (matplotlib, imported when drawing)."""

from __future__ import annotations

import statistics
from pathlib import Path

from core.pruning.registry import granularity as unit_granularity
from core.results import CircuitResult
from screens.heat import MAP_CELLS


def _curves(ax, results: list[CircuitResult], threshold: float) -> None:
    by_scorer: dict[str, list[CircuitResult]] = {}
    for r in results:
        by_scorer.setdefault(r.scorer, []).append(r)
    for scorer, runs in by_scorer.items():
        kept = [p.kept for p in runs[0].curve]
        ys = [[run.curve[i].logit_diff for run in runs] for i in range(len(kept))]
        mean = [statistics.mean(y) for y in ys]
        line, = ax.plot(kept, mean, marker="o", markersize=3, label=f"{scorer} (circuit {_kept(runs)})")
        if len(runs) > 1:
            ax.fill_between(kept, [min(y) for y in ys], [max(y) for y in ys], alpha=0.15, color=line.get_color())
    ax.axhline(threshold, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of components kept")
    ax.set_ylabel("task logit difference (dense 1, all pruned 0)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _kept(runs: list[CircuitResult]) -> str:
    values = [r.circuit_kept for r in runs if r.circuit_kept is not None]
    if not values:
        return "-"
    m = statistics.mean(values)
    return f"{m:.3g}" + (f" ± {(max(values) - min(values)) / 2:.2g}" if len(values) > 1 else "")


def _map(ax, result: CircuitResult) -> None:
    blocks = result.map.get("blocks", {})
    granularity = result.granularity
    if not blocks:
        ax.set_axis_off()
        return
    keys = sorted(blocks, key=int)
    noun = f"{unit_granularity(granularity).component}s"
    if all(isinstance(blocks[b], list) and len(blocks[b]) <= MAP_CELLS for b in keys):
        grid = [[1.0 if kept else 0.0 for kept in blocks[b]] for b in keys]
        ax.imshow(grid, aspect="auto", cmap="Greens", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xlabel(noun[:-1])
        ax.set_ylabel("block")
        ax.set_title(f"kept {noun} ({result.scorer})", fontsize=9)
    else:
        values = [sum(blocks[b]) if isinstance(blocks[b], list) else blocks[b] for b in keys]
        ax.barh([int(b) for b in keys], values, color="tab:green")
        ax.invert_yaxis()
        ax.set_ylabel("block")
        ax.set_xlabel(f"kept {noun}" if isinstance(blocks[keys[0]], list) else "kept share of weights")
        ax.set_title(f"the circuit per block ({result.scorer})", fontsize=9)


def circuit_png(results: list[CircuitResult], path: Path, threshold: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    first = results[0]
    _curves(left, results, threshold)
    left.set_title(f"{first.task}: {first.granularity} circuits ({first.items} held-out items)", fontsize=10)
    _map(right, first)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def correction_png(record: dict, path: Path) -> None:
    """The behaviour and the perplexity cost at each step of a correction sweep; the chosen step marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from core.applications.correction import measured_on

    steps = record["steps"]
    prompts_on, text_on = measured_on(record)
    xs = [s["amount"] for s in steps]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    from core.evaluation.registry import BEHAVIOURS

    b = BEHAVIOURS[record["behaviour"]]
    for key, label in zip(b.measures, b.labels):
        if key in steps[0]["behaviour"]:
            ax.plot(xs, [s["behaviour"][key] for s in steps], marker="o", label=label)
    ax.set_ylabel(f"on {prompts_on} ({'higher' if b.higher_is_better else 'lower'} is better)")
    cost = ax.twinx()
    cost.plot(xs, [100 * s["cost"] for s in steps], color="grey", linestyle="--", marker=".", label="perplexity cost")
    cost.axhline(100 * record["bound"], color="grey", linestyle=":")
    cost.set_ylabel(f"perplexity cost on {text_on} (%)")
    if record["chosen"] is not None:
        ax.axvline(record["chosen"], color="tab:green", alpha=0.5, label="chosen")
    ax.set_xscale("symlog", linthresh=min(x for x in xs if x > 0) if any(x > 0 for x in xs) else 1)
    ax.set_xlabel(f"{record['granularity']} pruned ({'count' if unit_granularity(record['granularity']).unit else 'share of weights'})")
    ax.set_title(f"{record['scorer']}: {record['reference']} minus {record['contrastive']}", fontsize=10)
    lines = ax.get_legend_handles_labels()
    extra = cost.get_legend_handles_labels()
    ax.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
