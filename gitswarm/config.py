"""The swarm config: schema, defaults, and a loader that reports every mistake with its place.

A config is YAML. gitswarm reads attoswarm's hybrid config unchanged, plus its own keys
(docs/config.md is the reference). Unlike attoswarm, which silently drops what it does
not know, this loader:

- rejects unknown keys, with the closest valid key ("did you mean ...");
- checks types and ranges, with the expected type;
- accepts attoswarm keys gitswarm does not act on, and reports each as a warning;
- collects every problem of a file and raises one `InputError` holding all of them,
  sorted by position, each with file:line:col (1-based).

It never lets a traceback escape for any input text: everything ends as a config or as
an `InputError`.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import difflib
import math
import os
import re
import string
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeVar

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from gitswarm.backends import KNOWN_BACKENDS, MODELLESS_BACKENDS
from gitswarm import runfolders
from gitswarm.errors import InputError, Problem

# ---------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------

CONFIG_VERSION = 1

# attoswarm's role types are all accepted; critic acts as a judge, synthesizer as a merger.
ROLE_TYPES: tuple[str, ...] = (
    "worker",
    "merger",
    "judge",
    "planner",
    "orchestrator",
    "researcher",
    "critic",
    "synthesizer",
)
ROLE_TYPE_ALIASES: dict[str, str] = {"critic": "judge", "synthesizer": "merger"}

# Task kind families: which kinds a role type may take (see RoleConfig.takes_kind).
REVIEW_KINDS: frozenset[str] = frozenset({"review", "judge", "critic"})
PLANNING_KINDS: frozenset[str] = frozenset({"analysis", "planning", "design", "research"})
_JUDGE_TYPES = frozenset({"judge", "critic"})
_BUILDER_TYPES = frozenset({"worker", "merger", "synthesizer"})
_PLANNER_TYPES = frozenset({"planner", "orchestrator", "researcher"})

WORKSPACE_MODES: tuple[str, ...] = ("worktree", "shared_ro", "shared")
PROMPT_VIA: tuple[str, ...] = ("argv", "stdin", "file")
VERIFY_MODES: tuple[str, ...] = ("merged", "task", "none")
SCOPE_MODES: tuple[str, ...] = ("allow", "fail")  # merge.scope: changes outside a task's files
HOOK_EVENTS: tuple[str, ...] = (
    "task_started",
    "attempt_finished",
    "before_merge",
    "task_merged",
    "run_finished",
)
# Placeholders a `command` role may use in its command and args.
PLACEHOLDERS: tuple[str, ...] = ("prompt", "prompt_file", "workdir", "task_id", "model")

# attoswarm sections gitswarm has no use for: one warning each, contents not checked.
ATTOSWARM_ONLY_SECTIONS: tuple[str, ...] = (
    "orchestration",
    "workspace",
    "ui",
    "code_intel",
    "research",
    "tracing",
    "adaptive",
    "validation",
)

TEMPLATE_VARIANTS: tuple[str, ...] = ("minimal", "hybrid")

_ROLE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A branch prefix becomes part of ref names: keep to characters git never objects to.
_BRANCH_PREFIX_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$")
# The swarm branches live at refs/heads/attoswarm/<run>; work branches under the same
# name would be a directory/file clash in git's ref store.
_SWARM_BRANCH_NAMESPACE = "attoswarm"

# Role `env` in the run's state (run.json), which is meant to be pushed: a value that is
# exactly a `${NAME}` reference is stored as the reference and resolved from the
# environment when an agent starts; any other value is a literal (an API key, say) and
# is stored as this marker only. A process that has no literal (a `resume`) takes it from
# the environment variable of the same name (docs/config.md, role `env`).
REDACTED_ENV_VALUE = "<redacted>"
_ENV_REFERENCE_RE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def env_reference(value: str) -> str | None:
    """The variable a role env value refers to (`${NAME}`), or None for a literal."""
    m = _ENV_REFERENCE_RE.match(value)
    return m.group(1) if m else None


def stored_env_value(value: str) -> str:
    """What the run's state keeps of one role env value: the reference, or the marker."""
    return value if env_reference(value) is not None else REDACTED_ENV_VALUE


def _env_source(name: str, value: str) -> str | None:
    """The environment variable a value must be read from when the agent starts, if any."""
    if value == REDACTED_ENV_VALUE:
        return name
    return env_reference(value)


# ---------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------

_P = TypeVar("_P", bound="_Plain")


