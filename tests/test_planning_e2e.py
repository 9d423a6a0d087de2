"""Planning a goal through the real CLI: `gitswarm start CONFIG "goal"` with no tasks
file. The planner is the real `claude`, driven by the fake model API (tests/fakeapi),
in a temporary worktree; the workers are the real `claude` too. Then --preview,
--approval-timeout and resuming with the scripted backend, which needs no model.

The fake API picks a script by a string in the conversation: "gitswarm planner" is in
every planner prompt and in no worker prompt; "Task <id>:" heads each worker's prompt.
The step is the number of assistant turns so far, so the planner's second turn (the
same session, resumed) gets the second step of its script."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

from gitswarm.model import RunPhase
from gitswarm.planner import PLANNER_MARK
from gitswarm.store import Store

from .agentcli import claude_env, require
from .conftest import git, make_repo
from .fakeapi import FakeAPI, Fault, Text, Tool
from .runkit import checkout_snapshot, first_parent_merges, gitswarm, gitswarm_bg, status, write_config, write_tasks

IN, OUT = 100, 20  # tokens the fake API reports per request
GOAL = "Grow calc into a small calculator with docs."

PLAN = {"tasks": [
    {"id": "add", "title": "Add addition", "description": "Write calc/add.py with add(a, b).", "deps": [],
     "files": ["calc/add.py"], "kind": "implement"},
    {"id": "sub", "title": "Add subtraction", "description": "Write calc/sub.py with sub(a, b).", "deps": [],
     "files": ["calc/sub.py"], "kind": "implement"},
    {"id": "api", "title": "Export both", "description": "calc/api.py imports add and sub.", "deps": ["add", "sub"],
     "files": ["calc/api.py"], "kind": "implement"},
    {"id": "docs", "title": "Document the API", "description": "docs/usage.md shows calc.api.", "deps": ["api"],
     "files": ["docs/usage.md"], "kind": "docs"},
]}
# Descriptions as long as a real planner's: the answer is far longer than the 2,000
# characters claude's backend keeps of a worker's final text.
DETAIL = " Keep the public names stable, write a docstring, and make it importable on its own." * 8
for _task in PLAN["tasks"]:
    _task["description"] += DETAIL
# t2 <-> t4: named "t2 -> t4 -> t2" (smallest id first)
CYCLE = {"tasks": [
    {"id": "t1", "title": "Start", "files": ["a.py"]},
    {"id": "t2", "title": "Middle", "deps": ["t1", "t4"], "files": ["b.py"]},
    {"id": "t4", "title": "End", "deps": ["t2"], "files": ["c.py"]},
]}


def _fenced(plan: dict[str, Any], before: str = "I looked at the repository first.") -> Text:
    return Text(f"{before}\n\n```json\n{json.dumps(plan, indent=2)}\n```\n\nEach task leaves the package importable.")


def _repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"README.md": "# calc\n", "calc/__init__.py": "def version():\n    return 1\n"})


def _config(tmp_path: Path, api_url: str) -> Path:
    claude = require("claude")
    common = {"backend": "claude", "command": claude, "model": "claude-sonnet-4-5",
              "env": {**claude_env(api_url, tmp_path / "home"), "CLAUDE_CODE_MAX_RETRIES": "0"}}
    data = {"version": 1, "run": {"poll_interval_ms": 50},
            "roles": [{"role_id": "planner", "role_type": "planner", **common},
                      {"role_id": "impl", "count": 2, "task_kinds": ["implement", "docs"], **common}],
            "watchdog": {"heartbeat_timeout_seconds": 60}, "retries": {"max_task_attempts": 1}}
    path = tmp_path / "swarm.yaml"
    path.write_text(json.dumps(data, indent=2))  # JSON is YAML
    return path


def _refs(repo: Path) -> set[str]:
    return set(git(repo, "for-each-ref", "--format=%(refname)").splitlines())


def _worktrees(repo: Path) -> int:
    return git(repo, "worktree", "list", "--porcelain").count("worktree ")


def _user_texts(request: Any) -> list[str]:
    """The text of each user message of a recorded request (Claude Code's reminders left out)."""
    out = []
    for m in request.body["messages"]:
        if m["role"] != "user":
            continue
        blocks = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
        out.append("\n".join(b.get("text", "") for b in blocks if not b.get("text", "").startswith("<system-reminder>")))
    return out


def test_goal_to_merge_with_the_real_claude(tmp_path: Path) -> None:
    """The planner's 4-task DAG is executed by claude workers and merged; the state holds
    the `planned` event, the planner's prompt, answer and transcript, and every worker's
    prompt and transcript."""
    repo = _repo(tmp_path)
    wt = repo / ".gitswarm" / "r1" / "worktrees"
    answer = _fenced(PLAN)
    assert len(answer.text) > 3000
    scripts = {
        "Task add:": [Tool("Write", {"file_path": str(wt / "add" / "calc/add.py"), "content": "def add(a, b):\n    return a + b\n"}),
                      Text("Added add().")],
        "Task sub:": [Tool("Write", {"file_path": str(wt / "sub" / "calc/sub.py"), "content": "def sub(a, b):\n    return a - b\n"}),
                      Text("Added sub().")],
        "Task api:": [Tool("Write", {"file_path": str(wt / "api" / "calc/api.py"),
                                     "content": "from .add import add\nfrom .sub import sub\n"}), Text("Exported both.")],
        "Task docs:": [Tool("Write", {"file_path": str(wt / "docs" / "docs/usage.md"), "content": "Use calc.api.add and sub.\n"}),
                       Text("Documented.")],
        PLANNER_MARK: [answer],
    }
    before = checkout_snapshot(repo)
    with FakeAPI(scripts) as api:
        done = gitswarm(repo, "start", str(_config(tmp_path, api.url)), GOAL, "--run-id", "r1", timeout=240)
        assert done.returncode == 0, done.stdout + done.stderr
        (plan_request,) = api.scripted(PLANNER_MARK)
        assert [len(api.scripted(k)) for k in scripts if k != PLANNER_MARK] == [2, 2, 2, 2]
    # The planner saw the goal and the repository summary, and worked in its own worktree.
    prompt = _user_texts(plan_request)[0]
    assert GOAL in prompt and "calc/__init__.py" in prompt and "def version()" in prompt
    assert f"Primary working directory: {repo / '.gitswarm' / 'r1' / 'planner'}" in json.dumps(plan_request.body["system"])
    assert not (repo / ".gitswarm" / "r1" / "planner").exists() and _worktrees(repo) == 1
    assert "planner: plan of 4 tasks accepted" in done.stdout and "wave 3:" in done.stdout

    rs = Store(repo).run("r1")
    state = rs.read()
    assert state.run.phase == RunPhase.COMPLETED and {t.status.value for t in state.tasks.values()} == {"done"}
    events = rs.events()
    assert [e["type"] for e in events[:3]] == ["run_created", "planned", "phase_changed"]
    planned = events[1]
    assert [t["id"] for t in planned["tasks"]] == ["add", "sub", "api", "docs"]
    assert planned["tasks"][2]["deps"] == ["add", "sub"] and planned["tasks"][3]["kind"] == "docs"
    assert planned["planner"] == {"role": "planner", "agent": "planner-1", "backend": "claude", "model": "claude-sonnet-4-5"}
    assert (planned["usage"]["input_tokens"], planned["usage"]["output_tokens"]) == (IN, OUT)
    assert planned["turns"][0]["answer"] == answer.text
    assert (rs.read_file("planner/1/prompt.md") or b"").decode() == prompt
    assert (rs.read_file("planner/1/answer.md") or b"").decode() == answer.text
    assert b'"kind": "finished"' in (rs.read_file("planner/1/transcript.jsonl") or b"")
    assert json.loads(rs.read_file("planner/planner.json") or b"{}")["turns"][0]["answer"] == "planner/1/answer.md"
    # The planner's usage counts in the run's.
    attempts = [t.attempts[0] for t in state.tasks.values()]
    assert state.run.usage.input_tokens == IN + sum(a.usage.input_tokens for a in attempts) == IN + 4 * 2 * IN
    for tid, a in zip(state.tasks, attempts):
        worker_prompt = (rs.read_file(a.prompt_path or "") or b"").decode()
        assert worker_prompt.startswith(f"# Task {tid}: {state.tasks[tid].spec.title}")
        assert state.tasks[tid].spec.description in worker_prompt
        assert b"Write" in (rs.read_file(a.transcript_path or "") or b"")
    tip = git(repo, "rev-parse", "attoswarm/r1")
    assert git(repo, "show", f"{tip}:calc/api.py") == "from .add import add\nfrom .sub import sub"
    assert git(repo, "show", f"{tip}:docs/usage.md") == "Use calc.api.add and sub."
    assert len(first_parent_merges(repo, git(repo, "rev-parse", "main"), tip)) == 4
    assert checkout_snapshot(repo) == before, "the user's checkout is untouched"


def test_an_invalid_plan_is_sent_back_once_and_fixed_dry_run(tmp_path: Path) -> None:
    """A cycle goes back to the same claude session with the cycle named; the corrected
    plan is recorded. --dry-run prints it and runs nothing."""
    repo = _repo(tmp_path)
    fixed = {"tasks": [CYCLE["tasks"][0], {**CYCLE["tasks"][1], "deps": ["t1"]}, CYCLE["tasks"][2]]}
    with FakeAPI({PLANNER_MARK: [_fenced(CYCLE), Text(json.dumps(fixed))]}) as api:
        done = gitswarm(repo, "start", str(_config(tmp_path, api.url)), GOAL, "--run-id", "r1", "--dry-run", timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        first, second = api.scripted(PLANNER_MARK)
    assert [m["role"] for m in second.body["messages"]] == ["user", "assistant", "user"], "the session was resumed"
    feedback = _user_texts(second)[-1]
    assert feedback.startswith(f"# {PLANNER_MARK}: the plan was not accepted") and "dependency cycle: t2 -> t4 -> t2" in feedback
    assert "sending it back once" in done.stdout and "dry run: nothing ran" in done.stdout
    assert "t4: End  (after t2; files c.py; role impl)" in done.stdout
    rs = Store(repo).run("r1")
    state = rs.read()
    assert state.run.phase == RunPhase.SHUTDOWN and state.run.reason == "dry_run"
    assert {tid: t.spec.deps for tid, t in state.tasks.items()} == {"t1": (), "t2": ("t1",), "t4": ("t2",)}
    assert all(not t.attempts for t in state.tasks.values())
    (planned,) = [e for e in rs.events() if e["type"] == "planned"]
    assert [t["n"] for t in planned["turns"]] == [1, 2]
    assert planned["turns"][0]["problems"] and "t2 -> t4 -> t2" in planned["turns"][0]["problems"][0]
    assert state.run.usage.input_tokens == 2 * IN
    assert git(repo, "rev-parse", "attoswarm/r1") == git(repo, "rev-parse", "main")
    assert not any(r.startswith("refs/heads/attoswarm-work/") for r in _refs(repo)) and _worktrees(repo) == 1


def test_a_second_invalid_plan_ends_in_planning_failed_with_nothing_created(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    refs_before = _refs(repo)
    before = checkout_snapshot(repo)
    with FakeAPI({PLANNER_MARK: [_fenced(CYCLE), _fenced(CYCLE, before="Still this.")]}) as api:
        done = gitswarm(repo, "start", str(_config(tmp_path, api.url)), GOAL, "--run-id", "r1", timeout=120)
        assert len(api.scripted(PLANNER_MARK)) == 2
    assert done.returncode == 1, done.stdout + done.stderr
    assert "run r1 planning_failed (invalid plan: dependency cycle: t2 -> t4 -> t2)" in done.stdout
    assert _refs(repo) - refs_before == {"refs/attoswarm/r1/state"}, "no swarm branch, no work branch"
    assert _worktrees(repo) == 1 and not (repo / ".gitswarm").exists()
    assert checkout_snapshot(repo) == before
    rs = Store(repo).run("r1")
    state = rs.read()
    assert state.run.phase == RunPhase.PLANNING_FAILED and "t2 -> t4 -> t2" in (state.run.reason or "")
    assert not state.tasks and state.run.usage.input_tokens == 2 * IN
    assert [e["type"] for e in rs.events()] == ["run_created", "planning_failed"]
    assert json.loads(rs.read_file("planner/planner.json") or b"{}")["reason"] == state.run.reason
    assert status(repo, "r1")["phase"] == "planning_failed"
    again = gitswarm(repo, "resume", "r1")
    assert again.returncode == 2 and "planning_failed" in again.stderr


def test_preview_of_a_planned_run_times_out_unapproved(tmp_path: Path) -> None:
    """--preview shows the planned DAG (waves, deps, files, roles) and waits; with
    --approval-timeout an unapproved plan ends the run in shutdown: approval_timeout."""
    repo = _repo(tmp_path)
    with FakeAPI({PLANNER_MARK: [_fenced(PLAN)]}) as api:
        t0 = time.monotonic()
        done = gitswarm(repo, "start", str(_config(tmp_path, api.url)), GOAL, "--run-id", "r1", "--preview",
                        "--approval-timeout", "1", timeout=120)
        took = time.monotonic() - t0
        assert len(api.scripted()) == 1, "only the planner ran"
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "plan: 4 tasks in 3 waves" in out and "waiting for approval: gitswarm approve r1" in out
    assert "add: Add addition  (files calc/add.py; role impl)" in out
    assert "api: Export both  (after add, sub; files calc/api.py; role impl)" in out
    assert "run r1 shutdown (approval_timeout)" in out and took < 30
    state = Store(repo).run("r1").read()
    assert state.run.phase == RunPhase.SHUTDOWN and state.run.reason == "approval_timeout" and state.run.approval is None
    assert all(not t.attempts for t in state.tasks.values())


def test_sigterm_while_planning_stops_the_agent_and_records_it(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    with FakeAPI({PLANNER_MARK: [Fault("hang")]}) as api:
        proc = gitswarm_bg(repo, "start", str(_config(tmp_path, api.url)), GOAL, "--run-id", "r1")
        try:
            _wait_for(lambda: bool(api.scripted(PLANNER_MARK)))
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 1, out
    assert "run r1 planning_failed (planning interrupted (signal:SIGTERM))" in out
    state = Store(repo).run("r1").read()
    assert state.run.phase == RunPhase.PLANNING_FAILED and not state.tasks
    assert _worktrees(repo) == 1 and not (repo / ".gitswarm").exists()


# ---------------------------------------------------------------- approval, with the scripted backend

TASKS = """\
tasks:
  - {id: one, title: One, files: [one.txt], script: [{sleep: %(sleep)s}, {write: {path: one.txt, content: "1\\n"}}]}
  - {id: two, title: Two, deps: [one], files: [two.txt], script: [{write: {path: two.txt, content: "2\\n"}}]}
"""


def _wait_for(check, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def _phase(repo: Path) -> str | None:
    try:
        return Store(repo).run("r1").read().run.phase.value
    except Exception:
        return None


def test_a_timed_out_run_waits_again_on_resume_and_runs_once_approved(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    cfg, tf = write_config(tmp_path, count=1), write_tasks(tmp_path, TASKS % {"sleep": 0})
    # The timeout applies again to the resumed run: long enough for the approve below.
    done = gitswarm(repo, "start", str(cfg), "-t", str(tf), "--run-id", "r1", "--preview", "--approval-timeout", "3")
    assert done.returncode == 1 and "run r1 shutdown (approval_timeout)" in done.stdout, done.stdout + done.stderr
    proc = gitswarm_bg(repo, "resume", "r1")
    try:
        _wait_for(lambda: _phase(repo) == "awaiting_approval")
        assert gitswarm(repo, "approve", "r1").returncode == 0
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert status(repo, "r1")["phase"] == "completed"


def test_a_resumed_approved_run_does_not_ask_again(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    cfg, tf = write_config(tmp_path, count=1), write_tasks(tmp_path, TASKS % {"sleep": 1.5})
    # A resume that asked again would end in approval_timeout after 5 s instead of hanging.
    proc = gitswarm_bg(repo, "start", str(cfg), "-t", str(tf), "--run-id", "r1", "--preview", "--approval-timeout", "5")
    try:
        _wait_for(lambda: _phase(repo) == "awaiting_approval")
        assert gitswarm(repo, "approve", "r1").returncode == 0
        _wait_for(lambda: bool(Store(repo).run("r1").read().tasks["one"].attempts))
        assert gitswarm(repo, "stop", "r1").returncode == 0
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1 and status(repo, "r1")["reason"] == "control:stop", out
    resumed = gitswarm(repo, "resume", "r1", timeout=60)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "waiting for approval" not in resumed.stdout
    assert status(repo, "r1")["phase"] == "completed"


def test_planning_needs_a_model_and_a_goal(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    refs = _refs(repo)
    done = gitswarm(repo, "quick", "Make it better")  # the scripted backend runs no model
    assert done.returncode == 2 and "runs no model" in done.stderr
    done = gitswarm(repo, "start", str(write_config(tmp_path)))
    assert done.returncode == 2 and "give a goal for the planner" in done.stderr
    assert _refs(repo) == refs and not (repo / ".gitswarm").exists()
