"""Tasks files: the user's own plan, given with `--tasks-file` instead of a planner.

Three formats, chosen by extension (docs/tasks-files.md is the user's guide):

- YAML (.yaml/.yml): `{goal?, tasks: [...]}` or a bare list of tasks. Keys a task does
  not define for gitswarm (a backend's `script:`, say) are kept in `TaskSpec.extra` as
  plain Python data.
- Markdown (.md/.markdown): one `## <id>: <title>` section per task, with `depends:`,
  `files:`, `kind:` and `role:` lines; the rest of the section is the description.
- attoswarm `swarm.manifest.json` (.json): a planned attoswarm run, imported as is.

Every problem found is reported with the file, line and column to fix, all of them in
one `InputError`; no input, however broken, raises anything else.

Each parser turns its text into the same shape (a list of task mappings) plus a way to
find the position of any value in it, so the field checks and the graph checks are
written once.
"""

from __future__ import annotations

import bisect
import datetime
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ruamel.yaml import YAML
from ruamel.yaml.comments import TaggedScalar
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scalarbool import ScalarBoolean

from gitswarm import dag
from gitswarm.errors import InputError, Problem
from gitswarm.model import TaskSpec, bad_character, is_valid_id

if TYPE_CHECKING:
    from gitswarm.config import RoleConfig

# A path into the parsed data: ("tasks", 3, "deps", 0).
DataPath = tuple[Any, ...]
# (path, key?) -> 1-based (line, col). key=True asks for the position of a mapping key
# rather than of its value. Never raises: falls back to the nearest known ancestor.
Locate = Callable[[DataPath, bool], tuple[int, int]]

NO_TASKS = "the tasks file holds no tasks"
ID_RULES = (
    "task ids use lowercase letters, digits, '.', '_' and '-', start with a letter or digit, "
    "are at most 100 characters long, and neither contain '..' nor end with '.' or '.lock' "
    "(they become parts of git ref names)"
)
# Values a YAML document may expand to through aliases before it is refused: a few
# nested aliases can otherwise stand for billions of values ("billion laughs").
MAX_EXPANDED_VALUES = 1_000_000

FORMATS = {".yaml": "yaml", ".yml": "yaml", ".md": "markdown", ".markdown": "markdown", ".json": "attoswarm"}


@dataclass(frozen=True)
class TasksFile:
    """What a tasks file holds: the tasks and, if the file gives one, the run's goal."""

    tasks: list[TaskSpec]
    goal: str | None = None
    format: str = ""
    # Where it was read, not what it holds (so not compared): task id -> (line, col) of
    # its kind (or of the task when it gives none), so problems found against a config
    # (check_roles) are placed in the file too.
    filename: str = field(default="", compare=False)
    kind_at: Mapping[str, tuple[int, int]] = field(default_factory=dict, compare=False)


def check_roles(tasks_file: TasksFile, roles: Sequence[RoleConfig]) -> None:
    """Refuse (InputError, at the task's kind) a task no role of the config would take:
    today's alternative is a run that fails the task once it is ready."""
    problems: list[Problem] = []
    kinds = "; ".join(f"{r.role_id}: {r.kinds_taken()}" for r in roles) or "there are no roles"
    for spec in tasks_file.tasks:
        if spec.role and any(r.role_id == spec.role for r in roles):
            continue  # a task naming a role goes to it, whatever its kind (schedule.role_for)
        if any(r.takes_kind(spec.kind) for r in roles):
            continue
        line, col = tasks_file.kind_at.get(spec.id, (1, 1))
        message = (f"task {spec.id!r}: no role of the config takes tasks of kind {spec.kind!r} "
                   f"({kinds}; or name a role with 'role:')")
        problems.append(Problem(message, tasks_file.filename, line, col))
    if problems:
        raise InputError(problems)


# --------------------------------------------------------------------------- entry points


def load_tasks(path: str | os.PathLike) -> list[TaskSpec]:
    """The tasks of a tasks file; its format is chosen by the file's extension."""
    return read_tasks_file(path).tasks


