"""Tests for gitswarm.tasksfile: YAML, markdown and attoswarm-manifest tasks files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gitswarm.errors import InputError, Problem
from gitswarm.model import TaskSpec, canonical_json
from gitswarm.tasksfile import (
    NO_TASKS,
    TasksFile,
    load_tasks,
    parse_attoswarm_manifest,
    parse_tasks_markdown,
    parse_tasks_text,
    parse_tasks_yaml,
    read_tasks_file,
)

DATA = Path(__file__).resolve().parent / "data" / "bad_tasks"
RUNS = Path(__file__).resolve().parents[2] / "shared" / "compat" / "attoswarm-runs"

EXAMPLE_YAML = r"""tasks:
  - id: t1
    title: Add subtract
    files: [pkg/sub.py]
    script:
      - write: {path: pkg/sub.py, content: "def sub(a, b):\n    return a - b\n"}
  - {id: t2, title: Use it, deps: [t1], files: [pkg/ops.py], script: [{sleep: 1}, {write: {path: pkg/ops.py, content: "x = 1\n"}}]}
"""


def problems_of(fn: Any, *args: Any) -> list[Problem]:
    with pytest.raises(InputError) as err:
        fn(*args)
    return err.value.problems


def assert_plain(value: Any) -> None:
    """Exactly built-in types all the way down: no ruamel.yaml subclasses."""
    assert type(value) in (dict, list, str, int, float, bool, type(None)), type(value)
    if type(value) is dict:
        for k, v in value.items():
            assert type(k) is str
            assert_plain(v)
    elif type(value) is list:
        for v in value:
            assert_plain(v)


# --------------------------------------------------------------------------- YAML


def test_example_yaml_loads() -> None:
    t1, t2 = parse_tasks_yaml(EXAMPLE_YAML, "tasks.yaml")
    assert t1 == TaskSpec(
        id="t1",
        title="Add subtract",
        files=("pkg/sub.py",),
        extra={"script": [{"write": {"path": "pkg/sub.py", "content": "def sub(a, b):\n    return a - b\n"}}]},
    )
    assert t2.deps == ("t1",) and t2.files == ("pkg/ops.py",) and t2.title == "Use it"
    assert t2.extra == {"script": [{"sleep": 1}, {"write": {"path": "pkg/ops.py", "content": "x = 1\n"}}]}
    for t in (t1, t2):
        assert t.kind == "implement" and t.role is None and t.description == ""
        assert_plain(dict(t.extra))


def test_extras_round_trip_through_state_json() -> None:
    for t in parse_tasks_yaml(EXAMPLE_YAML, "tasks.yaml"):
        blob = canonical_json(t.to_json())
        assert TaskSpec.from_json(json.loads(blob)) == t


def test_yaml_extras_become_json_compatible_plain_data() -> None:
    text = """
tasks:
  - id: t1
    when: 2024-05-01
    at: 2024-05-01T10:00:00Z
    hex: 0x10
    float: 1.50
    flag: &f true
    flag2: *f
    tagged: !custom hello
    shared: &d {retries: 2, on: [push]}
    numbers: {2: two, true: yes, null: ~}
    merged:
      <<: *d
      extra: 1
"""
    (t,) = parse_tasks_yaml(text, "x.yaml")
    extra = dict(t.extra)
    assert_plain(extra)
    assert extra["when"] == "2024-05-01"
    assert extra["at"].startswith("2024-05-01T10:00:00")
    assert extra["hex"] == 16 and extra["float"] == 1.5
    assert extra["flag"] is True and extra["flag2"] is True
    assert extra["tagged"] == "hello"
    assert extra["shared"] == {"retries": 2, "on": ["push"]}
    assert extra["numbers"] == {"2": "two", "true": "yes", "null": None}  # keys as JSON spells them
    assert extra["merged"] == {"extra": 1, "retries": 2, "on": ["push"]}
    canonical_json(t.to_json())  # storable as state


def test_yaml_bare_list_defaults_and_aliases() -> None:
    text = """
- id: a
- id: b
  title: "  B  "
  description: |
    Several
    lines.
  depends_on: [a]
  kind: test
  role: reviewer
