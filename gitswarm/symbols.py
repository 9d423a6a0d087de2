"""Definitions and call sites in source files, for the context of a worker's prompt.

Three ways to find definitions, best first (docs/prompt-context.md):

- Python: the standard library's `ast`. Functions, classes and methods, each with its
  signature line rebuilt from the tree (`def f(a: int) -> str`) and its file:line.
- Other languages: universal-ctags when it is on PATH (`ctags --output-format=json`),
  run on copies of the blobs in a temporary folder, never on the user's checkout.
- Otherwise a regex fallback for JavaScript/TypeScript, Go and Rust: one pattern per kind
  of definition, matched line by line. It misses definitions a parser would find and can
  be fooled by strings and comments, so its results say `regex` as their source and the
  prompt labels them as such.

Call sites are found by text (`name(`) in other files of the same language: cheap,
bounded, and labelled as a text match.

Everything here is pure apart from the ctags subprocess: the same sources give the same
symbols in the same order.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

PYTHON = "python"
JS = "js"
GO = "go"
RUST = "rust"

# Extension -> language family (for the parsers, the regex fallback and call sites).
LANGUAGES: Mapping[str, str] = {
    ".py": PYTHON,
    ".pyi": PYTHON,
    ".js": JS,
    ".jsx": JS,
    ".mjs": JS,
    ".cjs": JS,
    ".ts": JS,
    ".tsx": JS,
    ".mts": JS,
    ".cts": JS,
    ".go": GO,
    ".rs": RUST,
}
# Other extensions ctags knows well; without ctags they get no symbols.
CTAGS_ONLY = frozenset({".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh", ".java", ".kt", ".rb", ".php", ".cs", ".swift", ".scala", ".lua", ".sh"})

SIGNATURE_LIMIT = 200  # characters of a signature line
CTAGS_TIMEOUT = 10.0
CTAGS_MAX_FILES = 60
CTAGS_MAX_BYTES = 2 * 1024 * 1024


def language_of(path: str) -> str | None:
    ext = posixpath.splitext(path)[1].lower()
    if ext in LANGUAGES:
        return LANGUAGES[ext]
    if ext in CTAGS_ONLY:
        return ext[1:]
    return None


@dataclass(frozen=True)
class Symbol:
    """One definition: `signature` is its first line (rebuilt for Python)."""

    name: str
    kind: str  # function, class, method, struct, interface, type, ...
    path: str
    line: int
    signature: str
    source: str  # "ast", "ctags" or "regex"
    scope: str | None = None  # the enclosing class (or type, impl, module)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def top_level(self) -> bool:
        return self.scope is None


@dataclass(frozen=True)
class CallSite:
    name: str
    path: str
    line: int
    text: str  # the line, stripped and cut

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def _cut(text: str, limit: int = SIGNATURE_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


# ---------------------------------------------------------------- Python: ast


def python_definitions(path: str, source: bytes | str) -> list[Symbol]:
    """Module-level functions and classes, and the methods (and nested classes) of
    classes, in file order. A file that does not parse falls back to the regex."""
    text = source if isinstance(source, str) else _decode(source)
    try:
        tree = ast.parse(text, filename=path)
    except (SyntaxError, ValueError):
        return regex_definitions(path, text, language=PYTHON)
    out: list[Symbol] = []

    def visit(body: Sequence[ast.stmt], scope: str | None) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                kind = "method" if scope else "function"
                out.append(Symbol(node.name, kind, path, node.lineno, _py_signature(node), "ast", scope))
            elif isinstance(node, ast.ClassDef):
                out.append(Symbol(node.name, "class", path, node.lineno, _py_signature(node), "ast", scope))
                visit(node.body, f"{scope}.{node.name}" if scope else node.name)

    visit(tree.body, None)
    return out


def _py_signature(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> str:
    try:
        if isinstance(node, ast.ClassDef):
            bases = [ast.unparse(b) for b in node.bases] + [ast.unparse(k) for k in node.keywords]
            return _cut(f"class {node.name}({', '.join(bases)})" if bases else f"class {node.name}")
        prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
        returns = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
        return _cut(f"{prefix} {node.name}({ast.unparse(node.args)}){returns}")
    except Exception:  # ast.unparse of an odd tree: the name is still worth showing
        return f"{'class' if isinstance(node, ast.ClassDef) else 'def'} {node.name}"


# ---------------------------------------------------------------- regex fallback

_KEYWORDS = frozenset({"if", "for", "while", "switch", "catch", "function", "return", "with", "else", "new", "typeof", "do", "try"})

_REGEXES: Mapping[str, Sequence[tuple[str, "re.Pattern[str]"]]] = {
    PYTHON: (
        ("function", re.compile(r"^(?P<indent>\s*)(?:async\s+)?def\s+(?P<name>\w+)\s*\(")),
        ("class", re.compile(r"^(?P<indent>\s*)class\s+(?P<name>\w+)\b")),
    ),
    JS: (
        ("function", re.compile(r"^(?P<indent>\s*)(?:export\s+)?(?:default\s+)?(?:async\s+)?function\s*\*?\s*(?P<name>[A-Za-z_$][\w$]*)\s*[<(]")),
        ("class", re.compile(r"^(?P<indent>\s*)(?:export\s+)?(?:default\s+)?(?:abstract\s+)?class\s+(?P<name>[A-Za-z_$][\w$]*)")),
        ("interface", re.compile(r"^(?P<indent>\s*)(?:export\s+)?(?:declare\s+)?interface\s+(?P<name>[A-Za-z_$][\w$]*)")),
        ("type", re.compile(r"^(?P<indent>\s*)(?:export\s+)?(?:declare\s+)?type\s+(?P<name>[A-Za-z_$][\w$]*)\s*(?:<[^=]*>)?\s*=")),
        ("enum", re.compile(r"^(?P<indent>\s*)(?:export\s+)?(?:const\s+)?enum\s+(?P<name>[A-Za-z_$][\w$]*)")),
        ("function", re.compile(r"^(?P<indent>\s*)(?:export\s+)?(?:const|let|var)\s+(?P<name>[A-Za-z_$][\w$]*)\s*(?::[^=]+)?=\s*(?:async\s+)?(?:function\b|\([^)]*\)\s*(?::[^=]+)?=>|[A-Za-z_$][\w$]*\s*=>)")),
        ("method", re.compile(r"^(?P<indent>\s+)(?:(?:public|private|protected|static|async|readonly|override|get|set)\s+)*(?P<name>[A-Za-z_$][\w$]*)\s*(?:<[^>]*>)?\([^)]*\)\s*(?::\s*[^{]+)?\{")),
    ),
    GO: (
        ("function", re.compile(r"^(?P<indent>)func\s+(?:\((?P<recv>[^)]*)\)\s*)?(?P<name>\w+)\s*[\[(]")),
        ("type", re.compile(r"^(?P<indent>\s*)type\s+(?P<name>\w+)\s+(?:struct|interface|func|map|\[|\*|\w)")),
    ),
    RUST: (
        ("function", re.compile(r"^(?P<indent>\s*)(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?(?:extern\s+\"[^\"]*\"\s+)?fn\s+(?P<name>\w+)")),
        ("struct", re.compile(r"^(?P<indent>\s*)(?:pub(?:\([^)]*\))?\s+)?struct\s+(?P<name>\w+)")),
        ("enum", re.compile(r"^(?P<indent>\s*)(?:pub(?:\([^)]*\))?\s+)?enum\s+(?P<name>\w+)")),
        ("trait", re.compile(r"^(?P<indent>\s*)(?:pub(?:\([^)]*\))?\s+)?(?:unsafe\s+)?trait\s+(?P<name>\w+)")),
        ("type", re.compile(r"^(?P<indent>\s*)(?:pub(?:\([^)]*\))?\s+)?type\s+(?P<name>\w+)")),
    ),
}
_RUST_BLOCK = re.compile(
    r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:unsafe\s+)?(?P<kind>impl|trait|mod)\b(?:<[^>]*>)?\s*"
    r"(?:[\w:]+(?:<[^>]*>)?\s+for\s+)?(?P<name>[\w:]+)"
)
_GO_RECEIVER = re.compile(r"\*?\s*([A-Za-z_]\w*)\s*(?:\[[^\]]*\])?\s*$")


def regex_definitions(path: str, source: bytes | str, language: str | None = None) -> list[Symbol]:
    """Definitions found line by line with the patterns above (the fallback)."""
    lang = language or language_of(path)
    patterns = _REGEXES.get(lang or "")
    if not patterns:
        return []
    text = source if isinstance(source, str) else _decode(source)
    out: list[Symbol] = []
    blocks: list[tuple[int, str, str]] = []  # Rust: enclosing impl/trait/mod (indent, kind, name)
    for lineno, line in enumerate(text.splitlines(), 1):
        if len(line) > 1000:
            continue
        if lang == RUST and line.strip():
            indent = len(line) - len(line.lstrip())
            while blocks and blocks[-1][0] >= indent:
                blocks.pop()
            h = _RUST_BLOCK.match(line)
            if h:
                blocks.append((indent, h.group("kind"), h.group("name")))
        for kind, pattern in patterns:
            m = pattern.match(line)
            if not m:
                continue
            name = m.group("name")
            if name in _KEYWORDS:
                break
            scope = None
            if lang == GO and m.groupdict().get("recv"):
                r = _GO_RECEIVER.search(m.group("recv"))
                scope = r.group(1) if r else None
                kind = "method"
            elif lang == RUST and kind == "function":
                inner = [b for b in blocks if b[0] < len(m.group("indent"))]
                if inner and inner[-1][1] in ("impl", "trait"):
                    kind, scope = "method", inner[-1][2]
            elif m.group("indent") and kind in ("function", "method") and lang in (PYTHON, JS):
                kind = "method"
            out.append(Symbol(name, kind, path, lineno, _cut(line.strip()), "regex", scope))
            break
    return out


# ---------------------------------------------------------------- ctags


@functools.lru_cache(maxsize=8)
def ctags_command(candidate: str | None = "ctags") -> str | None:
    """The universal-ctags executable when it is on PATH and writes JSON, else None."""
    if not candidate:
        return None
    exe = shutil.which(candidate)
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, "--options=NONE", "--list-features"], capture_output=True, text=True, timeout=CTAGS_TIMEOUT)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0 or not re.search(r"^json\b", proc.stdout, re.MULTILINE):
        return None
    return exe


_CTAGS_KINDS = {
    "function": "function",
    "func": "function",
    "method": "method",
    "class": "class",
    "struct": "struct",
    "interface": "interface",
    "trait": "trait",
    "enum": "enum",
    "type": "type",
    "typedef": "type",
    "macro": "macro",
}


def ctags_definitions(sources: Mapping[str, bytes], exe: str) -> list[Symbol]:
    """Definitions in `sources` (path -> content) by universal-ctags, run on copies in a
    temporary folder with no user options (`--options=NONE`). Bounded in files and bytes;
    [] if ctags fails."""
    chosen: list[str] = []
    total = 0
    for path in sorted(sources):
        data = sources[path]
        if len(chosen) >= CTAGS_MAX_FILES or total + len(data) > CTAGS_MAX_BYTES:
            break
        if path.startswith("/") or ".." in path.split("/"):
            continue
        chosen.append(path)
        total += len(data)
    if not chosen:
        return []
    with tempfile.TemporaryDirectory(prefix="gitswarm-ctags-") as tmp:
        for path in chosen:
            dest = os.path.join(tmp, *path.split("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "wb") as fh:
                fh.write(sources[path])
        try:
            proc = subprocess.run(
                [exe, "--options=NONE", "--output-format=json", "--fields=+nS", "--sort=no", "-f", "-", *("./" + p for p in chosen)],
                cwd=tmp, capture_output=True, timeout=CTAGS_TIMEOUT,
            )
        except (OSError, subprocess.SubprocessError):
            return []
    if proc.returncode != 0:
        return []
    out: list[Symbol] = []
    for raw in proc.stdout.decode("utf-8", errors="replace").splitlines():
        try:
            tag = json.loads(raw)
        except ValueError:
            continue
        if tag.get("_type") != "tag" or not isinstance(tag.get("line"), int):
            continue
        line_text = _pattern_text(str(tag.get("pattern", "")))
        kind = _CTAGS_KINDS.get(str(tag.get("kind", "")))
        if kind is None and tag.get("kind") in ("constant", "variable") and re.search(r"=>|\bfunction\b", line_text):
            kind = "function"  # const f = (...) => ...
        if kind is None:
            continue
        scope = tag.get("scope")
        if isinstance(scope, str) and tag.get("scopeKind") in ("package", "module") and kind != "method":
            scope = None  # Go's package scope, Rust's module: still top level for us
        path = str(tag.get("path", ""))
        path = path[2:] if path.startswith("./") else path
        out.append(Symbol(str(tag["name"]), kind, path, int(tag["line"]), _cut(line_text or str(tag["name"])), "ctags", scope if isinstance(scope, str) else None))
    out.sort(key=lambda s: (s.path, s.line, s.name))
    return out


def _pattern_text(pattern: str) -> str:
    """ctags' search pattern `/^  text$/` back to the line's text."""
    if pattern.startswith("/") and pattern.endswith("/"):
        pattern = pattern[1:-1]
    if pattern.startswith("^"):
        pattern = pattern[1:]
    if pattern.endswith("$"):
        pattern = pattern[:-1]
    return pattern.replace("\\/", "/").replace("\\\\", "\\").strip()


# ---------------------------------------------------------------- all together


@dataclass(frozen=True)
class Definitions:
    symbols: tuple[Symbol, ...]
    parsers: tuple[str, ...]  # e.g. ("python ast", "ctags"), for the prompt's label


def definitions(sources: Mapping[str, bytes], ctags: str | None = None) -> Definitions:
    """Definitions in every file of `sources` (path -> content), each file by the best
    parser available: ast for Python, `ctags` (an executable found by `ctags_command`)
    for the rest, else the regex fallback. In (path, line) order."""
    symbols: list[Symbol] = []
    used: set[str] = set()
    others: dict[str, bytes] = {}
    for path in sorted(sources):
        lang = language_of(path)
        if lang == PYTHON:
            found = python_definitions(path, sources[path])
            symbols += found
            used.update("Python's ast" if s.source == "ast" else "regex fallback (Python that does not parse)" for s in found)
        elif lang is not None:
            others[path] = sources[path]
    if others:
        tagged: list[Symbol] = ctags_definitions(others, ctags) if ctags else []
        tagged_paths = {s.path for s in tagged}
        if tagged:
            used.add("ctags")
        for path in sorted(others):
            if path in tagged_paths:
                continue
            found = regex_definitions(path, others[path])
            if found:
                used.add("regex fallback" if not ctags else "regex fallback (ctags found nothing)")
            symbols += found
        symbols += tagged
    symbols.sort(key=lambda s: (s.path, s.line, s.name))
    return Definitions(tuple(symbols), tuple(sorted(used)))


def definition_hint(name: str) -> "re.Pattern[str]":
    """A cheap pre-filter: does a file seem to define `name` (in any language)?"""
    n = re.escape(name)
    return re.compile(
        rf"(?:\b(?:def|class|function|fn|func|struct|enum|trait|interface|type)\s+(?:\([^)]*\)\s*)?{n}\b|\b(?:const|let|var)\s+{n}\s*(?::[^=\n]+)?=)"
    )


@functools.lru_cache(maxsize=64)
def _call_pattern(names: tuple[str, ...]) -> "re.Pattern[str]":
    return re.compile(r"(?<![\w$])(" + "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) + r")\s*\(")


_DEFINITION_BEFORE = re.compile(r"\b(?:def|function|fn|func|class)\s+(?:\([^)]*\)\s*)?$")


def call_sites(
    names: Iterable[str],
    sources: Mapping[str, bytes],
    *,
    per_name: int = 3,
    exclude: Mapping[str, Iterable[str]] | None = None,
    require: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, list[CallSite]]:
    """Where each name is called (`name(`), by text, in `sources` (path -> content, in
    the order given: the caller puts the nearest files first). At most `per_name` sites
    per name; `exclude` maps a name to paths not to look in (its own file); `require`
    maps a name to words one of which a file must contain for its sites to count (the
    defining module's name, say: a file that never mentions it calls another `name`),
    and which must be the qualifier of a dotted call (`module.name(`, not `obj.name(`).
    Definition lines (`def name(`, `fn name(`, ...) are not call sites."""
    wanted = sorted(set(names))
    found: dict[str, list[CallSite]] = {n: [] for n in wanted}
    skip = {n: set(exclude.get(n, ())) for n in wanted} if exclude else {}
    needs = dict(require or {})
    open_names = set(wanted)
    for path, data in sources.items():
        if not open_names:
            break
        text = _decode(data)
        here = tuple(sorted(
            n for n in open_names
            if n in text and path not in skip.get(n, ()) and (not needs.get(n) or any(w in text for w in needs[n]))
        ))
        if not here:
            continue
        seen: set[tuple[str, int]] = set()
        for m in _call_pattern(here).finditer(text):
            name = m.group(1)
            if name not in open_names:
                continue
            start = text.rfind("\n", 0, m.start()) + 1
            if needs.get(name) and m.start() > start and text[m.start() - 1] == ".":
                # `x.name(`: a call of this module-level name only as `module.name(`
                q = re.search(r"([A-Za-z_]\w*)\s*\.$", text[max(start, m.start() - 80) : m.start()])
                if not q or q.group(1) not in needs[name]:
                    continue
            if _DEFINITION_BEFORE.search(text, start, m.start()):
                continue
            lineno = text.count("\n", 0, start) + 1
            if (name, lineno) in seen:
                continue
            seen.add((name, lineno))
            end = text.find("\n", m.end())
            line = text[start : end if end >= 0 else len(text)]
            found[name].append(CallSite(name, path, lineno, _cut(line.strip(), 160)))
            if len(found[name]) >= per_name:
                open_names.discard(name)
    return found
