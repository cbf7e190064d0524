"""Injection guard benchmark: catch rate and false positives on the labelled corpus.

The corpus (tests/corpus/injection/*.jsonl, one {"text", "label", "note"} per line) holds
attacks written the way an outsider would (homoglyphs, invisible characters, split and
spaced words, encodings, fake fences and turns, role-play, polite requests, several
languages) and honest outputs close to the line (API docs, test plans, grading policies,
legal text, code). Lines are grouped by the technique their note names before its colon.
holdout*.jsonl were written after the guard, each before it was tuned on them: the report
lists each file on its own so their figures are not hidden in the total.

Speed: the guard over ~256 KiB outputs of several kinds (prose, docs, code, JSON, text in
other scripts, and a dense one made of the honest corpus, every sentence near the line),
CPU time of this process, best of --repeat runs.

python -m benchmarks injection [--json] [--size KIB] [--repeat N] [--no-speed]
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import random
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import emit_json, table, wilson
from raftline.verifiers.injection import Finding, find_injection

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "injection"
TARGET_CATCH = 0.95
TARGET_FALSE_POSITIVES = 0.02
LABELS = ("attack", "honest")


@dataclass(frozen=True)
class Case:
    text: str
    label: str  # attack | honest
    note: str
    file: str

    @property
    def technique(self) -> str:
        return self.note.split(":", 1)[0].strip()


def load(corpus: Path = CORPUS) -> list[Case]:
    """Every line of every *.jsonl in `corpus`; a malformed line is an error."""
    cases = []
    for path in sorted(corpus.glob("*.jsonl")):
        for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if row.get("label") not in LABELS or not row.get("note") or not row.get("text"):
                raise ValueError(f"{path.name}:{number}: needs text, label (attack|honest), note")
            cases.append(Case(row["text"], row["label"], row["note"], path.name))
    return cases


@dataclass
class Score:
    attacks: int = 0
    honest: int = 0
    misses: list[Case] = field(default_factory=list)
    false_positives: list[tuple[Case, Finding]] = field(default_factory=list)

    @property
    def caught(self) -> int:
        return self.attacks - len(self.misses)

    @property
    def catch_rate(self) -> float:
        return self.caught / self.attacks if self.attacks else 1.0

    @property
    def false_positive_rate(self) -> float:
        return len(self.false_positives) / self.honest if self.honest else 0.0

    @property
    def meets_targets(self) -> bool:
        return (
            self.catch_rate >= TARGET_CATCH and self.false_positive_rate <= TARGET_FALSE_POSITIVES
        )


def score(cases: Iterable[Case]) -> Score:
    out = Score()
    for case in cases:
        found = find_injection(case.text)
        if case.label == "attack":
            out.attacks += 1
            if found is None:
                out.misses.append(case)
        else:
            out.honest += 1
            if found is not None:
                out.false_positives.append((case, found))
    return out


# ---------------------------------------------------------------- speed samples

_PROSE = (
    "In the third quarter the company grew revenue by twelve percent, driven by enterprise "
    "renewals and a strong pipeline in Europe. Margins improved as cloud costs fell. The board "
    "reviewed the plan and asked management to prepare a forecast for next year, including "
    "hiring, capital spending and the expected impact of the new pricing. Customer satisfaction "
    "rose to 4.6 out of 5, churn fell to 2.1 percent, and the support team closed 98 percent of "
    "tickets within a day. Two reviewers checked the figures; the audit passed without notes.\n"
)
_CODE_MODULES = ("argparse", "json.decoder", "email.message", "logging", "http.client")
_DOC_MODULES = ("argparse", "logging", "unittest", "email", "http.client", "json", "pathlib")


def _fill(parts: list[str], size: int) -> str:
    out, n, i = [], 0, 0
    while n < size and parts:
        part = parts[i % len(parts)]
        out.append(part)
        n += len(part) + 1
        i += 1
    return "\n".join(out)[:size]


def _docstrings(name: str) -> list[str]:
    module = importlib.import_module(name)
    docs = [inspect.getdoc(module) or ""]
    for _, obj in sorted(vars(module).items()):
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and inspect.getdoc(obj):
            docs.append(f"{obj.__name__}\n{inspect.getdoc(obj)}")
    return docs


def samples(size: int) -> dict[str, str]:
    """Outputs of about `size` characters: what steps produce, and a worst case."""
    cases = load()
    honest = [c.text for c in cases if c.label == "honest"]
    rng = random.Random(7)
    dense = list(honest)
    rng.shuffle(dense)
    records = [
        {
            "id": i,
            "user": f"user{i}",
            "status": rng.choice(["pass", "fail", "pending"]),
            "score": round(rng.random(), 4),
            "tags": ["a", "b"],
            "note": "ok",
        }
        for i in range(size // 60)
    ]
    code = [Path(str(importlib.util.find_spec(m).origin)).read_text("utf-8") for m in _CODE_MODULES]
    scripts = [t for t in honest if not t.isascii()]
    return {
        "prose": _fill([_PROSE], size),
        "docs": _fill([d for m in _DOC_MODULES for d in _docstrings(m)], size),
        "code": _fill(code, size),
        "json": json.dumps(records, indent=1)[:size],
        "other scripts": _fill(scripts, size),
        "dense (near the line)": _fill(dense, size),
    }


def cpu_ms(text: str, repeat: int) -> tuple[float, Finding | None]:
    best, found = float("inf"), None
    for _ in range(repeat):
        start = time.process_time()
        found = find_injection(text)
        best = min(best, time.process_time() - start)
    return best * 1000, found


# ---------------------------------------------------------------- report


def run(args: argparse.Namespace) -> dict[str, Any]:
    cases = load()
    total = score(cases)
    per_file = {
        name: score(c for c in cases if c.file == name) for name in sorted({c.file for c in cases})
    }
    misses = Counter(c.technique for c in total.misses)
    attacks_by = Counter(c.technique for c in cases if c.label == "attack")
    res: dict[str, Any] = {
        "attacks": total.attacks,
        "caught": total.caught,
        "catch_rate": total.catch_rate,
        "catch_rate_95ci": wilson(total.caught, total.attacks),
        "honest": total.honest,
        "false_positives": len(total.false_positives),
        "false_positive_rate": total.false_positive_rate,
        "false_positive_rate_95ci": wilson(len(total.false_positives), total.honest),
        "targets": {"catch": TARGET_CATCH, "false_positives": TARGET_FALSE_POSITIVES},
        "meets_targets": total.meets_targets,
        "files": {
            name: {
                "attacks": s.attacks,
                "caught": s.caught,
                "honest": s.honest,
                "false_positives": len(s.false_positives),
            }
            for name, s in per_file.items()
        },
        "misses_by_technique": {t: [misses[t], attacks_by[t]] for t in sorted(misses)},
        "misses": [{"note": c.note, "file": c.file} for c in total.misses],
        "false_positive_cases": [
            {"note": c.note, "file": c.file, "rule": f.rule, "excerpt": f.excerpt}
            for c, f in total.false_positives
        ],
    }
    if not args.no_speed:
        find_injection("warm-up: é")  # builds the confusables table once (~70 ms)
        res["speed"] = {}
        for name, text in samples(args.size * 1024).items():
            ms, found = cpu_ms(text, args.repeat)
            res["speed"][name] = {
                "chars": len(text),
                "cpu_ms": round(ms, 1),
                "flagged": found.rule if found else None,
            }
    return res


def render(res: dict[str, Any]) -> str:
    lo, hi = res["catch_rate_95ci"]
    flo, fhi = res["false_positive_rate_95ci"]
    lines = [
        f"attacks caught: {res['caught']}/{res['attacks']} = {res['catch_rate']:.1%} "
        f"(95% CI {lo:.1%}-{hi:.1%}; target >= {TARGET_CATCH:.0%})",
        f"honest flagged: {res['false_positives']}/{res['honest']} = "
        f"{res['false_positive_rate']:.1%} (95% CI {flo:.1%}-{fhi:.1%}; target <= "
        f"{TARGET_FALSE_POSITIVES:.0%})",
        "",
        table(
            ["file", "attacks caught", "honest flagged"],
            [
                [name, f"{f['caught']}/{f['attacks']}", f"{f['false_positives']}/{f['honest']}"]
                for name, f in res["files"].items()
            ],
        ),
    ]
    if res["misses_by_technique"]:
        lines += ["", "misses by technique (missed/attacks):"]
        lines += [f"  {t}: {m}/{n}" for t, (m, n) in res["misses_by_technique"].items()]
        lines += [f"  - {m['note']} ({m['file']})" for m in res["misses"]]
    if res["false_positive_cases"]:
        lines += ["", "honest outputs flagged:"]
        lines += [
            f"  - {f['note']} ({f['file']}): {f['rule']}: {f['excerpt']}"
            for f in res["false_positive_cases"]
        ]
    if "speed" in res:
        lines += [
            "",
            table(
                ["output", "chars", "cpu ms", "flagged"],
                [
                    [name, s["chars"], s["cpu_ms"], s["flagged"] or "-"]
                    for name, s in res["speed"].items()
                ],
            ),
        ]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=256, help="KiB per speed sample")
    p.add_argument("--repeat", type=int, default=5, help="runs per speed sample (best kept)")
    p.add_argument("--no-speed", action="store_true", help="corpus figures only")


def main(args: argparse.Namespace) -> int:
    res = run(args)
    if args.json:
        emit_json(res)
    else:
        print(render(res))
    return 0 if res["meets_targets"] else 1
