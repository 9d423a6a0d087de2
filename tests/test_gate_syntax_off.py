"""`gates.syntax: false` is honoured everywhere the syntax gate runs (issue 11, point 13):
the attempt's checks say "skipped", not "passed", and the pre-commit hook gitswarm gives
the agent does not refuse the agent's own commit of a file that does not parse."""

from __future__ import annotations

import sys
from pathlib import Path

from .conftest import git, make_repo
from .runkit import agent_config, checkout_snapshot, gitswarm, status, write_tasks

# The agent commits a .py file that does not parse with a plain `git commit` (hooks on),
# and fails the attempt when git refuses, so a refusing hook shows as a failed task.
AGENT = """\
import json, pathlib, subprocess, sys
pathlib.Path("broken.py").write_text("def oops(:\\n")
subprocess.run(["git", "add", "broken.py"], check=True)
proc = subprocess.run(["git", "commit", "-q", "-m", "agent: add broken.py"], capture_output=True, text=True)
ok = proc.returncode == 0
summary = "committed" if ok else "commit refused: " + proc.stderr[-300:]
print(json.dumps({"type": "finished", "data": {"ok": ok, "summary": summary}}))
sys.exit(0 if ok else 1)
"""


def _start(tmp_path: Path, syntax: bool) -> tuple[Path, str, str]:
    repo = make_repo(tmp_path / "repo")
    cfg = agent_config(tmp_path, AGENT, interpreter=sys.executable, name="agent.py",
                       extra=f"gates: {{syntax: {'true' if syntax else 'false'}, tests: false}}\n")
    tf = write_tasks(tmp_path, "tasks:\n  - {id: t1, title: Broken file, files: [broken.py]}\n")
    before = checkout_snapshot(repo)
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "r1")
    assert checkout_snapshot(repo) == before
    return repo, proc.stdout + proc.stderr, str(proc.returncode)


def test_with_the_gate_off_the_agents_commit_goes_through_and_the_gate_is_skipped(tmp_path: Path) -> None:
    repo, out, rc = _start(tmp_path, syntax=False)
    assert rc == "0", out
    t1 = status(repo, "r1")["tasks"][0]
    assert t1["status"] == "done", t1
    attempt = t1["attempts"][-1]
    syntax = [c for c in attempt["checks"] if c["gate"] == "syntax"]
    assert syntax and syntax[0].get("skipped") is True, attempt["checks"]
    assert "gates.syntax is off" in syntax[0]["detail"]
    # The agent's own commit (not gitswarm's leftover commit) carries the file.
    log = git(repo, "log", "--format=%s", "attoswarm/r1")
    assert "agent: add broken.py" in log.splitlines()
    assert git(repo, "show", "attoswarm/r1:broken.py") == "def oops(:"
    shown = gitswarm(repo, "show", "r1", "t1")
    assert "gate syntax: skipped: gates.syntax is off" in shown.stdout, shown.stdout


def test_with_the_gate_on_the_hook_still_refuses_the_commit(tmp_path: Path) -> None:
    repo, out, rc = _start(tmp_path, syntax=True)
    t1 = status(repo, "r1")["tasks"][0]
    assert t1["status"] == "failed", t1
    assert "syntax errors, commit refused" in t1["attempts"][-1]["error"] + str(t1["reason"])
    assert "broken.py:1:" in t1["attempts"][-1]["error"] + str(t1["reason"])
