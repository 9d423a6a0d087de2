#!/usr/bin/env python
"""Swarm run benchmark: orchestration overhead per task with a no-op scripted agent.

Prints figures; it is not a test. For each repository (a small one, and one of 20,000
files in nested folders) and each run size (number of tasks) it:

1. makes a fresh repository on the real disk (the 20,000-file one is built once with
   `git fast-import` and copied with `cp -a` per configuration);
2. creates a run of N independent tasks with `launch.create_run`; each task is a
   `scripted` no-op that writes one small distinct file `bench/<task>.txt` and declares
   it as its `files:` manifest, so the 4 workers can run 4 tasks at once;
3. runs `Coordinator(...).run()` to the end with one worker role (`scripted`, count 4),
   `run.poll_interval_ms: 10`, `gates.tests: false` (the test gate would run the small
   project's pytest on every merge: the project's cost, not the orchestration's), every
   other knob at its default (`state_flush_ms` 200, syntax gate on, 2 attempts per task);
4. reads the run's events back from its state ref and measures, per task:

   - ready -> merged: from the `phase_changed: running` event (independent tasks are
     ready from then on) to the task's `merged` event. With 4 workers most tasks wait
     in the queue, so this grows with the run's size by construction (median ~ wall/2);
   - attempt start -> merged: `attempt_started.at` -> `merged.at` of the merged
     attempt. THIS is the "overhead per task" compared with the 100 ms goal: with a
     no-op agent everything in it is orchestration (worktree, agent start, leftover
     commit, syntax gate, merge, state commits);
   - a breakdown: start -> finished (worktree set-up + agent + leftover commit, and the
     wait for the main thread to pick the result up), finished -> verified (the syntax
     gate), verified -> merged (merge-tree, commit, ref update, state commits), and
     merged -> next event (the main thread's bookkeeping after a merge: git notes,
     worktree removal, branch deletion; approximate: it is the gap until the main thread
     writes its next event, idle time included when nothing else is waiting);

   and for the whole run: wall time of `Coordinator.run()`, tasks per second, wall/tasks
   (the throughput cost of one task) and wall*workers/tasks (the honest per-task cost
   under load: the time a worker slot is tied up per task, queueing included).

A configuration that runs longer than --cap-minutes (15) is stopped by the product's own
`run.max_runtime_seconds` and reported CAPPED, with its figures taken from the tasks that
merged. The 1-minute load average before and after each run, and the time to create a
small file in the bench dir, are printed: on a shared machine or a VM disk they explain
much of the run-to-run variation.

Event times are the `at` stamps of the state store, in milliseconds, so every per-task
figure has a 1 ms resolution. Only the coordinator's main thread is profiled by
`--profile` (cProfile does not follow the worker threads; they mostly wait on git).

Goals: under 100 ms per task (attempt start -> merged, median) on the small repository,
and growth no faster than linear with the number of tasks: the per-task overhead at
1,000 tasks is at most GROWTH_LIMIT (1.5) times the one at 100 tasks.

    python benchmarks/run_bench.py                    # full run (many minutes)
    python benchmarks/run_bench.py --quick            # 10 and 100 tasks, small repo (seconds)
    python benchmarks/run_bench.py --sizes 10,100 --repos 20k --workers 4
    python benchmarks/run_bench.py --quick --profile  # cProfile the 100-task run
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
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
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gitswarm  # noqa: E402

# From a checkout without installation, gitswarm.backends / .hooks / .tui are the
# top-level folders of the repository (pyproject's package-dir): let gitswarm find them.
if importlib.util.find_spec("gitswarm.backends") is None:
    gitswarm.__path__.append(str(ROOT))  # type: ignore[attr-defined]

from benchkit import cpu_model, git_version, mount_of  # noqa: E402
from gitswarm.config import parse_config  # noqa: E402
from gitswarm.coordinator import Coordinator  # noqa: E402
from gitswarm.launch import create_run  # noqa: E402
from gitswarm.model import RunPhase, TaskSpec, TaskStatus  # noqa: E402
from gitswarm.store import Store, swarm_branch  # noqa: E402

GOAL_MS = 100.0
GROWTH_LIMIT = 1.5  # per-task overhead at 1,000 tasks <= 1.5x the one at 100: "linear"
BIG_FILES = 20_000
CAP_MINUTES = 15.0

CONFIG_YAML = """\
version: 1
run:
  name: bench
  poll_interval_ms: 10
  max_runtime_seconds: {cap}
