"""The fake model API itself: which script and step answer a request, and what each
fault looks like on the wire (read with a plain HTTP client)."""

from __future__ import annotations

import http.client
import json

import pytest

from .fakeapi import FakeAPI, Fault, Files, Shell, Text, Tool
from .fakeapi.server import conversation


def _post(api: FakeAPI, path: str, body: dict) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _anthropic(user: str, assistant_turns: int = 0) -> dict:
    messages: list[dict] = [{"role": "user", "content": user}]
    for _ in range(assistant_turns):
        messages += [{"role": "assistant", "content": [{"type": "text", "text": "x"}]},
                     {"role": "user", "content": [{"type": "tool_result", "content": "r"}]}]
    return {"model": "m", "messages": messages, "tools": [{"name": "Write"}], "stream": False}


def test_the_step_is_the_number_of_assistant_turns_and_the_key_is_in_the_prompt() -> None:
    with FakeAPI({"task-a": [Tool("Write", {"file_path": "/x"}), Text("a done")], "task-b": [Text("b done")]}) as api:
        status, body = _post(api, "/v1/messages", _anthropic("do task-a"))
        assert status == 200 and json.loads(body)["content"][0]["name"] == "Write"
        _, body = _post(api, "/v1/messages", _anthropic("do task-a", assistant_turns=1))
        assert json.loads(body)["content"][0]["text"] == "a done"
        _, body = _post(api, "/v1/messages", _anthropic("do task-b"))
        assert json.loads(body)["content"][0]["text"] == "b done"
        _, body = _post(api, "/v1/messages", _anthropic("do task-b", assistant_turns=5))
        assert json.loads(body)["content"][0]["text"] == "done"  # past the end
        _, body = _post(api, "/v1/messages", {**_anthropic("do task-a"), "tools": []})
        assert json.loads(body)["content"][0]["text"] == "ok"  # a side call
    assert [(r.key, r.step, r.answer) for r in api.requests] == [
        ("task-a", 0, "Tool"), ("task-a", 1, "Text"), ("task-b", 0, "Text"), ("task-b", 5, "Text"), (None, -1, "side")]


def test_conversation_counts_function_calls_in_the_responses_api() -> None:
    body = {"input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi t1"}]},
                      {"type": "function_call", "name": "exec_command"},
                      {"type": "function_call_output", "output": "ok"}]}
    assert conversation("responses", body) == ("hi t1", 1)


def test_sse_streams_end_with_their_protocols_last_event() -> None:
    with FakeAPI([Shell("ls"), Text("fin")]) as api:
        _, anthropic = _post(api, "/v1/messages", {**_anthropic("x"), "stream": True})
        _, responses = _post(api, "/v1/responses", {"input": "x", "tools": [{"name": "exec_command"}], "stream": True})
    assert anthropic.decode().split("event: ")[-1].startswith("message_stop")
    assert b'"name": "Bash"' in anthropic
    assert responses.decode().split("event: ")[-1].startswith("response.completed")
    assert b'"name": "exec_command"' in responses


def test_chat_completions_carry_whole_files_and_count_per_conversation() -> None:
    with FakeAPI({"k1": [Files({"a.py": "x = 1"}), Text("second")]}) as api:
        body = {"model": "m", "messages": [{"role": "user", "content": "k1 go"}]}
        _, first = _post(api, "/v1/chat/completions", body)
        _, second = _post(api, "/v1/chat/completions", body)
    assert json.loads(first)["choices"][0]["message"]["content"].startswith("a.py\n```\nx = 1\n```\n")
    assert json.loads(second)["choices"][0]["message"]["content"] == "second"


@pytest.mark.parametrize("path, kind", [("/v1/messages", "error"), ("/v1/responses", None)])
def test_a_status_fault_answers_in_the_apis_error_format(path: str, kind: str | None) -> None:
    with FakeAPI([Fault("status", status=503, message="busy")]) as api:
        status, body = _post(api, path, {**_anthropic("x"), "input": "x"})
    assert status == 503
    data = json.loads(body)
    assert data["error"]["message"] == "busy" and data.get("type") == kind


def test_a_cut_stream_is_a_broken_connection() -> None:
    with FakeAPI([Fault("cut")]) as api:
        with pytest.raises(http.client.IncompleteRead):
            _post(api, "/v1/messages", {**_anthropic("x"), "stream": True})


def test_unknown_faults_are_refused() -> None:
    with pytest.raises(ValueError):
        Fault("explode")
