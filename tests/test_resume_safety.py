"""Resume after a stop, and runs that could never end (issue 11, points 8 and 10).

Point 8: an agent that keeps a session remembers what it wrote before a stop. The
attempt after an interrupted one starts from the interrupted attempt's kept commit (and
continues the session), or, with nothing kept, from the base with a fresh session and a
prompt that says the work was lost: either way the swarm branch ends with the work.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from gitswarm.store import Store

from .conftest import git, make_repo
from .runkit import agent_config, checkout_snapshot, gitswarm, gitswarm_bg, write_tasks

# Plays a session-keeping agent (claude, codex): the first call reports its session,
# maybe writes the file, and sleeps until stopped; a later call given the session
# (GITSWARM_SESSION) remembers the first and only says "Done"; a fresh call does the work.
SESSION_AGENT = """\
import json, os, pathlib, sys, time
calls, mode, prompts = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
n = int(calls.read_text()) + 1 if calls.exists() else 1
prompts.mkdir(exist_ok=True)
(prompts / f"{n}.md").write_text(sys.stdin.read())
(prompts / f"{n}.session").write_text(os.environ.get("GITSWARM_SESSION", ""))
def finish(session, summary="ok"):
    print(json.dumps({"type": "finished", "data": {"ok": True, "summary": summary, "session": session}}), flush=True)
if os.environ.get("GITSWARM_SESSION"):
    calls.write_text(str(n))
    finish(os.environ["GITSWARM_SESSION"], "Done: I already wrote a.txt")
    sys.exit(0)
if n == 1:
    if mode == "write":
        pathlib.Path("a.txt").write_text("the work\\n")
    finish("sess-1")
    calls.write_text(str(n))
    time.sleep(60)
    sys.exit(0)
