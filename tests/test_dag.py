"""Tests for gitswarm.dag: validation, ordering, scheduling and file-manifest overlap."""

from __future__ import annotations

import random
import time
from fnmatch import fnmatchcase
from typing import Callable

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gitswarm import dag
from gitswarm.errors import InputError
from gitswarm.model import TaskStatus as S

# --------------------------------------------------------------------------- find_cycle / problems


def test_find_cycle_none_for_acyclic_graph() -> None:
    assert dag.find_cycle({"t1": [], "t2": ["t1"], "t3": ["t1", "t2"]}) is None
    assert dag.find_cycle({}) is None


def test_find_cycle_starts_with_smallest_id() -> None:
    deps = {"t1": [], "t4": ["t2"], "t2": ["t4"], "t3": ["t2"]}
    assert dag.find_cycle(deps) == ["t2", "t4", "t2"]


def test_find_cycle_uses_natural_order_and_is_shortest() -> None:
    # t10 -> t9 -> t10 and a longer ring through t9; natural order puts t9 before t10.
    deps = {"t10": ["t9"], "t9": ["t10", "t11"], "t11": ["t12"], "t12": ["t9"]}
    assert dag.find_cycle(deps) == ["t9", "t10", "t9"]


def test_find_cycle_self_dependency() -> None:
    assert dag.find_cycle({"a": ["a"], "b": []}) == ["a", "a"]


def test_problems_messages() -> None:
    deps = {"t1": ["t1"], "t2": ["t4"], "t3": ["t9"], "t4": ["t2"]}
    assert dag.problems(deps) == [
        "t1 depends on itself",
        "t3 depends on unknown task 't9'",
        "dependency cycle: t2 -> t4 -> t2",
    ]


def test_problems_report_every_cycle_member() -> None:
    # Two separate cycles, and one strongly connected set with two cycles through a hub.
    deps = {
        "a1": ["a2"], "a2": ["a1"],
        "b1": ["b2"], "b2": ["b3"], "b3": ["b1"],
        "h": ["x", "y"], "x": ["h"], "y": ["h"],
        "free": ["a1"],
    }  # fmt: skip
    msgs = dag.problems(deps)
    assert msgs[0] == "dependency cycle: a1 -> a2 -> a1"
    assert msgs[1] == "dependency cycle: b1 -> b2 -> b3 -> b1"
    # Each cycle is spelt from its smallest id, whichever task it was found from.
    assert msgs[2:] == ["dependency cycle: h -> x -> h", "dependency cycle: h -> y -> h"]
    named = {t for m in msgs for t in m.removeprefix("dependency cycle: ").split(" -> ")}
    assert "free" not in named  # downstream of a cycle, but not on one


def test_problems_cap_cycle_messages() -> None:
    # A hub with 50 spokes: 50 two-task cycles; only MAX_CYCLES_REPORTED are spelt out.
    deps: dict[str, list[str]] = {"hub": [f"s{i}" for i in range(50)]}
    deps.update({f"s{i}": ["hub"] for i in range(50)})
    msgs = dag.problems(deps)
    assert len(msgs) == dag.MAX_CYCLES_REPORTED + 1
    assert msgs[-1].startswith(f"{50 - dag.MAX_CYCLES_REPORTED} more tasks are in dependency cycles: s10, s11")


def test_repeated_bad_dependency_is_one_problem() -> None:
    assert dag.problems({"t1": ["t9", "t1", "t9", "t1"]}) == ["t1 depends on unknown task 't9'", "t1 depends on itself"]


def test_located_problems_point_at_dependency_entry() -> None:
    found = dag.located_problems({"t1": ["t0", "t1", "t9"], "t0": []})
    assert [(p.task, p.dep_index) for p in found] == [("t1", 1), ("t1", 2)]


def test_validate() -> None:
    dag.validate({"a": [], "b": ["a"]})
    with pytest.raises(InputError) as err:
        dag.validate({"a": ["b"], "b": ["a"], "c": ["zz"]})
    assert [p.message for p in err.value.problems] == [
        "c depends on unknown task 'zz'",
        "dependency cycle: a -> b -> a",
    ]


# --------------------------------------------------------------------------- ordering


