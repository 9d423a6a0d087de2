"""Tests of the swarm config loader (gitswarm/config.py)."""

from __future__ import annotations

import io
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from gitswarm.config import (
    ATTOSWARM_ONLY_SECTIONS,
    HOOK_EVENTS,
    BudgetConfig,
    GatesConfig,
    LoadedConfig,
    MergeConfig,
    RetriesConfig,
    RoleConfig,
    RunConfig,
    SwarmConfig,
    WatchdogConfig,
    WorktreeConfig,
    default_config,
    load_config,
    parse_config,
    template_text,
)
from gitswarm.errors import InputError, Problem

REPO = Path(__file__).resolve().parents[1]
COMPAT_DIR = Path(__file__).resolve().parents[2] / "shared" / "compat" / "attoswarm-configs"
BAD_DIR = Path(__file__).resolve().parent / "data" / "bad_configs"
TEMPLATES = ("minimal", "hybrid")

BASE = """\
version: 1
roles:
  - role_id: impl
    backend: claude
"""


def load(text: str) -> LoadedConfig:
    return parse_config(textwrap.dedent(text), "swarm.yaml")


def problems(text: str) -> list[Problem]:
    with pytest.raises(InputError) as info:
        load(text)
    return info.value.problems


def one_problem(text: str) -> Problem:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def where(p: Problem) -> tuple[int, int]:
    return p.line, p.col


def warning_texts(loaded: LoadedConfig) -> list[str]:
    return [f"{w.line}:{w.col}: {w.message}" for w in loaded.warnings]


def dump_yaml(data: Any) -> str:
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(data, out)
    return out.getvalue()


# ---------------------------------------------------------------------------------------
# attoswarm's own configs load as they are
# ---------------------------------------------------------------------------------------

# (line, col, substring) of every warning each compat file must give, and nothing else.
COMPAT_WARNINGS: dict[str, set[tuple[int, int, str]]] = {
    "attocode-hybrid-example.yaml": {
        (16, 21, "roles[0].workspace_mode: 'shared_ro' is ignored"),
        (34, 21, "roles[2].workspace_mode: 'shared_ro' is ignored"),
        (43, 21, "roles[3].workspace_mode: 'shared_ro' is ignored"),
        (58, 3, "'budget.reserve_ratio' is attoswarm-only and ignored by gitswarm"),
        (59, 3, "'budget.chars_per_token_fallback' is attoswarm-only"),
        (65, 3, "'merge.judge_policy' is attoswarm-only"),
        (66, 3, "'merge.auto_apply_non_conflicting' is attoswarm-only"),
    },
    "attocode-research-swarm.yaml": {
        (17, 21, "roles[0].workspace_mode: 'shared' is ignored"),
        (19, 5, "'roles[0].execution_mode' is attoswarm-only"),
        (27, 21, "roles[1].workspace_mode: 'shared_ro' is ignored"),
        (29, 5, "'roles[1].execution_mode' is attoswarm-only"),
        (34, 3, "'budget.reserve_ratio' is attoswarm-only"),
        (35, 3, "'budget.chars_per_token_fallback' is attoswarm-only"),
        (44, 3, "'watchdog.task_silence_timeout_seconds' is ignored"),
        (50, 1, "'orchestration' is attoswarm-only and ignored by gitswarm"),
    },
    "sudoku-codex-hybrid.yaml": {
        (22, 19, "roles[1].workspace_mode: 'shared_ro' is ignored"),
        (29, 1, "'orchestration' is attoswarm-only"),
        (33, 1, "'workspace' is attoswarm-only"),
        (41, 3, "'merge.auto_apply_non_conflicting' is attoswarm-only"),
    },
    "swarmtester9-history-run.yaml": {
        (8, 3, "'run.monitor_detach_on_exit' is attoswarm-only"),
        (9, 3, "'run.debug' is attoswarm-only"),
        (18, 19, "roles[0].workspace_mode: 'shared_ro' is ignored"),
        (22, 3, "'roles[0].capabilities' is attoswarm-only"),
        (24, 3, "'roles[0].execution_mode' is attoswarm-only"),
        (31, 19, "roles[1].workspace_mode: 'shared_ro' is ignored"),
        (36, 3, "'roles[1].capabilities' is attoswarm-only"),
        (38, 3, "'roles[1].execution_mode' is attoswarm-only"),
        (42, 3, "'budget.reserve_ratio' is attoswarm-only"),
        (43, 3, "'budget.chars_per_token_fallback' is attoswarm-only"),
        (45, 19, "merge.authority_role: no role is called 'merger'"),
        (48, 3, "'merge.judge_policy' is attoswarm-only"),
        (49, 3, "'merge.auto_apply_non_conflicting' is attoswarm-only"),
        (52, 3, "'watchdog.task_silence_timeout_seconds' is ignored"),
        (56, 1, "'orchestration' is attoswarm-only"),
        (61, 1, "'ui' is attoswarm-only"),
        (64, 1, "'workspace' is attoswarm-only"),
        (71, 1, "'code_intel' is attoswarm-only"),
        (80, 1, "'research' is attoswarm-only"),
    },
    "swarmtester9-hybrid.yaml": {
        (22, 19, "roles[1].workspace_mode: 'shared_ro' is ignored"),
        (41, 19, "roles[3].workspace_mode: 'shared_ro' is ignored"),
        (47, 1, "'orchestration' is attoswarm-only"),
        (51, 1, "'workspace' is attoswarm-only"),
        (59, 3, "'merge.auto_apply_non_conflicting' is attoswarm-only"),
    },
}


def compat_files() -> list[Path]:
    return sorted(COMPAT_DIR.glob("*.yaml")) + sorted(COMPAT_DIR.glob("*.yml"))


def test_compat_folder_is_there() -> None:
    # A missing corpus must fail loudly: skipping would let compatibility rot unseen.
    assert COMPAT_DIR.is_dir(), f"attoswarm compat configs not found at {COMPAT_DIR}"
    assert len(compat_files()) >= 5


