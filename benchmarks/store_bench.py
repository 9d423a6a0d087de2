#!/usr/bin/env python
"""State store benchmark: write latency, batching, full reads and ref polling.

Prints figures; it is not a test. For each location (the real disk and tmpfs) and each
run size (number of tasks) it:

1. creates a repository and a run, seeds it with one `plan_set` of N tasks and moves it
   to `running`;
2. times single-event appends (`time.perf_counter` around `RunStore.append`) in the mix a
   coordinator writes: an attempt starts, the running attempts report progress, the
   oldest attempt finishes (failed with retry, so its task can start again), and so on,
   with up to 8 attempts running at once;
3. times batched progress: `append(*10 events)` and `append(*100 events)`, per event;
4. times a full read of the state with a fresh `Store` (open the repository, `read()`),
   on loose objects, then after `git gc` (packed), and the walk of the whole event log;
5. times polling the ref (`RunStore.tip()`), in process and from a fresh `Store`.

Goals: a single write under 1 ms median at 10,000 tasks; batched progress under 0.3 ms
per event; reading a 1,000-task state under 50 ms.

    python benchmarks/store_bench.py                 # full run (a few minutes)
    python benchmarks/store_bench.py --quick         # smoke run (seconds)
    python benchmarks/store_bench.py --sizes 100,1000 --events 500 --where tmpfs
    python benchmarks/store_bench.py --profile       # cProfile the hot paths too
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pygit2  # noqa: E402

from benchkit import cpu_model, git_version, mount_of  # noqa: E402
from gitswarm.store import RunStore, Store  # noqa: E402

RUN = "bench"
RUNNING_AT_ONCE = 8  # attempts running at the same time (agents)
PROGRESS_PER_START = 6  # progress events written between two attempt starts
GOAL_WRITE_MS = 1.0
GOAL_BATCHED_MS = 0.3
GOAL_READ_1000_MS = 50.0


# ---------------------------------------------------------------- environment




# ---------------------------------------------------------------- helpers


def ms(seconds: float) -> float:
    return seconds * 1000.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def loose_objects(repo: Path) -> tuple[int, int]:
    out = subprocess.run(["git", "count-objects", "-v"], cwd=repo, capture_output=True, text=True).stdout
    kv = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    return int(kv.get("count", 0)), int(kv.get("size", 0))  # objects, KiB


def task_id(k: int) -> str:
    return f"task-{k:05d}"


@dataclass
class Coordinator:
    """Generates a valid stream of coordinator events for a seeded run."""

    n_tasks: int
    next_task: int = 0
    attempts: dict[str, int] = field(default_factory=dict)  # task -> last attempt n
    running: list[str] = field(default_factory=list)  # tasks with a running attempt, oldest first
    tick: int = 0

    def start(self) -> dict[str, Any]:
        busy = set(self.running)
        while True:
            tid = task_id(self.next_task % self.n_tasks)
            self.next_task += 1
            if tid not in busy:
                break
        n = self.attempts.get(tid, 0) + 1
        self.attempts[tid] = n
        self.running.append(tid)
        return {"type": "attempt_started", "task": tid, "n": n, "agent": f"impl-{len(self.running)}", "backend": "scripted", "prompt": f"Do {tid}, attempt {n}.\n"}

    def finish(self) -> dict[str, Any]:
        tid = self.running.pop(0)
        return {
            "type": "attempt_finished", "task": tid, "n": self.attempts[tid], "result": "failed", "retry": True, "exit": 1,
            "error": "tests failed", "usage": {"input_tokens": 1000 + self.tick, "output_tokens": 200, "cost_usd": 0.01},
        }

    def progress(self) -> dict[str, Any]:
        self.tick += 1
        tid = self.running[self.tick % len(self.running)]
        return {
            "type": "progress", "task": tid, "n": self.attempts[tid], "event": f"tool_use: edit src/module_{self.tick % 97}.py",
            "usage": {"input_tokens": 1000 + self.tick, "output_tokens": 10 + self.tick, "cost_usd": round(0.0001 * self.tick, 6)},
        }

    def fill(self) -> list[dict[str, Any]]:
        """Start attempts until RUNNING_AT_ONCE are running (or every task is)."""
        out = []
        while len(self.running) < min(RUNNING_AT_ONCE, self.n_tasks):
            out.append(self.start())
        return out

    def mix(self) -> dict[str, Any]:
        """The next single event of the coordinator's mix."""
        phase = self.tick % (PROGRESS_PER_START + 2)
        if phase == PROGRESS_PER_START and self.running:
            self.tick += 1
            return self.finish()
        if phase == PROGRESS_PER_START + 1 or not self.running:
            self.tick += 1
            return self.start()
        return self.progress()


