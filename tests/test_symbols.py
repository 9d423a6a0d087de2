"""Definitions and call sites: Python through ast, other languages through universal-ctags
when it is installed, else the regex fallback."""

from __future__ import annotations

import keyword

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gitswarm.symbols import (
    Symbol,
    call_sites,
    ctags_command,
    ctags_definitions,
    definitions,
    language_of,
    python_definitions,
    regex_definitions,
)

PY = b'''\
import os


def plain(a, b=2, *args, key: str = "k", **kw) -> int:
    return a


async def fetch(url: str) -> bytes:
    return b""


class Base:
    pass


class Shape(Base, metaclass=type):
    """A shape."""

    def area(self) -> float:
        def helper():  # nested in a function: not listed
            return 1
        return 0.0

    @property
    def name(self):
        return "s"

    class Inner:
        def deep(self, x):
            return x
'''


def test_python_definitions_through_ast() -> None:
    got = [(s.name, s.kind, s.line, s.scope, s.signature) for s in python_definitions("pkg/shapes.py", PY)]
    assert got == [
        ("plain", "function", 4, None, "def plain(a, b=2, *args, key: str='k', **kw) -> int"),
        ("fetch", "function", 8, None, "async def fetch(url: str) -> bytes"),
        ("Base", "class", 12, None, "class Base"),
        ("Shape", "class", 16, None, "class Shape(Base, metaclass=type)"),
        ("area", "method", 19, "Shape", "def area(self) -> float"),
        ("name", "method", 25, "Shape", "def name(self)"),
        ("Inner", "class", 28, "Shape", "class Inner"),
        ("deep", "method", 29, "Shape.Inner", "def deep(self, x)"),
    ]
    s = python_definitions("pkg/shapes.py", PY)[0]
    assert s.source == "ast" and s.where == "pkg/shapes.py:4" and s.top_level


def test_python_that_does_not_parse_falls_back_to_the_regex() -> None:
    broken = b"def ok(a):\n    return a\n\nclass Half(\n    def method(self):\n"
    got = python_definitions("m.py", broken)
    assert {s.source for s in got} == {"regex"}
    assert [(s.name, s.kind, s.line) for s in got] == [("ok", "function", 1), ("Half", "class", 4), ("method", "method", 5)]


IDENT = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(lambda n: not keyword.iskeyword(n) and not keyword.issoftkeyword(n))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(IDENT, st.integers(0, 3), st.booleans(), st.integers(0, 2)), min_size=1, max_size=12, unique_by=lambda t: t[0]))
def test_python_definitions_find_every_generated_function_at_its_line(funcs: list[tuple[str, int, bool, int]]) -> None:
    lines: list[str] = []
    expected = []
    for name, nargs, is_class, blank in funcs:
        lines += [""] * blank
        args = ", ".join(f"a{i}" for i in range(nargs))
        if is_class:
            lines.append(f"class {name.capitalize()}X:")
            expected.append((f"{name.capitalize()}X", "class", len(lines), f"class {name.capitalize()}X"))
            lines.append(f"    def {name}(self{', ' + args if args else ''}):")
            expected.append((name, "method", len(lines), f"def {name}(self{', ' + args if args else ''})"))
            lines.append("        return 1")
        else:
            lines.append(f"def {name}({args}):")
            expected.append((name, "function", len(lines), f"def {name}({args})"))
            lines.append("    return 1")
    got = [(s.name, s.kind, s.line, s.signature) for s in python_definitions("gen.py", "\n".join(lines) + "\n")]
    assert got == expected


JS = """\
import x from "y";
export function greet(name) { return name }
export default async function main() {}
export class Greeter extends Base {
  hello(x) {
    if (x) {
      return x
    }
  }
  static async make(a, b) { return new Greeter() }
}
export const arrow = (a) => a
const later = async function () {}
export interface Shape { area(): number }
export type Id = string
enum Color { Red }
"""

GO = """\
package main

type Server struct {
	x int
}

func (s *Server) Handle(w int) error {
	return nil
}

func NewServer() *Server { return nil }
func Map[T any](xs []T) []T { return xs }
"""

RUST = """\
pub struct Parser { x: i32 }
impl Parser {
    pub fn parse(&self, s: &str) -> i32 { 0 }
}
pub(crate) async fn helper() {}
trait T { fn f(&self); }
pub enum Kind { A }
#[cfg(test)]
mod tests {
    #[test]
    fn it_works() {}
}
"""