@pytest.mark.parametrize("path", compat_files() or [COMPAT_DIR / "missing"], ids=lambda p: p.name)
def test_compat_config_loads(path: Path) -> None:
    assert path.is_file(), f"no attoswarm compat configs in {COMPAT_DIR}"
    loaded = load_config(path)
    assert loaded.path == str(path)
    assert loaded.config.roles
    for warning in loaded.warnings:
        assert warning.file == str(path) and warning.line >= 1 and warning.col >= 1


@pytest.mark.parametrize("name", sorted(COMPAT_WARNINGS))
def test_compat_config_warnings(name: str) -> None:
    loaded = load_config(COMPAT_DIR / name)
    expected = COMPAT_WARNINGS[name]
    assert len(loaded.warnings) == len(expected), warning_texts(loaded)
    for line, col, text in expected:
        assert any(
            w.line == line and w.col == col and text in w.message for w in loaded.warnings
        ), f"missing warning {line}:{col}: {text} in {warning_texts(loaded)}"
    assert [where(w) for w in loaded.warnings] == sorted(where(w) for w in loaded.warnings)


def test_compat_hybrid_example_values() -> None:
    c = load_config(COMPAT_DIR / "attocode-hybrid-example.yaml").config
    assert [r.role_id for r in c.roles] == ["orchestrator", "implementer", "judge", "researcher", "merger"]
    impl = c.role("implementer")
    assert impl is not None
    assert (impl.backend, impl.model, impl.count, impl.write_access) == ("codex", "gpt-5.3-codex", 2, True)
    assert impl.task_kinds == ["implement", "refactor", "test"]
    assert c.role("researcher").backend == "attocode"  # type: ignore[union-attr]
    assert c.run.name == "hybrid-demo" and c.run.run_dir == ".agent/hybrid-swarm"
    assert c.run.max_runtime_seconds == 180
    assert c.budget == BudgetConfig(max_tokens=6_000_000, max_cost_usd=30.0)
    assert c.merge == MergeConfig(authority_role="merger", judge_roles=["judge"], quality_threshold=0.75)
    assert c.watchdog.heartbeat_timeout_seconds == 45
    assert c.retries.max_task_attempts == 2


def test_compat_sudoku_values_keep_attoswarm_defaults() -> None:
    c = load_config(COMPAT_DIR / "sudoku-codex-hybrid.yaml").config
    assert c.role("impl").count == 5  # type: ignore[union-attr]
    assert c.role("orchestrator").write_access is False  # type: ignore[union-attr]
    assert c.budget == BudgetConfig(max_tokens=5_000_000, max_cost_usd=50.0)
    assert c.watchdog == WatchdogConfig(heartbeat_timeout_seconds=120.0, task_max_duration_seconds=600.0)
    assert c.retries.max_task_attempts == 5
    assert c.merge.authority_role is None and c.merge.judge_roles == []


def test_compat_history_run_values() -> None:
    c = load_config(COMPAT_DIR / "swarmtester9-history-run.yaml").config
    assert c.merge.authority_role is None  # 'merger' names no role: warned, not used
    assert c.merge.judge_roles == []
    assert c.watchdog.heartbeat_timeout_seconds == 45.0  # the silence timeout is not used
    assert c.run.default_model == "" and c.role("worker").model == ""  # type: ignore[union-attr]
    assert c.role("orchestrator").command is None  # type: ignore[union-attr]


def test_compat_swarmtester_hybrid_resolves_judges_and_merger() -> None:
    c = load_config(COMPAT_DIR / "swarmtester9-hybrid.yaml").config
    assert c.merge.judge_roles == ["judge"]
    assert c.merge.authority_role == "merger"
    assert c.role("judge").task_kinds == ["judge", "critic"]  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------
# to_dict / from_dict
# ---------------------------------------------------------------------------------------


def sample_configs() -> list[SwarmConfig]:
    configs = [load_config(p).config for p in compat_files()]
    configs += [parse_config(template_text(v)).config for v in TEMPLATES]
    configs += [default_config(), default_config("claude", 4, "claude-sonnet-4-5"), default_config("codex")]
    return configs


@pytest.mark.parametrize("config", sample_configs(), ids=lambda c: ",".join(r.role_id for r in c.roles))
def test_round_trip(config: SwarmConfig) -> None:
    data = config.to_dict()
    assert SwarmConfig.from_dict(data) == config
    # It is stored as JSON in the run's state: strict JSON, and still equal after it.
    stored = json.loads(json.dumps(data, allow_nan=False))
    assert SwarmConfig.from_dict(stored) == config
    assert stored == data


@pytest.mark.parametrize("config", sample_configs(), ids=lambda c: ",".join(r.role_id for r in c.roles))
def test_to_dict_is_itself_a_valid_config(config: SwarmConfig) -> None:
    loaded = parse_config(dump_yaml(config.to_dict()), "stored.yaml")
    assert loaded.config == config
    assert loaded.warnings == []


def test_to_dict_holds_every_resolved_value() -> None:
    data = load(BASE).config.to_dict()
    assert set(data) == {"version", "run", "roles", "budget", "merge", "watchdog", "retries",
                         "worktree", "gates", "hooks", "prices"}
    assert data["run"]["state_flush_ms"] == 200
    assert data["roles"][0]["write_access"] is True
    assert data["hooks"] == {event: [] for event in HOOK_EVENTS}
    assert data["gates"] == {"syntax": True, "tests": True, "test_command": None,
                             "test_timeout_seconds": 600.0}


def test_from_dict_copies_its_input() -> None:
    data = load(BASE).config.to_dict()
    config = SwarmConfig.from_dict(data)
    data["roles"][0]["task_kinds"].append("x")
    data["roles"].append(data["roles"][0])
    assert config.roles[0].task_kinds == [] and len(config.roles) == 1