def read_tasks_file(path: str | os.PathLike) -> TasksFile:
    """Like `load_tasks`, but with the goal the file gives, if any."""
    name = os.fspath(path)
    suffix = Path(name).suffix.lower()
    fmt = FORMATS.get(suffix)
    if fmt is None:
        raise InputError(
            Problem(f"unknown tasks file type {suffix or '(no extension)'!r}: use .yaml, .yml, .md or .json", name)
        )
    try:
        data = Path(name).read_bytes()
    except OSError as e:
        raise InputError(Problem(f"cannot read the tasks file: {e.strerror or e}", name)) from None
    return parse_tasks_text(_decode(data, name), name, fmt)


def parse_tasks_text(text: str, filename: str, fmt: str) -> TasksFile:
    """Parse text in a named format: "yaml", "markdown" or "attoswarm"."""
    parsers = {"yaml": _parse_yaml, "markdown": _parse_markdown, "attoswarm": _parse_attoswarm}
    if fmt not in parsers:
        raise ValueError(f"unknown tasks file format {fmt!r}")  # a caller's bug, not input
    try:
        return parsers[fmt](text, filename)
    except RecursionError:
        # Thousands of nested brackets exhaust the stack of the YAML/JSON parsers (and of
        # the conversion to plain data); that is a property of the input, so report it.
        raise InputError(Problem("the file nests too deeply to read", filename, 1, 1)) from None


def parse_tasks_yaml(text: str, filename: str = "<tasks.yaml>") -> list[TaskSpec]:
    return parse_tasks_text(text, filename, "yaml").tasks


def parse_tasks_markdown(text: str, filename: str = "<tasks.md>") -> list[TaskSpec]:
    return parse_tasks_text(text, filename, "markdown").tasks


def parse_attoswarm_manifest(text: str, filename: str = "<swarm.manifest.json>") -> tuple[str, list[TaskSpec]]:
    """(goal, tasks) of an attoswarm swarm.manifest.json."""
    parsed = parse_tasks_text(text, filename, "attoswarm")
    return parsed.goal or "", parsed.tasks


def _decode(data: bytes, filename: str) -> str:
    try:
        return data.decode("utf-8-sig")  # tolerate the BOM some Windows editors write
    except UnicodeDecodeError as e:
        before = data[: e.start]
        line = before.count(b"\n") + 1
        col = e.start - (before.rfind(b"\n") + 1) + 1
        message = f"the file is not UTF-8 text (byte 0x{data[e.start]:02x})"
        raise InputError(Problem(message, filename, line, col)) from None


# --------------------------------------------------------------------------- problems and positions


class _Report:
    """Collects problems, each placed with the format's locator."""

    def __init__(self, filename: str, locate: Locate):
        self.filename = filename
        self.locate = locate
        self.problems: list[Problem] = []

    def at(self, path: DataPath, message: str, key: bool = False) -> None:
        line, col = self.locate(path, key)
        self.problems.append(Problem(message, self.filename, line, col))

    def at_position(self, line: int, col: int, message: str) -> None:
        self.problems.append(Problem(message, self.filename, line, col))

    def raise_if_any(self) -> None:
        if self.problems:
            # Top to bottom, as the user reads the file; stable for problems on one spot.
            raise InputError(sorted(self.problems, key=lambda p: (p.line, p.col)))


def _table_locator(values: Mapping[DataPath, tuple[int, int]]) -> Locate:
    """Locator over recorded value positions (markdown, JSON): the nearest recorded ancestor.

    These formats report no problem about a key itself, so keys are not recorded and
    `key` is ignored.
    """

    def locate(path: DataPath, key: bool = False) -> tuple[int, int]:
        for n in range(len(path), -1, -1):
            if path[:n] in values:
                return values[path[:n]]
        return (1, 1)

    return locate


