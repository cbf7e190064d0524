"""Routing by criticality, quorum voting and a provider circuit breaker. Pure logic.

Criticality decides whether an LLM judge runs; the VerifierSpec decides which:
LOW -> rules only; MEDIUM -> one L2 (small model) judge; HIGH -> the quorum if one is
configured, else one L3 (large model) judge. Without a spec the default judge
(activity "raftline.llm_judge", provider from the environment) is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from raftline.models import Criticality, JudgeSpec, Usage, Verdict, VerifierSpec

TIERS = ("L1", "L2", "L3")


def next_tier(tier: str) -> str | None:
    """The tier a low-confidence pass escalates to, or None at the top."""
    i = TIERS.index(tier) if tier in TIERS else len(TIERS) - 1
    return TIERS[i + 1] if i + 1 < len(TIERS) else None


@dataclass(frozen=True)
class JudgeCall:
    """One judge activity to schedule: VerifyInput(tier=tier, params=params)."""

    activity: str
    tier: str
    params: dict[str, Any] = field(default_factory=dict)
    task_queue: str | None = None
    local: bool = False


@dataclass(frozen=True)
class JudgePlan:
    tier: str  # the highest tier the step reaches: L1 means rules only
    judges: tuple[JudgeCall, ...] = ()
    require: int = 0  # passes needed; 0 when no judge runs

    @property
    def is_quorum(self) -> bool:
        return len(self.judges) > 1


def _call(spec: JudgeSpec, tier: str) -> JudgeCall:
    return JudgeCall(spec.activity, tier, dict(spec.params), spec.task_queue, spec.local)


def plan_judges(criticality: Criticality, verifier: VerifierSpec | None) -> JudgePlan:
    """Which judges verify a step of this criticality (after the L1 rules)."""
    if criticality is Criticality.LOW:
        return JudgePlan("L1")
    spec = verifier or VerifierSpec()
    if criticality is Criticality.MEDIUM:
        # One small judge: a configured quorum's first judge stands in for it.
        single = spec.judge or (spec.quorum.judges[0] if spec.quorum else JudgeSpec())
        return JudgePlan("L2", (_call(single, "L2"),), 1)
    if spec.quorum is not None:
        calls = tuple(_call(j, "L3") for j in spec.quorum.judges)
        return JudgePlan("L3", calls, spec.quorum.require)
    return JudgePlan("L3", (_call(spec.judge or JudgeSpec(), "L3"),), 1)


@dataclass(frozen=True)
class Tally:
    """What a quorum's votes decide. `verdict` is None while missing votes could still
    change the outcome: a judge that gave no verdict is a missing vote, never a pass."""

    verdict: Verdict | None
    missing: int
    disagreement: bool  # real votes on both sides


def tally(votes: Sequence[Verdict | None], require: int) -> Tally:
    """PASS on `require` real PASS votes; FAIL as soon as that can no longer happen;
    undecided (verdict None) while the missing votes could still make the difference."""
    if not votes:
        raise ValueError("tally needs at least one vote")
    real = [v for v in votes if v is not None and not v.degraded]
    missing = len(votes) - len(real)
    passes = [v for v in real if v.passed]
    fails = [v for v in real if not v.passed]
    disagreement = bool(passes and fails)
    names = ", ".join(f"{v.verifier}" + (f"/{v.model}" if v.model else "") for v in real)
    common: dict[str, Any] = {
        "tier": max((v.tier for v in real), key=_tier_rank, default="L3"),
        "verifier": f"quorum({len(passes)}/{require} of {len(votes)}): {names or 'none'}",
        "usage": sum((v.usage for v in real), Usage()),
        "latency_ms": max((v.latency_ms or 0.0 for v in real), default=0.0),
        "prompt_version": next((v.prompt_version for v in real if v.prompt_version), None),
        "checks_run": [c for v in real for c in v.checks_run],
    }
    if len(passes) >= require:
        absent = f"; {missing} judge(s) gave no verdict" if missing else ""
        verdict = Verdict(
            passed=True,
            reason=f"{len(passes)} of {len(votes)} judges passed (require {require}){absent}",
            confidence=min(v.confidence for v in passes),
            model=passes[0].model,
            **common,
        )
        return Tally(verdict, missing, disagreement)
    if len(passes) + missing < require:
        first = fails[0]
        verdict = Verdict(
            passed=False,
            error_class=first.error_class,
            hint=first.hint,
            reason=f"{len(passes)} of {require} required judges passed; {first.reason}",
            confidence=first.confidence,
            model=first.model,
            **common,
        )
        return Tally(verdict, missing, disagreement)
    return Tally(None, missing, disagreement)


def combine_quorum(verdicts: Sequence[Verdict | None], require: int) -> Verdict:
    """The quorum's verdict when every vote is in; a missing vote (None, or a degraded
    verdict) counts as no vote, so an undecided quorum FAILS (fail closed)."""
    result = tally(verdicts, require)
    if result.verdict is not None:
        return result.verdict
    real = [v for v in verdicts if v is not None and not v.degraded]
    passes = sum(1 for v in real if v.passed)
    return Verdict(
        passed=False,
        tier=max((v.tier for v in real), key=_tier_rank, default="L3"),
        verifier=f"quorum({passes}/{require} of {len(verdicts)})",
        reason=(
            f"only {passes} of {require} required judges passed: "
            f"{result.missing} judge(s) gave no verdict"
        ),
        usage=sum((v.usage for v in real), Usage()),
    )


def _tier_rank(tier: str) -> int:
    return TIERS.index(tier) if tier in TIERS else -1


@dataclass
class CircuitBreaker:
    """Per-provider breaker: after `threshold` consecutive failures the provider is skipped
    for `cooldown_s`, then one trial call is let through (half-open)."""

    threshold: int = 3
    cooldown_s: float = 60.0
    state: Literal["closed", "open", "half_open"] = "closed"
    failures: int = 0
    opened_at: float = 0.0

    def allow(self, now: float) -> bool:
        if self.state == "closed":
            return True
        # Open and cooled down, or a half-open trial that never reported back: one trial.
        if now - self.opened_at >= self.cooldown_s:
            self.state, self.opened_at = "half_open", now
            return True
        return False

    def record_success(self) -> None:
        self.state, self.failures = "closed", 0

    def record_failure(self, now: float) -> None:
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.threshold:
            self.state, self.opened_at = "open", now

    def is_open(self, now: float) -> bool:
        """True while calls are refused (does not consume the half-open trial)."""
        return self.state != "closed" and now - self.opened_at < self.cooldown_s
