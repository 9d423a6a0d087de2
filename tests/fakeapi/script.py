"""What a fake model says: the steps of a scripted conversation.

A script is a list of steps, answered one per model request, in order. The same script
speaks every wire format the fake server knows; each encoder turns a step into its own
protocol (tests/fakeapi/anthropic.py, openai.py):

    Tool("Write", {"file_path": "a.py", "content": "x = 1\\n"})   # Claude's tools
    Shell("printf 'x = 1\\n' > a.py")                              # Codex's exec_command
    Text("Done: a.py created.")                                    # the final answer
    Files({"a.py": "x = 1\\n"})                                     # Aider's whole-file edit
    Fault("status", status=500)                                    # the API fails

Faults, for the robustness tests:
- `status`: an HTTP error status with an error body in the API's own format;
- `hang`: the response starts (headers and the first event) and then nothing more comes
  until the server is closed;
- `cut`: the stream stops in the middle of a message and the connection is closed;
- `garbage`: a 200 response whose body is not the protocol at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Union


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Tool:
    """A call of one of the agent's own tools by name (Claude: Write, Edit, Bash...)."""

    name: str
    input: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Shell:
    """A shell command through Codex's `exec_command` tool."""

    cmd: str


@dataclass(frozen=True)
class Files:
    """Whole-file edits in Aider's `whole` edit format, then `text`."""

    files: dict[str, str]
    text: str = "Here are the files."


@dataclass(frozen=True)
class Fault:
    kind: str  # status | hang | cut | garbage
    status: int = 500
    message: str = "the fake API was told to fail"

    def __post_init__(self) -> None:
        if self.kind not in ("status", "hang", "cut", "garbage"):
            raise ValueError(f"unknown fault {self.kind!r}")


Step = Union[Text, Tool, Shell, Files, Fault]


@dataclass(frozen=True)
class Usage:
    """Token figures every reply reports (the same for each step, so tests can sum)."""

    input_tokens: int = 100
    output_tokens: int = 20
    cache_read_tokens: int = 0


def tool_arguments(step: Union[Tool, Shell]) -> str:
    """A tool call's arguments as the JSON text the APIs carry."""
    if isinstance(step, Shell):
        return json.dumps({"cmd": step.cmd})
    return json.dumps(step.input)


__all__ = ["Fault", "Files", "Shell", "Step", "Text", "Tool", "Usage", "tool_arguments"]
