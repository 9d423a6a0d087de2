"""A state-store writer for the concurrency and crash tests (not a test module).

Run as a script it opens `Store(repo).run(run_id)` and appends events; imported, its
`write()` does the same in a thread of the test process (one Store per thread).

Every event carries two extra fields the store keeps verbatim in the commit message:
`w` (the writer) and `i` (0, 1, 2, ... in the order the writer appended them), so a test
can tell from the history alone whether an event was lost, duplicated or reordered.

Events (`--kind`):
- `lifecycle` (default): per task, five events that touch every part of the state tree:
  task_added `<w>-<j>`, attempt_started (writes a prompt file), progress,
  attempt_finished (writes a transcript file), run_note (rewrites run.json). Each
  writer's tasks are its own, so its events stay valid whatever the others append.
- `note`: run_note events with the text `<w>-<i>`.

`--acks FILE`: after each append returns, the `i` of its last event is written to FILE
(one line, unbuffered), so a test that kills the writer knows what was acknowledged.
`--hold-lock`: take the state ref's lock (a libgit2 transaction), say `locked`, and wait
to be killed: a lock left behind by a process killed while holding it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

if __package__ in (None, ""):  # run as a script: make `gitswarm` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gitswarm.store import Store, state_ref  # noqa: E402


def lifecycle_event(writer: str, i: int) -> dict[str, Any]:
    task = f"{writer}-{i // 5}"
    step = i % 5
    if step == 0:
        e: dict[str, Any] = {"type": "task_added", "task": {"id": task, "title": f"task {task}"}}
    elif step == 1:
        e = {"type": "attempt_started", "task": task, "n": 1, "agent": writer, "backend": "scripted", "prompt": f"do {task}\n"}
    elif step == 2:
        e = {"type": "progress", "task": task, "n": 1, "event": f"working on {task}", "usage": {"input_tokens": i, "cost_usd": 0.001}}
    elif step == 3:
        e = {
            "type": "attempt_finished", "task": task, "n": 1, "result": "ok", "exit": 0,
            "usage": {"input_tokens": i, "output_tokens": 3, "cost_usd": 0.002},
            "transcript": json.dumps({"task": task, "text": "done"}) + "\n",
        }
    else:
        e = {"type": "run_note", "text": f"{writer}-{i}"}
    return e


def note_event(writer: str, i: int) -> dict[str, Any]:
    return {"type": "run_note", "text": f"{writer}-{i}"}


KINDS: dict[str, Callable[[str, int], dict[str, Any]]] = {"lifecycle": lifecycle_event, "note": note_event}


def events(writer: str, kind: str, count: int | None) -> Iterator[dict[str, Any]]:
    make = KINDS[kind]
    i = 0
    while count is None or i < count:
        yield {**make(writer, i), "w": writer, "i": i}
        i += 1


def write(
    repo: str,
    run_id: str,
    writer: str,
    count: int | None,
    batch: int = 1,
    kind: str = "lifecycle",
    acks: int | None = None,
    ready: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Append `count` events (None: until killed) in commits of `batch` events.

    `ready` is called once the store is open and its cache warm, before the first append
    (a barrier, or a handshake with the parent process)."""
    rs = Store(repo).run(run_id)
    rs.read()
    if ready is not None:
        ready()
    began = time.time()
    appended = 0
    pending: list[dict[str, Any]] = []
    for event in events(writer, kind, count):
        pending.append(event)
        if len(pending) < batch:
            continue
        rs.append(*pending)
        appended += len(pending)
        if acks is not None:
            os.write(acks, f"{pending[-1]['i']}\n".encode())
        pending = []
    if pending:
        rs.append(*pending)
        appended += len(pending)
        if acks is not None:
            os.write(acks, f"{pending[-1]['i']}\n".encode())
    return {"writer": writer, "appended": appended, "retries": rs.retries, "began": began, "ended": time.time()}


def hold_lock(repo: str, run_id: str) -> None:
    store = Store(repo)
    with store.repo.transaction() as txn:
        txn.lock_ref(state_ref(run_id))
        print("locked", flush=True)
        time.sleep(3600)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("repo")
    p.add_argument("run_id")
    p.add_argument("--writer", default=f"p{os.getpid()}")
    p.add_argument("--count", type=int, default=0, help="events to append; 0: until killed")
    p.add_argument("--batch", type=int, default=1, help="events per commit")
    p.add_argument("--kind", choices=sorted(KINDS), default="lifecycle")
    p.add_argument("--acks", help="file to write the i of each acknowledged append to")
    p.add_argument("--wait-go", action="store_true", help="after 'ready', wait for a line on stdin")
    p.add_argument("--hold-lock", action="store_true")
    args = p.parse_args(argv)
    if args.hold_lock:
        hold_lock(args.repo, args.run_id)
        return 0
    acks = os.open(args.acks, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if args.acks else None

    def ready() -> None:
        print("ready", flush=True)
        if args.wait_go:
            sys.stdin.readline()

    result = write(args.repo, args.run_id, args.writer, args.count or None, args.batch, args.kind, acks, ready)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
