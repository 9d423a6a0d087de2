"""The gates that take time: judges, the test gate and `before_merge` hooks.

The coordinator's main thread runs the cheap gates (syntax, scope) itself and hands the
rest of an attempt's verification to a `GateJob` thread, which never writes the state:
it posts a `GateOutcome` to the coordinator's queue, and the main thread records it and
merges. So a ten-minute test suite never stalls the loop (lease renewal, new attempts,
`gitswarm stop`).

The test gate (`gates.tests`, where by `merge.verify`):

- `merged` (default): the attempt is merged onto the CURRENT swarm tip (`git merge-tree
  --write-tree`), that tree is committed as the very merge commit that will land, checked
  out in the run's one integration worktree and tested there. The swarm branch then moves
  to exactly that commit, so it only ever holds trees whose tests passed. Integration
  tests run one at a time (the `Lane`, a merge queue): each tests the attempt on top of
  everything merged before it, so no concurrent merge can invalidate a result; if the tip
  moved anyway (a merge that needed no test), the coordinator tests again on the new tip.
- `task`: the task's own commit is tested in its own worktree; the merge then happens on
  whatever the tip is.
- `none`: no test gate.

The command is `gates.test_command`, else detected from the tree under test (`detect`):
pytest (a pytest config or test files), `npm test` (a package.json `test` script),
`cargo test`, `go test ./...`, `make test`. With no command the gate is skipped, recorded
as such, and no worktree is made (the per-task cost is one `git ls-tree`).

A failure names the failing tests (pytest's `FAILED path::test` lines, go's `--- FAIL`,
cargo's `test x ... FAILED`; the output's tail otherwise) and checks them against the
base (the swarm tip for `merged`, the attempt's start for `task`): tests that already
failed there do not block the attempt ("also failing before this task: X"), since the
task did not break them and cannot be asked to. Results are cached per (tree, command),
and a merged tree that passed becomes the next tip, so the base is almost never run
twice. A timeout always blocks.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import re
import shlex
import shutil
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from gitswarm.backends.base import AgentJob, AgentRequest, Backend
from gitswarm.hooks import lifecycle

from . import gitops, judges, scope, shell
from .errors import GitswarmError
from .model import TaskSpec, Usage

OUTPUT_TAIL_LINES = 40
OUTPUT_TAIL_CHARS = 3000
MAX_NAMED_FAILURES = 15
JUDGE_TEXT_LIMIT = 200_000  # characters of a judge's answer kept for parsing

# pytest exits 5 when it collected no test: nothing failed, so nothing blocks.
PYTEST_NO_TESTS = 5
# Folders whose test-looking files are not the project's tests.
_VENDORED = ("node_modules/", ".venv/", "venv/", "site-packages/", "vendor/", ".tox/", "build/", "dist/")
_PYTEST_FILE = re.compile(r"(^|/)(test_[^/]*|[^/]*_test)\.py$")
_NPM_PLACEHOLDER = 'echo "Error: no test specified" && exit 1'
_MAKE_TEST = re.compile(r"^test\s*:", re.MULTILINE)
_PYTEST_LINE = re.compile(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$")
_PYTEST_VERBOSE = re.compile(r"^(\S+::\S+) (?:FAILED|ERROR)\b")
_GO_LINE = re.compile(r"^\s*--- FAIL: (\S+)")
_CARGO_LINE = re.compile(r"^test (\S+) \.\.\. FAILED$")
# Environment of the test process: not the coordinator's own pytest's (when gitswarm
# itself runs under pytest) and not pinned to another repository.
_DROPPED_ENV_PREFIXES = ("PYTEST_XDIST_", "PYTEST_CURRENT_TEST")


# ---------------------------------------------------------------- detection (pure)


@dataclass(frozen=True)
class TestCommand:
    """The command of the test gate and where it came from."""

    __test__ = False  # not a pytest test class, whatever its name

    command: str
    runner: str  # pytest | npm | cargo | go | make | custom: how failures are parsed
    origin: str  # "configured", or "detected: <why>"


def _read_config(read: Callable[[str], str | None], name: str, marker: str) -> bool:
    text = read(name)
    return text is not None and marker in text


def pytest_configured(paths: set[str], read: Callable[[str], str | None]) -> str | None:
    """Why the tree's root configures pytest, or None."""
    for name in ("pytest.ini", ".pytest.ini"):
        if name in paths:
            return name
    for name, marker in (("pyproject.toml", "[tool.pytest"), ("tox.ini", "[pytest]"), ("setup.cfg", "[tool:pytest]")):
        if name in paths and _read_config(read, name, marker):
            return f"{name} configures pytest"
    return None


