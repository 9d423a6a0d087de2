"""The task graph: validation, ordering and scheduling helpers.

Pure functions over plain mappings, no I/O, so the scheduler and the tasks-file loader
can share them and tests can drive them without a repository.

A graph is `Deps`: task id -> the ids it depends on (edges point from a task to its
prerequisites). The order of the mapping is "the order tasks were given" and breaks every
tie, so results never depend on hash order.

Conventions shared by the functions below:

- A dependency on an id that is not a key of the mapping is an *unknown* dependency.
  `problems`/`validate` report it; the ordering functions ignore it (it adds no edge), and
  `ready` never treats it as done.
- Repeated entries in one task's dependency list count once.
- The ordering functions (`topological_order`, `waves`, `ready`, `critical_path`) need an
  acyclic graph and raise `InputError` naming the cycle otherwise; `blocked` and
  `find_cycle` accept any graph.

Everything is O(V + E) (topological_order adds a log V factor for its stable tie-break),
so 10,000-task plans validate in milliseconds.
"""

from __future__ import annotations

import heapq
import re
from collections import deque
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from gitswarm.errors import InputError, Problem
from gitswarm.model import TaskStatus

Deps = Mapping[str, Sequence[str]]

# More cycle messages than this only bury the first ones; the rest are summarised.
MAX_CYCLES_REPORTED = 10
# How many ids a summary line names before it says "...".
_SUMMARY_NAMES = 10


# --------------------------------------------------------------------------- helpers


def _natural_key(task_id: str) -> tuple:
    """Sort key under which t2 < t10 and task-9 < task-10, as a person would expect."""
    parts = re.split(r"(\d+)", task_id)
    # Each part is a tuple whose first element says which kind it is, so int and str
    # never meet in a comparison; the raw id last keeps the key total ("t01" vs "t1").
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts), task_id


def _edges(deps: Deps) -> dict[str, list[str]]:
    """Known, de-duplicated dependencies per task, in the order they were given."""
    known = deps.__contains__
    out: dict[str, list[str]] = {}
    for task, ds in deps.items():
        # Runs on every call below, so the common short lists skip the de-duplication.
        if len(ds) < 2:
            out[task] = list(ds) if all(map(known, ds)) else []
        else:
            out[task] = list(dict.fromkeys(filter(known, ds)))
    return out


def _dependents(edges: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Reverse edges: id -> tasks that depend on it (in the order tasks were given)."""
    rev: dict[str, list[str]] = {t: [] for t in edges}
    for task, ds in edges.items():
        for d in ds:
            rev[d].append(task)
    return rev


def _peel(edges: Mapping[str, Sequence[str]]) -> tuple[list[str], set[str]]:
    """Kahn's algorithm without tie-breaking: (an order of the acyclic part, the rest).

    "The rest" is every task on a cycle or downstream of one; when it is empty the graph
    is acyclic. Cheap enough to run before the costlier cycle search.
    """
    remaining = {t: len(ds) for t, ds in edges.items()}
    rev = _dependents(edges)
    order = [t for t, n in remaining.items() if n == 0]
    for t in order:  # the list grows while it is walked: it is the queue
        for user in rev[t]:
            remaining[user] -= 1
            if not remaining[user]:
                order.append(user)
    stuck = {t for t, n in remaining.items() if n > 0} if len(order) < len(remaining) else set()
    return order, stuck


def _strongly_connected(nodes: Sequence[str], edges: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Tarjan's SCC algorithm, iterative so that long chains cannot hit the recursion limit.

    Only `nodes` and the edges among them are considered; roots are tried in the order
    of `nodes`, so the result does not depend on set iteration order.
    """
    allowed = set(nodes)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        # Each frame: (node, iterator over its successors).
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(edges[root]))]
        while work:
            node, succs = work[-1]
            advanced = False
            for nxt in succs:
                if nxt not in allowed:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(edges[nxt])))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.append(member)
                    if member == node:
                        break
                components.append(comp)
    return components


def _shortest_cycle_through(start: str, members: set[str], edges: Mapping[str, Sequence[str]]) -> list[str]:
    """BFS for the shortest cycle start -> ... -> start inside one strongly connected set.

    Self-edges are ignored (reported separately as "depends on itself"). Shortest cycles
    are the easiest for a person to read and fix.
    """
    parent: dict[str, str] = {}
    queue = deque([start])
    seen = {start}
    while queue:
        node = queue.popleft()
        for nxt in edges[node]:
            if nxt not in members or nxt == node:
                continue
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                path.reverse()
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                parent[nxt] = node
                queue.append(nxt)
    return []  # unreachable for a real strongly connected set of 2+ members


