"""L1 rules on a labelled corpus, and their speed.

`python -m benchmarks rules` runs the rules on tests/corpus/rules/*.jsonl, one labelled
output a line (the text, the stop reason if any, the step's goal, format and checks, the
task and the committed outputs it saw, the expected verdict and a note), and prints:
- the false-positive rate: acceptable outputs ("ok", expected "pass") rejected;
- the false-negative rate of each mechanical class (truncation, refusal, error, secrets,
  format, contradiction) and of all of them together: bad outputs that passed; an output
  rejected with another class than expected is caught, and counted apart as "other class";
- the same for the other classes L1 checks when configured (numbers, scope), no target;
- the semantic misses: outputs bad for reasons L1 is not expected to see (a wrong fact, an
  answer to another question), listed apart: they are the judges' job.
Targets: false positives <= 3%, false negatives <= 10% in each mechanical class.
`--version rules-2` or `rules-1` runs an older version (runs in flight still decide by it);
`--version all` compares them.

The corpus was written with the rules, so its rates are optimistic. The honest estimate is
the first run of each holdout file, written before the rules saw it (each then fixed what
it showed): holdout (115 outputs), holdout2 (48), holdout3 (44); together 5/97 false
positives (5%), and false negatives refusal 14/34 (41%), error 7/22 (32%), secrets 5/16
(31%), truncation 2/24 (8%), format, contradiction and numbers 0/14. New phrasings of
refusals and errors are what L1 misses most: the judges must back it there.

`--speed` times check_rules and extract_facts on outputs of 1 KB to 10 MB built from the
corpus's acceptable outputs, with the default checks and with every check configured.
Target: under ~30 ms up to 256 KiB (a workflow task must yield within 2 s on a busy machine).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from benchmarks.common import emit_json, machine, pct, table
from raftline.models import ErrorClass, StepSpec, Task, Verdict, VerifyInput
from raftline.verifiers import rules, rules_v1

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "rules"
MECHANICAL = ("truncation", "refusal", "error", "secrets", "format", "contradiction")
CONFIGURED = ("numbers", "scope")  # caught when a step configures the check; no target
LABELS = ("ok", *MECHANICAL, *CONFIGURED, "semantic")
FP_TARGET = 0.03
FN_TARGET = 0.10
SIZES = (
    ("1 KB", 1024),
    ("64 KB", 64 * 1024),
    ("256 KB", 256 * 1024),
    ("2 MB", 2 * 1024 * 1024),
    ("10 MB", 10 * 1024 * 1024),
)
ALL_CHECKS: dict[str, Any] = {
    "min_length": 10,
    "required": ["north"],
    "forbidden": [r"\b\d{3}-\d{2}-\d{4}\b"],
    "consistent_keys": ["total", "plan.budget"],
    "grounded_numbers": True,
    "topic": ["sales", "revenue"],
    "out_of_scope": [r"\bdeleted the\b"],
    "max_length": 50_000_000,
}


class Case(BaseModel):
    """One corpus line."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    label: Literal[LABELS]  # type: ignore[valid-type]
    expect: Literal["pass", *(c.value for c in ErrorClass)]  # type: ignore[valid-type]
    text: str
    stop_reason: str | None = None
    step: StepSpec
    task: Task
    committed: dict[str, str] = Field(default_factory=dict)
    note: str = Field(min_length=1)

    def verify_input(self) -> VerifyInput:
        meta = {"stop_reason": self.stop_reason} if self.stop_reason is not None else {}
        return VerifyInput(
            workflow_id=f"corpus-{self.id}",
            step=self.step,
            task=self.task,
            output={"text": self.text, "meta": meta},
            committed=self.committed,
        )


