"""Zero-shot accuracy through lm-eval (EleutherAI's harness) on the model as it is in memory, dense or pruned:
what papers judge pruned models by (Wanda, SparseGPT and CAP report it). lm-eval is imported when asked."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from core.errors import WorkbenchError
from core.model.placement import input_device

MEASURES = ("acc", "acc_norm")  # what is reported per task: accuracy and length-normalised accuracy


def task_spec(task: str) -> str | dict:
    """A task name for lm-eval's registry, or a task YAML file read into its config (local data files are
    resolved next to the YAML, so a task shipped with a project runs from anywhere, offline)."""
    path = Path(task).expanduser()
    if path.suffix not in (".yaml", ".yml"):
        return task
    if not path.is_file():
        raise WorkbenchError(f"task file {task} not found; give a task YAML file or an lm-eval task name")
    import yaml

    cfg = yaml.safe_load(path.read_text())
    files = (cfg.get("dataset_kwargs") or {}).get("data_files")
    if isinstance(files, dict):
        cfg["dataset_kwargs"]["data_files"] = {k: str((path.parent / v).resolve()) for k, v in files.items()}
    elif isinstance(files, str):
        cfg["dataset_kwargs"]["data_files"] = str((path.parent / files).resolve())
    return cfg


def zero_shot(model, tokenizer, tasks: tuple[str, ...], limit: int | None = None, batch_size: int = 8) -> dict[str, float]:
    """{"<task>/acc": accuracy, "<task>/acc_norm": ...} for each task, zero-shot."""
    import logging

    import lm_eval
    from lm_eval.models.huggingface import HFLM

    logging.getLogger("lm-eval").setLevel(logging.ERROR)
    specs = [task_spec(t) for t in tasks]
    try:
        # its progress bars would write over a TUI's screen and into a script's output
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(input_device(model)))
            res = lm_eval.simple_evaluate(model=lm, tasks=specs, num_fewshot=0, limit=limit, log_samples=False,
                                          bootstrap_iters=0, verbosity="ERROR")
    except Exception as exc:  # noqa: BLE001 - lm-eval raises many kinds; the user gets one line
        raise WorkbenchError(f"lm-eval could not run {', '.join(tasks)}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__} "
                             "(a named task needs its data: run it once on a machine with network, or give a task YAML "
                             "file with local data)") from None
    out = {}
    for task, metrics in (res or {}).get("results", {}).items():
        for key, value in metrics.items():
            name = key.split(",")[0]
            if name in MEASURES and isinstance(value, (int, float)):
                out[f"{task}/{name}"] = float(value)
    if not out:
        raise WorkbenchError(f"lm-eval reported no accuracy for {', '.join(tasks)}; give multiple-choice tasks")
    return out
