"""The aider backend: its output parser on lines the real aider 0.86.2 printed, and the
real aider end to end against the fake chat-completions API (tests/fakeapi).

How the end-to-end tests keep aider fast, offline and deterministic:
- `--edit-format whole`: the fake API answers with whole files (`Files`).
- HOME is per test, with a model-price cache (~/.aider/caches/...json) already there and
  LITELLM_LOCAL_MODEL_COST_MAP=True, so neither aider nor litellm tries to download
  the price list from the internet. The cache also decides whether aider knows a price
  for the fake model (then it prints "Cost: ..." itself) or not.
- Aider retries an API error it deems transient (500, garbage, timeouts) with delays of
  0.25 s doubling up to 60 s (RETRY_TIMEOUT in aider/models.py): a minute and eight
  requests before it gives up. No flag or environment variable changes that (`--timeout`
  is the per-request timeout; litellm's own retries are not used by aider), so the tests
  of an API that keeps failing give aider a sitecustomize.py on PYTHONPATH that sets
  RETRY_TIMEOUT to 0.3 s: one retry after 0.25 s, then aider gives up exactly as it
  would after a minute. Every other test runs aider unmodified.
- Script keys are words that occur only in the test's prompt (aider's own few-shot
  examples are user messages too).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from gitswarm.backends.aider import (
    DROPPINGS,
    AiderBackend,
    OutputParser,
    assistant_text,
    build_argv,
    classify,
    is_dropping,
    judge,
    manifest_files,
    parse_cost,
    parse_count,
    parse_tokens,
    porcelain_paths,
    summarize,
)
from gitswarm.backends.base import AgentEvent, AgentRequest
from gitswarm.backends.process import heartbeat_error
from gitswarm.model import TaskSpec, Usage
from tests.agentcli import aider_env, require
from tests.fakeapi import FakeAPI, Fault, Files, Text

MODEL = "openai/fake-model"
# What aider's price list says about the fake model when a test wants aider to price it.
FAKE_PRICE_INFO = {"litellm_provider": "openai", "mode": "chat", "max_input_tokens": 1_000_000,
                   "max_output_tokens": 8192, "input_cost_per_token": 3e-6, "output_cost_per_token": 15e-6}

# -- lines the real aider 0.86.2 printed against the fake API (--no-pretty, COLUMNS=4096) --

REAL_TOKENS = "Tokens: 100 sent, 20 received."
REAL_TOKENS_COST = "Tokens: 100 sent, 20 received. Cost: $0.00060 message, $0.00060 session."
REAL_APPLIED = "Applied edit to hello.py"
REAL_500 = "litellm.InternalServerError: InternalServerError: OpenAIException - the fake API was told to fail"
REAL_DOWN = "The API provider's servers are down or overloaded."
REAL_RETRY = "Retrying in 0.2 seconds..."
REAL_GARBAGE = ("litellm.InternalServerError: InternalServerError: OpenAIException - error - Expecting value: "
                "line 1 column 1 (char 0), Received response - <APIResponse [200 OK] type=<class "
                "'openai.types.chat.chat_completion.ChatCompletion'>>, Type of response - <class "
                "'openai._legacy_response.LegacyAPIResponse'>")
REAL_BAD_REQUEST = "litellm.BadRequestError: OpenAIException - invalid api key"
REAL_NO_PROVIDER = ("litellm.BadRequestError: LLM Provider NOT provided. Pass in the LLM provider you are trying "
                    "to call. You passed model=fake-model")
REAL_NOT_FOUND = "litellm.BadRequestError: OpenAIException - The model `fake-model` does not exist"
REAL_EMPTY = "Empty response received from LLM. Check your provider account?"
REAL_NONCONFORM = "The LLM did not conform to the edit format."
REAL_REFLECTIONS = "Only 3 reflections allowed, stopping."

# A whole run that failed twice with 500 and then edited (stdout, in order).
REAL_TRANSIENT_RUN = [
    "Analytics have been permanently disabled.", "", "Aider v0.86.2",
    "Model: openai/fake-model with whole edit format", "Git repo: .git with 1 files",
    "Repo-map: using 1024 tokens, auto refresh", "",
    REAL_500, REAL_DOWN, "Retrying in 0.2 seconds...",
    REAL_500, REAL_DOWN, "Retrying in 0.5 seconds...",
    "hello.py", "", "```", "print('hi')", "", "```", "", "", "Here are the files.", "",
    REAL_TOKENS, "", "hello.py", REAL_APPLIED, "",
]
# aider's chat history (--chat-history-file) of a run that created hello.py. Aider ends its
# own lines with two spaces (a markdown line break), written here as `|`.
REAL_CHAT_HISTORY = """
# aider chat started at 2026-11-23 13:33:38

