"""The codex-mcp backend: one long-lived Codex process per agent, one thread per task.

Three layers:
- the pure protocol mapping (message dicts -> AgentEvents, token accounting), with
  messages as the real codex 0.169 app-server sends them;
- the real `codex app-server` (0.169) against the fake model API (tests/fakeapi): threads,
  inject, resume, the failure modes;
- the old `codex mcp-server` protocol against tests/data/fake_codex_mcp_server.py.

The real codex runs with model "fake-model": for a model it knows (its default), codex
0.169 sends its tools as "code mode" input items instead of the `tools` list, and the fake
API answers a request without `tools` as a side call, not from the script.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from gitswarm.backends.base import AgentEvent, AgentRequest, can_inject
from gitswarm.backends.codex_mcp import (
    APP_SERVER,
    MCP_SERVER,
    AppServerTurn,
    CodexMcpBackend,
    CodexTokens,
    McpTurn,
    ProtocolUnavailable,
    TokenLedger,
    answer_server_request,
    detect_protocol,
)
from gitswarm.backends.jsonrpc import StdioJsonRpc
from gitswarm.backends.process import heartbeat_error, timeout_error
from gitswarm.model import TaskSpec, Usage
from tests.agentcli import codex_env, codex_provider_args, require
from tests.fakeapi import FakeAPI, Fault, Shell, Text

FAKE_MCP = Path(__file__).resolve().parent / "data" / "fake_codex_mcp_server.py"
THREAD = "01a2089b-56e8-7fa1-8281-d5ecd4aeb7e2"
TURN = "01a2089b-5717-7341-9474-5ba0334a1fe3"


# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A real repository with one commit, as a worktree would be."""
    path = tmp_path / "repo"
    path.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=path, check=True)
    (path / "README.md").write_text("hello\n")
    subprocess.run([*git, "add", "README.md"], cwd=path, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], cwd=path, check=True)
    return path


@pytest.fixture
def backend() -> Iterator[CodexMcpBackend]:
    b = CodexMcpBackend()
    yield b
    b.close()


def make_request(workdir: Path, prompt: str, **kw: Any) -> AgentRequest:
    fields: dict[str, Any] = dict(task=TaskSpec(id="t1", title="task one"), attempt=1, prompt=prompt, workdir=workdir,
                                  role_id="coder", backend="codex-mcp", agent_id="agent-1", timeout=30,
                                  heartbeat_timeout=15)
    fields.update(kw)
    return AgentRequest(**fields)


def drain(run: Any, on_event: Callable[[AgentEvent], None] | None = None) -> list[AgentEvent]:
    """All events of a run; checks the stream's shape (started first, one finished last)."""
    events = []
    for event in run.events():
        events.append(event)
        if on_event is not None:
            on_event(event)
    kinds = [e.kind for e in events]
    assert kinds[-1] == "finished" and kinds.count("finished") == 1, kinds
    if "started" in kinds:
        assert kinds[0] == "started", kinds
    assert events[-1].data == run.result.to_json()
    return events


def of(events: list[AgentEvent], kind: str) -> list[AgentEvent]:
    return [e for e in events if e.kind == kind]


def pid_gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


# -- pure mapping -------------------------------------------------------------------------------


def _usage_note(turn: str, total: int, last: int = 1, cached: int = 0) -> dict[str, Any]:
    def breakdown(n: int) -> dict[str, int]:
        return {"totalTokens": 120 * n, "inputTokens": 100 * n, "cachedInputTokens": cached * n,
                "cacheWriteInputTokens": 0, "outputTokens": 20 * n, "reasoningOutputTokens": 0}
    return {"method": "thread/tokenUsage/updated", "params": {
        "threadId": THREAD, "turnId": turn, "tokenUsage": {"total": breakdown(total), "last": breakdown(last),
                                                           "modelContextWindow": 258400}}}


def _item(turn: str, item: dict[str, Any]) -> dict[str, Any]:
    return {"method": "item/completed", "params": {"item": item, "threadId": THREAD, "turnId": turn,
                                                    "completedAtMs": 1}}


