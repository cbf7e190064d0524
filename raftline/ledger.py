"""The ledger: everything a run carries, in one object.

Continue-as-new hands it to the next run, queries read it, `status` rebuilds views from
it (also outside a worker, from a replayed history). It stays small on purpose: a
checkpoint is referenced by the sha256 of its output (the text lives in the payload
store), the facts L1 needs later are extracted once at commit, and the trace of earlier
runs is archived by reference. A 1,000-step run carries about 150 KB.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from raftline.models import (
    BreakerState,
    Checkpoint,
    CommittedRef,
    CompensationOutcome,
    RunStatus,
    TraceSlice,
    Usage,
    Verdict,
)


class Entry(BaseModel):
    """One committed checkpoint, by reference."""

    seq: int
    step: str
    sha256: str
    attempt: int
    at: datetime
    key: str = Field(
        default="", description="the committed attempt's idempotency key, when not derivable"
    )
    parents: list[int] = Field(default_factory=list)
    # What the step saw, content-addressed: sha256 over its parents' (seq, sha256, seen),
    # so it names the whole causal past in 64 characters (see raftline.ledger.seen_id).
    seen: str = ""
    tier: str = "L1"
    verifier: str = "rules"
    degraded: bool = False
    reviewer: str | None = None
    usage: Usage = Field(default_factory=Usage)
    # What L1 needs from this output later (grounded numbers, consistent keys): extracted
    # once at commit, only when some step downstream asks for it.
    facts: dict[str, Any] | None = None
    reused_from: str | None = None
    # A sub-pipeline step: the child run's own checkpoints, compensated with this one.
    children: list[Entry] = Field(default_factory=list)
    child_spec: str | None = Field(default=None, description="the child's workflow id")

    def ref(self) -> CommittedRef:
        return CommittedRef(seq=self.seq, step=self.step, sha256=self.sha256)

    def checkpoint(self, output: str | None = None, key: str | None = None) -> Checkpoint:
        return Checkpoint(
            seq=self.seq,
            step=self.step,
            output=output,
            sha256=self.sha256,
            verdict=Verdict(
                passed=True,
                tier=self.tier,
                verifier=self.verifier,
                degraded=self.degraded,
                reviewer=self.reviewer,
            ),
            attempt=self.attempt,
            at=self.at,
            usage=self.usage,
            parents=self.parents,
            reused_from=self.reused_from,
            key=key or self.key or None,
        )


def seen_id(parents: list[Entry]) -> str:
    """A Merkle id of everything a step saw: its direct needs' checkpoints and, through
    their own ids, every checkpoint upstream. Equal ids, equal causal pasts."""
    parts = sorted(f"{e.seq}:{e.sha256}:{e.seen}" for e in parents)
    return hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()


class Counters(BaseModel):
    rollbacks: int = 0
    retries: int = 0
    verdicts: int = 0
    passed: int = 0  # verdicts that passed (map items and sub-pipelines included)
    degraded: int = 0  # checkpoints committed without a judge's verdict
    reused: int = 0  # checkpoints a fork took over


class Ledger(BaseModel):
    status: RunStatus = RunStatus.RUNNING
    first_run_id: str = ""
    runs: int = Field(default=0, description="earlier runs of this chain (continue-as-new)")
    checkpoints: list[Entry] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)
    breaker: BreakerState = Field(default_factory=BreakerState)
    usage: Usage = Field(default_factory=Usage)
    # The most input tokens one call of each kind ("step", "judge") reported: the floor of
    # the next call's reservation.
    input_tokens_seen: dict[str, int] = Field(default_factory=dict)
    counters: Counters = Field(default_factory=Counters)
    compensations: list[CompensationOutcome] = Field(default_factory=list)
    trace_seq: int = Field(default=0, description="the seq of the last trace event")
    trace_archive: list[TraceSlice] = Field(default_factory=list)
    hints: dict[str, str] = Field(
        default_factory=dict, description="a first attempt's hint: a fork's, a review's"
    )
    fork_of: str | None = None

    def entry(self, step: str) -> Entry | None:
        for e in self.checkpoints:
            if e.step == step:
                return e
        return None

    def by_seq(self, seq: int) -> Entry:
        return self.checkpoints[seq - 1]

    @property
    def committed(self) -> set[str]:
        return {e.step for e in self.checkpoints}

    @property
    def verified(self) -> int:
        """Committed with the verification their criticality asks for (not degraded)."""
        return len(self.checkpoints) - self.counters.degraded

    @property
    def degraded(self) -> int:
        return self.counters.degraded

    @property
    def reused(self) -> int:
        return self.counters.reused