def test_from_dict_fills_missing_keys_with_defaults() -> None:
    config = SwarmConfig.from_dict({"roles": [{"role_id": "w", "backend": "scripted"}]})
    assert config.run == RunConfig() and config.budget == BudgetConfig()
    assert config.roles[0] == RoleConfig("w", "scripted", write_access=True)


# ---------------------------------------------------------------------------------------
# Defaults
# ---------------------------------------------------------------------------------------


def test_defaults() -> None:
    loaded = load(BASE)
    c = loaded.config
    assert loaded.warnings == [] and loaded.path == "swarm.yaml"
    assert c.version == 1
    assert c.run == RunConfig(working_dir=".", run_dir=".gitswarm", poll_interval_ms=250,
                              max_runtime_seconds=0.0, name=None, default_model="", state_flush_ms=200)
    assert c.roles == [RoleConfig(role_id="impl", backend="claude", role_type="worker", model="",
                                  count=1, write_access=True, workspace_mode="worktree",
                                  task_kinds=[], command=None, args=[], env={},
                                  prompt_via="stdin", timeout_seconds=None)]
    assert c.budget == BudgetConfig(max_tokens=5_000_000, max_cost_usd=25.0)
    assert c.merge == MergeConfig(authority_role=None, judge_roles=[], quality_threshold=0.75,
                                  verify="merged")
    assert c.watchdog == WatchdogConfig(heartbeat_timeout_seconds=120.0, task_max_duration_seconds=None)
    assert c.retries == RetriesConfig(max_task_attempts=2)
    assert c.worktree == WorktreeConfig(copy=[], setup=[], branch_prefix="attoswarm-work", dir=None)
    assert c.gates == GatesConfig(syntax=True, tests=True, test_command=None, test_timeout_seconds=600.0)


def test_write_access_defaults_by_role_type() -> None:
    c = load(BASE + """\
  - {role_id: plan, role_type: planner, backend: claude}
  - {role_id: j, role_type: judge, backend: claude}
  - {role_id: m, role_type: merger, backend: claude}
  - {role_id: s, role_type: synthesizer, backend: claude}
  - {role_id: ro, backend: claude, write_access: false}
""").config
    assert {r.role_id: r.write_access for r in c.roles} == {
        "impl": True, "plan": False, "j": False, "m": True, "s": True, "ro": False}


def test_null_sections_mean_defaults() -> None:
    c = load(BASE + "run:\nbudget:\nmerge:\nwatchdog:\nretries:\nworktree:\ngates:\nhooks:\n").config
    assert c == load(BASE).config


def test_model_for_uses_the_run_default() -> None:
    c = load(BASE + """\
  - {role_id: x, backend: codex, model: gpt-5}
  - {role_id: s, backend: scripted}
run:
  default_model: claude-opus-4-6
""").config
    assert [c.model_for(r) for r in c.roles] == ["claude-opus-4-6", "gpt-5", ""]


def test_default_config() -> None:
    c = default_config()
    assert [(r.role_id, r.backend, r.count) for r in c.roles] == [("worker", "scripted", 2)]
    c = default_config("claude", workers=3, model="claude-sonnet-4-5")
    assert [(r.role_id, r.role_type, r.backend, r.model, r.count) for r in c.roles] == [
        ("planner", "planner", "claude", "claude-sonnet-4-5", 1),
        ("worker", "worker", "claude", "claude-sonnet-4-5", 3),
    ]
    assert default_config("codex").roles[1].model == ""
    # Independent objects: no shared mutable defaults.
    a, b = default_config(), default_config()
    a.roles[0].task_kinds.append("x")
    a.worktree.copy.append(".env")
    assert b.roles[0].task_kinds == [] and b.worktree.copy == []


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"backend": "claud"}, "did you mean 'claude'?"),
        ({"backend": "command"}, "needs a config file"),
        ({"workers": 0}, "workers must be"),
        ({"workers": True}, "workers must be"),
        ({"backend": "scripted", "model": "gpt-5"}, "runs no model"),
    ],
)
def test_default_config_rejects(kwargs: dict[str, Any], text: str) -> None:
    with pytest.raises(InputError, match=re.escape(text)):
        default_config(**kwargs)


# ---------------------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", TEMPLATES)
def test_template_loads_without_warnings(variant: str) -> None:
    text = template_text(variant)
    assert text == (REPO / "gitswarm" / "templates" / f"{variant}.yaml").read_text(encoding="utf-8")
    loaded = parse_config(text, f"{variant}.yaml")
    assert loaded.warnings == []
    assert text.count("#") > 10  # it teaches the format


def test_minimal_template_needs_no_agent() -> None:
    c = parse_config(template_text("minimal")).config
    assert [(r.role_type, r.backend) for r in c.roles] == [("worker", "scripted")]


def test_hybrid_template_team() -> None:
    c = parse_config(template_text("hybrid")).config
    assert {(r.role_type, r.backend) for r in c.roles} == {
        ("planner", "claude"), ("worker", "codex"), ("judge", "claude"), ("merger", "claude")}
    assert c.merge.authority_role == "merger" and c.merge.judge_roles == ["judge"]
    assert set(HOOK_EVENTS) <= set(re.findall(r"^  (\w+):", template_text("hybrid"), re.M))


def test_unknown_template() -> None:
    with pytest.raises(InputError, match="did you mean 'hybrid'"):
        template_text("hybird")


# ---------------------------------------------------------------------------------------
# Validation rules
# ---------------------------------------------------------------------------------------


def test_all_problems_reported_sorted() -> None:
    found = problems("""\
        version: 1
        roles:
          - role_id: impl
            backend: claud
            count: 0
        budget:
          max_cost_usd: -1
        retries:
          max_task_attempt: 3
        """)
    assert [where(p) for p in found] == [(4, 14), (5, 12), (7, 17), (9, 3)]
    assert all(p.file == "swarm.yaml" for p in found)


def test_version() -> None:
    assert load("roles: [{role_id: w, backend: scripted}]").config.version == 1
    assert "expected 1, got '1'" in one_problem(BASE.replace("version: 1", "version: '1'")).message
    assert where(one_problem(BASE.replace("version: 1", "version: true"))) == (1, 10)


