"""The command backend, driving small Python scripts written into tmp_path as the "CLI".

Also the CLI-shaped failure modes of the runner under it: exit codes, signals, huge and
malformed lines, a 50 MB flood (memory bound), silence (heartbeat), grandchildren that
keep stdout open, stderr.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gitswarm.backends.base import AgentEvent, AgentRequest, Backend
from gitswarm.backends.command import CommandBackend, CommandRun, placeholders_in, render
from gitswarm.backends.process import TRANSCRIPT_BYTES, TRANSCRIPT_EVENTS
from gitswarm.backends.registry import available_backends, get_backend, register_backend, unregister_backend
from gitswarm.backends.scripted import ScriptedBackend
from gitswarm.config import PLACEHOLDERS
from gitswarm.errors import GitswarmError, InputError
from gitswarm.model import TaskSpec, Usage

PROMPT = "Fix the bug.\nIt's in \"pkg/ops.py\"; don't run $(rm -rf ~) or `touch pwned` {workdir} {{x}}\n"


def cli(tmp_path: Path, body: str, name: str = "agent.py") -> str:
    """An executable Python script: the CLI under test."""
    path = tmp_path / "bin" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"#!{sys.executable}\nimport json, os, sys, time\n{body}\n")
    path.chmod(0o755)
    return str(path)


def request(tmp_path: Path, command: str | None, *args: str, prompt: str = PROMPT, **kw: Any) -> AgentRequest:
    workdir = tmp_path / "wt"
    workdir.mkdir(exist_ok=True)
    options = {"prompt_via": kw.pop("prompt_via", "stdin"), "timeout_seconds": kw.pop("timeout_seconds", None)}
    fields: dict[str, Any] = dict(
        task=TaskSpec(id="t1", title="Fix it"), attempt=1, prompt=prompt, workdir=workdir, role_id="impl",
        backend="command", agent_id="impl-1", command=command, args=tuple(args), options=options)
    fields.update(kw)
    return AgentRequest(**fields)


def run_all(req: AgentRequest):
    run = CommandBackend().start(req)
    events = list(run.events())
    return run, events


def messages(events: list[AgentEvent]) -> list[str]:
    return [e.text for e in events if e.kind == "message"]


ECHO = "print(json.dumps({'argv': sys.argv[1:], 'stdin': sys.stdin.read(), 'cwd': os.getcwd()}))"


def echoed(events: list[AgentEvent]) -> dict[str, Any]:
    (line,) = [m for m in messages(events) if m.startswith("{")]
    return json.loads(line)


# -- prompt_via and placeholders ---------------------------------------------------------


def test_prompt_via_stdin(tmp_path: Path) -> None:
    run, events = run_all(request(tmp_path, cli(tmp_path, ECHO), "--yes"))
    seen = echoed(events)
    assert seen == {"argv": ["--yes"], "stdin": PROMPT, "cwd": str((tmp_path / "wt").resolve())}
    assert run.result.ok and not (tmp_path / "wt" / "pwned").exists()


def test_prompt_via_argv_appends_the_prompt_last(tmp_path: Path) -> None:
    run, events = run_all(request(tmp_path, cli(tmp_path, ECHO), "-p", prompt_via="argv"))
    assert echoed(events)["argv"] == ["-p", PROMPT]
    assert echoed(events)["stdin"] == ""


def test_prompt_via_argv_with_a_placeholder_is_not_appended(tmp_path: Path) -> None:
    run, events = run_all(request(tmp_path, cli(tmp_path, ECHO), "--message={prompt}", "--yes",
                                  prompt_via="argv"))
    assert echoed(events)["argv"] == ["--message=" + PROMPT, "--yes"]


def test_prompt_via_file(tmp_path: Path) -> None:
    body = ("path = sys.argv[-1]\n"
            "print(json.dumps({'path': path, 'text': open(path).read(), 'stdin': sys.stdin.read()}))")
    run, events = run_all(request(tmp_path, cli(tmp_path, body), "--read", prompt_via="file"))
    seen = json.loads(messages(events)[0])
    assert seen["text"] == PROMPT and seen["stdin"] == ""
    assert not Path(seen["path"]).exists(), "the prompt file is deleted when the run ends"
    assert not Path(seen["path"]).resolve().is_relative_to((tmp_path / "wt").resolve())
    assert run.result.ok


def test_prompt_file_placeholder_in_args(tmp_path: Path) -> None:
    body = "i = sys.argv.index('--file')\nprint(json.dumps({'argv': sys.argv[1:], 'text': open(sys.argv[i + 1]).read()}))"
    run, events = run_all(request(tmp_path, cli(tmp_path, body), "--file", "{prompt_file}", "--last",
                                  prompt_via="file"))
    seen = json.loads(messages(events)[0])
    assert seen["text"] == PROMPT
    assert seen["argv"][0] == "--file" and seen["argv"][2:] == ["--last"], "not appended a second time"


def test_placeholders_in_args_and_command(tmp_path: Path) -> None:
    workdir = tmp_path / "wt"
    workdir.mkdir()
    cli(workdir, ECHO, name="my-agent")
    req = request(tmp_path, "{workdir}/bin/my-agent", "--model", "{model}", "--task={task_id}",
                  "--dir", "{workdir}", "{{literal}}", model="gemini-2.5-pro")
    run, events = run_all(req)
    assert run.result.ok, run.result.error
    assert echoed(events)["argv"] == ["--model", "gemini-2.5-pro", "--task=t1", "--dir", str(workdir),
                                      "{literal}"]


def test_a_prompt_holding_placeholders_is_not_expanded_again(tmp_path: Path) -> None:
    run, events = run_all(request(tmp_path, cli(tmp_path, ECHO), "{prompt}", prompt_via="argv",
                                  prompt="use {workdir} and {model}"))
    assert echoed(events)["argv"] == ["use {workdir} and {model}"]


def test_render_and_placeholder_errors(tmp_path: Path) -> None:
    assert set(PLACEHOLDERS) == {"prompt", "prompt_file", "workdir", "task_id", "model"}
    assert placeholders_in("a {prompt} b {{c}} {model}") == {"prompt", "model"}
    assert render("x{{y}}{task_id}", {"task_id": "t"}) == "x{y}t"
    with pytest.raises(ValueError, match="unknown placeholder '{promt}'"):
        render("{promt}", {"prompt": "p"})
    run, events = run_all(request(tmp_path, "echo", "{promt}"))
    assert not run.result.ok and "unknown placeholder '{promt}'" in run.result.error
    run, events = run_all(request(tmp_path, "echo", "{unbalanced"))
    assert not run.result.ok and "unbalanced brace" in run.result.error


def test_config_mistakes_are_failed_runs(tmp_path: Path) -> None:
    run, _ = run_all(request(tmp_path, None))
    assert run.result.error == "the command backend needs the role's `command`: the program to run"
    run, _ = run_all(request(tmp_path, "echo", prompt_via="socket"))
    assert "prompt_via must be one of argv, stdin, file" in run.result.error
    run, events = run_all(request(tmp_path, str(tmp_path / "missing-cli")))
    assert run.result.error.startswith(f"could not start {tmp_path / 'missing-cli'}")
    assert events[-1].kind == "finished"


# -- the event format, usage and the verdict -----------------------------------------------


def test_a_script_speaking_gitswarm_events(tmp_path: Path) -> None:
    body = r"""