def detect_runner(paths: Sequence[str], read: Callable[[str], str | None]) -> tuple[str, str] | None:
    """(runner, why) for a tree's files, or None. `read(path)` gives a root file's text.

    Order: an explicit pytest configuration, then the language projects' own markers
    (package.json's test script, Cargo.toml, go.mod), then loose pytest files, then a
    Makefile `test` target: the more specific the evidence, the earlier."""
    present = set(paths)
    why = pytest_configured(present, read)
    if why is None and "conftest.py" in present:
        why = "conftest.py"
    if why is not None:
        return "pytest", why
    if "package.json" in present:
        try:
            package = json.loads(read("package.json") or "{}")
        except ValueError:
            package = {}
        script = (package.get("scripts") or {}).get("test") if isinstance(package, dict) else None
        if isinstance(script, str) and script.strip() and script.strip() != _NPM_PLACEHOLDER:
            return "npm", "package.json scripts.test"
    if "Cargo.toml" in present:
        return "cargo", "Cargo.toml"
    if "go.mod" in present:
        return "go", "go.mod"
    tests = [p for p in paths if _PYTEST_FILE.search(p) and not any(p.startswith(v) or f"/{v}" in p for v in _VENDORED)]
    if tests:
        return "pytest", f"test files ({tests[0]}{' ...' if len(tests) > 1 else ''})"
    for name in ("GNUmakefile", "makefile", "Makefile"):
        if name in present and _MAKE_TEST.search(read(name) or ""):
            return "make", f"{name} test target"
    return None


def display_command(runner: str, paths: Sequence[str] = ()) -> str:
    """A detected runner's command as a person types it (for prompts and summaries; the
    gate itself runs `command_for`, with a chosen interpreter)."""
    if runner == "pytest":
        return "python -m pytest"
    return command_for(runner, None, True, paths) or runner


def runner_of(command: str) -> str:
    """How to parse a configured command's output, from its words."""
    words = command.split()
    if any(w.endswith("pytest") or w == "py.test" for w in words):
        return "pytest"
    if "cargo" in words:
        return "cargo"
    if "go" in words and "test" in words:
        return "go"
    return "custom"


def command_for(runner: str, python: str | None, root_config: bool, paths: Sequence[str] = ()) -> str | None:
    """The command line of a detected runner. pytest runs as `python -m pytest`, which
    puts the tree's root on sys.path as most projects expect; without a pytest config of
    its own, `-c /dev/null --rootdir .` keeps pytest from adopting the configuration of a
    folder above the worktree (the user's repository holds the worktree folder)."""
    if runner == "pytest":
        if python is None:
            return None
        isolate = "" if root_config else " -c /dev/null --rootdir ."
        return f"{shlex.quote(python)} -m pytest -q -p no:cacheprovider{isolate}"
    if runner == "npm":
        if "pnpm-lock.yaml" in paths:
            return "pnpm test"
        if "yarn.lock" in paths:
            return "yarn test"
        return "npm test"
    return {"cargo": "cargo test", "go": "go test ./...", "make": "make test"}.get(runner)


def find_python(roots: Iterable[Path]) -> str | None:
    """An interpreter that has pytest: a project virtualenv first (`.venv`, `venv` in the
    worktree or the repository), then the one beside `pytest` on PATH, then gitswarm's
    own interpreter if it has pytest."""
    for root in roots:
        for venv in (".venv", "venv"):
            bindir = root / venv / "bin"
            if (bindir / "pytest").exists() and (bindir / "python").exists():
                return str(bindir / "python")
    found = shutil.which("pytest")
    if found:
        beside = Path(found).parent / "python"
        if beside.exists():
            return str(beside)
    if importlib.util.find_spec("pytest") is not None:
        return sys.executable
    return None


