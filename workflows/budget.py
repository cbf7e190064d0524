"""The run's token and cost budget, held with a reservation per call.

Before each step or judge call the run reserves a share of what is left and hands it to
the call as its cap (`BudgetCap`); raftline's LLM activities refuse a request whose worst
case (prompt tokens plus the request's max output tokens, at the model's price) would
not fit. What a call spent is charged when it returns, whether its reply was usable or
not, and the reservation is released. Parallel calls (quorum judges, DAG branches)
share what is left, so together they cannot overspend.
"""

from __future__ import annotations

from raftline.models import BudgetCap, EventType, Usage
from raftline.workflows.errors import RunEnded
from raftline.workflows.run import Run


class Budget:
    def __init__(self, run: Run) -> None:
        self.run = run
        self.limits = run.spec.policy.budget
        self._reserved: dict[int, BudgetCap] = {}
        self._next = 0

    @property
    def unlimited(self) -> bool:
        return self.limits.max_tokens is None and self.limits.max_cost_usd is None

    def reserve(self, step: str, kind: str, share: int = 1) -> tuple[int, BudgetCap | None]:
        """A cap for one call: `1/share` of what no other call has reserved. Ends the run
        (budget) when nothing is left."""
        if self.unlimited:
            return 0, None
        used = self.run.ledger.usage
        held_tokens = sum(c.max_tokens or 0 for c in self._reserved.values())
        held_cost = sum(c.max_cost_usd or 0.0 for c in self._reserved.values())
        tokens = cost = None
        if self.limits.max_tokens is not None:
            tokens = self.limits.max_tokens - used.tokens - held_tokens
            if tokens <= 0:
                self._stop(step, f"{used.tokens} tokens used of {self.limits.max_tokens}")
            tokens //= max(share, 1)
        if self.limits.max_cost_usd is not None:
            cost = round(self.limits.max_cost_usd - used.cost_usd - held_cost, 8)
            if cost <= 0:
                self._stop(step, f"${used.cost_usd:.4f} spent of ${self.limits.max_cost_usd}")
            cost = round(cost / max(share, 1), 8)
        self._next += 1
        cap = BudgetCap(
            max_tokens=tokens,
            max_cost_usd=cost,
            seen_input_tokens=self.run.ledger.input_tokens_seen.get(kind, 0),
        )
        self._reserved[self._next] = cap
        return self._next, cap

    def charge(self, ticket: int, usage: Usage, kind: str, step: str) -> None:
        """Release the call's reservation and count what it spent. Over the budget (a call
        that ignored its cap): the run stops before the next call."""
        self._reserved.pop(ticket, None)
        ledger = self.run.ledger
        ledger.usage += usage
        if usage.input_tokens > ledger.input_tokens_seen.get(kind, 0):
            ledger.input_tokens_seen[kind] = usage.input_tokens

    def release(self, ticket: int) -> None:
        self._reserved.pop(ticket, None)

    def refused(self, step: str, message: str) -> RunEnded:
        """A call refused to start: its worst case did not fit its cap."""
        self.run.event(EventType.BUDGET_EXCEEDED, step, message=message)
        return RunEnded(f"budget: {message}", step)

    def _stop(self, step: str, spent: str) -> None:
        raise self.refused(step, f"{spent}: no budget left for the next call")