def _completed(turn: str, status: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"method": "turn/completed", "params": {"threadId": THREAD, "turn": {
        "id": turn, "items": [], "status": status, "error": error}}}


def test_app_server_turn_maps_items_usage_and_status() -> None:
    turn = AppServerTurn(THREAD)
    stream = [
        {"id": 3, "result": {"turn": {"id": TURN, "items": [], "status": "inProgress"}}},
        {"method": "turn/started", "params": {"threadId": THREAD, "turn": {"id": TURN, "status": "inProgress"}}},
        _item(TURN, {"type": "commandExecution", "id": "c1", "command": "/bin/bash -lc 'printf x > a.py'",
                     "status": "completed", "exitCode": 0, "aggregatedOutput": "ok\n"}),
        _item(TURN, {"type": "fileChange", "id": "f1", "status": "completed",
                     "changes": [{"path": "/w/b.py", "kind": {"type": "add"}, "diff": "+x"}]}),
        _usage_note(TURN, 1),
        _item(TURN, {"type": "agentMessage", "id": "m1", "text": "done one"}),
        _item("another-turn", {"type": "agentMessage", "id": "m2", "text": "not ours"}),
        _usage_note(TURN, 2),
        _completed(TURN, "completed"),
    ]
    events = turn.on_response(stream[0])
    for message in stream[1:]:
        events += turn.feed(message)
    assert [e.kind for e in events] == ["tool", "file_changed", "message"]
    assert events[0].data == {"command": "/bin/bash -lc 'printf x > a.py'", "exit_code": 0, "output": "ok\n",
                              "status": "completed"}
    assert events[1].data == {"path": "/w/b.py", "kind": "add", "action": "add"}
    assert (turn.done, turn.ok, turn.last_message) == (True, True, "done one")
    assert turn.ledger.usage() == Usage(input_tokens=200, output_tokens=40)


def test_app_server_failed_turn_names_the_protocol_error() -> None:
    turn = AppServerTurn(THREAD)
    turn.on_response({"id": 3, "result": {"turn": {"id": TURN}}})
    error = {"message": "We're currently experiencing high demand", "codexErrorInfo": "internalServerError"}
    events = turn.feed({"method": "error", "params": {"error": error, "willRetry": False, "threadId": THREAD,
                                                      "turnId": TURN}})
    turn.feed(_completed(TURN, "failed", error))
    assert [e.kind for e in events] == ["error"]
    assert (turn.done, turn.ok) == (True, False)
    assert turn.error == "codex turn failed: We're currently experiencing high demand [internalServerError]"


def test_app_server_ignores_other_turns_and_fails_on_a_cut_completion() -> None:
    turn = AppServerTurn(THREAD)
    turn.on_response({"id": 3, "result": {"turn": {"id": TURN}}})
    turn.feed(_completed("an-older-turn", "completed"))
    assert not turn.done
    turn.on_cut("turn/completed", 5000)
    assert turn.done and not turn.ok and "too long" in (turn.error or "")


def test_usage_of_a_resumed_thread_is_the_turn_not_the_thread() -> None:
    """A resumed thread first replays its old total (with the old turn id): only what this
    turn added counts, and Codex's input_tokens (which include cached ones) are split."""
    turn = AppServerTurn(THREAD)
    turn.on_response({"id": 3, "result": {"turn": {"id": TURN}}})
    turn.feed(_usage_note("old-turn", 3, cached=40))
    turn.feed(_usage_note(TURN, 4, cached=40))
    assert turn.ledger.usage() == Usage(input_tokens=60, output_tokens=20, cache_read_tokens=40)


def test_token_ledger_without_a_known_base_uses_the_first_calls_own_usage() -> None:
    ledger = TokenLedger(None)
    ledger.update(CodexTokens(input=500, output=50), CodexTokens(input=100, output=10), own=True)
    ledger.update(CodexTokens(input=700, output=70), CodexTokens(input=200, output=20), own=True)
    assert ledger.usage() == Usage(input_tokens=300, output_tokens=30)
    assert TokenLedger(CodexTokens(input=5)).usage() == Usage()  # no update of its own: nothing


