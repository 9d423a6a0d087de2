"""A fake model API on 127.0.0.1 for end-to-end tests with the real agent CLIs.

The real `claude`, `codex` and `aider` binaries are pointed at it (clients.py has the
environment and arguments for each) and do real work in real worktrees, driven by a
scripted conversation (script.py).
"""

from .script import Fault, Files, Shell, Step, Text, Tool, Usage
from .server import FakeAPI, Request

__all__ = ["FakeAPI", "Fault", "Files", "Request", "Shell", "Step", "Text", "Tool", "Usage"]
