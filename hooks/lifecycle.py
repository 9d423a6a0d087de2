"""Lifecycle hooks: the user's shell commands, run on a run's events.

    hooks:
      task_started: "notify-send \"gitswarm: $GITSWARM_TASK started\""
      before_merge: ["ruff check ."]          # a gate: non-zero blocks the merge
      run_finished: "./scripts/announce.sh"   # reads the event JSON on stdin

Each command runs through /bin/sh in the task's worktree (`run_finished`: in the
repository root; `task_merged`: in the repository root too, because the task's worktree
is removed by the merge), with the event as one JSON object on stdin and the most used
fields also as environment variables (GITSWARM_EVENT, GITSWARM_RUN, GITSWARM_TASK,
GITSWARM_ATTEMPT, GITSWARM_WORKTREE), so a one-line hook needs no JSON parser.

`before_merge` is a gate: a command that exits non-zero (or times out) fails the attempt
with its output as the reason, and the next attempt's prompt shows that output. Every
other event is a notification: a failure is reported in the run's log and never changes
what the run does.

The pure parts (the event object, the environment, the failure text) are separate from
the one function that starts processes, so they are tested without any.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from gitswarm import shell

# Notifications should be quick (a desktop notification, a chat webhook): one that hangs
# must not hold the run up for long. `before_merge` is a gate and takes the test timeout.
NOTIFY_TIMEOUT_SECONDS = 60.0
OUTPUT_LIMIT = 4000  # characters of a hook's output kept for the report / the error

# Variables that would pin a hook's git to another repository (the coordinator's own
# environment may carry them when it runs under a git hook).
_REPO_LOCAL_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY",
                    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_PREFIX")


# ---------------------------------------------------------------- pure parts


def hook_event(event: str, run_id: str, repo: Path | str, **fields: Any) -> dict[str, Any]:
    """The JSON object a hook reads on stdin: `event`, `run`, `repo`, then the event's
    own fields (task, attempt, agent, commit, worktree, ...). None values are left out so
    a hook can test for a key's presence."""
    out: dict[str, Any] = {"event": event, "run": run_id, "repo": str(repo)}
    out.update({k: (str(v) if isinstance(v, Path) else v) for k, v in fields.items() if v is not None})
    return out


def hook_env(event: Mapping[str, Any]) -> dict[str, str]:
    """The environment variables a hook gets besides the JSON on stdin."""
    env = {"GITSWARM_EVENT": str(event.get("event", "")), "GITSWARM_RUN": str(event.get("run", ""))}
    for key, var in (("task", "GITSWARM_TASK"), ("attempt", "GITSWARM_ATTEMPT"), ("worktree", "GITSWARM_WORKTREE"),
                     ("commit", "GITSWARM_COMMIT"), ("phase", "GITSWARM_PHASE")):
        if event.get(key) is not None:
            env[var] = str(event[key])
    return env


def tail(text: str, limit: int = OUTPUT_LIMIT) -> str:
    """The end of a long output (where the reason for a failure usually is)."""
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


@dataclass(frozen=True)
class HookResult:
    """How one hook command ended."""

    command: str
    exit: int  # 124 on timeout, like timeout(1); 127 when it could not be started
    output: str  # stdout and stderr, interleaved as the command wrote them, clipped
    seconds: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit == 0 and not self.timed_out

    def describe(self) -> str:
        """`cmd` exited 2: <output tail>: the reason shown for a failed hook."""
        how = f"timed out after {self.seconds:.0f} s" if self.timed_out else f"exited {self.exit}"
        out = tail(self.output, 1500)
        return f"`{self.command}` {how}" + (f": {out}" if out else "")


def failure_text(event: str, results: Sequence[HookResult]) -> str | None:
    """The error of a failed `before_merge` (or the report line of a failed
    notification): None when every command succeeded."""
    failed = [r for r in results if not r.ok]
    if not failed:
        return None
    return f"{event} hook " + "; ".join(r.describe() for r in failed)


# ---------------------------------------------------------------- running


def run_hook(
    command: str,
    event: Mapping[str, Any],
    cwd: Path | str,
    *,
    timeout: float = NOTIFY_TIMEOUT_SECONDS,
    stop: threading.Event | None = None,
) -> HookResult:
    """Run one hook command with the event on stdin. Never raises for the command's
    sake: a command that cannot start is a HookResult with exit 127. `stop` (set by
    another thread) ends it early, as a timeout does: the whole process group is killed,
    so a hook's children do not outlive it."""
    env = {k: v for k, v in os.environ.items() if k not in _REPO_LOCAL_VARS}
    env.update(hook_env(event))
    data = (json.dumps(dict(event), ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
    # gitswarm.shell: a hook that starts something in the background (`notify-send ... &`)
    # neither keeps us waiting nor outlives the hook (its group is ended with it); a
    # hook that means to leave a process running detaches it (`setsid cmd &`).
    try:
        result = shell.run(command, cwd=cwd, env=env, stdin=data, timeout=timeout, stop=stop)
    except OSError as exc:
        return HookResult(command, 127, f"cannot start: {exc}", 0.0)
    ended = result.timed_out or result.stopped  # a stop ends it as a timeout does
    code = 124 if ended or result.returncode is None else result.returncode
    return HookResult(command, code, tail(result.output), result.seconds, ended)


def run_hooks(
    commands: Sequence[str],
    event: Mapping[str, Any],
    cwd: Path | str,
    *,
    timeout: float = NOTIFY_TIMEOUT_SECONDS,
    stop_at_failure: bool = False,
    stop: threading.Event | None = None,
) -> list[HookResult]:
    """Run an event's commands in order. A gate (`before_merge`) stops at the first
    failure (`stop_at_failure`): its later commands cannot change the verdict."""
    results: list[HookResult] = []
    for command in commands:
        if stop is not None and stop.is_set():
            break
        result = run_hook(command, event, cwd, timeout=timeout, stop=stop)
        results.append(result)
        if stop_at_failure and not result.ok:
            break
    return results


__all__ = ["HookResult", "NOTIFY_TIMEOUT_SECONDS", "failure_text", "hook_env", "hook_event", "run_hook", "run_hooks", "tail"]