- id: 7
  depends: [b, a, b]
"""
    a, b, c = parse_tasks_yaml(text, "x.yaml")
    assert a == TaskSpec(id="a", title="a")
    assert (b.title, b.description, b.deps, b.kind, b.role) == ("B", "Several\nlines.", ("a",), "test", "reviewer")
    assert c.id == "7" and c.deps == ("b", "a")  # integers are ids; repeats count once
    assert parse_tasks_text(text, "x.yaml", "yaml").goal is None


def test_yaml_goal() -> None:
    parsed = parse_tasks_text("goal: |\n  Make it fast.\ntasks:\n  - id: t1\n", "x.yaml", "yaml")
    assert parsed == TasksFile([TaskSpec(id="t1", title="t1")], "Make it fast.", "yaml")


def test_yaml_reports_every_problem_at_once() -> None:
    text = """tasks:
  - id: t1
    deps: [t2, t9]
  - id: t2
    deps: [t1]
  - id: T3
  - id: t2
  - title: x
    deps: t1
    files: [1, '']
    kind: ''
"""
    got = [(p.line, p.col, p.message.split(":")[0]) for p in problems_of(parse_tasks_yaml, text, "x.yaml")]
    assert got == [
        (2, 9, "dependency cycle"),
        (3, 16, "t1 depends on unknown task 't9'"),
        (6, 9, "invalid task id 'T3' (did you mean 't3'?)"),
        (7, 9, "duplicate task id 't2' (first used on line 4)"),
        (8, 5, "task has no 'id'"),
        (9, 11, "'deps' must be a list of task ids, like deps"),
        (10, 13, "each entry of 'files' must be a path, not the number 1"),
        (10, 16, "each entry of 'files' must be a path, not an empty path"),
        (11, 11, "'kind' must not be empty (leave it out for the default, 'implement')"),
    ]
    assert all(p.file == "x.yaml" for p in problems_of(parse_tasks_yaml, text, "x.yaml"))


def test_yaml_deps_given_twice() -> None:
    (p,) = problems_of(parse_tasks_yaml, "- id: a\n- id: b\n  deps: [a]\n  depends_on: [a]\n", "x.yaml")
    assert (p.line, p.col) == (4, 3) and "both 'deps' and 'depends_on'" in p.message


def test_yaml_unsupported_values_are_reported() -> None:
    text = "- id: a\n  blob: !!binary aGVsbG8=\n  s: !!set {x, y}\n  m: {[1, 2]: z}\n"
    msgs = [(p.line, p.message) for p in problems_of(parse_tasks_yaml, text, "x.yaml")]
    assert msgs[0][0] == 2 and "binary" in msgs[0][1]
    assert msgs[1][0] == 3 and "a set" in msgs[1][1]
    assert msgs[2][0] == 4 and "mapping keys must be plain values" in msgs[2][1]


def test_yaml_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 10)}]" for k in range(1, 8)]  # 10**8 values
    text = "tasks:\n  - id: t1\n    " + "\n    ".join(lines) + "\n"
    (p,) = problems_of(parse_tasks_yaml, text, "x.yaml")
    assert "expands to more than" in p.message


@pytest.mark.parametrize(
    ("fmt", "text"),
    [("yaml", "[" * 1000), ("yaml", "- " * 1000 + "x"), ("attoswarm", "[" * 5000 + "]" * 5000)],
)
def test_deep_nesting_is_an_input_error(fmt: str, text: str) -> None:
    (p,) = problems_of(parse_tasks_text, text, "x", fmt)
    assert (p.line, p.col) == (1, 1) and "nests too deeply" in p.message


# --------------------------------------------------------------------------- markdown

MARKDOWN = """# Calculator

Build a small calculator.

## parse: Parse expressions
files: `src/parse.py`, tests/test_parse.py
Kind: implement

Turn text into a tree.

```yaml
## not a task
depends: nothing
```

### Notes
Keep it small.

## eval: Evaluate ##
- Depends: parse
- files: src/eval.py
ROLE: impl

