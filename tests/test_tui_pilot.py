"""Every key of the dashboard, driven with Textual's Pilot against real runs: the
scripted backend through the real CLI in the background (a coordinator that acts on
what the keys write), or runs written through the store. After each key the test reads
the state ref, as any other process would."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gitswarm.model import RunPhase
from gitswarm.store import Store
from gitswarm.tui.app import DETACHED, QUIT, DashboardApp
from gitswarm.tui.completion_screen import CompletionScreen
from gitswarm.tui.dashboard import DashboardScreen
from gitswarm.tui.detail_screen import DetailScreen
from gitswarm.tui.forms import AddTaskForm, ConfirmStop, MessageForm

from .conftest import git, make_repo
from .runkit import gitswarm, write_config, write_tasks
from .test_tui_kit import coordinated, finish, read, run_async, screen_text, start_bg, store_run, wait_for, wait_until

if sys.platform == "win32":  # pragma: no cover
    pytest.skip("POSIX runs", allow_module_level=True)

SIZE = (120, 36)

# One slow task keeps the run going while the keys are pressed; `quick` waits for it.
SLOW = """\
tasks:
  - {id: slow, title: Slow, files: [slow.txt], script: [{sleep: 60}, {write: {path: slow.txt, content: "slow\\n"}}]}
  - {id: quick, title: Quick, deps: [slow], files: [quick.txt], script: [{write: {path: quick.txt, content: "quick\\n"}}]}
"""

FAST = """\
tasks:
  - {id: one, title: One, files: [one.txt], script: [{write: {path: one.txt, content: "one\\n"}}]}
  - {id: two, title: Two, deps: [one], files: [two.txt], script: [{write: {path: two.txt, content: "two\\n"}}]}
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


def _live(repo: Path, tasks: str = SLOW, *extra: str):
    """A run whose coordinator works in the background; returns once it holds the lease
    and (without --preview) the slow task runs."""
    proc = start_bg(repo, tasks, *extra)
    try:
        if "--preview" in extra:
            wait_until(lambda: read(repo).run.phase == RunPhase.AWAITING_APPROVAL and coordinated(repo), what="the plan to wait for approval")
        else:
            wait_until(lambda: read(repo).tasks["slow"].status.value == "running" and coordinated(repo), what="the slow task to run")
    except BaseException:
        finish(proc, repo)
        raise
    return proc


def _app(repo: Path, **kw: object) -> DashboardApp:
    return DashboardApp(repo, "r1", poll_interval=0.05, **kw)  # type: ignore[arg-type]


def test_p_pauses_and_unpauses_and_q_detaches_leaving_the_run_going(repo: Path) -> None:
    proc = _live(repo)
    try:

        async def go() -> str | None:
            app = _app(repo)
            async with app.run_test(size=SIZE) as pilot:
                await wait_for(pilot, lambda: app.access.coordinator_live, what="the coordinator's lease")
                assert "live: keys write events" in screen_text(app)
                await pilot.press("p")
                assert read(repo).run.phase == RunPhase.PAUSED
                assert app.message == "paused: run r1 starts no new attempts"
                await wait_for(pilot, lambda: "r1  paused" in screen_text(app), what="the header to say paused")
                await pilot.press("p")
                assert read(repo).run.phase == RunPhase.RUNNING
                assert app.message == "unpaused: run r1 goes on"
                # Not a preview: approve and reject say why not, and write nothing.
                tip = Store(repo).run("r1").tip()
                for key in ("a", "x"):
                    await pilot.press(key)
                    assert app.refused and "nothing is waiting for approval" in app.message
                assert Store(repo).run("r1").tip() == tip
                await pilot.press("q")
                await pilot.pause()
            return app.return_value

        assert run_async(go()) == DETACHED
        state = read(repo)
        assert state.run.phase == RunPhase.RUNNING and state.tasks["slow"].status.value == "running"
        assert proc.poll() is None and coordinated(repo), "closing the dashboard never stops the run"
    finally:
        finish(proc, repo)