# ---------------------------------------------------------------- parsing (pure)


def parse_failures(output: str, runner: str) -> list[str]:
    """Names of the failed tests in a runner's output, in order, without repeats."""
    found: list[str] = []
    for line in output.splitlines():
        line = line.rstrip()
        m = None
        if runner in ("pytest", "custom", "make"):
            m = _PYTEST_LINE.match(line) or _PYTEST_VERBOSE.match(line)
        if m is None and runner in ("go", "custom", "make"):
            m = _GO_LINE.match(line)
        if m is None and runner in ("cargo", "custom", "make"):
            m = _CARGO_LINE.match(line)
        if m is not None:
            found.append(m.group(1).strip())
    return list(dict.fromkeys(found))


def output_tail(output: str, lines: int = OUTPUT_TAIL_LINES, chars: int = OUTPUT_TAIL_CHARS) -> str:
    kept = "\n".join(output.rstrip().splitlines()[-lines:])
    return kept if len(kept) <= chars else "..." + kept[-chars:]


@dataclass(frozen=True)
class TestRun:
    """One run of the test command on one tree."""

    __test__ = False

    command: str
    exit: int
    failures: tuple[str, ...]
    tail: str
    seconds: float
    timed_out: bool = False
    stopped: bool = False
    runner: str = "custom"

    @property
    def ok(self) -> bool:
        if self.timed_out or self.stopped:
            return False
        return self.exit == 0 or (self.runner == "pytest" and self.exit == PYTEST_NO_TESTS)


@dataclass(frozen=True)
class TestVerdict:
    __test__ = False

    ok: bool
    check: dict[str, Any]
    error: str | None = None


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_NAMED_FAILURES])
    return shown + (f" and {len(items) - MAX_NAMED_FAILURES} more" if len(items) > MAX_NAMED_FAILURES else "")


def needs_base(run: TestRun) -> bool:
    """Whether the verdict depends on how the base fares (a plain failure)."""
    return not run.ok and not run.timed_out and not run.stopped


def verdict_of_tests(run: TestRun, base: TestRun | None, where: str) -> TestVerdict:
    """The test gate's verdict for `run`, given the same command's run on the base.

    `where` says what was tested ("the attempt merged onto the swarm tip abc123")."""
    cmd = f"`{run.command}`"
    if run.ok:
        note = " (no tests collected)" if run.exit != 0 else ""
        return TestVerdict(True, {"gate": "tests", "ok": True, "detail": f"{cmd} on {where} in {run.seconds:.1f} s{note}"})
    if run.timed_out:
        error = f"tests timed out after {run.seconds:.0f} s ({cmd} on {where})\n{run.tail}"
        return TestVerdict(False, {"gate": "tests", "ok": False, "detail": f"timed out after {run.seconds:.0f} s: {cmd}"}, error)
    if run.failures:
        before = set(base.failures) if base is not None else set()
        new = [f for f in run.failures if f not in before]
        old = [f for f in run.failures if f in before]
        also = f"; also failing before this task (not blamed on it): {_names(old)}" if old else ""
        if not new:
            detail = f"tests fail, but all of them also failed before this task: {_names(old)} ({cmd})"
            return TestVerdict(True, {"gate": "tests", "ok": True, "detail": detail})
        detail = f"failed on {where}: {_names(new)}{also}"
        error = f"tests failed on {where} ({cmd}, exit {run.exit}): {_names(new)}{also}\n{run.tail}"
        return TestVerdict(False, {"gate": "tests", "ok": False, "detail": detail}, error)
    # No test could be named: all we can compare is whether the base fails the same way.
    if base is not None and not base.ok and not base.timed_out and not base.failures and base.exit == run.exit:
        detail = f"{cmd} exits {run.exit} here and also before this task, so it is not blamed on it"
        return TestVerdict(True, {"gate": "tests", "ok": True, "detail": detail})
    error = f"tests failed on {where} ({cmd}, exit {run.exit}); the end of the output:\n{run.tail}"
    return TestVerdict(False, {"gate": "tests", "ok": False, "detail": f"{cmd} exited {run.exit} on {where}"}, error)


