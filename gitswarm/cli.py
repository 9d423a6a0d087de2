"""The `gitswarm` (alias `attoswarm`) command line.

Thin over the store: every command reads refs (and writes them only through the store).
Bad input exits 2 with `file:line:col: message` and never a traceback; other failures
exit 1 with what went wrong.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import typer
from rich.console import Console
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from . import __version__, views
from .config import TEMPLATE_VARIANTS, LoadedConfig, load_config, template_text
from .doctor import FAIL, OK, WARN, check_config, check_git, check_libraries, check_live, check_repository, find_default_config, verdict
from .errors import GitswarmError, InputError, Problem
from .gitops import StorageError, storage_fault
from .model import RunPhase, RunState, TaskStatus
from .store import RunStore, Store

app = typer.Typer(
    name="gitswarm",
    help=(
        "Run a swarm of coding agents on a git repository. Every task runs in its own "
        "worktree branch; finished work is verified and merged into one swarm branch "
        "`attoswarm/<run>`; all run state lives in git refs and notes.\n\n"
        "A RUN argument takes a run id, a unique prefix of one, or @last."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

class SafeConsole(Console):
    """A console that shows control characters written out (views.terminal_safe), the
    one boundary every line of the CLI passes: every string rich turns into text (print
    arguments, table cells), before rich parses and measures it (rich would drop BEL or
    CR silently and let ESC through), and, as a net for Text built elsewhere, every
    rendered text segment. Segments rich marks as control (its own cursor moves) and
    the styles it adds when it writes are not text, so colours still work."""

    def render_str(self, text: str, **kwargs: Any) -> Text:  # type: ignore[override]
        return super().render_str(views.terminal_safe(text), **kwargs)

    def render(self, renderable: Any, options: Any = None) -> Iterable[Segment]:  # type: ignore[override]
        for segment in super().render(renderable, options):
            if segment.control or segment.text.isprintable() or not segment.text:
                yield segment
            else:
                yield Segment(views.terminal_safe(segment.text), segment.style)


def _text(value: str, style: str = "") -> Text:
    """A Text of data (no markup), escaped before rich measures it for a table cell."""
    return Text(views.terminal_safe(value), style=style)


out = SafeConsole(highlight=False, soft_wrap=True)
err = SafeConsole(stderr=True, highlight=False, soft_wrap=True)


def _print_json(data: Any) -> None:
    """json.dumps escapes C0; DEL and C1 are escaped as well (views.json_terminal_safe)."""
    sys.stdout.write(views.json_terminal_safe(json.dumps(data, indent=2, ensure_ascii=False)) + "\n")


def _styled(value: str) -> Text:
    return Text(value, style=views.STATUS_STYLE.get(value, ""))


def _print_warnings(problems: list[Problem]) -> None:
    for p in problems:
        err.print(f"{p}", style="yellow", markup=False)


@dataclass(frozen=True)
class Options:
    """Options shared by every command, kept on the click context (no globals)."""

    repo_dir: str = "."


def _options(ctx: typer.Context) -> Options:
    return ctx.obj if isinstance(ctx.obj, Options) else Options()


def _store(ctx: typer.Context) -> Store:
    return Store(_options(ctx).repo_dir)


def _run_store(ctx: typer.Context, run: str) -> tuple[Store, RunStore]:
    store = _store(ctx)
    return store, store.run(store.resolve(run))


def _print_version(value: bool) -> None:
    if value:
        out.print(f"gitswarm {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    ctx: typer.Context,
    directory: Optional[Path] = typer.Option(None, "-C", "--repo", help="Run as if started in this directory (like git -C)."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version),
) -> None:
    if directory is not None:
        if not directory.is_dir():
            raise InputError(f"-C {directory}: no such directory")
    ctx.obj = Options(repo_dir=str(directory or "."))


# ---------------------------------------------------------------- ls


@app.command("ls")
def ls_cmd(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print a JSON list of runs.")) -> None:
    """List the runs of this repository, oldest first, read from refs/attoswarm/*."""
    runs = _store(ctx).summaries()
    if as_json:
        _print_json(views.ls_json(runs))
        return
    if not runs:
        out.print("No runs yet. Start one with `gitswarm start CONFIG --tasks-file F` or try `gitswarm demo`.")
        return
    table = Table(box=None, pad_edge=False)
    for col in ("RUN", "PHASE", "TASKS", "CREATED", "PARENT", "GOAL"):
        table.add_column(col, no_wrap=col != "GOAL")
    for r in runs:
        tasks = f"{r.done}/{r.tasks}" + (f" ({r.failed} failed)" if r.failed else "")
        goal = r.goal.splitlines()[0] if r.goal else ""
        table.add_row(r.id, _styled(r.phase), tasks, views.short_time(r.created), r.parent or "", goal[:70])
    out.print(table)


# ---------------------------------------------------------------- status


@app.command("status")
def status_cmd(
    ctx: typer.Context,
    run: str = typer.Argument("@last", help="Run id, unique prefix, or @last."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Where a run stands: phase, budget used, and every task with its attempts."""
    _, rs = _run_store(ctx, run)
    state = rs.read()
    lease = rs.read_lease()
    live = RunStore.lease_is_live(lease)
    if as_json:
        _print_json(views.status_json(state, str(rs.tip()), lease, live))
        return
    _print_run_header(state, live)
    _print_task_table(state)
    _print_proposed(state)


def _print_run_header(state: RunState, live: bool) -> None:
    r = state.run
    head = Text.assemble(("run ", "bold"), (r.id, "bold"), "  ", _styled(r.phase.value))
    if r.reason:
        head.append(views.terminal_safe(f" ({r.reason})"))
    out.print(head)
    if r.goal:
        out.print(f"goal:    {r.goal.splitlines()[0][:200]}", markup=False)
    if r.base_commit:
        out.print(f"base:    {r.base_branch or '(detached)'} @ {r.base_commit[:10]}", markup=False)
    if r.swarm_branch:
        out.print(f"branch:  {r.swarm_branch}", markup=False)
    if r.parent_run:
        out.print(f"parent:  {r.parent_run}", markup=False)
    c = views.counts(state)
    summary = ", ".join(f"{n} {s}" for s, n in c.items() if n)
    out.print(f"tasks:   {len(state.tasks)} ({summary or 'none yet'})", markup=False)
    u = r.usage
    out.print(f"usage:   {views.tokens(u.total_tokens)} tokens, {views.money(u.cost_usd)}", markup=False)
    by_role = views.usage_by_role(state)
    if len(by_role) > 1 or any(x.total_tokens or x.cost_usd for x in by_role.values()):
        parts = [f"{role} {views.tokens(x.total_tokens)} / {views.money(x.cost_usd)}" for role, x in sorted(by_role.items())]
        out.print(f"by role: {', '.join(parts)}", markup=False)
    out.print(f"time:    started {views.short_time(r.created)}, {'ran' if r.ended else 'running for'} {views.duration(r.created, r.ended)}", markup=False)
    if not r.phase.ended:
        out.print(f"coordinator: {'alive' if live else 'not running (resume it with `gitswarm resume ' + r.id + '`)'}", markup=False)
    if r.finalized:
        out.print(f"finalized: {r.finalized.get('action')}" + (f" into {r.finalized.get('into')}" if r.finalized.get("into") else ""), markup=False)


def _print_task_table(state: RunState) -> None:
    if not state.tasks:
        return
    waves = views.task_waves(state)
    table = Table(box=None, pad_edge=False)
    for col in ("WAVE", "TASK", "STATUS", "TRIES", "AGENT", "TITLE / REASON"):
        table.add_column(col, no_wrap=col != "TITLE / REASON")
    for t in sorted(state.tasks.values(), key=lambda t: (waves.get(t.id, 0), t.id)):
        cur = t.current
        text = t.spec.title
        if t.reason and t.status in (TaskStatus.FAILED, TaskStatus.SKIPPED, TaskStatus.PENDING):
            text += f"  [{t.reason}]"
        table.add_row(str(waves.get(t.id, "")), t.id, _styled(t.status.value), str(len(t.attempts)),
                      cur.agent if cur else "", _text(text))
    out.print(table)


def _print_proposed(state: RunState) -> None:
    """Follow-up tasks the scope gate proposed, each with the command that accepts it."""
    if not state.run.proposed:
        return
    from .scope import add_task_command

    r = state.run
    # add-task works while the run lives or can resume (shut down, not finalized).
    open_ = not r.phase.ended or (r.phase == RunPhase.SHUTDOWN and r.approval != "rejected"
                                  and (r.finalized is None or r.finalized.get("action") == "keep"))
    how = "accept one with its command" if open_ else f"the run has ended: add them to a child run (`gitswarm continue {r.id}`)"
    out.print(f"proposed follow-up tasks ({len(r.proposed)}); {how}:", markup=False)
    for p in r.proposed:
        out.print(f"  {p.get('id')}: {p.get('title')}" + ("" if open_ else f"  (files: {', '.join(p.get('files') or []) or '-'})"), markup=False)
        if open_:
            out.print(f"    {add_task_command(r.id, p)}", markup=False, soft_wrap=True)


# ---------------------------------------------------------------- log


@app.command("log")
def log_cmd(
    ctx: typer.Context,
    run: str = typer.Argument("@last", help="Run id, unique prefix, or @last."),
    as_json: bool = typer.Option(False, "--json", help="Print the events as a JSON list, oldest first."),
    limit: int = typer.Option(0, "-n", "--limit", help="Only the newest N events (0: all)."),
) -> None:
    """The run's event history: one state commit per event (or batch), oldest first.

    The same history is plain git: `git log refs/attoswarm/<run>/state`.
    """
    _, rs = _run_store(ctx, run)
    events = views.log_json(rs.history())
    if limit > 0:
        events = events[-limit:]
    if as_json:
        _print_json(events)
        return
    from .state import summarize

    for e in events:
        line = Text.assemble((f"{e.get('seq', ''):>5} ", "dim"), (views.short_time(e.get("at")) + " ", "dim"),
                             (e["state_commit"][:8] + " ", "yellow"))
        line.append(views.terminal_safe(summarize(e)))
        by = e.get("by")
        if isinstance(by, dict) and by.get("role") != "coordinator":  # a person's control, from a command or the dashboard
            line.append(views.terminal_safe(f"  (by {by.get('user')}@{by.get('host')}, {by.get('role')})"), "dim")
        out.print(line)


# ---------------------------------------------------------------- show


@app.command("show")
def show_cmd(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="Run id, unique prefix, or @last."),
    task: Optional[str] = typer.Argument(None, help="A task id: show that task instead of the run."),
    attempt: int = typer.Option(0, "--attempt", "-a", help="With TASK: which attempt (default: the latest)."),
    prompt: bool = typer.Option(False, "--prompt", help="With TASK: print the exact prompt the agent received."),
    transcript: bool = typer.Option(False, "--transcript", help="With TASK: print the attempt's normalised transcript."),
    at: Optional[str] = typer.Option(None, "--at", help="Read the state at this state commit instead of the tip."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Details of a run (lineage, config, tasks) or of one task (spec, attempts, prompt)."""
    store, rs = _run_store(ctx, run)
    state = rs.read(at=at)
    if task is None:
        _show_run(store, rs, state, as_json)
        return
    if task not in state.tasks:
        close = [t for t in state.tasks if t.startswith(task)]
        if len(close) == 1:
            task = close[0]
        else:
            raise InputError(f"run {state.run.id} has no task {task!r}" + (f"; did you mean {', '.join(close[:5])}?" if close else ""))
    t = state.tasks[task]
    chosen = None
    if t.attempts:
        chosen = t.attempts[-1] if attempt <= 0 else next((a for a in t.attempts if a.n == attempt), None)
        if chosen is None:
            raise InputError(f"task {task} has no attempt {attempt} (it has {len(t.attempts)})")
    if prompt or transcript:
        if chosen is None:
            raise InputError(f"task {task} has not started yet: no prompt or transcript")
        path = chosen.prompt_path if prompt else chosen.transcript_path
        data = rs.read_file(path, at=at) if path else None
        if data is None:
            raise InputError(f"task {task} attempt {chosen.n} has no {'prompt' if prompt else 'transcript'} recorded")
        text = data.decode("utf-8", errors="replace")
        # The prompt or transcript as recorded, its control characters written out (a
        # transcript is JSON lines: DEL and C1 as JSON escapes, so each line stays JSON).
        sys.stdout.write(views.terminal_safe(views.json_terminal_safe(text) if transcript else text))
        return
    waves = views.task_waves(state)
    if as_json:
        _print_json(views.task_json(t, waves.get(t.id)))
        return
    out.print(Text.assemble(("task ", "bold"), (t.id, "bold"), "  ", _styled(t.status.value), f"  (run {state.run.id}, wave {waves.get(t.id, '?')})"))
    out.print(f"title:   {t.spec.title}", markup=False)
    if t.reason:
        out.print(f"reason:  {t.reason}", markup=False)
    out.print(f"kind:    {t.spec.kind}" + (f", role {t.spec.role}" if t.spec.role else ""), markup=False)
    out.print(f"deps:    {', '.join(t.spec.deps) or '-'}", markup=False)
    out.print(f"files:   {', '.join(t.spec.files) or '- (any)'}", markup=False)
    if t.spec.description:
        out.print("description:", markup=False)
        for line in t.spec.description.splitlines():
            out.print(f"  {line}", markup=False)
    for a in t.attempts:
        res = a.result or "running"
        out.print(Text.assemble(f"attempt {a.n}: ", _styled(res), f"  {a.agent} ({a.backend}{' ' + a.model if a.model else ''})"))
        out.print(f"  time:    {views.short_time(a.started)}, {views.duration(a.started, a.ended)}", markup=False)
        if a.branch:
            out.print(f"  branch:  {a.branch}" + (f" @ {a.commit[:10]}" if a.commit else ""), markup=False)
        if a.merge_commit:
            out.print(f"  merged:  {a.merge_commit[:10]}", markup=False)
        u = a.usage
        if u.total_tokens or u.cost_usd:
            out.print(f"  usage:   {u.input_tokens} in, {u.output_tokens} out, {u.cache_read_tokens} cache read, {views.money(u.cost_usd)}", markup=False)
        for c in a.checks:
            verdict = "skipped" if c.get("skipped") else "passed" if c.get("ok") else "FAILED"
            detail = str(c.get("detail") or "").removeprefix("skipped: ")
            out.print(f"  gate {c.get('gate')}: {verdict}" + (f": {detail}" if detail else ""), markup=False)
        if a.score is not None:
            out.print(f"  score:   {a.score}", markup=False)
        if a.error:
            out.print(f"  error:   {a.error}", markup=False)
        if a.summary:
            out.print(f"  summary: {a.summary.splitlines()[0][:200]}", markup=False)
        if a.prompt_path:
            out.print(f"  prompt:  gitswarm show {state.run.id} {t.id} --attempt {a.n} --prompt", markup=False)


def _show_run(store: Store, rs: RunStore, state: RunState, as_json: bool) -> None:
    r = state.run
    children = [s.id for s in store.summaries() if s.parent == r.id]
    lineage = []
    parent = r.parent_run
    while parent and len(lineage) < 50:
        lineage.append(parent)
        try:
            parent = store.run(parent).read().run.parent_run
        except InputError:
            break
    if as_json:
        data = views.status_json(state, str(rs.tip()))
        data.update({"config": dict(r.config), "ancestors": lineage, "children": children})
        _print_json(data)
        return
    _print_run_header(state, RunStore.lease_is_live(rs.read_lease()))
    if lineage:
        out.print(f"lineage: {' <- '.join([r.id] + lineage)}", markup=False)
    if children:
        out.print(f"children: {', '.join(children)}", markup=False)
    roles = r.config.get("roles") if isinstance(r.config, dict) else None
    if roles:
        out.print("roles:   " + ", ".join(f"{x.get('role_id')} ({x.get('role_type')}, {x.get('backend')}{' ' + x['model'] if x.get('model') else ''}) x{x.get('count', 1)}" for x in roles), markup=False)
    for note in r.notes[-5:]:
        out.print(f"note:    {note}", markup=False)
    out.print(f"state:   refs/attoswarm/{r.id}/state @ {str(rs.tip())[:10]} ({state.seq} events)", markup=False)
    _print_task_table(state)
    if r.swarm_branch:
        out.print(f"\nreview:  git log --notes=attoswarm/{r.id} {r.swarm_branch}", markup=False)


# ---------------------------------------------------------------- doctor / init / validate


def _load_config(path: str) -> LoadedConfig:
    loaded = load_config(path)
    _print_warnings(loaded.warnings)
    return loaded


@app.command("doctor")
def doctor_cmd(
    ctx: typer.Context,
    config: Optional[str] = typer.Argument(None, help="Swarm config to check (default: swarm.yaml at the repository root, if any)."),
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
    live: bool = typer.Option(False, "--live", help="Also run one real turn of each configured agent (costs a small model call each)."),
) -> None:
    """Check git, the repository, the config and each configured backend's binary
    (found, version, and for codex-mcp the protocol it speaks); with --live, one real
    turn of each agent, in a scratch repository.

    Exits 1 if something a run needs is missing, 2 if the config is invalid.
    """
    cwd = os.path.abspath(_options(ctx).repo_dir)
    checks = [check_git(), check_libraries(), *check_repository(cwd)]
    path = config or find_default_config(cwd)
    loaded = _load_config(path) if path else None
    base_dir = str(Path(path).resolve().parent) if path else cwd
    checks.extend(check_config(loaded, base_dir))
    if live and loaded is not None:
        if not as_json:
            err.print("running one turn of each configured agent ...", style="dim")
        checks.extend(check_live(loaded, base_dir))
    code = verdict(checks)
    if as_json:
        _print_json({"ok": code == 0, "checks": [c.to_json() for c in checks]})
        raise typer.Exit(code)
    table = Table(box=None, pad_edge=False)
    table.add_column("", no_wrap=True)
    table.add_column("CHECK", no_wrap=True)
    table.add_column("DETAIL")
    marks = {OK: Text("ok", style="green"), WARN: Text("warn", style="yellow"), FAIL: Text("FAIL", style="bold red")}
    for c in checks:
        table.add_row(marks[c.status], c.name, _text(c.detail))
    out.print(table)
    out.print("ready" if code == 0 else "not ready: fix the FAIL lines above", style="green" if code == 0 else "red")
    raise typer.Exit(code)


@app.command("init")
def init_cmd(
    path: Path = typer.Argument(Path("swarm.yaml"), help="Where to write the config."),
    variant: str = typer.Option("minimal", "--variant", help=f"Which example: {' or '.join(TEMPLATE_VARIANTS)}."),
    hybrid: bool = typer.Option(False, "--hybrid", help="Same as --variant hybrid: planner, workers, judge and merger."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite an existing file."),
) -> None:
    """Write a commented example swarm config (minimal: one scripted worker; hybrid:
    Claude Code planner and judge, Codex workers, a merger)."""
    text = template_text("hybrid" if hybrid else variant)
    if path.exists() and not force:
        raise InputError(f"{path} already exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    load_config(path)  # the template must load; a failure here is our bug, not the user's
    out.print(f"wrote {path}. Check it with `gitswarm doctor {path}`.", markup=False)


@app.command("validate")
def validate_cmd(
    config: str = typer.Argument(..., help="Swarm config to check."),
    tasks_file: Optional[str] = typer.Option(None, "--tasks-file", "-t", help="A tasks file (.yaml, .md or an attoswarm swarm.manifest.json) to check too."),
    as_json: bool = typer.Option(False, "--json", help="Print the resolved config (and tasks) as JSON."),
) -> None:
    """Load a config (and a tasks file) exactly as `start` would, and print the plan.

    Exits 2 with file:line:col for every mistake; warnings name keys accepted but not acted on.
    """
    from . import dag, tasksfile

    loaded = _load_config(config)
    tf = tasksfile.read_tasks_file(tasks_file) if tasks_file else None
    if tf is not None:
        tasksfile.check_roles(tf, loaded.config.roles)  # as `start` refuses it
    specs = list(tf.tasks) if tf is not None else []
    if as_json:
        _print_json({"config": loaded.config.to_dict(), "warnings": [str(w) for w in loaded.warnings], "tasks": [s.to_json() for s in specs]})
        return
    cfg = loaded.config
    out.print(f"{config}: ok, {len(cfg.roles)} roles ({', '.join(r.role_id for r in cfg.roles)})", markup=False)
    if specs:
        deps = {s.id: list(s.deps) for s in specs}
        waves = dag.waves(deps)
        out.print(f"{tasks_file}: ok, {len(specs)} tasks in {len(waves)} waves", markup=False)
        for i, wave in enumerate(waves, 1):
            out.print(f"  wave {i}: {', '.join(wave)}", markup=False)


# ---------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Console entry point: maps every outcome to an exit code, never to a traceback
    for bad input (usage errors from typer exit 2 as well)."""
    try:
        app(args=argv, prog_name="gitswarm")
    except SystemExit as exc:
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else 1
    except InputError as exc:
        for p in exc.problems:
            err.print(f"error: {p}" if not p.file else f"{p}", style="red", markup=False)
        return 2
    except (GitswarmError, OSError) as exc:
        # A full or read-only disk can fail any write, in any module: it is the user's
        # to fix, so it is said in one line, not as a traceback. Other OSErrors are bugs.
        line = error_line(exc, os.path.abspath(_repo_dir_of(argv)))
        if line is None:
            raise
        err.print(line, style="red", markup=False)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def error_line(exc: BaseException, where: str) -> str | None:
    """What exit 1 prints for a failure: a GitswarmError as it is, except that one caused
    by a full, read-only or over-quota disk (a StorageError, or any error raised from
    such an OSError) is one line that names the fault; None for an OSError that is not a
    disk fault (a bug, which keeps its traceback)."""
    cause: str | None = None
    seen: BaseException | None = exc
    while seen is not None and cause is None:
        if isinstance(seen, StorageError):
            cause = seen.cause
        elif isinstance(seen, OSError):
            cause = storage_fault(str(seen), code=seen.errno)
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, StorageError) or (cause is None and isinstance(exc, GitswarmError)):
        return f"error: {exc}"
    if cause is None:
        return None
    if isinstance(exc, OSError):
        what = f"writing {exc.filename}" if exc.filename else "writing"  # write() names no file
        return f"error: {StorageError(cause, what, where)}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"error: {cause}: {first}" if cause not in first.lower() else f"error: {first}"


def _repo_dir_of(argv: list[str] | None) -> str:
    """The -C/--repo folder of a command line, for a message about its disk."""
    args = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(args):
        if arg in ("-C", "--repo") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--repo="):
            return arg.split("=", 1)[1]
    return "."


# The run commands live in their own module and register themselves on `app`.
from . import commands as _commands  # noqa: E402,F401
