"""The syntax gate: changed .py, .json, .yaml/.yml and .toml files must parse.

Cheap and certain, so it runs twice: in the worker's pre-commit hook (the agent hears
about its mistake while it can still fix it) and on the attempt's final commit before
any merge (an agent can bypass hooks with --no-verify). Contents are always read from
git (the commit or the index), never from the work tree, so what is checked is exactly
what would be merged.

Every problem carries file:line:col, 1-based, pointing at the character the parser
stopped on, so an agent (or a person) can jump to it.
"""

from __future__ import annotations

import argparse
import codecs
import io
import json
import os
import re
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode, ScalarNode

from .gitops import GitswarmError, git, git_bytes

try:  # stdlib from 3.11
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - exercised on 3.10 only
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ModuleNotFoundError:
        _toml = None  # type: ignore[assignment]

# Regular files only: symlinks (120000) hold a target path, gitlinks (160000) a commit.
_REGULAR_MODES = ("100644", "100755")


@dataclass(frozen=True)
class SyntaxProblem:
    """A file that does not parse, and where."""

    path: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message}"


# -- positions and decoding


def _position(data: bytes | str, index: int) -> tuple[int, int]:
    """1-based line and column of offset `index` in `data`."""
    newline = b"\n" if isinstance(data, bytes) else "\n"
    line = data.count(newline, 0, index) + 1  # type: ignore[arg-type]
    start = data.rfind(newline, 0, index) + 1  # type: ignore[arg-type]
    return line, index - start + 1


