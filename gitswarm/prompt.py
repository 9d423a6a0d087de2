"""The prompt a worker agent receives for one attempt of one task.

Pure: built from the state alone, so `gitswarm show RUN TASK --prompt` shows exactly
what the agent read (the prompt is stored in the state when the attempt starts).

With a `context` (gitswarm.context, computed by the coordinator from the commit the
attempt starts from), its sections replace the plain file list and dependency list:
the manifest, the dependencies' commits, relevant symbols, related tests, the test
command and learning notes (docs/prompt-context.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .model import RunState, TaskState

if TYPE_CHECKING:
    from .context import Context


def build_prompt(
    state: RunState,
    task: TaskState,
    attempt: int,
    workdir_hint: str = "the current directory",
    context: "Context | None" = None,
) -> str:
    spec = task.spec
    lines: list[str] = [f"# Task {spec.id}: {spec.title}", ""]
    if state.run.goal:
        lines += ["## The overall goal", "", state.run.goal.strip(), ""]
    lines += ["## What to do", "", spec.description.strip() or spec.title, ""]
    if context is not None:
        rendered = context.render()
        if rendered:
            lines += rendered.rstrip("\n").split("\n") + [""]
    elif spec.files:
        lines += [
            "## Files",
            "",
            "Work on these files (create them if needed); change others only if the task cannot be done without it:",
            "",
            *[f"- {f}" for f in spec.files],
            "",
        ]
    done_deps = [state.tasks[d] for d in spec.deps if d in state.tasks] if context is None else []
    if done_deps:
        lines += ["## Already done (your dependencies, merged into your starting point)", ""]
        for dep in done_deps:
            merged = next((a for a in reversed(dep.attempts) if a.merge_commit), None)
            where = f" (merged as {merged.merge_commit[:10]})" if merged and merged.merge_commit else ""
            summary = f": {merged.summary.strip().splitlines()[0][:300]}" if merged and merged.summary else ""
            lines.append(f"- {dep.id} {dep.spec.title}{where}{summary}")
        lines.append("")
    failures = [a for a in task.attempts if a.n < attempt and a.result in ("failed",) and a.error]
    if failures:
        lines += ["## Earlier attempts failed", "", "Avoid what made them fail:", ""]
        for a in failures[-3:]:
            lines.append(f"- attempt {a.n}: {a.error.strip()[:1000]}")
        lines.append("")
    lines += [
        "## How to work",
        "",
        f"- You are in a git worktree of the project ({workdir_hint}) on a branch of your own; other agents work elsewhere.",
        "- Make the change completely; keep it to this task.",
        "- You may commit; anything left uncommitted is committed for you when you finish.",
        "- Python, JSON, YAML and TOML files you touch must parse, or the work is rejected.",
        "",
    ]
    return "\n".join(lines)
