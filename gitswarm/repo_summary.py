"""What the planner is told about the repository: a bounded summary of the base commit.

The file tree (collapsed into folders when it is long), the languages by file count, the
test command the gates would run, and the key Python symbols (top-level functions and
classes, read with `ast`). Everything here is a pure function of a file list and the
contents of a few files, except `read_commit`, which reads them from git. The summary
is read from the run's base commit, not from the work tree, so it describes exactly the
code the workers will start from (uncommitted edits are in it only with
--include-uncommitted, whose snapshot is then the base).

Every part is bounded, so a repository of 100,000 files still gives a prompt of a few
thousand words; the planner agent can look further itself in its own worktree.
"""

from __future__ import annotations

import ast
import posixpath
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pygit2

MAX_TREE_LINES = 150  # lines of the file tree
MAX_SYMBOL_FILES = 60  # Python files whose symbols are listed
MAX_SYMBOLS_PER_FILE = 12
MAX_SYMBOLS = 200
MAX_PARSED_BYTES = 200_000  # bigger Python files are not parsed (generated code, data)
MAX_SUMMARY_CHARS = 16_000

# Root files whose content decides the test command.
TEST_CONFIG_FILES = ("package.json", "pyproject.toml", "setup.cfg", "tox.ini", "pytest.ini")

LANGUAGES: Mapping[str, str] = {
    ".py": "Python", ".pyi": "Python", ".js": "JavaScript", ".mjs": "JavaScript", ".cjs": "JavaScript",
    ".jsx": "JavaScript", ".ts": "TypeScript", ".tsx": "TypeScript", ".go": "Go", ".rs": "Rust",
    ".java": "Java", ".kt": "Kotlin", ".scala": "Scala", ".rb": "Ruby", ".php": "PHP", ".cs": "C#",
    ".c": "C", ".h": "C/C++ header", ".cc": "C++", ".cpp": "C++", ".hpp": "C++", ".swift": "Swift",
    ".m": "Objective-C", ".sh": "Shell", ".bash": "Shell", ".lua": "Lua", ".r": "R", ".jl": "Julia",
    ".ex": "Elixir", ".exs": "Elixir", ".erl": "Erlang", ".hs": "Haskell", ".ml": "OCaml", ".dart": "Dart",
    ".vue": "Vue", ".svelte": "Svelte", ".html": "HTML", ".css": "CSS", ".scss": "CSS", ".sql": "SQL",
    ".md": "Markdown", ".rst": "reStructuredText", ".yaml": "YAML", ".yml": "YAML", ".toml": "TOML",
    ".json": "JSON",
}
_NPM_NO_TESTS = "no test specified"  # the placeholder `npm init` writes as scripts.test


@dataclass(frozen=True)
class Symbol:
    path: str
    line: int
    text: str  # `def name(args)` or `class Name(Bases)`


@dataclass(frozen=True)
class RepoSummary:
    files: int
    tree: tuple[str, ...]
    languages: tuple[tuple[str, int], ...]
    test_command: str | None
    symbols: tuple[Symbol, ...] = ()
    symbols_left_out: int = 0  # symbols beyond the bounds


# ---------------------------------------------------------------- pure parts


def file_tree(files: Sequence[str], limit: int = MAX_TREE_LINES) -> list[str]:
    """The files, or, when there are more than `limit`, folders with their file counts:
    deeper levels are collapsed first, so the shape of the project stays visible."""
    ordered = sorted(files)
    if len(ordered) <= limit:
        return ordered
    lines: list[str] = []
    for depth in (3, 2, 1):
        lines = _collapsed(ordered, depth)
        if len(lines) <= limit:
            return lines
    return lines[: limit - 1] + [f"... and {len(lines) - limit + 1} more entries"]


def _collapsed(files: Sequence[str], depth: int) -> list[str]:
    """Files up to `depth` path components as they are; deeper ones counted per folder."""
    counts: Counter[str] = Counter()
    shown: list[str] = []
    for f in files:
        parts = f.split("/")
        if len(parts) <= depth:
            shown.append(f)
        else:
            counts["/".join(parts[:depth]) + "/"] += 1
    shown += [f"{folder} ({n} file{'s' if n != 1 else ''})" for folder, n in counts.items()]
    return sorted(shown)


def languages(files: Iterable[str], limit: int = 8) -> list[tuple[str, int]]:
    """Languages by number of files, most first (ties by name)."""
    counts: Counter[str] = Counter()
    for f in files:
        lang = LANGUAGES.get(posixpath.splitext(f)[1].lower())
        if lang:
            counts[lang] += 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]


def detect_test_command(files: Sequence[str], contents: Mapping[str, str], configured: str | None = None) -> str | None:
    """The command that runs the project's tests: the config's `gates.test_command` if
    set, else what the test gate would detect (gitswarm.verify.detect_runner)."""
    if configured and configured.strip():
        return configured.strip()
    from .verify import detect_runner, display_command  # the gate's own rules, one place

    found = detect_runner(list(files), contents.get)
    return display_command(found[0], files) if found else None


def _is_python_test(path: str) -> bool:
    name = posixpath.basename(path)
    return name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py"))


def python_symbols(path: str, source: str, limit: int = MAX_SYMBOLS_PER_FILE) -> list[Symbol]:
    """Top-level functions and classes of one Python file, public ones only; [] when it
    does not parse (a planner summary is no place to report syntax errors)."""
    try:
        tree = ast.parse(source, filename=path)
    except (SyntaxError, ValueError, RecursionError):
        return []
    out: list[Symbol] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
            out.append(Symbol(path, node.lineno, f"{prefix} {node.name}({_args(node.args)})"))
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            bases = ", ".join(_unparse(b) for b in node.bases)
            out.append(Symbol(path, node.lineno, f"class {node.name}" + (f"({bases})" if bases else "")))
        if len(out) >= limit:
            break
    return out