def _rotate_smallest_first(cycle: list[str]) -> list[str]:
    """[t4, t2, t4] -> [t2, t4, t2]: one spelling per cycle, whichever node it was found from."""
    ring = cycle[:-1]
    i = min(range(len(ring)), key=lambda k: _natural_key(ring[k]))
    ring = ring[i:] + ring[:i]
    return ring + [ring[0]]


def _cycles(edges: Mapping[str, Sequence[str]], limit: int) -> tuple[list[list[str]], list[str]]:
    """Up to `limit` cycles that together name every task caught in a cycle, if they fit.

    Returns (cycles, tasks in cycles that no reported cycle names). Self-edges are not
    cycles here. Cost: one O(V+E) peel and SCC pass, plus one BFS per reported cycle.
    """
    _, stuck = _peel(edges)
    if not stuck:
        return [], []
    comps = [c for c in _strongly_connected([t for t in edges if t in stuck], edges) if len(c) > 1]
    comps.sort(key=lambda c: min(_natural_key(t) for t in c))
    cycles: list[list[str]] = []
    unnamed: list[str] = []
    for comp in comps:
        members = set(comp)
        uncovered = sorted(comp, key=_natural_key)
        covered: set[str] = set()
        for start in uncovered:
            if start in covered:
                continue
            if len(cycles) >= limit:
                unnamed.append(start)
                continue
            # Always a new cycle: it runs through `start`, which no earlier one named.
            cycle = _rotate_smallest_first(_shortest_cycle_through(start, members, edges))
            covered.update(cycle)
            cycles.append(cycle)
    return cycles, unnamed


def _cycle_text(cycle: Sequence[str]) -> str:
    return " -> ".join(cycle)


def _find_cycle(edges: Mapping[str, Sequence[str]]) -> list[str] | None:
    """See find_cycle; over already-cleaned edges."""
    _, stuck = _peel(edges)
    if not stuck:
        return None
    on_cycle: dict[str, set[str]] = {}  # task -> its strongly connected set
    for comp in _strongly_connected([t for t in edges if t in stuck], edges):
        members = set(comp)
        for t in comp:
            if len(comp) > 1 or t in edges[t]:
                on_cycle[t] = members
    start = min(on_cycle, key=_natural_key)
    if start in edges[start]:
        return [start, start]
    return _rotate_smallest_first(_shortest_cycle_through(start, on_cycle[start], edges))


def _require_acyclic(edges: Mapping[str, Sequence[str]]) -> list[str]:
    """The (untie-broken) Kahn order, or InputError naming a cycle."""
    order, stuck = _peel(edges)
    if stuck:
        cycle = _find_cycle(edges) or []
        if len(cycle) == 2:
            raise InputError(f"{cycle[0]} depends on itself")
        raise InputError(f"dependency cycle: {_cycle_text(cycle)}")
    return order


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class DepProblem:
    """A problem in the graph, tied to the task (and dependency entry) it is about.

    `dep_index` is the position in the task's own dependency list for unknown and self
    dependencies, so a file loader can point at that very entry; None otherwise.
    """

    task: str
    message: str
    dep_index: int | None = None


def find_cycle(deps: Deps) -> list[str] | None:
    """One dependency cycle as [a, b, ..., a], or None if the graph is acyclic.

    Deterministic: among all tasks on a cycle the smallest id (natural order, t2 < t10)
    is chosen, the shortest cycle through it returned, starting and ending with it. A
    self-dependency counts: ["t1", "t1"].
    """
    return _find_cycle(_edges(deps))


def located_problems(deps: Deps) -> list[DepProblem]:
    """Every problem of the graph, each tied to a task, in a stable order.

    Order: per task as given, its self- and unknown dependencies; then the cycles,
    smallest first. Every task caught in a cycle is named by some reported cycle, up to
    MAX_CYCLES_REPORTED cycles; any left over are listed in one summary problem.
    """
    found: list[DepProblem] = []
    known = deps.__contains__
    for task, ds in deps.items():
        if not ds or (task not in ds and all(map(known, ds))):
            continue  # the common case, checked without a Python-level loop
        reported: set[str] = set()
        for i, d in enumerate(ds):
            if d in reported:
                continue  # a repeated bad entry is one mistake
            reported.add(d)
            if d == task:
                found.append(DepProblem(task, f"{task} depends on itself", i))
            elif d not in deps:
                found.append(DepProblem(task, f"{task} depends on unknown task {d!r}", i))
    cycles, unnamed = _cycles(_edges(deps), MAX_CYCLES_REPORTED)
    for cycle in cycles:
        found.append(DepProblem(cycle[0], f"dependency cycle: {_cycle_text(cycle)}"))
    if unnamed:
        names = ", ".join(unnamed[:_SUMMARY_NAMES]) + (", ..." if len(unnamed) > _SUMMARY_NAMES else "")
        found.append(DepProblem(unnamed[0], f"{len(unnamed)} more tasks are in dependency cycles: {names}"))
    return found


