"""The merger role through the real coordinator: a conflict between two tasks goes to
`merge.authority_role`, whose resolution passes the gates and lands; a resolution that
leaves conflict markers fails the attempt, which is retried on the new swarm tip."""

from __future__ import annotations

import sys
from pathlib import Path

from gitswarm.store import Store

from .conftest import git, make_repo
from .runkit import gitswarm, write_tasks

# Two tasks that run at once (different manifests) and both write shared.py.
TASKS = """\
tasks:
  - {id: a, title: A, files: [a.txt], script: [{write: {path: shared.py, content: "x = 1\\n"}}, {write: {path: a.txt, content: "a\\n"}}]}
  - {id: b, title: B, files: [b.txt], script: [{sleep: 1.0}, {write: {path: shared.py, content: "y = 2\\n"}}, {write: {path: b.txt, content: "b\\n"}}]}
"""

# A merger that keeps both sides: drops the marker lines of every conflicted file.
RESOLVER = r"""
import pathlib, subprocess, sys
files = subprocess.run(["git", "diff", "--name-only", "--diff-filter=U"], capture_output=True, text=True).stdout.split()
for name in files:
    p = pathlib.Path(name)
    keep = [l for l in p.read_text().splitlines(keepends=True)
            if not l.startswith(("<<<<<<<", "=======", ">>>>>>>"))]
    p.write_text("".join(keep) if MODE == "resolve" else p.read_text())
print("resolved " + ", ".join(files))
"""


def _config(tmp_path: Path, mode: str, test_command: str | None = None) -> Path:
    resolver = tmp_path / "resolver.py"
    resolver.write_text(f"MODE = {mode!r}\n" + RESOLVER)
    cfg = tmp_path / "swarm.yaml"
    gates = f"gates: {{test_command: {test_command!r}}}\n" if test_command else "gates: {tests: false}\n"
    cfg.write_text(
        "version: 1\nrun: {poll_interval_ms: 20}\n"
        "roles:\n"
        "  - {role_id: impl, role_type: worker, backend: scripted, count: 2}\n"
        f"  - {{role_id: merger, role_type: merger, backend: command, command: {sys.executable}, args: ['{resolver}']}}\n"
        "merge: {authority_role: merger}\n"
        "retries: {max_task_attempts: 2}\n" + gates
    )
    return cfg


def test_a_conflict_resolved_by_the_merger_lands_after_the_gates(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    check = "python3 -c \"import shared; assert shared.x == 1 and shared.y == 2\""
    cfg = _config(tmp_path, "resolve", test_command=check)
    tf = write_tasks(tmp_path, TASKS)
    done = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "r1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "b#1 conflicts with the swarm branch in shared.py: the merger role resolves it" in done.stdout
    tip = git(repo, "rev-parse", "attoswarm/r1")
    assert git(repo, "show", f"{tip}:shared.py") == "x = 1\ny = 2"
    state = Store(repo).run("r1").read()
    (b1,) = state.tasks["b"].attempts  # no retry: the merger's resolution landed
    gates = {c["gate"]: c for c in b1.checks}
    assert gates["merge"] == {"gate": "merge", "ok": True, "detail": "conflict in shared.py resolved by merger"}
    assert gates["tests"]["ok"] and "resolution" in gates["tests"]["detail"]
    assert "resolved by the merger role" in git(repo, "log", "-1", "--format=%B", b1.merge_commit or "")
    # The merge has the swarm tip and the task's own commit as parents, and no worktree is left.
    assert git(repo, "rev-parse", f"{b1.merge_commit}^2") == b1.commit
    assert not (repo / ".gitswarm" / "r1" / "worktrees" / ".merge-b").exists()


def test_a_resolution_with_markers_left_fails_and_the_task_is_retried(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    cfg = _config(tmp_path, "leave")
    tf = write_tasks(tmp_path, TASKS)
    done = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "r1")
    assert done.returncode == 0, done.stdout + done.stderr
    state = Store(repo).run("r1").read()
    b1, b2 = state.tasks["b"].attempts
    assert b1.result == "failed" and b1.merge_commit is None
    assert b1.error is not None and "conflict markers left in shared.py (markers at lines 1, 3, 5)" in b1.error
    assert b2.merge_commit is not None  # attempt 2 started from the new tip: no conflict
    assert git(repo, "show", "attoswarm/r1:shared.py") == "y = 2"
