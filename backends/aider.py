"""The `aider` backend: Aider (aider-chat) in one-shot mode, judged by its output and git.

    - role_id: impl
      backend: aider
      model: openai/gpt-4o            # litellm's naming: provider/model
      edit_format: diff               # optional: whole, diff, udiff, ...
      args: ["--map-tokens", "2048"]  # optional: more aider flags (they win over ours)

Aider runs once per attempt in the worktree:

    aider --model M --message-file PROMPT --yes-always --no-auto-commits --no-gitignore
          --analytics-disable --no-stream --no-pretty --no-check-update
          --no-show-model-warnings --no-show-release-notes --no-detect-urls
          --no-fancy-input --chat-history-file T/chat.md --input-history-file T/input
          [--edit-format X] [role args...] [manifest files that exist]

Why these choices:
- The prompt goes through `--message-file` (a temporary file, deleted when the run
  ends), not `--message`: Linux refuses a single argument over 128 KiB (E2BIG), and a
  prompt on the command line is visible to every user in `ps`. Aider reads the file and
  runs it exactly like `--message`.
- Aider's chat and input histories go to that temporary folder, not into the worktree,
  where gitswarm would commit them. Its repo-map cache (`.aider.tags.cache.v4/`) cannot
  be moved: it is removed after the run unless it was there before.
- Only manifest files that exist are named on the command line: aider creates a named
  file that does not exist as an empty file before asking the model, which would look
  like work even when the model call fails. New files are still created: the prompt
  lists the manifest, and `--yes-always` lets aider create the files the model writes.
- `--no-detect-urls`: with `--yes-always`, aider would otherwise fetch every URL in the
  prompt into the chat. BROWSER=true keeps `--yes-always` from opening web pages
  (aider offers a documentation page after some errors). COLUMNS=4096 keeps aider's
  console from wrapping long lines (an API error would be cut in two).
  PYTHONUNBUFFERED=1 makes every line arrive when printed, for the heartbeat.
- Aider prints nothing while it waits for a non-streamed reply, so the heartbeat limit
  must be longer than the slowest model reply.

The verdict. Aider exits 0 even when every model call failed, so the exit code says
little. The attempt is ok when the model answered (aider printed a `Tokens:` report)
and no fatal error was printed; it fails otherwise, with the error aider printed. An API
error that aider retried ("Retrying in 0.5 seconds...") is not fatal by itself: only an
API error it gave up on is. An answer that changed nothing is ok (the model may rightly
find nothing to do); gitswarm reports it as "finished (no changes)" and the summary
says so. Edited files come from aider's "Applied edit to X" lines and from git (what
changed in the worktree since the start, untracked files included).

Usage: the token figures of every `Tokens:` line are summed (aider rounds them: 4.5k);
the cost is aider's last session figure, or, for a model aider has no price for, the
role's price from the config's `prices` (gitswarm.backends.pricing).
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from gitswarm.backends.base import AgentEvent, AgentRequest, AgentResult, AgentRun
from gitswarm.backends.pricing import priced
from gitswarm.backends.process import FailedRun, ProcessRun, clip, describe_exit
from gitswarm.model import Usage

FLAGS = (
    "--yes-always",
    "--no-auto-commits",
    "--no-gitignore",
    "--analytics-disable",
    "--no-stream",
    "--no-pretty",
    "--no-check-update",
    "--no-show-model-warnings",
    "--no-show-release-notes",
    "--no-detect-urls",
    "--no-fancy-input",
)
# Set over the caller's environment (the role's `env` still wins): see the docstring.
ENV_DEFAULTS = {"COLUMNS": "4096", "PYTHONUNBUFFERED": "1", "BROWSER": "true"}
# What aider writes into the repository root by itself; never the agent's work.
DROPPINGS = (".aider.tags.cache.v*", ".aider.chat.history.md", ".aider.input.history", ".aider.llm.history")
CHAT_HISTORY_TAIL = 256 * 1024  # bytes of aider's chat history read for the summary
SUMMARY_CHARS = 500
GIT_TIMEOUT = 30.0

# -- parsing aider's output (pure) ------------------------------------------------------------

_COUNT = r"(\d+(?:\.\d+)?[kKmM]?)"
_TOKENS_RE = re.compile(
    rf"^Tokens: {_COUNT} sent(?:, {_COUNT} cache write)?(?:, {_COUNT} cache hit)?, {_COUNT} received\."
    r"(?: (Cost: .*))?$")
_COST_RE = re.compile(r"^Cost: \$(\d+(?:\.\d+)?) message, \$(\d+(?:\.\d+)?) session\.$")
_APPLIED_RE = re.compile(r"^Applied edit to (.+)$")
_RETRY_RE = re.compile(r"^Retrying in (\d+(?:\.\d+)?) seconds\.\.\.$")
# str() of a litellm exception: "litellm.InternalServerError: InternalServerError: ..."
_API_ERROR_RE = re.compile(r"^litellm\.[A-Za-z]+(?:Error|Exception|Timeout)\b")
# The friendly line aider prints after an API error (aider/exceptions.py).
_DESCRIPTIONS = ("The API provider", "Insufficient credits with the API provider", "OpenRouter or the upstream",
                 "You need to: pip install")
# Lines after which aider has given up on the task: the attempt failed.
_FATAL_PREFIXES = (
    "Empty response received from LLM",
    "Your estimated chat context of ",
    "Message file not found",
    "Error reading message file",
    "Unable to create ",  # "Unable to create x.py, skipping edits."
    "Unable to write file ",
    "Unable to read git repository",
    "The git repo does not seem to have a working tree",
    "Aider only works with git repos",
    "Unable to proceed without an OpenRouter API key",
)
_REFLECTIONS_RE = re.compile(r"^Only \d+ reflections allowed, stopping\.$")
_TOKEN_LIMIT_RE = re.compile(r"^Model .+ has hit a token limit!$")
# Errors that do not end the run by themselves (aider goes on, or reflects the error).
_ERROR_PREFIXES = (
    "The LLM did not conform to the edit format.",
    "Exception while updating files:",
    "Unable to commit: ",
    "Unable to add ",
    "Unable to diff: ",
    "Unable to list files in git repo: ",
    "Unable to read staged files: ",
    "Files are in different git repos.",
)


def parse_count(text: str) -> int:
    """Aider's token figure as a number: "429" -> 429, "4.5k" -> 4500, "1.2M" -> 1200000."""
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:].lower(), 1)
    number = text[:-1] if scale != 1 else text
    return int(round(float(number) * scale))


