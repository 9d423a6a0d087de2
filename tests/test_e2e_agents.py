"""Whole swarms with the real agent CLIs: `gitswarm start` runs three tasks in two
waves with the real `claude` and the real `codex`, each driven by the fake model API,
each editing files through its own tools in its own worktree. The swarm branch holds the
work; tokens and cost are in the state and in the notes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gitswarm.store import Store

from .agentcli import claude_env, codex_env, codex_provider_args, require
from .conftest import git, make_repo
from .fakeapi import FakeAPI, Shell, Text, Tool
from .runkit import first_parent_merges, gitswarm, note, trailers

IN, OUT = 100, 20  # tokens the fake API reports per request

# What the fake model tells Codex to do for each task: shell commands, then an answer.
CODEX_SCRIPTS = {
    "Task add:": [Shell("printf 'def add(a, b):\\n    return a + b\\n' > calc/add.py"), Text("Added add().")],
    "Task sub:": [Shell("printf 'def sub(a, b):\\n    return a - b\\n' > calc/sub.py"), Text("Added sub().")],
    "Task api:": [Shell("printf 'from .add import add\\nfrom .sub import sub\\n' > calc/__init__.py && "
                        "printf '\\nExports add, sub.\\n' >> README.md"), Text("Exported both.")],
}

TASKS = """\
goal: A tiny calculator package.
tasks:
  - {id: add, title: Add addition, files: [calc/add.py]}
  - {id: sub, title: Add subtraction, files: [calc/sub.py]}
  - {id: api, title: Export both, deps: [add, sub], files: [calc/__init__.py, README.md]}
