"""The state store: a run's state as a chain of commits on `refs/attoswarm/<run>/state`.

Each commit's tree is the whole materialised state (run.json, agents.json,
tasks/<xx>/<id>.json, prompts/..., transcripts/...); its message is a one-line summary, a
blank line, and the event(s) that produced it, one JSON object per line. Writes are
optimistic: read the tip, apply, write the objects, then move the ref from the old tip to
the new commit only if it has not moved (compare-and-swap, `create_commit` with the tip
as first parent). A lost race re-reads and re-applies. The ref moves last, so a writer
killed at any moment leaves it at a complete state.

Only the files an event changes, and the trees on their paths, are written, so the cost
of a write does not grow with the number of tasks (tasks are sharded by a hash prefix).

One `Repository` per thread: libgit2 objects are not shared across threads.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pygit2
from pygit2.enums import FileMode, SortMode

from .errors import GitswarmError, InputError
from .gitops import StorageError, storage_fault
from .localpaths import local_roots, without_local_paths
from .model import RESERVED_RUN_IDS, Agent, RunInfo, RunState, TaskState, TaskStatus, is_valid_id
from .state import (
    AGENTS_FILE,
    EVENT_VERSION,
    RUN_FILE,
    Applied,
    InvalidEvent,
    apply_changes,
    changed_files,
    empty_state,
    summarize,
)

REF_ROOT = "refs/attoswarm/"
SWARM_BRANCH_PREFIX = "attoswarm/"
# A ref lock older than this is left over by a killed process: git and libgit2 hold ref
# locks for microseconds, so nothing alive holds one this long.
STALE_LOCK_SECONDS = 2.0
# How long a writer waits for a ref lock that another writer holds before it says so:
# a live writer holds one for microseconds and a lock left by a killed process is cleared
# after STALE_LOCK_SECONDS, so only a wedged writer outlasts this.
LOCK_WAIT_SECONDS = 10.0
# How far back the store replays events to catch up with a moved tip before it gives up
# and reads the whole tree instead.
CATCH_UP_LIMIT = 512


def state_ref(run_id: str) -> str:
    return f"{REF_ROOT}{run_id}/state"


def lease_ref(run_id: str) -> str:
    return f"{REF_ROOT}{run_id}/lease"


def notes_ref(run_id: str) -> str:
    return f"refs/notes/attoswarm/{run_id}"


def swarm_branch(run_id: str) -> str:
    return f"{SWARM_BRANCH_PREFIX}{run_id}"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _epoch(iso: str | None) -> int:
    if not iso:
        return int(time.time())
    try:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return int(time.time())


SIGNATURE_NAME = "gitswarm"
SIGNATURE_EMAIL = "gitswarm@gitswarm.invalid"


def writer_of(role: str) -> dict[str, str]:
    """Who writes an event, and where: the user and host of the writing process and its
    role (`coordinator`, or `cli` for a command such as `gitswarm stop`; `tui` for the
    dashboard), so that `git log` of the state ref says who stopped a run."""
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or "user"
    return {"user": user, "host": socket.gethostname(), "role": role}


def _signature(at: str | None) -> pygit2.Signature:
    # State commits carry the event's time, so the same events make the same objects.
    return pygit2.Signature(SIGNATURE_NAME, SIGNATURE_EMAIL, _epoch(at), 0)


def encode_message(events: Sequence[Mapping[str, Any]]) -> str:
    if len(events) == 1:
        head = summarize(events[0])
    else:
        head = f"{len(events)} events: " + "; ".join(summarize(e) for e in events[:3])
        if len(events) > 3:
            head += "; ..."
    body = "\n".join(json.dumps(e, sort_keys=True, ensure_ascii=False, separators=(",", ":")) for e in events)
    return f"{_one_line(head)[:200]}\n\n{body}\n"


def _one_line(text: str) -> str:
    """The summary holds user text (goals, agent output): keep it one printable line.
    A NUL would even make libgit2 cut the message, and the events with it."""
    return "".join(ch if ch.isprintable() else " " for ch in text)


def decode_message(message: str) -> list[dict[str, Any]]:
    """The events of a state commit; [] for a commit that holds none (a lineage root)."""
    _, sep, body = message.partition("\n\n")
    if not sep:
        return []
    events = []
    # split on "\n" only: json.dumps escapes it, but not U+2028 and the other separators
    # that str.splitlines() would also cut an event at.
    for line in body.split("\n"):
        line = line.strip()
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


# ---------------------------------------------------------------- tree writing


def write_tree(repo: pygit2.Repository, base: pygit2.Tree | None, changes: Mapping[str, bytes | None]) -> pygit2.Oid:
    """A new tree: `base` with the given files set (bytes) or removed (None).

    Only the trees on the changed paths are rebuilt; every other subtree is reused by id.
    """
    nested: dict[str, Any] = {}
    for path, content in changes.items():
        parts = path.split("/")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = content
    oid = _write_level(repo, base, nested)
    assert oid is not None
    return oid


def _write_level(repo: pygit2.Repository, base: pygit2.Tree | None, nested: Mapping[str, Any]) -> pygit2.Oid | None:
    builder = repo.TreeBuilder(base) if base is not None else repo.TreeBuilder()
    for name, value in nested.items():
        if isinstance(value, dict):
            existing = builder.get(name)
            sub = repo[existing.id] if existing is not None and existing.filemode == FileMode.TREE else None
            sub_oid = _write_level(repo, sub, value)  # type: ignore[arg-type]
            if sub_oid is None:
                if existing is not None:
                    builder.remove(name)
            else:
                builder.insert(name, sub_oid, FileMode.TREE)
        elif value is None:
            if builder.get(name) is not None:
                builder.remove(name)
        else:
            builder.insert(name, repo.create_blob(value), FileMode.BLOB)
    if len(builder) == 0:
        return None  # git has no empty subtrees: drop the directory
    return builder.write()


# ---------------------------------------------------------------- reading trees


def read_state_tree(repo: pygit2.Repository, tree: pygit2.Tree, seq: int) -> RunState:
    """Parse a state tree (without the write-once files, which are read by path)."""
    run = RunInfo.from_json(json.loads(repo[tree[RUN_FILE].id].data))
    agents_raw = json.loads(repo[tree[AGENTS_FILE].id].data) if AGENTS_FILE in tree else {}
    agents = {aid: Agent.from_json(a) for aid, a in agents_raw.items()}
    tasks: dict[str, TaskState] = {}
    if "tasks" in tree:
        for shard_entry in repo[tree["tasks"].id]:
            for entry in repo[shard_entry.id]:
                t = TaskState.from_json(json.loads(repo[entry.id].data))
                tasks[t.id] = t
    return RunState(run=run, tasks=tasks, agents=agents, seq=seq)


@dataclass(frozen=True)
class RunSummary:
    id: str
    phase: str
    goal: str
    created: str | None
    ended: str | None
    parent: str | None
    swarm_branch: str | None
    tasks: int
    done: int
    failed: int
    tip: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "phase": self.phase,
            "goal": self.goal,
            "created": self.created,
            "ended": self.ended,
            "parent": self.parent,
            "swarm_branch": self.swarm_branch,
            "tasks": self.tasks,
            "done": self.done,
            "failed": self.failed,
            "state_commit": self.tip,
        }


@dataclass(frozen=True)
class HistoryEntry:
    commit: str
    events: tuple[dict[str, Any], ...]


class LeaseHeld(GitswarmError):
    """Another live coordinator holds the run's lease."""

    def __init__(self, lease: Mapping[str, Any]):
        self.lease = dict(lease)
        left = max(0.0, float(lease.get("expires", 0)) - time.time())
        super().__init__(
            f"run is being coordinated by {lease.get('owner')} (pid {lease.get('pid')} on {lease.get('host')}); "
            f"its lease expires in {left:.0f}s unless renewed"
        )


