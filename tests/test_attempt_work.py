"""An attempt's work (issue 11, points 6, 7 and 9): whatever the agent did to its
worktree, its work ends in a git object under refs/attoswarm/<run>/attempts/<task>/<n>,
no branch but the run's own moves, and an attempt that changed nothing is not a success.

Agents are small shell scripts run by the `command` backend; runs go through the CLI."""

from __future__ import annotations

import json
import queue
from pathlib import Path
from typing import Any

import pytest

from gitswarm import gitops
from gitswarm.backends.registry import get_backend
from gitswarm.backends.base import AgentRequest
from gitswarm.config import SwarmConfig
from gitswarm.coordinator import AttemptWorker
from gitswarm.model import TaskSpec
from gitswarm.store import Store

from .conftest import git, make_repo
from .runkit import agent_config, checkout_snapshot, gitswarm, status, write_config, write_tasks

RUN = "r1"
ATTEMPT_REF = f"refs/attoswarm/{RUN}/attempts/t1/1"


def _agent_config(tmp_path: Path, script: str, attempts: int = 1) -> Path:
    return agent_config(tmp_path, "set -e\n" + script, attempts=attempts)


def _run_agent(tmp_path: Path, script: str, *, branches: tuple[str, ...] = ()) -> tuple[Path, Any, dict[str, Any]]:
    """One task, one attempt by `script`; returns (repo, the finished run's CLI result,
    its status), having checked that the user's checkout came out as it went in."""
    repo = make_repo(tmp_path / "repo", {"README.md": "# sample\n", "a.txt": "old\n"})
    for b in branches:
        git(repo, "branch", b)
    cfg = _agent_config(tmp_path, script)
    tasks = write_tasks(tmp_path, "tasks:\n  - {id: t1, title: Change a, files: [a.txt, b.txt]}\n")
    before = checkout_snapshot(repo)
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tasks), "--run-id", RUN, timeout=60)
    assert checkout_snapshot(repo) == before
    return repo, proc, status(repo, RUN)


def _attempt(st: dict[str, Any]) -> dict[str, Any]:
    task = next(t for t in st["tasks"] if t["id"] == "t1")
    return task["attempts"][-1]


def _kept_file(repo: Path, path: str) -> str:
    return git(repo, "show", f"{ATTEMPT_REF}:{path}")


def _heads(repo: Path) -> dict[str, str]:
    lines = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads").splitlines()
    return dict(line.split(" ", 1) for line in lines)


def _assert_cleaned_up(repo: Path) -> None:
    assert len(git(repo, "worktree", "list").splitlines()) == 1
    assert git(repo, "for-each-ref", "refs/heads/attoswarm-work") == ""


# ---------------------------------------------------------------- 6: the leftover commit fails


@pytest.mark.parametrize(
    ("harm", "refused"),
    [
        ("mkdir -p pkg/.GIT && echo evil > pkg/.GIT/config", "pkg/.GIT/config"),
        ("mkdir sub && (cd sub && git init -q && echo inner > inner.txt)", "sub/"),
        # With a commit git would store a link to a commit it does not have, and the
        # files would go with the worktree: refused the same way, named.
        ("mkdir sub && (cd sub && git init -q && echo inner > inner.txt && git add inner.txt"
         " && git -c user.name=a -c user.email=a@b commit -qm inner)", "sub/"),
    ],
    ids=["invalid-path", "nested-repository", "nested-repository-with-a-commit"],
)
def test_files_git_refuses_are_left_out_and_the_rest_is_kept(tmp_path: Path, harm: str, refused: str) -> None:
    repo, proc, st = _run_agent(tmp_path, f"echo new > a.txt\necho b > b.txt\n{harm}\n")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    a = _attempt(st)
    assert a["result"] == "failed"
    assert refused in a["error"] and ATTEMPT_REF in a["error"], a["error"]
    assert _kept_file(repo, "a.txt") == "new" and _kept_file(repo, "b.txt") == "b"
    assert a["commit"] == git(repo, "rev-parse", ATTEMPT_REF)
    assert git(repo, "rev-parse", f"{ATTEMPT_REF}^") == a["base"]  # a commit on the attempt's base
    assert refused.rstrip("/") not in git(repo, "ls-tree", "-r", "--name-only", ATTEMPT_REF)
    _assert_cleaned_up(repo)