def test_topological_order_keeps_given_order_when_possible() -> None:
    deps = {"a": [], "b": ["a"], "c": [], "d": ["b", "c"]}
    assert dag.topological_order(deps) == ["a", "b", "c", "d"]


def test_topological_order_ties_by_given_order() -> None:
    deps = {"z": ["y"], "y": [], "x": [], "w": ["x"]}
    # y and x are free; y was given first. z becomes free before x is taken.
    assert dag.topological_order(deps) == ["y", "z", "x", "w"]


def test_ordering_ignores_unknown_and_repeated_deps() -> None:
    deps = {"b": ["a", "a", "ghost"], "a": []}
    assert dag.topological_order(deps) == ["a", "b"]
    assert dag.waves(deps) == [["a"], ["b"]]


def test_ordering_functions_reject_cycles() -> None:
    deps = {"t1": [], "t2": ["t4"], "t4": ["t2"]}
    for fn in (dag.topological_order, dag.waves, dag.critical_path):
        with pytest.raises(InputError, match=r"dependency cycle: t2 -> t4 -> t2"):
            fn(deps)
    with pytest.raises(InputError, match="t1 depends on itself"):
        dag.topological_order({"t1": ["t1"]})


def test_waves_longest_chain() -> None:
    deps = {"a": [], "b": ["a"], "c": [], "d": ["a", "b"], "e": ["c"]}
    assert dag.waves(deps) == [["a", "c"], ["b", "e"], ["d"]]
    assert dag.waves({}) == []


def test_critical_path() -> None:
    deps = {"a": [], "b": ["a"], "c": ["b"], "x": [], "y": ["x"]}
    assert dag.critical_path(deps) == ["a", "b", "c"]
    assert dag.critical_path(deps, weights={"x": 10}) == ["x", "y"]
    assert dag.critical_path({}) == []
    # Ties go to the task given first.
    assert dag.critical_path({"p": [], "q": []}) == ["p"]


# --------------------------------------------------------------------------- ready / blocked


def test_ready() -> None:
    deps = {"t1": [], "t2": ["t1"], "t3": ["t1", "t2"], "t4": [], "t5": ["t4"], "t6": ["ghost"]}
    status = {"t1": S.DONE, "t2": S.READY, "t3": S.PENDING, "t4": S.RUNNING, "t5": S.PENDING}
    assert dag.ready(deps, status) == ["t2"]  # t6's unknown dep is never done
    status.update({"t2": S.DONE, "t4": S.DONE})
    assert dag.ready(deps, status) == ["t3", "t5"]


def test_ready_in_topological_order_and_missing_status_is_pending() -> None:
    deps = {"late": ["early"], "early": [], "other": []}
    assert dag.ready(deps, {}) == ["early", "other"]
    assert dag.ready(deps, {"early": S.DONE}) == ["late", "other"]


def test_skipped_dependency_does_not_unblock() -> None:
    deps = {"t1": [], "t2": ["t1"]}
    assert dag.ready(deps, {"t1": S.SKIPPED}) == []
    assert dag.blocked(deps, {"t1": S.SKIPPED}) == {"t2": "dependency t1 skipped"}


def test_blocked_cascades_naming_direct_dependency() -> None:
    deps = {"t1": [], "t2": ["t1"], "t3": ["t2"], "t4": ["t3"], "t5": []}
    assert dag.blocked(deps, {"t1": S.FAILED}) == {
        "t2": "dependency t1 failed",
        "t3": "dependency t2 skipped",
        "t4": "dependency t3 skipped",
    }


def test_blocked_prefers_failed_dependency_and_skips_terminal_and_active() -> None:
    deps = {"t1": [], "t2": ["t1"], "t3": ["t2", "t1"], "t4": ["t1"], "t5": ["t1"], "t6": ["t4"]}
    status = {"t1": S.FAILED, "t4": S.RUNNING, "t5": S.DONE}
    assert dag.blocked(deps, status) == {"t2": "dependency t1 failed", "t3": "dependency t1 failed"}


def test_blocked_works_on_cycles() -> None:
    deps = {"f": [], "a": ["f", "b"], "b": ["a"]}
    assert dag.blocked(deps, {"f": S.FAILED}) == {"a": "dependency f failed", "b": "dependency a skipped"}