def test_mcp_turn_maps_codex_events_and_the_call_result() -> None:
    turn = McpTurn(7, None)
    meta = {"requestId": 7, "threadId": THREAD}

    def ev(msg: dict[str, Any], request_id: int = 7) -> list[AgentEvent]:
        return turn.feed({"method": "codex/event", "params": {"_meta": {**meta, "requestId": request_id}, "msg": msg}})

    events = ev({"type": "session_configured", "session_id": THREAD})
    events += ev({"type": "exec_command_end", "command": ["bash", "-lc", "ls"], "exit_code": 2,
                  "aggregated_output": "nope"})
    events += ev({"type": "patch_apply_begin", "call_id": "p", "changes": {"/w/a.py": {"add": {"content": "x"}}}})
    events += ev({"type": "patch_apply_end", "call_id": "p", "success": True})
    events += ev({"type": "agent_message", "message": "from another call"}, request_id=8)
    events += ev({"type": "agent_message", "message": "all done"})
    events += ev({"type": "token_count", "info": {"total_token_usage": {"input_tokens": 100, "cached_input_tokens": 30,
                                                                        "output_tokens": 9}, "last_token_usage": None}})
    assert [e.kind for e in events] == ["tool", "file_changed", "message"]
    assert events[0].data["command"] == "bash -lc ls" and events[0].data["exit_code"] == 2
    assert events[1].data["path"] == "/w/a.py" and events[1].data["kind"] == "add"
    turn.on_response({"id": 7, "result": {"content": [{"type": "text", "text": "all done"}],
                                          "structuredContent": {"threadId": THREAD, "content": "all done"}}})
    assert (turn.done, turn.ok, turn.thread, turn.last_message) == (True, True, THREAD, "all done")
    assert turn.ledger.usage() == Usage(input_tokens=70, output_tokens=9, cache_read_tokens=30)

    failed = McpTurn(9, THREAD)
    failed.on_response({"id": 9, "result": {"content": [{"type": "text", "text": "quota exceeded"}], "isError": True}})
    assert failed.done and not failed.ok and "quota exceeded" in (failed.error or "")


def test_server_requests_are_answered_no() -> None:
    result, note = answer_server_request(APP_SERVER, "item/commandExecution/requestApproval",
                                         {"command": "rm -rf /", "itemId": "i"})
    assert result == {"decision": "decline"} and "rm -rf /" in note
    assert answer_server_request(APP_SERVER, "execCommandApproval", {"command": ["ls"]})[0] == {"decision": "denied"}
    assert answer_server_request(APP_SERVER, "mcpServer/elicitation/request", {})[0] == {"action": "decline"}
    assert answer_server_request(MCP_SERVER, "elicitation/create", {})[0] == {"decision": "denied"}
    assert answer_server_request(APP_SERVER, "something/new", {})[0] is None


# -- the JSON-RPC client ------------------------------------------------------------------------


def test_jsonrpc_client_cuts_long_lines_and_flags_malformed_ones(tmp_path: Path) -> None:
    script = ("import sys\n"
              "sys.stdin.readline()\n"
              "print('{\"id\": 1, \"result\": \"' + 'x' * 50000 + '\"}')\n"
              "print('not json at all')\n"
              "print('{\"method\": \"ping\"}')\n")
    client = StdioJsonRpc([sys.executable, "-c", script], cwd=tmp_path, max_line_bytes=1024)
    try:
        client.request("go")
        items = []
        while len(items) < 3:
            item = client.get(5)
            assert item is not None
            items.append(item)
        line_bytes = len('{"id": 1, "result": "') + 50000 + len('"}')
        assert (items[0].kind, items[0].id, items[0].dropped) == ("cut", 1, line_bytes - 1024)
        assert len(items[0].text) <= 1024
        assert items[1].kind == "malformed" and items[1].text == "not json at all"
        assert items[2].kind == "message" and items[2].message == {"method": "ping"}
        assert wait_for(lambda: client.exit_code() == 0)
    finally:
        client.close()