@dataclass(frozen=True)
class CostReport:
    message: float
    session: float


@dataclass(frozen=True)
class TokenReport:
    """One `Tokens:` line: the figures of one model reply (one message to the model)."""

    sent: int
    received: int
    cache_write: int = 0
    cache_hit: int = 0
    cost: CostReport | None = None

    def usage(self) -> Usage:
        """As gitswarm's Usage, which counts input without cache reads and writes: aider's
        "sent" is the prompt tokens (cached ones included) plus the cache writes."""
        return Usage(input_tokens=max(0, self.sent - self.cache_hit - self.cache_write),
                     output_tokens=self.received, cache_read_tokens=self.cache_hit,
                     cache_write_tokens=self.cache_write, cost_usd=self.cost.message if self.cost else 0.0)


def parse_cost(text: str) -> CostReport | None:
    """`Cost: $0.0018 message, $0.0018 session.` (on the Tokens line or alone)."""
    m = _COST_RE.match(text.strip())
    return CostReport(float(m.group(1)), float(m.group(2))) if m else None


def parse_tokens(line: str) -> TokenReport | None:
    """`Tokens: 4.5k sent, 429 received. Cost: $0.0018 message, $0.0018 session.`"""
    m = _TOKENS_RE.match(line.strip())
    if not m:
        return None
    sent, write, hit, received, cost = m.groups()
    return TokenReport(sent=parse_count(sent), received=parse_count(received),
                       cache_write=parse_count(write) if write else 0, cache_hit=parse_count(hit) if hit else 0,
                       cost=parse_cost(cost) if cost else None)