def test_an_index_lock_left_by_the_agent_does_not_lose_its_work(tmp_path: Path) -> None:
    script = 'echo new > a.txt\necho b > b.txt\ntouch "$(git rev-parse --git-dir)/index.lock"\n'
    repo, proc, st = _run_agent(tmp_path, script)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    a = _attempt(st)
    assert a["result"] == "failed" and "index.lock" in a["error"] and ATTEMPT_REF in a["error"], a["error"]
    assert _kept_file(repo, "a.txt") == "new" and _kept_file(repo, "b.txt") == "b"
    _assert_cleaned_up(repo)
    # git's messages in the error named the worktree by its absolute path: the state,
    # meant to be pushed, names it from the repository root.
    assert ".gitswarm/" in a["error"] and str(tmp_path) not in a["error"], a["error"]
    snapshot = git(repo, "log", "-1", "--format=%B", ATTEMPT_REF)
    assert "index.lock" in snapshot and str(tmp_path) not in snapshot, snapshot


def test_a_nul_in_the_title_does_not_stop_the_work_being_committed(tmp_path: Path) -> None:
    # A title comes from the user or a planner; the commit message is gitswarm's to make
    # valid. The worker is driven directly: tasks files refuse control characters.
    repo = make_repo(tmp_path / "repo", {"a.txt": "old\n"})
    base = git(repo, "rev-parse", "HEAD")
    wt = tmp_path / "wt"
    spec = TaskSpec(id="t1", title="Change\0 a", files=("a.txt",))
    request = AgentRequest(task=spec, attempt=1, prompt="p", workdir=wt, role_id="impl", backend="command",
                           agent_id="impl-1", command="/bin/sh", args=("-c", "echo new > a.txt"))
    out: queue.Queue[tuple[str, str, int, Any]] = queue.Queue()
    worker = AttemptWorker(repo_dir=repo, config=SwarmConfig(), path=wt, branch="work/t1", base=base,
                           request=request, backend=get_backend("command"), out=out)
    worker.run()
    kinds = []
    while not out.empty():
        kind, _, _, payload = out.get()
        kinds.append(kind)
    assert kinds[-1] == "done"
    assert payload.result.ok, payload.result.error
    assert git(repo, "show", f"{payload.commit}:a.txt") == "new"
    assert "\0" not in git(repo, "log", "-1", "--format=%B", payload.commit)


# ---------------------------------------------------------------- 7: the agent left its branch


def test_an_agent_that_checks_out_a_user_branch_fails_and_the_branch_is_untouched(tmp_path: Path) -> None:
    repo, proc, st = _run_agent(tmp_path, "git checkout -q feature\necho new > a.txt\necho b > b.txt\n",
                                branches=("feature",))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    a = _attempt(st)
    assert a["result"] == "failed"
    assert "the agent switched the worktree to branch feature" in a["error"], a["error"]
    assert git(repo, "rev-parse", "feature") == git(repo, "rev-parse", "main")  # nothing committed onto it
    assert _kept_file(repo, "a.txt") == "new" and _kept_file(repo, "b.txt") == "b"
    assert git(repo, "rev-parse", f"refs/heads/attoswarm/{RUN}") == a["base"]
    _assert_cleaned_up(repo)


