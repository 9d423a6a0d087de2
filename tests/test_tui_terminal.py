"""The dashboard from the command line: `gitswarm monitor` and `--monitor` in a real
terminal (tmux), and what they do without one."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from gitswarm.model import RunPhase

from .conftest import make_repo
from .runkit import GITSWARM, gitswarm, write_config, write_tasks
from .test_tui_kit import coordinated, finish, read, start_bg, wait_until

TMUX = shutil.which("tmux")

SLOW = """\
tasks:
  - {id: slow, title: Slow, files: [slow.txt], script: [{sleep: 60}, {write: {path: slow.txt, content: "slow\\n"}}]}
"""
FAST = """\
tasks:
  - {id: one, title: One, files: [one.txt], script: [{write: {path: one.txt, content: "one\\n"}}]}
  - {id: two, title: Two, deps: [one], files: [two.txt], script: [{write: {path: two.txt, content: "two\\n"}}]}
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


class Terminal:
    """A tmux session on a private server, 160x48, running one shell command."""

    def __init__(self, folder: Path) -> None:
        self.socket = f"gitswarm-test-{uuid.uuid4().hex[:12]}"  # -L: a server of our own
        self.socket_path: str | None = None
        self.rc_file = folder / "exit-code"

    def tmux(self, *args: str) -> str:
        assert TMUX is not None
        # An explicit environment: some library of the test process sets COLUMNS=80 and
        # LINES=24 at the C level (not in os.environ), and the app would believe them
        # over the pane's real size.
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        proc = subprocess.run([TMUX, "-L", self.socket, *args], capture_output=True, text=True, timeout=20, env=env)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def start(self, cwd: Path, argv: list[str]) -> None:
        # The pane stays after the command so its last lines can be read; the exit code
        # goes to a file.
        shell = f"cd {shlex.quote(str(cwd))} && {shlex.join(argv)}; echo $? > {shlex.quote(str(self.rc_file))}; sleep 600"
        self.tmux("new-session", "-d", "-x", "160", "-y", "48", "-s", "t", "sh", "-c", shell)
        self.socket_path = self.tmux("display-message", "-p", "#{socket_path}").strip() or None

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def wait_screen(self, text: str, timeout: float = 60) -> str:
        seen = [""]

        def shows() -> bool:
            seen[0] = self.screen()
            return text in seen[0]

        try:
            wait_until(shows, timeout=timeout, what=f"{text!r} on the terminal")
        except AssertionError:
            raise AssertionError(f"{text!r} never showed; the screen:\n{seen[0]}") from None
        return seen[0]

    def exit_code(self, timeout: float = 30) -> int:
        wait_until(lambda: self.rc_file.read_text().strip() != "", timeout=timeout, what="the command to exit")
        return int(self.rc_file.read_text().strip())

    def close(self) -> None:
        subprocess.run([TMUX or "tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=20)
        if self.socket_path:  # the server leaves its socket file behind
            Path(self.socket_path).unlink(missing_ok=True)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    if TMUX is None:
        pytest.skip("tmux is not installed: the real-terminal test needs it (apt-get install tmux)")
    t = Terminal(tmp_path)
    try:
        yield t
    finally:
        t.close()


def test_monitor_in_a_real_terminal_pauses_then_detaches(repo: Path, terminal: Terminal) -> None:
    proc = start_bg(repo, SLOW)
    try:
        wait_until(lambda: read(repo).tasks["slow"].status.value == "running" and coordinated(repo), what="the slow task to run")
        terminal.start(repo, [*GITSWARM, "monitor", "r1"])
        screen = terminal.wait_screen("live: keys write events")
        assert "run r1  running" in screen and "Tasks by wave (1)" in screen and "impl-1" in screen
        terminal.keys("p")
        wait_until(lambda: read(repo).run.phase == RunPhase.PAUSED, timeout=20, what="the run to pause")
        terminal.wait_screen("paused: run r1 starts no new attempts")
        assert "run r1  paused" in terminal.screen()
        terminal.keys("q")
        assert terminal.exit_code() == 0
        after = terminal.screen()
        assert "detached from run r1 (paused): it goes on without the dashboard" in after
        assert proc.poll() is None and coordinated(repo), "the coordinator still runs"
    finally:
        finish(proc, repo)


def test_start_monitor_opens_the_dashboard_and_ends_on_the_completion_screen(repo: Path, terminal: Terminal) -> None:
    cfg = write_config(repo.parent)
    tf = write_tasks(repo.parent, FAST)
    terminal.start(repo, [*GITSWARM, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "r1", "--monitor"])
    terminal.wait_screen("[m] merge into the original branch")
    assert "run r1 completed" in terminal.screen()
    terminal.keys("k")
    terminal.wait_screen("kept attoswarm/r1 for review")
    assert read(repo).run.finalized["action"] == "keep"  # type: ignore[index]
    terminal.keys("q")
    assert terminal.exit_code() == 0
    assert "run r1 completed" in terminal.screen(), "the summary is printed after the dashboard"


def test_without_a_terminal_monitor_refuses_and_start_monitor_shows_progress_lines(repo: Path) -> None:
    cfg = write_config(repo.parent)
    tf = write_tasks(repo.parent, FAST)
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "r1", "--monitor")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the dashboard needs a terminal" in proc.stderr and "showing progress lines instead" in proc.stderr
    assert "run r1 completed" in proc.stdout
    mon = gitswarm(repo, "monitor", "r1")
    assert mon.returncode == 1 and "the dashboard needs a terminal" in mon.stderr and "gitswarm status r1" in mon.stderr
    assert "Traceback" not in mon.stderr
    missing = gitswarm(repo, "monitor", "nope")
    assert missing.returncode == 2 and "no run matches 'nope'" in missing.stderr


def test_the_help_texts_describe_the_dashboard() -> None:
    for command in ("start", "quick", "resume", "continue"):
        proc = subprocess.run([sys.executable, "-m", "gitswarm", command, "--help"], capture_output=True, text=True, timeout=60)
        assert "open the dashboard" in " ".join(proc.stdout.split()).lower(), command
        assert "not in this version" not in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "gitswarm", "monitor", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--read-only" in proc.stdout
