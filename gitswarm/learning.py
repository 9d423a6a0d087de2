"""Learning notes: what failed in earlier runs of this repository, and what fixed it.

Kept in git, like everything of gitswarm's: `refs/attoswarm/learning` points at a commit
whose tree holds one JSON file per entry, `<run>/<task>.json`:

    {"run": "r1", "task": "t1", "title": "...", "files": ["a.py"],
     "error": "the last failed attempt's error", "failures": 1,
     "fix": {"attempt": 2, "summary": "the successful attempt's summary", "commit": "<merge commit>"},
     "at": "2026-01-02T03:04:05.678Z"}

An entry is recorded when a task that failed at least once is finally merged
(`record_lessons`, called by the coordinator after the merge). Recording the same run
and task again replaces its entry, so a resumed run that finishes a merge twice does not
count it twice. Writes are compare-and-swap on the ref, as in the state store: read the
tip, write the new tree and a commit whose parent is that tip, and move the ref only if
it has not moved; a lost race re-reads and tries again, so concurrent coordinators never
lose an entry. The ref's history is the log of the notes (`git log refs/attoswarm/learning`).

Reading picks the notes relevant to a new task (`select`): those sharing a file with the
task's manifest or enough words with its title and description, most recent first, at
most five. See docs/prompt-context.md for how to see and clear them.

The notes are agent-written text (errors and summaries), so they are not trusted: the
prompt shows them in a fenced section that says they are not instructions
(gitswarm.context), every text of a note passes `without_commands` both when it is
recorded and when it is read (a note pushed by another machine or written by an older
gitswarm is filtered too), and a run's notes go when the run is discarded
(`forget_run`, called by `finalize --discard`).
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

import pygit2
from pygit2.enums import FileMode

from .model import RunState, TaskSpec, is_valid_id
from .store import STALE_LOCK_SECONDS, _signature, now_iso, open_repository, write_tree

LEARNING_REF = "refs/attoswarm/learning"
MAX_ENTRIES_READ = 5000  # entries read per selection: a bound on a very old repository
MAX_SELECTED = 5
ERROR_LIMIT = 1000  # characters of an error kept in an entry
SUMMARY_LIMIT = 500
WRITE_TIMEOUT = 10.0  # seconds a write keeps retrying before it gives up (OSError)
MIN_SHARED_WORDS = 2  # without a shared file, this many shared words make a note relevant

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{3,}")
_STOPWORDS = frozenset(
    """
    this that with from into have been were will would should could when then than them they
    their there these those what which while where also only just some more most other each
    every make made does done doing task tasks file files work change changes changed need
    needs add adds added update updated use used using write written test tests
    """.split()
)


# -- what a note must never carry from one run into another's prompt: an instruction to
# run a command. The rule works clause by clause (a clause ends at a newline or after
# . ! ? ; outside a `code span`):
#  - a clause that tells the reader to run something is dropped: it starts (after
#    please/always/first/just/then/..., you should|must|need to|have to|can, make sure
#    to, don't forget to, be sure to, remember to, try to) with run, rerun, execute,
#    exec, invoke, paste, launch, install, download, eval or pipe; or it says
#    "by running" (executing, ...); or "you/agents should|must|... run" anywhere;
#  - a `code span` holding a shell invocation (a shell operator | ; && > < or a
#    newline, or one of the invocations below) is replaced by `SPAN_REMOVED`: an error
#    that quotes the command that failed keeps what the command printed;
#  - a clause with a shell invocation outside code spans is dropped: `$(`, `${`,
#    `| sh`, `| bash`, `sh -c`, `bash -c`, `python -c`, `curl`, `wget`, `sudo`,
#    `rm -rf`, `chmod +x`, `base64 -d`, `nc -e`, `eval ` or a `$ ` prompt at its start.
# A dropped clause leaves COMMAND_REMOVED in its place, so the reader knows something
# was there. Naming a command is kept ("the test command `pytest -q` failed"): it is
# not telling to run it, and carries no shell.

COMMAND_REMOVED = "[an instruction to run a command was removed]"
SPAN_REMOVED = "`[a command was removed]`"
_LEAD = (
    r"(?:(?:please|always|first|just|then|now|so|and|or|simply|also)\s+|"
    r"(?:you|agents?|we)\s+(?:should|must|need\s+to|have\s+to|can|may|will\s+need\s+to)\s+|"
    r"(?:make\s+sure|be\s+sure|remember|don'?t\s+forget|do\s+not\s+forget|try)\s+to\s+)*"
)
_RUN_VERBS = r"(?:run|re-?run|execute|exec|invoke|paste|launch|install|download|eval|pipe)"
_IMPERATIVE = re.compile(rf"^\W*{_LEAD}{_RUN_VERBS}\b", re.IGNORECASE)
_ADDRESSED = re.compile(
    rf"\b(?:you|agents?)\s+(?:should|must|need\s+to|have\s+to|can|may|ought\s+to)\s+(?:\w+\s+)?{_RUN_VERBS}\b",
    re.IGNORECASE,
)
_BY_RUNNING = re.compile(r"\b(?:by|after|before)\s+(?:running|executing|invoking|typing|pasting)\b", re.IGNORECASE)
_SHELL = re.compile(
    r"\$\(|\$\{|\|\s*(?:ba|z|da|k)?sh\b|\b(?:ba|z)?sh\s+-c\b|\bpython[0-9.]*\s+-c\b|\bcurl\b|\bwget\b|"
    r"\bsudo\b|\brm\s+-[a-z]*[rf]|\bchmod\s+\+x\b|\bbase64\s+-d|\bnc\s+-[a-z]*e|\beval\s|^\W*\$\s",
    re.IGNORECASE,
)
_CODE_SPAN = re.compile(r"`[^`]*`?")
_SPAN_OPERATOR = re.compile(r"\||;|&&|>|<|\n")
_CLAUSE_END = re.compile(r"\n|(?<=[.!?;])\s+")


def _shell_span(span: str) -> bool:
    return span != SPAN_REMOVED and bool(_SPAN_OPERATOR.search(span) or _SHELL.search(span.strip("`")))


def _clean_clause(clause: str) -> str | None:
    """One clause as the rule leaves it: None when it is dropped."""
    if _IMPERATIVE.search(clause) or _ADDRESSED.search(clause) or _BY_RUNNING.search(clause):
        return None
    clause = _CODE_SPAN.sub(lambda m: SPAN_REMOVED if _shell_span(m.group()) else m.group(), clause)
    if _SHELL.search(_CODE_SPAN.sub("", clause)):
        return None
    return clause


def is_command_instruction(clause: str) -> bool:
    """Whether the rule above changes this clause: it tells the reader to run a command
    or holds a shell invocation."""
    return clause.strip() != COMMAND_REMOVED and _clean_clause(clause) != clause


def _clauses(text: str) -> list[str]:
    """`text` cut into clauses, never inside a `code span` (whose `;` or `.` is not the
    end of a sentence). Joined with "", the clauses give `text` back."""
    masked = _CODE_SPAN.sub(lambda m: "x" * len(m.group()), text)
    cuts = [m.end() for m in _CLAUSE_END.finditer(masked)]
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def without_commands(text: str) -> str:
    """`text` as the rule above leaves it: shell in code spans replaced, instructions
    dropped (COMMAND_REMOVED in their place, their trailing separator kept, one marker
    for a run of them); other text unchanged."""
    out: list[str] = []
    for clause in _clauses(text):
        if clause.strip() == COMMAND_REMOVED:
            out.append(clause)
            continue
        cleaned = _clean_clause(clause)
        if cleaned is not None:
            out.append(cleaned)
            continue
        tail = clause[len(clause.rstrip()):]
        if not out or out[-1].strip() != COMMAND_REMOVED or out[-1].endswith("\n"):
            out.append(COMMAND_REMOVED + tail)
        else:
            out[-1] = out[-1].rstrip() + tail
    return "".join(out)


@dataclass(frozen=True)
class Lesson:
    run: str
    task: str
    title: str
    files: tuple[str, ...]
    error: str
    fix_summary: str
    fix_commit: str | None
    at: str
    failures: int = 1
    fix_attempt: int | None = None

    @property
    def path(self) -> str:
        return entry_path(self.run, self.task)

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "task": self.task,
            "title": self.title,
            "files": list(self.files),
            "error": self.error,
            "failures": self.failures,
            "fix": {"attempt": self.fix_attempt, "summary": self.fix_summary, "commit": self.fix_commit},
            "at": self.at,
        }

    def without_commands(self) -> "Lesson":
        """This note with its agent- or user-written texts filtered (without_commands)."""
        return replace(self, title=without_commands(self.title), error=without_commands(self.error),
                       fix_summary=without_commands(self.fix_summary))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Lesson":
        fix = d.get("fix") if isinstance(d.get("fix"), Mapping) else {}
        assert isinstance(fix, Mapping)
        return cls(
            run=str(d.get("run", "")),
            task=str(d.get("task", "")),
            title=str(d.get("title", "")),
            files=tuple(str(f) for f in d.get("files", ()) or ()),
            error=str(d.get("error", "")),
            fix_summary=str(fix.get("summary") or ""),
            fix_commit=str(fix["commit"]) if fix.get("commit") else None,
            at=str(d.get("at", "")),
            failures=int(d.get("failures", 1) or 1),
            fix_attempt=int(fix["attempt"]) if isinstance(fix.get("attempt"), int) else None,
        )


def entry_path(run: str, task: str) -> str:
    if not (is_valid_id(run) and is_valid_id(task)):
        raise ValueError(f"not a valid run/task id: {run!r}/{task!r}")
    return f"{run}/{task}.json"


def _repo(repo: pygit2.Repository | str | os.PathLike) -> pygit2.Repository:
    return repo if isinstance(repo, pygit2.Repository) else open_repository(repo)


# ---------------------------------------------------------------- writing


def lesson_from_state(state: RunState, task_id: str, at: str | None = None) -> Lesson | None:
    """The lesson of a merged task that failed before: None if it never failed (or is
    not merged). `error` is the last failure's; `fix` the merged attempt's."""
    task = state.tasks.get(task_id)
    if task is None:
        return None
    merged = next((a for a in reversed(task.attempts) if a.merge_commit), None)
    if merged is None:
        return None
    failed = [a for a in task.attempts if a.n < merged.n and a.result == "failed" and a.error]
    if not failed:
        return None
    return Lesson(
        run=state.run.id,
        task=task.id,
        title=task.spec.title,
        files=tuple(task.spec.files),
        error=_clip(failed[-1].error or "", ERROR_LIMIT),
        fix_summary=_clip(merged.summary or "", SUMMARY_LIMIT),
        fix_commit=merged.merge_commit,
        at=at or merged.ended or now_iso(),
        failures=len(failed),
        fix_attempt=merged.n,
    ).without_commands()


def record(repo: pygit2.Repository | str | os.PathLike, lesson: Lesson) -> pygit2.Oid:
    """Write (or replace) one entry with compare-and-swap on the ref; returns the new
    commit. Retries a lost race until it wins, for at most WRITE_TIMEOUT seconds (then
    OSError); clears a ref lock left behind by a killed writer."""
    r = _repo(repo)
    blob = (json.dumps(lesson.to_json(), sort_keys=True, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
    path = lesson.path
    message = f"lesson: {lesson.run}/{lesson.task}: {_one_line(lesson.title)[:120]}\n"
    deadline = time.monotonic() + WRITE_TIMEOUT
    while True:
        if time.monotonic() > deadline:
            raise OSError(f"could not update {LEARNING_REF} within {WRITE_TIMEOUT:.0f}s")
        try:
            current = r.references[LEARNING_REF].target
            base = r[current].peel(pygit2.Commit).tree
            parents = [current]
        except KeyError:
            current, base, parents = None, None, []
        tree = write_tree(r, base, {path: blob})
        sig = _signature(lesson.at)
        try:
            if current is None:
                oid = r.create_commit(None, sig, sig, message, tree, parents)
                r.references.create(LEARNING_REF, oid)  # create-if-absent
            else:
                oid = r.create_commit(LEARNING_REF, sig, sig, message, tree, parents)  # CAS on parent
            return oid
        except (pygit2.GitError, pygit2.AlreadyExistsError):
            continue  # another writer moved the ref: re-read and re-apply
        except OSError:
            _clear_stale_lock(r)
            time.sleep(random.uniform(0, 0.002))  # the ref is locked right now


def _clear_stale_lock(r: pygit2.Repository) -> None:
    """A ref lock left by a killed writer (git holds one for microseconds)."""
    lock = os.path.join(r.path, LEARNING_REF + ".lock")
    try:
        if time.time() - os.stat(lock).st_mtime > STALE_LOCK_SECONDS:
            os.unlink(lock)
    except FileNotFoundError:
        pass


def forget_run(repo: pygit2.Repository | str | os.PathLike, run_id: str) -> bool:
    """Remove every note of run `run_id` (a discarded run teaches nothing: its work was
    thrown away, and what its agents wrote must not reach later prompts). Compare-and-
    swap like `record`; True when notes were removed, False when it had none. Git
    failing is not worth failing a discard for: then False, and the notes stay."""
    if not is_valid_id(run_id):
        return False
    r = _repo(repo)
    deadline = time.monotonic() + WRITE_TIMEOUT
    while time.monotonic() <= deadline:
        try:
            current = r.references[LEARNING_REF].target
            base = r[current].peel(pygit2.Commit).tree
        except (KeyError, ValueError, pygit2.GitError):
            return False
        if run_id not in base:
            return False
        builder = r.TreeBuilder(base)
        builder.remove(run_id)
        sig = _signature(now_iso())
        try:
            r.create_commit(LEARNING_REF, sig, sig, f"forget the lessons of run {run_id} (discarded)\n",
                            builder.write(), [current])  # CAS on parent
            return True
        except (pygit2.GitError, pygit2.AlreadyExistsError):
            continue  # another writer moved the ref: re-read
        except OSError:
            _clear_stale_lock(r)
            time.sleep(random.uniform(0, 0.002))
    return False


def record_lessons(repo_dir: pygit2.Repository | str | os.PathLike, state: RunState, task_id: str) -> Lesson | None:
    """Called after a task's merge: when it had failed before, record what failed and
    what fixed it. Returns the lesson written, or None (nothing to learn, or git failed:
    a note is never worth failing a merge for)."""
    lesson = lesson_from_state(state, task_id)
    if lesson is None:
        return None
    try:
        record(repo_dir, lesson)
    except (pygit2.GitError, OSError, ValueError):
        return None
    return lesson


# ---------------------------------------------------------------- reading


def read_all(repo: pygit2.Repository | str | os.PathLike) -> list[Lesson]:
    """Every entry (at most MAX_ENTRIES_READ), in path order; [] without the ref."""
    r = _repo(repo)
    try:
        tree = r[r.references[LEARNING_REF].target].peel(pygit2.Commit).tree
    except (KeyError, ValueError, pygit2.GitError):
        return []
    out: list[Lesson] = []
    for run_entry in sorted(tree, key=lambda e: e.name):
        if run_entry.filemode != FileMode.TREE:
            continue
        for entry in sorted(r[run_entry.id], key=lambda e: e.name):  # type: ignore[union-attr]
            if len(out) >= MAX_ENTRIES_READ:
                return out
            if entry.filemode != FileMode.BLOB or not entry.name.endswith(".json"):
                continue
            try:
                data = json.loads(r[entry.id].data)
            except (ValueError, KeyError):
                continue
            if isinstance(data, Mapping):
                out.append(Lesson.from_json(data).without_commands())
    return out


def words(text: str) -> set[str]:
    """Significant words: 4+ characters, lowercased, no stop words; identifiers are
    also split at underscores (`start_attempt` gives start_attempt, start, attempt)."""
    out: set[str] = set()
    for w in _WORD.findall(text):
        w = w.lower()
        parts = [w, *w.split("_")] if "_" in w else [w]
        out.update(p for p in parts if len(p) >= 4 and p not in _STOPWORDS)
    return out


def relevance(lesson: Lesson, files: Iterable[str], text: str) -> tuple[int, int]:
    """(shared files, shared words) between a lesson and a task."""
    shared_files = len(set(lesson.files) & set(files))
    shared_words = len(words(f"{lesson.title} {' '.join(lesson.files)}") & words(text))
    return shared_files, shared_words


def select(lessons: Sequence[Lesson], spec: TaskSpec, limit: int = MAX_SELECTED, exclude_run_task: tuple[str, str] | None = None) -> list[Lesson]:
    """The lessons relevant to a task: sharing a file with its manifest, or at least
    MIN_SHARED_WORDS words of their title and files with its title and description.
    Most recent first (ties by run and task, so the choice is deterministic), at most
    `limit`."""
    text = f"{spec.title}\n{spec.description}\n{' '.join(spec.files)}"
    chosen = []
    for lesson in lessons:
        if exclude_run_task and (lesson.run, lesson.task) == exclude_run_task:
            continue
        shared_files, shared_words = relevance(lesson, spec.files, text)
        if shared_files or shared_words >= MIN_SHARED_WORDS:
            chosen.append(lesson)
    chosen.sort(key=lambda l: (l.at, l.run, l.task), reverse=True)
    return chosen[:limit]


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(text: str) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in text)