def ev(**kw):
    print(json.dumps(kw), flush=True)
print("plain text")
ev(type="tool", text="ran tests", data={"command": "pytest", "exit": 0})
ev(type="file_changed", data={"path": "pkg/ops.py", "action": "write"})
ev(type="usage", data={"input_tokens": 1000, "output_tokens": 200, "cost_usd": 0.25})
ev(type="usage", data={"input_tokens": 500, "output_tokens": 50, "cache_read_tokens": 7, "cost_usd": 0.125})
ev(type="thinking", text="not one of ours")
print('{"type": "tool", broken json')
ev(type="finished", data={"ok": True, "summary": "added sub()", "session": "s-42"})
print("trailing words")
"""
    run, events = run_all(request(tmp_path, cli(tmp_path, body)))
    assert [e.kind for e in events] == ["started", "message", "tool", "file_changed", "usage", "usage",
                                       "message", "message", "message", "message", "finished"]
    assert events[2].text == "ran tests" and events[2].data == {"command": "pytest", "exit": 0}
    assert events[3].data == {"path": "pkg/ops.py", "action": "write"}
    assert events[6].text == '{"type": "thinking", "text": "not one of ours"}'
    assert events[7].text == '{"type": "tool", broken json'
    assert events[8].data["reported"] == "finished"
    r = run.result
    assert r.ok and r.summary == "added sub()" and r.session == "s-42"
    assert r.usage == Usage(input_tokens=1500, output_tokens=250, cache_read_tokens=7, cost_usd=0.375)
    assert events[-1].data["usage"]["input_tokens"] == 1500


def test_reported_failure_wins_over_exit_zero(tmp_path: Path) -> None:
    body = 'print(json.dumps({"type": "finished", "data": {"ok": False, "summary": "tests still fail"}}))'
    run, _ = run_all(request(tmp_path, cli(tmp_path, body)))
    assert run.result.ok is False and run.result.error == "tests still fail" and run.result.exit == 0


def test_reported_success_wins_over_the_exit_code(tmp_path: Path) -> None:
    body = 'print(json.dumps({"type": "finished", "data": {"ok": True, "summary": "done"}}))\nsys.exit(3)'
    run, _ = run_all(request(tmp_path, cli(tmp_path, body)))
    assert run.result.ok is True and run.result.exit == 3


def test_malformed_usage_is_reported_and_not_summed(tmp_path: Path) -> None:
    body = ('print(json.dumps({"type": "usage", "data": {"input_tokens": "lots"}}))\n'
            'print(json.dumps({"type": "usage", "input_tokens": 3, "output_tokens": 4}))')
    run, events = run_all(request(tmp_path, cli(tmp_path, body)))
    errors = [e.text for e in events if e.kind == "error"]
    assert errors == ["usage event ignored: input_tokens must be a number >= 0, got 'lots'"]
    assert run.result.usage == Usage(input_tokens=3, output_tokens=4)


# -- exits, signals, output ------------------------------------------------------------------


def test_nonzero_exit_fails_with_the_code_and_last_stderr(tmp_path: Path) -> None:
    body = "print('working')\nprint('Error: API key not set', file=sys.stderr)\nsys.exit(42)"
    run, events = run_all(request(tmp_path, cli(tmp_path, body)))
    assert run.result.ok is False and run.result.exit == 42
    assert run.result.error == "agent.py exited with code 42 (last stderr: Error: API key not set)"
    assert [e.text for e in events if e.kind == "stderr"] == ["Error: API key not set"]
    assert any(e.kind == "stderr" for e in run.transcript.events()), "stderr goes into the transcript"


def test_killed_by_a_signal(tmp_path: Path) -> None:
    body = "print('about to die', flush=True)\nos.kill(os.getpid(), 9)"
    run, events = run_all(request(tmp_path, cli(tmp_path, body)))
    assert run.result.ok is False and run.result.exit == -signal.SIGKILL
    assert run.result.error.startswith("agent.py killed by signal 9 (SIGKILL)")
    assert "about to die" in run.result.error  # no stderr: the last output is named instead


def test_malformed_and_huge_lines(tmp_path: Path) -> None:
    body = r"""