pathlib.Path("a.txt").write_text("the work\\n")
calls.write_text(str(n))
finish(f"sess-{n}")
"""


def _session_config(tmp: Path, mode: str) -> tuple[Path, Path]:
    prompts = tmp / "prompts"
    cfg = agent_config(tmp, SESSION_AGENT, interpreter=sys.executable, name="agent.py",
                       args=(str(tmp / "calls"), mode, str(prompts)), attempts=3)
    return cfg, prompts


def _wait_for(check, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _stop_while_agent_sleeps(tmp: Path, mode: str) -> tuple[Path, Path, dict]:
    repo = make_repo(tmp / "repo")
    cfg, prompts = _session_config(tmp, mode)
    tf = write_tasks(tmp, "tasks:\n  - {id: t1, title: Write a, files: [a.txt]}\n")
    before = checkout_snapshot(repo)
    proc = gitswarm_bg(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "rs")
    try:
        _wait_for(lambda: (tmp / "calls").exists(), "the agent's first call")
        stop = gitswarm(repo, "stop", "rs")
        assert stop.returncode == 0, stop.stderr
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert Store(repo).run("rs").read().run.phase.value == "shutdown", out
    return repo, prompts, before


def test_resume_after_stop_continues_from_the_kept_work_with_the_session(tmp_path: Path) -> None:
    repo, prompts, before = _stop_while_agent_sleeps(tmp_path, "write")
    assert git(repo, "rev-parse", "--verify", "-q", "refs/attoswarm/rs/attempts/t1/1"), "the interrupted work is kept"
    resumed = gitswarm(repo, "resume", "rs")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (prompts / "2.session").read_text() == "sess-1", "the session is continued: the work is there"
    assert git(repo, "show", "attoswarm/rs:a.txt") == "the work"
    assert checkout_snapshot(repo) == before


def test_resume_with_nothing_kept_starts_a_fresh_session_told_what_happened(tmp_path: Path) -> None:
    repo, prompts, before = _stop_while_agent_sleeps(tmp_path, "nothing")
    assert not git(repo, "rev-parse", "--verify", "-q", "refs/attoswarm/rs/attempts/t1/1", check=False)
    resumed = gitswarm(repo, "resume", "rs")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (prompts / "2.session").read_text() == "", "no session to continue: the agent's memory is of lost work"
    assert "interrupted" in (prompts / "2.md").read_text()
    assert git(repo, "show", "attoswarm/rs:a.txt") == "the work"
    assert checkout_snapshot(repo) == before


def test_start_point_rule() -> None:
    from gitswarm.coordinator import start_point
    from gitswarm.model import Attempt

    stopped = Attempt(n=1, agent="a", backend="claude", base="b" * 40, result="interrupted", session="s-1")
    failed = Attempt(n=1, agent="a", backend="claude", base="b" * 40, result="failed", session="s-1")
    tip, kept = "t" * 40, "k" * 40
    assert start_point([], "claude", tip, None) == start_point([], "claude", tip, None)
    assert start_point([], "claude", tip, None).start == tip
    p = start_point([stopped], "claude", tip, kept)
    assert (p.start, p.base, p.session) == (kept, "b" * 40, "s-1") and p.note and kept[:10] in p.note
    p = start_point([stopped], "claude", tip, None)
    assert (p.start, p.base, p.session) == (tip, tip, None) and p.note and "lost" in p.note
    idle = Attempt(n=1, agent="a", backend="claude", base="b" * 40, commit="b" * 40, result="interrupted",
                   session="s-1")
    p = start_point([idle], "claude", tip, None)  # stopped before it changed anything: said so, fresh session
    assert (p.start, p.base, p.session) == (tip, tip, None) and p.note and "before any change" in p.note
    p = start_point([failed], "claude", tip, kept)  # a retry of a failure starts afresh on the tip
    assert (p.start, p.base, p.session, p.note) == (tip, tip, "s-1", None)


# ---------------------------------------------------------------- point 10: runs that could never end

def _command_config(tmp: Path, script: str, attempts: int = 1) -> Path:
    return agent_config(tmp, script, attempts=attempts)


# An agent that resets its branch to a root of its own (as `checkout --orphan` + commit would).
UNRELATED = ('root=$(git commit-tree $(git mktree </dev/null) -m "my own root")\n'
             'git reset -q --hard "$root"\necho a > a.txt\n')
# An agent that checks the swarm branch out in its worktree.
SWARM_CHECKOUT = "git checkout -q attoswarm/rb\necho a > a.txt\n"
# A kill -9 of a git process leaves the swarm branch's lock file behind.
STALE_LOCK = 'touch "$(git rev-parse --git-common-dir)/refs/heads/attoswarm/rb.lock"\necho a > a.txt\n'


def _run_to_its_end(tmp: Path, script: str) -> tuple[subprocess.CompletedProcess[str], "object"]:
    repo = make_repo(tmp / "repo")
    cfg = _command_config(tmp, script)
    tf = write_tasks(tmp, "tasks:\n  - {id: t1, title: Write a, files: [a.txt]}\n")
    before = checkout_snapshot(repo)
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "rb", timeout=90)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    state = Store(repo).run("rb").read()
    assert state.run.phase.ended, proc.stdout + proc.stderr
    assert checkout_snapshot(repo) == before
    return proc, state


def test_an_attempt_with_an_unrelated_history_fails_and_the_run_ends(tmp_path: Path) -> None:
    proc, state = _run_to_its_end(tmp_path, UNRELATED)
    t1 = state.tasks["t1"]
    assert t1.status.value == "failed"
    assert "does not descend from" in (t1.attempts[-1].error or ""), t1.attempts[-1].error


def test_a_swarm_branch_checked_out_by_the_agent_fails_the_attempt_not_the_run(tmp_path: Path) -> None:
    proc, state = _run_to_its_end(tmp_path, SWARM_CHECKOUT)
    t1 = state.tasks["t1"]
    assert t1.status.value == "failed"
    assert "switched the worktree to branch attoswarm/rb" in (t1.attempts[-1].error or ""), t1.attempts[-1].error


def test_a_stale_lock_on_the_swarm_branch_fails_the_merge_with_the_reason(tmp_path: Path) -> None:
    proc, state = _run_to_its_end(tmp_path, STALE_LOCK)
    t1 = state.tasks["t1"]
    assert t1.status.value == "failed"
    assert "attoswarm/rb.lock" in (t1.attempts[-1].error or ""), t1.attempts[-1].error


def _opened(tmp: Path, run_id: str):
    from gitswarm.config import load_config
    from gitswarm.launch import open_run

    from .runkit import write_config

    repo = make_repo(tmp / "repo")
    config = load_config(write_config(tmp, count=1, attempts=1)).config
    return repo, config, open_run(repo, config, goal="write a", run_id=run_id)


TASKS_YAML = 'tasks:\n  - {id: t1, title: Write a, files: [a.txt], script: [{write: {path: a.txt, content: "a\\n"}}]}\n'


def _task(tmp: Path) -> dict:
    from gitswarm.tasksfile import read_tasks_file

    return read_tasks_file(str(write_tasks(tmp, TASKS_YAML))).tasks[0].to_json()


def _plan(tmp: Path) -> dict:
    return {"type": "plan_set", "tasks": [_task(tmp)], "source": "tasks-file"}


def test_resume_of_a_state_that_ends_at_its_plan_runs_the_tasks(tmp_path: Path) -> None:
    from gitswarm.store import swarm_branch

    repo, _config, opened = _opened(tmp_path, "rp")
    gitops_branch = swarm_branch("rp")
    git(repo, "branch", gitops_branch, opened.base_commit)
    opened.store.append(_plan(tmp_path))  # killed before phase_changed
    try:
        resumed = gitswarm(repo, "resume", "rp", timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError("resume idled at the plan event") from None
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert git(repo, "show", "attoswarm/rp:a.txt") == "a"


def test_a_run_killed_right_after_it_was_created_can_be_resumed_or_discarded(tmp_path: Path) -> None:
    repo, _config, _opened_run = _opened(tmp_path, "rc")
    before = checkout_snapshot(repo)
    resumed = gitswarm(repo, "resume", "rc", timeout=60)
    said = resumed.stdout + resumed.stderr
    assert resumed.returncode == 1 and "Traceback" not in said, said
    assert "before its plan was recorded" in said and "gitswarm stop rc" in said, said
    assert "gitswarm finalize rc --discard" in said, said
    stop = gitswarm(repo, "stop", "rc")
    assert stop.returncode == 0, stop.stderr
    assert Store(repo).run("rc").read().run.phase.value == "shutdown"
    discarded = gitswarm(repo, "finalize", "rc", "--discard")
    assert discarded.returncode == 0, discarded.stdout + discarded.stderr
    assert Store(repo).run("rc").read().run.finalized["action"] == "discard"
    assert checkout_snapshot(repo) == before


def test_stop_ends_a_run_with_no_live_coordinator(tmp_path: Path) -> None:
    from gitswarm.launch import commit_plan

    repo, _config, opened = _opened(tmp_path, "rn")
    commit_plan(opened, _plan(tmp_path))  # coordinator died at once
    before = checkout_snapshot(repo)
    stop = gitswarm(repo, "stop", "rn")
    assert stop.returncode == 0, stop.stderr
    state = Store(repo).run("rn").read()
    assert state.run.phase.value == "shutdown" and state.run.reason == "control:stop"
    assert "no coordinator" in stop.stdout, stop.stdout
    assert gitswarm(repo, "gc", "rn").returncode == 0
    discarded = gitswarm(repo, "finalize", "rn", "--discard")
    assert discarded.returncode == 0, discarded.stdout + discarded.stderr
    assert checkout_snapshot(repo) == before


def test_resume_fails_an_interrupted_merge_blocked_by_a_stale_lock(tmp_path: Path) -> None:
    import os

    from gitswarm.launch import commit_plan

    repo, _config, opened = _opened(tmp_path, "rl")
    commit_plan(opened, _plan(tmp_path))
    base = opened.base_commit
    env = {**os.environ, "GIT_INDEX_FILE": str(tmp_path / "index")}

    def plumb(*args: str, stdin: str | None = None) -> str:
        return subprocess.run(["git", *args], cwd=repo, env=env, input=stdin, capture_output=True, text=True,
                              check=True).stdout.strip()

    plumb("read-tree", base)
    blob = plumb("hash-object", "-w", "--stdin", stdin="a\n")
    plumb("update-index", "--add", "--cacheinfo", f"100644,{blob},a.txt")
    tree = plumb("write-tree")
    work = plumb("commit-tree", tree, "-p", base, "-m", "t1 work")
    merge = plumb("commit-tree", tree, "-p", base, "-p", work, "-m", "Merge task t1")
    opened.store.append(
        {"type": "attempt_started", "task": "t1", "n": 1, "agent": "impl-1", "backend": "scripted", "base": base,
         "branch": "attoswarm-work/rl/t1"},
        {"type": "attempt_finished", "task": "t1", "n": 1, "result": "ok", "commit": work},
        {"type": "merge_intent", "task": "t1", "n": 1, "commit": merge, "tip": base},
    )
    (repo / ".git/refs/heads/attoswarm/rl.lock").write_text("")  # kill -9 of the merge's update-ref
    resumed = gitswarm(repo, "resume", "rl", timeout=60)
    said = resumed.stdout + resumed.stderr
    assert "Traceback" not in said
    state = Store(repo).run("rl").read()
    assert state.run.phase.ended, said
    assert "rl.lock" in (state.tasks["t1"].attempts[-1].error or ""), said


def _planner_config(tmp: Path, planner_script: str) -> Path:
    """A planner role played by `planner_script` (Python) and a worker that writes a.txt."""
    planner = tmp / "planner.py"
    planner.write_text(planner_script)
    return agent_config(tmp, "printf 'a\\n' > a.txt\n", extra="gates: {tests: false}\n", planner=planner)


# A planner played by a program: its answer (the plan as JSON) is its `finished` summary.
PLANNER = """\
import json
plan = {"tasks": [{"id": "t1", "title": "Write a", "files": ["a.txt"]}]}
print(json.dumps({"type": "finished", "data": {"ok": True, "summary": json.dumps(plan)}}))
"""


def test_a_run_killed_while_its_planner_worked_is_planned_again_on_resume(tmp_path: Path) -> None:
    """`start CONFIG GOAL` writes the run's first state commit, then the planner works
    for minutes: a kill then leaves a run with its goal and no plan. resume plans it."""
    from gitswarm.config import load_config
    from gitswarm.launch import open_run

    repo = make_repo(tmp_path / "repo")
    cfg = _planner_config(tmp_path, PLANNER)
    open_run(repo, load_config(cfg).config, goal="write a", run_id="rq")  # then killed: no plan
    before = checkout_snapshot(repo)
    resumed = gitswarm(repo, "resume", "rq", timeout=120)
    said = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, said
    assert "plans the goal again" in said, said
    assert git(repo, "show", "attoswarm/rq:a.txt") == "a"
    assert Store(repo).run("rq").read().run.phase.value == "completed"
    assert checkout_snapshot(repo) == before


def test_resume_never_continues_from_an_agent_that_had_left_its_branch(tmp_path: Path) -> None:
    """An agent checked out the user's `feature` and the coordinator died: resume keeps
    its worktree for review but fails the attempt, so `feature`'s commits never reach
    the swarm branch through a start point."""
    from gitswarm.config import load_config
    from gitswarm.coordinator import run_paths
    from gitswarm.launch import commit_plan, open_run

    from .runkit import write_config

    repo = make_repo(tmp_path / "repo")
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "mine.txt").write_text("the user's own work\n")
    git(repo, "add", "mine.txt")
    git(repo, "commit", "-q", "-m", "user: feature work")
    git(repo, "checkout", "-q", "main")
    config = load_config(write_config(tmp_path, count=1, attempts=2)).config
    opened = open_run(repo, config, goal="write a", run_id="rf")
    commit_plan(opened, _plan(tmp_path))
    branch = "attoswarm-work/rf/t1"
    opened.store.append({"type": "attempt_started", "task": "t1", "n": 1, "agent": "impl-1", "backend": "scripted",
                         "base": opened.base_commit, "branch": branch})
    worktree = run_paths(repo, config, "rf").worktree("t1")
    git(repo, "worktree", "add", "-q", "-b", branch, str(worktree), opened.base_commit)
    git(worktree, "checkout", "-q", "feature")
    (worktree / "a.txt").write_text("a\n")
    feature = git(repo, "rev-parse", "feature")
    resumed = gitswarm(repo, "resume", "rf", timeout=60)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    state = Store(repo).run("rf").read()
    first = state.tasks["t1"].attempts[0]
    assert first.result == "failed" and "switched the worktree to branch feature" in (first.error or ""), first
    assert git(repo, "rev-parse", "feature") == feature
    assert subprocess.run(["git", "merge-base", "--is-ancestor", feature, "attoswarm/rf"], cwd=repo).returncode == 1
    assert git(repo, "show", "attoswarm/rf:a.txt") == "a"  # attempt 2 did the task from the swarm tip


SLOW_PLANNER = "import time\ntime.sleep(3)\n" + PLANNER


def test_stop_while_the_planner_works_is_a_request_the_run_honours(tmp_path: Path) -> None:
    """The planner holds the run's lease: `stop` asks rather than ending the run under it
    (which then crashed on recording the plan), and the run stops once it is planned."""
    repo = make_repo(tmp_path / "repo")
    cfg = _planner_config(tmp_path, SLOW_PLANNER)
    proc = gitswarm_bg(repo, "start", str(cfg), "write a", "--run-id", "rw")
    deadline = time.monotonic() + 20
    # Once the planner holds the lease (taken a moment after the run's first commit).
    while time.monotonic() < deadline and not ("rw" in Store(repo).run_ids() and Store(repo).run("rw").read_lease()):
        time.sleep(0.05)
    stop = gitswarm(repo, "stop", "rw")
    assert stop.returncode == 0 and "stop requested" in stop.stdout, stop.stdout + stop.stderr
    out, _ = proc.communicate(timeout=60)
    assert "Traceback" not in out, out
    state = Store(repo).run("rw").read()
    assert state.run.phase.value == "shutdown" and state.run.reason == "control:stop", out
    assert "t1" in state.tasks  # the plan was kept: `gitswarm resume rw` goes on with it