def usage_event(report: TokenReport, price: Mapping[str, float] | None) -> AgentEvent:
    """A `usage` event for one reply: its own figures (gitswarm sums usage events)."""
    usage = priced(report.usage(), price) if report.cost is None else report.usage()
    data: dict[str, Any] = {**{k: v for k, v in usage.to_json().items() if v}, "reply": True}
    if report.cost is not None:
        data["session_cost_usd"] = report.cost.session
    text = f"usage: {usage.input_tokens} in, {usage.output_tokens} out"
    return AgentEvent("usage", text + (f", ${usage.cost_usd:g}" if usage.cost_usd else ""), data=data)


class OutputParser:
    """Turns aider's stdout lines into events. Pure; its only state is whether it is inside
    a Python traceback (aider prints one when sending a message fails unexpectedly: the
    line after it is the fatal error)."""

    def __init__(self, price: Mapping[str, float] | None = None):
        self.price = dict(price) if price else None
        self._in_traceback = False

    def feed(self, line: str) -> list[AgentEvent]:
        text = line.strip()
        if self._in_traceback:
            if line.startswith((" ", "\t")) or not text:
                return [AgentEvent("message", line)]
            self._in_traceback = False
            return [AgentEvent("message", line), AgentEvent("error", text, data={"fatal": True, "source": "exception"})]
        if text.startswith("Traceback (most recent call last):"):
            self._in_traceback = True
            return [AgentEvent("message", line)]
        return classify(line, self.price)


def classify(line: str, price: Mapping[str, float] | None = None) -> list[AgentEvent]:
    """The events for one line of aider's output, without context."""
    text = line.strip()
    if not text:
        return [AgentEvent("message", line)]
    report = parse_tokens(text)
    if report is not None:
        return [AgentEvent("message", line), usage_event(report, price)]
    cost = parse_cost(text)
    if cost is not None:  # alone on its line when a reply both hit and wrote the cache
        return [AgentEvent("message", line), AgentEvent("usage", f"cost ${cost.message:g}", data={
            "cost_usd": cost.message, "session_cost_usd": cost.session})]
    m = _APPLIED_RE.match(text)
    if m:
        return [AgentEvent("file_changed", text, data={"path": m.group(1).strip(), "action": "edit"})]
    m = _RETRY_RE.match(text)
    if m:
        return [AgentEvent("error", text, data={"retry": True, "delay": float(m.group(1))})]
    if _API_ERROR_RE.match(text):
        return [AgentEvent("error", text, data={"source": "api"})]
    if text.startswith(_DESCRIPTIONS):
        return [AgentEvent("error", text, data={"source": "api", "description": True})]
    if _REFLECTIONS_RE.match(text) or _TOKEN_LIMIT_RE.match(text) or text.startswith(_FATAL_PREFIXES):
        return [AgentEvent("error", text, data={"fatal": True})]
    if text.startswith(_ERROR_PREFIXES):
        return [AgentEvent("error", text)]
    return [AgentEvent("message", line)]


@dataclass
class Judgement:
    """What aider's events say about the attempt."""

    replies: int = 0  # model replies (Tokens lines)
    fatal: str | None = None  # the error that failed the attempt
    retried: int = 0  # API errors aider retried
    announced: tuple[str, ...] = ()  # files aider said it edited, in order
    last_error: str | None = None  # the last error of any kind, for "no answer" failures