# --------------------------------------------------------------------------- file manifests


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("src/x.py", "src/x.py", True),
        ("./src//x.py", "src/x.py", True),
        ("src/x.py", "src/y.py", False),
        ("src/", "src/x.py", True),  # directory prefix
        ("src", "src/x.py", True),
        ("src", "src/deep/x.py", True),
        ("src", "src2/x.py", False),  # a prefix only by characters, not by directory
        ("pkg.d", "pkg.d/x.py", True),
        ("src/*.py", "src/x.py", True),  # glob
        ("src/*.py", "src/x.txt", False),
        ("src/*.py", "tests/x.py", False),
        ("src/*.py", "src/data.json", False),  # has an extension: a file, not a directory
        ("src/*.py", "src/sub", True),  # may be a directory holding .py files
        ("src/*.py", "src/", True),
        ("src/*.py", "src/*.txt", False),
        ("src/*.py", "*.py", True),
        ("src/*", "tests/*", False),
        ("src/?", "src/a/x.py", True),  # the glob names a directory containing the file
        ("pkg.d/*.py", "pkg.d", True),  # the glob names things inside pkg.d: a directory
        ("a/[bc].py", "a/c.py", True),
        ("a/[bc].py", "a/d.py", False),
        ("a/[!b].py", "a/c.py", True),
        (".", "anything/at/all", True),  # the repository root
    ],
)
def test_files_overlap_rules(a: str, b: str, expected: bool) -> None:
    assert dag.files_overlap([a], [b]) is expected
    assert dag.files_overlap([b], [a]) is expected


def test_empty_manifest_overlaps_everything() -> None:
    assert dag.files_overlap([], ["src/x.py"])
    assert dag.files_overlap(["src/x.py"], [])
    assert dag.files_overlap([], [])


def test_files_overlap_any_pair() -> None:
    assert dag.files_overlap(["a.py", "b.py"], ["c.py", "b.py"])
    assert not dag.files_overlap(["a.py", "b.py"], ["c.py", "d/"])


def test_pick_runnable() -> None:
    files = {"a": ["src/a.py"], "b": ["src/a.py"], "c": ["src/c.py"], "d": ["docs/"], "e": ["docs/x.md"]}
    assert dag.pick_runnable(["a", "b", "c", "d", "e"], files, running=[], capacity=10) == ["a", "c", "d"]
    assert dag.pick_runnable(["a", "b", "c", "d", "e"], files, running=["c"], capacity=10) == ["a", "d"]
    assert dag.pick_runnable(["a", "b", "c", "d", "e"], files, running=[], capacity=2) == ["a", "c"]
    assert dag.pick_runnable(["a", "c"], files, running=[], capacity=0) == []


def test_pick_runnable_unknown_manifest_runs_alone() -> None:
    files = {"a": ["src/a.py"], "b": ["src/b.py"]}
    assert dag.pick_runnable(["x", "a", "b"], files, running=[], capacity=5) == ["x"]
    assert dag.pick_runnable(["a", "x", "b"], files, running=[], capacity=5) == ["a", "b"]
    assert dag.pick_runnable(["a", "b"], files, running=["x"], capacity=5) == []


def test_pick_runnable_skips_running_and_repeated() -> None:
    files = {"a": ["a.py"], "b": ["b.py"]}
    assert dag.pick_runnable(["a", "a", "b"], files, running=["b"], capacity=5) == ["a"]


# --------------------------------------------------------------------------- properties


@st.composite
def dags(draw: st.DrawFn, max_tasks: int = 30) -> dict[str, list[str]]:
    """Random acyclic graphs: task k only depends on tasks created before it, but the
    mapping is given in a shuffled order so "given order" is not already topological."""
    n = draw(st.integers(0, max_tasks))
    ids = [f"t{k}" for k in range(n)]
    deps = {ids[k]: draw(st.lists(st.sampled_from(ids[:k]), max_size=4)) if k else [] for k in range(n)}
    order = draw(st.permutations(ids))
    return {t: deps[t] for t in order}


@given(dags())
def test_random_dags_validate(deps: dict[str, list[str]]) -> None:
    dag.validate(deps)
    assert dag.find_cycle(deps) is None