class LeaseLost(GitswarmError):
    """The lease moved to another owner: this coordinator must stop writing."""


def open_repository(path: str | os.PathLike | None = None) -> pygit2.Repository:
    """The repository containing `path` (default: the current directory)."""
    start = str(path or os.getcwd())
    found = pygit2.discover_repository(start)
    if found is None:
        raise InputError(f"{start} is not inside a git repository (run `git init` first)")
    try:
        return pygit2.Repository(found)
    except pygit2.GitError as exc:
        if "refstorage" in str(exc).lower() or "extension" in str(exc).lower():
            raise GitswarmError(
                f"{found}: this repository uses a ref storage format libgit2 cannot open ({exc}); "
                "gitswarm needs the files ref backend"
            ) from exc
        raise


class Store:
    """The runs of one repository. Not shared between threads: open one per thread."""

    def __init__(self, repo: pygit2.Repository | str | os.PathLike | None = None, writer: str = "cli"):
        self.repo = repo if isinstance(repo, pygit2.Repository) else open_repository(repo)
        self.writer = writer  # what kind of process writes through this store: see writer_of

    @property
    def git_dir(self) -> Path:
        return Path(self.repo.path)

    # -- runs

    def run_ids(self) -> list[str]:
        ids = []
        for name in self.repo.references:
            if name.startswith(REF_ROOT) and name.endswith("/state"):
                ids.append(name[len(REF_ROOT) : -len("/state")])
        return sorted(ids)

    def run(self, run_id: str) -> "RunStore":
        if state_ref(run_id) not in self.repo.references:
            raise InputError(f"no run {run_id!r} in this repository (see `gitswarm ls`)")
        return RunStore(self.repo, run_id, writer=self.writer)

    def create_run(
        self,
        info: Mapping[str, Any],
        parent_state: str | None = None,
        at: str | None = None,
    ) -> "RunStore":
        """Write a run's first state commit; fails if the id is taken.

        A child run (`continue`) names its parent's last state commit as the second parent
        of its first state commit, so `git log` of the state ref shows the lineage and
        `git log --first-parent` shows only the run's own events. A commit cannot have a
        second parent without a first, so a child's chain starts at an event-less root.
        """
        run_id = str(info.get("id", ""))
        if not is_valid_id(run_id) or run_id in RESERVED_RUN_IDS or "/" in run_id:
            raise InputError(f"run id {run_id!r} is not valid: use lowercase letters, digits, '.', '_' and '-'")
        ref = state_ref(run_id)
        if ref in self.repo.references or any(n.startswith(f"{REF_ROOT}{run_id}/") for n in self.repo.references):
            raise InputError(f"a run {run_id!r} already exists")
        at = at or now_iso()
        event = {"type": "run_created", "v": EVENT_VERSION, "seq": 1, "at": at, "run": dict(info),
                 "by": writer_of(self.writer)}
        applied = apply_changes(empty_state(), event)
        try:
            tree = write_tree(self.repo, None, changed_files(applied))
            sig = _signature(at)
            parents: list[pygit2.Oid] = []
            if parent_state:
                root = self.repo.create_commit(
                    None, sig, sig, f"lineage root of run {run_id}\n", self._empty_tree(), []
                )
                parents = [root, pygit2.Oid(hex=parent_state)]
            oid = self.repo.create_commit(None, sig, sig, encode_message([event]), tree, parents)
            if oid not in self.repo:
                raise _unwritten(oid)
            self.repo.references.create(ref, oid)  # create-if-absent: one run per id
        except pygit2.AlreadyExistsError:
            raise InputError(f"a run {run_id!r} already exists") from None
        except (OSError, pygit2.GitError) as exc:
            raise write_error(self.repo, ref, exc, then="run the command again") from exc
        store = RunStore(self.repo, run_id, writer=self.writer)
        store._remember(oid, applied.state, tree)
        return store

    def _empty_tree(self) -> pygit2.Oid:
        return self.repo.TreeBuilder().write()

    def summaries(self) -> list[RunSummary]:
        """Every run, oldest first, read from its tip's run.json and task files."""
        out = []
        for run_id in self.run_ids():
            rs = RunStore(self.repo, run_id)
            state = rs.read()
            out.append(
                RunSummary(
                    id=run_id,
                    phase=state.run.phase.value,
                    goal=state.run.goal,
                    created=state.run.created,
                    ended=state.run.ended,
                    parent=state.run.parent_run,
                    swarm_branch=state.run.swarm_branch,
                    tasks=len(state.tasks),
                    done=state.count(TaskStatus.DONE),
                    failed=state.count(TaskStatus.FAILED),
                    tip=str(rs.tip()),
                )
            )
        out.sort(key=lambda s: (s.created or "", s.id))
        return out

    def resolve(self, arg: str) -> str:
        """A RUN argument: an exact id, a unique prefix, or `@last` (the newest run)."""
        ids = self.run_ids()
        if not ids:
            raise InputError("there are no runs in this repository yet (start one with `gitswarm start` or `gitswarm demo`)")
        if arg in ("@last", "@latest"):
            return max(ids, key=lambda i: (RunStore(self.repo, i).created() or "", i))
        if arg in ids:
            return arg
        matches = [i for i in ids if i.startswith(arg)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise InputError(f"no run matches {arg!r} (see `gitswarm ls`)")
        raise InputError(f"{arg!r} matches {len(matches)} runs: {', '.join(matches[:5])}; give more of the id")


class RunStore:
    """Reads and writes one run's state ref, its notes and its lease."""

    def __init__(self, repo: pygit2.Repository, run_id: str, writer: str = "cli"):
        self.repo = repo
        self.run_id = run_id
        self.by = writer_of(writer)  # stamped on every event this store writes
        self.ref = state_ref(run_id)
        self._cached: tuple[pygit2.Oid, RunState, pygit2.Oid] | None = None  # (commit, state, tree)
        self.retries = 0  # lost CAS races, for benchmarks and tests
        self.local_roots = local_roots(repo.workdir or str(Path(repo.path).parent))

    # -- reading

    def tip(self) -> pygit2.Oid:
        try:
            return self.repo.references[self.ref].target  # type: ignore[return-value]
        except KeyError:
            raise InputError(f"no run {self.run_id!r} in this repository") from None

    def created(self) -> str | None:
        return self.read().run.created

    def read(self, at: str | pygit2.Oid | None = None) -> RunState:
        """The state at the tip, or at any past state commit (an id or a revision)."""
        if at is None:
            return self._state_at(self.tip())
        commit = self._commit(at)
        events = decode_message(commit.message)
        seq = events[-1]["seq"] if events else 0
        return read_state_tree(self.repo, commit.tree, seq)

    def _commit(self, at: str | pygit2.Oid) -> pygit2.Commit:
        try:
            obj = self.repo[at] if isinstance(at, pygit2.Oid) else self.repo.revparse_single(at)
            return obj.peel(pygit2.Commit)
        except (KeyError, ValueError, pygit2.GitError):
            raise InputError(f"{at} is not a state commit of run {self.run_id}") from None

    def read_file(self, path: str, at: str | pygit2.Oid | None = None) -> bytes | None:
        """A file of the state tree (a prompt or transcript), or None if absent."""
        commit = self._commit(at) if at is not None else self.repo[self.tip()]
        try:
            return self.repo[commit.tree[path].id].data
        except KeyError:
            return None

    def history(self, first_parent: bool = True, since: str | None = None) -> Iterator[HistoryEntry]:
        """State commits, newest first, with their events; stops at the run's first commit
        (or, with `since`, at that commit, excluded: what a viewer has not seen yet).

        The run's own chain is linear, so along first parents the walk is lazy (no sort):
        the newest entries cost the same at 100 and at 100,000 events.
        """
        walker = self.repo.walk(self.tip(), SortMode.NONE if first_parent else SortMode.TOPOLOGICAL)
        if first_parent:
            walker.simplify_first_parent()
        if since is not None:
            walker.hide(pygit2.Oid(hex=since))
        for commit in walker:
            events = decode_message(commit.message)
            if not events:
                break  # lineage root: the child run's own history ends here
            yield HistoryEntry(str(commit.id), tuple(events))
            if any(e.get("type") == "run_created" for e in events):
                break

    def events(self) -> list[dict[str, Any]]:
        """Every event of the run, oldest first."""
        out: list[dict[str, Any]] = []
        for entry in reversed(list(self.history())):
            out.extend(entry.events)
        return out

    def _remember(self, commit: pygit2.Oid, state: RunState, tree: pygit2.Oid) -> None:
        self._cached = (commit, state, tree)

    def _state_at(self, tip: pygit2.Oid) -> RunState:
        if self._cached is not None and self._cached[0] == tip:
            return self._cached[1]
        state = self._catch_up(tip) if self._cached is not None else None
        commit = self.repo[tip]
        if state is None:
            events = decode_message(commit.message)
            state = read_state_tree(self.repo, commit.tree, events[-1]["seq"] if events else 0)
        self._remember(tip, state, commit.tree_id)
        return state

    def _catch_up(self, tip: pygit2.Oid) -> RunState | None:
        """Replay the events written since our cached tip, instead of re-reading the tree."""
        assert self._cached is not None
        known, state, _ = self._cached
        pending: list[list[dict[str, Any]]] = []
        oid = tip
        for _ in range(CATCH_UP_LIMIT):
            commit = self.repo[oid]
            pending.append(decode_message(commit.message))
            if not commit.parent_ids:
                return None
            oid = commit.parent_ids[0]
            if oid == known:
                break
        else:
            return None
        try:
            for events in reversed(pending):
                for event in events:
                    state = apply_changes(state, event).state
        except InvalidEvent:
            return None  # not a descendant we can replay: read the tree
        return state

    # -- writing

    def append(self, *events: Mapping[str, Any], at: str | None = None) -> RunState:
        """Apply events and write them as one state commit (compare-and-swap).

        `type` and the payload come from the caller; `v`, `seq` and `at` are filled in.
        Raises InvalidEvent (nothing written) if an event does not apply to the tip.
        Several events in one call make one commit: that is how progress is batched.
        """
        if not events:
            raise ValueError("append needs at least one event")
        stamped_at = at or now_iso()
        # Who writes is the store's to say (the one place): an event's own `by` is replaced.
        events = [{**without_local_paths(e, self.local_roots), "by": self.by} for e in events]
        writer = RefWriter(self.repo, self.ref)
        while True:
            tip = self.tip()
            try:
                state, oid, tree = self._write_once(tip, events, stamped_at)
            except (OSError, pygit2.GitError) as exc:
                self.retries += 1
                writer.retry_or_raise(exc, raced=not isinstance(exc, OSError) and self.tip() != tip)
                continue
            self._remember(oid, state, tree)
            return state

    def _write_once(
        self, tip: pygit2.Oid, events: Sequence[Mapping[str, Any]], stamped_at: str
    ) -> tuple[RunState, pygit2.Oid, pygit2.Oid]:
        """One compare-and-swap attempt: the events applied to `tip`, written, the ref moved."""
        state = self._state_at(tip)
        assert self._cached is not None
        applied: Applied | None = None
        written: list[dict[str, Any]] = []
        for e in events:
            event = {**e, "v": EVENT_VERSION, "seq": state.seq + 1 + len(written)}
            event.setdefault("at", stamped_at)
            step = apply_changes(applied.state if applied else state, event)
            applied = step if applied is None else applied.merge(step)
            written.append(event)
        assert applied is not None
        base_tree = self.repo[self._cached[2]]
        tree = write_tree(self.repo, base_tree, changed_files(applied))
        sig = _signature(written[-1]["at"])
        oid = self.repo.create_commit(self.ref, sig, sig, encode_message(written), tree, [tip])
        _check_landed(self.repo, self.ref, oid)
        return applied.state, oid, tree

    # -- notes on code commits: refs/notes/attoswarm/<run>

    def add_note(self, commit: str, data: Mapping[str, Any]) -> None:
        """Attach (or replace) this run's note on a code commit: one JSON object.

        Written as our own CAS commit on the run's notes ref, with git's 2-hex fanout, so
        lookups stay fast and a concurrent writer never loses an update.
        """
        ref = notes_ref(self.run_id)
        blob = json.dumps(dict(data), sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"
        target = str(pygit2.Oid(hex=commit)) if len(commit) == 40 else str(self.repo.revparse_single(commit).id)
        writer = RefWriter(self.repo, ref)
        while True:
            current = self._target(ref)
            try:
                self._write_note(ref, current, target, blob)
                return
            except (OSError, pygit2.GitError) as exc:
                writer.retry_or_raise(exc, raced=not isinstance(exc, OSError) and self._target(ref) != current)

    def _target(self, ref: str) -> pygit2.Oid | None:
        found = self.repo.references.get(ref)
        return found.target if found is not None else None  # type: ignore[return-value]

    def _write_note(self, ref: str, current: pygit2.Oid | None, target: str, blob: bytes) -> None:
        base = self.repo[current].tree if current is not None else None
        changes = {f"{target[:2]}/{target[2:]}": blob, target: None}  # replace a flat entry too
        tree = write_tree(self.repo, base, changes)
        sig = _signature(None)
        message = f"note on {target[:10]}\n"
        if current is None:
            oid = self.repo.create_commit(None, sig, sig, message, tree, [])
            if oid not in self.repo:
                raise _unwritten(oid)
            self.repo.references.create(ref, oid)  # create-if-absent: a lost race raises
        else:
            oid = self.repo.create_commit(ref, sig, sig, message, tree, [current])
        _check_landed(self.repo, ref, oid)

    def read_note(self, commit: str) -> dict[str, Any] | None:
        try:
            note = self.repo.lookup_note(commit, notes_ref(self.run_id))
        except KeyError:
            return None
        try:
            return json.loads(note.message)
        except ValueError:
            return {"text": note.message}

    # -- the coordinator's lease: refs/attoswarm/<run>/lease -> a small JSON blob

    def read_lease(self) -> dict[str, Any] | None:
        try:
            ref = self.repo.references[lease_ref(self.run_id)]
        except KeyError:
            return None
        try:
            return json.loads(self.repo[ref.target].data)
        except (KeyError, ValueError):
            return None

    @staticmethod
    def lease_is_live(lease: Mapping[str, Any] | None, now: float | None = None) -> bool:
        """A lease counts until it expires, except that a dead owner on this host loses it
        at once (so `resume` after a crash need not wait for the expiry)."""
        if not lease:
            return False
        now = time.time() if now is None else now
        if float(lease.get("expires", 0)) <= now:
            return False
        if lease.get("host") == socket.gethostname() and isinstance(lease.get("pid"), int):
            return _pid_alive(int(lease["pid"]))
        return True

    def acquire_lease(self, owner: str, ttl: float) -> dict[str, Any]:
        """Take or renew the lease; raises LeaseHeld if another live owner holds it."""
        name = lease_ref(self.run_id)
        writer = RefWriter(self.repo, name)
        while True:
            ref = self.repo.references.get(name)
            seen = ref.target if ref is not None else None
            current = None
            if ref is not None:
                try:
                    current = json.loads(self.repo[ref.target].data)
                except (KeyError, ValueError):
                    current = None
            if current and current.get("owner") != owner and self.lease_is_live(current):
                raise LeaseHeld(current)
            now = time.time()
            lease = {
                "owner": owner,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "acquired": current.get("acquired", now) if current and current.get("owner") == owner else now,
                "renewed": now,
                "expires": now + ttl,
            }
            try:
                blob = self.repo.create_blob(json.dumps(lease, sort_keys=True).encode("utf-8"))
                if ref is None:
                    self.repo.references.create(name, blob)
                else:
                    ref.set_target(blob)  # CAS against the value read above
                if blob not in self.repo:
                    raise _unwritten(blob)
                return lease
            except (OSError, pygit2.GitError) as exc:
                writer.retry_or_raise(exc, raced=not isinstance(exc, OSError) and self._target(name) != seen)

    def renew_lease(self, owner: str, ttl: float) -> dict[str, Any]:
        current = self.read_lease()
        if not current or current.get("owner") != owner:
            raise LeaseLost(f"the lease of run {self.run_id} is no longer held by {owner}")
        try:
            return self.acquire_lease(owner, ttl)
        except LeaseHeld as exc:
            raise LeaseLost(str(exc)) from exc

    def release_lease(self, owner: str) -> None:
        name = lease_ref(self.run_id)
        try:
            with self.repo.transaction() as txn:
                txn.lock_ref(name)
                ref = self.repo.references.get(name)
                if ref is None:
                    return
                current = json.loads(self.repo[ref.target].data)
                if current.get("owner") != owner:
                    return
                txn.remove(name)
        except (KeyError, ValueError, pygit2.GitError, OSError):
            return


# ---------------------------------------------------------------- failed writes


class _Unwritten(OSError):
    """libgit2 returned the id of an object it did not write (seen on a read-only disk)."""


def _unwritten(oid: pygit2.Oid) -> _Unwritten:
    return _Unwritten(f"object {oid} was not written")


def _check_landed(repo: pygit2.Repository, ref: str, oid: pygit2.Oid) -> None:
    """Raise unless a commit write really happened (the ref at `oid`, or moved on from it
    by a later writer). On a read-only disk libgit2's create_commit reports success and
    writes neither the commit nor the ref: a store that believed it would lose the event
    without a word."""
    if oid not in repo:
        raise _unwritten(oid)
    found = repo.references.get(ref)
    current = found.target if found is not None else None
    if current != oid and not (current is not None and repo.descendant_of(current, oid)):
        raise _Unwritten(f"{ref} was not moved to {oid}")


def _lock_path(repo: pygit2.Repository, ref: str) -> Path:
    return Path(repo.path) / (ref + ".lock")


def _clear_stale_lock(lock: Path) -> None:
    try:
        age = time.time() - lock.stat().st_mtime
        if age > STALE_LOCK_SECONDS:
            lock.unlink()
    except OSError:
        return  # gone already, or a disk that refuses the unlink: the caller says why


def write_error(repo: pygit2.Repository, ref: str, exc: BaseException, then: str | None = None) -> GitswarmError:
    """A failed write of `ref` as the user should read it: the cause (a full or read-only
    disk, by libgit2's message or by looking at the file system), the ref, the repository,
    and what to do (`then`; by default: resume the run the ref belongs to)."""
    where = repo.workdir or repo.path
    cause = storage_fault(str(exc), repo.path, getattr(exc, "errno", None))
    if cause is not None:
        run = next((ref[len(p):].split("/")[0] for p in (REF_ROOT, notes_ref("")) if ref.startswith(p)), "")
        if then is None:
            then = "run the command again" + (f" (`gitswarm resume {run}` goes on with the run)" if run else "")
        return StorageError(cause, f"writing {ref}", where, then)
    return GitswarmError(f"cannot write {ref} in {where}: {exc}")


@dataclass
class RefWriter:
    """How one compare-and-swap write of a ref meets failure. A lost race is retried at
    once (another writer made progress); a ref lock held by another writer is waited on
    for at most LOCK_WAIT_SECONDS (clearing one left by a killed process); anything
    else, a full or read-only disk above all, is raised as a GitswarmError at once.
    Retrying every failure, as the store once did, never returned on a full disk."""

    repo: pygit2.Repository
    ref: str
    backoff: float = 0.0002
    deadline: float = field(default_factory=lambda: time.monotonic() + LOCK_WAIT_SECONDS)

    def retry_or_raise(self, exc: BaseException, raced: bool) -> None:
        """Return when the write should be tried again; raise otherwise."""
        if raced or isinstance(exc, pygit2.AlreadyExistsError):
            return
        lock = _lock_path(self.repo, self.ref)
        if not self._lock_held(exc, lock, self.repo.path):
            raise write_error(self.repo, self.ref, exc) from exc
        if time.monotonic() > self.deadline:
            raise GitswarmError(
                f"{self.ref} in {self.repo.workdir or self.repo.path} stays locked ({lock} exists for more than "
                f"{LOCK_WAIT_SECONDS:.0f}s): if no git or gitswarm process is writing it, remove that file"
            ) from exc
        _clear_stale_lock(lock)
        time.sleep(random.uniform(0, self.backoff))
        self.backoff = min(self.backoff * 2, 0.05)

    @staticmethod
    def _lock_held(exc: BaseException, lock: Path, git_dir: str) -> bool:
        if not isinstance(exc, OSError) or isinstance(exc, _Unwritten):
            return False
        # A lock that cannot be cleared or written past: waiting on it would only delay
        # the error (a stale lock on a read-only disk stays).
        if storage_fault(str(exc), git_dir, exc.errno) is not None:
            return False
        # libgit2's words when the lock file exists ("failed to lock file ...: " with an
        # empty strerror, or "failed to create locked file ...: File exists"): the other
        # writer may have released it by the time we look.
        text = str(exc)
        return "failed to lock file" in text or "File exists" in text or lock.exists()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by its parent) is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True
