"""Text from a user's file or an agent reaches the terminal with its control characters
escaped (issue 11, point 14): a title holding `ESC[2J` must not clear the user's
screen, nor `ESC]0;...BEL` retitle their terminal. One rule (views.terminal_safe) is
used by every printer: the CLI's consoles, its JSON, the run's progress lines and the
dashboard's view model."""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

from hypothesis import given, strategies as st

from gitswarm.store import Store
from gitswarm.views import terminal_safe
from gitswarm.tui import completion, detail, view
from gitswarm.tui.gitread import DiffText
from gitswarm.config import BudgetConfig

from .conftest import make_repo
from .runkit import agent_config, checkout_snapshot, gitswarm, write_tasks

CLEAR = "\x1b[2J"
RETITLE = "\x1b]0;pwn\x07"
C1_CSI = "\x9b31m"
NASTY = f"A{CLEAR}B{RETITLE}C{C1_CSI}D\x7fE\rF"
# What the user sees instead: every control character written out.
SHOWN_CLEAR = "\\x1b[2J"
SHOWN_RETITLE = "\\x1b]0;pwn\\x07"
# A control character anywhere in output other than newline (and tab).
RAW = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _assert_escaped(text: str, *, shown: tuple[str, ...] = (SHOWN_CLEAR,)) -> None:
    found = RAW.search(text)
    assert found is None, f"raw control character {found.group()!r} in: {text!r}"
    for s in shown:
        assert s in text, text


# -- the rule


def test_the_rule() -> None:
    assert terminal_safe(NASTY) == "A\\x1b[2JB\\x1b]0;pwn\\x07C\\x9b31mD\\x7fE\\x0dF"
    assert terminal_safe("line one\n\tline two") == "line one\n\tline two"
    assert terminal_safe("line one\n\tline two", multiline=False) == "line one\\x0a\\x09line two"
    assert terminal_safe("naïve — ok ✓") == "naïve — ok ✓"


@given(st.text())
def test_the_rule_leaves_no_control_character_and_is_idempotent(text: str) -> None:
    safe = terminal_safe(text)
    assert RAW.search(safe) is None
    assert terminal_safe(safe) == safe
    assert "\n" not in terminal_safe(text, multiline=False) and "\t" not in terminal_safe(text, multiline=False)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc",))))
def test_text_without_control_characters_is_unchanged(text: str) -> None:
    assert terminal_safe(text) == text


# -- a state written through the store (the loader may refuse such titles)


def _hostile_run(repo: Path) -> None:
    rs = Store(repo).create_run({"id": "r1", "goal": f"goal {NASTY}", "swarm_branch": "attoswarm/r1"})
    rs.append({"type": "plan_set", "tasks": [
        {"id": "t1", "title": f"title {NASTY}", "description": f"line one {CLEAR}\nline two", "files": ["a.py"]}]})
    rs.append({"type": "phase_changed", "phase": "running"})
    rs.append({"type": "attempt_started", "task": "t1", "n": 1, "agent": "impl-1", "backend": "command",
               "prompt": f"# Task t1\ntitle {NASTY}\n"})
    rs.append({"type": "progress", "task": "t1", "n": 1, "event": f"message: said {CLEAR}"})
    rs.append({"type": "attempt_finished", "task": "t1", "n": 1, "result": "failed", "retry": True,
               "error": f"agent failed: {NASTY}", "summary": f"summary {NASTY}"})


def test_status_show_log_and_ls_escape_what_the_state_holds(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    _hostile_run(repo)
    before = checkout_snapshot(repo)
    for args in (["status", "r1"], ["show", "r1"], ["show", "r1", "t1"], ["log", "r1"], ["ls"],
                 ["show", "r1", "t1", "--prompt"]):
        proc = gitswarm(repo, *args)
        assert proc.returncode == 0, (args, proc.stderr)
        _assert_escaped(proc.stdout + proc.stderr)
    shown = gitswarm(repo, "show", "r1", "t1").stdout
    assert SHOWN_RETITLE in shown and "summary A\\x1b[2J" in shown and "line two" in shown
    # JSON stays JSON (C0 as \u escapes, DEL and C1 too), and means the same text.
    for args in (["status", "r1", "--json"], ["log", "r1", "--json"], ["show", "r1", "t1", "--json"]):
        proc = gitswarm(repo, *args)
        assert RAW.search(proc.stdout) is None, args
        json.loads(proc.stdout)
    data = json.loads(gitswarm(repo, "status", "r1", "--json").stdout)
    assert data["tasks"][0]["title"] == f"title {NASTY}", "JSON keeps the text, escaped only as JSON"
    # An error message naming user input is escaped too.
    proc = gitswarm(repo, "show", "r1", f"t{CLEAR}")
    assert proc.returncode == 2
    _assert_escaped(proc.stderr)
    assert checkout_snapshot(repo) == before


def test_the_dashboards_view_model_is_escaped(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    _hostile_run(repo)
    rs = Store(repo).run("r1")
    state = rs.read()
    now = datetime.now(timezone.utc)
    index = view.TaskIndex()
    index.update(state.tasks)
    head = view.header(state, index.counts, BudgetConfig(), now)
    texts = [head.goal, head.reason or ""]
    texts += [r.text for r in index.sorted_rows()]
    running = {tid: t for tid, t in state.tasks.items()}
    texts += [r.last_event for r in view.agent_rows(running.values(), now)]
    entries = list(reversed(list(rs.history())))
    texts += [e.text for e in view.event_lines(entries, timezone.utc)]

    def read(path: str | None) -> str | None:
        data = rs.read_file(path) if path else None
        return data.decode() if data is not None else None

    d = detail.build(state.tasks["t1"], 1, None, read, lambda a: DiffText("diff", f"+x {CLEAR}"), timezone.utc)
    texts += [d.heading, d.summary, d.prompt, d.transcript, d.diff.title, d.diff.text]
    done = completion.summary(state, DiffText("files", f"a.py {CLEAR}"), now)
    texts += [done.title, *done.lines, done.files.text]
    for text in texts:
        assert RAW.search(text) is None, repr(text)
    assert any(SHOWN_CLEAR in t for t in [head.goal]) and any(SHOWN_CLEAR in r.text for r in index.sorted_rows())
    assert SHOWN_RETITLE in d.summary and SHOWN_CLEAR in d.prompt


# -- a real run: what an agent says reaches the run's own output escaped

AGENT = f"""\
import json, pathlib
pathlib.Path("a.txt").write_text("a\\n")
print("working " + {CLEAR!r})
print(json.dumps({{"type": "finished", "data": {{"ok": False, "summary": "gave up " + {NASTY!r}}}}}))
"""


def test_a_run_prints_an_agents_summary_escaped(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    cfg = agent_config(tmp_path, AGENT, interpreter=sys.executable, name="agent.py")
    tf = write_tasks(tmp_path, "tasks:\n  - {id: t1, title: Plain title, files: [a.txt]}\n")
    before = checkout_snapshot(repo)
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "r1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "gave up A" in proc.stdout, proc.stdout
    _assert_escaped(proc.stdout + proc.stderr, shown=(SHOWN_CLEAR, SHOWN_RETITLE))
    for args in (["status", "r1"], ["show", "r1", "t1"], ["log", "r1"]):
        _assert_escaped(gitswarm(repo, *args).stdout)
    assert checkout_snapshot(repo) == before