def test_an_agent_that_checks_out_the_swarm_branch_fails_without_wedging_the_run(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "# sample\n", "a.txt": "old\n"})
    git(repo, "branch", "feature")
    cfg = _agent_config(tmp_path, f"git checkout -q attoswarm/{RUN}\necho new > a.txt\n")
    tasks = write_tasks(tmp_path, "tasks:\n  - {id: t1, title: Change a, files: [a.txt]}\n")
    heads = _heads(repo)
    before = checkout_snapshot(repo)
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tasks), "--run-id", RUN, timeout=60)
    assert checkout_snapshot(repo) == before
    assert proc.returncode == 1, proc.stdout + proc.stderr
    a = _attempt(status(repo, RUN))
    assert f"the agent switched the worktree to branch attoswarm/{RUN}" in a["error"], a["error"]
    assert _kept_file(repo, "a.txt") == "new"
    # Every branch as it was; the swarm branch where the run created it (nothing merged).
    assert _heads(repo) == {**heads, f"refs/heads/attoswarm/{RUN}": a["base"]}
    _assert_cleaned_up(repo)


def test_a_detached_head_is_named_too(tmp_path: Path) -> None:
    repo, proc, st = _run_agent(tmp_path, "git checkout -q --detach\necho new > a.txt\n")
    a = _attempt(st)
    assert a["result"] == "failed" and "the agent detached the worktree's HEAD" in a["error"], a["error"]
    assert _kept_file(repo, "a.txt") == "new"


# ---------------------------------------------------------------- 9: no changes


def _scripted_run(tmp_path: Path, tasks_yaml: str, attempts: int = 2, count: int = 1) -> tuple[Path, Any]:
    repo = make_repo(tmp_path / "repo")
    cfg = write_config(tmp_path, count=count, attempts=attempts)
    tf = write_tasks(tmp_path, tasks_yaml)
    before = checkout_snapshot(repo)
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", RUN, timeout=60)
    assert checkout_snapshot(repo) == before
    return repo, proc


def _merges(repo: Path) -> list[str]:
    base = Store(repo).run(RUN).read().run.base_commit
    return git(repo, "rev-list", "--merges", f"{base}..refs/heads/attoswarm/{RUN}").splitlines()


def test_an_attempt_that_changes_nothing_fails_and_is_retried(tmp_path: Path) -> None:
    repo, proc = _scripted_run(tmp_path, 'tasks:\n  - {id: t1, title: Idle, script: [{run: "true"}]}\n')
    assert proc.returncode == 1, proc.stdout + proc.stderr
    task = Store(repo).run(RUN).read().tasks["t1"]
    assert task.status.value == "failed"
    assert [a.n for a in task.attempts] == [1, 2]
    assert all(a.result == "failed" and a.error and a.error.startswith("no changes") for a in task.attempts)
    assert _merges(repo) == []


def test_work_the_swarm_branch_already_holds_makes_no_empty_merge(tmp_path: Path) -> None:
    """t2 makes the change t1 already merged (both ran at once, from the same tip): its
    merge would change nothing, so it fails with "no changes" instead of landing an
    empty "Merge task" commit."""
    tasks = ('tasks:\n'
             '  - {id: t1, title: Write a, files: [a.txt], script: [{write: {path: a.txt, content: "x\\n"}}]}\n'
             '  - {id: t2, title: Write a too, files: [b.txt], script: [{sleep: 1.5}, '
             '{write: {path: a.txt, content: "x\\n"}}]}\n')
    repo, proc = _scripted_run(tmp_path, tasks, attempts=1, count=2)
    state = Store(repo).run(RUN).read()
    # t1 lands first unless the machine is slow enough for t2's sleep: either way one lands.
    done = [t for t in state.tasks.values() if t.status.value == "done"]
    assert len(done) == 1, proc.stdout + proc.stderr
    late = state.tasks["t2" if done[0].id == "t1" else "t1"]
    assert late.status.value == "failed" and late.attempts[0].base == state.run.base_commit
    assert "already on the swarm branch" in (late.attempts[0].error or ""), late.attempts[0].error
    assert len(_merges(repo)) == 1  # one merge: no empty "Merge task" commit