out = sys.stdout.buffer
out.write(b"\xff\xfe not utf-8 \x00 nul\n")
out.write(b"{\n")
out.write(b'{"type": "usage", "data": {"input_tokens": 1, "pad": "' + b"p" * 300000 + b'"}}\n')
out.write(b"\r\n")
out.write(b"y" * 100000)
out.write(b"\nafter\nno newline at the end")
"""
    run, events = run_all(request(tmp_path, cli(tmp_path, body)))
    assert run.result.ok, run.result.error
    msgs = messages(events)
    assert msgs[0] == "\ufffd\ufffd not utf-8 \x00 nul"
    assert msgs[1] == "{"
    cut = [e for e in events if e.data.get("truncated")]
    json_line = len(b'{"type": "usage", "data": {"input_tokens": 1, "pad": "') + 300000 + len(b'"}}')
    assert [e.data["line_bytes"] for e in cut] == [json_line, 100000]
    assert all(len(e.text.encode()) < 64 * 1024 + 200 for e in cut)
    assert "line cut" in cut[0].text
    assert run.result.usage == Usage(), "a cut JSON line is not parsed as an event"
    assert msgs[-3:] == ["", "after", "no newline at the end"] or msgs[-2:] == ["after", "no newline at the end"]


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_50_mb_flood_keeps_memory_bounded(tmp_path: Path) -> None:
    body = r"""
out = sys.stdout.buffer
block = (b"y" * 1023 + b"\n") * 64
for _ in range(400):
    out.write(block)                 # 25 MiB in 25,600 lines
mib = b"z" * (1 << 20)
for _ in range(25):
    out.write(mib)                   # one 25 MiB line