# ---------------------------------------------------------------- running tests


def env_for_tests(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test command's environment: ours, without variables that pin git to another
    repository or belong to a pytest running gitswarm itself; CI=true (unless set) so
    runners that would otherwise watch for changes or prompt run once and exit."""
    env = {k: v for k, v in os.environ.items()
           if k not in gitops._REPO_LOCAL_VARS and not k.startswith(_DROPPED_ENV_PREFIXES)}
    env.setdefault("CI", "true")
    env.update(extra or {})
    return env


def run_tests(
    command: str,
    cwd: Path,
    *,
    timeout: float,
    runner: str = "custom",
    stop: threading.Event | None = None,
    env: Mapping[str, str] | None = None,
) -> TestRun:
    """Run the test command through /bin/sh in `cwd` (gitswarm.shell: its own process
    group, ended when the command ends, so no stray servers; output to a file, so a
    background child holding it cannot hang us), until `timeout` or `stop`."""
    try:
        result = shell.run(command, cwd=cwd, env=env_for_tests(env), timeout=timeout, stop=stop)
    except OSError as exc:
        return TestRun(command, 127, (), f"cannot start: {exc}", 0.0, runner=runner)
    output = result.output
    if result.timed_out:
        output += f"\ngitswarm: the test command timed out after {timeout:g} s and was killed\n"
    # Stopped: the shell was killed (SIGKILL's exit, as before); the run decides nothing.
    code = 124 if result.timed_out else (result.returncode if result.returncode is not None else -signal.SIGKILL)
    return TestRun(command, code, tuple(parse_failures(output, runner)), output_tail(output), result.seconds,
                   timed_out=result.timed_out, stopped=result.stopped, runner=runner)


class TestCache:
    """Test results per (tree, command), shared by a coordinator's gate jobs. A tree is
    tested once: a merged tree that passed becomes the next swarm tip, whose result is
    then already known when a later failure asks how the base fares."""

    __test__ = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, str], TestRun] = {}

    def get(self, tree: str, command: str) -> TestRun | None:
        with self._lock:
            return self._runs.get((tree, command))

    def put(self, tree: str, run: TestRun) -> None:
        if run.stopped:
            return  # says nothing about the tree
        with self._lock:
            self._runs[(tree, run.command)] = run


# ---------------------------------------------------------------- git helpers


def tree_of(repo_dir: Path | str, rev: str) -> str:
    return gitops.git(repo_dir, "rev-parse", f"{rev}^{{tree}}").stdout.strip()


def tree_files(repo_dir: Path | str, tree: str) -> list[str]:
    out = gitops.git(repo_dir, "ls-tree", "-r", "--name-only", "-z", tree).stdout
    return [p for p in out.split("\0") if p]


def tree_reader(repo_dir: Path | str, tree: str) -> Callable[[str], str | None]:
    def read(path: str) -> str | None:
        shown = gitops.git(repo_dir, "cat-file", "-p", f"{tree}:{path}", check=False)
        return shown.stdout if shown.returncode == 0 else None
    return read


def detect(repo_dir: Path, tree: str, roots: Iterable[Path] = ()) -> tuple[TestCommand | None, str]:
    """The detected test command for a tree, or None and why not."""
    paths = tree_files(repo_dir, tree)
    read = tree_reader(repo_dir, tree)
    found = detect_runner(paths, read)
    if found is None:
        return None, "no test command detected"
    runner, why = found
    python = find_python([*roots, repo_dir]) if runner == "pytest" else None
    command = command_for(runner, python, pytest_configured(set(paths), read) is not None, paths)
    if command is None:
        return None, f"pytest tests found ({why}) but no Python with pytest installed: set gates.test_command"
    return TestCommand(command, runner, f"detected: {why}"), ""


def attempt_diff(repo_dir: Path | str, base: str, commit: str) -> tuple[str, str]:
    """(stat, patch) of an attempt, for its judges (without the scope-escapes file)."""
    spec = ["--", ".", f":(exclude){scope.ESCAPES_FILE}"]
    stat = gitops.git(repo_dir, "diff", "--stat=120", "--no-color", base, commit, *spec).stdout
    patch = gitops.git(repo_dir, "diff", "--no-color", "--no-ext-diff", base, commit, *spec).stdout
    return stat, patch


def restore_worktree(path: Path, commit: str, excludes: Path | None) -> bool:
    """Put a worktree back at `commit` with nothing else in it but ignored files (a judge
    that edited or committed despite being told not to). True if anything was undone."""
    cfg = ["-c", f"core.excludesFile={excludes}"] if excludes is not None and excludes.is_file() else []
    head = gitops.git(path, "rev-parse", "HEAD", check=False).stdout.strip()
    dirty = gitops.git(path, *cfg, "status", "--porcelain", "--untracked-files=all", check=False).stdout.strip()
    if head == commit and not dirty:
        return False
    gitops.git(path, "reset", "-q", "--hard", commit)
    gitops.git(path, *cfg, "clean", "-fdq")
    return True


class IntegrationWorktree:
    """The run's one detached worktree where merged results (and bases) are tested.

    Reused from test to test (a checkout moves only the files that differ) and cleaned
    with `git clean -fd`, which keeps ignored files: dependencies installed by
    `worktree.setup` (node_modules, .venv) survive, as do the files `worktree.copy`
    brings in, so `prepare` (copy + setup) runs once, when the worktree is made.
    Only one gate job uses it at a time (it holds the Lane)."""

    def __init__(self, repo_dir: Path, path: Path, prepare: Callable[[Path], None] | None = None,
                 excludes: Path | None = None):
        self.repo_dir = repo_dir
        self.path = path
        self.prepare = prepare
        self.excludes = excludes
        self._ready = False

    def _cfg(self) -> list[str]:
        return ["-c", f"core.excludesFile={self.excludes}"] if self.excludes is not None and self.excludes.is_file() else []

    def checkout(self, commit: str) -> Path:
        registered = any(gitops._same_path(wt["path"], self.path) for wt in gitops.worktrees(self.repo_dir))
        if not (registered and self.path.exists()):
            if self.path.exists():
                shutil.rmtree(self.path)
            gitops.prune_worktrees(self.repo_dir, self.path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            gitops.git(self.repo_dir, "-c", "gc.auto=0", "worktree", "add", "--quiet", "--detach", str(self.path), commit)
            self._ready = False
        else:
            gitops.git(self.path, "-c", "gc.auto=0", "checkout", "-q", "-f", "--detach", commit)
            gitops.git(self.path, *self._cfg(), "clean", "-fdq")
        if not self._ready:
            if self.prepare is not None:
                self.prepare(self.path)
            self._ready = True
        return self.path

    def remove(self) -> None:
        if self.path.exists() or any(gitops._same_path(wt["path"], self.path) for wt in gitops.worktrees(self.repo_dir)):
            try:
                gitops.remove_worktree(self.repo_dir, self.path)
            except GitswarmError:
                pass
        self._ready = False


class Lane:
    """The merge queue of the `merged` test gate: one integration test at a time.

    A job takes it before it builds the merge on the current tip and keeps it until the
    coordinator's main thread has merged (or rejected) that result, so the tip cannot
    move between test and merge. It is a plain lock, released by whichever thread
    finishes the work, and only by the current holder."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder: object | None = None

    def acquire(self, holder: object, stop: threading.Event) -> bool:
        while not stop.is_set():
            if self._lock.acquire(timeout=0.05):
                self._holder = holder
                return True
        return False

    def release(self, holder: object) -> None:
        if self._holder is holder:
            self._holder = None
            self._lock.release()

    @property
    def holder(self) -> object | None:
        return self._holder


# ---------------------------------------------------------------- the gate job


@dataclass(frozen=True)
class JudgeCall:
    """One judge to ask: its name (role / agent), backend and request."""

    name: str
    backend: Backend
    request: AgentRequest


@dataclass(frozen=True)
class MergeSpec:
    """How the `merged` gate builds the merge commit it tests (the one that lands)."""

    ref: str  # refs/heads/attoswarm/<run>
    message: str
    author: tuple[str, str]
    committer: tuple[str, str] | None


@dataclass(frozen=True)
class TestPlan:
    __test__ = False

    mode: str  # merged | task
    command: TestCommand | None  # None: detect on the tree under test
    timeout: float


@dataclass(frozen=True)
class Carried:
    """Judge results of an earlier job of the same attempt (a retest on a moved tip)."""

    checks: tuple[Mapping[str, Any], ...]
    score: float | None
    usage: Usage


@dataclass
class GatePlan:
    """Everything a GateJob needs; built by the coordinator on its main thread."""

    task: TaskSpec
    n: int
    base: str
    commit: str
    worktree: Path | None  # the attempt's worktree (judges, `task` tests, before_merge)
    checks: list[dict[str, Any]]  # already decided by the main thread (syntax, scope)
    judges: list[JudgeCall] = field(default_factory=list)
    threshold: float = 0.75
    tests: TestPlan | None = None
    before_merge: list[str] = field(default_factory=list)
    hook_event: dict[str, Any] = field(default_factory=dict)
    hook_timeout: float = 600.0
    merge: MergeSpec | None = None
    carried: Carried | None = None
    excludes: Path | None = None


@dataclass
class GateOutcome:
    """What a GateJob posts back (as ("gated", task, n, outcome))."""

    ok: bool
    checks: list[dict[str, Any]]
    error: str | None = None
    score: float | None = None
    usage: Usage = field(default_factory=Usage)
    tip: str | None = None  # `merged`: the swarm tip the tested merge commit is built on
    merge_commit: str | None = None  # `merged`: the tested merge commit, to land as is
    conflicts: tuple[str, ...] = ()  # `merged`: the merge onto the tip conflicted here
    stopped: bool = False  # interrupted (coordinator stopping): nothing was decided
    holds_lane: bool = False  # the main thread must release the lane after acting on it
    carried: Carried | None = None  # the judges' part, for a retest
    log: list[str] = field(default_factory=list)  # lines for the run's report


class GateJob(AgentJob):
    """Verifies one attempt off the main thread: judges, then tests, then `before_merge`."""

    def __init__(self, plan: GatePlan, *, repo_dir: Path, lane: Lane, cache: TestCache,
                 integration: IntegrationWorktree, out: "queue.Queue[tuple[str, str, int, Any]]"):
        super().__init__(name=f"gates-{plan.task.id}-{plan.n}")
        self.plan = plan
        self.repo_dir = repo_dir
        self.lane = lane
        self.cache = cache
        self.integration = integration
        self.out = out

    @property
    def task_id(self) -> str:
        return self.plan.task.id

    def run(self) -> None:
        try:
            outcome = self._verify()
        except Exception as exc:  # a gate job must always report back
            self.lane.release(self)
            outcome = GateOutcome(False, [*self.plan.checks, {"gate": "gates", "ok": False, "detail": f"{type(exc).__name__}: {exc}"}],
                                  error=f"the gates could not run: {type(exc).__name__}: {exc}")
        if self.stop_event.is_set() and not outcome.merge_commit:
            self.lane.release(self)
            outcome = GateOutcome(False, list(self.plan.checks), stopped=True)
        self.out.put(("gated", self.task_id, self.plan.n, outcome))

    # -- stages

    def _verify(self) -> GateOutcome:
        p = self.plan
        checks = list(p.checks)
        log: list[str] = []
        carried = p.carried
        if carried is None and p.judges:
            carried = self._judge(log)
        score = carried.score if carried else None
        usage = carried.usage if carried else Usage()
        if carried is not None:
            checks += [dict(c) for c in carried.checks]
            failed = next((c for c in carried.checks if not c.get("ok")), None)
            if failed is not None:
                return GateOutcome(False, checks, error=str(failed.get("error") or failed.get("detail")),
                                   score=score, usage=usage, carried=carried, log=log)
        outcome = GateOutcome(True, checks, score=score, usage=usage, carried=carried, log=log)
        if p.tests is not None and not self.stop_event.is_set():
            if p.tests.mode == "merged":
                self._test_merged(outcome)
            else:
                self._test_task(outcome)
            if not outcome.ok or outcome.conflicts or self.stop_event.is_set():
                return outcome
        if p.before_merge and not self.stop_event.is_set():
            self._before_merge(outcome)
        return outcome

    def _judge(self, log: list[str]) -> Carried:
        p = self.plan
        answers: list[judges.JudgeAnswer] = []
        for call in p.judges:
            if self.stop_event.is_set():
                break
            answers.append(self._ask(call))
        if p.worktree is not None and p.worktree.exists():
            try:
                if restore_worktree(p.worktree, p.commit, p.excludes):
                    log.append(f"{p.task.id}#{p.n}: a judge changed the worktree; its changes were discarded")
            except GitswarmError as exc:
                log.append(f"{p.task.id}#{p.n}: could not restore the worktree after the judges: {exc}")
        verdict = judges.judge(answers, p.threshold)
        check = dict(verdict.check)
        if verdict.error:
            check["error"] = verdict.error  # carried to the attempt's error; dropped before recording
        log.append(f"{p.task.id}#{p.n} judges: {verdict.check['detail']}")
        return Carried((check,), verdict.score, verdict.usage)

    def _ask(self, call: JudgeCall) -> judges.JudgeAnswer:
        try:
            run = call.backend.start(call.request)
        except Exception as exc:
            return judges.JudgeAnswer(call.name, error=f"{type(exc).__name__}: {exc}")
        with self._lock:
            self._run = run
        texts: list[str] = []
        size = 0
        try:
            for event in run.events():
                if event.kind == "message" and event.text and size < JUDGE_TEXT_LIMIT:
                    texts.append(event.text)
                    size += len(event.text)
            result = run.result
        except Exception as exc:
            return judges.JudgeAnswer(call.name, error=f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._run = None
        text = "\n".join(texts + ([result.summary] if result.summary else []))
        try:
            verdict = judges.parse_verdict(text)
        except judges.VerdictError as exc:
            why = str(exc) + (f"; the judge's agent failed: {result.error}" if not result.ok and result.error else "")
            return judges.JudgeAnswer(call.name, error=why, usage=result.usage)
        return judges.JudgeAnswer(call.name, verdict=verdict, usage=result.usage)

    def _command(self, tree: str, roots: Sequence[Path]) -> tuple[TestCommand | None, str]:
        t = self.plan.tests
        assert t is not None
        if t.command is not None:
            return t.command, ""
        return detect(self.repo_dir, tree, roots)

    def _run_on(self, commit: str, tree: str, command: TestCommand, cwd: Path | None) -> TestRun:
        """The command's result on a tree: cached, else run in `cwd` or (None) in the
        integration worktree checked out at `commit` (the caller holds the lane)."""
        cached = self.cache.get(tree, command.command)
        if cached is not None:
            return cached
        assert self.plan.tests is not None
        where = cwd if cwd is not None else self.integration.checkout(commit)
        run = run_tests(command.command, where, timeout=self.plan.tests.timeout, runner=command.runner, stop=self.stop_event)
        self.cache.put(tree, run)
        return run

    def _test_merged(self, outcome: GateOutcome) -> None:
        p = self.plan
        assert p.merge is not None and p.tests is not None
        if not self.lane.acquire(self, self.stop_event):
            return
        outcome.holds_lane = True
        tip = gitops.resolve_commit(self.repo_dir, p.merge.ref)
        merged = gitops.merge_trees(self.repo_dir, tip, p.commit)
        outcome.tip = tip
        if not merged.clean:
            outcome.ok = False
            outcome.conflicts = merged.conflicts or ("unknown paths",)
            return
        tree = merged.tree
        if scope.tree_has(self.repo_dir, tree) and not scope.tree_has(self.repo_dir, tip):
            tree = scope.tree_without(self.repo_dir, tree)
        commit = gitops.commit_tree(self.repo_dir, tree, [tip, p.commit], p.merge.message,
                                    author=p.merge.author, committer=p.merge.committer)
        command, why_not = self._command(tree, [self.integration.path])
        where = f"the attempt merged onto the swarm tip {tip[:10]}"
        if command is None:
            outcome.checks.append({"gate": "tests", "ok": True, "skipped": True, "detail": f"skipped: {why_not}"})
            outcome.merge_commit = commit
            return
        run = self._run_on(commit, tree, command, None)
        if run.stopped:
            return
        base = None
        if needs_base(run):
            base = self._run_on(tip, tree_of(self.repo_dir, tip), command, None)
            if base.stopped:
                return
        verdict = verdict_of_tests(run, base, where)
        outcome.checks.append(verdict.check)
        outcome.log.append(f"{p.task.id}#{p.n} tests: {verdict.check['detail']}")
        if not verdict.ok:
            outcome.ok = False
            outcome.error = verdict.error
            return
        outcome.merge_commit = commit

    def _test_task(self, outcome: GateOutcome) -> None:
        p = self.plan
        tree = tree_of(self.repo_dir, p.commit)
        roots = [p.worktree] if p.worktree is not None else []
        command, why_not = self._command(tree, roots)
        if command is None:
            outcome.checks.append({"gate": "tests", "ok": True, "skipped": True, "detail": f"skipped: {why_not}"})
            return
        where = f"the task's commit {p.commit[:10]}"
        own = p.worktree if p.worktree is not None and p.worktree.exists() else None
        held = False
        try:
            if own is None:
                held = self.lane.acquire(self, self.stop_event)
                if not held:
                    return
            run = self._run_on(p.commit, tree, command, own)
            if run.stopped:
                return
            base = None
            if needs_base(run):
                if not held:
                    held = self.lane.acquire(self, self.stop_event)
                    if not held:
                        return
                base = self._run_on(p.base, tree_of(self.repo_dir, p.base), command, None)
                if base.stopped:
                    return
        finally:
            if held:
                self.lane.release(self)
        verdict = verdict_of_tests(run, base, where)
        outcome.checks.append(verdict.check)
        outcome.log.append(f"{p.task.id}#{p.n} tests: {verdict.check['detail']}")
        if not verdict.ok:
            outcome.ok = False
            outcome.error = verdict.error

    def _before_merge(self, outcome: GateOutcome) -> None:
        p = self.plan
        cwd = p.worktree if p.worktree is not None and p.worktree.exists() else self.repo_dir
        event = {**p.hook_event, "checks": [_public(c) for c in outcome.checks], "score": outcome.score}
        if outcome.merge_commit:
            event["merge_commit"] = outcome.merge_commit
            event["tip"] = outcome.tip
        results = lifecycle.run_hooks(p.before_merge, event, cwd, timeout=p.hook_timeout, stop_at_failure=True,
                                      stop=self.stop_event)
        if self.stop_event.is_set():
            return
        failure = lifecycle.failure_text("before_merge", results)
        names = ", ".join(f"`{r.command}`" for r in results)
        if failure is None:
            outcome.checks.append({"gate": "before_merge", "ok": True, "detail": f"passed: {names}"})
            return
        outcome.checks.append({"gate": "before_merge", "ok": False, "detail": failure[:1500]})
        outcome.ok = False
        outcome.error = failure
        outcome.merge_commit = None


def _public(check: Mapping[str, Any]) -> dict[str, Any]:
    """A check as recorded: internal keys (the judges' error, carried along) left out."""
    return {k: v for k, v in check.items() if k != "error"}


def public_checks(checks: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [_public(c) for c in checks]


__all__ = [
    "Carried", "GateJob", "GateOutcome", "GatePlan", "IntegrationWorktree", "JudgeCall", "Lane", "MergeSpec",
    "TestCache", "TestCommand", "TestPlan", "TestRun", "TestVerdict", "attempt_diff", "command_for", "detect",
    "detect_runner", "find_python", "needs_base", "output_tail", "parse_failures", "public_checks",
    "restore_worktree", "run_tests", "runner_of", "env_for_tests", "verdict_of_tests", "tree_files", "tree_of",
]
