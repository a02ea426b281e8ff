"""Sparsity pane: a global slider, one per decoder block and one per attention / MLP part, allocation, undo.

With an allocation other than uniform, the block and part sliders follow the global one:
the engine spreads the global level over the blocks (as `workbench prune --allocate`
does) and the sliders show the result. Moving a block or part slider makes the levels the
user's own (allocation uniform) from there on.
"""

from __future__ import annotations

import copy

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, Label, Select, Static

from core.catalog import catalog
from core.pruning.levels import HAND_SET, KINDS, PlanLevels
from core.results import PruneSummary
from core.settings import PruneConfig, default_of, help_of

ALLOCATIONS = ["auto", "uniform", "relevance", "owl"]
from screens.heat import heat_cell
from screens.messages import PlanRequested
from screens.model_pane import human_bytes
from screens.slider import Slider


class BlockRow(Horizontal):
    def __init__(self, block: int) -> None:
        super().__init__(classes="block-row", id=f"row-{block}")
        self.block = block

    def compose(self) -> ComposeResult:
        b = self.block
        yield Label(f"{b:>3}", classes="block-label")
        yield Static(" ", id=f"heat-{b}", classes="heat")
        yield Slider(id=f"block-{b}", tooltip=f"decoder block {b}: every prunable layer in it")
        yield Slider(id=f"attn-{b}", tooltip=f"block {b}: attention projections")
        yield Slider(id=f"mlp-{b}", tooltip=f"block {b}: MLP projections")