def judge(events: Sequence[AgentEvent]) -> Judgement:
    """Fold the events of a run. An API error (with the description line aider prints
    after it) is fatal unless aider's next word on it is "Retrying in ..."; every error
    marked fatal by the parser is fatal. The first fatal error is the reason."""
    j = Judgement()
    announced: list[str] = []
    pending: list[str] = []  # the API error block not yet known to be retried
    previous: str | None = None  # the last error that was not fatal by itself

    def settle() -> None:
        if pending and j.fatal is None:
            j.fatal = " — ".join(pending)
        pending.clear()

    for event in events:
        data = event.data
        if event.kind == "usage" and data.get("reply"):  # a Tokens line: the model answered
            settle()
            j.replies += 1
        elif event.kind == "file_changed" and isinstance(data.get("path"), str):
            if data["path"] not in announced:
                announced.append(data["path"])
        elif event.kind == "error":
            j.last_error = event.text
            if data.get("retry"):
                if pending:
                    j.retried += 1
                pending.clear()
            elif data.get("source") == "api":
                if not data.get("description"):
                    settle()
                pending.append(event.text)
            elif data.get("fatal"):
                settle()
                if j.fatal is None:
                    # "Only 3 reflections allowed" alone does not say what went wrong.
                    j.fatal = event.text + (f" (last error: {previous})" if previous else "")
            if not data.get("fatal") and not data.get("retry"):
                previous = event.text
    settle()
    j.announced = tuple(announced)
    return j


_FENCE_RE = re.compile(r"^(`{3,}|~{3,})")


