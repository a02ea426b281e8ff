"""What every report harness shares: who ran what where, a checkpoint after each step, and where the
report lands (bench/results/<study>.md, between markers, so reruns replace their own section)."""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Run:
    """The head of every report: a report dataclass extends it with its own fields (all with defaults)."""

    size: str
    model: str
    command: str
    machine: str
    started: str


def run_head(script: str, size: str, model: str, lm) -> dict:
    """`Run`'s fields for a run of `script` on a loaded model, now."""
    import torch

    device = lm.info().get("device")
    gpu = f" ({torch.cuda.get_device_name()})" if lm.device.type == "cuda" else ""
    return {"size": size, "model": model, "command": " ".join([f"uv run python bench/{script}"] + sys.argv[1:]),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, {device}{gpu} "
                       f"{str(lm.dtype).removeprefix('torch.')}, torch {torch.__version__}",
            "started": date.today().isoformat()}


def save(report, path: Path | None) -> None:
    """Rewrite the run's JSON atomically (an interrupted run resumes from it)."""
    if path is None:
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(report), indent=1, default=str))
    tmp.replace(path)


def load(cls, path: Path):
    return cls(**json.loads(path.read_text()))


def publish(md: str, out: Path, study: str, section: str) -> Path:
    """Put the report into `out`/<study>.md between `<!-- section:start/end -->` (replaced if there, appended if
    not); the rest of the file is kept, and it is replaced atomically."""
    path = Path(out) / f"{study}.md"
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    text = path.read_text() if path.exists() else f"# {study.capitalize()}: benchmark runs\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + start + "\n" + md + "\n" + end + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + start + "\n" + md + "\n" + end + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