@given(dags())
def test_waves_partition_and_respect_deps(deps: dict[str, list[str]]) -> None:
    ws = dag.waves(deps)
    flat = [t for w in ws for t in w]
    assert sorted(flat) == sorted(deps)
    level = {t: k for k, w in enumerate(ws) for t in w}
    for t, ds in deps.items():
        assert all(level[d] < level[t] for d in ds)
        # Longest chain: a task in wave k > 0 has a dependency in wave k - 1.
        if level[t]:
            assert any(level[d] == level[t] - 1 for d in ds)
    assert all(ws)  # no empty wave


@given(dags())
def test_topological_order_respects_deps(deps: dict[str, list[str]]) -> None:
    order = dag.topological_order(deps)
    assert sorted(order) == sorted(deps)
    pos = {t: i for i, t in enumerate(order)}
    assert all(pos[d] < pos[t] for t, ds in deps.items() for d in ds)
    # Idempotent: a list already in that order comes back unchanged (stability).
    assert dag.topological_order({t: deps[t] for t in order}) == order


@given(dags(), st.data())
def test_ready_only_returns_tasks_whose_deps_are_done(deps: dict[str, list[str]], data: st.DataObject) -> None:
    status = {t: data.draw(st.sampled_from(list(S)), label=t) for t in deps}
    got = dag.ready(deps, status)
    expected = {
        t for t, ds in deps.items() if status[t] in (S.PENDING, S.READY) and all(status[d] == S.DONE for d in ds)
    }
    assert set(got) == expected
    assert len(got) == len(set(got))
    pos = {t: i for i, t in enumerate(dag.topological_order(deps))}
    assert [pos[t] for t in got] == sorted(pos[t] for t in got)


@given(dags(), st.data())
def test_blocked_reasons_name_a_bad_direct_dependency(deps: dict[str, list[str]], data: st.DataObject) -> None:
    status = {t: data.draw(st.sampled_from(list(S)), label=t) for t in deps}
    out = dag.blocked(deps, status)
    for t, reason in out.items():
        assert not status[t].terminal and not status[t].active
        dep, _, what = reason.removeprefix("dependency ").partition(" ")
        assert dep in deps[t]
        if what == "failed":
            assert status[dep] == S.FAILED
        else:
            assert what == "skipped" and (status[dep] == S.SKIPPED or dep in out)
    # Completeness: every waiting task with a failed/skipped/blocked dep is reported.
    for t, ds in deps.items():
        if not status[t].terminal and not status[t].active:
            if any(status[d] in (S.FAILED, S.SKIPPED) or d in out for d in ds):
                assert t in out


@given(dags(max_tasks=25), st.data())
def test_back_edge_gives_real_cycle(deps: dict[str, list[str]], data: st.DataObject) -> None:
    # Add an edge from an earlier task to a later one that (transitively) depends on it.
    ids = sorted(deps, key=lambda t: int(t[1:]))
    assume(len(ids) >= 1)
    hi = data.draw(st.integers(0, len(ids) - 1))
    lo = data.draw(st.integers(0, hi))
    cyclic = {t: list(ds) for t, ds in deps.items()}
    cyclic[ids[hi]].append(ids[lo])  # hi -> lo
    cyclic[ids[lo]].append(ids[hi])  # lo -> hi: now hi -> lo -> hi (or a self-loop)
    cycle = dag.find_cycle(cyclic)
    assert cycle is not None
    assert cycle[0] == cycle[-1] and len(cycle) >= 2
    assert all(b in cyclic[a] for a, b in zip(cycle, cycle[1:]))
    assert len(set(cycle[:-1])) == len(cycle) - 1  # a simple cycle
    with pytest.raises(InputError):
        dag.validate(cyclic)


@given(
    st.dictionaries(st.integers(0, 30), st.lists(st.integers(0, 30), max_size=4), max_size=30),
)
def test_problems_name_every_task_on_a_cycle(raw: dict[int, list[int]]) -> None:
    deps = {f"t{k}": [f"t{d}" for d in ds] for k, ds in raw.items()}
    msgs = dag.problems(deps)
    named = {t for m in msgs if m.startswith("dependency cycle: ") for t in m[18:].split(" -> ")}
    # A task is on a cycle of length >= 2 iff it reaches itself through other tasks.
    for t in deps:
        on_cycle = any(_reaches(deps, d, t) for d in deps[t] if d != t and d in deps)
        assert (t in named) == on_cycle, (t, msgs)
    assert (dag.find_cycle(deps) is None) == (not named and not any(t in ds for t, ds in deps.items()))