def assistant_text(chat_history: str) -> str:
    """The model's last words from aider's chat history (markdown): user lines start with
    `####`, aider's own output with `> `, everything else is the model's. Code blocks and
    the file name line in front of each (the whole-file and diff edit formats) are
    dropped: what is left is what the model said about its work."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for raw in chat_history.splitlines():
        if raw.startswith(("####", "> ", "# aider chat started")) or raw == ">":
            current = None
            continue
        if current is None:
            if not raw.strip():
                continue
            current = []
            blocks.append(current)
        current.append(raw)
    for block in reversed(blocks):
        prose = _prose(block)
        if prose:
            return prose
    return ""


def _prose(lines: list[str]) -> str:
    kept: list[str] = []
    fence: str | None = None
    for line in lines:
        m = _FENCE_RE.match(line.strip())
        if fence is not None:
            if m and line.strip().startswith(fence) and not line.strip()[len(fence):].strip():
                fence = None
            continue
        if m:
            fence = m.group(1)
            # The file name on the line before the fence belongs to the edit, not to prose.
            while kept and not kept[-1].strip():
                kept.pop()
            if kept and " " not in kept[-1].strip():
                kept.pop()
            continue
        kept.append(line)
    return "\n".join(kept).strip()


def summarize(said: str, files: Sequence[str], ok: bool) -> str:
    """The result's summary: the model's last words, else what was edited."""
    if said:
        text = said if files or not ok else f"no changes: {said}"
        return clip(" ".join(text.split()), SUMMARY_CHARS)
    if files:
        shown = ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "")
        return clip(f"edited {len(files)} file{'s' if len(files) != 1 else ''}: {shown}", SUMMARY_CHARS)
    return "no changes" if ok else ""


def porcelain_paths(output: str) -> list[str]:
    """Paths in `git status --porcelain=v1 -z` output (both sides of a rename)."""
    fields = output.split("\0")
    paths: list[str] = []
    i = 0
    while i < len(fields):
        entry = fields[i]
        i += 1
        if len(entry) < 4:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC" and i < len(fields):
            paths.append(fields[i])
            i += 1
    return paths


def is_dropping(path: str) -> bool:
    top = path.split("/", 1)[0]
    return any(fnmatch.fnmatchcase(top, pattern) for pattern in DROPPINGS)


def manifest_files(workdir: Path, files: Sequence[str]) -> list[str]:
    """The manifest entries to name on aider's command line: existing regular files inside
    the worktree (not directories: aider takes one directory alone or files; not missing
    files: aider would create them empty), relative, in manifest order, once each."""
    root = workdir.resolve()
    out: list[str] = []
    for entry in files:
        if not entry or os.path.isabs(entry):
            continue
        path = (root / entry).resolve()
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue  # climbs out of the worktree (or through a symlink)
        if rel.parts and rel.parts[0] == ".git" or not path.is_file():
            continue
        if str(rel) not in out:
            out.append(str(rel))
    return out


def build_argv(request: AgentRequest, message_file: str, state_dir: str, files: Sequence[str]) -> list[str]:
    argv = [request.command or "aider"]
    if request.model:
        argv += ["--model", request.model]
    argv += ["--message-file", message_file, *FLAGS,
             "--chat-history-file", os.path.join(state_dir, "chat.history.md"),
             "--input-history-file", os.path.join(state_dir, "input.history")]
    edit_format = request.options.get("edit_format")
    if edit_format:
        argv += ["--edit-format", str(edit_format)]
    argv += [str(a) for a in request.args]
    if files:
        argv += ["--", *files]  # a manifest entry that starts with "-" is still a file
    return argv


# -- git (I/O) ----------------------------------------------------------------------------------


def _git(workdir: Path, env: Mapping[str, str], *args: str) -> str | None:
    """git's stdout, or None when git fails (no repository, no commit yet)."""
    try:
        proc = subprocess.run(["git", "--no-optional-locks", *args], cwd=str(workdir), env=dict(env),
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=GIT_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.decode("utf-8", errors="surrogateescape")


def head_commit(workdir: Path, env: Mapping[str, str]) -> str | None:
    out = _git(workdir, env, "rev-parse", "-q", "--verify", "HEAD^{commit}")
    if out is None:
        return None
    return out.strip() or None


def dirty(workdir: Path, env: Mapping[str, str]) -> set[str] | None:
    out = _git(workdir, env, "status", "--porcelain=v1", "-z", "--untracked-files=all")
    return None if out is None else set(porcelain_paths(out))


def changed_since(workdir: Path, env: Mapping[str, str], start: str | None, before: set[str]) -> list[str]:
    """Paths changed in the worktree since the run started: uncommitted changes (tracked
    or untracked, not ignored) that were not there before, and whatever was committed
    since `start` (a role's `--auto-commits` makes aider commit)."""
    paths = (dirty(workdir, env) or set()) - before
    head = head_commit(workdir, env)
    if start and head and head != start:
        out = _git(workdir, env, "diff", "--name-only", "-z", "--no-renames", start, head)
        paths |= {p for p in (out or "").split("\0") if p}
    return sorted(p for p in paths if not is_dropping(p))


# -- the run ------------------------------------------------------------------------------------


class AiderRun(ProcessRun):
    """One aider process; the verdict from its output (judge) and from git."""

    def __init__(self, argv: Sequence[str], *, request: AgentRequest, state_dir: str, git_env: Mapping[str, str],
                 start_commit: str | None, dirty_before: set[str], caches_before: set[str], **kwargs: Any):
        self.request = request
        self.parser = OutputParser(request.options.get("price"))
        self.usage = Usage()
        self.session_cost: float | None = None  # aider's last "$X session" figure
        self.chat_history = ""
        self.git_files: list[str] = []  # changed per git, not announced by aider
        self._state_dir = state_dir
        self._git_env = dict(git_env)
        self._start_commit = start_commit
        self._dirty_before = set(dirty_before)
        self._caches_before = set(caches_before)
        super().__init__(argv, cwd=request.workdir, on_close=self._finish, **kwargs)

    def parse_line(self, line: str) -> list[AgentEvent]:
        return self.parser.feed(line)

    def observe(self, event: AgentEvent) -> None:
        if event.kind != "usage":
            return
        self.usage = self.usage + Usage.from_json(event.data)
        session = event.data.get("session_cost_usd")
        if isinstance(session, (int, float)):
            self.session_cost = float(session)

    def _finish(self) -> None:
        """Runs once the process is gone (before decide): keep the chat history, remove the
        temporary folder and the repo-map cache aider left in the worktree."""
        path = Path(self._state_dir) / "chat.history.md"
        try:
            with open(path, "rb") as f:
                f.seek(max(0, path.stat().st_size - CHAT_HISTORY_TAIL))
                self.chat_history = f.read().decode("utf-8", errors="replace")
        except OSError:
            pass
        shutil.rmtree(self._state_dir, ignore_errors=True)
        for cache in glob.glob(str(Path(self.request.workdir) / ".aider.tags.cache.v*")):
            if os.path.basename(cache) not in self._caches_before:
                shutil.rmtree(cache, ignore_errors=True)

    def final_usage(self) -> Usage:
        u = self.usage
        if self.session_cost is not None:
            return Usage(u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens,
                         round(self.session_cost, 9))
        # Without a figure from aider the usage events carry priced() costs already.
        return u if u.cost_usd else priced(u, self.request.options.get("price"))

    def decide(self, exit_code: int, events: Sequence[AgentEvent]) -> AgentResult:
        j = judge(events)
        changed = changed_since(Path(self.request.workdir), self._git_env, self._start_commit, self._dirty_before)
        self.git_files = [p for p in changed if p not in j.announced]
        files = list(j.announced) + self.git_files
        usage = self.final_usage()
        said = assistant_text(self.chat_history)
        if exit_code != 0:  # aider's own usage errors (a bad flag, an unreadable message file)
            error = (f"aider: {clip(j.fatal, 1500)} ({describe_exit(exit_code)})" if j.fatal
                     else self.exit_error(exit_code))
            return AgentResult(ok=False, summary=summarize(said, files, False), error=error, exit=exit_code,
                               usage=usage)
        if j.fatal is not None:
            return AgentResult(ok=False, summary=summarize(said, files, False), error=f"aider: {clip(j.fatal, 1500)}",
                               exit=exit_code, usage=usage)
        if j.replies == 0:
            why = f" (last error: {clip(j.last_error, 1000)})" if j.last_error else ""
            tail = [t.strip() for t in self.stdout_tail if t.strip()][-3:]
            if not why and tail:
                why = " (last output: " + clip(" | ".join(tail), 1000) + ")"
            return AgentResult(ok=False, error=f"aider got no answer from the model{why}", exit=exit_code,
                               usage=usage)
        return AgentResult(ok=True, summary=summarize(said, files, True), exit=exit_code, usage=usage)

    def events(self) -> Iterator[AgentEvent]:
        """The process's events, then a file_changed for each file git saw change that
        aider did not announce (known only after decide), then `finished`."""
        for event in super().events():
            if event.kind == "finished":
                for path in self.git_files:
                    yield AgentEvent("file_changed", path, data={"path": path, "action": "changed", "source": "git"})
            yield event


class AiderBackend:
    name = "aider"

    def close(self) -> None:
        """Nothing outlives an attempt."""

    def start(self, request: AgentRequest) -> AgentRun:
        workdir = Path(request.workdir)
        if not workdir.is_dir():
            return FailedRun(f"aider: the worktree {workdir} does not exist")
        git_env = {**os.environ, **request.env}
        start_commit = head_commit(workdir, git_env)
        dirty_before = dirty(workdir, git_env)
        if dirty_before is None:
            return FailedRun(f"aider needs a git worktree; {workdir} is not one")
        caches_before = {os.path.basename(p) for p in glob.glob(str(workdir / ".aider.tags.cache.v*"))}
        state_dir = tempfile.mkdtemp(prefix=f"gitswarm-aider-{request.task.id}-")
        message_file = os.path.join(state_dir, "prompt.md")
        with open(message_file, "w", encoding="utf-8", errors="replace") as f:
            f.write(request.prompt)
        argv = build_argv(request, message_file, state_dir, manifest_files(workdir, request.task.files))
        timeout = request.options.get("timeout_seconds") or request.timeout
        return AiderRun(argv, request=request, state_dir=state_dir, git_env=git_env, start_commit=start_commit,
                        dirty_before=dirty_before, caches_before=caches_before,
                        env={**ENV_DEFAULTS, **request.env}, timeout=timeout,
                        heartbeat_timeout=request.heartbeat_timeout)


__all__ = [
    "AiderBackend",
    "AiderRun",
    "CostReport",
    "Judgement",
    "OutputParser",
    "TokenReport",
    "assistant_text",
    "build_argv",
    "changed_since",
    "classify",
    "judge",
    "manifest_files",
    "parse_cost",
    "parse_count",
    "parse_tokens",
    "porcelain_paths",
    "summarize",
]
