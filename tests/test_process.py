"""ProcessRun: the subprocess runner under every CLI backend, with real child processes.

The CLI-shaped cases (floods, silence, grandchildren, signals, huge lines) are in
test_backend_command.py, through the command backend; this file covers the runner's own
contract: hooks, stdin, stop and its escalation, reaping, abandoning, bounds.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from gitswarm.backends.base import AgentEvent, AgentResult
from gitswarm.backends.process import (
    STOP_GRACE,
    FailedRun,
    ProcessRun,
    Transcript,
    Watchdog,
    describe_exit,
    heartbeat_error,
    timeout_error,
)

PY = sys.executable


def py(code: str) -> list[str]:
    return [PY, "-c", code]


def collect(run) -> list[AgentEvent]:
    return list(run.events())


def kinds(events: list[AgentEvent]) -> list[str]:
    return [e.kind for e in events]


def texts(events: list[AgentEvent], kind: str) -> list[str]:
    return [e.text for e in events if e.kind == kind]


def assert_reaped(pid: int) -> None:
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_stdout_lines_are_messages_stderr_lines_are_kept(tmp_path: Path) -> None:
    run = ProcessRun(py("import sys\nprint('one')\nprint('warn', file=sys.stderr, flush=True)\nprint('two')"),
                     cwd=tmp_path)
    events = collect(run)
    assert events[0].kind == "started" and events[0].data["pid"] == run.pid
    assert events[-1].kind == "finished" and kinds(events).count("finished") == 1
    assert texts(events, "message") == ["one", "two"]
    assert texts(events, "stderr") == ["warn"]
    assert run.result.ok and run.result.exit == 0 and run.result.error is None
    assert run.result.summary == "two"
    assert events[-1].data["ok"] is True
    assert sorted(kinds(run.transcript.events())) == ["message", "message", "started", "stderr"]
    assert_reaped(run.pid)


def test_env_is_added_to_ours_and_cwd_is_the_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GS_INHERITED", "from-parent")
    code = "import os\nprint(os.getcwd())\nprint(os.environ['GS_INHERITED'], os.environ['GS_ADDED'])"
    run = ProcessRun(py(code), cwd=tmp_path, env={"GS_ADDED": "from-request"})
    events = collect(run)
    assert texts(events, "message") == [str(tmp_path.resolve()), "from-parent from-request"]


def test_stdin_payload_is_written_and_closed(tmp_path: Path) -> None:
    prompt = "line one\n'quotes' $(touch pwned) ünïcode\n"
    run = ProcessRun(py("import sys\nsys.stdout.write(sys.stdin.read())"), cwd=tmp_path,
                     stdin=prompt.encode())
    events = collect(run)
    assert texts(events, "message") == ["line one", "'quotes' $(touch pwned) ünïcode"]
    assert not (tmp_path / "pwned").exists()


def test_without_payload_stdin_is_devnull(tmp_path: Path) -> None:
    run = ProcessRun(py("import sys\nprint(repr(sys.stdin.read()))"), cwd=tmp_path, timeout=10)
    events = collect(run)
    assert texts(events, "message") == ["''"]
    assert run.result.ok


def test_unread_large_payload_does_not_hang(tmp_path: Path) -> None:
    started = time.monotonic()
    run = ProcessRun(py("print('ignoring stdin')"), cwd=tmp_path, stdin=b"x" * (4 << 20))
    collect(run)
    assert run.result.ok
    assert time.monotonic() - started < 5


def test_parser_hook_errors_and_garbage_never_escape(tmp_path: Path) -> None:
    def parse(line: str) -> list[AgentEvent]:
        if line == "boom":
            raise ValueError("bad line")
        if line == "junk":
            return ["not an event"]  # type: ignore[list-item]
        return [AgentEvent("tool", line, data={"parsed": True})]

    run = ProcessRun(py("print('ok'); print('boom'); print('junk')"), cwd=tmp_path, parse_line=parse)
    events = collect(run)
    assert [(e.kind, e.text) for e in events[1:-1]] == [("tool", "ok"), ("message", "boom")]
    assert events[2].data["parse_error"] == "ValueError: bad line"
    assert run.result.ok


def test_a_finished_event_from_the_parser_does_not_end_the_stream(tmp_path: Path) -> None:
    def parse(line: str) -> list[AgentEvent]:
        if line == "done":
            return [AgentEvent("finished", "all good", data={"ok": True})]
        return [AgentEvent("message", line)]

    run = ProcessRun(py("print('done'); print('after')"), cwd=tmp_path, parse_line=parse)
    events = collect(run)
    assert kinds(events) == ["started", "message", "message", "finished"]
    assert events[1].data["reported"] == "finished"
    assert run.reported_finished is not None and run.reported_finished.text == "all good"


def test_decide_hook_is_the_verdict(tmp_path: Path) -> None:
    class Strict(ProcessRun):
        def decide(self, exit_code, events):
            assert exit_code == 0
            assert [e.text for e in events if e.kind == "message"] == ["did nothing"]
            return AgentResult(ok=False, error="no changes")

    run = Strict(py("print('did nothing')"), cwd=tmp_path)
    events = collect(run)
    assert run.result.ok is False and run.result.error == "no changes" and run.result.exit == 0
    assert events[-1].text == "no changes"


def test_a_decide_that_raises_fails_the_attempt_cleanly(tmp_path: Path) -> None:
    class Broken(ProcessRun):
        def decide(self, exit_code, events):
            raise KeyError("result")

    run = Broken(py("pass"), cwd=tmp_path)
    collect(run)
    assert not run.result.ok and "could not judge the result: KeyError" in run.result.error


def test_stop_from_another_thread_ends_events_with_the_reason(tmp_path: Path) -> None:
    run = ProcessRun(py("import time\nprint('ready', flush=True)\ntime.sleep(60)"), cwd=tmp_path)
    stopped_at = None
    events = []
    for event in run.events():
        events.append(event)
        if event.text == "ready":
            stopped_at = time.monotonic()
            threading.Thread(target=run.stop, args=("user asked to stop",)).start()
    assert stopped_at is not None
    assert time.monotonic() - stopped_at < 1.5
    assert events[-1].kind == "finished"
    assert run.result.ok is False and run.result.error == "user asked to stop"
    assert run.result.exit == -signal.SIGTERM
    assert_reaped(run.pid)


def test_stop_escalates_to_sigkill_after_the_grace(tmp_path: Path) -> None:
    assert STOP_GRACE == 2.0
    code = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ready', flush=True)\ntime.sleep(60)")
    run = ProcessRun(py(code), cwd=tmp_path, stop_grace=0.5)
    started = None
    for event in run.events():
        if event.text == "ready":
            started = time.monotonic()
            run.stop("shutdown")
    elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 2.5
    assert run.result.exit == -signal.SIGKILL and run.result.error == "shutdown"


def test_stop_before_iterating_still_ends_the_run(tmp_path: Path) -> None:
    run = ProcessRun(py("import time\ntime.sleep(60)"), cwd=tmp_path)
    run.stop("budget exhausted")
    started = time.monotonic()
    collect(run)
    assert time.monotonic() - started < 2
    assert run.result.error == "budget exhausted"


def test_heartbeat_is_reset_by_output(tmp_path: Path) -> None:
    code = "import time\nfor i in range(10):\n    print(i, flush=True)\n    time.sleep(0.15)"
    run = ProcessRun(py(code), cwd=tmp_path, heartbeat_timeout=1.0)
    collect(run)
    assert run.result.ok, run.result.error


def test_wall_clock_timeout_applies_to_a_chatty_child(tmp_path: Path) -> None:
    code = "import time\nwhile True:\n    print('busy', flush=True)\n    time.sleep(0.05)"
    run = ProcessRun(py(code), cwd=tmp_path, timeout=0.8, heartbeat_timeout=5)
    started = time.monotonic()
    collect(run)
    assert run.result.error == "timed out after 0.8 s"
    assert time.monotonic() - started < 3


def test_consumer_walking_away_kills_and_reaps_the_child(tmp_path: Path) -> None:
    run = ProcessRun(py("import time\nprint('hi', flush=True)\ntime.sleep(60)"), cwd=tmp_path)
    gen = run.events()
    for event in gen:
        if event.kind == "message":
            break
    gen.close()
    assert_reaped(run.pid)
    assert run.result.ok is False and run.result.error == "abandoned by the caller"


def test_a_binary_that_does_not_exist_is_a_failed_run(tmp_path: Path) -> None:
    run = ProcessRun([str(tmp_path / "no-such-agent")], cwd=tmp_path)
    events = collect(run)
    assert kinds(events) == ["error", "finished"]
    assert run.result.error == f"could not start {tmp_path / 'no-such-agent'}: No such file or directory"


def test_a_nul_byte_in_an_argument_is_a_failed_run(tmp_path: Path) -> None:
    run = ProcessRun([PY, "-c", "print(1)", "a\0b"], cwd=tmp_path)
    collect(run)
    assert not run.result.ok and run.result.error.startswith("could not start")


def test_on_close_runs_after_the_child_is_gone(tmp_path: Path) -> None:
    calls: list[bool] = []
    run = ProcessRun(py("print(1)"), cwd=tmp_path, on_close=lambda: calls.append(True))
    assert calls == []
    collect(run)
    assert calls == [True]
    FailedRun("x", on_close=lambda: calls.append(True))
    assert calls == [True, True]


def test_events_can_be_iterated_once(tmp_path: Path) -> None:
    run = ProcessRun(py("pass"), cwd=tmp_path)
    with pytest.raises(RuntimeError):
        _ = run.result
    collect(run)
    with pytest.raises(RuntimeError):
        collect(run)


def test_transcript_is_bounded_by_count_and_size() -> None:
    t = Transcript(max_events=3, max_bytes=10_000)
    for i in range(10):
        t.add(AgentEvent("message", str(i)))
    assert [e.text for e in t.events()] == ["7", "8", "9"] and t.dropped == 7
    t = Transcript(max_events=100, max_bytes=10_000)
    for i in range(10):
        t.add(AgentEvent("message", "x" * 3000))
    assert len(t) == 3 and t.size <= 10_000


def test_watchdog_and_messages() -> None:
    w = Watchdog(timeout=10, heartbeat_timeout=2)
    now = w.started
    assert w.check(now, now + 1) is None
    assert w.check(now, now + 2.5) == heartbeat_error(2) == "no output for 2 s (heartbeat_timeout_seconds)"
    assert w.check(now + 9, now + 10) == timeout_error(10) == "timed out after 10 s"
    assert Watchdog(None, 0).check(0, 1e9) is None
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-9) == "killed by signal 9 (SIGKILL)"


def test_closing_events_right_after_started_kills_the_child(tmp_path: Path) -> None:
    run = ProcessRun(py("import time\ntime.sleep(60)"), cwd=tmp_path)
    gen = run.events()
    assert next(gen).kind == "started"
    gen.close()
    assert_reaped(run.pid)
    assert run.result.error == "abandoned by the caller"


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_the_group_is_killed_when_the_child_exits(tmp_path: Path) -> None:
    # A daemon left behind with its output elsewhere: the pipes close at once, and the
    # daemon still goes with the group.
    code = ("import subprocess\n"
            "p = subprocess.Popen(['sleep', '60'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "print(p.pid)")
    run = ProcessRun(py(code), cwd=tmp_path)
    events = []
    printed_at = None
    for event in run.events():
        events.append(event)
        if event.kind == "message":
            printed_at = time.monotonic()
    assert printed_at is not None and time.monotonic() - printed_at < 0.9, "no wait for the daemon"
    pid = int(texts(events, "message")[0])
    deadline = time.monotonic() + 3
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid)


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_flood_of_empty_lines_is_held_back_by_a_slow_consumer(tmp_path: Path) -> None:
    # 64 KiB of newlines is 65,536 lines: the queue must be bounded in lines, not only bytes.
    code = "import sys\nblock = b'\\n' * (1 << 20)\nfor _ in range(40):\n    sys.stdout.buffer.write(block)"
    collect(ProcessRun(py("print(1)"), cwd=tmp_path))  # warm up
    baseline = _rss_kb()
    run = ProcessRun(py(code), cwd=tmp_path)
    gen = run.events()
    next(gen)
    time.sleep(1.0)  # the readers fill the queue while nobody consumes
    growth_mb = (_rss_kb() - baseline) / 1024
    gen.close()
    assert_reaped(run.pid)
    assert growth_mb < 20, f"RSS grew by {growth_mb:.1f} MB with 40 MB of empty lines waiting"


def test_a_missing_working_directory_is_named(tmp_path: Path) -> None:
    run = ProcessRun(py("pass"), cwd=tmp_path / "gone")
    collect(run)
    assert run.result.error == f"could not start {PY}: No such file or directory: {tmp_path / 'gone'}"