def test_s_asks_first_then_stops_and_the_completion_screen_keeps_the_branch(repo: Path) -> None:
    proc = _live(repo)
    try:

        async def go() -> str | None:
            app = _app(repo)
            async with app.run_test(size=SIZE) as pilot:
                await wait_for(pilot, lambda: app.access.coordinator_live, what="the coordinator's lease")
                await pilot.press("s")
                assert isinstance(app.screen, ConfirmStop)
                await pilot.press("n")
                assert isinstance(app.screen, DashboardScreen) and app.message == "stop cancelled: the run goes on"
                assert read(repo).run.stop_requested is None
                await pilot.press("s")
                await pilot.press("y")
                # The event is on the state ref (the coordinator may already have acted).
                stops = [e for e in Store(repo).run("r1").events() if e["type"] == "control" and e["action"] == "stop"]
                assert [e["reason"] for e in stops] == ["control:stop"]
                assert app.message == "stop requested: run r1 shuts down"
                # The coordinator stops the agent and ends the run: the completion screen.
                await wait_for(pilot, lambda: _completion_drawn(app), what="the completion screen")
                screen = app.screen
                text = screen_text(app)
                assert "run r1 shutdown (control:stop)" in text
                assert "tasks     0 done, 0 failed, 0 skipped (of 2)" in text
                await pilot.press("k")
                assert read(repo).run.finalized["action"] == "keep"  # type: ignore[index]
                assert screen.outcome == "kept attoswarm/r1 for review: git log --notes=attoswarm/r1 attoswarm/r1"
                assert "kept attoswarm/r1 for review" in screen_text(app) and "finalized keep" in screen_text(app)
                await pilot.press("k")
                assert screen.outcome == "already kept"
                # Back on the dashboard, the ended run is read-only and says so.
                await pilot.press("escape")
                assert isinstance(app.screen, DashboardScreen)
                tip = Store(repo).run("r1").tip()
                await pilot.press("p")
                assert app.message == "read-only: the run has ended (shutdown)"
                assert Store(repo).run("r1").tip() == tip
                await pilot.press("c")
                assert isinstance(app.screen, CompletionScreen)
                await pilot.press("q")
                await pilot.pause()
            return app.return_value

        assert run_async(go()) == QUIT
        proc.communicate(timeout=30)
        assert proc.returncode == 1
    finally:
        finish(proc, repo)


def test_n_adds_a_task_and_shows_the_stores_refusals(repo: Path) -> None:
    proc = _live(repo)
    try:

        async def go() -> None:
            app = _app(repo)
            async with app.run_test(size=SIZE) as pilot:
                await wait_for(pilot, lambda: app.access.coordinator_live, what="the coordinator's lease")
                await pilot.press("n")
                form = app.screen
                assert isinstance(form, AddTaskForm)
                await pilot.press(*"x1")  # the id field has the focus
                form.query_one("#f-title").value = "Extra"  # type: ignore[attr-defined]
                form.query_one("#f-deps").value = "x1"  # type: ignore[attr-defined]
                await pilot.press("enter")
                assert app.screen is form and form.error == "refused: task x1 depends on itself"
                assert "depends on itself" in screen_text(app)
                form.query_one("#f-deps").value = "slow, nope"  # type: ignore[attr-defined]
                await pilot.press("enter")
                assert form.error == "refused: task x1 depends on unknown task 'nope'"
                assert "x1" not in read(repo).tasks
                form.query_one("#f-deps").value = "slow"  # type: ignore[attr-defined]
                form.query_one("#f-files").value = "x1.txt"  # type: ignore[attr-defined]
                await pilot.press("enter")
                assert isinstance(app.screen, DashboardScreen) and app.message == "x1 added to run r1"
                spec = read(repo).tasks["x1"].spec
                assert (spec.title, spec.deps, spec.files) == ("Extra", ("slow",), ("x1.txt",))
                assert "x1" in app.dashboard.index.rows and app.dashboard.index.waves["x1"] == 2
                # escape cancels and writes nothing
                tip = Store(repo).run("r1").tip()
                await pilot.press("n", "escape")
                assert app.message == "add task cancelled" and Store(repo).run("r1").tip() == tip

        run_async(go())
    finally:
        finish(proc, repo)