def _reaches(deps: dict[str, list[str]], start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        n = todo.pop()
        if n == goal:
            return True
        for d in deps.get(n, []):
            if d in deps and d not in seen:
                seen.add(d)
                todo.append(d)
    return False


_PATHS = [
    "a.py", "b.py", "src/", "src/x.py", "src/y.py", "src/*.py", "src/sub/z.py", "docs/*", "docs/r.md", "*.md", "t?",
]  # fmt: skip


@given(
    st.dictionaries(
        st.sampled_from([f"c{k}" for k in range(12)]),
        st.lists(st.sampled_from(_PATHS), max_size=3),
        min_size=0,
    ),
    st.integers(0, 6),
    st.data(),
)
def test_pick_runnable_never_overlaps_nor_exceeds_capacity(
    files: dict[str, list[str]], capacity: int, data: st.DataObject
) -> None:
    names = list(files)
    running = data.draw(st.lists(st.sampled_from(names), max_size=3, unique=True) if names else st.just([]))
    candidates = data.draw(st.permutations(names))
    picked = dag.pick_runnable(candidates, files, running, capacity)
    assert len(picked) <= max(capacity, 0)
    assert not set(picked) & set(running)
    together = picked + running
    for i, x in enumerate(together):
        for y in together[i + 1 :]:
            if x in picked or y in picked:
                assert not dag.files_overlap(files[x], files[y]), (x, y)


_GLOB_ALPHABET = st.sampled_from(list("ab/.*?") + ["[ab]", "[!a]"])


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_GLOB_ALPHABET, max_size=6).map("".join), st.lists(_GLOB_ALPHABET, max_size=6).map("".join))
def test_glob_overlap_has_no_false_negatives(p: str, q: str) -> None:
    # Any path a repository can hold that matches both patterns proves they overlap.
    # Git paths are relative and normalised: no leading or trailing "/", no empty, "."
    # or ".." segment ("/aa" is not a file of a repository; a manifest's "/aa" means "aa").
    universe = ["".join(cs) for n in range(0, 5) for cs in _product("ab/.", n)]
    paths = [s for s in universe if s and all(seg not in ("", ".", "..") for seg in s.split("/"))]
    if any(fnmatchcase(s, p) and fnmatchcase(s, q) for s in paths):
        assert dag.files_overlap([p], [q])


def _product(alphabet: str, n: int) -> list[tuple[str, ...]]:
    import itertools

    return list(itertools.product(alphabet, repeat=n))


# --------------------------------------------------------------------------- performance


def test_ten_thousand_tasks_validate_and_waves_quickly(capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(42)
    n = 10_000
    ids = [f"task-{k}" for k in range(n)]
    deps = {ids[k]: rng.sample(ids[max(0, k - 200) : k], min(k, rng.randint(0, 3))) for k in range(n)}
    edges = sum(len(d) for d in deps.values())

    def timed(fn: Callable[[], object]) -> float:
        # Best of three: the figure should describe the code, not a busy neighbour process.
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        return best

    core = timed(lambda: (dag.validate(deps), dag.waves(deps)))
    rest = timed(lambda: (dag.topological_order(deps), dag.ready(deps, {}), dag.critical_path(deps)))
    with capsys.disabled():
        print(
            f"\n[dag] {n} tasks / {edges} deps: validate + waves {core * 1000:.1f} ms; "
            f"topological_order + ready + critical_path {rest * 1000:.1f} ms"
        )
    assert len(dag.topological_order(deps)) == n
    assert core < 2.0


def test_ten_thousand_task_cycle_is_found_quickly() -> None:
    n = 10_000
    deps = {f"t{k}": [f"t{(k + 1) % n}"] for k in range(n)}  # one ring through every task
    start = time.perf_counter()
    msgs = dag.problems(deps)
    assert time.perf_counter() - start < 2.0
    assert len(msgs) == 1 and msgs[0].startswith("dependency cycle: t0 -> t1 -> t2")