@pytest.mark.parametrize("role_type", ["worker", "merger", "judge", "planner", "orchestrator",
                                       "researcher", "critic", "synthesizer"])
def test_role_types_accepted(role_type: str) -> None:
    c = load(BASE + f"  - {{role_id: r, role_type: {role_type}, backend: claude}}\n").config
    assert c.roles[1].role_type == role_type


def test_critic_acts_as_judge_and_synthesizer_as_merger() -> None:
    c = load(BASE + """\
  - {role_id: crit, role_type: critic, backend: claude, task_kinds: [critic, review]}
  - {role_id: syn, role_type: synthesizer, backend: claude, task_kinds: [synthesize]}
""").config
    assert c.role("crit").acts_as == "judge"  # type: ignore[union-attr]
    assert c.role("syn").acts_as == "merger"  # type: ignore[union-attr]
    assert c.merge.judge_roles == ["crit"] and c.merge.authority_role == "syn"


@pytest.mark.parametrize("role_id", ["impl", "impl-2", "a_b", "0", "x" * 64])
def test_role_id_valid(role_id: str) -> None:
    assert load(BASE.replace("role_id: impl", f"role_id: '{role_id}'")).config.roles[0].role_id == role_id


@pytest.mark.parametrize(
    ("role_id", "text"),
    [("Impl", "not a valid role id"), ("-x", "not a valid role id"), ("_x", "not a valid role id"),
     ("a b", "not a valid role id"), ("a/b", "not a valid role id"), ("x" * 65, "not a valid role id"),
     ("''", "role_id: must not be empty"), ("7", "role_id: expected a string, got 7 (quote it)")],
)
def test_role_id_invalid(role_id: str, text: str) -> None:
    problem = one_problem(BASE.replace("role_id: impl", f"role_id: {role_id}"))
    assert text in problem.message and where(problem) == (3, 14)


def test_unknown_backend_lists_known_ones() -> None:
    message = one_problem(BASE.replace("backend: claude", "backend: codx")).message
    assert "unknown backend 'codx'; did you mean 'codex'?" in message
    assert "claude, codex, codex-mcp, aider, command, scripted" in message


def test_backend_without_close_match() -> None:
    message = one_problem(BASE.replace("backend: claude", "backend: zzz")).message
    assert "did you mean" not in message and "known backends:" in message


def test_model_null_and_empty() -> None:
    c = load(BASE + "  - {role_id: a, backend: codex, model: null}\n"
                    "  - {role_id: b, backend: codex, model: ''}\n").config
    assert [r.model for r in c.roles] == ["", "", ""]


def test_count_values() -> None:
    assert load(BASE + "    count: 8\n").config.roles[0].count == 8
    assert "got 2.5" in one_problem(BASE + "    count: 2.5\n").message
    assert "got false" in one_problem(BASE + "    count: false\n").message
    assert "got '2'" in one_problem(BASE + "    count: '2'\n").message


def test_workspace_mode_warning() -> None:
    assert load(BASE + "    workspace_mode: worktree\n").warnings == []
    loaded = load(BASE + "    workspace_mode: shared\n")
    assert warning_texts(loaded) == [
        "5:21: roles[0].workspace_mode: 'shared' is ignored: gitswarm gives every agent its own "
        "worktree anyway"]
    assert loaded.config.roles[0].workspace_mode == "worktree"  # what gitswarm does


def test_attoswarm_role_keys_warn() -> None:
    loaded = load(BASE + "    capabilities: [python]\n    execution_mode: oneshot\n")
    assert [(w.line, w.col) for w in loaded.warnings] == [(5, 5), (6, 5)]
    assert "'roles[0].capabilities' is attoswarm-only" in loaded.warnings[0].message


def test_task_kinds_empty_means_any_kind_the_type_takes() -> None:
    c = load(BASE + """\
  - {role_id: j, role_type: judge, backend: claude}
  - {role_id: p, role_type: planner, backend: claude}
  - {role_id: k, backend: claude, task_kinds: [implement]}
""").config
    impl, judge, planner, kinds = c.roles
    assert impl.takes_kind("implement") and impl.takes_kind("whatever") and not impl.takes_kind("review")
    assert judge.takes_kind("review") and judge.takes_kind("critic") and not judge.takes_kind("implement")
    assert planner.takes_kind("design") and not planner.takes_kind("implement")
    assert kinds.takes_kind("implement") and not kinds.takes_kind("test")


@pytest.mark.parametrize(
    ("role_type", "kinds", "bad"),
    [
        ("judge", "[review, implement]", "implement"),
        ("critic", "[critic, test]", "test"),
        ("worker", "[implement, judge]", "judge"),
        ("merger", "[merge, critic]", "critic"),
        ("synthesizer", "[review]", "review"),
        ("planner", "[planning, implement]", "implement"),
        ("orchestrator", "[analysis, review]", "review"),
        ("researcher", "[research, test]", "test"),
    ],
)
def test_role_type_task_kind_mismatch(role_type: str, kinds: str, bad: str) -> None:
    problem = one_problem(BASE + f"  - role_id: r\n    role_type: {role_type}\n    backend: claude\n"
                                 f"    task_kinds: {kinds}\n")
    assert f"task kind '{bad}' does not fit role 'r' (role_type {role_type})" in problem.message
    assert problem.line == 8


@pytest.mark.parametrize(
    ("role_type", "kinds"),
    [
        ("judge", "[review, judge, critic]"),
        ("worker", "[implement, refactor, test, merge, synthesize, integrate]"),
        ("merger", "[merge, integrate]"),
        ("planner", "[analysis, planning, design, research]"),
        ("researcher", "[research, analysis]"),
    ],
)
def test_role_type_task_kinds_that_fit(role_type: str, kinds: str) -> None:
    load(BASE + f"  - {{role_id: r, role_type: {role_type}, backend: claude, task_kinds: {kinds}}}\n")