# `ask` waits for a message; `later` has not started while it waits.
ASKING = """\
tasks:
  - id: ask
    title: Ask
    files: [NOTES.md]
    script: [{write: {path: NOTES.md, content: "notes\\n"}}, {await_message: {path: NOTES.md, timeout: 60}}]
  - {id: later, title: Later, deps: [ask], files: [later.txt], script: [{write: {path: later.txt, content: "x\\n"}}]}
"""


def test_i_sends_a_message_to_the_selected_tasks_agent(repo: Path) -> None:
    proc = start_bg(repo, ASKING)
    try:
        wait_until(lambda: "waiting" in (read(repo).tasks["ask"].current.last_event or "") and coordinated(repo),
                   what="the agent to wait for a message")

        async def go() -> None:
            app = _app(repo)
            async with app.run_test(size=SIZE) as pilot:
                await wait_for(pilot, lambda: app.access.coordinator_live, what="the coordinator's lease")
                table = app.dashboard.query_one("#tasks")
                # `later` has no agent: refused, with the reason.
                table.move_cursor(row=table.get_row_index("later"))  # type: ignore[attr-defined]
                await pilot.press("i")
                assert isinstance(app.screen, DashboardScreen)
                assert app.refused and app.message == "later has no running agent to take a message (pending)"
                table.move_cursor(row=table.get_row_index("ask"))  # type: ignore[attr-defined]
                await pilot.press("i")
                form = app.screen
                assert isinstance(form, MessageForm) and "Message to impl-1, working on ask" in screen_text(app)
                await pilot.press("escape")
                assert app.message == "message cancelled"
                await pilot.press("i")
                await pilot.press("enter")  # empty: refused, the form stays
                assert isinstance(app.screen, MessageForm) and app.screen.error == "refused: the message is empty"
                await pilot.press(*"use pathlib")
                await pilot.press("enter")
                # The form closed (the run may already have ended and shown its summary).
                assert not isinstance(app.screen, MessageForm)
                assert app.message.startswith("message queued for ask: its agent gets it as its next turn")
                # The coordinator hands it to the agent, which writes it and finishes.
                await wait_for(pilot, lambda: read(repo).run.phase.ended, what="the run to end", timeout=60)

        run_async(go())
        proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert git(repo, "show", "attoswarm/r1:NOTES.md") == "notes\nuse pathlib"
        assert read(repo).tasks["ask"].attempts[0].messages == ("use pathlib",)
    finally:
        finish(proc, repo)


def test_a_approves_a_preview_then_m_merges_the_finished_run(repo: Path) -> None:
    proc = _live(repo, FAST, "--preview")
    try:

        async def go() -> None:
            app = _app(repo)
            async with app.run_test(size=SIZE) as pilot:
                await wait_for(pilot, lambda: app.access.coordinator_live, what="the coordinator's lease")
                assert "r1  awaiting_approval" in screen_text(app)
                await pilot.press("p")
                assert app.message == "only a running run can pause (it is awaiting_approval)"
                await pilot.press("a")
                state = read(repo)
                assert state.run.approval == "approved" and state.run.phase != RunPhase.AWAITING_APPROVAL
                await wait_for(pilot, lambda: _completion_drawn(app), what="the run to complete")
                screen = app.screen
                text = screen_text(app)
                assert "run r1 completed" in text and "tasks     2 done, 0 failed, 0 skipped (of 2)" in text
                assert "one.txt | 1 +" in text and "2 files changed, 2 insertions(+)" in text
                await pilot.press("m")
                fin = read(repo).run.finalized
                assert fin is not None and fin["action"] == "merge" and fin["into"] == "main"
                assert screen.outcome.startswith("merged attoswarm/r1 into main as ")
                await pilot.press("m")
                assert screen.outcome == "already finalized: merge into main"

        run_async(go())
        assert (repo / "two.txt").read_text() == "two\n", "main (checked out) got the swarm's work"
        proc.communicate(timeout=30)
        assert proc.returncode == 0
    finally:
        finish(proc, repo)