def new_run(base: Path, n_tasks: int) -> tuple[Path, RunStore, Coordinator, float]:
    repo = base / f"repo-{n_tasks}"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "--allow-empty", "-m", "base"], check=True)
    subprocess.run(["git", "-C", str(repo), "config", "gc.auto", "0"], check=True)
    store = Store(repo)
    rs = store.create_run({"id": RUN, "goal": "benchmark"})
    plan = {
        "type": "plan_set",
        "tasks": [
            {"id": task_id(k), "title": f"Task {k}", "description": f"Implement part {k} of the thing.", "deps": [task_id(k - 1)] if k % 10 else [], "files": [f"src/module_{k % 97}.py"]}
            for k in range(n_tasks)
        ],
    }
    seed = timed(lambda: rs.append(plan))
    rs.append({"type": "phase_changed", "phase": "running"})
    coord = Coordinator(n_tasks)
    for e in coord.fill():
        rs.append(e)
    return repo, rs, coord, seed


# ---------------------------------------------------------------- measurements


def bench_writes(rs: RunStore, coord: Coordinator, count: int) -> dict[str, list[float]]:
    by_type: dict[str, list[float]] = {"all": [], "progress": [], "lifecycle": []}
    for _ in range(count):
        event = coord.mix()
        t0 = time.perf_counter()
        rs.append(event)
        dt = time.perf_counter() - t0
        by_type["all"].append(dt)
        by_type["progress" if event["type"] == "progress" else "lifecycle"].append(dt)
        if event["type"] == "attempt_finished":  # keep RUNNING_AT_ONCE attempts going
            for e in coord.fill():
                t0 = time.perf_counter()
                rs.append(e)
                dt = time.perf_counter() - t0
                by_type["all"].append(dt)
                by_type["lifecycle"].append(dt)
    return by_type


def bench_batched(rs: RunStore, coord: Coordinator, size: int, commits: int) -> list[float]:
    per_event = []
    for _ in range(commits):
        batch = [coord.progress() for _ in range(size)]
        t0 = time.perf_counter()
        rs.append(*batch)
        per_event.append((time.perf_counter() - t0) / size)
    return per_event