> /work/main/.tools/aider/bin/aider --model openai/fake-model --message task t1: create hello.py --yes-always|
> Aider v0.86.2|
> Model: openai/fake-model with whole edit format|
> Git repo: .git with 1 files|
> Repo-map: using 1024 tokens, auto refresh|

#### task t1: create hello.py|

hello.py
```
print('hi')
```

Here are the files.

> Tokens: 100 sent, 20 received.|
> hello.py|
> Create new file? (Y)es/(N)o [Yes]: y|
> Applied edit to hello.py|
""".replace("|\n", "  \n")


def feed(lines: list[str], price: dict[str, float] | None = None) -> list[AgentEvent]:
    parser = OutputParser(price)
    return [event for line in lines for event in parser.feed(line)]


def kinds(events: list[AgentEvent], kind: str) -> list[AgentEvent]:
    return [e for e in events if e.kind == kind]


# -- the parser -----------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [("429", 429), ("4.5k", 4500), ("12k", 12000), ("1234k", 1_234_000),
                                           ("1.2M", 1_200_000), ("0", 0)])
def test_parse_count(text: str, expected: int) -> None:
    assert parse_count(text) == expected


def test_tokens_lines_of_the_real_aider() -> None:
    plain = parse_tokens(REAL_TOKENS)
    assert plain is not None and (plain.sent, plain.received, plain.cost) == (100, 20, None)
    priced = parse_tokens(REAL_TOKENS_COST)
    assert priced is not None and priced.cost is not None
    assert (priced.cost.message, priced.cost.session) == (0.0006, 0.0006)
    assert parse_tokens("Tokens: 100 sent") is None
    assert parse_tokens("Here are the Tokens: 100 sent, 20 received.") is None


def test_tokens_line_with_cache_figures_and_cost_on_its_own_line() -> None:
    # The format string of aider/coders/base_coder.py: cache write, cache hit; when a reply
    # both wrote and hit the cache the Cost part goes on the next line.
    report = parse_tokens("Tokens: 12k sent, 1.5k cache write, 9.8k cache hit, 429 received.")
    assert report is not None
    assert (report.sent, report.cache_write, report.cache_hit, report.received) == (12000, 1500, 9800, 429)
    usage = report.usage()
    assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (700, 9800, 1500)
    assert parse_cost("Cost: $0.0018 message, $0.12 session.") is not None
    events = feed(["Cost: $0.0018 message, $0.12 session."])
    assert kinds(events, "usage")[0].data == {"cost_usd": 0.0018, "session_cost_usd": 0.12}


def test_usage_events_carry_each_reply_and_price_unknown_models() -> None:
    events = feed([REAL_TOKENS, REAL_TOKENS_COST], price={"input": 1.0, "output": 10.0})
    usage = kinds(events, "usage")
    assert [Usage.from_json(e.data) for e in usage] == [
        Usage(100, 20, cost_usd=0.0003),  # no Cost part: priced from the role's price
        Usage(100, 20, cost_usd=0.0006),  # aider's own figure wins
    ]
    assert usage[1].data["session_cost_usd"] == 0.0006
    assert all(e.data["reply"] for e in usage)


def test_classify_real_lines() -> None:
    assert classify(REAL_APPLIED)[0].kind == "file_changed"
    assert classify(REAL_APPLIED)[0].data == {"path": "hello.py", "action": "edit"}
    for line in (REAL_500, REAL_GARBAGE, REAL_BAD_REQUEST, REAL_NO_PROVIDER):
        assert classify(line)[0].kind == "error" and classify(line)[0].data["source"] == "api", line
    assert classify(REAL_DOWN)[0].data == {"source": "api", "description": True}
    assert classify(REAL_RETRY)[0].data == {"retry": True, "delay": 0.2}
    assert classify(REAL_REFLECTIONS)[0].data == {"fatal": True}
    assert classify(REAL_NONCONFORM)[0].kind == "error" and not classify(REAL_NONCONFORM)[0].data.get("fatal")
    for line in ("Aider v0.86.2", "Here are the files.", "hello.py", "```", "", "Retrying the tests"):
        assert [e.kind for e in classify(line)] == ["message"], line


def test_a_retried_api_error_is_not_fatal() -> None:
    j = judge(feed(REAL_TRANSIENT_RUN))
    assert (j.fatal, j.replies, j.retried, j.announced) == (None, 1, 2, ("hello.py",))


def test_an_api_error_aider_gave_up_on_is_fatal() -> None:
    # After the last retry aider prints the error and its description, and nothing more.
    j = judge(feed([REAL_500, REAL_DOWN, REAL_RETRY, REAL_500, REAL_DOWN, ""]))
    assert j.fatal == f"{REAL_500} — {REAL_DOWN}" and j.replies == 0
    assert judge(feed([REAL_BAD_REQUEST, ""])).fatal == REAL_BAD_REQUEST
    # A failure after an answer still fails the attempt (the follow-up message was lost).
    assert judge(feed([REAL_TOKENS, REAL_500, REAL_DOWN])).fatal == f"{REAL_500} — {REAL_DOWN}"


def test_running_out_of_reflections_is_fatal_and_says_why() -> None:
    lines = [REAL_TOKENS, REAL_NONCONFORM, "https://aider.chat/docs/troubleshooting/edit-errors.html",
             "No filename provided before ``` in file listing"] * 4 + [REAL_REFLECTIONS]
    j = judge(feed(lines))
    assert j.fatal == f"{REAL_REFLECTIONS} (last error: {REAL_NONCONFORM})"
    assert j.replies == 4


def test_unknown_model_and_empty_reply_are_fatal() -> None:
    assert judge(feed([REAL_NOT_FOUND, ""])).fatal == REAL_NOT_FOUND
    j = judge(feed(["", REAL_TOKENS, REAL_EMPTY]))
    assert j.replies == 1 and j.fatal == REAL_EMPTY


def test_a_traceback_ends_in_a_fatal_error() -> None:
    events = feed(["Traceback (most recent call last):", '  File "x.py", line 1, in send', "    raise",
                   "ValueError: bad things", "bad things"])
    assert [e.text for e in kinds(events, "error")] == ["ValueError: bad things"]
    assert judge(events).fatal == "ValueError: bad things"


def test_assistant_text_from_the_chat_history() -> None:
    assert assistant_text(REAL_CHAT_HISTORY) == "Here are the files."
    only_files = REAL_CHAT_HISTORY.replace("Here are the files.\n", "")
    assert assistant_text(only_files) == ""
    said = "#### fix it  \n\nThe bug was in `ops.py`.\n\nops.py\n````\nx = '```'\n````\n\n> Applied edit to ops.py  \n"
    assert assistant_text(said) == "The bug was in `ops.py`."
    assert assistant_text("") == ""


def test_summary() -> None:
    assert summarize("Here are the files.", ["a.py"], True) == "Here are the files."
    assert summarize("", ["a.py", "b.py"], True) == "edited 2 files: a.py, b.py"
    assert summarize("Nothing to do.", [], True) == "no changes: Nothing to do."
    assert summarize("", [], True) == "no changes"
    assert summarize("", [], False) == ""


def test_porcelain_and_droppings() -> None:
    out = "?? new.py\0 M a.py\0R  b2.py\0b.py\0?? .aider.tags.cache.v4/cache.db\0"
    assert porcelain_paths(out) == ["new.py", "a.py", "b2.py", "b.py", ".aider.tags.cache.v4/cache.db"]
    assert is_dropping(".aider.tags.cache.v4/cache.db") and is_dropping(".aider.chat.history.md")
    assert not is_dropping("src/.aider.chat.history.md") and not is_dropping(".aider.conf.yml")
    assert DROPPINGS


def test_manifest_files_named_on_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("")
    (tmp_path / "b.py").write_text("")
    (tmp_path.parent / "outside.py").write_text("")
    files = ["pkg/a.py", "new.py", "pkg", "../outside.py", "/etc/hosts", "b.py", "pkg/a.py", ".git/config"]
    assert manifest_files(tmp_path, files) == ["pkg/a.py", "b.py"]


def make_request(workdir: Path, **kw: Any) -> AgentRequest:
    fields: dict[str, Any] = dict(task=TaskSpec(id="t1", title="Say hi", files=kw.pop("files", ())), attempt=1,
                                  prompt=kw.pop("prompt", "Create hello.py."), workdir=workdir, role_id="impl",
                                  backend="aider", agent_id="impl-1", model=MODEL)
    fields.update(kw)
    return AgentRequest(**fields)


def test_argv(tmp_path: Path) -> None:
    req = make_request(tmp_path, command="/opt/aider", options={"edit_format": "diff"}, args=("--map-tokens", "0"))
    argv = build_argv(req, "/tmp/p.md", "/tmp/state", ["-odd.py", "a.py"])
    assert argv[:5] == ["/opt/aider", "--model", MODEL, "--message-file", "/tmp/p.md"]
    for flag in ("--yes-always", "--no-auto-commits", "--no-gitignore", "--analytics-disable", "--no-stream",
                 "--no-pretty", "--no-check-update", "--no-show-model-warnings"):
        assert flag in argv
    assert argv[argv.index("--edit-format") + 1] == "diff"
    assert argv[argv.index("--chat-history-file") + 1] == "/tmp/state/chat.history.md"
    # The role's args come after ours (so they win), the files last, after "--".
    assert argv[-5:] == ["--map-tokens", "0", "--", "-odd.py", "a.py"]
    bare = build_argv(make_request(tmp_path, model=None), "/tmp/p.md", "/tmp/state", [])
    assert bare[0] == "aider" and "--model" not in bare and "--edit-format" not in bare and "--" not in bare


def test_not_a_git_worktree_fails_before_starting(tmp_path: Path) -> None:
    run = AiderBackend().start(make_request(tmp_path, command="/nonexistent/aider"))
    events = list(run.events())
    assert events[-1].kind == "finished" and not run.result.ok
    assert "not one" in (run.result.error or "") and "git" in (run.result.error or "")


def test_missing_binary_fails_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    wt = make_worktree(tmp_path)
    task = TaskSpec(id=f"missing{os.getpid()}", title="x")
    run = AiderBackend().start(make_request(wt, task=task, command=str(tmp_path / "no-such-aider")))
    list(run.events())
    assert not run.result.ok and "could not start" in (run.result.error or "")
    assert not list(Path(tempfile.gettempdir()).glob(f"gitswarm-aider-{task.id}-*"))


# -- the real aider ---------------------------------------------------------------------------


def git(wt: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=wt, check=True, capture_output=True, text=True).stdout


def make_worktree(tmp_path: Path) -> Path:
    wt = tmp_path / "wt"
    wt.mkdir()
    git(wt, "init", "-q")
    git(wt, "config", "user.name", "Test")
    git(wt, "config", "user.email", "test@example.com")
    (wt / "README.md").write_text("# demo\n")
    (wt / "greet.py").write_text("print('hello')\n")
    git(wt, "add", "-A")
    git(wt, "commit", "-qm", "init")
    return wt


RETRY_SHIM = """\
# Test only: aider's retry window for API errors, from 60 s to 0.3 s (one retry).
try:
    import aider.models
    aider.models.RETRY_TIMEOUT = 0.3