def test_command_string_and_list() -> None:
    c = load(BASE + """\
  - role_id: a
    backend: claude
    command: /opt/claude/bin/claude
  - role_id: b
    backend: command
    command: [python, fake_worker.py]
    args: ["--task", "{task_id}"]
""").config
    assert c.roles[1].command == "/opt/claude/bin/claude" and c.roles[1].args == []
    assert c.roles[2].command == "python" and c.roles[2].args == ["fake_worker.py", "--task", "{task_id}"]


def test_command_role_placeholders() -> None:
    text = BASE + """\
  - role_id: g
    backend: command
    command: gemini
    args: ["-p", "{prompt}", "--file={prompt_file}", "--cwd", "{workdir}", "{task_id}",
           "-m", "{model}", "{{literal}}"]
    model: gemini-2.5-pro
    prompt_via: argv
    timeout_seconds: 900
"""
    loaded = load(text)
    assert loaded.warnings == []
    role = loaded.config.roles[1]
    assert (role.prompt_via, role.timeout_seconds) == ("argv", 900.0)


@pytest.mark.parametrize(
    "arg", ["{prompt!r}", "{prompt:>10}", "{}", "{0}", "{prompt.x}", "{workdir}/{taskid}"])
def test_command_role_bad_placeholders(arg: str) -> None:
    problem = one_problem(
        BASE + f"  - role_id: g\n    backend: command\n    command: x\n    args: ['{arg}']\n")
    assert "unknown placeholder" in problem.message and where(problem) == (8, 12)


def test_placeholder_in_list_command_is_checked() -> None:
    problem = one_problem(BASE + "  - {role_id: g, backend: command, command: [run, '{task}']}\n")
    assert "roles[1].command[1]: unknown placeholder '{task}'" in problem.message


def test_braces_in_other_backends_args_are_left_alone() -> None:
    assert load(BASE + "    args: ['--json={\"a\": 1}']\n").config.roles[0].args == ['--json={"a": 1}']


def test_command_backend_needs_command() -> None:
    problem = one_problem(BASE + "  - {role_id: g, backend: command, command: null}\n")
    assert "backend 'command' needs 'command'" in problem.message


def test_command_only_keys_warn_on_other_backends() -> None:
    loaded = load(BASE + "    prompt_via: argv\n    timeout_seconds: 10\n")
    # timeout_seconds applies to every backend now: only prompt_via is command-only.
    assert [where(w) for w in loaded.warnings] == [(5, 5)]
    assert loaded.config.roles[0].timeout_seconds == 10
    assert "used only by the command backend" in loaded.warnings[0].message


def test_model_on_modelless_backends_warns() -> None:
    loaded = load(BASE + "  - {role_id: s, backend: scripted, model: gpt-5}\n"
                         "  - {role_id: c, backend: command, command: x, model: m}\n"
                         "  - {role_id: d, backend: command, command: x, model: m, args: ['{model}']}\n")
    assert [w.line for w in loaded.warnings] == [5, 6]
    assert "runs no model" in loaded.warnings[0].message
    assert "{model} placeholder" in loaded.warnings[1].message


def test_env() -> None:
    c = load(BASE + "    env: {API_BASE: 'http://127.0.0.1:9', _X1: ''}\n").config
    assert c.roles[0].env == {"API_BASE": "http://127.0.0.1:9", "_X1": ""}
    problem = one_problem(BASE + "    env: {1BAD: x}\n")
    assert "not a valid environment variable name" in problem.message and where(problem) == (5, 11)
    assert "expected a mapping" in one_problem(BASE + "    env: [A=1]\n").message


def test_budget() -> None:
    assert load(BASE + "budget: {max_tokens: 0, max_cost_usd: 0}\n").config.budget == BudgetConfig(0, 0.0)
    assert load(BASE + "budget: {max_cost_usd: 12}\n").config.budget.max_cost_usd == 12.0
    assert "must be >= 0, got -0.5" in one_problem(BASE + "budget: {max_cost_usd: -0.5}\n").message
    assert "expected a whole number, got 1.5" in one_problem(BASE + "budget: {max_tokens: 1.5}\n").message
    assert "must be a finite number, got inf" in one_problem(BASE + "budget: {max_cost_usd: .inf}\n").message
    assert "expected a number" in one_problem(BASE + "budget: {max_cost_usd: " + "9" * 400 + "}\n").message


def test_budget_attoswarm_keys_warn() -> None:
    loaded = load(BASE + "budget:\n  reserve_ratio: 0.15\n  chars_per_token_fallback: 4.0\n")
    assert warning_texts(loaded) == [
        "6:3: 'budget.reserve_ratio' is attoswarm-only and ignored by gitswarm",
        "7:3: 'budget.chars_per_token_fallback' is attoswarm-only and ignored by gitswarm",
    ]


@pytest.mark.parametrize("value", ["0", "1", "0.5", "1.0"])
def test_quality_threshold_range(value: str) -> None:
    merge = load(BASE + f"merge: {{quality_threshold: {value}}}\n").config.merge
    assert merge.quality_threshold == float(value)


def test_quality_threshold_below_zero() -> None:
    assert "must be >= 0" in one_problem(BASE + "merge: {quality_threshold: -0.1}\n").message


def test_authority_role() -> None:
    two = BASE + "  - {role_id: fixer, role_type: merger, backend: claude}\n"
    assert load(two + "merge: {authority_role: fixer}\n").config.merge.authority_role == "fixer"
    assert load(two + "merge: {authority_role: null}\n").config.merge.authority_role is None
    assert load(two).config.merge.authority_role == "fixer"  # resolved default
    loaded = load(BASE + "merge: {authority_role: merger}\n")
    assert loaded.config.merge.authority_role is None and len(loaded.warnings) == 1
    problem = one_problem(two + "merge: {authority_role: fixr}\n")
    assert "no role is called 'fixr'; did you mean 'fixer'?" in problem.message
    assert where(problem) == (6, 25)