def _decode(path: str, content: bytes) -> str | SyntaxProblem:
    """UTF-8 (a BOM allowed; UTF-16/32 when their BOM says so), as JSON, YAML and TOML
    files are written. An undecodable byte is a problem at its own position."""
    for bom, encoding in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                          (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if content.startswith(bom):
            try:
                return content.decode(encoding)
            except UnicodeDecodeError as exc:
                return SyntaxProblem(path, 1, 1, f"cannot decode as {encoding}: {exc.reason}")
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, col = _position(content, exc.start)
        return SyntaxProblem(path, line, col, f"not valid UTF-8: byte 0x{content[exc.start]:02x}")


# -- one checker per file type


def _check_python(path: str, content: bytes) -> SyntaxProblem | None:
    """compile(), not ast.parse(): it also rejects `return` outside a function and the
    like. Decoded first (honouring a coding cookie) so columns count characters."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(content).readline)
        text = content.decode(encoding)
    except SyntaxError as exc:  # unknown coding cookie
        return SyntaxProblem(path, exc.lineno or 1, 1, exc.msg)
    except (UnicodeDecodeError, LookupError) as exc:
        if isinstance(exc, UnicodeDecodeError):
            line, col = _position(content, exc.start)
            return SyntaxProblem(path, line, col, f"cannot decode as {exc.encoding}: {exc.reason}")
        return SyntaxProblem(path, 1, 1, str(exc))
    if "\0" in text:  # compile() reports no position for this one
        line, col = _position(text, text.index("\0"))
        return SyntaxProblem(path, line, col, "source code cannot contain null bytes")
    try:
        compile(text, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return SyntaxProblem(path, exc.lineno or 1, max(exc.offset or 1, 1), exc.msg)
    except (ValueError, RecursionError, MemoryError) as exc:
        return SyntaxProblem(path, 1, 1, f"cannot compile: {exc}")
    return None


def _check_json(path: str, content: bytes) -> SyntaxProblem | None:
    text = _decode(path, content)
    if isinstance(text, SyntaxProblem):
        return text
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return SyntaxProblem(path, exc.lineno, exc.colno, exc.msg)
    except RecursionError:
        return SyntaxProblem(path, 1, 1, "nested too deeply to parse")
    return None


def _looks_templated(text: str) -> bool:
    """Helm charts and Jinja files carry .yaml names but are YAML only after rendering."""
    return "{{" in text and "}}" in text or "{%" in text and "%}" in text


def _duplicate_key(node: Node, seen: set[int]) -> ScalarNode | None:
    """The first mapping key that repeats an earlier key of its mapping (YAML requires
    keys to be unique; the safe loader refuses such files)."""
    if id(node) in seen:
        return None
    seen.add(id(node))
    if isinstance(node, MappingNode):
        keys: set[tuple[str, str]] = set()
        for key, value in node.value:
            if isinstance(key, ScalarNode) and key.value != "<<":
                k = (key.tag, key.value) if not hasattr(key.tag, "value") else (key.tag.value, key.value)
                if k in keys:
                    return key
                keys.add(k)
            for child in (key, value):
                found = _duplicate_key(child, seen)
                if found is not None:
                    return found
    elif isinstance(node, SequenceNode):
        for child in node.value:
            found = _duplicate_key(child, seen)
            if found is not None:
                return found
    return None


def _check_yaml(path: str, content: bytes) -> SyntaxProblem | None:
    """Every document of the stream is parsed and composed with the safe loader's
    parser, without constructing Python objects: application tags (`!Ref`, mkdocs'
    `!!python/name:`) are valid YAML that only their own application can construct,
    and must not fail the gate. Duplicate keys are checked on the composed nodes."""
    text = _decode(path, content)
    if isinstance(text, SyntaxProblem):
        return text
    yaml = YAML(typ="safe", pure=True)
    try:
        documents = list(yaml.compose_all(text))
    except MarkedYAMLError as exc:
        if _looks_templated(text):
            return None
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        message = exc.problem or exc.context or type(exc).__name__
        if exc.problem and exc.context:
            ctx = exc.context_mark
            started = f" started at {ctx.line + 1}:{ctx.column + 1}" if ctx is not None and ctx is not mark else ""
            message = f"{exc.problem} ({exc.context}{started})"
        return SyntaxProblem(path, line, col, message)
    except (YAMLError, RecursionError) as exc:
        return SyntaxProblem(path, 1, 1, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    for document in documents:
        if document is None:
            continue
        key = _duplicate_key(document, set())
        if key is not None:
            mark = key.start_mark
            return SyntaxProblem(path, mark.line + 1, mark.column + 1, f"duplicate key {key.value!r}")
    return None


_TOML_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_END = re.compile(r"\s*\(at end of document\)\s*$")


def _check_toml(path: str, content: bytes) -> SyntaxProblem | None:
    """tomllib (tomli before 3.11) reports the place only inside its message:
    "Invalid value (at line 2, column 5)" or "(at end of document)"."""
    if _toml is None:
        return None  # Python 3.10 without tomli: no TOML parser, no TOML gate
    try:
        text = content.decode("utf-8")  # TOML is UTF-8, no BOM
    except UnicodeDecodeError as exc:
        line, col = _position(content, exc.start)
        return SyntaxProblem(path, line, col, f"not valid UTF-8: byte 0x{content[exc.start]:02x}")
    try:
        _toml.loads(text)
    except _toml.TOMLDecodeError as exc:
        message = str(exc.args[0]) if exc.args else str(exc)
        if getattr(exc, "lineno", None) and getattr(exc, "colno", None):  # Python 3.14+
            return SyntaxProblem(path, exc.lineno, exc.colno, getattr(exc, "msg", message))
        at = _TOML_AT.search(message)
        if at:
            return SyntaxProblem(path, int(at.group(1)), int(at.group(2)), message[: at.start()])
        if _TOML_END.search(message):
            line, col = _position(text, len(text))
            return SyntaxProblem(path, line, col, _TOML_END.sub("", message) + " (at end of file)")
        return SyntaxProblem(path, 1, 1, message)
    except RecursionError:
        return SyntaxProblem(path, 1, 1, "nested too deeply to parse")
    return None


_CHECKERS: dict[str, Callable[[str, bytes], SyntaxProblem | None]] = {
    ".py": _check_python,
    ".json": _check_json,
    ".yaml": _check_yaml,
    ".yml": _check_yaml,
    ".toml": _check_toml,
}


def is_checked(path: str) -> bool:
    """Whether the gate has a parser for this file (by extension)."""
    return Path(path).suffix.lower() in _CHECKERS


def check_file(path: str, content: bytes) -> SyntaxProblem | None:
    """The problem with one file's content, or None (also for types we do not parse)."""
    checker = _CHECKERS.get(Path(path).suffix.lower())
    return checker(path, content) if checker else None


# -- reading what git has


def _read_blobs(repo_dir: Path | str, oids: Sequence[str]) -> list[bytes]:
    """Contents of blobs, in order, with one `git cat-file --batch` process."""
    if not oids:
        return []
    out = git_bytes(repo_dir, "cat-file", "--batch", input="".join(f"{o}\n" for o in oids).encode())
    blobs: list[bytes] = []
    pos = 0
    for oid in oids:
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        if len(header) != 3:
            raise GitswarmError(f"git cat-file --batch: cannot read object {oid}: {out[pos:end]!r}")
        size = int(header[2])
        blobs.append(out[end + 1: end + 1 + size])
        pos = end + 1 + size + 1  # content, then a newline
    return blobs


def _raw_changes(raw: str) -> list[tuple[str, str]]:
    """(path, new blob id) of added/modified regular files in `--raw -z` diff output."""
    fields = raw.split("\0")
    out: list[tuple[str, str]] = []
    for i in range(0, len(fields) - 1, 2):
        meta, path = fields[i], fields[i + 1]
        parts = meta.lstrip(":").split()
        if len(parts) < 5:
            continue
        new_mode, new_oid = parts[1], parts[3]
        if new_mode in _REGULAR_MODES and is_checked(path):
            out.append((path, new_oid))
    return out


def _check_blobs(repo_dir: Path | str, changes: Iterable[tuple[str, str]]) -> list[SyntaxProblem]:
    changes = list(changes)
    contents = _read_blobs(repo_dir, [oid for _, oid in changes])
    problems = [check_file(path, data) for (path, _), data in zip(changes, contents)]
    return [p for p in problems if p is not None]


def syntax_gate(repo_dir: Path | str, base: str, commit: str) -> list[SyntaxProblem]:
    """Problems in files added or modified between `base` and `commit` (deleted files
    are skipped), read from `commit` itself."""
    raw = git(
        repo_dir, "diff-tree", "-r", "-z", "--raw", "--no-renames", "--no-abbrev",
        "--diff-filter=AMT", base, commit,
    ).stdout
    return _check_blobs(repo_dir, _raw_changes(raw))


def check_staged(worktree: Path | str, index_file: str | None = None) -> list[SyntaxProblem]:
    """Problems in staged added/modified files, read from the index.

    `index_file` is the index git is committing: in a pre-commit hook it is the hook's
    GIT_INDEX_FILE, which for `git commit -a` or `git commit <path>` is a temporary
    index (`index.lock`, `next-index-*.lock`), not the worktree's own. gitops drops an
    inherited GIT_INDEX_FILE from git's environment, so it is passed on explicitly.
    """
    env = {"GIT_INDEX_FILE": index_file} if index_file else None
    raw = git(
        worktree, "diff", "--cached", "-z", "--raw", "--no-renames", "--no-abbrev",
        "--diff-filter=AMT", "--ignore-submodules=all", env=env,
    ).stdout
    return _check_blobs(worktree, _raw_changes(raw))


def syntax_check(enabled: bool) -> dict[str, object]:
    """The attempt's record of a syntax gate that found nothing: passed when it ran,
    skipped (with why) when the user turned it off, so a reader never takes an
    unchecked file for a checked one."""
    if enabled:
        return {"gate": "syntax", "ok": True}
    return {"gate": "syntax", "ok": True, "skipped": True, "detail": "skipped: gates.syntax is off"}


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m gitswarm.gates --staged [--repo DIR]` (the pre-commit hook) or
    `python -m gitswarm.gates BASE COMMIT [--repo DIR]`: problems on stderr, exit 1.
    Exit 2 when the gate itself could not run (the hook lets such commits through: the
    gate on the final commit still runs)."""
    parser = argparse.ArgumentParser(prog="python -m gitswarm.gates", description=__doc__.splitlines()[0])
    parser.add_argument("--staged", action="store_true", help="check the staged files (pre-commit)")
    parser.add_argument("--repo", default=".", help="repository or worktree (default: .)")
    parser.add_argument("revs", nargs="*", metavar="BASE COMMIT")
    args = parser.parse_args(argv)
    if not args.staged and len(args.revs) != 2:
        parser.error("give --staged or BASE COMMIT")
    try:
        if args.staged:
            index = os.environ.get("GIT_INDEX_FILE")
            problems = check_staged(args.repo, os.path.abspath(index) if index else None)
        else:
            problems = syntax_gate(args.repo, args.revs[0], args.revs[1])
    except GitswarmError as exc:
        print(f"gitswarm gates: {exc}", file=sys.stderr)
        return 2
    if problems:
        print("gitswarm: syntax errors, commit refused:" if args.staged else "gitswarm: syntax errors:",
              file=sys.stderr)
        for p in problems:
            print(str(p), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