# -- protocol detection -------------------------------------------------------------------------


def test_detect_protocol() -> None:
    assert detect_protocol(str(FAKE_MCP)) == MCP_SERVER
    with pytest.raises(ProtocolUnavailable, match="neither"):
        detect_protocol("true")
    with pytest.raises(ProtocolUnavailable, match="not found"):
        detect_protocol("/nonexistent/codex")


def test_detect_protocol_of_the_real_codex() -> None:
    assert detect_protocol(require("codex")) == APP_SERVER


def test_a_missing_binary_or_bad_sandbox_fails_the_run(backend: CodexMcpBackend, tmp_path: Path) -> None:
    run = backend.start(make_request(tmp_path, "hi", command="/nonexistent/codex"))
    events = drain(run)
    assert not run.result.ok and "not found" in (run.result.error or "") and of(events, "started") == []
    run = backend.start(make_request(tmp_path, "hi", command=str(FAKE_MCP), options={"sandbox": "yolo"}))
    drain(run)
    assert not run.result.ok and "sandbox must be one of" in (run.result.error or "")


# -- the real codex app-server ------------------------------------------------------------------


def codex_request(api: FakeAPI, repo: Path, home: Path, prompt: str, env: dict[str, str] | None = None,
                  **kw: Any) -> AgentRequest:
    return make_request(repo, prompt, command=require("codex"), model="fake-model",
                        args=tuple(codex_provider_args(api.url)), env={**codex_env(home), **(env or {})}, **kw)


def test_two_messages_to_one_task_share_a_thread_and_a_process(backend: CodexMcpBackend, repo: Path,
                                                                tmp_path: Path) -> None:
    home = tmp_path / "home"
    script = {"t1": [Shell("printf 'x = 1\\n' > a.py"), Text("created a.py"), Text("checked it"), Text("third")]}
    with FakeAPI(script) as api:
        run = backend.start(codex_request(api, repo, home, "task t1: create a.py",
                                          options={"price": {"input": 1.0, "output": 10.0}}))
        assert can_inject(run)
        injected: list[bool] = []

        def on_event(event: AgentEvent) -> None:
            if event.kind == "started":
                injected.append(run.inject("now check it"))

        events = drain(run, on_event)
        first = run.result
        assert injected == [True] and run.inject("too late") is False
        assert first.ok, first.error
        started = of(events, "started")[0]
        assert started.data["thread"] == first.session and started.data["protocol"] == APP_SERVER
        assert [e.text for e in of(events, "message")] == ["created a.py", "checked it"]
        tool = of(events, "tool")[0]
        assert "a.py" in tool.data["command"] and tool.data["exit_code"] == 0
        assert (repo / "a.py").read_text() == "x = 1\n"
        # Three model calls of 100 in / 20 out; the price makes the cost.
        assert first.usage == Usage(input_tokens=300, output_tokens=60, cost_usd=0.0009)
        assert [e.data["input_tokens"] for e in of(events, "usage")] == [200, 100]
        assert first.summary == "checked it"

        # A later attempt continues the thread on the same process.
        again = backend.start(codex_request(api, repo, home, "one more", session=first.session))
        events2 = drain(again)
        assert again.result.ok and again.result.summary == "third"
        assert again.result.session == first.session
        assert of(events2, "started")[0].data["pid"] == started.data["pid"]
        assert again.result.usage == Usage(input_tokens=100, output_tokens=20)

        requests = api.scripted("t1")
        assert [r.step for r in requests] == [0, 1, 2, 3]  # one conversation: the history grows
        assert {r.body["client_metadata"]["thread_id"] for r in requests} == {first.session}
        last_input = json.dumps(requests[-1].body["input"])
        assert "task t1: create a.py" in last_input and "now check it" in last_input and "one more" in last_input
    assert [p.pid for p in backend.processes("agent-1")] == [started.data["pid"]]