def test_judge_roles() -> None:
    text = BASE + "  - {role_id: rev, role_type: judge, backend: claude}\n"
    assert load(text).config.merge.judge_roles == ["rev"]  # resolved default
    assert load(text + "merge: {judge_roles: []}\n").config.merge.judge_roles == []
    assert load(text + "merge: {judge_roles: [rev, rev]}\n").config.merge.judge_roles == ["rev"]
    found = problems(text + "merge:\n  judge_roles:\n    - rev\n    - impel\n    - nobody\n")
    assert [(where(p), "did you mean 'impl'?" in p.message) for p in found] == [
        ((9, 7), True), ((10, 7), False)]


def test_merge_verify_and_attoswarm_keys() -> None:
    assert load(BASE + "merge: {verify: task}\n").config.merge.verify == "task"
    assert "'all' is not one of merged, task, none" in one_problem(BASE + "merge: {verify: all}\n").message
    loaded = load(BASE + "merge:\n  judge_policy: quorum\n  auto_apply_non_conflicting: true\n")
    assert [w.line for w in loaded.warnings] == [6, 7]


def test_watchdog_silence_timeout_maps_to_heartbeat() -> None:
    loaded = load(BASE + "watchdog: {task_silence_timeout_seconds: 90}\n")
    assert loaded.config.watchdog.heartbeat_timeout_seconds == 90 and loaded.warnings == []
    loaded = load(BASE + "watchdog:\n  heartbeat_timeout_seconds: 30\n  task_silence_timeout_seconds: 90\n")
    assert loaded.config.watchdog.heartbeat_timeout_seconds == 30
    assert warning_texts(loaded) == [
        "7:3: 'watchdog.task_silence_timeout_seconds' is ignored: heartbeat_timeout_seconds is set, "
        "and gitswarm has one silence timeout"]


def test_watchdog_limits() -> None:
    c = load(BASE + "watchdog: {task_max_duration_seconds: 2.5}\n").config
    assert c.watchdog.task_max_duration_seconds == 2.5
    assert "must be > 0" in one_problem(BASE + "watchdog: {task_max_duration_seconds: 0}\n").message
    assert "must be > 0" in one_problem(BASE + "watchdog: {heartbeat_timeout_seconds: -1}\n").message


def test_retries() -> None:
    assert load(BASE + "retries: {max_task_attempts: 1}\n").config.retries.max_task_attempts == 1
    assert "got true" in one_problem(BASE + "retries: {max_task_attempts: true}\n").message


def test_worktree_section() -> None:
    c = load(BASE + """\
worktree:
  copy: [.env, config/local.json]
  setup: npm ci
  branch_prefix: swarm/work
  dir: /tmp/trees
""").config
    assert c.worktree == WorktreeConfig(copy=[".env", "config/local.json"], setup=["npm ci"],
                                        branch_prefix="swarm/work", dir="/tmp/trees")


@pytest.mark.parametrize("prefix", ["a..b", "work/", "/work", "a b", "x.lock", "-x", "attoswarm"])
def test_worktree_bad_branch_prefix(prefix: str) -> None:
    problem = one_problem(BASE + f"worktree: {{branch_prefix: '{prefix}'}}\n")
    assert problem.message.startswith("worktree.branch_prefix:") and where(problem) == (5, 27)


@pytest.mark.parametrize("path", ["../secret", "a/../../b", "~/.env", "/abs"])
def test_worktree_copy_outside_repo(path: str) -> None:
    problem = one_problem(BASE + f"worktree: {{copy: ['{path}']}}\n")
    assert "must be a path inside the repository" in problem.message


def test_gates() -> None:
    c = load(BASE + "gates: {syntax: false, tests: false, test_command: 'pytest -q', "
                    "test_timeout_seconds: 30}\n").config
    assert c.gates == GatesConfig(syntax=False, tests=False, test_command="pytest -q",
                                  test_timeout_seconds=30.0)
    assert load(BASE + "gates: {test_command: ''}\n").config.gates.test_command is None


def test_test_verification_maps_into_gates() -> None:
    loaded = load(BASE + """\
test_verification:
  enabled: true
  test_command: make check
  test_timeout_seconds: 120
  pass_rate_threshold: 1.0
  applicable_task_kinds: [implement]
""")
    assert loaded.config.gates == GatesConfig(syntax=True, tests=True, test_command="make check",
                                              test_timeout_seconds=120.0)
    assert [w.line for w in loaded.warnings] == [9, 10]
    assert "'test_verification.pass_rate_threshold' is attoswarm-only" in loaded.warnings[0].message


def test_test_verification_disabled_turns_tests_off() -> None:
    assert load(BASE + "test_verification: {enabled: false}\n").config.gates.tests is False
    loaded = load(BASE + "test_verification: {test_command: pytest}\n")
    assert loaded.config.gates.tests is False  # attoswarm's default is off
    assert "'enabled' is not set" in loaded.warnings[0].message


def test_gates_win_over_test_verification() -> None:
    loaded = load(BASE + "gates: {test_command: tox}\n"
                         "test_verification: {enabled: true, test_command: pytest}\n")
    assert loaded.config.gates.test_command == "tox" and loaded.config.gates.tests is True
    assert warning_texts(loaded) == [
        "6:36: 'test_verification.test_command' is ignored: gates.test_command is set"]


def test_hooks() -> None:
    c = load(BASE + """\
hooks:
  task_started: echo start
  before_merge: ["./lint.sh", "./check.sh"]
  run_finished:
""").config
    assert c.hooks.task_started == ["echo start"]
    assert c.hooks.commands("before_merge") == ["./lint.sh", "./check.sh"]
    assert c.hooks.run_finished == [] and c.hooks.task_merged == []
    with pytest.raises(KeyError):
        c.hooks.commands("nope")


def test_unknown_hook_event() -> None:
    problem = one_problem(BASE + "hooks:\n  task_merged: [a]\n  task_merge: [b]\n")
    assert "unknown hook event 'task_merge'; did you mean 'task_merged'?" in problem.message
    assert where(problem) == (7, 3)