def test_x_rejects_a_preview(repo: Path) -> None:
    proc = _live(repo, FAST, "--preview")
    try:

        async def go() -> None:
            app = _app(repo)
            async with app.run_test(size=SIZE) as pilot:
                await wait_for(pilot, lambda: app.access.coordinator_live, what="the coordinator's lease")
                await pilot.press("x")
                state = read(repo)
                assert state.run.approval == "rejected" and state.run.phase == RunPhase.SHUTDOWN
                assert state.run.reason == "control:reject"
                await wait_for(pilot, lambda: _completion_drawn(app), what="the completion screen")
                assert "run r1 shutdown (control:reject)" in screen_text(app)

        run_async(go())
        proc.communicate(timeout=30)
        assert proc.returncode == 1
    finally:
        finish(proc, repo)


def test_m_shows_the_refusal_of_a_merge_that_would_conflict(repo: Path) -> None:
    cfg = write_config(repo.parent)
    tf = write_tasks(repo.parent, 'tasks:\n  - {id: t1, title: T, files: [README.md], script: [{write: {path: README.md, content: "swarm\\n"}}]}\n')
    assert gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "r1").returncode == 0
    (repo / "README.md").write_text("mine\n")
    git(repo, "commit", "-qam", "mine")
    main_before = git(repo, "rev-parse", "main")

    async def go() -> None:
        app = _app(repo)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: _completion_drawn(app), what="the completion screen")
            await pilot.press("m")
            screen = app.screen
            assert isinstance(screen, CompletionScreen)
            assert screen.outcome.startswith("merge refused: main has moved on and conflicts with attoswarm/r1 in README.md")
            assert "merge refused: main has moved on" in screen_text(app) and "Traceback" not in screen_text(app)

    run_async(go())
    assert git(repo, "rev-parse", "main") == main_before and read(repo).run.finalized is None


def test_enter_shows_prompt_transcript_diff_gates_and_failed_attempts(repo: Path) -> None:
    # The first attempt writes broken Python (the syntax gate fails it), the second a good one.
    script = (
        "if [ \\\"$GITSWARM_ATTEMPT\\\" = 1 ]; then printf 'def f(:\\\\n' > pkg/m.py; "
        "else printf 'def f():\\\\n    return 1\\\\n' > pkg/m.py; fi"
    )
    cfg = write_config(repo.parent)
    tf = write_tasks(repo.parent, f'tasks:\n  - {{id: m, title: Module, files: [pkg/m.py], script: [{{run: "{script}"}}]}}\n')
    assert gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "r1").returncode == 0
    rs = Store(repo).run("r1")
    second = rs.read().tasks["m"].attempts[1]

    async def go() -> None:
        app = _app(repo)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: _completion_drawn(app), what="the completion screen")
            await pilot.press("escape", "enter")
            screen = app.screen
            assert isinstance(screen, DetailScreen) and screen.detail is not None
            d = screen.detail
            assert d.heading == "task m  done  wave 1  attempt 2 of 2"
            assert "attempt 1: failed" in d.summary and "  gate     syntax FAILED: pkg/m.py:1:7: invalid syntax" in d.summary
            assert "  error    syntax gate: pkg/m.py:1:7: invalid syntax" in d.summary
            assert "attempt 2: ok" in d.summary and "  gate     syntax passed" in d.summary
            assert d.prompt == (rs.read_file(second.prompt_path or "") or b"").decode()
            assert "syntax gate: pkg/m.py:1:7" in d.prompt, "the retry prompt names the failure"
            assert "finished" in d.transcript
            assert "+    return 1" in d.diff.text and d.diff.title == f"git diff {second.base[:10]}..{second.commit[:10]}"  # type: ignore[index]
            await pilot.press("4")
            assert "+    return 1" in screen_text(app)
            await pilot.press("left_square_bracket")
            assert screen.detail.attempt == 1 and "+def f(:" in screen.detail.diff.text
            await pilot.press("2")
            assert "Task m: Module" in screen_text(app) or "Module" in screen_text(app)
            await pilot.press("escape")
            assert isinstance(app.screen, DashboardScreen)

    run_async(go())


