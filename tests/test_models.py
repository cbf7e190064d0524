"""The shared contracts: strict pipeline specs with one-line errors, results, usage."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from raftline.models import (
    CompensationOutcome,
    PipelineSpec,
    RunResult,
    RunStatus,
    SpecError,
    StepOutput,
    Usage,
)
from tests.conftest import ROOT, SUMMARY_KEYS

# The CLI contract of DESIGN.md, plus the one-line error of a failed run.
RESULT_KEYS = SUMMARY_KEYS | {"error"}


def spec_error(text: str, source: str = "p.yaml") -> str:
    """The SpecError message for a YAML text; it must be a single line."""
    with pytest.raises(SpecError) as info:
        PipelineSpec.from_yaml_text(textwrap.dedent(text), source)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{source}: "), message
    return message


# ---------------------------------------------------------------- valid specs


def test_minimal_spec_gets_defaults() -> None:
    spec = PipelineSpec.from_yaml_text("name: x\nsteps: [{name: a, goal: do a}]")
    step = spec.steps[0]
    assert step.activity == "scripted"
    assert spec.retries(step) == 2
    assert spec.criticality(step) == "LOW"
    assert spec.verifier(step) is None


def test_step_overrides_policy() -> None:
    spec = PipelineSpec.from_yaml_text(
        textwrap.dedent(
            """
            name: x
            policy: {retries: 4, criticality: MEDIUM}
            steps:
              - {name: a, goal: g, retries: 0, criticality: HIGH}
              - {name: b, goal: g}
            """
        )
    )
    a, b = spec.steps
    assert (spec.retries(a), spec.criticality(a)) == (0, "HIGH")
    assert (spec.retries(b), spec.criticality(b)) == (4, "MEDIUM")


def test_example_pipeline_is_valid() -> None:
    spec = PipelineSpec.from_yaml(ROOT / "examples" / "board_memo.yaml")
    assert [s.name for s in spec.steps] == ["research", "finance", "analysis", "memo", "publish"]
    assert spec.steps[-1].compensation == "unpublish"


# ---------------------------------------------------------------- strictness, field named


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "name: x\ncolour: red\nsteps: [{name: a, goal: g}]",
            "p.yaml: colour: unknown field",
            id="unknown-top-level-key",
        ),
        pytest.param(
            "name: x\nsteps: [{name: a, goal: g, colour: red}]",
            "p.yaml: steps[0](a).colour: unknown field",
            id="unknown-step-key",
        ),
        pytest.param(
            "name: x\nsteps: [{name: a, goal: g, checks: {colour: red}}]",
            "p.yaml: steps[0](a).checks.colour: unknown field",
            id="unknown-checks-key",
        ),
        pytest.param(
            "name: x\npolicy: {retry: 3}\nsteps: [{name: a, goal: g}]",
            "p.yaml: policy.retry: unknown field",
            id="unknown-policy-key",
        ),
        pytest.param(
            "name: x\nsteps: [{name: a, goal: g}, {name: b, goal: g}, {name: a, goal: h}]",
            "p.yaml: steps: duplicate step name 'a'",
            id="duplicate-step-names",
        ),
        pytest.param(
            "name: x\nsteps: []",
            "p.yaml: steps: List should have at least 1 item",
            id="empty-steps",
        ),
        pytest.param("name: x\n", "p.yaml: steps: field required", id="no-steps"),
        pytest.param("steps: [{name: a, goal: g}]", "p.yaml: name: field required", id="no-name"),
        pytest.param(
            "name: x\nsteps: [{name: a}]",
            "p.yaml: steps[0](a).goal: field required",
            id="missing-goal",
        ),
        pytest.param(
            "name: x\nsteps: [{name: a, goal: ''}]",
            "p.yaml: steps[0](a).goal: String should have at least 1 character",
            id="empty-goal",
        ),
        pytest.param(
            "name: x\nsteps: [{name: '1 bad', goal: g}]",
            "p.yaml: steps[0](1 bad).name: must be letters, digits",
            id="bad-step-name",
        ),
        pytest.param(
            "name: x\nsteps: [{name: a, goal: g, checks: {forbidden: ['(unclosed']}}]",
            "p.yaml: steps[0](a).checks: invalid regex '(unclosed'",
            id="invalid-forbidden-regex",
        ),
        pytest.param(
            "name: x\nsteps: [{name: a, goal: g, checks: {out_of_scope: ['[z-a]']}}]",
            "p.yaml: steps[0](a).checks: invalid regex '[z-a]'",
            id="invalid-out-of-scope-regex",
        ),
        pytest.param(
            "name: x\nsteps: [{name: a, goal: g, checks: {min_length: 10, max_length: 5}}]",
            "p.yaml: steps[0](a).checks: min_length is greater than max_length",
            id="min-length-above-max",
        ),
        pytest.param(
            "name: x\nsteps: [{name: a, goal: g, format: yaml}]",
            "p.yaml: steps[0](a).format: Input should be 'text' or 'json'",
            id="bad-format",
        ),
        pytest.param(
            "name: x\npolicy: {criticality: EXTREME}\nsteps: [{name: a, goal: g}]",
            "p.yaml: policy.criticality: Input should be 'LOW', 'MEDIUM' or 'HIGH'",
            id="bad-criticality",
        ),
        pytest.param(
            "name: x\nsteps: {a: {goal: g}}",
            "p.yaml: steps: Input should be a valid list",
            id="steps-not-a-list",
        ),
    ],
)
def test_invalid_spec_names_the_field(text: str, expected: str) -> None:
    assert spec_error(text).startswith(expected)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        pytest.param("policy: {retries: -1}", "policy.retries", id="policy-retries"),
        pytest.param("policy: {budget: {max_tokens: -1}}", "policy.budget.max_tokens", id="tokens"),
        pytest.param(
            "policy: {budget: {max_cost_usd: -0.5}}", "policy.budget.max_cost_usd", id="cost"
        ),
        pytest.param(
            "policy: {breaker: {max_trips: -1}}", "policy.breaker.max_trips", id="breaker-trips"
        ),
        pytest.param(
            "policy: {activity_retry: {max_attempts: 0}}",
            "policy.activity_retry.max_attempts",
            id="activity-attempts",
        ),
        pytest.param("policy: {step_timeout_s: 0}", "policy.step_timeout_s", id="timeout"),
    ],
)
def test_negative_retries_and_budgets_are_rejected(text: str, field: str) -> None:
    message = spec_error(f"name: x\n{text}\nsteps: [{{name: a, goal: g}}]")
    assert message.startswith(f"p.yaml: {field}: Input should be greater than"), message


def test_negative_step_retries_names_the_step() -> None:
    message = spec_error("name: x\nsteps: [{name: a, goal: g}, {name: b, goal: g, retries: -1}]")
    assert message == "p.yaml: steps[1](b).retries: Input should be greater than or equal to 0"


def test_quorum_require_above_judges() -> None:
    message = spec_error(
        "name: x\nsteps: [{name: a, goal: g, verifier: {quorum: {require: 3, judges: [{}, {}]}}}]"
    )
    assert message == "p.yaml: steps[0](a).verifier.quorum: require=3 exceeds the 2 judges"


def test_judge_and_quorum_together() -> None:
    message = spec_error(
        """
        name: x
        policy:
          verifier:
            judge: {activity: raftline.llm_judge}
            quorum: {require: 1, judges: [{}]}
        steps: [{name: a, goal: g}]
        """
    )
    assert message == "p.yaml: policy.verifier: give either judge or quorum, not both"


def test_several_errors_report_the_first_and_count_the_rest() -> None:
    message = spec_error("name: x\ncolour: red\nsize: 3\nsteps: [{name: a, goal: g}]")
    assert message == "p.yaml: colour: unknown field (and 1 more)"


def test_duplicate_yaml_key_is_rejected() -> None:
    message = spec_error("name: x\nsteps: [{name: a, goal: g}]\nsteps: [{name: b, goal: g}]")
    assert message == "p.yaml: invalid YAML at line 3: duplicate key 'steps'"


def test_topic_min_beyond_the_keywords_is_rejected() -> None:
    message = spec_error("name: x\nsteps: [{name: a, goal: g, checks: {topic: [a], topic_min: 2}}]")
    assert message == "p.yaml: steps[0](a).checks: topic_min=2 exceeds the 1 topic keywords"


# ---------------------------------------------------------------- YAML and files


def test_invalid_yaml_reports_the_line() -> None:
    message = spec_error("name: x\nsteps:\n\t- name: a\n")
    assert message.startswith("p.yaml: invalid YAML at line 3: "), message


def test_invalid_yaml_unclosed_bracket() -> None:
    message = spec_error("name: x\nsteps: [{name: a, goal: g}\npolicy: {}\n")
    assert "invalid YAML at line " in message


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("- name: x\n- steps: []\n", id="list"),
        pytest.param("just a sentence\n", id="scalar"),
        pytest.param("", id="empty-document"),
    ],
)
def test_yaml_that_is_not_a_mapping(text: str) -> None:
    assert spec_error(text) == "p.yaml: expected a mapping with 'name' and 'steps' at the top"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as info:
        PipelineSpec.from_yaml(path)
    assert str(info.value) == f"{path}: no such pipeline file"


def test_directory_is_not_a_pipeline_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such pipeline file"):
        PipelineSpec.from_yaml(tmp_path)


def test_from_yaml_uses_the_path_as_source(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: x\nsteps: [{name: a, goal: g, colour: red}]\n", encoding="utf-8")
    with pytest.raises(SpecError) as info:
        PipelineSpec.from_yaml(path)
    assert str(info.value) == f"{path}: steps[0](a).colour: unknown field"


def test_undecodable_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(b"name: \xff\xfe\x00x\n")
    with pytest.raises(SpecError) as info:
        PipelineSpec.from_yaml(path)
    assert str(info.value).startswith(f"{path}: cannot read: ")
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- runtime records


def test_step_output_accepts_a_plain_string() -> None:
    out = StepOutput.model_validate("the answer")
    assert out.text == "the answer"
    assert out.usage == Usage()
    assert out.model is None and out.meta == {}


def test_step_output_accepts_a_mapping() -> None:
    out = StepOutput.model_validate({"text": "t", "usage": {"input_tokens": 3}})
    assert (out.text, out.usage.input_tokens, out.usage.output_tokens) == ("t", 3, 0)


def test_usage_addition() -> None:
    total = Usage(input_tokens=10, output_tokens=5, cost_usd=0.1) + Usage(
        input_tokens=1, output_tokens=2, cost_usd=0.2
    )
    assert total == Usage(input_tokens=11, output_tokens=7, cost_usd=0.3)
    assert total.tokens == 18
    assert Usage() + Usage() == Usage()


def result(**overrides: object) -> RunResult:
    fields: dict[str, object] = {
        "workflow_id": "wf-1",
        "pipeline": "p",
        "status": RunStatus.COMPLETED,
        "success": True,
        "steps_total": 5,
        "verified": 5,
        "rollbacks": 1,
        "retries": 1,
        "verdicts": 6,
        "output": "done",
        "usage": Usage(input_tokens=40, output_tokens=120, cost_usd=0.0125),
    }
    fields.update(overrides)
    return RunResult.model_validate(fields)


def test_summary_has_exactly_the_contract_keys() -> None:
    s = result().summary("http://ui/wf-1")
    assert set(s) == RESULT_KEYS
    assert s == {
        "workflow_id": "wf-1",
        "status": "completed",
        "success": True,
        "verified": "5/5",
        "rollbacks": 1,
        "retries": 1,
        "compensations": 0,
        "breaker_trips": 0,
        "reliability": round(5 / 6, 4),
        "degraded": 0,
        "output": "done",
        "usage": {"input_tokens": 40, "output_tokens": 120, "cost_usd": 0.0125},
        "ui_url": "http://ui/wf-1",
        "error": None,
    }


def test_summary_of_a_compensated_run() -> None:
    outcome = CompensationOutcome(step="a", activity="record_undo", ok=True, at=datetime.now(UTC))
    r = result(
        status=RunStatus.COMPENSATED,
        success=False,
        steps_total=2,
        verified=1,
        verdicts=4,
        compensations=[outcome],
        breaker_trips=1,
        error="step 'b' spent its retry budget",
    )
    s = r.summary()
    assert set(s) == RESULT_KEYS
    assert s["status"] == "compensated" and s["success"] is False
    assert s["verified"] == "1/2"
    assert s["compensations"] == 1
    assert s["breaker_trips"] == 1
    assert s["reliability"] == 0.25
    assert s["error"] == "step 'b' spent its retry budget"
    assert s["ui_url"] is None
    assert s["output"] is None  # what a compensated run produced was retracted


@pytest.mark.parametrize(
    ("verified", "verdicts", "expected"),
    [(5, 5, 1.0), (5, 6, 0.8333), (1, 3, 0.3333), (0, 3, 0.0), (0, 0, 0.0)],
)
def test_reliability_is_verified_over_verdicts(
    verified: int, verdicts: int, expected: float
) -> None:
    assert result(verified=verified, verdicts=verdicts).reliability == expected
