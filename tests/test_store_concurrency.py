"""The state store under concurrency and crashes, and its promise not to touch the checkout.

- No lost update: 4 processes and 4 threads append to one run at once; every event is in
  the history exactly once, in each writer's order, seq is 1..N, and the tip replays.
- Crash safety: writers killed with SIGKILL at random moments leave the ref at a
  complete state that replays; every acknowledged append survives, a batch is all or
  nothing, and a new writer carries on (also past a ref lock left by a killed process).
- The user's checkout (HEAD, index, work tree, branches, config, stash) is byte for byte
  the same after every kind of store operation.

Writers are tests/store_writer.py, run as subprocesses or imported into threads.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pygit2
import pytest

from gitswarm.model import TaskStatus
from gitswarm.store import RunStore, Store, state_ref

from . import store_writer
from .conftest import git, make_repo
from .test_store import _assert_tip_replays, _plan, _run_to_done

WRITER = Path(store_writer.__file__).resolve()
PYTHON = sys.executable
RUN = "conc"

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")


def _spawn(repo: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [PYTHON, str(WRITER), str(repo), RUN, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _readline(proc: subprocess.Popen, expect: str, timeout: float = 30.0) -> None:
    """Wait for the writer's handshake line (it prints it once its store is open)."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if not result or result[0].strip() != expect:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"writer did not say {expect!r} (got {result!r}); stderr:\n{err}")


def _labelled(events: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(e["w"], e["i"]) for e in events if "w" in e]


def check_chain(repo: Path, expected: dict[str, int], batch: int = 1) -> list[dict[str, Any]]:
    """The run's history holds writer w's events 0..expected[w]-1 exactly once each, in
    w's order, as whole batches; seq is 1..N; the tip replays. Returns the events."""
    rs = Store(repo).run(RUN)  # a fresh store: nothing cached from the writers
    events = rs.events()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "seq is not continuous"
    labels = _labelled(events)
    dupes = [k for k, n in Counter(labels).items() if n > 1]
    assert not dupes, f"events written twice: {dupes[:10]}"
    by_writer: dict[str, list[int]] = defaultdict(list)
    for w, i in labels:
        by_writer[w].append(i)
    assert set(by_writer) <= set(expected), f"unknown writers {set(by_writer) - set(expected)}"
    for w, n in expected.items():
        got = by_writer.get(w, [])
        assert got == list(range(n)), (
            f"writer {w}: expected its events 0..{n - 1} in order, history has {len(got)}: "
            f"missing {sorted(set(range(n)) - set(got))[:10]}, out of order: {got != sorted(got)}"
        )
    if batch > 1:
        for entry in rs.history():
            mine = [e for e in entry.events if "w" in e]
            if mine:
                assert len(mine) == batch or mine[-1]["i"] == expected[mine[-1]["w"]] - 1, (
                    f"commit {entry.commit[:10]} holds a partial batch: {[e['i'] for e in mine]}"
                )
    _assert_tip_replays(rs)
    return events


def _new_run(repo: Path) -> RunStore:
    return Store(repo).create_run({"id": RUN, "goal": "concurrency"})


# ---------------------------------------------------------------- 1. no lost update


PROCS, THREADS, PER_WRITER = 4, 4, 250


