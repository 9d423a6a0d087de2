"""The README's main job: `gitswarm demo` builds a sample repository and completes a
three-wave scripted swarm on it."""

from __future__ import annotations

from pathlib import Path

from .conftest import git
from .runkit import gitswarm, status, trailers


def test_demo_completes_three_waves_and_says_how_to_review(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    proc = gitswarm(tmp_path, "demo", "--dir", str(target))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Review it:" in proc.stdout and "gitswarm finalize" in proc.stdout
    st = status(target, "@last")
    assert st["phase"] == "completed"
    waves = {t["id"]: t["wave"] for t in st["tasks"]}
    assert sorted(set(waves.values())) == [1, 2, 3] and len(waves) == 6
    tip = f"attoswarm/{st['id']}"
    merges = git(target, "rev-list", "--first-parent", "--merges", f"main..{tip}").splitlines()
    assert sorted(trailers(target, m)["Swarm-Task"] for m in merges) == sorted(waves)
    assert "from calc import add" in git(target, "show", f"{tip}:README.md")
    assert git(target, "status", "--porcelain") == ""
