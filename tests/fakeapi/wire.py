"""Each model API's wire format for one scripted step: pure functions, no sockets.

- Anthropic Messages (`POST /v1/messages`, what Claude Code speaks): SSE events
  message_start, content_block_start/delta/stop, message_delta, message_stop;
- OpenAI Responses (`POST /v1/responses`, what Codex speaks): SSE events
  response.created, response.output_item.added/done, response.completed;
- OpenAI Chat Completions (`POST /v1/chat/completions`, what Aider speaks without
  streaming): one JSON object.

Each encoder returns the list of (event name, payload) pairs the server writes, or the
JSON body; `partial=True` returns only the first half (for the `cut` fault).
"""

from __future__ import annotations

import json
import time
from typing import Any

from .script import Files, Shell, Step, Text, Tool, Usage, tool_arguments

SSE = list[tuple[str, dict[str, Any]]]


def _uid(prefix: str, n: int) -> str:
    return f"{prefix}_fake{n:06d}"


# -- Anthropic Messages -----------------------------------------------------------------


def anthropic_usage(usage: Usage) -> dict[str, int]:
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cache_read_input_tokens": usage.cache_read_tokens, "cache_creation_input_tokens": 0}


def anthropic_block(step: Step, n: int) -> dict[str, Any]:
    """The content block a step becomes (complete, as in a non-streaming reply)."""
    if isinstance(step, Text):
        return {"type": "text", "text": step.text}
    if isinstance(step, Shell):
        return {"type": "tool_use", "id": _uid("toolu", n), "name": "Bash",
                "input": {"command": step.cmd, "description": "run a command"}}
    if isinstance(step, Tool):
        return {"type": "tool_use", "id": _uid("toolu", n), "name": step.name, "input": step.input}
    raise ValueError(f"{type(step).__name__} has no Anthropic form")


def anthropic_message(step: Step, n: int, model: str, usage: Usage) -> dict[str, Any]:
    block = anthropic_block(step, n)
    return {"id": _uid("msg", n), "type": "message", "role": "assistant", "model": model,
            "content": [block], "stop_reason": "tool_use" if block["type"] == "tool_use" else "end_turn",
            "stop_sequence": None, "usage": anthropic_usage(usage)}


def anthropic_events(step: Step, n: int, model: str, usage: Usage, *, partial: bool = False) -> SSE:
    block = anthropic_block(step, n)
    start_usage = {**anthropic_usage(usage), "output_tokens": 1}
    events: SSE = [("message_start", {"type": "message_start", "message": {
        "id": _uid("msg", n), "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": start_usage}})]
    if block["type"] == "text":
        text = block["text"]
        events.append(("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}}))
        half = len(text) // 2
        pieces = [text[:half], text[half:]] if half else [text]
        for piece in pieces:
            events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "text_delta", "text": piece}}))
    else:
        args = json.dumps(block["input"])
        events.append(("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}))
        half = len(args) // 2
        for piece in (args[:half], args[half:]):
            events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "input_json_delta", "partial_json": piece}}))
    if partial:
        return events[:-1]  # stop inside the content block
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events.append(("message_delta", {"type": "message_delta", "delta": {
        "stop_reason": "tool_use" if block["type"] == "tool_use" else "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": usage.output_tokens}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
            404: "not_found_error", 429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


# -- OpenAI Responses ---------------------------------------------------------------------


def responses_item(step: Step, n: int) -> dict[str, Any]:
    if isinstance(step, Text):
        return {"type": "message", "id": _uid("msg", n), "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": step.text, "annotations": []}]}
    if isinstance(step, (Shell, Tool)):
        name = "exec_command" if isinstance(step, Shell) else step.name
        return {"type": "function_call", "id": _uid("fc", n), "call_id": _uid("call", n), "name": name,
                "arguments": tool_arguments(step), "status": "completed"}
    raise ValueError(f"{type(step).__name__} has no Responses form")


def responses_usage(usage: Usage) -> dict[str, Any]:
    return {"input_tokens": usage.input_tokens + usage.cache_read_tokens,
            "input_tokens_details": {"cached_tokens": usage.cache_read_tokens},
            "output_tokens": usage.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.input_tokens + usage.cache_read_tokens + usage.output_tokens}


def responses_events(step: Step, n: int, model: str, usage: Usage, *, partial: bool = False) -> SSE:
    item = responses_item(step, n)
    rid = _uid("resp", n)
    base = {"id": rid, "object": "response", "created_at": int(time.time()), "model": model}
    events: SSE = [
        ("response.created", {"type": "response.created", "sequence_number": 0,
                              "response": {**base, "status": "in_progress", "output": []}}),
        ("response.output_item.added", {"type": "response.output_item.added", "sequence_number": 1,
                                        "output_index": 0, "item": {**item, "status": "in_progress"}}),
    ]
    if partial:
        return events
    events.append(("response.output_item.done", {"type": "response.output_item.done", "sequence_number": 2,
                                                 "output_index": 0, "item": item}))
    events.append(("response.completed", {"type": "response.completed", "sequence_number": 3, "response": {
        **base, "status": "completed", "output": [item], "usage": responses_usage(usage)}}))
    return events


def openai_error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "server_error" if status >= 500 else "invalid_request_error",
                      "param": None, "code": None}}


# -- OpenAI Chat Completions --------------------------------------------------------------


def chat_content(step: Step) -> str:
    if isinstance(step, Text):
        return step.text
    if isinstance(step, Files):
        parts = []
        for path, content in step.files.items():
            body = content if content.endswith("\n") or not content else content + "\n"
            parts.append(f"{path}\n```\n{body}```\n")
        return "\n".join(parts) + "\n" + step.text + "\n"
    raise ValueError(f"{type(step).__name__} has no Chat Completions form")


def chat_completion(step: Step, n: int, model: str, usage: Usage) -> dict[str, Any]:
    return {"id": _uid("chatcmpl", n), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": chat_content(step)},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
                      "total_tokens": usage.input_tokens + usage.output_tokens}}


__all__ = [
    "anthropic_error",
    "anthropic_events",
    "anthropic_message",
    "chat_completion",
    "openai_error",
    "responses_events",
]