## docs: Write the docs
depends: parse, eval
kind: docs
files: docs/
"""


def test_markdown_tasks_and_goal() -> None:
    parsed = parse_tasks_text(MARKDOWN, "plan.md", "markdown")
    assert parsed.goal == "# Calculator\n\nBuild a small calculator."
    parse, ev, docs = parsed.tasks
    assert parse == TaskSpec(
        id="parse",
        title="Parse expressions",
        description=(
            "Turn text into a tree.\n\n```yaml\n## not a task\ndepends: nothing\n```\n\n### Notes\nKeep it small."
        ),
        files=("src/parse.py", "tests/test_parse.py"),
        kind="implement",
    )
    assert (ev.title, ev.deps, ev.files, ev.role) == ("Evaluate", ("parse",), ("src/eval.py",), "impl")
    assert ev.description == ""
    assert (docs.deps, docs.kind, docs.files) == (("parse", "eval"), "docs", ("docs/",))
    assert parse_tasks_markdown(MARKDOWN, "plan.md") == parsed.tasks


def test_markdown_details() -> None:
    text = "## a\ndepends: none\n\n## b: Title: with colon\ndepends on: a\ndepends: c\n## c\n"
    a, b, c = parse_tasks_markdown(text, "x.md")
    assert a.title == "a" and a.deps == ()
    assert b.title == "Title: with colon" and b.deps == ("a", "c")
    assert parse_tasks_text(text, "x.md", "markdown").goal is None


def test_markdown_positions() -> None:
    text = "## t1: One\nfiles: a.py\n\n##   t2: Two\ndepends:  t1,  `t7`\n"
    (p,) = problems_of(parse_tasks_markdown, text, "x.md")
    assert (p.line, p.col, p.message) == (5, 17, "t2 depends on unknown task 't7'")
    (p,) = problems_of(parse_tasks_markdown, "## t1: x\nfiles: a.py\n\n##   T2: Two\n", "x.md")
    assert (p.line, p.col) == (4, 6) and "invalid task id 'T2'" in p.message


# --------------------------------------------------------------------------- attoswarm manifests


REAL_MANIFESTS = ["sudoku-manifest.json", "swarmtester9-manifest.json", "swarmtester9-history-manifest.json"]


@pytest.mark.parametrize("name", REAL_MANIFESTS)
def test_real_attoswarm_manifests_load(name: str) -> None:
    path = RUNS / name
    assert path.is_file(), f"compatibility corpus missing: {path}"  # fail, never skip
    raw = json.loads(path.read_text())
    goal, tasks = parse_attoswarm_manifest(path.read_text(), str(path))
    assert goal == raw["goal"] and goal
    assert [t.id for t in tasks] == [t["task_id"] for t in raw["tasks"]]
    for spec, src in zip(tasks, raw["tasks"]):
        assert spec.title == src["title"]
        assert spec.description == src["description"].strip()
        assert list(spec.deps) == src["deps"]
        assert list(spec.files) == src["target_files"]
        assert spec.kind == src["task_kind"]
        assert spec.role == src["role_hint"]
        assert spec.extra == {}
    assert load_tasks(path) == tasks
    assert read_tasks_file(path).goal == goal


def test_attoswarm_ids_are_normalised_consistently() -> None:
    manifest = {
        "run_id": "r",
        "goal": "g",
        "tasks": [
            {"task_id": "Task 1", "title": "A", "deps": [], "target_files": [], "task_kind": "design", "role_hint": ""},
            {"task_id": "task-2", "title": "B", "deps": ["Task 1"], "target_files": ["x"], "notes": {"k": [1]}},
        ],
    }
    goal, (a, b) = parse_attoswarm_manifest(json.dumps(manifest, indent=2), "m.json")
    assert (a.id, a.kind, a.role) == ("task-1", "design", None)
    assert (b.deps, b.kind, b.extra) == (("task-1",), "implement", {"notes": {"k": [1]}})
    manifest["tasks"][1]["task_id"] = "TASK-1"
    (p,) = problems_of(parse_attoswarm_manifest, json.dumps(manifest, indent=2), "m.json")
    assert p.message == "task id 'TASK-1' becomes 'task-1', the id of task 'Task 1' (line 6)"


def test_attoswarm_schema_positions() -> None:
    text = '{\n  "goal": 5,\n  "tasks": [\n    {"task_id": "t1", "target_files": "a.py", "task_kind": 3}\n  ]\n}'
    got = [(p.line, p.col, p.message.split(",")[0]) for p in problems_of(parse_attoswarm_manifest, text, "m.json")]
    assert got == [
        (2, 11, "'goal' must be text"),
        (4, 39, "'target_files' must be a list of paths"),
        (4, 60, "'task_kind' must be text"),
    ]


# --------------------------------------------------------------------------- files and extensions


def test_load_tasks_by_extension(tmp_path: Path) -> None:
    (tmp_path / "t.yml").write_text("- id: a\n")
    (tmp_path / "t.MD").write_text("## a: A\n")
    assert load_tasks(tmp_path / "t.yml") == [TaskSpec(id="a", title="a")]
    assert load_tasks(str(tmp_path / "t.MD")) == [TaskSpec(id="a", title="A")]
    (tmp_path / "t.txt").write_text("- id: a\n")
    (p,) = problems_of(load_tasks, tmp_path / "t.txt")
    assert "unknown tasks file type '.txt'" in p.message
    (p,) = problems_of(load_tasks, tmp_path / "missing.yaml")
    assert "cannot read the tasks file" in p.message and p.file.endswith("missing.yaml")


def test_load_tasks_rejects_non_utf8(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_bytes(b"- id: a\n- id: b\xff\n")
    (p,) = problems_of(load_tasks, tmp_path / "t.yaml")
    assert (p.line, p.col) == (2, 8) and "not UTF-8" in p.message
    # Some Windows editors start UTF-8 files with a byte-order mark.
    (tmp_path / "bom.yaml").write_bytes("\ufeff- id: a\n".encode())
    (tmp_path / "bom.md").write_bytes("\ufeff## a: A\n".encode())
    (tmp_path / "bom.json").write_bytes('\ufeff{"goal": "", "tasks": [{"task_id": "a"}]}'.encode())
    for name in ("bom.yaml", "bom.md", "bom.json"):
        assert [t.id for t in load_tasks(tmp_path / name)] == ["a"]


# --------------------------------------------------------------------------- bad files


def _expectation(path: Path) -> tuple[int, int, str]:
    if path.suffix == ".json":
        first = path.with_name(path.name + ".expect").read_text().strip()
    else:
        first = path.read_text().split("\n", 1)[0]
        m = re.search(r"expect-error:\s*(.*?)\s*(?:-->)?\s*$", first)
        assert m, f"{path.name}: first line must be an expect-error comment"
        first = m.group(1)
    m = re.match(r"(\d+):(\d+):\s*(.+)$", first)
    assert m, f"{path.name}: expectation must be LINE:COL: SUBSTRING"
    return int(m.group(1)), int(m.group(2)), m.group(3)


BAD_FILES = sorted(p for p in DATA.iterdir() if not p.name.endswith(".expect"))


def test_bad_files_cover_the_required_cases() -> None:
    assert len(BAD_FILES) >= 10
    names = {p.name for p in BAD_FILES}
    required = [
        "cycle.yaml", "unknown-dep.yaml", "duplicate-id.yaml", "syntax-error.yaml", "deps-not-a-list.yaml",
        "bad-id.yaml", "cycle.md", "unknown-dep.md", "syntax-error.json", "manifest-cycle.json", "empty.json",
    ]  # fmt: skip
    assert not [r for r in required if r not in names]


@pytest.mark.parametrize("path", BAD_FILES, ids=lambda p: p.name)
def test_bad_tasks_file(path: Path) -> None:
    line, col, substring = _expectation(path)
    found = problems_of(load_tasks, path)
    assert any(p.line == line and p.col == col and substring in p.message for p in found), "\n".join(map(str, found))
    assert all(p.file == str(path) for p in found)


# --------------------------------------------------------------------------- fuzzing: only InputError, ever

_SEEDS = {
    "yaml": [EXAMPLE_YAML, "goal: g\ntasks:\n  - id: a\n    deps: [b]\n  - id: b\n    files: [x/]\n"],
    "markdown": [MARKDOWN, "## a: A\ndepends: b\n## b\nfiles: x, y/\n"],
    "attoswarm": [
        json.dumps({"goal": "g", "tasks": [{"task_id": "Task 1", "deps": []}, {"task_id": "t2", "deps": ["Task 1"]}]}),
    ],
}
_ALPHABET = st.sampled_from(
    list("abtT12 -_:,.[]{}()#&*!|>?%@`~'\"\\/\n\t=<") + ["\r\n", "- ", "## ", "id: ", '"task_id": ']
)


@st.composite
def fuzz_text(draw: st.DrawFn, fmt: str) -> str:
    """Random text, or a valid file with a random slice replaced by random text."""
    noise = draw(st.one_of(st.lists(_ALPHABET, max_size=60).map("".join), st.text(max_size=40)))
    if draw(st.booleans()):
        return noise
    seed = draw(st.sampled_from(_SEEDS[fmt]))
    i = draw(st.integers(0, len(seed)))
    j = draw(st.integers(i, min(len(seed), i + 20)))
    return seed[:i] + noise + seed[j:]


def _check_outcome(text: str, fmt: str) -> None:
    try:
        parsed = parse_tasks_text(text, "fuzz", fmt)
    except InputError as e:
        assert e.problems
        for p in e.problems:
            assert isinstance(p.message, str) and p.message and p.file == "fuzz"
            assert p.line >= 1 and p.col >= 1
        return
    ids = {t.id for t in parsed.tasks}
    assert parsed.tasks and len(ids) == len(parsed.tasks)
    for t in parsed.tasks:
        assert set(t.deps) <= ids and t.id not in t.deps
        assert_plain(dict(t.extra))
        canonical_json(t.to_json())


@pytest.mark.parametrize("fmt", ["yaml", "markdown", "attoswarm"])
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_text_only_ever_raises_input_error(fmt: str, data: st.DataObject) -> None:
    _check_outcome(data.draw(fuzz_text(fmt)), fmt)


_JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False)
    | st.sampled_from(["t1", "t2", "T 3", "", "a/b.py", "x"]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["k", "id", "path"]), inner, max_size=2),
    max_leaves=6,
)


@st.composite
def structured_tasks(draw: st.DrawFn, keys: list[str]) -> Any:
    """Task lists that are well-formed JSON/YAML but with random field types and values."""
    task = st.dictionaries(st.sampled_from(keys), _JSONISH, max_size=len(keys))
    return draw(st.one_of(st.lists(task, max_size=4), _JSONISH))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(structured_tasks(["id", "title", "description", "deps", "depends_on", "files", "kind", "role", "script"]))
def test_structured_yaml_only_ever_raises_input_error(tasks: Any) -> None:
    text = json.dumps({"goal": "g", "tasks": tasks})  # JSON is YAML too
    _check_outcome(text, "yaml")
    _check_outcome(json.dumps(tasks), "yaml")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(structured_tasks(["task_id", "title", "description", "deps", "target_files", "task_kind", "role_hint"]))
def test_structured_manifest_only_ever_raises_input_error(tasks: Any) -> None:
    _check_outcome(json.dumps({"run_id": "r", "goal": "g", "tasks": tasks}, indent=1), "attoswarm")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=80), st.sampled_from([".yaml", ".md", ".json"]))
def test_fuzzed_bytes_via_load_tasks(tmp_path_factory: pytest.TempPathFactory, blob: bytes, ext: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / f"tasks{ext}"
    path.write_bytes(blob)
    try:
        load_tasks(path)
    except InputError as e:
        assert e.problems and all(p.message for p in e.problems)


def test_no_tasks_message_for_every_format() -> None:
    for fmt in ("yaml", "markdown", "attoswarm"):
        (p,) = problems_of(parse_tasks_text, "  \n", "f", fmt)
        assert p.message.startswith(NO_TASKS) and (p.line, p.col) == (1, 1)