out.write(b"\nend\n")
"""
    # Warm up (threads, imports), then watch this process's RSS while the flood runs.
    run_all(request(tmp_path, cli(tmp_path, "print('warm')", name="warm.py")))
    baseline = _rss_kb()
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_kb())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    count = 0
    last = None
    try:
        run = CommandBackend().start(request(tmp_path, cli(tmp_path, body)))
        time.sleep(1.0)  # a slow consumer: the child must be held back, not buffered for
        for event in run.events():
            count += 1
            last = event
    finally:
        done.set()
        sampler.join()
    growth_mb = (peak[0] - baseline) / 1024
    assert run.result.ok, run.result.error
    assert count == 1 + 25600 + 2 + 1  # started, lines, the cut line and "end", finished
    assert last is not None and last.kind == "finished"
    assert len(run.transcript) <= TRANSCRIPT_EVENTS and run.transcript.size <= TRANSCRIPT_BYTES
    assert run.transcript.events()[-1].text == "end"
    # Measured: about 5 MB. An unbounded queue (slow consumer), transcript or line buffer
    # each grows it by 25 MB or more.
    assert growth_mb < 20, f"RSS grew by {growth_mb:.1f} MB while reading 50 MB"


def test_a_silent_agent_hits_the_heartbeat(tmp_path: Path) -> None:
    body = "print('thinking...', flush=True)\ntime.sleep(60)"
    started = time.monotonic()
    run, events = run_all(request(tmp_path, cli(tmp_path, body), heartbeat_timeout=0.7))
    assert run.result.ok is False
    assert run.result.error == "no output for 0.7 s (heartbeat_timeout_seconds)"
    assert events[-1].kind == "finished" and events[-1].text == run.result.error
    assert time.monotonic() - started < 4


def test_timeout_seconds_overrides_the_request_timeout(tmp_path: Path) -> None:
    body = "while True:\n    print('tick', flush=True)\n    time.sleep(0.05)"
    run, _ = run_all(request(tmp_path, cli(tmp_path, body), timeout=60, timeout_seconds=0.6))
    assert run.result.error == "timed out after 0.6 s"
    run, _ = run_all(request(tmp_path, cli(tmp_path, body), timeout=0.5))
    assert run.result.error == "timed out after 0.5 s"


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_grandchild_holding_stdout_does_not_keep_events_open(tmp_path: Path) -> None:
    body = ("import subprocess\n"
            "p = subprocess.Popen(['sleep', '60'])  # inherits stdout and stderr\n"
            "print('spawned', p.pid, flush=True)")
    run = CommandBackend().start(request(tmp_path, cli(tmp_path, body)))
    events = []
    spawned_at = None
    for event in run.events():
        events.append(event)
        if event.text.startswith("spawned"):
            spawned_at = time.monotonic()
    # One POST_EXIT_GRACE (1 s) after the child exits, the group is killed and the pipes close.
    assert spawned_at is not None and time.monotonic() - spawned_at < 1.8
    assert run.result.ok and events[-1].kind == "finished"
    pid = int(messages(events)[0].split()[1])
    deadline = time.monotonic() + 3
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid), "the grandchild is killed with the group"


def test_a_grandchild_that_left_the_group_cannot_keep_events_open(tmp_path: Path) -> None:
    body = ("import subprocess\n"
            "p = subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
            "print('spawned', p.pid, flush=True)")
    pid = None
    try:
        started = time.monotonic()
        run, events = run_all(request(tmp_path, cli(tmp_path, body)))
        pid = int(messages(events)[0].split()[1])
        assert time.monotonic() - started < 5
        assert run.result.ok and events[-1].kind == "finished"
    finally:
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)  # the test's own grandchild, by pid
            except ProcessLookupError:
                pass


# -- the registry ----------------------------------------------------------------------------


def test_registry() -> None:
    assert isinstance(get_backend("scripted"), ScriptedBackend)
    assert isinstance(get_backend("command"), CommandBackend)
    assert [get_backend(name).name for name in ("claude", "codex")] == ["claude", "codex"]
    for name in ("opencode", "attocode"):
        with pytest.raises(GitswarmError, match=f"backend {name} has no module of its own yet"):
            get_backend(name)
    with pytest.raises(InputError) as info:
        get_backend("gpt-agent")
    assert "unknown backend 'gpt-agent'" in str(info.value)
    assert "command" in str(info.value) and "scripted" in str(info.value) and "claude" in str(info.value)


def test_registry_accepts_a_fake_backend() -> None:
    class Fake:
        name = "fake"

        def start(self, request):  # pragma: no cover - never started here
            raise NotImplementedError

    register_backend("fake", Fake)
    try:
        backend: Backend = get_backend("fake")
        assert isinstance(backend, Fake) and "fake" in available_backends()
    finally:
        unregister_backend("fake")
    with pytest.raises(InputError):
        get_backend("fake")


def test_command_run_is_a_process_run_subclass() -> None:
    # Agent backends build on the same runner; the command backend is the simplest one.
    from gitswarm.backends.process import ProcessRun

    assert issubclass(CommandRun, ProcessRun)
