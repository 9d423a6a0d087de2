"""SVG snapshots of the dashboard, the task detail and the completion screen.

The runs are fixture runs (tests/test_tui_kit.py): fixed run ids, event times and commit
dates, a fixed clock and the UTC zone, so every figure on screen is the same on any
machine. A change of the screens shows as a diff of their text rows; accept it with
GITSWARM_UPDATE_SNAPSHOTS=1 after looking at the new SVG.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gitswarm.tui.app import DashboardApp
from gitswarm.tui.clock import fixed_clock
from gitswarm.tui.completion_screen import CompletionScreen
from gitswarm.tui.detail_screen import DetailScreen

from .test_tui_kit import NOW, assert_snapshot, build_completed_run, build_live_run, pinned_repo, run_async, screen_text, wait_for

SIZE = (140, 40)


@pytest.fixture
def fixture_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Colours must not depend on the terminal the tests run in.
    for var in ("NO_COLOR", "FORCE_COLOR", "TEXTUAL_THEME", "COLORTERM"):
        monkeypatch.delenv(var, raising=False)
    repo = pinned_repo(tmp_path / "repo", monkeypatch)
    rs = build_live_run(repo)
    # A lease held by this process: the dashboard shows the run as coordinated (live).
    rs.acquire_lease("snapshot", ttl=600)
    build_completed_run(repo)
    return repo


def _app(repo: Path, run_id: str) -> DashboardApp:
    return DashboardApp(repo, run_id, clock=fixed_clock(NOW), poll_interval=3600)


def test_dashboard_snapshot(fixture_repo: Path, tmp_path: Path) -> None:
    async def go() -> tuple[str, str]:
        app = _app(fixture_repo, "snap")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            return app.export_screenshot(), screen_text(app)

    svg, text = run_async(go())
    # What the screen must say, independent of the snapshot's styling.
    for expected in (
        "run snap  running",
        "elapsed 5m00s",
        "coordinator live",
        "7 tasks: 2 pending, 2 running, 1 verifying, 1 merging, 1 done",
        "tokens 73k of 200k",
        "cost $0.5800 of $2.00",
        "impl-2  impl  claude   sonnet  sub#1    3m00s",
        "└ write pkg/sub.py",
        "└ run python -m pytest -q",
        "tests#2",
        "div#1   merging     merging 79de75c7dc",
        "mul#1   verifying   gates passed, waiting to merge",
        "26 10:03:35 div#1 merging as 79de75c7dc",
        "live: keys write events",
    ):
        assert expected in text, f"{expected!r} not on screen:\n{text}"
    assert_snapshot(svg, "dashboard", tmp_path)


def test_task_detail_snapshots(fixture_repo: Path, tmp_path: Path) -> None:
    async def go() -> tuple[str, str, str, str]:
        app = _app(fixture_repo, "snap")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            table = app.dashboard.query_one("#tasks")
            table.move_cursor(row=table.get_row_index("tests"))
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen), what="the task detail")
            await pilot.pause()
            summary_svg, summary = app.export_screenshot(), screen_text(app)
            await pilot.press("left_square_bracket", "4")  # attempt 1, its diff
            await pilot.pause()
            return summary_svg, summary, app.export_screenshot(), screen_text(app)

    summary_svg, summary, diff_svg, diff = run_async(go())
    assert "task tests  running  wave 2  attempt 2 of 2" in summary
    assert "attempt 1: failed  impl-4 (codex gpt-5)" in summary
    assert "gate     syntax FAILED: tests/test_calc.py:3:14: invalid syntax" in summary
    assert "error    syntax gate: tests/test_calc.py:3:14: invalid syntax" in summary
    assert "attempt 1 of 2" in diff and "+def test_add(:" in diff
    assert_snapshot(summary_svg, "task_detail", tmp_path)
    assert_snapshot(diff_svg, "task_detail_diff", tmp_path)


def test_completion_snapshot(fixture_repo: Path, tmp_path: Path) -> None:
    async def go() -> tuple[str, str]:
        app = _app(fixture_repo, "done1")
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, CompletionScreen), what="the completion screen")
            await pilot.pause()
            return app.export_screenshot(), screen_text(app)

    svg, text = run_async(go())
    for expected in (
        "run done1 completed",
        "tasks     3 done, 0 failed, 0 skipped (of 3)",
        "cost      $0.7500, 75k tokens",
        "duration  2m10s",
        "README.md  | 2 ++",
        "3 files changed, 6 insertions(+)",
        "[m] merge into the original branch",
    ):
        assert expected in text, f"{expected!r} not on screen:\n{text}"
    assert_snapshot(svg, "completion", tmp_path)