"""


def _config(path: Path, role: dict) -> Path:
    data = {"version": 1, "run": {"poll_interval_ms": 50}, "roles": [role],
            "watchdog": {"heartbeat_timeout_seconds": 60}, "retries": {"max_task_attempts": 1},
            "prices": {"gpt-fake": {"input": 2.0, "output": 8.0}}}
    path.write_text(json.dumps(data, indent=2))  # JSON is YAML
    return path


def test_three_tasks_with_the_real_claude(tmp_path: Path) -> None:
    claude = require("claude")
    repo = make_repo(tmp_path / "repo", {"README.md": "# calc\n", "calc/__init__.py": ""})
    wt = repo / ".gitswarm" / "r1" / "worktrees"  # where gitswarm puts each task's worktree
    scripts = {
        "Task add:": [Tool("Write", {"file_path": str(wt / "add" / "calc/add.py"),
                                     "content": "def add(a, b):\n    return a + b\n"}), Text("Added add().")],
        "Task sub:": [Tool("Write", {"file_path": str(wt / "sub" / "calc/sub.py"),
                                     "content": "def sub(a, b):\n    return a - b\n"}), Text("Added sub().")],
        # Claude Code writes over an existing file only after reading it.
        "Task api:": [Tool("Read", {"file_path": str(wt / "api" / "calc/__init__.py")}),
                      Tool("Write", {"file_path": str(wt / "api" / "calc/__init__.py"),
                                     "content": "from .add import add\nfrom .sub import sub\n"}),
                      Tool("Read", {"file_path": str(wt / "api" / "README.md")}),
                      Tool("Edit", {"file_path": str(wt / "api" / "README.md"), "old_string": "# calc",
                                    "new_string": "# calc\n\nExports add, sub."}),
                      Text("Exported both.")],
    }
    # Each task's requests: one per tool call plus the final answer.
    with FakeAPI(scripts) as api:
        env = {**claude_env(api.url, tmp_path / "home"), "CLAUDE_CODE_MAX_RETRIES": "0"}
        cfg = _config(tmp_path / "swarm.yaml", {"role_id": "impl", "backend": "claude", "command": claude,
                                                 "model": "claude-sonnet-4-5", "count": 2, "env": env})
        (tmp_path / "tasks.yaml").write_text(TASKS)
        done = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tmp_path / "tasks.yaml"), "--run-id", "r1",
                        timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert [len(api.scripted(k)) for k in scripts] == [2, 2, 5]
        state = Store(repo).run("r1").read()
        api_usage = state.tasks["api"].attempts[0].usage
        assert (api_usage.input_tokens, api_usage.output_tokens) == (5 * IN, 5 * OUT)
        # Every tool call succeeded (a refused Write would come back as an error result).
        for request in api.scripted():
            for message in request.body["messages"]:
                for block in message["content"] if isinstance(message["content"], list) else []:
                    assert not block.get("is_error"), block
    tip = git(repo, "rev-parse", "attoswarm/r1")
    assert git(repo, "show", f"{tip}:README.md") == "# calc\n\nExports add, sub."
    transcript = (Store(repo).run("r1").read_file(state.tasks["add"].attempts[0].transcript_path) or b"").decode()
    assert '"kind": "tool"' in transcript and "Write" in transcript
    # claude priced sonnet itself: $3 / $15 per million tokens.
    add_usage = state.tasks["add"].attempts[0].usage
    assert add_usage.cost_usd == pytest.approx((2 * IN * 3 + 2 * OUT * 15) / 1e6)
    _check_add_and_sub(repo, state, requests=2)


def _check_add_and_sub(repo: Path, state, requests: int) -> None:
    tip = git(repo, "rev-parse", "attoswarm/r1")
    assert git(repo, "show", f"{tip}:calc/add.py") == "def add(a, b):\n    return a + b"
    assert git(repo, "show", f"{tip}:calc/sub.py") == "def sub(a, b):\n    return a - b"
    assert git(repo, "show", f"{tip}:calc/__init__.py") == "from .add import add\nfrom .sub import sub"
    assert len(first_parent_merges(repo, git(repo, "rev-parse", "main"), tip)) == 3
    assert {t.id: t.status.value for t in state.tasks.values()} == {"add": "done", "sub": "done", "api": "done"}
    for tid in ("add", "sub"):
        (a,) = state.tasks[tid].attempts
        assert (a.usage.input_tokens, a.usage.output_tokens) == (requests * IN, requests * OUT)
        assert a.usage.cost_usd > 0 and a.session
    assert state.run.usage.cost_usd == pytest.approx(sum(t.attempts[0].usage.cost_usd for t in state.tasks.values()))
    assert state.run.usage.input_tokens == sum(t.attempts[0].usage.input_tokens for t in state.tasks.values())
    for merge in first_parent_merges(repo, git(repo, "rev-parse", "main"), tip):
        n = note(repo, "r1", merge)
        assert n is not None and n["tokens"]["input_tokens"] > 0 and n["cost_usd"] > 0 and n["session"]
        assert trailers(repo, merge)["Swarm-Run"] == "r1"


def _codex_swarm(tmp_path: Path, backend: str, count: int) -> Path:
    """The three tasks with the real codex on `backend`, each played to its end."""
    codex = require("codex")
    repo = make_repo(tmp_path / "repo", {"README.md": "# calc\n", "calc/__init__.py": ""})
    with FakeAPI(CODEX_SCRIPTS) as api:
        cfg = _config(tmp_path / "swarm.yaml", {"role_id": "cx", "backend": backend, "command": codex,
                                                 "model": "gpt-fake", "count": count, "env": codex_env(tmp_path / "home"),
                                                 "args": codex_provider_args(api.url)})
        (tmp_path / "tasks.yaml").write_text(TASKS)
        done = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tmp_path / "tasks.yaml"), "--run-id", "r1",
                        timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        for key in CODEX_SCRIPTS:
            assert len(api.scripted(key)) == 2
    return repo


def test_three_tasks_with_the_real_codex(tmp_path: Path) -> None:
    repo = _codex_swarm(tmp_path, "codex", count=2)
    state = Store(repo).run("r1").read()
    tip = git(repo, "rev-parse", "attoswarm/r1")
    assert git(repo, "show", f"{tip}:README.md") == "# calc\n\nExports add, sub."
    # codex reports no cost: it comes from the config's prices for gpt-fake ($2 / $8).
    add_usage = state.tasks["add"].attempts[0].usage
    assert add_usage.cost_usd == pytest.approx((2 * IN * 2.0 + 2 * OUT * 8.0) / 1e6)
    _check_add_and_sub(repo, state, requests=2)
    transcript = Store(repo).run("r1").read_file(state.tasks["add"].attempts[0].transcript_path) or b""
    assert b"printf" in transcript  # codex's own command, as it ran it


def test_three_tasks_with_one_long_lived_codex_over_app_server(tmp_path: Path) -> None:
    """codex-mcp: one agent, one Codex process for the whole run, a thread per task."""
    repo = _codex_swarm(tmp_path, "codex-mcp", count=1)
    state = Store(repo).run("r1").read()
    _check_add_and_sub(repo, state, requests=2)
    rs = Store(repo).run("r1")
    pids, threads = set(), set()
    for t in state.tasks.values():
        for line in (rs.read_file(t.attempts[0].transcript_path) or b"").decode().splitlines():
            event = json.loads(line)
            if event["kind"] == "started":
                pids.add(event["data"]["pid"])
        threads.add(t.attempts[0].session)
    assert len(pids) == 1, "one Codex process served every task"
    assert len(threads) == 3, "each task had a thread of its own"
