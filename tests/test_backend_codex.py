"""The codex backend (`codex exec --json`): its parser on real Codex output, and the
real `codex` against the fake Responses API (tests/fakeapi) editing a real repository."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gitswarm.backends.base import AgentEvent, AgentRequest
from gitswarm.backends.codex import CodexBackend, codex_argv, parse_line, turn_usage
from gitswarm.model import TaskSpec, Usage

from .agentcli import codex_env, codex_provider_args, require
from .conftest import make_repo
from .fakeapi import FakeAPI, Fault, Shell, Text

DATA = Path(__file__).parent / "data" / "agent_output"
IN, OUT = 100, 20  # what the fake API reports per request
PRICE = {"input": 2.0, "output": 8.0, "cache_read": 0.5, "cache_write": 2.0}


def _request(workdir: Path, prompt: str, **kw: Any) -> AgentRequest:
    defaults: dict[str, Any] = dict(task=TaskSpec(id="t1", title="Make a.py"), attempt=1, prompt=prompt,
                                    workdir=workdir, role_id="cx", backend="codex", agent_id="cx-1", model="gpt-fake")
    defaults.update(kw)
    return AgentRequest(**defaults)


def _drain(run: Any) -> list[AgentEvent]:
    return list(run.events())


# -- the parser --------------------------------------------------------------------------------


def test_parse_a_real_stream() -> None:
    lines = (DATA / "codex-0.169.0-shell.jsonl").read_text().splitlines()
    events = [e for line in lines for e in parse_line(line)]
    assert events[0].data["thread"] and events[1].data == {"warning": True}  # "Model metadata ... not found"
    tools = [e for e in events if e.kind == "tool"]
    assert len(tools) == 2 and tools[1].data["exit_code"] == 0 and tools[1].data["output"] == "made\n"
    assert [e.text for e in events if e.kind == "message" and "item" in e.data] == ["Done: a.py and b.py."]
    assert events[-1].kind == "finished" and events[-1].data["ok"] is True
    assert Usage.from_json(events[-1].data["usage"]) == Usage(input_tokens=3 * IN, output_tokens=3 * OUT)


def test_cached_input_is_counted_apart() -> None:
    assert turn_usage({"input_tokens": 1000, "cached_input_tokens": 600, "output_tokens": 50}) == Usage(
        input_tokens=400, output_tokens=50, cache_read_tokens=600)


def test_file_changes_failures_and_notices() -> None:
    (a, b) = parse_line(json.dumps({"type": "item.completed", "item": {"id": "item_4", "type": "file_change", "status": "completed",
                                    "changes": [{"path": "/w/a.py", "kind": "update"}, {"path": "/w/n.md", "kind": "add"}]}}))
    assert (a.kind, a.data, b.data["kind"]) == ("file_changed", {"path": "/w/a.py", "kind": "update"}, "add")
    (retry,) = parse_line('{"type":"error","message":"Reconnecting... 1/5 (unexpected status 502)"}')
    assert retry.kind == "message" and retry.data == {"retry": True}
    error, finished = parse_line('{"type":"turn.failed","error":{"message":"unexpected status 404 Not Found"}}')
    assert error.kind == "error" and finished.data == {"ok": False, "error": "unexpected status 404 Not Found"}
    (bad,) = parse_line('{"type": "item.completed", "item": ')
    assert bad.data == {"malformed": True}


def test_argv(tmp_path: Path) -> None:
    argv = codex_argv("codex", _request(tmp_path, "p", options={"sandbox": "danger-full-access"}, args=("-c", "x=1")))
    assert argv == ["codex", "exec", "--json", "--skip-git-repo-check", "--sandbox", "danger-full-access",
                    "-m", "gpt-fake", "-C", str(tmp_path), "-c", "x=1", "-"]
    resumed = codex_argv("codex", _request(tmp_path, "p", model=None, session="th-1"))
    assert resumed[-3:] == ["resume", "th-1", "-"] and "-m" not in resumed
    assert resumed[resumed.index("--sandbox") + 1] == "workspace-write"


# -- the real codex against the fake API -----------------------------------------------------


@pytest.fixture
def codex() -> str:
    return require("codex")


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "wt", {"README.md": "# demo\n"})


def _start(codex: str, api: FakeAPI, worktree: Path, tmp_path: Path, prompt: str = "task t1: make a.py",
           idle_ms: int = 5000, **kw: Any):
    return CodexBackend().start(_request(worktree, prompt, command=codex, env=codex_env(tmp_path / "home"),
                                         args=tuple(codex_provider_args(api.url, idle_ms)), **kw))


def test_real_codex_runs_shell_commands_that_edit_the_worktree(codex: str, worktree: Path, tmp_path: Path) -> None:
    script = [Shell("printf 'x = 1\\n' > a.py"), Shell("python3 -c 'import a; print(a.x)'"), Text("Done: a.py defines x.")]
    with FakeAPI({"t1": script}) as api:
        run = _start(codex, api, worktree, tmp_path, options={"price": PRICE}, heartbeat_timeout=60)
        events = _drain(run)
    result = run.result
    assert result.ok, result.error
    assert (worktree / "a.py").read_text() == "x = 1\n"
    assert result.summary == "Done: a.py defines x."
    assert result.usage.input_tokens == 3 * IN and result.usage.output_tokens == 3 * OUT
    assert result.usage.cost_usd == pytest.approx((3 * IN * 2.0 + 3 * OUT * 8.0) / 1e6)
    assert result.session and len(result.session) == 36
    outputs = [e.data.get("output") for e in events if e.kind == "tool" and "exit_code" in e.data]
    assert outputs == ["", "1\n"]
    assert "task t1: make a.py" in json.dumps(api.scripted("t1")[0].body["input"])


def test_a_retry_resumes_the_thread_and_counts_only_its_own_tokens(codex: str, worktree: Path, tmp_path: Path) -> None:
    script = [Shell("echo one > a.txt"), Text("first done"), Text("second done")]
    with FakeAPI({"t1": script}) as api:
        first = _start(codex, api, worktree, tmp_path)
        _drain(first)
        assert first.result.ok, first.result.error
        again = _start(codex, api, worktree, tmp_path, prompt="task t1: again", attempt=2, session=first.result.session,
                       options={"session_usage": first.result.usage.to_json()})
        _drain(again)
    assert again.result.ok, again.result.error
    assert again.result.summary == "second done"
    assert again.result.session == first.result.session
    # codex reports the thread's total (3 requests) after resume; this attempt made one.
    assert (again.result.usage.input_tokens, again.result.usage.output_tokens) == (IN, OUT)
    assert "echo one" in json.dumps(api.scripted("t1")[-1].body["input"])


@pytest.mark.parametrize("fault, words", [
    (Fault("status", status=500), "high demand"),  # codex's own wording for a 5xx
    (Fault("status", status=400, message="model not supported"), "model not supported"),
    (Fault("cut"), "stream disconnected before completion"),
    (Fault("garbage"), "stream"),
])
def test_api_failures_end_the_attempt_with_the_reason(codex: str, worktree: Path, tmp_path: Path,
                                                      fault: Fault, words: str) -> None:
    with FakeAPI({"t1": [fault]}) as api:
        run = _start(codex, api, worktree, tmp_path, heartbeat_timeout=60)
        _drain(run)
    assert not run.result.ok
    assert words in (run.result.error or "")


def test_a_hanging_api_is_caught_by_the_heartbeat(codex: str, worktree: Path, tmp_path: Path) -> None:
    with FakeAPI({"t1": [Fault("hang")]}) as api:
        started = time.monotonic()
        run = _start(codex, api, worktree, tmp_path, idle_ms=300_000, heartbeat_timeout=4)
        _drain(run)
    assert not run.result.ok
    assert run.result.error == "no output for 4 s (heartbeat_timeout_seconds)"
    assert time.monotonic() - started < 15


# -- misbehaving stand-ins -------------------------------------------------------------------


def _fake_cli(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-codex"
    path.write_text(f"#!{sys.executable}\nimport sys, json, os\nsys.stdin.read()\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_a_turn_that_ends_without_an_event_failed_even_with_exit_0(worktree: Path, tmp_path: Path) -> None:
    cli = _fake_cli(tmp_path, 'print(json.dumps({"type": "thread.started", "thread_id": "th"}))\n'
                              'print(json.dumps({"type": "turn.started"}))\nprint("{oops")\nsys.exit(0)')
    run = CodexBackend().start(_request(worktree, "p", command=cli))
    events = _drain(run)
    assert not run.result.ok
    error = run.result.error or ""
    assert error.startswith("codex ended without finishing its turn: fake-codex exited with code 0 (last output: ")
    assert error.endswith(" | {oops)")
    assert run.result.session == "th"
    assert any(e.data.get("malformed") for e in events)


def test_the_turn_decides_not_the_exit_code(worktree: Path, tmp_path: Path) -> None:
    cli = _fake_cli(tmp_path, 'print(json.dumps({"type": "item.completed", "item": {"id": "i", "type": "agent_message", '
                              '"text": "all good"}}))\nprint(json.dumps({"type": "turn.completed", "usage": '
                              '{"input_tokens": 10, "output_tokens": 1}}))\nsys.exit(1)')
    run = CodexBackend().start(_request(worktree, "p", command=cli))
    _drain(run)
    assert run.result.ok and run.result.summary == "all good" and run.result.exit == 1


def test_a_killed_codex_is_reported(worktree: Path, tmp_path: Path) -> None:
    cli = _fake_cli(tmp_path, 'print(json.dumps({"type": "turn.started"}), flush=True)\nos.kill(os.getpid(), 9)')
    run = CodexBackend().start(_request(worktree, "p", command=cli))
    _drain(run)
    assert not run.result.ok and "killed by signal 9 (SIGKILL)" in (run.result.error or "")


def test_a_long_final_answer_is_kept_when_the_caller_asks(worktree: Path, tmp_path: Path) -> None:
    # A planner's answer is its plan: it must not be cut at the usual 2,000 characters.
    long = "x" * 9000
    body = (f'print(json.dumps({{"type": "item.completed", "item": {{"id": "i", "type": "agent_message", "text": "{long}"}}}}))\n'
            'print(json.dumps({"type": "turn.completed", "usage": {"input_tokens": 1, "output_tokens": 1}}))')
    cli = _fake_cli(tmp_path, body)
    short = CodexBackend().start(_request(worktree, "p", command=cli))
    _drain(short)
    kept = CodexBackend().start(_request(worktree, "p", command=cli, options={"summary_limit": 60000}))
    _drain(kept)
    assert len(short.result.summary) == 2000 and kept.result.summary == long