def _args(args: ast.arguments) -> str:
    names = [a.arg for a in (*args.posonlyargs, *args.args)]
    if args.vararg:
        names.append("*" + args.vararg.arg)
    names += [a.arg for a in args.kwonlyargs]
    if args.kwarg:
        names.append("**" + args.kwarg.arg)
    text = ", ".join(names)
    return text if len(text) <= 80 else text[:77] + "..."


def _unparse(node: ast.AST) -> str:
    try:
        text = ast.unparse(node)
    except Exception:  # noqa: BLE001 - an exotic node must not break the summary
        return "?"
    return text if len(text) <= 40 else text[:37] + "..."


def symbol_files(files: Sequence[str], limit: int = MAX_SYMBOL_FILES) -> list[str]:
    """The Python files worth listing symbols of: source before tests, shallow before
    deep (a package's API is near its top), then by name; at most `limit`."""
    py = [f for f in files if f.endswith(".py") and not posixpath.basename(f).startswith(".")]
    return sorted(py, key=lambda f: (_is_python_test(f) or "/tests/" in f"/{f}", f.count("/"), f))[:limit]


def summarize(files: Sequence[str], contents: Mapping[str, str], configured_test_command: str | None = None) -> RepoSummary:
    """The summary of a file list and the contents read for it (see `wanted_contents`)."""
    symbols: list[Symbol] = []
    left_out = 0
    for path in symbol_files(files):
        source = contents.get(path)
        if source is None:
            continue
        found = python_symbols(path, source)
        room = MAX_SYMBOLS - len(symbols)
        symbols += found[: max(0, room)]
        left_out += max(0, len(found) - max(0, room))
    return RepoSummary(
        files=len(files),
        tree=tuple(file_tree(files)),
        languages=tuple(languages(files)),
        test_command=detect_test_command(files, contents, configured_test_command),
        symbols=tuple(symbols),
        symbols_left_out=left_out,
    )


def wanted_contents(files: Sequence[str]) -> list[str]:
    """The files whose contents `summarize` reads: test configs and the symbol files."""
    names = set(files)
    return [f for f in TEST_CONFIG_FILES if f in names] + symbol_files(files)


def render(summary: RepoSummary, limit: int = MAX_SUMMARY_CHARS) -> str:
    """The summary as Markdown for the planner's prompt, at most `limit` characters."""
    lines = [f"{summary.files} tracked file{'s' if summary.files != 1 else ''}."]
    if summary.languages:
        lines.append("Languages (files): " + ", ".join(f"{name} {n}" for name, n in summary.languages) + ".")
    lines.append(f"Test command: `{summary.test_command}`." if summary.test_command
                 else "Test command: none detected (no test gate unless the config sets gates.test_command).")
    lines += ["", "### Files", "", "```", *summary.tree, "```"]
    if summary.symbols:
        lines += ["", "### Key Python symbols", ""]
        current = None
        for s in summary.symbols:
            if s.path != current:
                current = s.path
                lines.append(f"- {s.path}:")
            lines.append(f"  - {s.text} (line {s.line})")
        if summary.symbols_left_out:
            lines.append(f"- ... and {summary.symbols_left_out} more")
    text = "\n".join(lines)
    if len(text) > limit:
        text = text[: limit - 40].rsplit("\n", 1)[0] + "\n... (summary cut here)"
        if text.count("```") % 2:  # do not leave a code fence open
            text += "\n```"
    return text


# ---------------------------------------------------------------- reading git (the I/O)


def read_commit(repo_dir: Path | str, commit: str) -> tuple[list[str], dict[str, str]]:
    """The tracked files of `commit` and the contents `summarize` needs (UTF-8 text up to
    MAX_PARSED_BYTES each). Read from the object database: no checkout is involved."""
    repo = pygit2.Repository(str(repo_dir))
    tree = repo.revparse_single(commit).peel(pygit2.Commit).tree
    blobs: dict[str, pygit2.Oid] = {}
    _walk(repo, tree, "", blobs)
    files = sorted(blobs)
    contents: dict[str, str] = {}
    for path in wanted_contents(files):
        blob = repo[blobs[path]]
        if blob.size > MAX_PARSED_BYTES:
            continue
        try:
            contents[path] = blob.data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return files, contents


def _walk(repo: pygit2.Repository, tree: pygit2.Tree, prefix: str, out: dict[str, pygit2.Oid]) -> None:
    for entry in tree:
        path = prefix + entry.name
        if entry.type_str == "tree":
            _walk(repo, repo[entry.id], path + "/", out)
        elif entry.type_str == "blob":
            out[path] = entry.id
        # commits (submodules) are left out: their files are not in this repository


def summarize_commit(repo_dir: Path | str, commit: str, configured_test_command: str | None = None) -> str:
    """The rendered summary of `commit`, for the planner's prompt."""
    files, contents = read_commit(repo_dir, commit)
    return render(summarize(files, contents, configured_test_command))


__all__ = [
    "RepoSummary", "Symbol", "detect_test_command", "file_tree", "languages", "python_symbols", "read_commit",
    "render", "summarize", "summarize_commit", "symbol_files", "wanted_contents",
]