def test_a_thread_resumes_in_a_new_process(repo: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    with FakeAPI({"t1": [Text("first"), Text("second")]}) as api:
        b1 = CodexMcpBackend()
        try:
            run = b1.start(codex_request(api, repo, home, "task t1: hello"))
            drain(run)
            pid1 = b1.processes("agent-1")[0].pid
        finally:
            b1.close()
        assert wait_for(lambda: pid_gone(pid1)), "close() must end the process group"
        b2 = CodexMcpBackend()
        try:
            run2 = b2.start(codex_request(api, repo, home, "and again", session=run.result.session))
            events = drain(run2)
        finally:
            b2.close()
    assert run2.result.ok and run2.result.summary == "second"
    assert run2.result.session == run.result.session
    assert of(events, "started")[0].data["pid"] != pid1
    # The resumed thread reports its old total first; only this turn's call is counted.
    assert run2.result.usage == Usage(input_tokens=100, output_tokens=20)
    assert [r.step for r in api.scripted("t1")] == [0, 1]


def test_the_agents_commands_get_this_attempts_environment(backend: CodexMcpBackend, repo: Path,
                                                           tmp_path: Path) -> None:
    home = tmp_path / "home"
    script = {"t1": [Shell("echo $GITSWARM_ATTEMPT > n.txt"), Text("one")],
              "t2": [Shell("echo $GITSWARM_ATTEMPT > n.txt"), Text("two")]}
    with FakeAPI(script) as api:
        drain(backend.start(codex_request(api, repo, home, "task t1", env={"GITSWARM_ATTEMPT": "1"})))
        assert (repo / "n.txt").read_text() == "1\n"
        run = backend.start(codex_request(api, repo, home, "task t2", env={"GITSWARM_ATTEMPT": "2"}))
        events = drain(run)
    assert run.result.ok
    assert (repo / "n.txt").read_text() == "2\n"
    assert len(backend.processes("agent-1")) == 1  # same process, fresh environment for the commands
    assert of(events, "started")[0].data["thread"] == run.result.session


def test_api_error_status_fails_the_turn(backend: CodexMcpBackend, repo: Path, tmp_path: Path) -> None:
    with FakeAPI({"t1": [Fault("status", status=500)]}) as api:
        run = backend.start(codex_request(api, repo, tmp_path / "home", "task t1"))
        events = drain(run)
    assert not run.result.ok
    assert run.result.error is not None and run.result.error.startswith("codex turn failed: ")
    assert "internalServerError" in run.result.error
    assert of(events, "error")
    assert run.result.session is not None  # the thread can be continued by a retry
    assert len(api.scripted("t1")) == 1  # request_max_retries=0 of codex_provider_args is honoured


def test_an_unknown_session_starts_a_new_thread(backend: CodexMcpBackend, repo: Path, tmp_path: Path) -> None:
    lost = "01a2089b-0000-7000-8000-000000000000"
    with FakeAPI({"t1": [Text("fresh start")]}) as api:
        run = backend.start(codex_request(api, repo, tmp_path / "home", "task t1", session=lost))
        events = drain(run)
    assert run.result.ok and run.result.summary == "fresh start"
    assert run.result.session not in (None, lost)
    notes = [e for e in of(events, "stderr") if e.data.get("resume_failed") == lost]
    assert len(notes) == 1 and "no rollout found" in notes[0].text


def test_a_stream_cut_mid_answer_fails_the_turn(backend: CodexMcpBackend, repo: Path, tmp_path: Path) -> None:
    with FakeAPI({"t1": [Fault("cut")]}) as api:
        run = backend.start(codex_request(api, repo, tmp_path / "home", "task t1"))
        drain(run)
    assert not run.result.ok and "stream disconnected" in (run.result.error or "")


def test_silence_interrupts_the_turn_and_keeps_the_process(backend: CodexMcpBackend, repo: Path,
                                                          tmp_path: Path) -> None:
    # The interrupted turn leaves no assistant turn in the history, so the continuation
    # ("go on t2") would get step 0 of t1 again: it gets its own script, matched first.
    with FakeAPI({"t2": [Text("recovered")], "t1": [Fault("hang")]}) as api:
        t0 = time.monotonic()
        run = backend.start(codex_request(api, repo, tmp_path / "home", "task t1", heartbeat_timeout=1.0))
        events = drain(run)
        took = time.monotonic() - t0
        assert run.result.error == heartbeat_error(1.0)
        assert took < 10, took  # the error above says ours fired, not codex's own 5 s stream timeout
        # The interrupt worked: the same process takes the next attempt on the same thread.
        pid = of(events, "started")[0].data["pid"]
        again = backend.start(codex_request(api, repo, tmp_path / "home", "go on t2", session=run.result.session))
        events2 = drain(again)
        assert {r.body["client_metadata"]["thread_id"] for r in api.scripted()} == {run.result.session}
    assert again.result.ok and again.result.summary == "recovered"
    assert of(events2, "started")[0].data["pid"] == pid


def test_wall_clock_timeout(backend: CodexMcpBackend, repo: Path, tmp_path: Path) -> None:
    with FakeAPI({"t1": [Fault("hang")]}) as api:
        run = backend.start(codex_request(api, repo, tmp_path / "home", "task t1", timeout=1.5, heartbeat_timeout=None))
        drain(run)
    assert run.result.error == timeout_error(1.5)


def test_stop_from_another_thread_ends_the_run_soon(backend: CodexMcpBackend, repo: Path, tmp_path: Path) -> None:
    with FakeAPI({"t1": [Fault("hang")]}) as api:
        run = backend.start(codex_request(api, repo, tmp_path / "home", "task t1"))
        stopped_at: list[float] = []

        def stopper() -> None:
            if wait_for(lambda: bool(api.scripted("t1"))):
                stopped_at.append(time.monotonic())
                run.stop("the user stopped it")

        threading.Thread(target=stopper, daemon=True).start()
        drain(run)
        ended = time.monotonic()
    assert run.result.error == "the user stopped it"
    assert stopped_at and ended - stopped_at[0] < 3.0


def test_the_process_killed_mid_turn(backend: CodexMcpBackend, repo: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    with FakeAPI({"t1": [Fault("hang")], "t2": [Text("fresh")]}) as api:
        run = backend.start(codex_request(api, repo, home, "task t1"))
        pids: list[int] = []

        def killer() -> None:
            if wait_for(lambda: bool(api.scripted("t1")) and bool(pids)):
                os.kill(pids[0], signal.SIGKILL)

        threading.Thread(target=killer, daemon=True).start()
        t0 = time.monotonic()
        events = drain(run, lambda e: pids.append(e.data["pid"]) if e.kind == "started" else None)
        assert time.monotonic() - t0 < 10
        error = run.result.error or ""
        assert error.startswith("codex killed by signal 9 (SIGKILL) before the turn ended"), error
        assert "last stderr:" in error
        assert of(events, "stderr")
        assert wait_for(lambda: pid_gone(pids[0]))  # the native codex under the wrapper too
        # The next start respawns it.
        again = backend.start(codex_request(api, repo, home, "task t2"))
        events2 = drain(again)
    assert again.result.ok and again.result.summary == "fresh"
    assert of(events2, "started")[0].data["pid"] != pids[0]


# -- the old mcp-server protocol, against the fake ----------------------------------------------


def mcp_request(repo: Path, prompt: str, log: Path, **kw: Any) -> AgentRequest:
    return make_request(repo, prompt, command=str(FAKE_MCP), model="gpt-5-codex",
                        env={"FAKE_CODEX_LOG": str(log), "GITSWARM_TASK": "t1"}, **kw)


def logged(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_mcp_thread_inject_and_continue(backend: CodexMcpBackend, repo: Path, tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    run = backend.start(mcp_request(repo, "make it [write a.py x = 1] [exec echo hi]", log,
                                    options={"price": {"input": 1.0, "output": 1.0, "cache_read": 0.5}}))
    events = drain(run, lambda e: run.inject("and more") if e.kind == "started" else None)
    result = run.result
    assert result.ok, result.error
    thread = result.session
    assert thread and of(events, "started")[0].data == {"pid": of(events, "started")[0].data["pid"],
                                                         "thread": thread, "protocol": MCP_SERVER}
    pid = of(events, "started")[0].data["pid"]
    messages = [e.text for e in of(events, "message")]
    assert messages == [f"turn 1 of {thread} (pid {pid}): make it [write a.py x = 1] [exec echo hi]",
                        f"turn 2 of {thread} (pid {pid}): and more"]
    assert (repo / "a.py").read_text() == "x = 1\n"
    assert [e.data["kind"] for e in of(events, "file_changed")] == ["add"]
    assert of(events, "tool")[0].data["output"] == "hi\n"
    # 100 in of which 40 cached, 20 out, per turn; totals are cumulative per thread.
    assert result.usage == Usage(input_tokens=120, output_tokens=40, cache_read_tokens=80, cost_usd=0.0002)

    again = backend.start(mcp_request(repo, "third", log, session=thread))
    drain(again)
    assert again.result.summary == f"turn 3 of {thread} (pid {pid}): third"

    calls = [m for m in logged(log) if m.get("method") == "tools/call"]
    assert [c["params"]["name"] for c in calls] == ["codex", "codex-reply", "codex-reply"]
    first = calls[0]["params"]["arguments"]
    assert first["cwd"] == str(repo) and first["sandbox"] == "workspace-write"
    assert first["approval-policy"] == "never" and first["model"] == "gpt-5-codex"
    assert first["config"]["shell_environment_policy"]["set"]["GITSWARM_TASK"] == "t1"
    assert [c["params"]["arguments"].get("threadId") for c in calls[1:]] == [thread, thread]
    methods = [m.get("method") for m in logged(log)]
    assert methods[:2] == ["initialize", "notifications/initialized"] and methods.count("initialize") == 1


def test_mcp_malformed_lines_and_floods_are_noted_not_fatal(repo: Path, tmp_path: Path) -> None:
    backend = CodexMcpBackend(max_line_bytes=4096)
    try:
        run = backend.start(mcp_request(repo, "[garbage] [flood 200000]", tmp_path / "log"))
        events = drain(run)
    finally:
        backend.close()
    assert run.result.ok
    notes = [e for e in of(events, "stderr") if e.data.get("ignored") or e.data.get("truncated")]
    assert [e.data.get("ignored", "cut") for e in notes] == ["malformed", "malformed", "malformed", "cut"]
    assert "200000 bytes dropped" not in notes[-1].text and "195904 bytes dropped" in notes[-1].text
    assert max(len(e.text) for e in events) < 10_000


def test_mcp_approval_requests_are_answered(backend: CodexMcpBackend, repo: Path, tmp_path: Path) -> None:
    run = backend.start(mcp_request(repo, "[elicit]", tmp_path / "log"))
    events = drain(run)
    assert run.result.ok
    assert 'elicitation answer: {"decision": "denied"}' in [e.text for e in of(events, "message")]
    assert any(e.data.get("request") == "elicitation/create" for e in of(events, "stderr"))


def test_mcp_reported_failure(backend: CodexMcpBackend, repo: Path, tmp_path: Path) -> None:
    run = backend.start(mcp_request(repo, "[fail]", tmp_path / "log"))
    events = drain(run)
    assert not run.result.ok
    assert run.result.error == "codex reported an error: unexpected status 500 Internal Server Error"
    assert [e.text for e in of(events, "error")][:1] == ["unexpected status 500 Internal Server Error"]


def test_mcp_silence_cancels_the_call_and_keeps_the_process(backend: CodexMcpBackend, repo: Path,
                                                           tmp_path: Path) -> None:
    log = tmp_path / "log"
    run = backend.start(mcp_request(repo, "[hang]", log, heartbeat_timeout=0.5))
    events = drain(run)
    assert run.result.error == heartbeat_error(0.5)
    cancels = [m for m in logged(log) if m.get("method") == "notifications/cancelled"]
    assert len(cancels) == 1
    pid = of(events, "started")[0].data["pid"]
    again = backend.start(mcp_request(repo, "hello", log, session=run.result.session))
    events2 = drain(again)
    assert again.result.ok and of(events2, "started")[0].data["pid"] == pid


def test_mcp_unanswered_interrupt_kills_the_process(backend: CodexMcpBackend, repo: Path, tmp_path: Path) -> None:
    t0 = time.monotonic()
    run = backend.start(mcp_request(repo, "[hang-hard]", tmp_path / "log", heartbeat_timeout=0.5))
    events = drain(run)
    assert run.result.error == heartbeat_error(0.5)
    assert time.monotonic() - t0 < 6
    pid = of(events, "started")[0].data["pid"]
    assert wait_for(lambda: pid_gone(pid))
    assert backend.processes("agent-1") == []
    again = backend.start(mcp_request(repo, "hello", tmp_path / "log"))
    drain(again)
    assert again.result.ok and str(pid) not in again.result.summary


def test_mcp_process_exit_mid_turn(backend: CodexMcpBackend, repo: Path, tmp_path: Path) -> None:
    run = backend.start(mcp_request(repo, "[die]", tmp_path / "log"))
    drain(run)
    assert run.result.error == ("codex exited with code 3 before the turn ended (last stderr: fake codex "
                                "mcp-server started with [] | fatal: the fake codex fell over)")


def test_a_dead_process_takes_its_group_along(backend: CodexMcpBackend, repo: Path, tmp_path: Path) -> None:
    """A child Codex left behind (holding the pipes) must not outlive it or hold events() open."""
    t0 = time.monotonic()
    run = backend.start(mcp_request(repo, "[spawn] [die]", tmp_path / "log"))
    events = drain(run)
    assert time.monotonic() - t0 < 5
    assert (run.result.error or "").startswith("codex exited with code 3 before the turn ended")
    spawned = [int(e.text.split()[-1]) for e in of(events, "stderr") if e.text.startswith("spawned pid ")]
    assert len(spawned) == 1
    assert wait_for(lambda: not os.path.exists(f"/proc/{spawned[0]}") or
                    open(f"/proc/{spawned[0]}/stat").read().split()[2] == "Z")


def test_mcp_stop_before_events_never_starts_a_turn(backend: CodexMcpBackend, repo: Path, tmp_path: Path) -> None:
    log = tmp_path / "log"
    run = backend.start(mcp_request(repo, "hello", log))
    run.stop("cancelled early")
    events = drain(run)
    assert run.result.error == "cancelled early" and of(events, "started") == []
    assert not log.exists()


def test_close_during_a_turn_ends_it_with_a_reason(repo: Path, tmp_path: Path) -> None:
    backend = CodexMcpBackend()
    log = tmp_path / "log"
    run = backend.start(mcp_request(repo, "[hang-hard]", log))
    closer = threading.Thread(target=lambda: wait_for(lambda: log.exists() and "tools/call" in log.read_text())
                              and backend.close(), daemon=True)
    closer.start()
    drain(run)
    closer.join(5)
    assert run.result.error == "codex-mcp: the backend was closed while the turn ran"


def test_a_backend_dropped_without_close_ends_its_processes(repo: Path, tmp_path: Path) -> None:
    backend = CodexMcpBackend()
    run = backend.start(mcp_request(repo, "hi", tmp_path / "log"))
    pid = of(drain(run), "started")[0].data["pid"]
    assert not pid_gone(pid)
    del backend, run
    gc.collect()
    assert wait_for(lambda: pid_gone(pid))


def test_close_ends_every_process(repo: Path, tmp_path: Path) -> None:
    backend = CodexMcpBackend()
    pids = []
    for agent in ("a1", "a2"):
        run = backend.start(mcp_request(repo, "hi", tmp_path / "log", agent_id=agent))
        events = drain(run)
        pids.append(of(events, "started")[0].data["pid"])
    assert len(set(pids)) == 2 and not any(pid_gone(p) for p in pids)
    backend.close()
    assert all(pid_gone(p) for p in pids)
    late = backend.start(mcp_request(repo, "hi", tmp_path / "log"))
    drain(late)
    assert not late.result.ok and "closed" in (late.result.error or "")
