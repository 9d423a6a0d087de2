"""Backend names to backend objects: `get_backend("scripted").start(request)`.

Like httpx's transports, a backend is chosen by name and can be swapped: tests and
embedders may `register_backend` their own factory under a name (a fake agent, say).
"""

from __future__ import annotations

import threading
from typing import Callable

from gitswarm.backends import KNOWN_BACKENDS
from gitswarm.backends.base import Backend
from gitswarm.errors import GitswarmError, InputError

BackendFactory = Callable[[], Backend]

_THROUGH_COMMAND = ("opencode", "attocode")

_lock = threading.Lock()
_registered: dict[str, BackendFactory] = {}


def _builtin(name: str) -> BackendFactory | None:
    if name == "scripted":
        from gitswarm.backends.scripted import ScriptedBackend

        return ScriptedBackend
    if name == "command":
        from gitswarm.backends.command import CommandBackend

        return CommandBackend
    if name == "claude":
        from gitswarm.backends.claude import ClaudeBackend

        return ClaudeBackend
    if name == "codex":
        from gitswarm.backends.codex import CodexBackend

        return CodexBackend
    if name == "codex-mcp":
        from gitswarm.backends.codex_mcp import CodexMcpBackend

        return CodexMcpBackend
    if name == "aider":
        from gitswarm.backends.aider import AiderBackend

        return AiderBackend
    return None


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make `get_backend(name)` return `factory()` (it replaces a built-in of that name)."""
    with _lock:
        _registered[name] = factory


def unregister_backend(name: str) -> None:
    with _lock:
        _registered.pop(name, None)


def available_backends() -> list[str]:
    """The names get_backend() can run now."""
    with _lock:
        extra = list(_registered)
    return sorted({"scripted", "command", "claude", "codex", "codex-mcp", "aider", *extra})


def get_backend(name: str) -> Backend:
    """The backend called `name`.

    InputError for a name gitswarm does not know (the message lists the known ones);
    GitswarmError for a known backend that has no module of its own (run it through
    the command backend).
    """
    with _lock:
        factory = _registered.get(name)
    if factory is None:
        factory = _builtin(name)
    if factory is not None:
        return factory()
    if name in _THROUGH_COMMAND:
        raise GitswarmError(f"backend {name} has no module of its own yet; run it through the command "
                            "backend (docs/backends.md has a template)")
    known = sorted(set(KNOWN_BACKENDS) | set(available_backends()))
    raise InputError(f"unknown backend {name!r}; known backends: {', '.join(known)}")


__all__ = ["available_backends", "get_backend", "register_backend", "unregister_backend"]