def test_no_lost_update_with_processes_and_threads(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    _new_run(repo)
    procs = [_spawn(repo, "--writer", f"p{k}", "--count", str(PER_WRITER), "--wait-go") for k in range(PROCS)]
    for proc in procs:
        _readline(proc, "ready")
    # Threads in this process, each with its own Store / Repository.
    barrier = threading.Barrier(THREADS + 1)
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def thread_writer(k: int) -> None:
        try:
            results.append(store_writer.write(str(repo), RUN, f"t{k}", PER_WRITER, ready=barrier.wait))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=thread_writer, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for proc in procs:  # go
        proc.stdin.write("go\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
    barrier.wait(timeout=30)
    for t in threads:
        t.join(timeout=120)
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert not errors, errors

    assert len(results) == PROCS + THREADS and all(r["appended"] == PER_WRITER for r in results)
    # The writers really overlapped and really raced (else this test proves nothing).
    assert max(r["began"] for r in results) < min(r["ended"] for r in results), "writers did not overlap"
    assert sum(r["retries"] for r in results) > 0, "no writer ever lost a compare-and-swap race"

    writers = {r["writer"]: PER_WRITER for r in results}
    events = check_chain(repo, writers)
    assert len(events) == 1 + (PROCS + THREADS) * PER_WRITER  # run_created + 2,000
    state = Store(repo).run(RUN).read()
    assert len(state.tasks) == (PROCS + THREADS) * PER_WRITER // 5
    assert all(t.status == TaskStatus.VERIFYING and t.attempts[0].finished for t in state.tasks.values())
    assert len(state.run.notes) == (PROCS + THREADS) * PER_WRITER // 5
    assert len(list(Store(repo).run(RUN).history())) == 1 + (PROCS + THREADS) * PER_WRITER


def test_check_chain_detects_a_lost_update(tmp_path: Path) -> None:
    """The checker above is not vacuous: a write that skips the compare-and-swap and
    drops an event fails it."""
    repo = make_repo(tmp_path / "repo")
    _new_run(repo)
    store_writer.write(str(repo), RUN, "a", 4)  # run_created, then a-0..a-3 (seq 2..5)
    check_chain(repo, {"a": 4})
    r = pygit2.Repository(str(repo))
    lost = r[r.references[state_ref(RUN)].target]
    old = lost.parents[0]
    # writer b built its commit on a-2 and forced the ref there, over a-3.
    event = {"type": "run_note", "text": "b-0", "w": "b", "i": 0, "v": 1, "seq": 5, "at": "2026-01-01T00:00:00.000Z"}
    sig = pygit2.Signature("b", "b@example.com", 1767225600, 0)
    forced = r.create_commit(None, sig, sig, "note: b-0\n\n" + json.dumps(event) + "\n", old.tree_id, [old.id])
    r.references.create(state_ref(RUN), forced, force=True)
    with pytest.raises(AssertionError, match=r"writer a: expected its events 0..3 in order, history has 3: missing \[3\]"):
        check_chain(repo, {"a": 4, "b": 1})


# ---------------------------------------------------------------- 2. crash safety


def _acked(path: Path) -> int:
    """How many events the killed writer had acknowledged (last acked i + 1)."""
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
    return int(lines[-1]) + 1 if lines else 0


def _kill_rounds(tmp_path: Path, rounds: int, seed: int, batch: int) -> None:
    repo = make_repo(tmp_path / "repo")
    _new_run(repo)
    rng = random.Random(seed)
    lock = Path(repo) / ".git" / (state_ref(RUN) + ".lock")
    expected: dict[str, int] = {}
    left_locks = 0
    for r in range(rounds):
        writer = f"r{r}"
        acks = tmp_path / f"{writer}.acks"
        proc = _spawn(repo, "--writer", writer, "--batch", str(batch), "--acks", str(acks))
        _readline(proc, "ready")
        # A new writer must make progress after the previous kill (stale locks included).
        started = time.monotonic()
        while _acked(acks) == 0:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() - started < 10, f"round {r}: a new writer made no progress in 10 s"
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        left_locks += lock.exists()

        acked = _acked(acks)
        written = [i for w, i in _labelled(Store(repo).run(RUN).events()) if w == writer]
        n = len(written)
        # Every acknowledged append survived; at most the batch in flight went further.
        assert acked <= n <= acked + batch, f"round {r}: acked {acked}, in history {n}"
        expected[writer] = n
        check_chain(repo, expected, batch=batch)  # read() works and the tip replays

    # The object database is sound: everything reachable from the refs is there.
    fsck = subprocess.run(["git", "fsck", "--no-dangling", "--no-progress"], cwd=repo, capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    # One more writer, to the end, after all that.
    store_writer.write(str(repo), RUN, "final", 10, batch=batch)
    expected["final"] = 10
    check_chain(repo, expected, batch=batch)
    print(f"{rounds} kills, {sum(expected.values())} events, {left_locks} locks left by a kill")


def test_sigkill_at_random_moments_single_event_commits(tmp_path: Path) -> None:
    _kill_rounds(tmp_path, rounds=24, seed=20261123, batch=1)


def test_sigkill_at_random_moments_batched_commits(tmp_path: Path) -> None:
    _kill_rounds(tmp_path, rounds=20, seed=424242, batch=7)


def test_a_lock_left_by_a_killed_writer_is_cleared(tmp_path: Path) -> None:
    """SIGKILL a process while it holds the state ref's lock (git and libgit2 leave the
    .lock file behind); the next writer still succeeds within a few seconds."""
    repo = make_repo(tmp_path / "repo")
    _new_run(repo)
    store_writer.write(str(repo), RUN, "before", 5)
    lock = Path(repo) / ".git" / (state_ref(RUN) + ".lock")
    holder = _spawn(repo, "--hold-lock")
    _readline(holder, "locked")
    assert lock.exists()
    holder.send_signal(signal.SIGKILL)
    holder.communicate()
    assert lock.exists(), "the killed holder's lock file is left behind"

    started = time.monotonic()
    out = subprocess.run(
        [PYTHON, str(WRITER), str(repo), RUN, "--writer", "after", "--count", "5"],
        capture_output=True, text=True, timeout=15,
    )
    took = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    assert took < 6.0, f"the next writer needed {took:.1f} s"
    assert not lock.exists()
    check_chain(repo, {"before": 5, "after": 5})


# ---------------------------------------------------------------- 3. the checkout is untouched


def _snapshot(repo: Path) -> dict[str, Any]:
    gitdir = repo / ".git"
    snap: dict[str, Any] = {
        "HEAD file": (gitdir / "HEAD").read_bytes(),
        "HEAD symbolic": git(repo, "symbolic-ref", "-q", "HEAD", check=False),
        "HEAD commit": git(repo, "rev-parse", "HEAD"),
        "index": (gitdir / "index").read_bytes(),
        "index mtime": (gitdir / "index").stat().st_mtime_ns,
        "config": (gitdir / "config").read_bytes(),
        # The user's branches. (The run's own swarm and work branches would live under
        # refs/heads/attoswarm/ and refs/heads/attoswarm-work/; the store makes none today.)
        "branches": [
            line for line in git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads").splitlines()
            if not line.startswith(("refs/heads/attoswarm/", "refs/heads/attoswarm-work/"))
        ],
        "refs other than the runs'": [
            line for line in git(repo, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
            if not line.startswith(("refs/attoswarm/", "refs/notes/attoswarm/", "refs/heads/attoswarm/", "refs/heads/attoswarm-work/"))
        ],
        "stash": git(repo, "stash", "list", "--format=%H %gs"),
    }
    work: dict[str, tuple[bytes, int, int]] = {}
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo).as_posix()
        if rel == ".git" or rel.startswith(".git/"):
            continue
        st = path.lstat()
        work[rel] = (path.read_bytes() if path.is_file() else b"<dir>", st.st_mode, st.st_mtime_ns)
    snap["work tree"] = work
    # Every file of .git but the object store and the run's own refs, reflogs and locks.
    meta: dict[str, bytes] = {}
    for path in sorted(gitdir.rglob("*")):
        rel = path.relative_to(gitdir).as_posix()
        if rel.startswith("objects/") or "attoswarm" in rel or not path.is_file():
            continue
        meta[rel] = path.read_bytes()
    snap[".git files"] = meta
    return snap


def test_store_operations_leave_the_checkout_untouched(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "# sample\n", "pkg/__init__.py": "", "pkg/mod.py": "x = 1\n", ".gitignore": "*.log\nbuild/\n"})
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "pkg" / "mod.py").write_text("x = 2\n")
    git(repo, "commit", "-q", "-am", "feature work")
    git(repo, "checkout", "-q", "main")
    # A stash entry, then more local changes: staged, modified, untracked, ignored.
    (repo / "README.md").write_text("# stashed change\n")
    git(repo, "stash", "-q")
    (repo / "pkg" / "__init__.py").write_text("staged = True\n")
    git(repo, "add", "pkg/__init__.py")
    (repo / "pkg" / "mod.py").write_text("x = 'modified, not staged'\n")
    (repo / "notes.txt").write_text("untracked notes\n")
    (repo / "debug.log").write_text("ignored\n")
    (repo / "build").mkdir()
    (repo / "build" / "out.bin").write_bytes(bytes(range(256)))
    time.sleep(0.01)  # so that a rewrite of any file would show in its mtime
    before = _snapshot(repo)
    assert before["stash"] and before["HEAD symbolic"] == "refs/heads/main"
    head = before["HEAD commit"]

    old = os.getcwd()
    os.chdir(repo)  # the store is used from inside the checkout, as the CLI does
    try:
        store = Store(repo)
        rs = store.create_run({"id": RUN, "goal": "touch nothing", "base": {"branch": "main", "commit": head}, "swarm_branch": f"attoswarm/{RUN}"})
        _run_to_done(rs)
        rs.append({"type": "run_note", "text": "batched"}, {"type": "agent_update", "agent": {"id": "impl-1", "role": "impl", "backend": "scripted"}})
        store_writer.write(str(repo), RUN, "w", 50, batch=3)
        rs.append({"type": "task_added", "task": {"id": "late", "title": "Late"}},
                  {"type": "task_status", "task": "late", "status": "skipped", "reason": "no"})
        rs.append({"type": "run_ended", "phase": "shutdown", "reason": "test"})
        rs.append({"type": "run_resumed"})
        rs.append({"type": "control", "action": "stop"})
        rs.append({"type": "run_ended", "phase": "shutdown", "reason": "stopped"})
        rs.append({"type": "finalized", "action": "keep"})
        child = store.create_run({"id": "child", "parent": {"run": RUN, "state": str(rs.tip())}}, parent_state=str(rs.tip()))
        child.append(_plan())
        # reads: tip, past states, files, history, summaries
        history = list(rs.history())
        for entry in history[::7]:
            rs.read(at=entry.commit)
        rs.read(at=f"{state_ref(RUN)}~3")
        assert rs.read_file("run.json") is not None
        assert Store(repo).run(RUN).read().seq == rs.read().seq
        assert len(rs.events()) == sum(len(e.events) for e in history)
        assert {s.id for s in store.summaries()} == {RUN, "child"}
        assert store.resolve("@last") in (RUN, "child")
        # notes on the user's own commits
        feature = git(repo, "rev-parse", "feature")
        rs.add_note(head, {"task": "t1", "attempt": 1})
        rs.add_note(head, {"task": "t1", "attempt": 2})
        rs.add_note(feature, {"task": "t2"})
        assert rs.read_note(head) == {"task": "t1", "attempt": 2}
        # the lease
        rs.acquire_lease("coord", ttl=30)
        rs.renew_lease("coord", ttl=30)
        rs.release_lease("coord")
        assert rs.read_lease() is None
        _assert_tip_replays(rs)
    finally:
        os.chdir(old)

    after = _snapshot(repo)
    for key in before:
        assert after[key] == before[key], f"the store changed the user's {key}"
    # and git agrees: the same staged, unstaged, untracked and ignored files
    status = git(repo, "status", "--porcelain", "--ignored").splitlines()
    assert sorted(status) == sorted(["M  pkg/__init__.py", " M pkg/mod.py", "?? notes.txt", "!! build/", "!! debug.log"])