roles:
  - {{role_id: impl, role_type: worker, backend: scripted, count: {workers}, task_kinds: [implement]}}
# The orchestration's own overhead: the test gate would run the small project's pytest
# on every merge (a second or more each, one at a time), which is the project's cost,
# not gitswarm's.
gates:
  tests: false
"""


# ---------------------------------------------------------------- environment




def checkout_version() -> str:
    """The commit of the gitswarm checkout measured, and whether its code differs from it."""
    def out(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    head = out("rev-parse", "--short", "HEAD") or "?"
    dirty = out("status", "--porcelain", "--untracked-files=no", "--", "gitswarm", "backends", "hooks")
    return head + (" (with uncommitted changes to the product code)" if dirty else "")


def disk_probe(base: Path, files: int = 500) -> float:
    """Microseconds to create one small file in `base` (a context figure: on a VM disk it
    varies with the host's load, and checkouts cost about this much per file)."""
    d = base / "disk-probe"
    d.mkdir()
    t0 = time.perf_counter()
    for k in range(files):
        (d / f"f{k}").write_bytes(b"x\n")
    dt = time.perf_counter() - t0
    shutil.rmtree(d, ignore_errors=True)
    return dt / files * 1e6


# ---------------------------------------------------------------- helpers


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ts(iso: str) -> float:
    """Seconds since the epoch of an event's `at` stamp."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def git(repo: Path, *args: str, input: bytes | None = None) -> None:
    subprocess.run(["git", *args], cwd=repo, input=input, check=True, stdout=subprocess.DEVNULL)


def init_repo(path: Path) -> None:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Bench User")
    git(path, "config", "user.email", "bench@example.invalid")


SMALL_FILES = {
    "README.md": "# app\n\nA small project for the swarm benchmark.\n",
    "pyproject.toml": '[project]\nname = "app"\nversion = "0.1.0"\n',
    "src/app/__init__.py": "",
    "src/app/core.py": "def add(a, b):\n    return a + b\n",
    "src/app/util.py": "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n",
    "tests/test_core.py": "from app.core import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n",
    "docs/index.md": "# Docs\n",
    ".gitignore": "__pycache__/\n",
}


def build_small(path: Path) -> None:
    init_repo(path)
    for rel, text in SMALL_FILES.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "a small project")


def build_big(path: Path, files: int = BIG_FILES) -> None:
    """`files` small files in nested folders (pkgNN/modNN/file_NNNNN.txt), one commit,
    written with git fast-import and checked out."""
    init_repo(path)
    per_leaf = 50
    lines = [b"commit refs/heads/main\n", b"committer Bench User <bench@example.invalid> 1700000000 +0000\n"]
    msg = f"{files:,} files\n".encode()
    lines.append(b"data %d\n" % len(msg) + msg)
    for k in range(files):
        leaf = k // per_leaf
        rel = f"pkg{leaf // 20:02d}/mod{leaf % 20:02d}/file_{k:05d}.txt"
        content = f"file {k}\nsome content of a small file\n".encode()
        lines.append(b"M 100644 inline %s\ndata %d\n%s\n" % (rel.encode(), len(content), content))
    lines.append(b"\n")
    git(path, "fast-import", "--quiet", input=b"".join(lines))
    git(path, "reset", "-q", "--hard", "main")


def copy_template(template: Path, dest: Path) -> None:
    subprocess.run(["cp", "-a", str(template), str(dest)], check=True)
    # New inodes: refresh the index's stat cache once, outside the measurement.
    subprocess.run(["git", "update-index", "-q", "--refresh"], cwd=dest, check=False, stdout=subprocess.DEVNULL)


def make_tasks(n: int) -> list[TaskSpec]:
    tasks = []
    for k in range(n):
        tid = f"t{k:05d}"
        rel = f"bench/{tid}.txt"
        tasks.append(TaskSpec(
            id=tid, title=f"No-op task {k}", description="Write one small file.", files=(rel,), kind="implement",
            extra={"script": [{"write": {"path": rel, "content": f"{tid}\n"}}]},
        ))
    return tasks


# ---------------------------------------------------------------- one configuration


@dataclass
class Result:
    repo: str
    tasks: int
    workers: int
    launch_s: float
    wall_s: float
    phase: str
    reason: str | None
    done: int
    attempts: int
    retried: int  # tasks with more than one attempt
    interrupted: int  # attempts ended by a stop (the cap)
    files_on_branch: int
    events: int
    load: tuple[float, float]  # 1-minute load average before and after the run
    ready_merged: list[float] = field(default_factory=list)  # seconds, per task
    start_merged: list[float] = field(default_factory=list)
    start_finished: list[float] = field(default_factory=list)
    finished_verified: list[float] = field(default_factory=list)
    verified_merged: list[float] = field(default_factory=list)
    after_merge: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.phase == RunPhase.COMPLETED.value and self.done == self.tasks and self.files_on_branch == self.tasks

    @property
    def capped(self) -> bool:
        return self.reason == "max_runtime"

    @property
    def status(self) -> str:
        if self.ok:
            return "ok"
        return f"{'CAPPED' if self.capped else 'INCOMPLETE'} {self.done}/{self.tasks}"

    @property
    def per_task_ms(self) -> float:
        return med(self.start_merged) * 1000

    @property
    def wall_per_task_ms(self) -> float:
        """Wall time per merged task (all tasks, unless the run was cut short)."""
        return self.wall_s / max(1, self.done) * 1000

    @property
    def slot_per_task_ms(self) -> float:
        return self.wall_per_task_ms * self.workers


def analyse(events: list[dict[str, Any]]) -> dict[str, list[float]]:
    running_at = next((ts(e["at"]) for e in events if e["type"] == "phase_changed" and e.get("phase") == "running"), None)
    at: dict[tuple[str, str, int], float] = {}
    merged: dict[str, tuple[int, float]] = {}
    after: list[float] = []
    for i, e in enumerate(events):
        kind, task = e["type"], e.get("task")
        if kind in ("attempt_started", "attempt_finished", "attempt_verified") and task:
            at.setdefault((kind, task, int(e["n"])), ts(e["at"]))
        elif kind == "merged" and task:
            merged[task] = (int(e["n"]), ts(e["at"]))
            if i + 1 < len(events):
                after.append(ts(events[i + 1]["at"]) - ts(e["at"]))
    out: dict[str, list[float]] = {k: [] for k in ("ready_merged", "start_merged", "start_finished", "finished_verified", "verified_merged")}
    for task, (n, m) in merged.items():
        s, f, v = (at.get((k, task, n)) for k in ("attempt_started", "attempt_finished", "attempt_verified"))
        if running_at is not None:
            out["ready_merged"].append(m - running_at)
        if s is not None:
            out["start_merged"].append(m - s)
        if s is not None and f is not None:
            out["start_finished"].append(f - s)
        if f is not None and v is not None:
            out["finished_verified"].append(v - f)
        if v is not None:
            out["verified_merged"].append(m - v)
    out["after_merge"] = after
    return out


def run_one(repo_kind: str, repo: Path, n: int, workers: int, cap_minutes: float, profile: bool) -> Result:
    config = parse_config(CONFIG_YAML.format(workers=workers, cap=int(cap_minutes * 60)), "bench-swarm.yaml").config
    tasks = make_tasks(n)
    t0 = time.perf_counter()
    launch = create_run(repo, config, tasks, goal=f"benchmark: {n} no-op tasks", run_id=f"bench-{repo_kind}-{n}")
    launch_s = time.perf_counter() - t0

    coordinator = Coordinator(repo, launch.run_id, config, report=lambda s: None)
    profiler = cProfile.Profile() if profile else None
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    if profiler:
        profiler.enable()
    state = coordinator.run()
    if profiler:
        profiler.disable()
    wall = time.perf_counter() - t0

    if profiler:
        for key in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(25)
            print(f"\n--- cProfile of Coordinator.run() (main thread), {repo_kind} repo, {n} tasks, by {key} ---")
            body = out.getvalue().splitlines()
            start = next((i for i, line in enumerate(body) if line.lstrip().startswith("ncalls")), 0)
            print("\n".join(line.replace(str(ROOT) + "/", "") for line in body[max(0, start - 4):start + 26]))

    events = Store(repo).run(launch.run_id).events()
    listed = subprocess.run(["git", "ls-tree", "--name-only", f"refs/heads/{swarm_branch(launch.run_id)}", "bench/"],
                            cwd=repo, capture_output=True, text=True).stdout.split()
    figures = analyse(events)
    return Result(
        repo=repo_kind, tasks=n, workers=workers, launch_s=launch_s, wall_s=wall,
        phase=state.run.phase.value, reason=state.run.reason,
        done=state.count(TaskStatus.DONE), attempts=sum(len(t.attempts) for t in state.tasks.values()),
        retried=sum(1 for t in state.tasks.values() if len(t.attempts) > 1),
        interrupted=sum(1 for t in state.tasks.values() for a in t.attempts if a.result == "interrupted"),
        files_on_branch=len(listed), events=len(events), load=(load0, os.getloadavg()[0]), **figures,
    )


# ---------------------------------------------------------------- report


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "| " + " | ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([fmt(header), sep, *(fmt(r) for r in rows)])


def report(results: list[Result], workers: int) -> None:
    f0 = lambda v: f"{v * 1000:.0f}"  # noqa: E731
    rows = []
    for r in results:
        rows.append([
            r.repo, f"{r.tasks:,}", f"{r.wall_s:.2f}", f"{r.done / r.wall_s:.1f}",
            f0(med(r.start_merged)), f0(pct(r.start_merged, 0.95)),
            f"{r.wall_per_task_ms:.0f}", f"{r.slot_per_task_ms:.0f}",
            f0(med(r.ready_merged)), f0(pct(r.ready_merged, 0.95)),
            f"{r.load[0]:.1f} / {r.load[1]:.1f}", r.status,
        ])
    print(f"\nPer-task overhead ({workers} workers; ms unless said; 'overhead per task' = attempt start -> merged, median)")
    print(table(rows, ["repo", "tasks", "wall s", "tasks/s", "start->merged median", "start->merged p95",
                       "wall/tasks", "wall*workers/tasks", "ready->merged median", "ready->merged p95", "load before/after", "run"]))
    print("  wall/tasks and tasks/s count merged tasks only (all of them unless a run was capped); "
          "load = the machine's 1-minute load average (other processes on the machine skew the figures)")

    rows = []
    for r in results:
        rows.append([
            r.repo, f"{r.tasks:,}",
            f0(med(r.start_finished)), f0(pct(r.start_finished, 0.95)),
            f0(med(r.finished_verified)), f0(pct(r.finished_verified, 0.95)),
            f0(med(r.verified_merged)), f0(pct(r.verified_merged, 0.95)),
            f0(med(r.after_merge)), f0(pct(r.after_merge, 0.95)),
            f"{r.events:,}", f"{r.launch_s:.2f}",
        ])
    print("\nBreakdown (ms, median / p95 columns; from the state events' `at` stamps, 1 ms resolution)")
    print(table(rows, ["repo", "tasks", "start->finished", "p95", "finished->verified", "p95",
                       "verified->merged", "p95", "merged->next event", "p95", "events", "create_run s"]))
    print("  start->finished: worktree add + agent + leftover commit + wait for the main thread; "
          "finished->verified: syntax gate;\n  verified->merged: merge-tree, commit-tree, ref update, state commits; "
          "merged->next event: notes, worktree removal, branch deletion (approx.)")

    bad = [r for r in results if not r.ok]
    for r in bad:
        why = f" (capped after {r.wall_s / 60:.1f} min by run.max_runtime_seconds)" if r.capped else (f" ({r.reason})" if r.reason else "")
        print(f"\n!!! WARNING: {r.repo} repo, {r.tasks:,} tasks: run {r.phase}{why}"
              + f", {r.done}/{r.tasks} tasks done, {r.files_on_branch} task files on the swarm branch, {r.attempts} attempts !!!")
    for r in results:
        if r.retried or r.interrupted:
            print(f"  note: {r.repo} repo, {r.tasks:,} tasks: {r.attempts} attempts in all, {r.retried} tasks retried, "
                  f"{r.interrupted} attempts interrupted (by the cap's stop)")
        if r.capped and r.done == r.tasks:
            print(f"  note: {r.repo} repo, {r.tasks:,} tasks: every task merged, but the deadline passed before the "
                  "coordinator ended the run, so it ended `shutdown (max_runtime)` rather than `completed`")

    print("\nGoals")
    small = [r for r in results if r.repo == "small"]
    if small:
        worst = max(small, key=lambda r: r.per_task_ms)
        verdict = "MET" if worst.per_task_ms < GOAL_MS and all(r.ok for r in small) else "MISSED"
        sizes = ", ".join(f"{r.tasks:,}: {r.per_task_ms:.0f} ms" for r in small)
        print(f"- [small] overhead per task (attempt start -> merged, median) < {GOAL_MS:.0f} ms at every size: {verdict} ({sizes})")
        walls = ", ".join(f"{r.tasks:,}: {r.wall_per_task_ms:.0f} ms" for r in small)
        print(f"  for reference, wall/tasks on the small repo: {walls}; "
              f"wall*workers/tasks: {', '.join(f'{r.tasks:,}: {r.slot_per_task_ms:.0f} ms' for r in small)}")
    else:
        print(f"- [small] overhead per task < {GOAL_MS:.0f} ms: not measured (no small repo in --repos)")
    for repo in dict.fromkeys(r.repo for r in results):
        by_size = {r.tasks: r for r in results if r.repo == repo}
        if 100 in by_size and 1000 in by_size:
            a, b = by_size[100], by_size[1000]
            ratio = b.per_task_ms / a.per_task_ms if a.per_task_ms else float("inf")
            wratio = b.wall_per_task_ms / a.wall_per_task_ms if a.wall_per_task_ms else float("inf")
            verdict = "MET" if ratio <= GROWTH_LIMIT and b.ok else "MISSED"
            if b.capped:
                verdict = f"NOT MEASURED (the 1,000-task run was capped at {b.done:,} tasks; the figures that follow are of the tasks it merged)"
            elif not b.ok:
                verdict = f"MISSED (the 1,000-task run did not complete: {b.status})"
            print(f"- [{repo}] growth 100 -> 1,000 tasks at most linear (per-task overhead at 1,000 <= {GROWTH_LIMIT}x the one at 100): "
                  f"{verdict} (start->merged median {a.per_task_ms:.0f} -> {b.per_task_ms:.0f} ms, ratio {ratio:.2f}; "
                  f"wall/tasks {a.wall_per_task_ms:.0f} -> {b.wall_per_task_ms:.0f} ms, ratio {wratio:.2f}"
                  + ("" if wratio <= GROWTH_LIMIT else ": the throughput cost grows faster than linear") + ")")
        else:
            print(f"- [{repo}] growth 100 -> 1,000 tasks: not measured (needs both sizes)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="10 and 100 tasks on the small repository (well under a minute)")
    p.add_argument("--sizes", help="comma-separated task counts (default 10,100,1000)")
    p.add_argument("--repos", help="small, 20k or both (default both)")
    p.add_argument("--workers", type=int, default=4, help="scripted workers (default 4)")
    p.add_argument("--dir", default=None, help="where to make the repositories (default /var/tmp, else /work); a real disk, not tmpfs")
    p.add_argument("--cap-minutes", type=float, default=CAP_MINUTES, help="stop a configuration after this long (run.max_runtime_seconds)")
    p.add_argument("--profile", action="store_true", help="cProfile the coordinator's main thread on the 100-task runs")
    p.add_argument("--keep", action="store_true", help="keep the repositories (prints where)")
    args = p.parse_args(argv)

    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([10, 100] if args.quick else [10, 100, 1000])
    repos = [r.strip() for r in args.repos.split(",")] if args.repos else (["small"] if args.quick else ["small", "20k"])
    for r in repos:
        if r not in ("small", "20k"):
            p.error(f"--repos: unknown repository {r!r} (small, 20k)")
    root = Path(args.dir) if args.dir else next((Path(d) for d in ("/var/tmp", "/work") if os.access(d, os.W_OK)), Path(tempfile.gettempdir()))
    base = Path(tempfile.mkdtemp(prefix="gitswarm-run-bench-", dir=root))
    fs, src, mnt = mount_of(base)

    print("Swarm run benchmark (no-op scripted agent)")
    print(f"  machine: {os.cpu_count()} cores, {cpu_model()}, {platform.system()} {platform.release()}; "
          f"bench dir {base}: {fs} ({src} at {mnt}); git {git_version()}; python {platform.python_version()}")
    print(f"  gitswarm {checkout_version()}")
    print(f"  load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; creating a small file in the bench dir takes "
          f"{disk_probe(base):.0f} µs (at the start)")
    if fs in ("tmpfs", "ramfs"):
        print(f"  warning: {base} is {fs}, not a real disk")
    print(f"  sizes {sizes}, repos {repos}, {args.workers} workers; config: run.poll_interval_ms 10, "
          f"run.max_runtime_seconds {int(args.cap_minutes * 60)} (a cap: a configuration stopped by it is reported CAPPED), "
          "gates.tests false, every other knob at its default (state_flush_ms 200, syntax gate on)")

    results: list[Result] = []
    started = time.perf_counter()
    try:
        template = None
        if "20k" in repos:
            t0 = time.perf_counter()
            template = base / "template-20k"
            build_big(template)
            print(f"  built the {BIG_FILES:,}-file template in {time.perf_counter() - t0:.1f} s", flush=True)
        for repo_kind in repos:
            for n in sizes:
                t0 = time.perf_counter()
                repo = base / f"{repo_kind}-{n}"
                if repo_kind == "small":
                    build_small(repo)
                else:
                    assert template is not None
                    copy_template(template, repo)
                prep = time.perf_counter() - t0
                r = run_one(repo_kind, repo, n, args.workers, args.cap_minutes, args.profile and n == max(sizes))
                results.append(r)
                print(f"  [{repo_kind}] {n:>5,} tasks: wall {r.wall_s:.2f} s, start->merged median {r.per_task_ms:.0f} ms, "
                      f"wall/tasks {r.wall_per_task_ms:.0f} ms, {r.done}/{n} done ({r.phase}), load {r.load[0]:.1f}->{r.load[1]:.1f}"
                      f"  [repo {prep:.1f} s, total {time.perf_counter() - t0:.1f} s, elapsed {time.perf_counter() - started:.0f} s]", flush=True)
                if not args.keep:
                    shutil.rmtree(repo, ignore_errors=True)
    finally:
        if args.keep:
            print(f"  kept: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print(f"  total {time.perf_counter() - started:.0f} s; load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    report(results, args.workers)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