def test_an_attempt_with_only_findings_fails_but_its_findings_are_proposed(tmp_path: Path) -> None:
    finding = '{"worker": "impl-1", "finding": "c.py has the same bug", "suggested_files": ["c.py"]}'
    tasks = ("tasks:\n  - {id: t1, title: Look, files: [a.txt], script: "
             f"[{{write: {{path: scope-escapes.jsonl, content: '{finding}'}}}}]}}\n")
    repo, proc = _scripted_run(tmp_path, tasks, attempts=1)
    state = Store(repo).run(RUN).read()
    assert (state.tasks["t1"].attempts[0].error or "").startswith("no changes"), proc.stdout + proc.stderr
    assert [p.get("files") or p.get("suggested_files") for p in state.run.proposed] == [["c.py"]], state.run.proposed
    assert _merges(repo) == []


def test_an_agent_commit_that_undoes_itself_is_no_change(tmp_path: Path) -> None:
    tasks = ('tasks:\n  - {id: t1, title: Flip, script: [{write: {path: x.txt, content: "x"}}, {commit: add},'
             ' {delete: x.txt}, {commit: remove}]}\n')
    repo, proc = _scripted_run(tmp_path, tasks, attempts=1)
    assert proc.returncode == 1
    a = Store(repo).run(RUN).read().tasks["t1"].attempts[0]
    assert a.error and a.error.startswith("no changes")
    assert _merges(repo) == []


def test_allow_empty_finishes_the_task_without_a_merge_commit(tmp_path: Path) -> None:
    tasks = ('tasks:\n  - {id: t1, title: Check only, allow_empty: true, script: [{run: "true"}]}\n'
             '  - {id: t2, title: Then write, deps: [t1], files: [b.txt],'
             ' script: [{write: {path: b.txt, content: "b"}}]}\n')
    repo, proc = _scripted_run(tmp_path, tasks)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    state = Store(repo).run(RUN).read()
    t1 = state.tasks["t1"]
    assert t1.status.value == "done" and len(t1.attempts) == 1
    assert t1.attempts[0].result == "ok" and t1.attempts[0].merge_commit is None
    assert t1.spec.allow_empty
    assert len(_merges(repo)) == 1  # t2's merge only: no empty "Merge task" commit for t1
    # The state records it as a `done_empty` event, in the state commit of the attempt's end.
    log = gitswarm(repo, "log", RUN, "--json")
    events = json.loads(log.stdout)
    finished = next(e for e in events if e["type"] == "attempt_finished" and e["task"] == "t1")
    done = next(e for e in events if e["type"] == "done_empty")
    assert done["task"] == "t1" and done["n"] == 1 and done["state_commit"] == finished["state_commit"]
    assert not any(e["type"] in ("merge_intent", "merged") and e["task"] == "t1" for e in events)