def test_regex_fallback_for_js_ts_go_and_rust() -> None:
    js = [(s.name, s.kind, s.line) for s in regex_definitions("web/app.ts", JS)]
    assert js == [
        ("greet", "function", 2), ("main", "function", 3), ("Greeter", "class", 4), ("hello", "method", 5),
        ("make", "method", 10), ("arrow", "function", 12), ("later", "function", 13), ("Shape", "interface", 14),
        ("Id", "type", 15), ("Color", "enum", 16),
    ]
    go = [(s.name, s.kind, s.line, s.scope) for s in regex_definitions("srv/main.go", GO)]
    assert go == [("Server", "type", 3, None), ("Handle", "method", 7, "Server"), ("NewServer", "function", 11, None), ("Map", "function", 12, None)]
    rs = [(s.name, s.kind, s.line) for s in regex_definitions("src/lib.rs", RUST)]
    assert rs == [("Parser", "struct", 1), ("parse", "method", 3), ("helper", "function", 5), ("T", "trait", 6), ("Kind", "enum", 7), ("it_works", "function", 11)]
    scopes = {s.name: s.scope for s in regex_definitions("src/lib.rs", RUST)}
    assert scopes["parse"] == "Parser" and scopes["helper"] is None and scopes["it_works"] is None
    impl_for = "impl<T: Clone> Display for Wrapper<T> {\n    fn fmt(&self) {}\n}\nfn after() {}\n"
    assert [(s.name, s.kind, s.scope) for s in regex_definitions("src/w.rs", impl_for)] == [("fmt", "method", "Wrapper"), ("after", "function", None)]
    assert all(s.source == "regex" for s in regex_definitions("web/app.ts", JS))
    assert regex_definitions("notes.txt", "def x():\n") == []


def test_definitions_without_ctags_label_the_fallback() -> None:
    found = definitions({"a.py": b"def f():\n    pass\n", "web/app.ts": JS.encode(), "srv/main.go": GO.encode()}, ctags=None)
    assert found.parsers == ("Python's ast", "regex fallback")
    assert {s.source for s in found.symbols if s.path == "a.py"} == {"ast"}
    assert {s.source for s in found.symbols if s.path != "a.py"} == {"regex"}
    assert [s.path for s in found.symbols] == sorted(s.path for s in found.symbols)


def test_no_ctags_when_the_executable_is_missing() -> None:
    assert ctags_command("gitswarm-no-such-ctags") is None
    assert ctags_command("") is None
    assert ctags_command(None) is None


CTAGS = ctags_command("ctags")


@pytest.mark.skipif(CTAGS is None, reason="universal-ctags (`ctags` with JSON output) is not on PATH")
def test_ctags_finds_definitions_with_lines_and_scopes() -> None:
    got = ctags_definitions({"srv/main.go": GO.encode(), "src/lib.rs": RUST.encode(), "web/app.ts": JS.encode()}, CTAGS)
    assert {s.source for s in got} == {"ctags"}
    by = {(s.path, s.name): s for s in got}
    assert by[("srv/main.go", "Handle")].kind == "function" and by[("srv/main.go", "Handle")].line == 7
    assert by[("srv/main.go", "Handle")].signature == "func (s *Server) Handle(w int) error {"
    assert by[("srv/main.go", "NewServer")].top_level  # Go's package scope is top level
    assert by[("src/lib.rs", "parse")].kind == "method" and by[("src/lib.rs", "parse")].scope == "Parser"
    assert by[("src/lib.rs", "Parser")].kind == "struct"
    assert by[("web/app.ts", "greet")].line == 2 and by[("web/app.ts", "Greeter")].kind == "class"
    assert by[("web/app.ts", "arrow")].kind == "function"  # a const arrow function
    found = definitions({"a.py": b"def f():\n    pass\n", "srv/main.go": GO.encode()}, ctags=CTAGS)
    assert found.parsers == ("Python's ast", "ctags")
    assert {s.source for s in found.symbols if s.path == "srv/main.go"} == {"ctags"}


def test_language_of() -> None:
    assert [language_of(p) for p in ("a.py", "b.tsx", "c.go", "d.rs", "e.md", "f.java")] == ["python", "js", "go", "rust", None, "java"]


def test_call_sites_by_text_in_other_files_bounded() -> None:
    sources = {
        "pkg/calc.py": b"def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n",
        "pkg/use.py": b"from .calc import add\n\nx = add(1, 2)\ny = calc.add(3, 4)\nz = obj.add(5)\n",
        "pkg/other.py": b"def add(x):  # another add, in a file that never names the module\n    return x\nadd(1)\n",
        "tests/test_calc.py": b"from pkg.calc import add\n\ndef test_add():\n    assert add(1, 2) == 3\n    assert add(2, 2) == 4\n    assert add(3, 2) == 5\n",
    }
    sites = call_sites(["add"], sources, per_name=3, exclude={"add": ["pkg/calc.py"]}, require={"add": ["calc"]})
    assert [(c.path, c.line, c.text) for c in sites["add"]] == [
        ("pkg/use.py", 3, "x = add(1, 2)"),
        ("pkg/use.py", 4, "y = calc.add(3, 4)"),
        ("tests/test_calc.py", 4, "assert add(1, 2) == 3"),
    ]
    # Without the module rule every textual call counts, definitions never do.
    loose = call_sites(["add"], sources, per_name=10)
    assert ("pkg/other.py", 3) in [(c.path, c.line) for c in loose["add"]]
    assert ("pkg/use.py", 5) in [(c.path, c.line) for c in loose["add"]]
    assert not any(c.text.startswith("def ") for c in loose["add"])
    assert call_sites([], sources) == {}


def test_symbol_is_frozen_and_ordered() -> None:
    s = Symbol("f", "function", "a.py", 3, "def f()", "ast")
    with pytest.raises(AttributeError):
        s.name = "g"  # type: ignore[misc]
