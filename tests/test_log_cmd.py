"""`gitswarm log` on a real run (issue 11, point 18): a `merging` line names the merge
commit that landed on the swarm branch, and `log --json` keeps each event's own `commit`
field, with the state commit that recorded the event beside it as `state_commit`."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import git, make_repo
from .runkit import checkout_snapshot, gitswarm, status, write_config, write_tasks

TASKS = 'tasks:\n  - {id: t1, title: Add a, files: [a.txt], script: [{write: {path: a.txt, content: "a"}}]}\n'


def _run(tmp_path: Path) -> tuple[Path, str]:
    repo = make_repo(tmp_path / "repo")
    before = checkout_snapshot(repo)
    cfg = write_config(tmp_path, count=1)
    tf = write_tasks(tmp_path, TASKS)
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "r1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert checkout_snapshot(repo) == before
    merge = status(repo, "r1")["tasks"][0]["attempts"][-1]["merge_commit"]
    assert merge == git(repo, "rev-parse", "attoswarm/r1")
    return repo, merge


def test_log_json_keeps_the_events_commit_and_names_the_state_commit(tmp_path: Path) -> None:
    repo, merge = _run(tmp_path)
    proc = gitswarm(repo, "log", "r1", "--json")
    assert proc.returncode == 0, proc.stderr
    events = json.loads(proc.stdout)
    by_type = {e["type"]: e for e in events}
    assert by_type["merge_intent"]["commit"] == merge
    assert by_type["merged"]["commit"] == merge
    assert "commit" not in by_type["run_created"], "an event without a commit of its own gets none"
    state_commits = git(repo, "rev-list", "--first-parent", "refs/attoswarm/r1/state").splitlines()
    seen = list(dict.fromkeys(e["state_commit"] for e in events))
    assert seen == list(reversed(state_commits)), "every state commit, oldest first"
    assert by_type["merged"]["state_commit"] != merge


def test_log_prints_the_merge_commit_on_the_merging_line(tmp_path: Path) -> None:
    repo, merge = _run(tmp_path)
    proc = gitswarm(repo, "log", "r1")
    assert proc.returncode == 0, proc.stderr
    merging = [line for line in proc.stdout.splitlines() if "merging as" in line]
    assert len(merging) == 1, proc.stdout
    assert f"merging as {merge[:10]}" in merging[0]
    # The line still starts with the state commit that recorded the event.
    state_commit = json.loads(gitswarm(repo, "log", "r1", "--json").stdout)
    intent = next(e for e in state_commit if e["type"] == "merge_intent")
    assert intent["state_commit"][:8] in merging[0].split("merging as")[0]


def test_every_event_says_who_wrote_it_and_log_names_who_stopped_a_run(tmp_path: Path) -> None:
    import socket

    from gitswarm.config import load_config
    from gitswarm.launch import create_run
    from gitswarm.model import TaskSpec

    repo = make_repo(tmp_path / "repo")
    config = load_config(write_config(tmp_path, count=1)).config
    create_run(repo, config, [TaskSpec(id="t1", title="T", files=("a.txt",))], goal="g", run_id="rb")
    assert gitswarm(repo, "stop", "rb").returncode == 0
    events = json.loads(gitswarm(repo, "log", "rb", "--json").stdout)
    assert all(e.get("by", {}).get("host") == socket.gethostname() for e in events), events
    stop = next(e for e in events if e["type"] == "control" and e.get("action") == "stop")
    assert stop["by"]["role"] == "cli"
    line = next(x for x in gitswarm(repo, "log", "rb").stdout.splitlines() if "stop" in x)
    assert f"@{socket.gethostname()}, cli)" in line, line
