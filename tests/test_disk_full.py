"""A full disk or a read-only file system: a clear error and exit 1, never a traceback
or a loop that never returns; the state stays valid and `resume` finishes once the
disk is writable again.

The repository lives on a small tmpfs mounted for the test (root only), so the disk
fills, or turns read-only, exactly when the test says: before a command, or from inside
an agent at a known step of the run.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from gitswarm import gitops
from gitswarm import store as store_module
from gitswarm.cli import error_line
from gitswarm.errors import GitswarmError
from gitswarm.gitops import StorageError
from gitswarm.state import fold, materialize
from gitswarm.store import Store

from .conftest import git, make_repo
from .helpers import flatten_tree
from .runkit import gitswarm, status, trailers, write_tasks

FS_SIZE = "24m"
QUICK = 3.0  # seconds: a write on a full disk must fail at once, not retry forever


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of FS_SIZE on a fresh folder, unmounted at the end whatever happened."""
    where = tmp_path / "fs"
    where.mkdir()
    proc = _mount("-t", "tmpfs", "-o", f"size={FS_SIZE}", "tmpfs", str(where))
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        yield where
    finally:
        _mount("-o", "remount,rw", str(where))
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(fs: Path) -> Path:
    """Take every free block of the file system; returns the filler (delete it to free)."""
    filler = fs / "filler"
    with open(filler, "ab", buffering=0) as fh:
        for chunk in (1 << 20, 1 << 12, 1):
            block = b"\0" * chunk
            while True:
                try:
                    fh.write(block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    return filler


def read_only(fs: Path, on: bool = True) -> None:
    proc = _mount("-o", "remount," + ("ro" if on else "rw"), str(fs))
    assert proc.returncode == 0, proc.stderr


def _plan() -> dict:
    return {"type": "plan_set", "tasks": [{"id": "t1", "title": "one"}, {"id": "t2", "title": "two", "deps": ["t1"]}]}


def _assert_valid(repo: Path, run_id: str, seq: int) -> None:
    """A fresh reader finds the state at `seq`, and folding its events gives its tree."""
    rs = Store(repo).run(run_id)
    assert rs.read().seq == seq
    replayed, files = fold(rs.events())
    assert flatten_tree(rs.repo, rs.repo[rs.tip()].tree) == materialize(replayed, files)


# ---------------------------------------------------------------- the store


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_store_writes_fail_fast_and_clearly_and_the_state_stays_valid(small_fs: Path, fault: str) -> None:
    repo = make_repo(small_fs / "repo")
    rs = Store(repo).create_run({"id": "r1", "goal": "g"})
    rs.append(_plan(), {"type": "phase_changed", "phase": "running"})
    rs.append({"type": "control", "action": "pause"})
    rs.append({"type": "control", "action": "unpause"})
    tip = rs.tip()
    filler = fill(small_fs) if fault == "full" else None
    if fault == "read-only":
        read_only(small_fs)
    cause = "no space left on device" if fault == "full" else "read-only file system"

    writes = {
        "append": lambda: rs.append({"type": "run_note", "text": "x" * 5000}),
        # Every object but the commit exists already: libgit2 then reports success on a
        # read-only disk without writing anything; the store must notice.
        "append of known trees": lambda: rs.append({"type": "control", "action": "pause"}),
        "lease": lambda: rs.acquire_lease("me", ttl=30),
        "note": lambda: rs.add_note(str(tip), {"task": "t1", "blob": "y" * 5000}),
    }
    for name, write in writes.items():
        started = time.monotonic()
        with pytest.raises(GitswarmError) as caught:
            write()
        assert time.monotonic() - started < QUICK, name
        message = str(caught.value)
        assert cause in message.lower(), (name, message)
        assert str(repo) in message, (name, message)
        if name.startswith("append"):
            assert "refs/attoswarm/r1/state" in message

    assert rs.tip() == tip  # nothing half-written moved the ref
    _assert_valid(repo, "r1", 5)

    if filler is not None:
        filler.unlink()
    else:
        read_only(small_fs, on=False)
    rs.append({"type": "run_note", "text": "space is back"})
    rs.acquire_lease("me", ttl=30)
    rs.add_note(str(tip), {"task": "t1"})
    _assert_valid(repo, "r1", 6)


# ---------------------------------------------------------------- whole runs

# The agent of every task writes its file. The agent of `b`, on its first attempt only,
# then fills the disk or turns it read-only: a known moment of the run, with `a` merged
# and `c` not started.
AGENT = """\
import pathlib, subprocess, sys
task, fs, fault = sys.argv[1:4]
pathlib.Path(f"{task}.txt").write_text(f"{task} was here\\n")
marker = pathlib.Path(fs).parent / f"struck-{task}"
if task == "b" and not marker.exists():
    marker.write_text("")
    if fault == "full":
        with open(pathlib.Path(fs) / "filler", "ab", buffering=0) as fh:
            for size in (1 << 20, 1 << 12, 1):
                try:
                    while True:
                        fh.write(b"\\0" * size)
                except OSError:
                    pass
    else:
        subprocess.run(["mount", "-o", "remount,ro", fs], check=True)
"""

TASKS = """\
tasks:
  - {id: a, title: Write a, files: [a.txt]}
  - {id: b, title: Write b, deps: [a], files: [b.txt]}
  - {id: c, title: Write c, deps: [b], files: [c.txt]}
"""


def _config(folder: Path, fs: Path, fault: str) -> Path:
    agent = folder / "agent.py"
    agent.write_text(AGENT)
    cfg = folder / "swarm.yaml"
    cfg.write_text(
        "version: 1\nrun: {poll_interval_ms: 20}\n"
        f"roles:\n  - {{role_id: impl, role_type: worker, backend: command, command: {sys.executable}, "
        f"args: [{agent}, '{{task_id}}', {fs}, {fault}], count: 1, task_kinds: [implement]}}\n"
        "retries: {max_task_attempts: 2}\n"
    )
    return cfg


def _assert_clear_failure(proc: subprocess.CompletedProcess[str], cause: str) -> None:
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Traceback" not in output, output
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("error: ") and cause in errors[0].lower(), proc.stderr


def _assert_finished(repo: Path, run_id: str, base: str) -> None:
    assert status(repo, run_id)["phase"] == "completed"
    tip = git(repo, "rev-parse", f"attoswarm/{run_id}")
    for task in "abc":
        assert git(repo, "show", f"{tip}:{task}.txt") == f"{task} was here"
    merges = git(repo, "rev-list", "--first-parent", "--merges", f"{base}..{tip}").splitlines()
    assert Counter(trailers(repo, m)["Swarm-Task"] for m in merges) == Counter("abc")
    rs = Store(repo).run(run_id)
    replayed, files = fold(rs.events())
    assert flatten_tree(rs.repo, rs.repo[rs.tip()].tree) == materialize(replayed, files)
    fsck = subprocess.run(["git", "fsck", "--no-dangling"], cwd=repo, capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_run_that_loses_its_disk_exits_clearly_and_resumes_once_it_is_back(
    small_fs: Path, tmp_path: Path, fault: str
) -> None:
    repo = make_repo(small_fs / "repo")
    base = git(repo, "rev-parse", "HEAD")
    cfg = _config(tmp_path, small_fs, fault)
    tf = write_tasks(tmp_path, TASKS)
    cause = "no space left on device" if fault == "full" else "read-only file system"

    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "rd", timeout=60)
    _assert_clear_failure(proc, cause)
    assert (tmp_path / "struck-b").exists()

    # Still no space: a command started on the bad disk says so too, and writes nothing.
    seq = Store(repo).run("rd").read().seq
    again = gitswarm(repo, "resume", "rd", timeout=60)
    _assert_clear_failure(again, cause)
    _assert_valid(repo, "rd", seq)

    if fault == "full":
        (small_fs / "filler").unlink()
    else:
        read_only(small_fs, on=False)
    done = gitswarm(repo, "resume", "rd", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    _assert_finished(repo, "rd", base)


def test_start_on_a_full_disk_exits_clearly_and_writes_no_run(small_fs: Path, tmp_path: Path) -> None:
    repo = make_repo(small_fs / "repo")
    cfg = _config(tmp_path, small_fs, "full")
    tf = write_tasks(tmp_path, TASKS)
    fill(small_fs)
    proc = gitswarm(repo, "start", str(cfg), "--tasks-file", str(tf), "--run-id", "rs", timeout=60)
    _assert_clear_failure(proc, "no space left on device")
    assert git(repo, "for-each-ref", "refs/attoswarm") == ""


# ---------------------------------------------------------------- git and the CLI


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_git_failures_name_the_disk_fault(small_fs: Path, fault: str) -> None:
    repo = make_repo(small_fs / "repo")
    (repo / "new.txt").write_text("x" * 10_000)
    if fault == "full":
        fill(small_fs)
    else:
        read_only(small_fs)
    cause = "no space left on device" if fault == "full" else "read-only file system"
    # git names the cause for an object ("unable to write loose object file: No space
    # left on device") but not for a ref ("couldn't write '.../refs/x.lock'"): the file
    # system is looked at then.
    for args in (("add", "new.txt"), ("update-ref", "refs/heads/x", "HEAD")):
        with pytest.raises(StorageError) as caught:
            gitops.git(repo, *args)
        message = str(caught.value)
        assert message.startswith(cause) and str(repo) in message and "\n" not in message, (args, message)


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_git_failures_that_are_not_writes_stay_as_they_were_on_a_bad_disk(small_fs: Path, fault: str) -> None:
    """A bad revision on a full or read-only disk is still a bad revision."""
    repo = make_repo(small_fs / "repo")
    fill(small_fs) if fault == "full" else read_only(small_fs)
    with pytest.raises(GitswarmError) as caught:
        gitops.git(repo, "rev-parse", "--verify", "no-such-branch")
    assert not isinstance(caught.value, StorageError), str(caught.value)


def test_git_failures_on_a_healthy_disk_stay_as_they_were(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    with pytest.raises(GitswarmError) as caught:
        gitops.git(repo, "update-ref", "refs/heads/x", "1" * 40)  # no such object
    assert not isinstance(caught.value, StorageError) and "update-ref" in str(caught.value)


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_any_command_that_meets_a_bad_disk_says_so_in_one_line(small_fs: Path, fault: str) -> None:
    """`init` writes a plain file, outside the store and git: the rule is the CLI's."""
    folder = small_fs / "project"
    folder.mkdir()
    if fault == "full":
        fill(small_fs)
    else:
        read_only(small_fs)
    proc = gitswarm(folder, "init", str(folder / "swarm.yaml"))
    _assert_clear_failure(proc, "no space left on device" if fault == "full" else "read-only file system")
    assert str(folder) in proc.stderr


def test_a_ref_lock_held_for_good_is_waited_on_for_a_bounded_time(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lock its holder keeps fresh (so it is never cleared as stale) and never lets go
    of: the writer gives up after LOCK_WAIT_SECONDS saying what to do, not spinning."""
    monkeypatch.setattr(store_module, "LOCK_WAIT_SECONDS", 0.5, raising=False)
    rs = Store(repo).create_run({"id": "r1"})
    lock = Path(rs.repo.path) / "refs/attoswarm/r1/state.lock"
    lock.write_text("")
    held = threading.Event()
    held.set()

    def holder() -> None:
        while held.is_set():
            lock.touch()
            time.sleep(0.1)

    outcome: list[BaseException | None] = []

    def write() -> None:
        try:
            rs.append(_plan())
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    threading.Thread(target=holder, daemon=True).start()
    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(timeout=QUICK)
    held.clear()
    assert not writer.is_alive(), "the writer still retries"
    assert isinstance(outcome[0], GitswarmError) and "stays locked" in str(outcome[0]), outcome
    assert str(lock) in str(outcome[0])
    lock.unlink()
    _assert_valid(repo, "r1", 1)


def test_a_stale_lock_on_a_read_only_disk_is_reported_not_waited_on(small_fs: Path) -> None:
    """A killed writer's lock cannot be cleared on a read-only disk: say why at once."""
    repo = make_repo(small_fs / "repo")
    rs = Store(repo).create_run({"id": "r1"})
    lock = Path(rs.repo.path) / "refs/attoswarm/r1/state.lock"
    lock.write_text("")
    os.utime(lock, (0, 0))
    read_only(small_fs)
    started = time.monotonic()
    with pytest.raises(GitswarmError) as caught:
        rs.append(_plan())
    assert time.monotonic() - started < QUICK
    assert "read-only file system" in str(caught.value)
    _assert_valid(repo, "r1", 1)


def test_an_error_raised_from_a_disk_fault_is_one_line_that_names_it() -> None:
    """Any GitswarmError made from a full-disk OSError (here git's multi-line stderr
    wrapped by some caller) is printed as one line naming the fault."""
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as low:
            raise GitswarmError("could not save the attempt\nfatal: something git said") from low
    except GitswarmError as exc:
        line = error_line(exc, "/repo")
    assert line == "error: no space left on device: could not save the attempt"
    assert error_line(GitswarmError("a\nb"), "/repo") == "error: a\nb"  # other failures keep their text
    assert error_line(OSError(errno.EACCES, "Permission denied"), "/repo") is None  # a bug: traceback
    disk = error_line(OSError(errno.EROFS, "Read-only file system", "/repo/x"), "/repo")
    assert disk is not None and disk.startswith("error: read-only file system writing /repo/x in /repo")