def test_read_only_keys_refuse_and_say_why(repo: Path) -> None:
    """Runs without a coordinator (no live lease) and --read-only: no key writes."""
    rs = store_run(repo, "r1", [{"id": "a", "title": "A"}, {"id": "b", "title": "B", "deps": ["a"]}])
    tip = rs.tip()

    async def go(read_only: bool, expected: str) -> None:
        app = _app(repo, read_only=read_only)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            assert expected in screen_text(app)
            for key in ("p", "s", "n", "a", "x", "i"):
                await pilot.press(key)
                assert isinstance(app.screen, DashboardScreen), f"{key} opened nothing"
                assert app.refused and app.message.startswith(expected), (key, app.message)
            assert expected in screen_text(app)

    run_async(go(False, "read-only: no coordinator is running this run (no live lease); `gitswarm resume r1` goes on with it"))
    run_async(go(True, "read-only: opened with --read-only"))
    assert rs.tip() == tip, "no key wrote anything"

    # On an ended run, --read-only also keeps merge and keep off.
    rs.append({"type": "run_ended", "phase": "shutdown", "reason": "dry_run"})

    async def ended() -> None:
        app = _app(repo, read_only=True)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: _completion_drawn(app), what="the completion screen")
            for key in ("m", "k"):
                await pilot.press(key)
                assert app.screen.outcome == "read-only: opened with --read-only; finalize with `gitswarm finalize`"  # type: ignore[attr-defined]
            assert read(repo).run.finalized is None

    run_async(ended())


def test_r_rereads_at_once_and_the_timer_follows_the_ref(repo: Path) -> None:
    rs = store_run(repo, "r1", [{"id": "a", "title": "A"}])
    writer = Store(repo).run("r1")

    async def go() -> None:
        app = DashboardApp(repo, "r1", poll_interval=3600)  # no timer: only r reads
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            writer.append({"type": "task_added", "task": {"id": "late", "title": "Late one"}})
            await pilot.pause(0.2)
            assert "late" not in app.dashboard.index.rows
            await pilot.press("r")
            assert "late" in app.dashboard.index.rows and app.message == f"refreshed at state event {rs.read().seq}"
            await pilot.pause()
            assert "Late one" in screen_text(app) and "task late added" in screen_text(app)

        timed = _app(repo)
        async with timed.run_test(size=SIZE) as pilot:
            await pilot.pause()
            writer.append({"type": "task_added", "task": {"id": "later", "title": "Later one"}})
            await wait_for(pilot, lambda: "later" in timed.dashboard.index.rows, timeout=5, what="the poll to see the new task")
            await pilot.pause()
            assert "task later added" in screen_text(timed)

    run_async(go())


def _completion_drawn(app) -> bool:
    """The completion screen is up and has been drawn (pushing it and painting it are two
    steps; reading the screen in between gives an empty text)."""
    if not isinstance(app.screen, CompletionScreen):
        return False
    text = screen_text(app)
    return "tasks" in text and "run " in text