class SparsityPane(Vertical):
    HELP = ("one slider for all layers, one per decoder block and one per attention/MLP part; granularity; "
            "allocation (auto, uniform, by relevance, OWL: the blocks follow the global slider); achieved "
            "sparsity and honest size; ctrl+k reconstructs the kept weights.")

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.levels = PlanLevels()
        self.blocks: list[int] = []
        self.part_sizes: dict[tuple[int, str], int] = {}  # (block, attn|mlp) -> weights
        self._readout_lines = 0
        self._by_id: dict[str, Slider | Static] = {}  # one CSS query per widget per move cost ~0.4 s at 30 blocks

    def compose(self) -> ComposeResult:
        with Horizontal(classes="row"):
            yield Label("All layers", classes="field-label")
            yield Slider(id="global", tooltip="target sparsity of every layer without its own level")
        with Horizontal(classes="row"):
            yield Label("Granularity", classes="field-label")
            yield Select([(g, g) for g in catalog()["granularities"]], value=default_of(PruneConfig, "granularity"),
                         allow_blank=False, id="sp-granularity", compact=True)
            yield Label("allocation", classes="field-label short")
            yield Select([(a, a) for a in [*ALLOCATIONS, HAND_SET]], value=default_of(PruneConfig, "allocate"), allow_blank=False,
                         id="sp-allocation", compact=True, tooltip=help_of(PruneConfig, "allocate"))
            yield Label("spread", classes="field-label short")
            yield Input("", placeholder="auto", id="sp-spread", type="number", classes="num", compact=True,
                        tooltip=help_of(PruneConfig, "spread"))
            yield Label("count", classes="field-label short")
            yield Input("", placeholder="-", id="sp-count", type="integer", compact=True, tooltip=help_of(PruneConfig, "count"))
        yield Static("no scores yet: run attribution first (pane 3)", id="sp-readout")
        with Horizontal(id="sp-header"):
            yield Label("blk", classes="block-label")
            yield Label(" ", classes="heat")
            yield Label("block", classes="col-head")
            yield Label("attention", classes="col-head")
            yield Label("MLP", classes="col-head")
        yield VerticalScroll(id="sp-blocks")

    def set_blocks(self, blocks: list[int], part_sizes: dict[tuple[int, str], int] | None = None) -> None:
        self.part_sizes = part_sizes or {}
        if blocks == self.blocks:
            return
        self.blocks = blocks
        container = self.query_one("#sp-blocks", VerticalScroll)
        container.remove_children()
        self._by_id = {}
        container.mount_all([BlockRow(b) for b in blocks])
        self.call_after_refresh(self._show_current_levels)

    def _show_current_levels(self) -> None:
        if self.app.is_running and self.is_attached:  # not while the app closes: the rows may be going
            self.show_levels(self.levels)  # the levels current by then

    def show_levels(self, levels: PlanLevels) -> None:
        """Move every slider to `levels` without posting changes."""
        self.levels = copy.deepcopy(levels)
        self._show_allocation(levels.allocation)
        self.query_one("#global", Slider).set_value(levels.default)
        self.query_one("#sp-granularity", Select).value = levels.granularity
        for b in self.blocks:
            for kind, inherited, value in (("block", b not in levels.blocks, self._block_shown(levels, b)),
                                           ("attn", (b, "attn") not in levels.kinds, levels.level(b, "attn")),
                                           ("mlp", (b, "mlp") not in levels.kinds, levels.level(b, "mlp"))):
                s = self._widget(f"{kind}-{b}")
                if isinstance(s, Slider):
                    s.set_value(value)
                    s.inherited = inherited

    def _block_shown(self, levels: PlanLevels, b: int) -> float:
        """A block's column: its own level, or with part levels set, the share of its weights they prune."""
        if b in levels.blocks or not any((b, k) in levels.kinds for k in KINDS):
            return levels.block_level(b)
        sizes = {k: self.part_sizes.get((b, k), 1) for k in KINDS}
        return sum(levels.level(b, k) * n for k, n in sizes.items()) / sum(sizes.values())

    def sync_sliders(self) -> None:
        """Draw every slider at this pane's own levels (the newest move, not the last applied)."""
        self.show_levels(self.levels)

    def _widget(self, wid: str) -> Slider | Static | None:
        """A block row's slider or heat cell by id; None while the rows are still mounting."""
        w = self._by_id.get(wid)
        if w is None or not w.is_attached:
            self._by_id = {w.id: w for w in self.query("#sp-blocks Slider, #sp-blocks .heat") if w.id}
            w = self._by_id.get(wid)
        return w

    def show_heat(self, relevance: dict) -> None:
        top = max((r["all"] for r in relevance.values()), default=0.0)
        for b, r in relevance.items():
            w = self._widget(f"heat-{b}")
            if isinstance(w, Static):
                w.update(heat_cell(r["all"], top))

    def on_slider_changed(self, event: Slider.Changed) -> None:
        event.stop()
        sid = event.slider.id or ""
        if sid == "global":
            self.levels.set_default(event.value)
        else:
            kind, _, b = sid.partition("-")
            if kind == "block":
                self.levels.set_block(int(b), event.value)
            else:
                self.levels.set_kind(int(b), kind, event.value)
            self._show_allocation(HAND_SET)  # nothing follows the global slider any more
        # Straight to the app: bubbling through five containers let screen refreshes in
        # between. The other sliders follow once the weights are re-masked (sync_sliders):
        # redrawing ~90 of them meanwhile slowed the re-mask on a 2-core machine by half.
        self.app.post_message(PlanRequested(copy.deepcopy(self.levels), sid))

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "sp-granularity" and event.value != self.levels.granularity:
            event.stop()
            self.levels.granularity = str(event.value)
            self.post_message(PlanRequested(copy.deepcopy(self.levels), "granularity"))
        elif event.select.id == "sp-allocation" and event.value != self.levels.allocation:
            event.stop()
            if event.value == HAND_SET:  # a label, not a choice: the sliders set it
                self._show_allocation(self.levels.allocation)
            else:
                self.set_allocation(str(event.value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "sp-count":
            event.stop()
            try:
                self.levels.count = int(event.value) if event.value.strip() else None
            except ValueError:
                self.levels.count = None
            self.post_message(PlanRequested(copy.deepcopy(self.levels), "count"))
        elif event.input.id == "sp-spread":
            event.stop()
            self.levels.spread = self.spread()
            if self.levels.follows:
                self.post_message(PlanRequested(copy.deepcopy(self.levels), "allocation"))

    def spread(self) -> float | None:
        try:
            return float(self.query_one("#sp-spread", Input).value)
        except ValueError:
            return None  # empty: the allocation's own default

    def set_allocation(self, name: str) -> None:
        """uniform: every layer at the global level; otherwise the blocks follow the global level by `name`."""
        if name == "uniform":
            self.levels.uniform()
        self.levels.allocation, self.levels.spread = name, self.spread()
        self._show_allocation(name)
        self.post_message(PlanRequested(copy.deepcopy(self.levels), "allocation"))

    def _show_allocation(self, name: str) -> None:
        select = self.query_one("#sp-allocation", Select)
        if select.value != name:
            with select.prevent(Select.Changed):
                select.value = name

    def settings(self) -> dict:
        return {"allocation": str(self.query_one("#sp-allocation", Select).value), "spread": self.spread()}

    def restore(self, s: dict) -> None:
        if s.get("allocation") in ALLOCATIONS:
            self._show_allocation(s["allocation"])
            self.levels.allocation = s["allocation"]
        if s.get("spread") is not None:
            self.query_one("#sp-spread", Input).value = str(s["spread"])
            self.levels.spread = s["spread"]

    def show_loading(self) -> None:
        self.query_one("#sp-readout", Static).update("loading the model; the session's scores and plan follow…")

    def show_no_scores(self) -> None:
        self.query_one("#sp-readout", Static).update("no scores yet: run attribution first (pane 3)")

    def show_summary(self, summary: PruneSummary, size: dict, undo: int, redo: int, apply_ms: float, custom: bool) -> None:
        pruned, total = summary.pruned_weights, summary.prunable_weights
        text = Text()
        text.append(f"achieved {summary.sparsity:.2%}", style="bold")
        text.append(f" · {pruned:,} of {total:,} weights · {summary.granularity} · "
                    f"{'reconstructed' if summary.reconstructed else 'mask only'} · applied in {apply_ms:.0f} ms\n")
        if summary.chosen_on_reconstruct and not summary.reconstructed and summary.sparsity > 0:
            text.append("this mask is a preview: reconstructing (ctrl+k) lets SparseGPT choose the weights and update "
                        "the kept ones (prune --choose plan keeps this mask)\n", style="yellow")
        if summary.contrastive:
            text.append(f"the ranking is contrastive (minus {summary.contrastive}): these levels remove first what "
                        "that behaviour needs (a correction, pane 9), not what the model can spare; score without a "
                        "contrastive set to compress\n", style="bold yellow")
        text.append(f"size: {human_bytes(size['dense_bytes'])} as dense safetensors (zeros take space); "
                    f"~{human_bytes(size['sparse_bytes_estimate'])} in a sparse format · undo {undo} · redo {redo}",
                    style="dim")
        if custom:
            text.append("\nplan made with --layer patterns: sliders show per-part means; moving one replaces it", style="italic")
        readout = self.query_one("#sp-readout", Static)
        # a layout pass costs the UI ~20-60 ms per slider step; only pay it when the height changes
        lines = len(text.wrap(self.app.console, max(readout.content_size.width, 1)))
        readout.update(text, layout=lines != self._readout_lines)
        self._readout_lines = lines