@pytest.mark.parametrize("section", ATTOSWARM_ONLY_SECTIONS)
def test_attoswarm_only_section_warns_once(section: str) -> None:
    # Contents are not checked: anything goes inside, one warning for the section.
    loaded = load(BASE + f"{section}:\n  anything: [1, 2]\n  nested: {{deep: true}}\n")
    assert warning_texts(loaded) == [f"5:1: '{section}' is attoswarm-only and ignored by gitswarm"]


def test_run_section() -> None:
    loaded = load(BASE + """\
run:
  name: add login
  working_dir: ../repo
  run_dir: .runs
  poll_interval_ms: 100
  max_runtime_seconds: 600
  state_flush_ms: 0
  monitor_detach_on_exit: true
  debug: false
""")
    assert loaded.config.run == RunConfig(working_dir="../repo", run_dir=".runs", poll_interval_ms=100,
                                          max_runtime_seconds=600.0, name="add login",
                                          default_model="", state_flush_ms=0)
    assert [w.line for w in loaded.warnings] == [12, 13]
    assert "no letters or digits" in one_problem(BASE + "run: {name: '---'}\n").message
    assert "must be >= 1" in one_problem(BASE + "run: {poll_interval_ms: 0}\n").message
    assert "must not be empty" in one_problem(BASE + "run: {run_dir: ''}\n").message


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    message = one_problem(BASE + "retries: {zzz: 1}\n").message
    assert message == "unknown key 'zzz' in retries; valid keys: max_task_attempts"


def test_unknown_key_suggests_attoswarm_key_too() -> None:
    assert "did you mean 'reserve_ratio'?" in one_problem(BASE + "budget: {reserve_ratoi: 1}\n").message


def test_wrong_shapes() -> None:
    assert "roles: expected a list of roles, got 'impl'" in one_problem("roles: impl\n").message
    assert "roles: the list is empty" in one_problem("roles:\n").message
    assert "expected a mapping with 'roles' at the top level, got 'hello'" in one_problem("hello\n").message
    assert "merge: expected a mapping, got a list" in one_problem(BASE + "merge: [a]\n").message
    problem = one_problem(BASE + "    task_kinds: [a, 3]\n")
    assert "task_kinds[1]: expected a string, got 3 (quote it)" in problem.message


def test_yaml_syntax_errors_have_positions() -> None:
    p = one_problem("roles:\n  - role_id: impl\n    backend: 'claude\n")
    assert p.message.startswith("YAML syntax error:") and p.line >= 3
    p = one_problem("a: 1\na: 2\n")
    assert (p.message, where(p)) == ("duplicate key 'a'", (2, 1))
    p = one_problem("roles:\n  - role_id: x\n\x07\n")
    assert "not allowed in YAML" in p.message and where(p) == (3, 1)
    p = one_problem("roles:\n  - role_id: x\n    count: !!int abc\n")
    assert where(p) == (3, 12)


def test_comments_only_is_empty() -> None:
    assert one_problem("# nothing here\n\n").message == "the config is empty; expected a mapping with 'roles'"


def test_anchors_and_merge_keys() -> None:
    loaded = load("""\
        roles:
          - &base {role_id: a, backend: claude}
          - {<<: *base, role_id: b}
        """)
    assert [(r.role_id, r.backend) for r in loaded.config.roles] == [("a", "claude"), ("b", "claude")]
    p = one_problem("""\
        roles:
          - &base {role_id: a, backend: claude}
          - {<<: *base, role_id: b, count: 0}
        """)
    assert "count: must be >= 1" in p.message and where(p) == (3, 36)


def test_unknown_top_level_key_is_an_error_even_for_extensions() -> None:
    assert "unknown key 'x-base' at the top level" in problems("""\
        x-base: &base {backend: claude}
        roles:
          - {<<: *base, role_id: a}
        """)[0].message


def test_load_config_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(InputError) as info:
        load_config(missing)
    assert info.value.problems[0].file == str(missing) and "no such config file" in str(info.value)
    with pytest.raises(InputError, match="is a directory"):
        load_config(tmp_path)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"roles:\n  - role_id: \xff\n")
    with pytest.raises(InputError) as info:
        load_config(binary)
    assert where(info.value.problems[0]) == (2, 14) and "not UTF-8" in info.value.problems[0].message


def test_load_config_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "swarm.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    assert load_config(path).config.roles[0].role_id == "impl"


def test_warnings_do_not_leak_between_loads() -> None:
    noisy = BASE + "ui: {poll_ms: 5}\n"
    assert len(load(noisy).warnings) == 1
    assert load(BASE).warnings == []
    assert len(load(noisy).warnings) == 1


# ---------------------------------------------------------------------------------------
# The bad-config corpus: each file names the problem it must produce
# ---------------------------------------------------------------------------------------

EXPECT_RE = re.compile(r"^# expect-error: (\d+):(\d+): (.+)$")


def bad_configs() -> list[Path]:
    return sorted(BAD_DIR.glob("*.yaml"))


def test_bad_config_corpus_size() -> None:
    assert len(bad_configs()) >= 28


@pytest.mark.parametrize("path", bad_configs(), ids=lambda p: p.name)
def test_bad_config(path: Path) -> None:
    header = path.read_text(encoding="utf-8").split("\n", 1)[0]
    match = EXPECT_RE.match(header)
    assert match, f"{path.name}: first line must be '# expect-error: LINE:COL: SUBSTRING'"
    line, col, text = int(match[1]), int(match[2]), match[3]
    with pytest.raises(InputError) as info:
        load_config(path)
    found = info.value.problems
    assert all(p.file == str(path) and p.line >= 1 and p.col >= 1 for p in found)
    assert any(p.line == line and p.col == col and text in p.message for p in found), (
        f"expected {line}:{col}: {text!r}; got: {[str(p) for p in found]}")


# ---------------------------------------------------------------------------------------
# Fuzzing: no input gives anything but a config or an InputError
# ---------------------------------------------------------------------------------------


