"""docs/extending.md's worked example, done: a score option declared in core/settings.py and nowhere else
reaches the CLI (flag, help panel, range check), the TUI's options dialog, the session's record, recipes and
the scorers' options."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIP = ('    clip: float | None = setting(None, "Clip each token\'s relevance at this quantile (LRP, gradient).", '
        'above=0, at_most=1, panel="Advanced")\n')

CHECK = """
import sys
from typer.testing import CliRunner
from workbench.cli import app
from core.session.ui_state import AttributionUi
from core.attribution.state import ScorerOptions
from core.settings import ScoreConfig
from screens.score_options import OPTIONS

r = CliRunner().invoke(app, ["score", "--help"], env={"COLUMNS": "200"})
assert "--clip" in r.output and r.output.index("Advanced") < r.output.index("--clip"), r.output
r = CliRunner().invoke(app, ["score", "--session", "x", "--clip", "2"])
assert r.exit_code != 0 and "--clip 2" in r.output and "Traceback" not in r.output, r.output
r = CliRunner().invoke(app, ["score", "--session", "x", "--show-config", "--clip", "0.5"])
assert "clip = 0.5" in r.output, r.output
assert "clip" in AttributionUi.model_fields and "clip" in OPTIONS
assert ScorerOptions.of(ScoreConfig(clip=0.9).resolved("text")).config.clip == 0.9
print("ok")
"""


def test_a_score_option_declared_once_reaches_every_surface(tmp_path):
    for folder in ("core", "workbench", "screens"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    settings = tmp_path / "core" / "settings.py"
    text = settings.read_text()
    anchor = next(line for line in text.splitlines(keepends=True) if line.startswith("    batch_tokens: int"))
    settings.write_text(text.replace(anchor, anchor + CLIP, 1))
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(tmp_path)})
    assert out.stdout.strip().endswith("ok"), out.stderr[-3000:]