class _Plain:
    """to_dict/from_dict for a flat config dataclass (lists and dicts of plain values)."""

    def to_dict(self) -> dict[str, Any]:
        """Every value, defaults included, as JSON-able data."""
        data: dict[str, Any] = dataclasses.asdict(self)  # type: ignore[call-overload]
        return data

    @classmethod
    def from_dict(cls: type[_P], data: dict[str, Any]) -> _P:
        """The inverse of to_dict; missing keys take their defaults, unknown ones are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: copy.deepcopy(v) for k, v in data.items() if k in names})


@dataclass
class RunConfig(_Plain):
    working_dir: str = "."
    run_dir: str = ".gitswarm"
    poll_interval_ms: int = 250
    max_runtime_seconds: float = 0.0  # 0 = unlimited
    name: str | None = None  # used as a slug in run ids
    default_model: str = ""  # model for roles whose model is "" ("" = each tool's default)
    state_flush_ms: int = 200  # batch live progress into at most one state commit per this


@dataclass
class RoleConfig(_Plain):
    role_id: str
    backend: str
    role_type: str = "worker"
    model: str = ""  # "" = the run's default_model, else the tool's own default
    count: int = 1
    # None resolves by role type: builders (worker, merger, synthesizer) write, others read.
    write_access: bool | None = None
    workspace_mode: str = "worktree"  # always worktree: every agent gets its own
    task_kinds: list[str] = field(default_factory=list)  # empty = any kind its type takes
    command: str | None = None  # the binary to run (name or path); None = backend default
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    prompt_via: str = "stdin"  # command backend only: argv | stdin | file
    timeout_seconds: float | None = None  # wall clock limit of one attempt of this role
    # Settings of the agent CLIs (docs/backends.md): each is passed only to the backends
    # that have it, and warned about elsewhere.
    max_turns: int | None = None  # claude --max-turns
    permission_mode: str | None = None  # claude --permission-mode
    allowed_tools: list[str] = field(default_factory=list)  # claude --allowedTools
    append_system_prompt: str | None = None  # claude --append-system-prompt
    sandbox: str | None = None  # codex / codex-mcp --sandbox
    edit_format: str | None = None  # aider --edit-format

    def __post_init__(self) -> None:
        if self.write_access is None:
            self.write_access = self.acts_as in _BUILDER_TYPES

    @property
    def acts_as(self) -> str:
        """The role type gitswarm treats this role as (critic -> judge, synthesizer -> merger)."""
        return ROLE_TYPE_ALIASES.get(self.role_type, self.role_type)

    def missing_env(self, environ: Mapping[str, str]) -> list[str]:
        """Why this role's env cannot be given to an agent here, one line per variable."""
        missing: list[str] = []
        for name, value in self.env.items():
            source = _env_source(name, value)
            if source is None or source in environ:
                continue
            if value == REDACTED_ENV_VALUE:
                missing.append(f"role {self.role_id}: env {name} was a literal value in the config, which the run's "
                               f"state does not keep: set {name} in the environment")
            else:
                missing.append(f"role {self.role_id}: env {name} is {value}: set {source} in the environment")
        return missing

    def agent_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The variables an agent of this role gets: literals as given, references and
        redacted literals from `environ` (checked up front by SwarmConfig.check_env)."""
        missing = self.missing_env(environ)
        if missing:
            raise InputError("; ".join(missing))
        env: dict[str, str] = {}
        for name, value in self.env.items():
            source = _env_source(name, value)
            env[name] = value if source is None else environ[source]
        return env

    def kinds_taken(self) -> str:
        """The kinds this role takes, in words, for error messages."""
        return ", ".join(self.task_kinds) if self.task_kinds else _kinds_accepted(self.role_type)

    def takes_kind(self, kind: str) -> bool:
        """Whether a task of `kind` may go to this role.

        An empty task_kinds list means every kind the role type accepts.
        """
        if self.task_kinds:
            return kind in self.task_kinds
        return _kind_fits_type(kind, self.role_type)


@dataclass
class BudgetConfig(_Plain):
    # attoswarm's defaults, so an attoswarm config that leaves them out keeps its caps.
    max_tokens: int = 5_000_000  # 0 = unlimited
    max_cost_usd: float = 25.0  # 0 = unlimited


@dataclass
class MergeConfig(_Plain):
    authority_role: str | None = None  # resolves mergers' conflicts; None = retry on new tip
    judge_roles: list[str] = field(default_factory=list)
    quality_threshold: float = 0.75
    verify: str = "merged"  # where the test gate runs: merged | task | none
    scope: str = "allow"  # changes outside the task's files: allow (recorded) | fail


@dataclass
class WatchdogConfig(_Plain):
    heartbeat_timeout_seconds: float = 120.0
    task_max_duration_seconds: float | None = None  # per-attempt wall clock; None = no limit


@dataclass
class RetriesConfig(_Plain):
    max_task_attempts: int = 2


@dataclass
class WorktreeConfig(_Plain):
    copy: list[str] = field(default_factory=list)  # untracked files copied into each worktree
    setup: list[str] = field(default_factory=list)  # shell commands run in each new worktree
    branch_prefix: str = "attoswarm-work"
    dir: str | None = None  # None = <run_dir>/worktrees


@dataclass
class GatesConfig(_Plain):
    syntax: bool = True  # changed .py/.json/.yaml/.toml files must parse
    tests: bool = True  # run the test command (False: attoswarm's test_verification.enabled: false)
    test_command: str | None = None  # None = auto-detect
    test_timeout_seconds: float = 600.0


@dataclass
class HooksConfig(_Plain):
    """Shell commands per lifecycle event; each gets the event as JSON on stdin."""

    task_started: list[str] = field(default_factory=list)
    attempt_finished: list[str] = field(default_factory=list)
    before_merge: list[str] = field(default_factory=list)  # a failing command is a gate
    task_merged: list[str] = field(default_factory=list)
    run_finished: list[str] = field(default_factory=list)

    def commands(self, event: str) -> list[str]:
        if event not in HOOK_EVENTS:
            raise KeyError(event)
        return list(getattr(self, event))


@dataclass
class SwarmConfig(_Plain):
    roles: list[RoleConfig] = field(default_factory=list)
    version: int = CONFIG_VERSION
    run: RunConfig = field(default_factory=RunConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    retries: RetriesConfig = field(default_factory=RetriesConfig)
    worktree: WorktreeConfig = field(default_factory=WorktreeConfig)
    gates: GatesConfig = field(default_factory=GatesConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)
    # model -> {input, output, cache_read, cache_write}: USD per million tokens, for the
    # CLIs that report tokens but no cost (codex, aider without a known model).
    prices: dict[str, dict[str, float]] = field(default_factory=dict)

    def role(self, role_id: str) -> RoleConfig | None:
        return next((r for r in self.roles if r.role_id == role_id), None)

    def model_for(self, role: RoleConfig) -> str:
        """The model a role's agents run: its own, else the run's default ("" = tool default)."""
        if role.backend == "scripted":
            return ""
        return role.model or self.run.default_model

    # to_dict (from _Plain) gives every resolved value, defaults included, as JSON-able
    # data, and from_dict(to_dict()) == self. The run's state stores to_state() instead.

    def to_state(self, repo_dir: str | os.PathLike[str]) -> dict[str, Any]:
        """The config as the run's state keeps it, which is meant to be shared: role env
        values redacted (references kept), and folders inside the repository relative to
        its root, so neither a secret nor the user's home path is in any pushed object.
        A folder outside the repository is kept as given: the run needs it to resume."""
        data = self.to_dict()
        for role in data["roles"]:
            role["env"] = {name: stored_env_value(value) for name, value in role["env"].items()}
        data["run"]["run_dir"] = _repo_relative(data["run"]["run_dir"], repo_dir)
        data["run"]["working_dir"] = _repo_relative(data["run"]["working_dir"], repo_dir)
        if data["worktree"]["dir"]:
            data["worktree"]["dir"] = _repo_relative(data["worktree"]["dir"], repo_dir)
        return data

    def check_env(self, environ: Mapping[str, str]) -> None:
        """Refuse (InputError) a run whose agents would miss a role env variable: before a
        run is created, and before a resume, rather than at the first agent."""
        missing = [line for role in self.roles for line in role.missing_env(environ)]
        if missing:
            raise InputError("the agents' environment is incomplete:\n  " + "\n  ".join(missing)
                             + "\n(the run's state keeps role env values by name only: docs/config.md, role env)")

    def literal_env(self) -> dict[str, dict[str, str]]:
        """role id -> the literal env values this process knows (for a child coordinator)."""
        found = {role.role_id: {n: v for n, v in role.env.items() if _env_source(n, v) is None} for role in self.roles}
        return {role_id: values for role_id, values in found.items() if values}

    def with_literal_env(self, values: Mapping[str, Mapping[str, str]]) -> SwarmConfig:
        """A copy whose redacted env values are replaced by `values` (from literal_env)."""
        restored = copy.deepcopy(self)
        for role in restored.roles:
            given = values.get(role.role_id, {})
            role.env = {n: (str(given[n]) if v == REDACTED_ENV_VALUE and n in given else v)
                        for n, v in role.env.items()}
        return restored

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SwarmConfig:
        return cls(
            roles=[RoleConfig.from_dict(r) for r in data.get("roles", [])],
            version=data.get("version", CONFIG_VERSION),
            run=RunConfig.from_dict(data.get("run", {})),
            budget=BudgetConfig.from_dict(data.get("budget", {})),
            merge=MergeConfig.from_dict(data.get("merge", {})),
            watchdog=WatchdogConfig.from_dict(data.get("watchdog", {})),
            retries=RetriesConfig.from_dict(data.get("retries", {})),
            worktree=WorktreeConfig.from_dict(data.get("worktree", {})),
            gates=GatesConfig.from_dict(data.get("gates", {})),
            hooks=HooksConfig.from_dict(data.get("hooks", {})),
            prices={str(k): {str(a): float(b) for a, b in v.items()} for k, v in (data.get("prices") or {}).items()},
        )


def _repo_relative(folder: str, repo_dir: str | os.PathLike[str]) -> str:
    """`folder` relative to the repository root when it is an absolute path inside it."""
    if not os.path.isabs(folder):
        return folder
    root = os.path.realpath(repo_dir)
    real = os.path.realpath(folder)
    if real == root:
        return "."
    if real.startswith(root + os.sep):
        return os.path.relpath(real, root)
    return folder


@dataclass
class LoadedConfig:
    config: SwarmConfig
    warnings: list[Problem]  # keys accepted but not acted on, each with file:line:col
    path: str
    # Where some values are in the file ("run.run_dir" -> its place, message ""), for the
    # checks that need the repository and run at launch (gitswarm.runfolders.check).
    where: dict[str, Problem] = field(default_factory=dict)


def _kind_fits_type(kind: str, role_type: str) -> bool:
    if role_type in _JUDGE_TYPES:
        return kind in REVIEW_KINDS
    if role_type in _PLANNER_TYPES:
        return kind in PLANNING_KINDS
    return kind not in REVIEW_KINDS


def _kinds_accepted(role_type: str) -> str:
    """What a role type accepts, in words, for error messages."""
    if role_type in _JUDGE_TYPES:
        return "only " + ", ".join(sorted(REVIEW_KINDS))
    if role_type in _PLANNER_TYPES:
        return "only " + ", ".join(sorted(PLANNING_KINDS))
    return "any kind except " + ", ".join(sorted(REVIEW_KINDS))


# ---------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str]) -> LoadedConfig:
    """Read and validate a config file; raises InputError (also for a missing file)."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise InputError(Problem("no such config file", name)) from None
    except IsADirectoryError:
        raise InputError(Problem("is a directory, not a config file", name)) from None
    except OSError as exc:
        raise InputError(Problem(f"cannot read the config: {exc.strerror or exc}", name)) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        problem = Problem("the config is not UTF-8 text (invalid byte here)", name, line, col)
        raise InputError(problem) from None
    return parse_config(text, name)