def problems(deps: Deps) -> list[str]:
    """Human-readable problems: unknown deps, self-deps and cycles (`t2 -> t4 -> t2`)."""
    return [p.message for p in located_problems(deps)]


def validate(deps: Deps) -> None:
    """Raise InputError listing every problem of the graph; return if there is none."""
    found = problems(deps)
    if found:
        raise InputError([Problem(m) for m in found])


# --------------------------------------------------------------------------- ordering


def topological_order(deps: Deps) -> list[str]:
    """Every task after its dependencies; among tasks free to go, the earliest given first.

    So a list that is already in dependency order comes back unchanged. Raises
    InputError if the graph has a cycle.
    """
    edges = _edges(deps)
    _require_acyclic(edges)
    position = {t: i for i, t in enumerate(edges)}
    remaining = {t: len(ds) for t, ds in edges.items()}
    rev = _dependents(edges)
    heap = [position[t] for t, n in remaining.items() if n == 0]
    heapq.heapify(heap)
    ids = list(edges)
    order: list[str] = []
    while heap:
        t = ids[heapq.heappop(heap)]
        order.append(t)
        for user in rev[t]:
            remaining[user] -= 1
            if remaining[user] == 0:
                heapq.heappush(heap, position[user])
    return order


def _levels(edges: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Length of the longest dependency chain below each task (0 for no deps)."""
    level: dict[str, int] = {}
    get = level.__getitem__
    for t in _require_acyclic(edges):
        ds = edges[t]
        level[t] = 1 + max(map(get, ds)) if ds else 0
    return level


def waves(deps: Deps) -> list[list[str]]:
    """Wave k holds the tasks whose longest dependency chain has length k.

    Every dependency of a wave-k task is in an earlier wave, so a wave can run at once
    when the one before it is done. Within a wave tasks keep the order they were given.
    """
    edges = _edges(deps)
    level = _levels(edges)
    out: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for t in edges:
        out[level[t]].append(t)
    return out


def critical_path(deps: Deps, weights: Mapping[str, float] | None = None) -> list[str]:
    """The heaviest dependency chain, first prerequisite first (weight 1 per task by default).

    For display and to start long chains early. Ties go to the task given first.
    """
    edges = _edges(deps)
    order = _require_acyclic(edges)
    position = {t: i for i, t in enumerate(edges)}
    weight: Callable[[str], float] = (lambda t: 1.0) if weights is None else (lambda t: float(weights.get(t, 1.0)))
    best: dict[str, float] = {}
    via: dict[str, str | None] = {}
    for t in order:
        prev = None
        for d in edges[t]:
            if prev is None or (best[d], -position[d]) > (best[prev], -position[prev]):
                prev = d
        via[t] = prev
        best[t] = weight(t) + (best[prev] if prev is not None else 0.0)
    if not best:
        return []
    end: str | None = max(edges, key=lambda t: (best[t], -position[t]))
    chain: list[str] = []
    while end is not None:
        chain.append(end)
        end = via[end]
    chain.reverse()
    return chain


# --------------------------------------------------------------------------- scheduling


def _status(status: Mapping[str, TaskStatus], task: str) -> TaskStatus:
    """A task the status map does not mention has not started."""
    return status.get(task, TaskStatus.PENDING)


def ready(deps: Deps, status: Mapping[str, TaskStatus]) -> list[str]:
    """PENDING or READY tasks whose every dependency is DONE, in topological order.

    A SKIPPED dependency does not unblock: skipping a task skips its dependents (see
    `blocked`). An unknown dependency is never done.
    """
    waiting = (TaskStatus.PENDING, TaskStatus.READY)
    # Filter first, in one pass: most tasks are not waiting or not unblocked, and the
    # order (earlier waves first) is only computed when there is a choice to make.
    found = [t for t in deps if _status(status, t) in waiting and all(status.get(d) == TaskStatus.DONE for d in deps[t])]
    if len(found) < 2:
        return found
    position = {t: i for i, t in enumerate(topological_order(deps))}
    return sorted(found, key=position.__getitem__)


def blocked(deps: Deps, status: Mapping[str, TaskStatus]) -> dict[str, str]:
    """Tasks that can never run because a dependency, directly or not, failed or was skipped.

    Only tasks not yet terminal and not active are considered. The whole cascade is
    resolved in one call, and each reason names a *direct* dependency, so the chain can be
    followed task by task: with t1 failed, t2 -> t1 and t3 -> t2, the result is
    {t2: "dependency t1 failed", t3: "dependency t2 skipped"} (t2 will be skipped).
    When several direct dependencies are bad, a failed one is named before a skipped one,
    then the first in the task's own list. Works on cyclic graphs too.
    """
    edges = _edges(deps)
    rev = _dependents(edges)

    def can_block(t: str) -> bool:
        s = _status(status, t)
        return not s.terminal and not s.active

    bad = (TaskStatus.FAILED, TaskStatus.SKIPPED)
    doomed: set[str] = set()
    queue = deque(t for t in edges if _status(status, t) in bad)
    while queue:
        for user in rev[queue.popleft()]:
            if user not in doomed and can_block(user):
                doomed.add(user)
                queue.append(user)

    out: dict[str, str] = {}
    for t in edges:  # the order tasks were given
        if t not in doomed:
            continue
        failed = [d for d in edges[t] if _status(status, d) == TaskStatus.FAILED]
        if failed:
            out[t] = f"dependency {failed[0]} failed"
        else:
            skipped = next(d for d in edges[t] if d in doomed or _status(status, d) == TaskStatus.SKIPPED)
            out[t] = f"dependency {skipped} skipped"
    return out


# --------------------------------------------------------------------------- file manifests

_GLOB_CHARS = frozenset("*?[")


def _normalise_path(path: str) -> tuple[str, bool]:
    """("src/x.py", False) from "./src//x.py"; the flag says the entry ended with "/"."""
    as_dir = path.endswith("/")
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts), as_dir


def _is_glob(path: str) -> bool:
    return any(c in _GLOB_CHARS for c in path)


def _literal_prefix(path: str) -> str:
    """The part before the first wildcard: everything a glob's matches must start with."""
    for i, c in enumerate(path):
        if c in _GLOB_CHARS:
            return path[:i]
    return path


def _maybe_directory(path: str, as_dir: bool) -> bool:
    """Could this entry name a directory (and so cover every path under it)?

    Written with a trailing "/", or a last component without an extension ("src",
    ".github", "src/*"). "src/data.json" is taken to be a file; without this guess a glob
    like "src/*.py" would overlap every file in src/ (fnmatch's "*" also matches "/").
    """
    if as_dir:
        return True
    last = path.rsplit("/", 1)[-1]
    return "." not in last[1:]


# A glob is a list of tokens: ("lit", c), ("any", None) for "?", ("star", None) for "*",
# or ("set", (negated, [(lo, hi), ...])) for a bracket expression, as fnmatch reads them.
_Token = tuple


def _tokens(pattern: str) -> list[_Token]:
    out: list[_Token] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if not (out and out[-1][0] == "star"):  # "**" is the same as "*" in fnmatch
                out.append(("star", None))
        elif c == "?":
            out.append(("any", None))
        elif c == "[":
            close = _bracket_end(pattern, i)
            if close < 0:
                out.append(("lit", "["))  # fnmatch treats an unclosed "[" literally
            else:
                out.append(("set", _parse_set(pattern[i + 1 : close])))
                i = close
        else:
            out.append(("lit", c))
        i += 1
    return out


def _bracket_end(pattern: str, start: int) -> int:
    """Index of the "]" closing the bracket expression at `start`, or -1 (as fnmatch)."""
    j = start + 1
    if j < len(pattern) and pattern[j] == "!":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    close = pattern.find("]", j)
    return close


def _parse_set(body: str) -> tuple[bool, list[tuple[str, str]]]:
    negated = body.startswith("!")
    if negated:
        body = body[1:]
    ranges: list[tuple[str, str]] = []
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            ranges.append((body[i], body[i + 2]))
            i += 3
        else:
            ranges.append((body[i], body[i]))
            i += 1
    return negated, ranges


def _in_set(c: str, spec: tuple[bool, list[tuple[str, str]]]) -> bool:
    negated, ranges = spec
    return any(lo <= c <= hi for lo, hi in ranges) != negated


def _chars_compatible(a: _Token, b: _Token) -> bool:
    """Can one character satisfy both single-character tokens? Errs towards yes."""
    if a[0] == "any" or b[0] == "any":
        return True
    if a[0] == "lit" and b[0] == "lit":
        return a[1] == b[1]
    if a[0] == "lit":
        return _in_set(a[1], b[1])
    if b[0] == "lit":
        return _in_set(b[1], a[1])
    (neg_a, ranges_a), (neg_b, ranges_b) = a[1], b[1]
    if neg_a or neg_b:
        return True  # a negated set leaves almost every character; assume they meet
    return any(lo1 <= hi2 and lo2 <= hi1 for lo1, hi1 in ranges_a for lo2, hi2 in ranges_b)


def _globs_intersect(p: str, q: str) -> bool:
    """Is there a path that fnmatch-matches both patterns (plain paths are patterns too)?

    Reachability in the product of the two patterns' automata: O(len(p) * len(q)).
    """
    a, b = _tokens(p), _tokens(q)
    goal = (len(a), len(b))
    seen = {(0, 0)}
    todo = [(0, 0)]
    while todo:
        i, j = todo.pop()
        if (i, j) == goal:
            return True
        ta = a[i] if i < len(a) else None
        tb = b[j] if j < len(b) else None
        nexts = []
        if ta and ta[0] == "star":
            nexts.append((i + 1, j))  # the star matches nothing more
        if tb and tb[0] == "star":
            nexts.append((i, j + 1))
        if ta and tb:
            if ta[0] == "star" and tb[0] != "star":
                nexts.append((i, j + 1))  # the star eats the char b's token matches
            elif tb[0] == "star" and ta[0] != "star":
                nexts.append((i + 1, j))
            elif ta[0] != "star" and _chars_compatible(ta, tb):
                nexts.append((i + 1, j + 1))
        for state in nexts:
            if state not in seen:
                seen.add(state)
                todo.append(state)
    return False


def _escape(path: str) -> str:
    """A plain path as an fnmatch pattern that matches only itself."""
    return "".join(f"[{c}]" if c in _GLOB_CHARS else c for c in path)


def _entries_overlap(raw_a: str, raw_b: str) -> bool:
    a, a_dir = _normalise_path(raw_a)
    b, b_dir = _normalise_path(raw_b)
    if not a or not b:
        return True  # "", "." or "/" name the whole repository
    if not _is_glob(a) and not _is_glob(b):
        return a == b or b.startswith(a + "/") or a.startswith(b + "/")
    pa = a if _is_glob(a) else _escape(a)
    pb = b if _is_glob(b) else _escape(b)
    if _globs_intersect(pa, pb):
        return True
    return _covers(a, a_dir, pa, b, pb) or _covers(b, b_dir, pb, a, pa)


def _covers(outer: str, outer_dir: bool, outer_pat: str, inner: str, inner_pat: str) -> bool:
    """Does `outer`, read as a directory, contain something `inner` matches?"""
    # If inner's fixed part already lies under outer, outer must be a directory.
    names_inside = _literal_prefix(inner).startswith(outer + "/") if not _is_glob(outer) else False
    if not (names_inside or _maybe_directory(outer, outer_dir)):
        return False
    return _globs_intersect(outer_pat + "/*", inner_pat)


def files_overlap(a: Sequence[str], b: Sequence[str]) -> bool:
    """Could two tasks with these file manifests touch the same file?

    Two entries overlap if they are equal, if one is a directory prefix of the other
    ("src/" or "src" against "src/x.py"), or if an fnmatch glob in one can match what the
    other names ("src/*.py" against "src/x.py", or against "src/*" or "src/"). Two globs
    overlap when some path matches both. As in fnmatch, "*" also matches "/".

    An EMPTY manifest overlaps everything, another empty manifest included: a task that
    did not say which files it touches may touch any of them, and running it beside
    another task risks the very merge conflicts this check exists to prevent.

    Errs towards "overlap" where it cannot be sure (negated bracket sets, an extension-less
    name that may be a directory): a false overlap only costs parallelism.
    """
    if not a or not b:
        return True
    return any(_entries_overlap(x, y) for x in a for y in b)


def pick_runnable(
    candidates: Sequence[str],
    files: Mapping[str, Sequence[str]],
    running: Sequence[str],
    capacity: int,
) -> list[str]:
    """Greedily choose up to `capacity` candidates, in candidate order, to start now.

    A candidate is taken if its manifest overlaps neither a running task's nor an
    already-chosen one's. A task missing from `files` has an empty manifest and so
    overlaps everything. Every manifest overlaps itself, so a candidate that is already
    running, or repeated, is never chosen twice.
    """
    picked: list[str] = []
    busy = [files.get(t, ()) for t in running]
    for t in candidates:
        if len(picked) >= capacity:
            break
        mine = files.get(t, ())
        if any(files_overlap(mine, other) for other in busy):
            continue
        picked.append(t)
        busy.append(mine)
    return picked