def _line_col(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column (in characters) of a character offset."""
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - line_start + 1


# --------------------------------------------------------------------------- task records → TaskSpec


@dataclass(frozen=True)
class _Schema:
    """How one format spells the task fields."""

    id_key: str
    deps_keys: tuple[str, ...]
    files_key: str
    kind_key: str
    role_key: str
    # attoswarm planners write ids freely; gitswarm ids go into ref names. Only imports
    # are normalised: in the user's own files a bad id is reported, not silently changed.
    normalise_ids: bool = False

    @property
    def known(self) -> frozenset[str]:
        fields = (self.id_key, "title", "description", self.files_key, self.kind_key, self.role_key, "allow_empty")
        return frozenset({*fields, *self.deps_keys})


GITSWARM_SCHEMA = _Schema("id", ("deps", "depends_on", "depends"), "files", "kind", "role")
ATTOSWARM_SCHEMA = _Schema("task_id", ("deps",), "target_files", "task_kind", "role_hint", normalise_ids=True)


@dataclass
class _Entry:
    """One task as read, with what is needed to place graph problems in the file."""

    path: DataPath
    id: str | None
    raw_id: str | None
    deps: list[str] = field(default_factory=list)
    dep_paths: list[DataPath] = field(default_factory=list)  # position of each kept dep
    spec: TaskSpec | None = None


def _normalise_attoswarm_id(raw: str) -> str:
    """Lowercase, whitespace -> "-"; ids that are already valid are left alone."""
    if is_valid_id(raw):
        return raw
    return re.sub(r"\s+", "-", raw.strip().lower())


def _id_value(value: Any, path: DataPath, what: str, report: _Report) -> str | None:
    """A task id from the data: text, or an integer (YAML reads `id: 1` as one)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    report.at(path, f"{what} must be a task id (text), not {_describe(value)}")
    return None


def _describe(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _check_id(task_id: str, path: DataPath, report: _Report) -> None:
    if is_valid_id(task_id):
        return
    hint = ""
    guess = re.sub(r"\s+", "-", task_id.strip().lower())
    if guess != task_id and is_valid_id(guess):
        hint = f" (did you mean {guess!r}?)"
    report.at(path, f"invalid task id {task_id!r}{hint}: {ID_RULES}")


def _read_id(
    item: Mapping[str, Any], path: DataPath, schema: _Schema, report: _Report
) -> tuple[str | None, str | None]:
    """(id as used, id as written) of a task, or Nones after reporting why not."""
    value = item.get(schema.id_key)
    if value is None:
        report.at(path, f"task has no {schema.id_key!r}: every task needs one")
        return None, None
    raw = _id_value(value, path + (schema.id_key,), schema.id_key, report)
    if raw is None:
        return None, None
    task_id = _normalise_attoswarm_id(raw) if schema.normalise_ids else raw
    _check_id(task_id, path + (schema.id_key,), report)
    return task_id, raw


def _read_text(item: Mapping[str, Any], key: str, path: DataPath, report: _Report) -> str | None:
    """An optional text field; None when absent or empty (`title:` with nothing after)."""
    value = item.get(key)
    if value is None or isinstance(value, str):
        return value
    report.at(path + (key,), f"{key!r} must be text, not {_describe(value)} (put it in quotes)")
    return None


def _read_words(item: Mapping[str, Any], key: str, path: DataPath, report: _Report, *, multiline: bool) -> str | None:
    """A text field shown in terminals, prompts and commit messages: no control character
    (titles none at all; descriptions and goals may hold new lines and tabs)."""
    value = _read_text(item, key, path, report)
    if value is not None:
        bad = bad_character(value, multiline=multiline)
        if bad is not None:
            allowed = "new lines and tabs are the only ones allowed" if multiline else "a title holds none"
            report.at(path + (key,), f"{key!r} holds {bad}: remove it ({allowed})")
    return value


def _check_script(item: Mapping[str, Any], path: DataPath, report: _Report) -> None:
    """The scripted backend's `script`, checked as the backend will (an unknown step is a
    typo in the file, not an attempt to fail at run time)."""
    if "script" not in item:
        return
    from gitswarm.backends.scripted import ScriptError, parse_step

    script = item["script"]
    if not isinstance(script, list):
        report.at(path + ("script",), f"'script' must be a list of steps, not {_describe(script)}")
        return
    for i, raw in enumerate(script):
        try:
            parse_step(i + 1, raw)
        except ScriptError as exc:
            report.at(path + ("script", i), str(exc))


def _read_deps(
    item: Mapping[str, Any], path: DataPath, schema: _Schema, report: _Report
) -> tuple[list[str], list[DataPath]]:
    """Dependency ids (de-duplicated, first spelling kept) and the position of each."""
    present = [k for k in schema.deps_keys if k in item]
    if len(present) > 1:
        message = f"give dependencies once: both {present[0]!r} and {present[1]!r} are set"
        report.at(path + (present[1],), message, key=True)
    if not present or item[present[0]] is None:
        return [], []
    key = present[0]
    value = item[key]
    if not isinstance(value, list):
        report.at(path + (key,), f"{key!r} must be a list of task ids, like {key}: [t1, t2], not {_describe(value)}")
        return [], []
    deps: list[str] = []
    paths: list[DataPath] = []
    for i, raw in enumerate(value):
        dep = _id_value(raw, path + (key, i), f"each entry of {key!r}", report)
        if dep is None:
            continue
        dep = _normalise_attoswarm_id(dep) if schema.normalise_ids else dep
        if dep not in deps:
            deps.append(dep)
            paths.append(path + (key, i))
    return deps, paths


def _read_files(item: Mapping[str, Any], path: DataPath, key: str, report: _Report) -> list[str]:
    value = item.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        example = f"{key}: [src/app.py, docs/]"
        report.at(path + (key,), f"{key!r} must be a list of paths, like {example}, not {_describe(value)}")
        return []
    files: list[str] = []
    for i, entry in enumerate(value):
        if not isinstance(entry, str) or not entry.strip():
            what = "an empty path" if isinstance(entry, str) else _describe(entry)
            report.at(path + (key, i), f"each entry of {key!r} must be a path, not {what}")
            continue
        files.append(entry)
    return files


def _read_kind(item: Mapping[str, Any], path: DataPath, key: str, report: _Report) -> str:
    kind = _read_text(item, key, path, report)
    if kind is not None and not kind.strip():
        report.at(path + (key,), f"{key!r} must not be empty (leave it out for the default, 'implement')")
    return kind.strip() if kind and kind.strip() else "implement"


def _read_allow_empty(item: Mapping[str, Any], path: DataPath, report: _Report) -> bool:
    """`allow_empty: true`: the task may finish without changing a file."""
    value = item.get("allow_empty")
    if value is None or isinstance(value, bool):
        return bool(value)
    report.at(path + ("allow_empty",), f"'allow_empty' must be true or false, not {_describe(value)}")
    return False


def _read_entry(item: Any, path: DataPath, schema: _Schema, report: _Report) -> _Entry | None:
    """One task mapping -> an _Entry (with a spec if the id is usable), reporting problems."""
    if not isinstance(item, dict):
        report.at(path, f"a task must be a mapping with at least {schema.id_key!r}, not {_describe(item)}")
        return None
    task_id, raw_id = _read_id(item, path, schema, report)
    title = _read_words(item, "title", path, report, multiline=False)
    description = _read_words(item, "description", path, report, multiline=True)
    _check_script(item, path, report)
    deps, dep_paths = _read_deps(item, path, schema, report)
    files = _read_files(item, path, schema.files_key, report)
    kind = _read_kind(item, path, schema.kind_key, report)
    role = _read_text(item, schema.role_key, path, report)
    allow_empty = _read_allow_empty(item, path, report)
    extra = {k: v for k, v in item.items() if k not in schema.known}
    entry = _Entry(path, task_id, raw_id, deps, dep_paths)
    if task_id is not None:
        entry.spec = TaskSpec(
            id=task_id,
            title=title.strip() if title and title.strip() else task_id,
            description=(description or "").strip(),
            deps=tuple(deps),
            files=tuple(files),
            kind=kind,
            role=role.strip() if role and role.strip() else None,
            extra=extra,
            allow_empty=allow_empty,
        )
    return entry


def _check_graph(entries: list[_Entry], schema: _Schema, report: _Report) -> None:
    """Duplicate ids, then unknown deps, self-deps and cycles, each placed in the file."""
    first: dict[str, _Entry] = {}
    for e in entries:
        if e.id is None:
            continue
        if e.id not in first:
            first[e.id] = e
            continue
        earlier = first[e.id]
        line, _ = report.locate(earlier.path + (schema.id_key,), False)
        if earlier.raw_id != e.raw_id:
            msg = f"task id {e.raw_id!r} becomes {e.id!r}, the id of task {earlier.raw_id!r} (line {line})"
        else:
            msg = f"duplicate task id {e.id!r} (first used on line {line})"
        report.at(e.path + (schema.id_key,), msg)
    graph = {task_id: e.deps for task_id, e in first.items()}
    for p in dag.located_problems(graph):
        e = first[p.task]
        where = e.dep_paths[p.dep_index] if p.dep_index is not None else e.path + (schema.id_key,)
        report.at(where, p.message)


def _build(items: Sequence[Any], base: DataPath, schema: _Schema, report: _Report) -> list[TaskSpec]:
    entries = [e for i, item in enumerate(items) if (e := _read_entry(item, base + (i,), schema, report)) is not None]
    _check_graph(entries, schema, report)
    report.raise_if_any()
    return [e.spec for e in entries if e.spec is not None]


def _kind_positions(items: Sequence[Any], base: DataPath, schema: _Schema, report: _Report,
                    tasks: Sequence[TaskSpec]) -> dict[str, tuple[int, int]]:
    """Where each task's kind is written (the locator falls back to the task itself)."""
    at: dict[str, tuple[int, int]] = {}
    for i, spec in enumerate(tasks):
        if i < len(items):
            at[spec.id] = report.locate(base + (i, schema.kind_key), False)
    return at


# --------------------------------------------------------------------------- YAML


def _parse_yaml(text: str, filename: str) -> TasksFile:
    root = _load_yaml(text, filename)
    report = _Report(filename, _yaml_locator(root))
    data = _Plain(report).convert(root)
    goal: str | None = None
    items: list[Any] = []
    base: DataPath = ()
    if isinstance(data, list):
        items = data
    elif isinstance(data, dict):
        items, goal = _yaml_top_mapping(data, report)
        base = ("tasks",)
    elif data is not None:
        report.at((), "a tasks file is a mapping with a 'tasks' list (and optionally 'goal'), or a list of tasks")
    if not items:
        if not report.problems:
            report.at(base, NO_TASKS)
        report.raise_if_any()
    tasks = _build(items, base, GITSWARM_SCHEMA, report)  # raises with every problem so far
    kind_at = _kind_positions(items, base, GITSWARM_SCHEMA, report, tasks)
    return TasksFile(tasks, goal.strip() if goal and goal.strip() else None, "yaml", filename, kind_at)


def _yaml_top_mapping(data: dict[str, Any], report: _Report) -> tuple[list[Any], str | None]:
    for key in data:
        if key not in ("tasks", "goal"):
            # Strict here, unlike task keys: a misspelt "taks:" must not load as no tasks.
            report.at((key,), f"unknown key {key!r}: a tasks file has 'tasks' and optionally 'goal'", key=True)
    goal = _read_words(data, "goal", (), report, multiline=True)
    if "tasks" not in data:
        report.at((), "the tasks file has no 'tasks' list")
        return [], goal
    tasks = data["tasks"]
    if tasks is None:
        return [], goal
    if not isinstance(tasks, list):
        report.at(("tasks",), f"'tasks' must be a list of tasks, not {_describe(tasks)}")
        return [], goal
    return tasks, goal


def _load_yaml(text: str, filename: str) -> Any:
    """The round-trip document (it remembers where every value was), or InputError."""
    yaml = YAML(typ="rt")
    try:
        with warnings.catch_warnings():
            # e.g. ReusedAnchorWarning: legal YAML; a warning must not become an error
            # under `-W error`.
            warnings.simplefilter("ignore")
            return yaml.load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        message = e.problem or e.context or "invalid YAML"
        if e.context and e.problem:
            # The context often marks where the real mistake is (an unclosed "[").
            cm = e.context_mark
            started = f" started on line {cm.line + 1}" if cm and mark and cm.line != mark.line else ""
            message += f" ({e.context}{started})"
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise InputError(Problem(f"YAML syntax error: {message}", filename, line, col)) from None
    except YAMLError as e:  # ReaderError (forbidden characters) carries a character offset
        offset = getattr(e, "position", None)
        line, col = _line_col(text, offset) if isinstance(offset, int) else (1, 1)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(Problem(f"YAML error: {first}", filename, line, col)) from None
    except RecursionError:
        raise
    except Exception as e:  # noqa: BLE001
        # ruamel.yaml has raised plain Python errors (TypeError, AttributeError, ...) on
        # some malformed documents; to the user that is still "this is not valid YAML".
        raise InputError(Problem(f"YAML error: {type(e).__name__}: {e}", filename, 1, 1)) from None


def _yaml_locator(root: Any) -> Locate:
    """Positions from ruamel.yaml's line/column records, walking the path from the root."""

    def lc_of(node: Any, step: Any, key: bool) -> tuple[int, int] | None:
        lc = getattr(node, "lc", None)
        try:
            if isinstance(node, list):
                line, col = lc.item(step)
            elif key:
                line, col = lc.key(step)
            else:
                line, col = lc.value(step)
        except Exception:  # noqa: BLE001 - merged (<<) keys and converted keys have no record
            return None
        return line + 1, col + 1

    def locate(path: DataPath, key: bool = False) -> tuple[int, int]:
        node = root
        lc = getattr(root, "lc", None)
        best = (lc.line + 1, lc.col + 1) if lc is not None and lc.line is not None else (1, 1)
        for n, step in enumerate(path):
            found = lc_of(node, step, key and n == len(path) - 1)
            if found is None:
                break
            best = found
            try:
                node = node[step]
            except Exception:  # noqa: BLE001
                break
        return best

    return locate


class _Plain:
    """ruamel.yaml's round-trip objects -> plain JSON-compatible Python data.

    Extras go into the run state as JSON, so: mapping keys become strings (as JSON
    would make them), dates become ISO strings, tags are dropped; binary values, sets and
    mappings used as keys are reported. Aliases share one converted object, and a
    document that expands past MAX_EXPANDED_VALUES is refused.
    """

    def __init__(self, report: _Report):
        self.report = report
        self.done: dict[int, Any] = {}
        self.size: dict[int, int] = {}
        self.active: set[int] = set()

    def convert(self, node: Any) -> Any:
        value = self._value(node, ())
        if isinstance(node, (dict, list)) and self.size.get(id(node), 0) > MAX_EXPANDED_VALUES:
            self.report.at((), f"the file expands to more than {MAX_EXPANDED_VALUES} values through YAML aliases")
        return value

    def _value(self, node: Any, path: DataPath) -> Any:
        if node is None or isinstance(node, (bool, ScalarBoolean)):
            return None if node is None else bool(node)  # ScalarBoolean (anchored) is an int
        if isinstance(node, str):
            return str(node)
        if isinstance(node, int):
            return int(node)
        if isinstance(node, float):
            return float(node)
        if isinstance(node, datetime.datetime):
            return datetime.datetime.isoformat(node)
        if isinstance(node, datetime.date):
            return node.isoformat()
        if isinstance(node, TaggedScalar):
            return self._value(node.value, path)
        if isinstance(node, (dict, list)):
            return self._container(node, path)
        self.report.at(path, f"unsupported YAML value ({_yaml_kind(node)}): use text, numbers, lists and mappings")
        return None

    def _container(self, node: dict | list, path: DataPath) -> Any:
        key = id(node)
        if key in self.done:
            return self.done[key]
        if key in self.active:
            self.report.at(path, "a YAML alias refers to a value that contains it")
            return None
        self.active.add(key)
        if isinstance(node, dict):
            out: Any = {}
            children = []
            for k, v in node.items():
                name = self._key(k, path)
                if name is not None:
                    out[name] = self._value(v, path + (name,))
                    children.append(v)
        else:
            out = [self._value(v, path + (i,)) for i, v in enumerate(node)]
            children = list(node)
        self.active.discard(key)
        self.done[key] = out
        self.size[key] = 1 + sum(self.size.get(id(c), 1) for c in children)
        return out

    def _key(self, k: Any, path: DataPath) -> str | None:
        if isinstance(k, str):
            return str(k)
        if k is None or isinstance(k, (bool, int, float)):
            return json.dumps(self._value(k, path))  # 1 -> "1", true -> "true", as JSON does
        if isinstance(k, datetime.date):
            return self._value(k, path)
        self.report.at(path, f"mapping keys must be plain values, not {_yaml_kind(k)}")
        return None


def _yaml_kind(node: Any) -> str:
    if isinstance(node, (bytes, bytearray)):
        return "binary"
    if isinstance(node, (set, frozenset)) or type(node).__name__ == "CommentedSet":
        return "a set"
    if isinstance(node, tuple):
        return "a list or mapping"
    return type(node).__name__


# --------------------------------------------------------------------------- Markdown

_HEADING = re.compile(r"^ {0,3}##(?:[ \t]+(.*?))?[ \t]*$")
_CLOSING_HASHES = re.compile(r"[ \t]+#+$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_FIELD = re.compile(
    r"^[ \t]*(?:[-*+][ \t]+)?(depends[ _]on|depends|deps|files|kind|role|allow[ _]empty)[ \t]*:[ \t]*(.*?)[ \t]*$",
    re.IGNORECASE,
)
_NO_DEPS = {"none", "-", "—", "n/a"}


@dataclass
class _MdSection:
    line: int
    id_col: int
    header: str  # the heading text after "## "
    body: list[tuple[int, str, bool]] = field(default_factory=list)  # (line number, text, is code)


def _parse_markdown(text: str, filename: str) -> TasksFile:
    preamble, sections = _md_sections(text)
    values: dict[DataPath, tuple[int, int]] = {}
    report = _Report(filename, _table_locator(values))
    items: list[dict[str, Any]] = []
    for section in sections:
        item = _md_task(section, ("tasks", len(items)), values, report)
        if item is not None:
            items.append(item)
    if not sections:
        hint = " (each task is a '## <id>: <title>' section)" if text.strip() else ""
        report.at_position(1, 1, NO_TASKS + hint)
        report.raise_if_any()
    goal = "\n".join(preamble).strip()
    for line_no, line in enumerate(preamble, start=1):
        bad = bad_character(line, multiline=True)
        if bad is not None:
            report.at_position(line_no, 1, f"the goal (the text before the first task) holds {bad}: remove it")
    tasks = _build(items, ("tasks",), GITSWARM_SCHEMA, report)  # raises with every problem so far
    kind_at = _kind_positions(items, ("tasks",), GITSWARM_SCHEMA, report, tasks)
    return TasksFile(tasks, goal or None, "markdown", filename, kind_at)


def _md_sections(text: str) -> tuple[list[str], list[_MdSection]]:
    """Split into the text before the first task heading and one section per heading.

    Headings inside fenced code blocks do not count: they are part of a description.
    """
    preamble: list[str] = []
    sections: list[_MdSection] = []
    fence: str | None = None
    for n, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        fence, in_code = _track_fence(fence, line)
        heading = None if in_code else _HEADING.match(line)
        if heading:
            header = _CLOSING_HASHES.sub("", heading.group(1) or "")
            start = heading.start(1) if heading.group(1) is not None else len(line)
            sections.append(_MdSection(n, start + 1, header))
        elif sections:
            sections[-1].body.append((n, line, in_code))
        else:
            preamble.append(line)
    return preamble, sections


def _track_fence(fence: str | None, line: str) -> tuple[str | None, bool]:
    """(fence still open after this line, is this line code or a fence line)."""
    m = _FENCE.match(line)
    if fence is None:
        return (m.group(1), True) if m else (None, False)
    if m:
        marker = m.group(1)
        # A closing fence: the same character, at least as long, nothing after it.
        if marker[0] == fence[0] and len(marker) >= len(fence) and not line.strip()[len(marker) :].strip():
            return None, True
    return fence, True


def _md_task(section: _MdSection, path: DataPath, values: dict, report: _Report) -> dict[str, Any] | None:
    """One section -> a task mapping, recording where each value was written."""
    raw_id, sep, title = section.header.partition(":")
    id_text = raw_id.strip().strip("`")
    id_col = section.id_col + (len(raw_id) - len(raw_id.lstrip())) + (1 if raw_id.strip().startswith("`") else 0)
    values[path] = (section.line, 1)
    if not id_text:
        report.at(path, "task heading has no id: write '## <id>: <title>'")
        return None
    values[path + ("id",)] = (section.line, id_col)
    item: dict[str, Any] = {"id": id_text, "title": title.strip() if sep else None}
    description: list[str] = []
    for line_no, line, in_code in section.body:
        m = None if in_code else _FIELD.match(line)
        if m is None:
            description.append(line)
            continue
        _md_field(item, m, line_no, path, values, report)
    item["description"] = "\n".join(description).strip()
    return item


def _md_field(item: dict[str, Any], m: re.Match, line_no: int, path: DataPath, values: dict, report: _Report) -> None:
    key = m.group(1).lower()
    value_col = m.start(2) + 1
    if key.startswith("allow"):
        values[path + ("allow_empty",)] = (line_no, value_col)
        word = m.group(2).strip("`").strip().lower()
        item["allow_empty"] = {"true": True, "yes": True, "false": False, "no": False}.get(word, m.group(2))
        return
    if key in ("kind", "role"):
        values[path + (key,)] = (line_no, value_col)
        if key in item:
            report.at(path + (key,), f"{key!r} is given twice in task {item['id']!r}")
        item[key] = m.group(2).strip("`")
        return
    name = "deps" if key.startswith("dep") else "files"
    entries = item.setdefault(name, [])
    # Ids never contain spaces, so "depends: t1 t2" works too; paths are split on commas.
    splitter = r"[^,\s]+" if name == "deps" else r"[^,]+"
    pieces = list(re.finditer(splitter, m.group(2)))
    if name == "deps" and len(pieces) == 1 and pieces[0].group().strip().lower() in _NO_DEPS:
        return
    for piece in pieces:
        word = piece.group()
        stripped = word.strip()
        if not stripped:
            continue
        col = value_col + piece.start() + (len(word) - len(word.lstrip()))
        if len(stripped) > 1 and stripped[0] == stripped[-1] == "`":
            stripped, col = stripped[1:-1], col + 1
        values[path + (name, len(entries))] = (line_no, col)
        entries.append(stripped)


# --------------------------------------------------------------------------- attoswarm manifest

_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+')


def _parse_attoswarm(text: str, filename: str) -> TasksFile:
    if not text.strip():
        raise InputError(Problem(NO_TASKS, filename, 1, 1))  # not a JSON syntax error to the user
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(Problem(f"JSON syntax error: {e.msg}", filename, e.lineno, e.colno)) from None
    report = _Report(filename, _table_locator(_json_positions(text)))
    if not isinstance(data, dict):
        report.at((), "an attoswarm manifest is a JSON object with 'goal' and 'tasks'")
        report.raise_if_any()
    goal = _read_words(data, "goal", (), report, multiline=True)
    tasks = data.get("tasks")
    if "tasks" not in data:
        report.at((), "the manifest has no 'tasks' list")
    elif tasks is not None and not isinstance(tasks, list):
        report.at(("tasks",), f"'tasks' must be a list of tasks, not {_describe(tasks)}")
    elif not tasks:
        report.at(("tasks",), NO_TASKS)
    if not isinstance(tasks, list) or not tasks:
        report.raise_if_any()
    specs = _build(tasks, ("tasks",), ATTOSWARM_SCHEMA, report)  # raises with every problem so far
    kind_at = _kind_positions(tasks, ("tasks",), ATTOSWARM_SCHEMA, report, specs)
    return TasksFile(specs, goal or "", "attoswarm", filename, kind_at)


def _json_positions(text: str) -> dict[DataPath, tuple[int, int]]:
    """Where every value of a *valid* JSON text starts, by its path.

    The json module reports no positions for parsed values, so the text is tokenised
    once more; the json module has already vouched for its validity.
    """
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def pos(offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(line_starts, offset)
        return line, offset - line_starts[line - 1] + 1

    values: dict[DataPath, tuple[int, int]] = {}
    # Frames: [path, is_object, next index (arrays) or current key (objects), expecting a key]
    stack: list[list[Any]] = []

    def slot() -> DataPath:
        if not stack:
            return ()
        frame = stack[-1]
        return frame[0] + (frame[2],)

    for m in _JSON_TOKEN.finditer(text):
        tok = m.group()
        if tok in ("{", "["):
            here = slot()
            values[here] = pos(m.start())
            stack.append([here, tok == "{", 0 if tok == "[" else None, tok == "{"])
        elif tok in ("}", "]"):
            stack.pop()
        elif tok == ",":
            frame = stack[-1]
            if frame[1]:
                frame[3] = True
            else:
                frame[2] += 1
        elif tok == ":":
            continue
        elif stack and stack[-1][1] and stack[-1][3]:
            frame = stack[-1]
            frame[2] = json.loads(tok)  # the key: the next value's path ends with it
            frame[3] = False
        else:
            values[slot()] = pos(m.start())
    return values