def parse_config(text: str, filename: str = "<config>") -> LoadedConfig:
    """Validate config text; raises InputError holding every problem found."""
    loader = _Loader(filename)
    data = _parse_yaml(text, filename)
    config = loader.read(data)
    if loader.problems:
        raise InputError(_sorted(loader.problems))
    return LoadedConfig(config=config, warnings=_sorted(loader.warnings), path=filename, where=loader.where)


def default_config(
    backend: str = "scripted", workers: int = 2, model: str | None = None
) -> SwarmConfig:
    """The config `gitswarm quick` runs with when no file is given.

    One worker role with `workers` agents; backends that run a model also get a planner
    role on the same backend, to turn the goal into tasks.
    """
    if backend not in KNOWN_BACKENDS:
        raise InputError(f"unknown backend '{backend}'{_did_you_mean(backend, KNOWN_BACKENDS)} "
                         f"(known backends: {', '.join(KNOWN_BACKENDS)})")
    if backend == "command":
        raise InputError("the command backend needs a config file naming the command to run "
                         "(see `gitswarm init`)")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"workers must be a whole number >= 1, got {workers!r}")
    if model and backend in MODELLESS_BACKENDS:
        raise InputError(f"backend '{backend}' runs no model; leave the model out")
    roles = []
    if backend not in MODELLESS_BACKENDS:
        roles.append(RoleConfig("planner", backend, role_type="planner", model=model or ""))
    roles.append(RoleConfig("worker", backend, role_type="worker", model=model or "", count=workers))
    return SwarmConfig(roles=roles)


def template_text(variant: str) -> str:
    """The commented example config `gitswarm init` writes ("minimal" or "hybrid")."""
    if variant not in TEMPLATE_VARIANTS:
        raise InputError(f"unknown template '{variant}'{_did_you_mean(variant, TEMPLATE_VARIANTS)} "
                         f"(templates: {', '.join(TEMPLATE_VARIANTS)})")
    resource = resources.files("gitswarm") / "templates" / f"{variant}.yaml"
    return resource.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------
# YAML text -> data, with syntax errors as problems
# ---------------------------------------------------------------------------------------

Pos = tuple[int, int]  # 1-based line, column
_START: Pos = (1, 1)


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.line, p.col))


def _parse_yaml(text: str, filename: str) -> Any:
    """Parse with the round-trip loader (it keeps positions); any failure is an InputError."""
    try:
        return YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        raise InputError(_marked_problem(exc, filename)) from None
    except ReaderError as exc:
        line, col = _offset_pos(text, exc.position)
        message = f"character {exc.character!r} is not allowed in YAML"
        raise InputError(Problem(message, filename, line, col)) from None
    except RecursionError:
        raise InputError(Problem("the YAML is nested too deeply", filename, 1, 1)) from None
    except Exception as exc:  # arbitrary text must never become a traceback
        # The constructor fails on a few well-formed scalars (a timestamp with month 13,
        # `!!int x`) with a plain ValueError and no position: find the scalar it choked on.
        line, col = _locate_bad_scalar(text) or _START
        raise InputError(Problem(f"invalid YAML value: {exc}", filename, line, col)) from None


def _marked_problem(exc: MarkedYAMLError, filename: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else _START
    problem = str(exc.problem or exc.context or "invalid YAML")
    duplicate = re.match(r'found duplicate key "(.*)" with value', problem)
    if duplicate:
        return Problem(f"duplicate key '{duplicate.group(1)}'", filename, line, col)
    if "expected a single document" in str(exc.context):
        return Problem("the file holds more than one YAML document ('---'); a config is one "
                       "document", filename, line, col)
    message = f"YAML syntax error: {problem}"
    if exc.context and exc.context_mark is not None and exc.problem:
        cm = exc.context_mark
        message += f" ({exc.context} at line {cm.line + 1}, column {cm.column + 1})"
    if "'\\t'" in problem:
        message += "; YAML indents with spaces, not tabs"
    elif "expected <block end>" in problem:
        message += "; check the indentation of this line"
    return Problem(message, filename, line, col)


def _offset_pos(text: str, offset: int) -> Pos:
    offset = max(0, min(offset, len(text)))
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, col


def _locate_bad_scalar(text: str) -> Pos | None:
    yaml = YAML(typ="rt")
    try:
        root = yaml.compose(text)
        for node in sorted(_scalar_nodes(root), key=lambda n: (n.start_mark.line, n.start_mark.column)):
            try:
                yaml.constructor.construct_object(node, deep=True)
            except Exception:  # any failure: this is the scalar to point at
                return node.start_mark.line + 1, node.start_mark.column + 1
    except Exception:  # composing failed too: no better place than the start
        return None
    return None


def _scalar_nodes(root: Node | None) -> Iterator[ScalarNode]:
    seen: set[int] = set()
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:  # aliases can make the graph cyclic
            continue
        seen.add(id(node))
        if isinstance(node, ScalarNode):
            yield node
        elif isinstance(node, MappingNode):
            stack.extend(part for pair in node.value for part in pair)
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)


# ---------------------------------------------------------------------------------------
# Positions and messages
# ---------------------------------------------------------------------------------------


def _start_of(node: Any, fallback: Pos) -> Pos:
    lc = getattr(node, "lc", None)
    if lc is None or lc.line is None:
        return fallback
    return lc.line + 1, lc.col + 1