def test_allow_empty_must_be_true_or_false(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    cfg = write_config(tmp_path)
    tf = write_tasks(tmp_path, "tasks:\n  - {id: t1, title: T, allow_empty: maybe}\n")
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", RUN)
    assert proc.returncode == 2
    assert f"{tf}:2:" in proc.stderr and "allow_empty" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_markdown_format_takes_allow_empty(tmp_path: Path) -> None:
    from gitswarm.tasksfile import parse_tasks_markdown, parse_tasks_yaml

    assert parse_tasks_yaml("tasks:\n  - {id: t1, allow_empty: true}\n")[0].allow_empty
    assert not parse_tasks_yaml("tasks:\n  - {id: t1}\n")[0].allow_empty
    md = parse_tasks_markdown("## t1: Check\nallow_empty: true\n\nLook only.\n")
    assert md[0].allow_empty and md[0].description == "Look only."


def test_a_snapshot_sees_a_file_changed_in_the_second_of_the_last_index_write(tmp_path: Path) -> None:
    # Same size, same second as the index entry: only git's racy-file check (a file not
    # older than the index is re-hashed) sees the change, and it needs the index's mtime.
    import time

    repo = make_repo(tmp_path / "repo", {"a.txt": "old\n"})
    while time.time() % 1 > 0.3:  # the writes below in one second
        time.sleep(0.05)
    (repo / "a.txt").write_text("one\n")
    git(repo, "add", "a.txt")
    (repo / "a.txt").write_text("new\n")
    time.sleep(1.1)  # the snapshot's copy of the index is made a second later
    snap = gitops.snapshot_worktree(repo, "snap", git(repo, "rev-parse", "HEAD"), ("a", "a@b"))
    assert snap.commit is not None and git(repo, "show", f"{snap.commit}:a.txt") == "new"


def test_a_planner_may_mark_a_task_allow_empty(tmp_path: Path) -> None:
    from gitswarm.config import RoleConfig
    from gitswarm.planner import check_answer

    roles = [RoleConfig("impl", "scripted")]
    plan = [{"id": "a", "title": "A", "allow_empty": True}, {"id": "b", "title": "B"}]
    check = check_answer(json.dumps({"tasks": plan}), roles)
    assert [t.allow_empty for t in check.tasks] == [True, False], check.problems
    bad = check_answer(json.dumps({"tasks": [{"id": "a", "title": "A", "allow_empty": "yes"}]}), roles)
    assert not bad.tasks and any("allow_empty" in p.message for p in bad.problems)


def test_done_empty_is_only_for_a_task_that_allows_it_after_an_ok_attempt() -> None:
    from gitswarm.state import InvalidEvent, apply, empty_state

    state = apply(empty_state(), {"type": "run_created", "run": {"id": "r1"}})
    state = apply(state, {"type": "plan_set", "tasks": [{"id": "ok", "title": "T", "allow_empty": True},
                                                        {"id": "no", "title": "T"}]})
    for tid in ("ok", "no"):
        state = apply(state, {"type": "attempt_started", "task": tid, "n": 1, "agent": "impl-1", "backend": "scripted"})
    with pytest.raises(InvalidEvent):  # still running
        apply(state, {"type": "done_empty", "task": "ok", "n": 1})
    for tid in ("ok", "no"):
        state = apply(state, {"type": "attempt_finished", "task": tid, "n": 1, "result": "ok", "commit": "b" * 40})
    with pytest.raises(InvalidEvent, match="allow_empty"):
        apply(state, {"type": "done_empty", "task": "no", "n": 1})
    done = apply(state, {"type": "done_empty", "task": "ok", "n": 1})
    assert done.tasks["ok"].status.value == "done" and done.tasks["ok"].attempts[0].merge_commit is None
    with pytest.raises(InvalidEvent):
        apply(state, {"type": "task_status", "task": "no", "status": "done"})


def test_a_submodule_listed_in_gitmodules_is_not_an_embedded_repository(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    for name in ("sub", "lib"):
        inner = repo / name
        inner.mkdir()
        git(inner, "init", "-q")
        (inner / "x.txt").write_text("x\n")
        git(inner, "add", "x.txt")
        git(inner, "commit", "-qm", "x")
    (repo / ".gitmodules").write_text('[submodule "lib"]\n\tpath = lib\n\turl = ../lib\n')
    git(repo, "add", "-A")
    assert gitops.embedded_repositories(repo, git(repo, "rev-parse", "HEAD")) == ["sub/"]


def test_a_kept_snapshot_is_not_replaced_when_the_task_is_retried(tmp_path: Path) -> None:
    """Attempt 1 commits one file itself and leaves another uncommitted beside a path git
    refuses: its snapshot (both files) is kept under attempts/t1/1. Attempt 2 clears the
    work branch, still at the agent's own commit: that must not replace the snapshot."""
    marker = tmp_path / "first-done"
    script = (f'if [ ! -e {marker} ]; then touch {marker}\n'
              '  echo c > c.txt; git add c.txt; git commit -q -m "agent: c"\n'
              '  echo b > b.txt; mkdir -p pkg/.GIT; echo x > pkg/.GIT/config\n'
              'else echo a > a.txt; fi\n')
    repo = make_repo(tmp_path / "repo")
    cfg = agent_config(tmp_path, script, attempts=2)
    tf = write_tasks(tmp_path, "tasks:\n  - {id: t1, title: Write, files: [a.txt, b.txt, c.txt]}\n")
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", RUN, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert git(repo, "show", f"{ATTEMPT_REF}:b.txt") == "b" and git(repo, "show", f"{ATTEMPT_REF}:c.txt") == "c"