except Exception:
    pass
"""


def environment(api: FakeAPI, tmp_path: Path, *, aider_prices: bool = False, fast_give_up: bool = False
                ) -> dict[str, str]:
    home = tmp_path / "home"
    env = {**aider_env(api.url, home), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    # A fresh, non-empty price cache: aider does not download the list (models.py).
    prices: dict[str, Any] = {"gpt-4o": {"litellm_provider": "openai", "mode": "chat"}}
    if aider_prices:
        prices[MODEL] = FAKE_PRICE_INFO
    cache = home / ".aider" / "caches"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "model_prices_and_context_window.json").write_text(json.dumps(prices))
    if fast_give_up:
        shim = tmp_path / "shim"
        shim.mkdir()
        (shim / "sitecustomize.py").write_text(RETRY_SHIM)
        env["PYTHONPATH"] = str(shim)
    return env


def run_aider(wt: Path, api: FakeAPI, tmp_path: Path, key: str, *, prompt: str | None = None,
              files: tuple[str, ...] = (), price: dict[str, float] | None = None, aider_prices: bool = False,
              fast_give_up: bool = False, heartbeat: float = 60.0, timeout: float = 90.0):
    options: dict[str, Any] = {"edit_format": "whole"}
    if price:
        options["price"] = price
    req = make_request(wt, command=require("aider"), files=files, options=options, timeout=timeout,
                       heartbeat_timeout=heartbeat,
                       env=environment(api, tmp_path, aider_prices=aider_prices, fast_give_up=fast_give_up),
                       prompt=prompt or f"Task {key}: create hello.py that prints hi.")
    run = AiderBackend().start(req)
    started = time.monotonic()
    events = list(run.events())
    return run.result, events, time.monotonic() - started


def status(wt: Path) -> list[str]:
    return sorted(git(wt, "status", "--porcelain", "--untracked-files=all").splitlines())


def test_aider_creates_a_file_and_reports_usage(tmp_path: Path) -> None:
    require("aider")
    wt = make_worktree(tmp_path)
    with FakeAPI({"KEYCREATE": [Files({"hello.py": "print('hi')\n"}, text="Created hello.py.")]}) as api:
        result, events, _ = run_aider(wt, api, tmp_path, "KEYCREATE", files=("hello.py",),
                                      price={"input": 3.0, "output": 15.0})
        assert len(api.scripted("KEYCREATE")) == 1
    assert result.ok, result.error
    assert (wt / "hello.py").read_text() == "print('hi')\n"
    assert result.summary == "Created hello.py."
    # The fake API's usage (100 in, 20 out); aider knows no price, so the role's is used.
    assert result.usage == Usage(100, 20, cost_usd=0.0006)
    assert [e.data["path"] for e in kinds(events, "file_changed")] == ["hello.py"]
    assert events[-1].kind == "finished" and events[-1].data["ok"] is True
    # Nothing of aider's own is left in the worktree (histories, repo-map cache).
    assert [line[3:] for line in status(wt)] == ["hello.py"]


def test_aider_edits_manifest_file_with_a_reflection_and_its_own_cost(tmp_path: Path) -> None:
    require("aider")
    wt = make_worktree(tmp_path)
    script = [Text("```\nprint('hi')\n```"),  # no file name: "did not conform", aider reflects
              Files({"greet.py": "print('hi')\n", "README.md": "# demo\nSays hi.\n"}, text="Both updated.")]
    with FakeAPI({"KEYREFLECT": script}) as api:
        result, events, _ = run_aider(wt, api, tmp_path, "KEYREFLECT", files=("greet.py", "README.md"),
                                      aider_prices=True, price={"input": 1.0, "output": 1.0})
        assert len(api.scripted("KEYREFLECT")) == 2
        # The manifest's files were in the chat: their content went to the model.
        first = json.dumps(api.scripted("KEYREFLECT")[0].body)
        assert "print('hello')" in first
    assert result.ok, result.error
    assert (wt / "greet.py").read_text() == "print('hi')\n"
    assert [e.text for e in kinds(events, "error")] == ["The LLM did not conform to the edit format."]
    # Two replies summed; the cost is aider's session figure (3 and 15 USD per million),
    # not the role's price.
    assert result.usage == Usage(200, 40, cost_usd=0.0012)
    assert sorted(e.data["path"] for e in kinds(events, "file_changed")) == ["README.md", "greet.py"]
    assert status(wt) == [" M README.md", " M greet.py"]


def test_answer_without_edits_is_ok_and_a_long_prompt_goes_through_a_file(tmp_path: Path) -> None:
    require("aider")
    wt = make_worktree(tmp_path)
    # Over Linux's 128 KiB limit for one argument: only --message-file can carry it.
    prompt = "Task KEYNOEDIT: check greet.py.\n" + "Context line that matters little.\n" * 5000 + "END-OF-PROMPT\n"
    with FakeAPI({"KEYNOEDIT": [Text("greet.py already does what the task asks; nothing to change.")]}) as api:
        result, events, _ = run_aider(wt, api, tmp_path, "KEYNOEDIT", prompt=prompt)
        (request,) = api.scripted("KEYNOEDIT")
        assert "END-OF-PROMPT" in json.dumps(request.body)
    assert result.ok, result.error
    assert result.summary == "no changes: greet.py already does what the task asks; nothing to change."
    assert not kinds(events, "file_changed")
    assert status(wt) == []  # no .aider.* files, no prompt file
    assert "--message-file" in events[0].data["argv"] and "--message" not in events[0].data["argv"]


def test_transient_500_is_retried_and_the_run_succeeds(tmp_path: Path) -> None:
    require("aider")
    wt = make_worktree(tmp_path)
    with FakeAPI({"KEYFLAKY": [Fault("status", status=500), Files({"hello.py": "print('hi')\n"})]}) as api:
        result, events, _ = run_aider(wt, api, tmp_path, "KEYFLAKY")
        assert [r.answer for r in api.scripted("KEYFLAKY")] == ["Fault", "Files"]
    assert result.ok, result.error
    errors = kinds(events, "error")
    assert [e.data.get("retry", False) for e in errors] == [False, False, True]
    assert "the fake API was told to fail" in errors[0].text
    assert (wt / "hello.py").exists()


@pytest.mark.parametrize("fault,says", [
    (Fault("status", status=500), "the fake API was told to fail"),
    (Fault("garbage"), "Expecting value"),
])
def test_api_that_keeps_failing_fails_the_attempt_though_aider_exits_0(tmp_path: Path, fault: Fault,
                                                                       says: str) -> None:
    require("aider")
    wt = make_worktree(tmp_path)
    with FakeAPI({"KEYBROKEN": [fault] * 5}) as api:
        result, events, elapsed = run_aider(wt, api, tmp_path, "KEYBROKEN", fast_give_up=True, timeout=40)
        assert len(api.scripted("KEYBROKEN")) == 2  # one retry, then aider gave up
    assert result.exit == 0 and not result.ok
    assert result.error is not None and says in result.error
    assert result.error.startswith("aider: litellm.InternalServerError")
    assert "The API provider's servers are down or overloaded." in result.error
    assert result.usage == Usage()
    assert status(wt) == []
    assert elapsed < 30


def test_hanging_api_ends_on_the_heartbeat(tmp_path: Path) -> None:
    require("aider")
    wt = make_worktree(tmp_path)
    # Aider is silent for up to a few seconds while it starts (importing litellm) on a
    # busy machine: the limit must be longer than that for the hang to be what ends it.
    heartbeat = 8.0
    with FakeAPI({"KEYHANG": [Fault("hang")]}) as api:
        result, events, elapsed = run_aider(wt, api, tmp_path, "KEYHANG", heartbeat=heartbeat)
        assert [r.answer for r in api.scripted("KEYHANG")] == ["Fault"]
    assert not result.ok
    assert result.error == heartbeat_error(heartbeat)
    assert elapsed < heartbeat + 15
    assert events[-1].kind == "finished"
    assert status(wt) == []