def load_corpus(root: Path = CORPUS) -> list[Case]:
    """Every case of every *.jsonl file under root; a malformed line is an error naming it."""
    cases: list[Case] = []
    for path in sorted(root.glob("*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                case = Case.model_validate(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"{path.name}:{number}: {exc}") from exc
            if (case.label == "ok") != (case.expect == "pass"):
                raise ValueError(f"{path.name}:{number}: label 'ok' if and only if expect 'pass'")
            cases.append(case)
    ids = [c.id for c in cases]
    if len(set(ids)) != len(ids):
        raise ValueError("corpus ids are not unique")
    return cases


@dataclass
class Figures:
    """What the rules got right and wrong on a corpus."""

    version: str
    ok: int = 0
    false_positives: list[tuple[Case, str]] = field(default_factory=list)
    total: dict[str, int] = field(default_factory=dict)
    missed: dict[str, list[Case]] = field(default_factory=dict)
    other_class: dict[str, list[tuple[Case, str]]] = field(default_factory=dict)

    @property
    def fp_rate(self) -> float:
        return len(self.false_positives) / self.ok if self.ok else 0.0

    def fn_rate(self, *labels: str) -> float:
        total = sum(self.total.get(lab, 0) for lab in labels)
        return sum(len(self.missed.get(lab, [])) for lab in labels) / total if total else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "acceptable": self.ok,
            "false_positive_rate": round(self.fp_rate, 4),
            "false_positives": [c.id for c, _ in self.false_positives],
            "false_negative_rate": {
                lab: round(self.fn_rate(lab), 4) for lab in (*MECHANICAL, *CONFIGURED)
            }
            | {"mechanical": round(self.fn_rate(*MECHANICAL), 4)},
            "cases": dict(self.total),
            "missed": {lab: [c.id for c in cs] for lab, cs in self.missed.items() if cs},
            "other_class": {
                lab: [c.id for c, _ in cs] for lab, cs in self.other_class.items() if cs
            },
        }


Check = Callable[[VerifyInput], Verdict]


def _as(version: str) -> Check:
    return lambda inp: rules.check_rules(inp, None, version)


VERSIONS: dict[str, Check] = {
    "rules-3": rules.check_rules,
    "rules-2": _as("rules-2"),
    "rules-1": rules_v1.check_rules,
}


def evaluate(
    cases: Sequence[Case], check: Check = rules.check_rules, version: str = rules.RULES_VERSION
) -> Figures:
    figures = Figures(version)
    for case in cases:
        verdict = check(case.verify_input())
        if case.label == "ok":
            figures.ok += 1
            if not verdict.passed:
                figures.false_positives.append((case, verdict.reason))
            continue
        figures.total[case.label] = figures.total.get(case.label, 0) + 1
        if verdict.passed:
            figures.missed.setdefault(case.label, []).append(case)
        elif verdict.error_class is None or verdict.error_class.value != case.expect:
            figures.other_class.setdefault(case.label, []).append((case, verdict.reason))
    return figures


def within_targets(figures: Figures) -> list[str]:
    """What misses its target (want [])."""
    problems = []
    if figures.fp_rate > FP_TARGET:
        problems.append(f"false positives {pct(figures.fp_rate)} > {pct(FP_TARGET)}")
    for label in MECHANICAL:
        if figures.fn_rate(label) > FN_TARGET:
            problems.append(
                f"{label} false negatives {pct(figures.fn_rate(label))} > {pct(FN_TARGET)}"
            )
    return problems


def render(figures: Figures, verbose: bool) -> str:
    rows = [
        [
            "false positives (acceptable rejected)",
            f"{len(figures.false_positives)}/{figures.ok}",
            pct(figures.fp_rate),
            f"<= {pct(FP_TARGET, 0)}",
        ]
    ]
    for label in (*MECHANICAL, "mechanical", *CONFIGURED):
        labels = MECHANICAL if label == "mechanical" else (label,)
        total = sum(figures.total.get(lab, 0) for lab in labels)
        missed = sum(len(figures.missed.get(lab, [])) for lab in labels)
        other = sum(len(figures.other_class.get(lab, [])) for lab in labels)
        target = f"<= {pct(FN_TARGET, 0)}" if label not in CONFIGURED else "-"
        note = f" ({other} other class)" if other else ""
        rows.append(
            [
                f"false negatives: {label}",
                f"{missed}/{total}{note}",
                pct(figures.fn_rate(*labels)),
                target,
            ]
        )
    lines = [
        f"## {figures.version} on {figures.ok + sum(figures.total.values())} outputs",
        "",
        table(["", "count", "rate", "target"], rows),
        "",
    ]
    semantic = figures.missed.get("semantic", [])
    lines.append(
        f"Semantic misses (for the judges, not L1): {len(semantic)}/"
        f"{figures.total.get('semantic', 0)} passed L1."
    )
    if verbose:
        lines += ["", "False positives:"] + [
            f"  {c.id}: {c.note} -> {reason}" for c, reason in figures.false_positives
        ]
        lines += ["Missed:"] + [
            f"  {c.id} ({lab}): {c.note}" for lab, cs in figures.missed.items() for c in cs
        ]
        lines += ["Caught with another class:"] + [
            f"  {c.id} ({lab}, expected {c.expect}): {reason}"
            for lab, cs in figures.other_class.items()
            for c, reason in cs
        ]
    return "\n".join(lines)


# ---------------------------------------------------------------- speed


def speed_text(size: int, cases: Sequence[Case]) -> str:
    """A realistic output of `size` characters that passes every check (of rules-2 and of
    rules-1, so both run in full): a report opening, then the corpus's acceptable text
    outputs in turn."""
    pieces = [
        c.text
        for c in cases
        if c.label == "ok"
        and c.step.format == "text"
        and all(check(c.verify_input()).passed for check in VERSIONS.values())
    ]
    base = "\n\n".join(pieces)
    text = OPENING + (base * (size // len(base) + 1))[: size - len(OPENING) - len(CLOSING)]
    return text + CLOSING


OPENING = "Quarterly sales report: revenue grew in the north and the south.\n\n"
CLOSING = "\n\nSales grew in the north, as planned."


def time_rules(cases: Sequence[Case], repeats: int = 5) -> list[dict[str, Any]]:
    """Each size with the default checks, and with every check configured (the output
    itself is among the task's inputs, so its numbers are grounded and every check runs)."""
    committed = {"extract": '{"total": 9000, "region": "north", "plan": {"budget": 5}}'}
    facts = [rules.extract_facts(s, t, ["total", "plan.budget"]) for s, t in committed.items()]
    out = []
    for name, size in SIZES:
        text = speed_text(size, cases)
        runs = max(1, repeats if size <= 256 * 1024 else 2)
        for config, checks in (("default", {}), ("all checks", ALL_CHECKS)):
            vin = VerifyInput(
                workflow_id="speed",
                step={"name": "summary", "goal": "Summarise the sales report", "checks": checks},
                task={"goal": "Analyse quarterly sales", "inputs": {"report": text}},
                output=text,
                committed=committed,
            )
            verdict = rules.check_rules(vin, facts)
            check = best_of(runs, lambda vin=vin: rules.check_rules(vin, facts))
            extract = best_of(runs, lambda t=text: rules.extract_facts("summary", t, ["total"]))
            row = {
                "size": name,
                "checks": config,
                "passed": verdict.passed,
                "checks_run": len(verdict.checks_run),
                "check_ms": check,
                "extract_facts_ms": extract,
                "total_ms": round(check + extract, 1),
            }
            if config == "default":
                row["rules_1_ms"] = best_of(runs, lambda vin=vin: rules_v1.check_rules(vin))
            out.append(row)
    return out


def best_of(runs: int, fn: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 1)


def render_speed(rows: list[dict[str, Any]]) -> str:
    info = machine()
    return (
        table(
            [
                "output",
                "checks",
                "verdict",
                "check_rules ms",
                "extract_facts ms",
                "total ms",
                "rules-1 ms",
            ],
            [
                [
                    r["size"],
                    r["checks"],
                    f"{'pass' if r['passed'] else 'fail'} ({r['checks_run']})",
                    r["check_ms"],
                    r["extract_facts_ms"],
                    r["total_ms"],
                    r.get("rules_1_ms", ""),
                ]
                for r in rows
            ],
        )
        + f"\n\nBest of 5 runs (2 above 256 KB); {info['cores']} cores, load "
        f"{info['loadavg_1m_at_start']} at start, Python {info['python']}."
    )


# ---------------------------------------------------------------- command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--speed", action="store_true", help="time the rules on 1 KB to 10 MB outputs")
    p.add_argument(
        "--version", choices=[*VERSIONS, "all"], default=rules.RULES_VERSION, help="all: each"
    )
    p.add_argument("--corpus", type=Path, default=CORPUS, help="a folder of *.jsonl cases")
    p.add_argument("-v", "--verbose", action="store_true", help="list every miss")


def main(args: argparse.Namespace) -> int:
    cases = load_corpus(args.corpus)
    if args.speed:
        rows = time_rules(cases)
        if args.json:
            emit_json({"speed": rows, "machine": machine()})
        else:
            print(render_speed(rows))
        return 0
    versions = list(VERSIONS) if args.version == "all" else [args.version]
    results = [evaluate(cases, VERSIONS[v], v) for v in versions]
    if args.json:
        emit_json({"figures": [f.summary() for f in results], "machine": machine()})
    else:
        print("\n\n".join(render(f, args.verbose) for f in results))
    return 1 if within_targets(results[0]) and versions[0] == rules.RULES_VERSION else 0
