"""What the TUI knows of the engine's state, in one typed place: the app sets it from the jobs' messages
(workbench/app_results.py) and the panes and the status bar read it. Nothing here is computed; every field
is what the last message said."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.pruning.levels import PlanLevels


@dataclass
class TuiState:
    levels: PlanLevels = field(default_factory=PlanLevels)
    """The sliders' plan: overall sparsity, per block and per part, and the allocation that made it."""
    sparsity: float = 0.0
    """The achieved sparsity of the plan the model is in (PlanApplied)."""
    undo_depth: tuple[int, int] = (0, 0)
    """Plans that undo and redo can step to."""
    loaded_spec: dict | None = None
    """What the last load loaded (ModelLoaded.spec)."""
    index: list[dict] = field(default_factory=list)
    """The model's prunable layers: name, block, kind, size."""
    model_info: dict | None = None
    """Architecture, device, dtype of the loaded model; None until the screen shows it."""
    model_sizes: dict = field(default_factory=dict)
    """Dense and pruned sizes of the model (bytes, weights)."""
    model_line: str = "loading…"
    """The status bar's model part."""
    last_metrics: str = ""
    """The status bar's perplexity part ("dense → pruned")."""
    metrics_at: float = 0.0
    """The sparsity the shown metrics were measured at (the status bar says so when the plan moved on)."""
    score_when_loaded: bool = False
    """ctrl+r was pressed while the model loaded: score once it is ready."""
    gen_run: int = 0
    """The number of the latest generation request; older runs' text is dropped."""
    pruned_at: float = 0.0
    """When the last plan was shown (perf_counter); bench/tui.py reads key press -> readout latency."""
    last_apply_ms: float = 0.0
    """How long the engine took to apply the last plan."""