def check_outcome(text: str) -> None:
    try:
        loaded = parse_config(text, "fuzz.yaml")
    except InputError as exc:
        assert exc.problems
        for p in exc.problems:
            assert p.file == "fuzz.yaml" and p.line >= 1 and p.col >= 1 and p.message
        return
    for w in loaded.warnings:
        assert w.file == "fuzz.yaml" and w.line >= 1 and w.col >= 1
    data = loaded.config.to_dict()
    assert SwarmConfig.from_dict(json.loads(json.dumps(data, allow_nan=False))) == loaded.config


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
SCALARS = (st.none() | st.booleans() | st.integers(-(10**20), 10**20)
           | st.floats(allow_nan=True, allow_infinity=True) | TEXT
           | st.sampled_from(["claude", "worker", "judge", "{prompt}", "{nope}", "review", "merger",
                              "command", "", "yes", "impl", "1.5", "-1"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(TEXT | st.sampled_from(["role_id", "backend", "count"]),
                                        inner, max_size=3), max_leaves=8)
KEYS = st.sampled_from(["role_id", "backend", "role_type", "count", "model", "task_kinds", "command",
                        "args", "env", "budget", "merge", "roles", "hooks", "worktree", "gates",
                        "max_tokens", "judge_roles", "authority_role", "copy", "version", "zzz",
                        "test_verification", "enabled", "orchestration", "before_merge"]) | TEXT


def paths_of(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found += paths_of(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += paths_of(value, (*prefix, index))
    return found


def hybrid_data() -> Any:
    return YAML(typ="safe", pure=True).load(template_text("hybrid"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_structural_mutations(data: st.DataObject) -> None:
    config = hybrid_data()
    for _ in range(data.draw(st.integers(1, 4))):
        path = data.draw(st.sampled_from(paths_of(config)))
        parent = config
        for step in path[:-1]:
            parent = parent[step]
        action = data.draw(st.sampled_from(["replace", "delete", "insert"]))
        if not path:  # the root itself
            config = data.draw(VALUES) if action == "replace" else config
            continue
        last = path[-1]
        if action == "replace":
            parent[last] = data.draw(VALUES)
        elif action == "delete":
            del parent[last]
        elif isinstance(parent[last], dict):
            parent[last][data.draw(KEYS)] = data.draw(VALUES)
        elif isinstance(parent[last], list):
            parent[last].append(data.draw(VALUES))
    check_outcome(dump_yaml(config))


MUTATION_CHARS = st.sampled_from([*":-{}[],'\"\t\n #&*!|>%@`?", "  ", "\n- ", ": x", "\x00", "\ufeff"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), variant=st.sampled_from(TEMPLATES))
def test_fuzz_text_mutations(data: st.DataObject, variant: str) -> None:
    text = template_text(variant)
    for _ in range(data.draw(st.integers(1, 5))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 3))
        text = text[:at] + data.draw(MUTATION_CHARS | TEXT) + text[at + cut:]
    check_outcome(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_arbitrary_text(text: str) -> None:
    check_outcome(text)


# ---------------------------------------------------------------------------------------
# Agent CLI settings and prices
# ---------------------------------------------------------------------------------------


def test_agent_cli_settings_and_prices_load() -> None:
    loaded = load("""\
roles:
  - role_id: impl
    backend: claude
    max_turns: 12
    permission_mode: acceptEdits
    allowed_tools: [Bash, Edit]
    append_system_prompt: Keep changes small.
  - {role_id: cx, backend: codex, sandbox: danger-full-access, model: gpt-5}
  - {role_id: ai, backend: aider, edit_format: whole, model: openai/x}
prices:
  gpt-5: {input: 1.25, output: 10, cache_read: 0.125}
""")
    assert loaded.warnings == []
    impl, cx, ai = loaded.config.roles
    assert (impl.max_turns, impl.permission_mode, impl.allowed_tools, impl.append_system_prompt) == (
        12, "acceptEdits", ["Bash", "Edit"], "Keep changes small.")
    assert cx.sandbox == "danger-full-access" and ai.edit_format == "whole"
    assert loaded.config.prices == {"gpt-5": {"input": 1.25, "output": 10.0, "cache_read": 0.125,
                                              "cache_write": 1.25}}
    again = parse_config(dump_yaml(loaded.config.to_dict()), "stored.yaml")
    assert again.config == loaded.config and again.warnings == []


def test_agent_cli_setting_of_another_backend_is_warned_about() -> None:
    loaded = load("""\
roles:
  - {role_id: cx, backend: codex, max_turns: 3}
""")
    assert [where(w) for w in loaded.warnings] == [(2, 35)]
    assert "used only by backend claude" in loaded.warnings[0].message


@pytest.mark.parametrize("text, where, words", [
    ("roles:\n  - {role_id: a, backend: claude, permission_mode: yolo}\n", (2, 52), "not one of default"),
    ("roles:\n  - {role_id: a, backend: codex, sandbox: open}\n", (2, 43), "not one of read-only"),
    ("roles:\n  - {role_id: a, backend: claude, max_turns: 0}\n", (2, 46), "must be >= 1"),
    ("roles:\n  - {role_id: a, backend: codex}\nprices:\n  gpt-5: {input: 1}\n", (4, 10), "missing 'output'"),
    ("roles:\n  - {role_id: a, backend: codex}\nprices:\n  gpt-5: {input: 1, output: -2}\n", (4, 29), ">= 0"),
    ("roles:\n  - {role_id: a, backend: codex}\nprices:\n  gpt-5: {input: 1, output: 2, cached: 1}\n",
     (4, 32), "unknown key 'cached'"),
])
def test_bad_agent_cli_settings_are_errors_with_positions(text: str, where: tuple[int, int], words: str) -> None:
    with pytest.raises(InputError) as info:
        parse_config(text, "swarm.yaml")
    problem = info.value.problems[0]
    assert (problem.line, problem.col) == where, problem
    assert words in problem.message