def bench_reads(repo: Path, repeats: int) -> dict[str, float]:
    def full_read() -> None:
        Store(repo).run(RUN).read()

    def walk() -> None:
        Store(repo).run(RUN).events()

    full_read()  # warm the page cache once
    reads = [timed(full_read) for _ in range(repeats)]
    walks = [timed(walk) for _ in range(max(1, repeats // 2))]
    return {"read": statistics.median(reads), "walk": statistics.median(walks)}


def bench_poll(repo: Path, rs: RunStore) -> dict[str, float]:
    rounds = []
    for _ in range(20):
        t0 = time.perf_counter()
        for _ in range(1000):
            rs.tip()
        rounds.append((time.perf_counter() - t0) / 1000)
    fresh = [timed(lambda: Store(repo).run(RUN).tip()) for _ in range(50)]
    return {"tip": statistics.median(rounds), "open+tip": statistics.median(fresh)}


def git_gc(repo: Path) -> float:
    return timed(lambda: subprocess.run(["git", "gc", "-q", "--prune=now"], cwd=repo, check=True))


@dataclass
class Result:
    where: str
    tasks: int
    seed_s: float
    writes: dict[str, list[float]]
    batched: dict[int, list[float]]
    loose: dict[str, float]
    packed: dict[str, float]
    poll: dict[str, float]
    gc_s: float
    loose_before_gc: tuple[int, int]
    events: int


def run_one(where: str, base: Path, n_tasks: int, events: int, reads: int, batches: dict[int, int], profile: bool) -> Result:
    repo, rs, coord, seed = new_run(base, n_tasks)
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    writes = bench_writes(rs, coord, events)
    batched = {size: bench_batched(rs, coord, size, commits) for size, commits in batches.items()}
    if profiler:
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(18)
        print(f"\n--- cProfile of the writes, {where}, {n_tasks} tasks (by own time) ---")
        print("\n".join(out.getvalue().splitlines()[:40]))
    poll = bench_poll(repo, rs)
    loose_count = loose_objects(repo)
    if profiler:
        profiler = cProfile.Profile()
        profiler.enable()
        Store(repo).run(RUN).read()
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
        print(f"\n--- cProfile of a full read, {where}, {n_tasks} tasks, loose (by own time) ---")
        print("\n".join(out.getvalue().splitlines()[:30]))
    loose = bench_reads(repo, reads)
    gc_s = git_gc(repo)
    packed = bench_reads(repo, reads)
    total_events = len(rs.events())
    shutil.rmtree(repo, ignore_errors=True)
    return Result(where, n_tasks, seed, writes, batched, loose, packed, poll, gc_s, loose_count, total_events)


# ---------------------------------------------------------------- report


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "| " + " | ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([fmt(header), sep, *(fmt(r) for r in rows)])


def report(results: list[Result]) -> None:
    f2 = lambda s: f"{ms(s):.2f}"  # noqa: E731
    rows = []
    for r in results:
        w = r.writes
        rows.append([
            r.where, f"{r.tasks:,}",
            f2(statistics.median(w["all"])), f2(pct(w["all"], 0.95)),
            f2(statistics.median(w["progress"])), f2(statistics.median(w["lifecycle"])), f2(pct(w["lifecycle"], 0.95)),
            *(f"{ms(statistics.median(r.batched[s])):.3f}" for s in sorted(r.batched)),
        ])
    print("\nWrites (ms; single-event appends, then batched progress per event)")
    print(table(rows, ["where", "tasks", "write median", "write p95", "progress median", "start/finish median", "start/finish p95",
                       *(f"batch {s}: per event" for s in sorted(results[0].batched))]))

    rows = []
    for r in results:
        rows.append([
            r.where, f"{r.tasks:,}", f"{r.events:,}", f"{r.loose_before_gc[0]:,} / {r.loose_before_gc[1] / 1024:.1f} MiB",
            f"{ms(r.loose['read']):.1f}", f"{ms(r.packed['read']):.1f}",
            f"{ms(r.loose['walk']):.1f}", f"{ms(r.packed['walk']):.1f}", f"{r.gc_s:.2f}",
            f"{r.poll['tip'] * 1e6:.1f}", f"{r.poll['open+tip'] * 1e6:.0f}", f"{r.seed_s:.2f}",
        ])
    print("\nReads (fresh Store each time; median) and polling")
    print(table(rows, ["where", "tasks", "events", "loose objects", "read ms (loose)", "read ms (packed)",
                       "walk log ms (loose)", "walk log ms (packed)", "git gc s", "tip() µs", "open+tip µs", "seed plan s"]))

    print("\nGoals")
    for where in dict.fromkeys(r.where for r in results):
        mine = [r for r in results if r.where == where]
        big = max(mine, key=lambda r: r.tasks)
        med = ms(statistics.median(big.writes["all"]))
        print(f"- [{where}] single write at {big.tasks:,} tasks: median {med:.2f} ms, goal < {GOAL_WRITE_MS} ms: "
              f"{'MET' if med < GOAL_WRITE_MS else 'MISSED'}")
        for size in sorted(big.batched):
            worst = max(ms(statistics.median(r.batched[size])) for r in mine)
            print(f"- [{where}] batched progress ({size} per commit): worst size {worst:.3f} ms per event, goal < {GOAL_BATCHED_MS} ms: "
                  f"{'MET' if worst < GOAL_BATCHED_MS else 'MISSED'}")
        k = [r for r in mine if r.tasks == 1000]
        if k:
            lo, pk = ms(k[0].loose["read"]), ms(k[0].packed["read"])
            print(f"- [{where}] read a 1,000-task state: {lo:.1f} ms loose, {pk:.1f} ms packed, goal < {GOAL_READ_1000_MS:.0f} ms: "
                  f"{'MET' if max(lo, pk) < GOAL_READ_1000_MS else ('MET when packed' if pk < GOAL_READ_1000_MS else 'MISSED')}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a fast smoke run: small sizes, few events")
    p.add_argument("--sizes", help="comma-separated task counts (default 10,100,1000,10000)")
    p.add_argument("--events", type=int, help="single-event appends per size (default 1000)")
    p.add_argument("--reads", type=int, default=7, help="full reads per measurement (median)")
    p.add_argument("--where", default="disk,tmpfs", help="disk, tmpfs or both (default)")
    p.add_argument("--disk-dir", default=None, help="where on the real disk (default /var/tmp, else /work)")
    p.add_argument("--tmpfs-dir", default="/dev/shm")
    p.add_argument("--profile", action="store_true", help="print cProfile hot spots of writes and reads")
    args = p.parse_args(argv)

    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([10, 100, 1000] if args.quick else [10, 100, 1000, 10000])
    events = args.events or (100 if args.quick else 1000)
    batches = {10: 10, 100: 3} if args.quick else {10: 100, 100: 20}
    reads = 3 if args.quick else args.reads

    disk_dir = Path(args.disk_dir) if args.disk_dir else next((Path(d) for d in ("/var/tmp", "/work") if os.access(d, os.W_OK)), Path(tempfile.gettempdir()))
    places = {"disk": disk_dir, "tmpfs": Path(args.tmpfs_dir)}
    wanted = [w.strip() for w in args.where.split(",") if w.strip()]

    print("State store benchmark")
    print(f"  machine: {os.cpu_count()} cores, {cpu_model()}, {platform.system()} {platform.release()}")
    print(f"  python {platform.python_version()}, pygit2 {pygit2.__version__}, libgit2 {pygit2.LIBGIT2_VERSION}, git {git_version()}")
    for name in ("/tmp", "/var/tmp", "/work", "/dev/shm"):
        if os.path.exists(name):
            fs, src, mnt = mount_of(Path(name))
            print(f"  {name}: {fs} ({src} at {mnt})")
    print(f"  sizes {sizes}, {events} single appends per size, batches {batches} (size: commits), {reads} reads")

    results: list[Result] = []
    for where in wanted:
        root = places[where]
        fs, src, mnt = mount_of(root)
        if where == "disk" and fs == "tmpfs":
            print(f"  warning: {root} is tmpfs, not a real disk")
        base = Path(tempfile.mkdtemp(prefix="gitswarm-bench-", dir=root))
        print(f"\n[{where}] {base}: {fs} on {src}")
        try:
            for n in sizes:
                t0 = time.perf_counter()
                r = run_one(where, base, n, events, reads, batches, args.profile and n == max(sizes))
                results.append(r)
                print(f"  {n:>6,} tasks: write median {ms(statistics.median(r.writes['all'])):.2f} ms, "
                      f"read {ms(r.loose['read']):.1f} / {ms(r.packed['read']):.1f} ms (loose / packed)  [{time.perf_counter() - t0:.1f} s]", flush=True)
        finally:
            shutil.rmtree(base, ignore_errors=True)
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
