"""Helpers for the dashboard tests (tests/test_tui*.py), and the test that the fixture
runs they build are reproducible byte for byte, which the SVG snapshots rely on.

Two kinds of runs:
- fixture runs written directly through the state store, with fixed ids, fixed event
  times and git commits with fixed dates, so every hash on screen is the same on any
  machine (snapshots, the 1,000-task refresh, runs without a coordinator);
- real runs of the scripted backend through the real CLI, in the background, for the
  keys that a coordinator must act on (tests/test_tui_pilot.py).
"""

from __future__ import annotations

import asyncio
import difflib
import html
import io
import os
import re
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pygit2
import pytest
from rich.console import Console

from gitswarm.store import RunStore, Store, write_tree

from .conftest import git, make_repo
from .runkit import gitswarm_bg, write_config, write_tasks

T0 = datetime(2026, 1, 2, 10, 0, 0, tzinfo=timezone.utc)
NOW = T0 + timedelta(seconds=300)  # the fixed clock of the snapshots: 5 minutes in
SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
UPDATE_ENV = "GITSWARM_UPDATE_SNAPSHOTS"


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch(seconds: float) -> int:
    return int((T0 + timedelta(seconds=seconds)).timestamp())


# ---------------------------------------------------------------- fixture runs


def pinned_repo(path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository whose first commit has the same id everywhere (fixed dates; the
    conftest fixes names and e-mails)."""
    monkeypatch.setenv("GIT_AUTHOR_DATE", "2026-01-02T09:00:00+0000")
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2026-01-02T09:00:00+0000")
    return make_repo(path, {"README.md": "# calc\n", "pkg/__init__.py": ""})


def commit(repo: pygit2.Repository, parents: list[str], files: dict[str, str], message: str, seconds: float, agent: str = "impl-1") -> str:
    """A commit with fixed dates: the tree of the first parent plus `files`."""
    base = repo[parents[0]].peel(pygit2.Commit).tree if parents else None
    tree = write_tree(repo, base, {p: c.encode("utf-8") for p, c in files.items()})
    author = pygit2.Signature(agent, f"{agent}@gitswarm.invalid", epoch(seconds), 0)
    committer = pygit2.Signature("Test User", "user@example.com", epoch(seconds), 0)
    return str(repo.create_commit(None, author, committer, message, tree, [pygit2.Oid(hex=p) for p in parents]))


def store_run(
    repo_dir: Path,
    run_id: str,
    tasks: list[dict[str, Any]],
    *,
    phase: str = "running",
    config: dict[str, Any] | None = None,
    goal: str = "Grow pkg into a calculator",
) -> RunStore:
    """A run written through the store with fixed times, up to `phase` (running,
    awaiting_approval, or planning)."""
    base = git(repo_dir, "rev-parse", "HEAD")
    git(repo_dir, "branch", f"attoswarm/{run_id}", base)
    rs = Store(repo_dir).create_run(
        {
            "id": run_id,
            "goal": goal,
            "base": {"branch": "main", "commit": base},
            "swarm_branch": f"attoswarm/{run_id}",
            "config": config or {"budget": {"max_tokens": 200_000, "max_cost_usd": 2.0}},
            "preview": phase == "awaiting_approval",
        },
        at=at(0),
    )
    rs.append({"type": "plan_set", "tasks": tasks}, at=at(1))
    if phase != "planning":
        rs.append({"type": "phase_changed", "phase": phase}, at=at(2))
    return rs


CALC_TASKS = [
    {"id": "add", "title": "Add addition", "files": ["pkg/add.py"]},
    {"id": "sub", "title": "Add subtraction", "files": ["pkg/sub.py"]},
    {"id": "mul", "title": "Add multiplication", "files": ["pkg/mul.py"]},
    {"id": "div", "title": "Add division", "files": ["pkg/div.py"]},
    {"id": "tests", "title": "Test them", "kind": "test", "deps": ["add"], "files": ["tests/test_calc.py"]},
    {"id": "api", "title": "Export them", "deps": ["add", "sub", "mul", "div"], "files": ["pkg/__init__.py"]},
    {"id": "docs", "title": "Document them", "kind": "docs", "deps": ["api", "tests"], "files": ["README.md"]},
]

AGENTS = [
    {"id": "impl-1", "role": "impl", "backend": "claude", "model": "sonnet"},
    {"id": "impl-2", "role": "impl", "backend": "claude", "model": "sonnet"},
    {"id": "impl-3", "role": "impl", "backend": "codex", "model": "gpt-5"},
    {"id": "impl-4", "role": "impl", "backend": "codex", "model": "gpt-5"},
]

PROMPT = "You are impl-4, one agent of a swarm working on this repository.\n\nTask tests: Test them\n\nWrite tests/test_calc.py for pkg.add.\n"
TRANSCRIPT = (
    '{"at": 1767348050.0, "kind": "started", "text": "codex exec"}\n'
    '{"at": 1767348060.0, "kind": "message", "text": "I will write the test file."}\n'
    '{"at": 1767348070.0, "data": {"path": "tests/test_calc.py"}, "kind": "file_changed"}\n'
    '{"at": 1767348090.0, "kind": "finished", "text": "wrote tests/test_calc.py"}\n'
)


def _started(task: str, n: int, agent: dict[str, Any], base: str, seconds: float, prompt: str | None = None, run_id: str = "snap") -> tuple[dict[str, Any], str]:
    e = {
        "type": "attempt_started",
        "task": task,
        "n": n,
        "agent": agent["id"],
        "backend": agent["backend"],
        "model": agent["model"],
        "role": agent["role"],
        "base": base,
        "branch": f"attoswarm-work/{run_id}/{task}",
        "prompt": prompt or f"Task {task}\n",
    }
    return e, at(seconds)


def build_live_run(repo_dir: Path, run_id: str = "snap") -> RunStore:
    """A run caught mid-flight: one task merged, two agents at work (one of them on a
    second attempt after a failed gate), one task verified and waiting, one merging,
    two pending. Every time and hash is fixed."""
    rs = store_run(repo_dir, run_id, CALC_TASKS)
    repo = rs.repo
    base = git(repo_dir, "rev-parse", "HEAD")
    rs.append(*[{"type": "agent_update", "agent": a} for a in AGENTS], at=at(3))
    impl1, impl2, impl3, impl4 = AGENTS

    def put(event: tuple[dict[str, Any], str] | dict[str, Any], seconds: float | None = None) -> None:
        if isinstance(event, tuple):
            rs.append(event[0], at=event[1])
        else:
            rs.append(event, at=at(seconds or 0))

    add_work = commit(repo, [base], {"pkg/add.py": "def add(a, b):\n    return a + b\n"}, "add: addition", 30, "impl-1")
    put(_started("add", 1, impl1, base, 5))
    put({"type": "progress", "task": "add", "n": 1, "event": "write pkg/add.py", "usage": {"input_tokens": 12000, "output_tokens": 3000, "cost_usd": 0.12}}, 30)
    put({"type": "attempt_finished", "task": "add", "n": 1, "result": "ok", "commit": add_work, "summary": "added pkg/add.py", "transcript": '{"kind": "finished", "text": "done"}\n'}, 40)
    put({"type": "attempt_verified", "task": "add", "n": 1, "ok": True, "checks": [{"gate": "syntax", "ok": True}]}, 40)
    add_merge = commit(repo, [base, add_work], {"pkg/add.py": "def add(a, b):\n    return a + b\n"}, "Merge add", 41, "gitswarm")
    put({"type": "merge_intent", "task": "add", "n": 1, "commit": add_merge, "tip": base}, 41)
    git(repo_dir, "update-ref", f"refs/heads/attoswarm/{run_id}", add_merge, base)
    put({"type": "merged", "task": "add", "n": 1, "commit": add_merge}, 42)

    put(_started("div", 1, impl1, add_merge, 43))
    put(_started("sub", 1, impl2, add_merge, 45))
    put(_started("mul", 1, impl3, add_merge, 45))
    put(_started("tests", 1, impl4, add_merge, 50, PROMPT))
    broken = commit(repo, [add_merge], {"tests/test_calc.py": "from pkg.add import add\n\ndef test_add(:\n    assert add(1, 2) == 3\n"}, "tests: first try", 85, "impl-4")
    put({"type": "attempt_finished", "task": "tests", "n": 1, "result": "ok", "commit": broken, "transcript": TRANSCRIPT, "usage": {"input_tokens": 9000, "output_tokens": 2500, "cost_usd": 0.09}}, 90)
    put(
        {
            "type": "attempt_verified",
            "task": "tests",
            "n": 1,
            "ok": False,
            "retry": True,
            "error": "syntax gate: tests/test_calc.py:3:14: invalid syntax",
            "checks": [{"gate": "syntax", "ok": False, "detail": "tests/test_calc.py:3:14: invalid syntax"}],
        },
        91,
    )
    put(_started("tests", 2, impl4, add_merge, 95, PROMPT + "\nYour previous attempt failed: syntax gate: tests/test_calc.py:3:14: invalid syntax\n"))
    put({"type": "progress", "task": "sub", "n": 1, "event": "write pkg/sub.py", "usage": {"input_tokens": 8000, "output_tokens": 1500, "cost_usd": 0.07}}, 120)
    mul_work = commit(repo, [add_merge], {"pkg/mul.py": "def mul(a, b):\n    return a * b\n"}, "mul: multiplication", 195, "impl-3")
    put({"type": "attempt_finished", "task": "mul", "n": 1, "result": "ok", "commit": mul_work, "usage": {"input_tokens": 15000, "output_tokens": 4000, "cost_usd": 0.16}}, 200)
    put({"type": "attempt_verified", "task": "mul", "n": 1, "ok": True, "checks": [{"gate": "syntax", "ok": True}]}, 201)
    div_work = commit(repo, [add_merge], {"pkg/div.py": "def div(a, b):\n    return a / b\n"}, "div: division", 205, "impl-1")
    put({"type": "attempt_finished", "task": "div", "n": 1, "result": "ok", "commit": div_work, "usage": {"input_tokens": 11000, "output_tokens": 2000, "cost_usd": 0.10}}, 210)
    put({"type": "attempt_verified", "task": "div", "n": 1, "ok": True, "checks": [{"gate": "syntax", "ok": True}]}, 211)
    div_merge = commit(repo, [add_merge, div_work], {"pkg/div.py": "def div(a, b):\n    return a / b\n"}, "Merge div", 215, "gitswarm")
    put({"type": "merge_intent", "task": "div", "n": 1, "commit": div_merge, "tip": add_merge}, 215)
    put({"type": "progress", "task": "tests", "n": 2, "event": "run python -m pytest -q", "usage": {"input_tokens": 4000, "output_tokens": 900, "cost_usd": 0.04}}, 290)
    return rs


def build_completed_run(repo_dir: Path, run_id: str = "done1") -> RunStore:
    """A run that completed: three tasks merged in two waves, fixed times and hashes."""
    tasks = [
        {"id": "add", "title": "Add addition", "files": ["pkg/add.py"]},
        {"id": "sub", "title": "Add subtraction", "files": ["pkg/sub.py"]},
        {"id": "docs", "title": "Document them", "kind": "docs", "deps": ["add", "sub"], "files": ["README.md"]},
    ]
    rs = store_run(repo_dir, run_id, tasks)
    repo = rs.repo
    tip = git(repo_dir, "rev-parse", "HEAD")
    agent = AGENTS[0]
    files = {
        "add": {"pkg/add.py": "def add(a, b):\n    return a + b\n"},
        "sub": {"pkg/sub.py": "def sub(a, b):\n    return a - b\n"},
        "docs": {"README.md": "# calc\n\nUse pkg.add and pkg.sub.\n"},
    }
    t = 10
    for task in ("add", "sub", "docs"):
        work = commit(repo, [tip], files[task], f"{task}: work", t + 20)
        rs.append(_started(task, 1, agent, tip, t, run_id=run_id)[0], at=at(t))
        usage = {"input_tokens": 20000, "output_tokens": 5000, "cost_usd": 0.25}
        rs.append({"type": "attempt_finished", "task": task, "n": 1, "result": "ok", "commit": work, "usage": usage}, at=at(t + 25))
        rs.append({"type": "attempt_verified", "task": task, "n": 1, "ok": True, "checks": [{"gate": "syntax", "ok": True}]}, at=at(t + 26))
        merge = commit(repo, [tip, work], files[task], f"Merge {task}", t + 27, "gitswarm")
        rs.append({"type": "merge_intent", "task": task, "n": 1, "commit": merge, "tip": tip}, at=at(t + 27))
        git(repo_dir, "update-ref", f"refs/heads/attoswarm/{run_id}", merge, tip)
        rs.append({"type": "merged", "task": task, "n": 1, "commit": merge}, at=at(t + 28))
        tip = merge
        t += 40
    rs.append({"type": "run_note", "text": "run completed: 3 done; 75k tokens, $0.7500"}, {"type": "run_ended", "phase": "completed"}, at=at(t))
    return rs


# ---------------------------------------------------------------- screens


def screen_text(app: Any) -> str:
    """The screen as plain text, for assertions (the snapshots keep the styles)."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, color_system=None, record=True, legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens, simplify=True))
    return console.export_text()


async def wait_for(pilot: Any, cond: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    """Let the app run (its timers poll the state ref) until cond() holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_until(cond: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except Exception:  # the run may not exist yet, a file may be half written
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def svg_lines(svg: str) -> list[str]:
    """The text rows of a Textual SVG screenshot (its runs of text grouped by their y),
    for a readable diff when a snapshot differs."""
    rows: dict[float, list[tuple[float, str]]] = {}
    for x, y, body in re.findall(r'<text [^>]*?x="([0-9.]+)" y="([0-9.]+)"[^>]*>(.*?)</text>', svg):
        rows.setdefault(float(y), []).append((float(x), html.unescape(body).replace("\xa0", " ")))
    return ["".join(part for _, part in sorted(parts)).rstrip() for _, parts in sorted(rows.items())]


def assert_snapshot(svg: str, name: str, tmp_path: Path) -> None:
    """Compare with tests/snapshots/NAME.svg; GITSWARM_UPDATE_SNAPSHOTS=1 rewrites it."""
    path = SNAPSHOTS / f"{name}.svg"
    if os.environ.get(UPDATE_ENV) == "1":
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(svg, encoding="utf-8")
        return
    assert path.exists(), f"no snapshot {path}: run with {UPDATE_ENV}=1 once and review it"
    expected = path.read_text(encoding="utf-8")
    if svg != expected:
        actual = tmp_path / f"{name}.actual.svg"
        actual.write_text(svg, encoding="utf-8")
        diff = "\n".join(difflib.unified_diff(svg_lines(expected), svg_lines(svg), "expected", "actual", lineterm="", n=1))
        raise AssertionError(f"{name}: the screen differs from {path} (actual: {actual}); {UPDATE_ENV}=1 to accept\n{diff[:4000]}")


# ---------------------------------------------------------------- real runs (scripted backend, real CLI)


def start_bg(repo: Path, tasks: str, *extra: str, run_id: str = "r1", count: int = 3, attempts: int = 2) -> subprocess.Popen[str]:
    cfg = write_config(repo.parent, count=count, attempts=attempts)
    tf = write_tasks(repo.parent, tasks)
    return gitswarm_bg(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", run_id, *extra)


def read(repo: Path, run_id: str = "r1") -> Any:
    return Store(repo).run(run_id).read()


def coordinated(repo: Path, run_id: str = "r1") -> bool:
    rs = Store(repo).run(run_id)
    return RunStore.lease_is_live(rs.read_lease())


def finish(proc: subprocess.Popen[str], repo: Path, run_id: str = "r1") -> None:
    """Leave no coordinator behind: stop the run if it still goes, then reap."""
    try:
        if proc.poll() is None:
            try:
                Store(repo).run(run_id).append({"type": "control", "action": "stop", "reason": "control:stop"})
            except Exception:
                pass
            proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


# ---------------------------------------------------------------- the fixtures above are reproducible


def _fingerprint(repo: Path) -> dict[str, str]:
    return {
        "snap": str(Store(repo).run("snap").tip()),
        "done1": str(Store(repo).run("done1").tip()),
        "snap branch": git(repo, "rev-parse", "attoswarm/snap"),
        "done1 branch": git(repo, "rev-parse", "attoswarm/done1"),
    }


def test_fixture_runs_are_reproducible_byte_for_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshots show hashes and times: the fixture runs must come out the same
    objects every time, here and on any other machine."""
    prints = []
    for name in ("one", "two"):
        repo = pinned_repo(tmp_path / name, monkeypatch)
        build_live_run(repo)
        build_completed_run(repo)
        prints.append(_fingerprint(repo))
    assert prints[0] == prints[1]
    state = Store(tmp_path / "one").run("snap").read()
    assert {t.id: t.status.value for t in state.tasks.values()} == {
        "add": "done",
        "sub": "running",
        "mul": "verifying",
        "div": "merging",
        "tests": "running",
        "api": "pending",
        "docs": "pending",
    }
    assert [a.result for a in state.tasks["tests"].attempts] == ["failed", None]


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)