def _key_pos(mapping: Any, key: Any, fallback: Pos) -> Pos:
    try:
        line, col = mapping.lc.key(key)
    except (AttributeError, KeyError, TypeError):  # merged (<<) keys have no position
        return _start_of(mapping, fallback)
    return line + 1, col + 1


def _value_pos(mapping: Any, key: Any, fallback: Pos) -> Pos:
    # For an empty (null) value ruamel reports the next token's position: use the key's.
    if mapping.get(key) is None:
        return _key_pos(mapping, key, fallback)
    try:
        line, col = mapping.lc.value(key)
    except (AttributeError, KeyError, TypeError):
        return _key_pos(mapping, key, fallback)
    return line + 1, col + 1


def _item_pos(seq: Any, index: int, fallback: Pos) -> Pos:
    try:
        line, col = seq.lc.item(index)
    except (AttributeError, KeyError, TypeError, IndexError):
        return _start_of(seq, fallback)
    return line + 1, col + 1


def _describe(value: Any) -> str:
    """A short rendering of a YAML value for 'expected X, got Y' messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"'{shown}'"
    if isinstance(value, (int, float)):
        return repr(float(value)) if isinstance(value, float) else str(int(value))
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, (set, frozenset)):
        return "a set"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return f"{value.isoformat()} (a date; quote it)"
    if isinstance(value, (bytes, bytearray)):
        return "binary data"
    if hasattr(value, "tag") and hasattr(value, "value"):
        return "a tagged value"
    return f"a {type(value).__name__}"


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    matches = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean '{matches[0]}'?" if matches else ""


def _as_int(value: Any) -> int | None:
    # YAML `true` is a bool, which Python counts as an int: it is not a count.
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    return None


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer too large for a float
        return None


# ---------------------------------------------------------------------------------------
# Reading one mapping of the file
# ---------------------------------------------------------------------------------------

_MISSING = object()


@dataclass
class _Item:
    """One string of a list in the file, with its position and its label for messages."""

    text: str
    pos: Pos
    label: str


class _Section:
    """One mapping of the config with its dotted path, read key by key.

    Each reader returns the value, or the default after recording a problem, so that
    reading goes on and the whole file is reported at once.
    """

    def __init__(self, loader: _Loader, node: Any, path: str, pos: Pos):
        self.loader = loader
        self.node = node if isinstance(node, dict) else {}
        self.path = path
        self.pos = pos

    # -- positions and messages --------------------------------------------------------

    def label(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def key_pos(self, key: str) -> Pos:
        return _key_pos(self.node, key, self.pos)

    def value_pos(self, key: str) -> Pos:
        return _value_pos(self.node, key, self.pos)

    def error(self, message: str, pos: Pos) -> None:
        self.loader.error(message, pos)

    def bad_type(self, key: str, expected: str, value: Any, hint: str = "") -> None:
        message = f"{self.label(key)}: expected {expected}, got {_describe(value)}"
        self.error(message + (f" ({hint})" if hint else ""), self.value_pos(key))

    def has(self, key: str) -> bool:
        return key in self.node

    def raw(self, key: str) -> Any:
        return self.node.get(key)

    # -- key checks -------------------------------------------------------------------

    def check_keys(self, known: Iterable[str], ignored: Iterable[str] = ()) -> None:
        """Unknown keys are errors (with a suggestion); attoswarm-only keys are warnings."""
        known, ignored = list(known), list(ignored)
        where = f"in {self.path}" if self.path else "at the top level"
        for key in self.node:
            if not isinstance(key, str):
                self.error(f"keys must be strings, got {_describe(key)} {where}", self.key_pos(key))
            elif key in ignored:
                self.loader.warn(f"'{self.label(key)}' is attoswarm-only and ignored by gitswarm",
                                 self.key_pos(key))
            elif key not in known:
                hint = _did_you_mean(key, known + ignored) or f"; valid keys: {', '.join(known)}"
                self.error(f"unknown key '{key}' {where}{hint}", self.key_pos(key))

    # -- typed readers ----------------------------------------------------------------

    def _present(self, key: str, expected: str, nullable: bool) -> Any:
        """The value if present and not null; _MISSING when the default applies."""
        if key not in self.node:
            return _MISSING
        value = self.node[key]
        if value is None:
            if not nullable:
                self.bad_type(key, expected, value, "remove the key to use the default")
            return _MISSING
        return value

    def integer(self, key: str, default: int, *, minimum: int) -> int:
        value = self._present(key, "a whole number", nullable=False)
        if value is _MISSING:
            return default
        number = _as_int(value)
        if number is None:
            self.bad_type(key, "a whole number", value)
            return default
        if number < minimum:
            self.error(f"{self.label(key)}: must be >= {minimum}, got {number}", self.value_pos(key))
            return default
        return number

    def optional_number(
        self,
        key: str,
        *,
        minimum: float | None = None,
        above: float | None = None,
        maximum: float | None = None,
        nullable: bool = False,
    ) -> float | None:
        """A finite number in range; None if absent, null (when allowed) or invalid."""
        value = self._present(key, "a number", nullable)
        if value is _MISSING:
            return None
        number = _as_number(value)
        if number is None:
            self.bad_type(key, "a number", value)
            return None
        if not math.isfinite(number):
            self.error(f"{self.label(key)}: must be a finite number, got {_describe(value)}",
                       self.value_pos(key))
            return None
        out_of_range = (
            (minimum is not None and number < minimum and f">= {minimum:g}")
            or (above is not None and number <= above and f"> {above:g}")
            or (maximum is not None and number > maximum and f"<= {maximum:g}")
        )
        if out_of_range:
            self.error(f"{self.label(key)}: must be {out_of_range}, got {_describe(value)}",
                       self.value_pos(key))
            return None
        return number

    def number(self, key: str, default: float, *, minimum: float | None = None,
               above: float | None = None, maximum: float | None = None) -> float:
        value = self.optional_number(key, minimum=minimum, above=above, maximum=maximum)
        return default if value is None else value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._present(key, "true or false", nullable=False)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            hint = "YAML 1.2 reads only true/false as booleans" if isinstance(value, str) else ""
            self.bad_type(key, "true or false", value, hint)
            return default
        return value

    def optional_string(self, key: str, *, nullable: bool = False,
                        allow_empty: bool = False) -> str | None:
        """A string; None if absent, null (when allowed) or invalid."""
        value = self._present(key, "a string", nullable)
        if value is _MISSING:
            return None
        if not isinstance(value, str):
            hint = "quote it" if isinstance(value, (int, float)) else ""
            self.bad_type(key, "a string", value, hint)
            return None
        if not value.strip() and not allow_empty:
            self.error(f"{self.label(key)}: must not be empty", self.value_pos(key))
            return None
        return str(value)

    def string(self, key: str, default: str, *, allow_empty: bool = False) -> str:
        value = self.optional_string(key, allow_empty=allow_empty)
        return default if value is None else value

    def choice(self, key: str, choices: Iterable[str], default: str) -> str:
        options = list(choices)
        value = self.optional_string(key)
        if value is None:
            return default
        if value not in options:
            self.error(f"{self.label(key)}: '{value}' is not one of {', '.join(options)}"
                       f"{_did_you_mean(value, options)}", self.value_pos(key))
            return default
        return value

    def string_items(self, key: str, *, allow_single: bool = False) -> list[_Item]:
        """A list of non-empty strings, each with its place ([] if absent or null)."""
        value = self.node.get(key)
        if value is None:
            return []
        if allow_single and isinstance(value, str):
            if not value.strip():
                self.error(f"{self.label(key)}: must not be empty", self.value_pos(key))
                return []
            return [_Item(str(value), self.value_pos(key), self.label(key))]
        if not isinstance(value, list):
            expected = "a string or a list of strings" if allow_single else "a list of strings"
            self.bad_type(key, expected, value)
            return []
        items = []
        for index, item in enumerate(value):
            pos = _item_pos(value, index, self.value_pos(key))
            label = f"{self.label(key)}[{index}]"
            if not isinstance(item, str):
                hint = " (quote it)" if isinstance(item, (int, float)) else ""
                self.error(f"{label}: expected a string, got {_describe(item)}{hint}", pos)
            elif not item.strip():
                self.error(f"{label}: must not be empty", pos)
            else:
                items.append(_Item(str(item), pos, label))
        return items

    def strings(self, key: str, *, allow_single: bool = False) -> list[str]:
        return [item.text for item in self.string_items(key, allow_single=allow_single)]


# ---------------------------------------------------------------------------------------
# The loader: data -> SwarmConfig, collecting problems and warnings
# ---------------------------------------------------------------------------------------

_TOP_KEYS = ("version", "run", "roles", "budget", "merge", "watchdog", "retries",
             "worktree", "gates", "hooks", "test_verification", "prices")
_RUN_KEYS = ("working_dir", "run_dir", "poll_interval_ms", "max_runtime_seconds", "name",
             "default_model", "state_flush_ms")
_RUN_ATTOSWARM = ("monitor_detach_on_exit", "debug")
_ROLE_KEYS = ("role_id", "role_type", "backend", "model", "count", "write_access",
              "workspace_mode", "task_kinds", "command", "args", "env", "prompt_via",
              "timeout_seconds", "max_turns", "permission_mode", "allowed_tools",
              "append_system_prompt", "sandbox", "edit_format")
_ROLE_ATTOSWARM = ("capabilities", "execution_mode")
_COMMAND_ONLY_ROLE_KEYS: dict[str, Any] = {"prompt_via": "stdin"}
# Agent CLI settings and the backends that take them.
_BACKEND_ROLE_KEYS: dict[str, tuple[str, ...]] = {
    "max_turns": ("claude",),
    "permission_mode": ("claude",),
    "allowed_tools": ("claude",),
    "append_system_prompt": ("claude",),
    "sandbox": ("codex", "codex-mcp"),
    "edit_format": ("aider",),
}
CLAUDE_PERMISSION_MODES: tuple[str, ...] = ("default", "acceptEdits", "plan", "bypassPermissions", "dontAsk", "auto")
CODEX_SANDBOXES: tuple[str, ...] = ("read-only", "workspace-write", "danger-full-access")
_PRICE_KEYS = ("input", "output", "cache_read", "cache_write")
_BUDGET_KEYS = ("max_tokens", "max_cost_usd")
_BUDGET_ATTOSWARM = ("reserve_ratio", "chars_per_token_fallback")
_MERGE_KEYS = ("authority_role", "judge_roles", "quality_threshold", "verify", "scope")
_MERGE_ATTOSWARM = ("judge_policy", "auto_apply_non_conflicting")
_WATCHDOG_KEYS = ("heartbeat_timeout_seconds", "task_max_duration_seconds",
                  "task_silence_timeout_seconds")
_RETRIES_KEYS = ("max_task_attempts",)
_WORKTREE_KEYS = ("copy", "setup", "branch_prefix", "dir")
_GATES_KEYS = ("syntax", "tests", "test_command", "test_timeout_seconds")
_TEST_VERIFICATION_KEYS = ("enabled", "test_command", "test_timeout_seconds")
_TEST_VERIFICATION_ATTOSWARM = ("pass_rate_threshold", "applicable_task_kinds",
                                "scope_to_changed_files", "max_verification_retries")
# attoswarm's default authority role; its configs name it even without such a role.
_ATTOSWARM_DEFAULT_AUTHORITY = "merger"


class _Loader:
    """Turns parsed YAML into a SwarmConfig; one instance per file, no shared state."""

    def __init__(self, filename: str):
        self.filename = filename
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        # role_id -> position of its value, for cross-references and duplicate checks
        self.role_ids: dict[str, Pos] = {}
        self.where: dict[str, Problem] = {}  # see LoadedConfig.where

    def error(self, message: str, pos: Pos) -> None:
        self.problems.append(Problem(message, self.filename, pos[0], pos[1]))

    def warn(self, message: str, pos: Pos) -> None:
        self.warnings.append(Problem(message, self.filename, pos[0], pos[1]))

    # -- top level ------------------------------------------------------------------------

    def read(self, data: Any) -> SwarmConfig:
        if data is None:
            self.error("the config is empty; expected a mapping with 'roles'", _START)
            return SwarmConfig()
        if not isinstance(data, dict):
            self.error(f"expected a mapping with 'roles' at the top level, got {_describe(data)}",
                       _start_of(data, _START))
            return SwarmConfig()
        top = _Section(self, data, "", _start_of(data, _START))
        top.check_keys(_TOP_KEYS, ATTOSWARM_ONLY_SECTIONS)
        version = self._read_version(top)
        roles = self._read_roles(top)  # first: merge refers to role ids
        return SwarmConfig(
            roles=roles,
            version=version,
            run=self._read_run(self._section(top, "run")),
            budget=self._read_budget(self._section(top, "budget")),
            merge=self._read_merge(self._section(top, "merge"), roles),
            watchdog=self._read_watchdog(self._section(top, "watchdog")),
            retries=self._read_retries(self._section(top, "retries")),
            worktree=self._read_worktree(self._section(top, "worktree")),
            gates=self._read_gates(self._section(top, "gates"),
                                   self._section(top, "test_verification")),
            hooks=self._read_hooks(self._section(top, "hooks")),
            prices=self._read_prices(self._section(top, "prices")),
        )

    def _section(self, parent: _Section, key: str) -> _Section | None:
        """A sub-mapping; None when absent. A null section counts as empty (all defaults)."""
        if not parent.has(key):
            return None
        value = parent.raw(key)
        label = parent.label(key)
        if value is None:
            return _Section(self, {}, label, parent.key_pos(key))
        if not isinstance(value, dict):
            parent.bad_type(key, "a mapping", value)
            return None
        return _Section(self, value, label, _start_of(value, parent.value_pos(key)))

    def _read_version(self, top: _Section) -> int:
        if top.has("version") and _as_int(top.raw("version")) != CONFIG_VERSION:
            self.error(f"version: expected {CONFIG_VERSION}, got {_describe(top.raw('version'))} "
                       f"(this gitswarm reads version {CONFIG_VERSION} configs)",
                       top.value_pos("version"))
        return CONFIG_VERSION

    # -- run ------------------------------------------------------------------------------

    def _read_run(self, sec: _Section | None) -> RunConfig:
        d = RunConfig()
        if sec is None:
            return d
        sec.check_keys(_RUN_KEYS, _RUN_ATTOSWARM)
        return RunConfig(
            working_dir=sec.string("working_dir", d.working_dir),
            run_dir=self._read_folder(sec, "run_dir") or d.run_dir,
            poll_interval_ms=sec.integer("poll_interval_ms", d.poll_interval_ms, minimum=1),
            max_runtime_seconds=sec.number("max_runtime_seconds", d.max_runtime_seconds, minimum=0),
            name=self._read_run_name(sec),
            default_model=sec.optional_string("default_model", nullable=True, allow_empty=True) or "",
            state_flush_ms=sec.integer("state_flush_ms", d.state_flush_ms, minimum=0),
        )

    def _read_run_name(self, sec: _Section) -> str | None:
        name = sec.optional_string("name", nullable=True)
        if name is not None and not re.search(r"[A-Za-z0-9]", name):
            sec.error(f"run.name: '{name}' has no letters or digits to make a run id from",
                      sec.value_pos("name"))
            return None
        return name

    # -- roles ----------------------------------------------------------------------------

    def _read_roles(self, top: _Section) -> list[RoleConfig]:
        if not top.has("roles"):
            self.error("missing 'roles': the config needs a list of agent roles", top.pos)
            return []
        value = top.raw("roles")
        pos = top.value_pos("roles")
        if isinstance(value, dict):
            self.error("roles: expected a list of roles, got a mapping "
                       "(write each role as a list item: '- role_id: ...')", pos)
            return []
        if value is not None and not isinstance(value, list):
            top.bad_type("roles", "a list of roles", value)
            return []
        if not value:
            self.error("roles: the list is empty; define at least one role", pos)
            return []
        roles = [self._read_role_item(value, index, pos) for index in range(len(value))]
        valid = [role for role in roles if role is not None]
        # Only when every role could be read: a broken worker role is reported already.
        if len(valid) == len(roles) and not any(r.role_type == "worker" for r in valid):
            self.error("roles: no role has role_type worker, so no agent would do the tasks; "
                       "add a worker role", pos)
        return valid

    def _read_role_item(self, roles: list[Any], index: int, roles_pos: Pos) -> RoleConfig | None:
        item = roles[index]
        pos = _item_pos(roles, index, roles_pos)
        if not isinstance(item, dict):
            self.error(f"roles[{index}]: expected a mapping (role_id, backend, ...), "
                       f"got {_describe(item)}", pos)
            return None
        return self._read_role(_Section(self, item, f"roles[{index}]", _start_of(item, pos)))

    def _read_role(self, sec: _Section) -> RoleConfig | None:
        """One role; None if it lacks a usable role_id or backend (problems recorded)."""
        sec.check_keys(_ROLE_KEYS, _ROLE_ATTOSWARM)
        role_id = self._read_role_id(sec)
        backend = self._read_backend(sec)
        role_type = self._read_role_type(sec)
        command, prefix_args = self._read_command(sec)
        args = prefix_args + sec.string_items("args")
        role = RoleConfig(
            role_id=role_id or "",
            backend=backend or "",
            role_type=role_type,
            model=sec.optional_string("model", nullable=True, allow_empty=True) or "",
            count=sec.integer("count", 1, minimum=1),
            write_access=sec.boolean("write_access", role_type in _BUILDER_TYPES),
            workspace_mode=self._read_workspace_mode(sec),
            task_kinds=self._read_task_kinds(sec, role_id, role_type),
            command=command.text if command else None,
            args=[arg.text for arg in args],
            env=self._read_env(sec),
            prompt_via=sec.choice("prompt_via", PROMPT_VIA, "stdin"),
            timeout_seconds=sec.optional_number("timeout_seconds", above=0, nullable=True),
            max_turns=(sec.integer("max_turns", 0, minimum=1) or None) if sec.raw("max_turns") is not None else None,
            permission_mode=(sec.choice("permission_mode", CLAUDE_PERMISSION_MODES, "default")
                             if sec.raw("permission_mode") is not None else None),
            allowed_tools=sec.strings("allowed_tools", allow_single=True),
            append_system_prompt=sec.optional_string("append_system_prompt", nullable=True),
            sandbox=(sec.choice("sandbox", CODEX_SANDBOXES, "workspace-write")
                     if sec.raw("sandbox") is not None else None),
            edit_format=sec.optional_string("edit_format", nullable=True),
        )
        if backend is None or role_id is None:
            return None
        self._check_backend_fit(sec, role, ([command] if command else []) + args)
        return role

    def _read_role_id(self, sec: _Section) -> str | None:
        if not sec.has("role_id"):
            sec.error(f"{sec.path}: missing 'role_id' (a name such as 'impl')", sec.pos)
            return None
        role_id = sec.optional_string("role_id")
        if role_id is None:
            return None
        pos = sec.value_pos("role_id")
        if not _ROLE_ID_RE.match(role_id):
            sec.error(f"{sec.path}.role_id: '{role_id}' is not a valid role id (lowercase "
                      "letters, digits, '-' and '_', starting with a letter or digit, at most 64 "
                      "characters)", pos)
            return None
        if role_id in self.role_ids:
            sec.error(f"{sec.path}.role_id: duplicate role_id '{role_id}' (first used at line "
                      f"{self.role_ids[role_id][0]})", pos)
            return None
        self.role_ids[role_id] = pos
        return role_id

    def _read_backend(self, sec: _Section) -> str | None:
        if not sec.has("backend"):
            sec.error(f"{sec.path}: missing 'backend' (one of {', '.join(KNOWN_BACKENDS)})", sec.pos)
            return None
        backend = sec.optional_string("backend")
        if backend is not None and backend not in KNOWN_BACKENDS:
            sec.error(f"{sec.path}.backend: unknown backend '{backend}'"
                      f"{_did_you_mean(backend, KNOWN_BACKENDS)} "
                      f"(known backends: {', '.join(KNOWN_BACKENDS)})", sec.value_pos("backend"))
            return None
        return backend

    def _read_role_type(self, sec: _Section) -> str:
        role_type = sec.optional_string("role_type")
        if role_type is None:
            return "worker"  # attoswarm's default
        if role_type not in ROLE_TYPES:
            sec.error(f"{sec.path}.role_type: unknown role type '{role_type}'"
                      f"{_did_you_mean(role_type, ROLE_TYPES)} (role types: {', '.join(ROLE_TYPES)})",
                      sec.value_pos("role_type"))
            return "worker"
        return role_type

    def _read_workspace_mode(self, sec: _Section) -> str:
        """Always "worktree", the mode gitswarm runs every agent in; others are warned about."""
        mode = sec.choice("workspace_mode", WORKSPACE_MODES, "worktree")
        if sec.has("workspace_mode") and mode != "worktree":
            self.warn(f"{sec.label('workspace_mode')}: '{mode}' is ignored: gitswarm gives every "
                      "agent its own worktree anyway", sec.value_pos("workspace_mode"))
        return "worktree"

    def _read_task_kinds(self, sec: _Section, role_id: str | None, role_type: str) -> list[str]:
        kinds = sec.string_items("task_kinds")
        name = f"role '{role_id}'" if role_id else sec.path
        for kind in kinds:
            if not _kind_fits_type(kind.text, role_type):
                sec.error(f"{kind.label}: task kind '{kind.text}' does not fit {name} "
                          f"(role_type {role_type}); {role_type} roles take "
                          f"{_kinds_accepted(role_type)}", kind.pos)
        return list(dict.fromkeys(kind.text for kind in kinds))

    def _read_command(self, sec: _Section) -> tuple[_Item | None, list[_Item]]:
        """`command`: the binary (a string) or, as in attoswarm, [binary, args...]."""
        value = sec.raw("command")
        if value is None:
            return None, []
        if isinstance(value, list):
            if not value:
                sec.error(f"{sec.label('command')}: the list is empty; name the program to run",
                          sec.value_pos("command"))
                return None, []
            items = sec.string_items("command")
            if len(items) != len(value):
                return None, []  # the bad items are reported already
            return items[0], items[1:]
        text = sec.optional_string("command")
        return (_Item(text, sec.value_pos("command"), sec.label("command")) if text else None), []

    def _read_env(self, sec: _Section) -> dict[str, str]:
        value = sec.raw("env")
        if value is None:
            return {}
        if not isinstance(value, dict):
            sec.bad_type("env", "a mapping of variable names to strings", value)
            return {}
        env_sec = _Section(self, value, sec.label("env"), _start_of(value, sec.value_pos("env")))
        env: dict[str, str] = {}
        for key, text in value.items():
            if not isinstance(key, str) or not _ENV_NAME_RE.match(key):
                env_sec.error(f"{env_sec.path}: {_describe(key)} is not a valid environment "
                              "variable name", env_sec.key_pos(key))
            elif not isinstance(text, str):
                hint = " (quote it)" if isinstance(text, (int, float)) and text is not None else ""
                env_sec.error(f"{env_sec.label(key)}: expected a string, got {_describe(text)}{hint}",
                              env_sec.value_pos(key))
            else:
                env[key] = str(text)
        return env

    def _check_backend_fit(self, sec: _Section, role: RoleConfig, argv: list[_Item]) -> None:
        """Checks that depend on the backend: command roles, command-only keys, models.

        argv is the role's command (if any) followed by its arguments, with positions.
        """
        if role.backend == "command":
            if role.command is None and sec.raw("command") is None:
                sec.error(f"{sec.path}: backend 'command' needs 'command': the program to run",
                          sec.value_pos("backend"))
            for arg in argv:
                self._check_placeholders(sec, arg)
        else:
            # Only a value that differs from the default says something that is then ignored
            # (a stored config's to_dict form names the defaults and must load quietly).
            for key, default in _COMMAND_ONLY_ROLE_KEYS.items():
                if sec.has(key) and getattr(role, key) != default:
                    self.warn(f"'{sec.label(key)}' is used only by the command backend; ignored "
                              f"for backend '{role.backend}'", sec.key_pos(key))
        for key, backends in _BACKEND_ROLE_KEYS.items():
            if sec.raw(key) not in (None, []) and role.backend not in backends:
                self.warn(f"'{sec.label(key)}' is used only by backend {' and '.join(backends)}; ignored "
                          f"for backend '{role.backend}'", sec.key_pos(key))
        if role.model and role.backend in MODELLESS_BACKENDS:
            uses_model = any("{model}" in arg.text for arg in argv)
            if role.backend != "command":
                self.warn(f"{sec.label('model')}: ignored: backend '{role.backend}' runs no model",
                          sec.value_pos("model"))
            elif not uses_model:
                self.warn(f"{sec.label('model')}: ignored: a command role gets its model only "
                          "through a {model} placeholder in args, and none is used",
                          sec.value_pos("model"))

    def _check_placeholders(self, sec: _Section, arg: _Item) -> None:
        """Only the known {placeholders} may appear in a command role's argv."""
        allowed = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
        try:
            fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(arg.text)
                      if name is not None]
        except ValueError:
            sec.error(f"{arg.label}: unbalanced brace in '{arg.text}' (write '{{{{' or '}}}}' for "
                      "a literal brace)", arg.pos)
            return
        for name, spec, conv in fields:
            if name in PLACEHOLDERS and not spec and not conv:
                continue
            shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            close = difflib.get_close_matches(name, PLACEHOLDERS, n=1, cutoff=0.6)
            hint = f"; did you mean '{{{close[0]}}}'?" if close else ""
            sec.error(f"{arg.label}: unknown placeholder '{shown}'{hint} (allowed: {allowed}; "
                      "write '{{' for a literal brace)", arg.pos)

    # -- budget, merge, watchdog, retries ---------------------------------------------------

    def _read_budget(self, sec: _Section | None) -> BudgetConfig:
        d = BudgetConfig()
        if sec is None:
            return d
        sec.check_keys(_BUDGET_KEYS, _BUDGET_ATTOSWARM)
        return BudgetConfig(
            max_tokens=sec.integer("max_tokens", d.max_tokens, minimum=0),
            max_cost_usd=sec.number("max_cost_usd", d.max_cost_usd, minimum=0),
        )

    def _read_merge(self, sec: _Section | None, roles: list[RoleConfig]) -> MergeConfig:
        d = MergeConfig()
        sec = sec or _Section(self, {}, "merge", _START)  # still resolve the role defaults
        sec.check_keys(_MERGE_KEYS, _MERGE_ATTOSWARM)
        return MergeConfig(
            authority_role=self._read_authority_role(sec, roles),
            judge_roles=self._read_judge_roles(sec, roles),
            quality_threshold=sec.number("quality_threshold", d.quality_threshold,
                                         minimum=0, maximum=1),
            verify=sec.choice("verify", VERIFY_MODES, d.verify),
            scope=sec.choice("scope", SCOPE_MODES, d.scope),
        )

    def _unknown_role(self, sec: _Section, key: str, name: str, pos: Pos) -> None:
        if self.role_ids:  # with no readable role at all, the roles error says enough
            sec.error(f"{sec.label(key)}: no role is called '{name}'"
                      f"{_did_you_mean(name, self.role_ids)} (roles: {', '.join(self.role_ids)})",
                      pos)

    def _read_authority_role(self, sec: _Section, roles: list[RoleConfig]) -> str | None:
        if not sec.has("authority_role"):
            # Resolved default: the first merger-type role, if any.
            return next((r.role_id for r in roles if r.acts_as == "merger"), None)
        name = sec.optional_string("authority_role", nullable=True)
        if name is None or name in self.role_ids:
            return name
        pos = sec.value_pos("authority_role")
        if name == _ATTOSWARM_DEFAULT_AUTHORITY:
            self.warn(f"merge.authority_role: no role is called '{name}' (attoswarm's default); "
                      "conflicting tasks are retried on the new swarm tip instead", pos)
        else:
            self._unknown_role(sec, "authority_role", name, pos)
        return None

    def _read_judge_roles(self, sec: _Section, roles: list[RoleConfig]) -> list[str]:
        if not sec.has("judge_roles"):
            # Resolved default: every judge-type role judges.
            return [r.role_id for r in roles if r.acts_as == "judge"]
        names = []
        for item in sec.string_items("judge_roles"):
            if item.text in self.role_ids:
                names.append(item.text)
            else:
                self._unknown_role(sec, "judge_roles", item.text, item.pos)
        return list(dict.fromkeys(names))

    def _read_watchdog(self, sec: _Section | None) -> WatchdogConfig:
        d = WatchdogConfig()
        if sec is None:
            return d
        sec.check_keys(_WATCHDOG_KEYS)
        heartbeat = sec.optional_number("heartbeat_timeout_seconds", above=0)
        silence = sec.optional_number("task_silence_timeout_seconds", above=0)
        if silence is not None and sec.has("heartbeat_timeout_seconds"):
            self.warn("'watchdog.task_silence_timeout_seconds' is ignored: heartbeat_timeout_seconds "
                      "is set, and gitswarm has one silence timeout",
                      sec.key_pos("task_silence_timeout_seconds"))
        elif silence is not None:
            heartbeat = silence  # attoswarm's name for the same limit
        return WatchdogConfig(
            heartbeat_timeout_seconds=d.heartbeat_timeout_seconds if heartbeat is None else heartbeat,
            task_max_duration_seconds=sec.optional_number("task_max_duration_seconds", above=0,
                                                          nullable=True),
        )

    def _read_retries(self, sec: _Section | None) -> RetriesConfig:
        d = RetriesConfig()
        if sec is None:
            return d
        sec.check_keys(_RETRIES_KEYS)
        return RetriesConfig(
            max_task_attempts=sec.integer("max_task_attempts", d.max_task_attempts, minimum=1))

    # -- worktree, gates, hooks ---------------------------------------------------------------

    def _read_worktree(self, sec: _Section | None) -> WorktreeConfig:
        d = WorktreeConfig()
        if sec is None:
            return d
        sec.check_keys(_WORKTREE_KEYS)
        return WorktreeConfig(
            copy=self._read_copy_paths(sec),
            setup=sec.strings("setup", allow_single=True),
            branch_prefix=self._read_branch_prefix(sec, d.branch_prefix),
            dir=self._read_folder(sec, "dir", nullable=True),
        )

    def _read_folder(self, sec: _Section, key: str, *, nullable: bool = False) -> str | None:
        """A folder gitswarm writes to (run.run_dir, worktree.dir): never the repository
        root, never in .git, never with '..' (the disk is checked at launch)."""
        value = sec.optional_string(key, nullable=nullable)
        if value is None:
            return None
        pos = sec.value_pos(key)
        problem = runfolders.value_problem(value)
        if problem is not None:
            sec.error(f"{sec.label(key)}: {problem}", pos)
            return None
        self.where[sec.label(key)] = Problem("", self.filename, pos[0], pos[1])
        return value

    def _read_copy_paths(self, sec: _Section) -> list[str]:
        paths = []
        for item in sec.string_items("copy", allow_single=True):
            problem = runfolders.copy_entry_problem(item.text)
            if problem is not None:
                sec.error(f"{item.label}: {problem}", item.pos)
            else:
                paths.append(item.text)
        return paths

    def _read_branch_prefix(self, sec: _Section, default: str) -> str:
        prefix = sec.optional_string("branch_prefix")
        if prefix is None:
            return default
        pos = sec.value_pos("branch_prefix")
        if (not _BRANCH_PREFIX_RE.match(prefix) or ".." in prefix
                or any(part.endswith((".lock", ".")) for part in prefix.split("/"))):
            sec.error(f"worktree.branch_prefix: '{prefix}' cannot be part of a branch name "
                      "(use letters, digits, '.', '_', '-', and '/' between parts)", pos)
            return default
        if prefix.split("/")[0] == _SWARM_BRANCH_NAMESPACE:
            sec.error(f"worktree.branch_prefix: '{prefix}' clashes with the swarm branches "
                      f"({_SWARM_BRANCH_NAMESPACE}/<run>); use another name such as "
                      "'attoswarm-work'", pos)
            return default
        return prefix

    def _read_gates(self, sec: _Section | None, legacy: _Section | None) -> GatesConfig:
        d = GatesConfig()
        gates = sec or _Section(self, {}, "gates", _START)
        gates.check_keys(_GATES_KEYS)
        result = GatesConfig(
            syntax=gates.boolean("syntax", d.syntax),
            tests=gates.boolean("tests", d.tests),
            # "" means auto-detect, as in attoswarm
            test_command=gates.optional_string("test_command", nullable=True, allow_empty=True)
            or None,
            test_timeout_seconds=gates.number("test_timeout_seconds", d.test_timeout_seconds,
                                              above=0),
        )
        if legacy is not None:
            self._apply_test_verification(legacy, gates, result)
        return result

    def _apply_test_verification(self, legacy: _Section, gates: _Section, result: GatesConfig) -> None:
        """attoswarm's test_verification maps onto gates; keys set in gates win."""
        legacy.check_keys(_TEST_VERIFICATION_KEYS, _TEST_VERIFICATION_ATTOSWARM)
        mapping: list[tuple[str, str, Any]] = [
            ("enabled", "tests", legacy.boolean("enabled", False)),  # attoswarm: off by default
            ("test_command", "test_command",
             legacy.optional_string("test_command", nullable=True, allow_empty=True) or None),
            ("test_timeout_seconds", "test_timeout_seconds",
             legacy.optional_number("test_timeout_seconds", above=0)),
        ]
        for old, new, value in mapping:
            if gates.has(new):
                if legacy.has(old):
                    self.warn(f"'test_verification.{old}' is ignored: gates.{new} is set",
                              legacy.key_pos(old))
            elif value is not None and (legacy.has(old) or old == "enabled"):
                setattr(result, new, value)
        if not legacy.has("enabled") and not gates.has("tests"):
            self.warn("test_verification: 'enabled' is not set, so, as in attoswarm, the test "
                      "command is not run (set enabled: true, or use gates)", legacy.pos)

    def _read_prices(self, sec: _Section | None) -> dict[str, dict[str, float]]:
        """prices: {model: {input: X, output: Y, cache_read: Z, cache_write: W}}, USD per
        million tokens; a missing cache price is the input price."""
        if sec is None:
            return {}
        prices: dict[str, dict[str, float]] = {}
        for model in sec.node:
            entry = self._section(sec, model)
            if entry is None:
                continue
            if not isinstance(model, str) or not model.strip():
                sec.error(f"{sec.path}: {_describe(model)} is not a model name", sec.key_pos(model))
                continue
            entry.check_keys(_PRICE_KEYS)
            for needed in ("input", "output"):
                if not entry.has(needed):
                    entry.error(f"{entry.path}: missing '{needed}' (USD per million tokens)", entry.pos)
            price = {key: entry.number(key, 0.0, minimum=0) for key in ("input", "output")}
            for key in ("cache_read", "cache_write"):
                price[key] = entry.number(key, price["input"], minimum=0)
            prices[model] = price
        return prices

    def _read_hooks(self, sec: _Section | None) -> HooksConfig:
        hooks = HooksConfig()
        if sec is None:
            return hooks
        for key in sec.node:
            if isinstance(key, str) and key in HOOK_EVENTS:
                setattr(hooks, key, sec.strings(key, allow_single=True))
                continue
            name = key if isinstance(key, str) else _describe(key)
            sec.error(f"hooks: unknown hook event '{name}'{_did_you_mean(str(name), HOOK_EVENTS)} "
                      f"(events: {', '.join(HOOK_EVENTS)})", sec.key_pos(key))
        return hooks
