"""The claude backend: its parser on real Claude Code output, and the real `claude`
against the fake Anthropic API (tests/fakeapi) doing real edits in a real repository."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gitswarm.backends.base import AgentEvent, AgentRequest, role_options
from gitswarm.backends.claude import ClaudeBackend, Tally, claude_argv, parse_line, result_error
from gitswarm.config import RoleConfig
from gitswarm.model import TaskSpec, Usage

from .agentcli import claude_env, require
from .conftest import make_repo
from .fakeapi import FakeAPI, Fault, Shell, Text, Tool

DATA = Path(__file__).parent / "data" / "agent_output"
# The fake API reports these per request; Claude Code prices claude-sonnet-4-5 itself.
IN, OUT = 100, 20
MODEL = "claude-sonnet-4-5"


def _request(workdir: Path, prompt: str, **kw: Any) -> AgentRequest:
    defaults: dict[str, Any] = dict(task=TaskSpec(id="t1", title="Write hello"), attempt=1, prompt=prompt,
                                    workdir=workdir, role_id="impl", backend="claude", agent_id="impl-1", model=MODEL)
    defaults.update(kw)
    return AgentRequest(**defaults)


def _drain(run: Any) -> list[AgentEvent]:
    return list(run.events())


# -- the parser, on output the real CLI printed ------------------------------------------------


def test_parse_a_real_stream() -> None:
    lines = (DATA / "claude-2.1.197-write-edit-bash.jsonl").read_text().splitlines()
    events = [e for line in lines for e in parse_line(line)]
    tools = [e.data["name"] for e in events if e.kind == "tool" and "name" in e.data]
    assert tools == ["Write", "Edit", "Bash"]
    changed = [Path(e.data["path"]).name for e in events if e.kind == "file_changed"]
    assert changed == ["hello.py", "hello.py"]
    results = [e for e in events if e.kind == "tool" and "result_of" in e.data]
    assert len(results) == 3 and results[2].data["output"] == "print('hello')"
    assert [e.text for e in events if e.kind == "message" and not e.data] == ["Done: hello.py prints hello."]
    final = events[-1]
    assert final.kind == "finished" and final.data["ok"] is True and final.data["num_turns"] == 4
    assert final.data["usage"]["input_tokens"] == 4 * IN and final.data["usage"]["output_tokens"] == 4 * OUT
    assert final.data["session"] == events[0].data["session"]


def test_is_error_with_subtype_success_is_a_failure() -> None:
    line = json.dumps({"type": "result", "subtype": "success", "is_error": True, "api_error_status": 529,
                       "result": "API Error: 529 overloaded", "session_id": "s", "total_cost_usd": 0})
    (event,) = parse_line(line)
    assert event.data["ok"] is False
    assert event.data["error"] == "API Error: 529 overloaded (API status 529)"


def test_max_turns_names_the_reason() -> None:
    obj = {"type": "result", "subtype": "error_max_turns", "is_error": True, "errors": ["Reached maximum number of turns (3)"]}
    assert result_error(obj) == "error_max_turns: Reached maximum number of turns (3)"
    assert result_error({"type": "result", "subtype": "success", "is_error": False}) is None


def test_unknown_and_malformed_lines_do_not_break_the_stream() -> None:
    assert parse_line('{"type":"rate_limit_event","rate_limit_info":{"status":"allowed"}}') == []
    assert parse_line("") == []
    (bad,) = parse_line('{"type": "assistant", "message": {')
    assert bad.kind == "message" and bad.data == {"malformed": True}
    (listed,) = parse_line("[1, 2]")
    assert listed.data == {"malformed": True}


def test_tokens_add_up_per_turn_and_cost_is_a_running_total() -> None:
    # Measured with 2.1.197: two turns in one process report 200 input tokens each and
    # total_cost_usd 0.0012 then 0.0024.
    tally = Tally()
    first = tally.add({"usage": {"input_tokens": 200, "output_tokens": 40}, "total_cost_usd": 0.0012, "session": "s"})
    second = tally.add({"usage": {"input_tokens": 200, "output_tokens": 40}, "total_cost_usd": 0.0024})
    assert (first.cost_usd, second.cost_usd) == (0.0012, 0.0012)
    assert tally.usage() == Usage(input_tokens=400, output_tokens=80, cost_usd=0.0024)
    assert tally.session == "s" and tally.results == 2


def test_argv_from_the_role(tmp_path: Path) -> None:
    role = RoleConfig("impl", "claude", max_turns=7, permission_mode="bypassPermissions", allowed_tools=["Bash"],
                      append_system_prompt="Be brief.", args=["--add-dir", "/data"])
    req = _request(tmp_path, "p", options=role_options(role), session="-abc", args=tuple(role.args))
    argv = claude_argv("claude", req)
    assert argv[:8] == ["claude", "-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose",
                        "--replay-user-messages"]
    pairs = dict(zip(argv[8::2], argv[9::2]))
    assert pairs["--model"] == MODEL and pairs["--max-turns"] == "7"
    assert pairs["--permission-mode"] == "bypassPermissions" and pairs["--allowedTools"] == "Bash"
    assert pairs["--append-system-prompt"] == "Be brief."
    assert "--resume=-abc" in argv and argv[-2:] == ["--add-dir", "/data"]
    plain = claude_argv("claude", _request(tmp_path, "p", model=None))
    assert "--model" not in plain and "--resume" not in " ".join(plain)
    assert plain[plain.index("--permission-mode") + 1] == "acceptEdits"


# -- the real claude against the fake API --------------------------------------------------


@pytest.fixture
def claude() -> str:
    return require("claude")


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "wt", {"README.md": "# demo\n"})


def _env(api: FakeAPI, tmp_path: Path, **extra: str) -> dict[str, str]:
    # No retries: a failure the fake API is told to give must end the attempt now.
    return {**claude_env(api.url, tmp_path / "home"), "CLAUDE_CODE_MAX_RETRIES": "0", **extra}


def test_real_claude_writes_edits_and_runs_a_command(claude: str, worktree: Path, tmp_path: Path) -> None:
    script = [Tool("Write", {"file_path": str(worktree / "hello.py"), "content": "print('hi')\n"}),
              Tool("Edit", {"file_path": str(worktree / "hello.py"), "old_string": "hi", "new_string": "hello"}),
              Shell("python3 hello.py > out.txt"),
              Text("Done: hello.py prints hello.")]
    with FakeAPI({"t1": script}) as api:
        run = ClaudeBackend().start(_request(worktree, "task t1: write hello.py", command=claude,
                                             env=_env(api, tmp_path), heartbeat_timeout=60))
        events = _drain(run)
    result = run.result
    assert result.ok, result.error
    assert (worktree / "hello.py").read_text() == "print('hello')\n"
    assert (worktree / "out.txt").read_text() == "hello\n"
    assert result.summary == "Done: hello.py prints hello."
    assert result.usage.input_tokens == 4 * IN and result.usage.output_tokens == 4 * OUT
    assert result.usage.cost_usd == pytest.approx((4 * IN * 3 + 4 * OUT * 15) / 1e6)  # sonnet's price
    assert result.session and len(result.session) == 36
    assert [e.kind for e in events][0] == "started" and events[-1].kind == "finished"
    assert sum(1 for e in events if e.kind == "usage") == 1
    # The model saw the prompt; the file paths were the worktree's.
    first = api.scripted("t1")[0].body
    assert "task t1: write hello.py" in json.dumps(first["messages"][0])


def test_inject_reaches_the_running_session(claude: str, worktree: Path, tmp_path: Path) -> None:
    # Claude Code takes a message sent mid-turn into that turn: the model sees it with the
    # next tool result, and one `result` ends both.
    script = [Shell("echo one > a.txt && sleep 1"), Shell("echo two >> a.txt"), Text("both lines written")]
    with FakeAPI({"t1": script}) as api:
        run = ClaudeBackend().start(_request(worktree, "task t1: start", command=claude, env=_env(api, tmp_path),
                                             heartbeat_timeout=30))
        events = []
        started = time.monotonic()
        for event in run.events():
            events.append(event)
            if event.kind == "tool" and "echo one" in event.text and "name" in event.data:
                assert run.inject("task t1, also: add a second line")
        took = time.monotonic() - started
        assert not run.inject("too late")
    assert run.result.ok, run.result.error
    assert took < 20  # stdin was closed once the message was taken: no wait for the heartbeat
    assert (worktree / "a.txt").read_text() == "one\ntwo\n"
    assert run.result.summary == "both lines written"
    assert len({e.data["pid"] for e in events if e.kind == "started"}) == 1  # one process, one session
    assert [e.text for e in events if e.data.get("replay")] == [
        "taken: task t1: start", "taken: task t1, also: add a second line"]
    second = api.scripted("t1")[1].body["messages"]
    assert any("also: add a second line" in json.dumps(m) for m in second if m["role"] == "user")


def test_a_retry_resumes_the_session(claude: str, worktree: Path, tmp_path: Path) -> None:
    script = [Shell("echo one > a.txt"), Text("first done"), Text("I remember: a.txt has one line.")]
    with FakeAPI({"t1": script}) as api:
        env = _env(api, tmp_path)
        first = ClaudeBackend().start(_request(worktree, "task t1: go", command=claude, env=env))
        _drain(first)
        assert first.result.ok, first.result.error
        again = ClaudeBackend().start(_request(worktree, "task t1: what did you do?", command=claude, env=env,
                                               attempt=2, session=first.result.session))
        _drain(again)
    assert again.result.ok, again.result.error
    assert again.result.summary == "I remember: a.txt has one line."
    assert again.result.session == first.result.session
    history = api.scripted("t1")[-1].body["messages"]
    assert any("echo one" in json.dumps(m) for m in history)  # the old turns came back


@pytest.mark.parametrize("fault, words", [
    (Fault("status", status=500), "API Error: 500"),
    (Fault("status", status=401, message="invalid x-api-key"), "Invalid API key"),
    (Fault("cut"), "API Error"),
])
def test_api_failures_end_the_attempt_with_the_reason(claude: str, worktree: Path, tmp_path: Path,
                                                      fault: Fault, words: str) -> None:
    with FakeAPI({"t1": [fault]}) as api:
        run = ClaudeBackend().start(_request(worktree, "task t1: go", command=claude, env=_env(api, tmp_path),
                                             heartbeat_timeout=60))
        events = _drain(run)
    assert not run.result.ok
    assert words in (run.result.error or "")
    assert events[-1].kind == "finished" and events[-1].data["ok"] is False


def test_a_hanging_api_is_caught_by_the_heartbeat(claude: str, worktree: Path, tmp_path: Path) -> None:
    with FakeAPI({"t1": [Fault("hang")]}) as api:
        started = time.monotonic()
        run = ClaudeBackend().start(_request(worktree, "task t1: go", command=claude, env=_env(api, tmp_path),
                                             heartbeat_timeout=4))
        _drain(run)
        took = time.monotonic() - started
    assert not run.result.ok
    assert run.result.error == "no output for 4 s (heartbeat_timeout_seconds)"
    assert took < 15


# -- misbehaving stand-ins for what the real CLI cannot be made to do ----------------------------


def _fake_cli(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-claude"
    path.write_text(f"#!{sys.executable}\nimport sys, json, time, os\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_no_result_event_and_a_bad_exit_is_a_failure_with_stderr(worktree: Path, tmp_path: Path) -> None:
    cli = _fake_cli(tmp_path, 'print("{not json"); print(json.dumps({"type": "system", "subtype": "init", '
                              '"session_id": "s1"}), flush=True); sys.stderr.write("Error: boom\\n"); sys.exit(3)')
    run = ClaudeBackend().start(_request(worktree, "p", command=cli))
    events = _drain(run)
    assert not run.result.ok
    assert run.result.error == ("fake-claude exited with code 3 (last stderr: Error: boom); "
                                "it printed no result event")
    assert run.result.session == "s1"
    assert any(e.data.get("malformed") for e in events)


def test_a_result_after_garbage_still_counts(worktree: Path, tmp_path: Path) -> None:
    cli = _fake_cli(tmp_path, 'sys.stdin.readline(); print("garbage line"); print(json.dumps({"type": "result", '
                              '"subtype": "success", "is_error": False, "result": "ok then", "session_id": "s", '
                              '"usage": {"input_tokens": 5, "output_tokens": 2}, "total_cost_usd": 0.5}))')
    run = ClaudeBackend().start(_request(worktree, "p", command=cli, options={"price": {"input": 1000, "output": 1000}}))
    _drain(run)
    assert run.result.ok and run.result.summary == "ok then"
    assert run.result.usage == Usage(input_tokens=5, output_tokens=2, cost_usd=0.5)  # the CLI's cost wins


def test_a_killed_cli_is_reported(worktree: Path, tmp_path: Path) -> None:
    cli = _fake_cli(tmp_path, 'print(json.dumps({"type": "system", "subtype": "init", "session_id": "s"}), '
                              'flush=True); os.kill(os.getpid(), 9)')
    run = ClaudeBackend().start(_request(worktree, "p", command=cli))
    _drain(run)
    assert not run.result.ok and "killed by signal 9 (SIGKILL)" in (run.result.error or "")


def test_a_flood_is_cut_and_the_attempt_still_ends(worktree: Path, tmp_path: Path) -> None:
    cli = _fake_cli(tmp_path, 'out = sys.stdout\nfor _ in range(20): out.write("x" * (1 << 20))\n'
                              'out.write("\\n"); out.flush(); sys.exit(0)')
    run = ClaudeBackend().start(_request(worktree, "p", command=cli))
    events = _drain(run)
    cut = [e for e in events if e.data.get("truncated")]
    assert len(cut) == 1 and len(cut[0].text) < 100_000
    assert not run.result.ok and "no result event" in (run.result.error or "")


def test_root_refusal_names_the_fix(worktree: Path, tmp_path: Path) -> None:
    cli = _fake_cli(tmp_path, 'sys.stderr.write("--dangerously-skip-permissions cannot be used with root/sudo '
                              'privileges for security reasons\\n"); sys.exit(1)')
    run = ClaudeBackend().start(_request(worktree, "p", command=cli))
    _drain(run)
    assert "needs IS_SANDBOX=1 in the role's env" in (run.result.error or "")

