"""CLI commands that act on runs already started: human reviews, an operator's answer to
failed compensations, forks and diffs. Registered by raftline/cli.py's parser.

    raftline reviews [--json]
    raftline show RUN STEP [--item N] [--json]
    raftline approve RUN STEP [--note T] [--by N]
    raftline reject RUN STEP [--hint T] [--class C] [--by N]
    raftline edit RUN STEP --file PATH [--note T] [--by N]
    raftline compensations RUN [--retry | --resolve NOTE] [--by N] [--json]
    raftline fork RUN --from STEP [--hint T] [--output-file F] [--set STEP.params.K=V ...]
                  [--model STEP=MODEL ...] [--pipeline FILE] [--id ID] [--by N] [--detach]
    raftline diff RUN_A RUN_B [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from raftline.models import ErrorClass, PendingReview, ReviewOutcome, StatusView

Command = Callable[[argparse.Namespace], Awaitable[int]]


def add_parsers(sub: Any, run_id: Callable[[str], str]) -> dict[str, Command]:
    """Add this module's subcommands to the CLI's parser; returns name -> command."""
    reviews = sub.add_parser("reviews", help="pending human reviews across runs")
    reviews.add_argument("--json", action="store_true")

    show = sub.add_parser("show", help="the output waiting for a review (or a step's commit)")
    _target(show, run_id)
    show.add_argument("--json", action="store_true")

    approve = sub.add_parser("approve", help="approve a pending review: the output commits")
    _target(approve, run_id)
    approve.add_argument("--note", default=None)
    _by(approve)

    reject = sub.add_parser("reject", help="reject a pending review: retry with a hint")
    _target(reject, run_id)
    reject.add_argument(
        "--hint", default=None, help="what the retry must fix (without it, `before` ends the run)"
    )
    reject.add_argument(
        "--class",
        dest="error_class",
        default=None,
        choices=[c.value for c in ErrorClass if c is not ErrorClass.STEP_ERROR],
    )
    _by(reject)

    edit = sub.add_parser("edit", help="replace a pending output with yours (tier HUMAN)")
    _target(edit, run_id)
    edit.add_argument("--file", required=True, help="the replacement output ('-': stdin)")
    edit.add_argument("--note", default=None)
    _by(edit)

    comp = sub.add_parser("compensations", help="a run's compensations; retry or resolve them")
    comp.add_argument("id", type=run_id)
    what = comp.add_mutually_exclusive_group()
    what.add_argument("--retry", action="store_true", help="run the failed ones again")
    what.add_argument("--resolve", metavar="NOTE", help="mark them handled by hand")
    comp.add_argument("--json", action="store_true")
    _by(comp)

    fork = sub.add_parser("fork", help="a new run from one step of an ended run")
    fork.add_argument("source", type=run_id, help="the source run")
    fork.add_argument("--from", dest="from_step", required=True, help="the step to run again")
    fork.add_argument("--hint", default=None, help="for the step's first attempt")
    fork.add_argument("--output-file", default=None, help="commit this as the step's output")
    fork.add_argument("--set", action="append", default=[], metavar="STEP.params.KEY=VALUE")
    fork.add_argument("--model", action="append", default=[], metavar="STEP=MODEL")
    fork.add_argument("--pipeline", default=None, help="a changed pipeline (same steps before)")
    fork.add_argument("--id", dest="new_id", default=None, help="the fork's workflow id")
    fork.add_argument("--detach", action="store_true")
    fork.add_argument("--json", action="store_true")
    fork.add_argument("--activities", nargs="*", default=[], metavar="MODULE")
    fork.add_argument("--no-worker", action="store_true")
    _by(fork)

    diff = sub.add_parser("diff", help="compare two runs step by step")
    diff.add_argument("a", type=run_id)
    diff.add_argument("b", type=run_id)
    diff.add_argument("--json", action="store_true")

    return {
        "reviews": cmd_reviews,
        "show": cmd_show,
        "approve": cmd_approve,
        "reject": cmd_reject,
        "edit": cmd_edit,
        "compensations": cmd_compensations,
        "fork": cmd_fork,
        "diff": cmd_diff,
    }


def _target(p: argparse.ArgumentParser, run_id: Callable[[str], str]) -> None:
    p.add_argument("id", type=run_id, help="the run")
    p.add_argument("step", help="the step")
    p.add_argument("--item", type=int, default=None, help="a map step's element index")
    p.add_argument("--attempt", type=int, default=None, help="the pending attempt (a check)")


def _by(p: argparse.ArgumentParser) -> None:
    p.add_argument("--by", default=None, help="who decides (default: your OS user)")


# ---------------------------------------------------------------- reviews


async def cmd_reviews(args: argparse.Namespace) -> int:
    from raftline.cli import embedded_db_exists, emit_json, open_session

    async with open_session(args, embed=embedded_db_exists(), worker=False) as session:
        found = await session.client.pending_reviews()
        if args.json:
            emit_json({"reviews": [r.model_dump(mode="json") for r in found]})
            return 0
        if not found:
            print("no pending reviews")
        for r in found:
            print(_review_line(r))
        return 0


def _review_line(r: PendingReview) -> str:
    first = (r.output or "").strip().splitlines()[:2]
    preview = " / ".join(first)[:100]
    item = f"[{r.item_index}]" if r.item_index is not None else ""
    return (
        f"{r.workflow_id} {r.pipeline} {r.step}{item} attempt {r.attempt} ({r.why}) "
        f"since {r.since:%Y-%m-%d %H:%M:%S}, deadline {r.deadline:%Y-%m-%d %H:%M:%S}"
        + (f"\n    {preview}" if preview else "")
        + "\n    "
        + decide_commands(r.workflow_id, r.step, r.item_index, r.why)
    )


def decide_commands(run: str, step: str, item: int | None, why: str) -> str:
    """The commands that decide a review; a step that has not run (before) has nothing to
    edit yet."""
    target = f"{run} {step}" + (f" --item {item}" if item is not None else "")
    verbs = [f"raftline approve {target}", f"raftline reject {target} --hint TEXT"]
    if why != "before":
        verbs.append(f"raftline edit {target} --file PATH")
    return " | ".join(verbs)


async def cmd_show(args: argparse.Namespace) -> int:
    from raftline.cli import UsageError, embedded_db_exists, emit_json, open_session, run_handle

    async with open_session(args, embed=embedded_db_exists(), worker=False) as session:
        handle = await run_handle(session, args.id)
        if await handle.is_running():
            for r in await handle.reviews():
                if r.step == args.step and args.item in (None, r.item_index):
                    if args.json:
                        emit_json(r.model_dump(mode="json"))
                    else:
                        print(r.output if r.output is not None else "(the step has not run yet)")
                    return 0
        result = await handle.result() if not await handle.is_running() else None
        committed = [c for c in (result.checkpoints if result else []) if c.step == args.step]
        if not committed:
            raise UsageError(f"run {args.id}: step {args.step!r} has no pending review or commit")
        if args.json:
            emit_json(committed[0].model_dump(mode="json"))
        else:
            print(committed[0].output or "")
        return 0


async def _decide(args: argparse.Namespace, kind: str, **extra: Any) -> int:
    from raftline.cli import embedded_db_exists, open_session

    async with open_session(args, embed=embedded_db_exists(), worker=False) as session:
        handle = session.client.get(args.id)
        outcome: ReviewOutcome = await getattr(handle, kind)(
            args.step, by=args.by, attempt=args.attempt, item=args.item, **extra
        )
        again = " (already recorded: nothing changed)" if outcome.repeated else ""
        what = {"approve": "approved", "reject": "rejected", "edit": "edited"}[kind]
        print(f"{args.id} {args.step} attempt {outcome.attempt}: {what} by {outcome.by}{again}")
        return 0


async def cmd_approve(args: argparse.Namespace) -> int:
    return await _decide(args, "approve", note=args.note)


async def cmd_reject(args: argparse.Namespace) -> int:
    return await _decide(args, "reject", hint=args.hint, error_class=args.error_class)


async def cmd_edit(args: argparse.Namespace) -> int:
    return await _decide(args, "edit", output=_read(args.file), note=args.note)


def _read(path: str) -> str:
    from raftline.cli import UsageError

    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--file {path}: cannot read: {exc}") from None


# ---------------------------------------------------------------- operators


async def cmd_compensations(args: argparse.Namespace) -> int:
    from raftline.cli import embedded_db_exists, emit_json, open_session, run_handle

    async with open_session(args, embed=embedded_db_exists(), worker=False) as session:
        handle = await run_handle(session, args.id)
        view: StatusView | None = None
        if args.retry or args.resolve:
            view = await handle.compensations(retry=args.retry, resolve=args.resolve, by=args.by)
            outcomes = view.compensations
            status = view.status.value
        elif await handle.is_running():
            view = await handle.status()
            outcomes, status = view.compensations, view.status.value
        else:
            result = await handle.result()
            outcomes, status = result.compensations, result.status.value
        if args.json:
            emit_json(
                {
                    "workflow_id": args.id,
                    "status": status,
                    "compensations": [c.model_dump(mode="json") for c in outcomes],
                }
            )
            return 0
        print(f"{args.id}: {status}, {len(outcomes)} compensations")
        for c in outcomes:
            state = "ok" if c.ok else ("resolved: " + c.resolved if c.resolved else "FAILED")
            what = "commit" if c.committed else "rolled-back attempt"
            error = f" ({c.error})" if c.error and not c.ok else ""
            print(f"  {c.step} attempt {c.attempt} ({what}) {c.activity}: {state}{error}")
        return 0


# ---------------------------------------------------------------- fork and diff


async def cmd_fork(args: argparse.Namespace) -> int:
    from raftline.cli import Session, UsageError, start_and_follow
    from raftline.fork import plan_fork
    from raftline.spec import PipelineSpec

    set_params = {}
    for pair in args.set:
        key, sep, value = pair.partition("=")
        if not sep or ".params." not in key:
            raise UsageError(f"--set {pair!r}: expected STEP.params.KEY=VALUE")
        set_params[key] = _value(value)
    models = {}
    for pair in args.model:
        step, sep, model = pair.partition("=")
        if not sep or not step or not model:
            raise UsageError(f"--model {pair!r}: expected STEP=MODEL")
        models[step] = model
    pipeline = PipelineSpec.from_yaml(args.pipeline) if args.pipeline else None
    output = _read(args.output_file) if args.output_file else None
    args.id = args.new_id  # start_and_follow's --id

    def starter(session: Session, worker: bool) -> tuple[Awaitable[Any], str]:
        async def start() -> Any:
            from raftline.client import _os_user

            plan = await plan_fork(
                session.client,
                args.source,
                args.from_step,
                hint=args.hint,
                output=output,
                by=args.by or _os_user(),
                pipeline=pipeline,
                set_params=set_params,
                models=models,
            )
            session.modules = [*args.activities, *plan.spec.modules]
            if worker:
                await session.start_worker()
            new_id = args.new_id or f"{plan.spec.name}-fork-{uuid.uuid4().hex[:8]}"
            return await session.client.start(plan.spec, plan.task, id=new_id, fork=plan.fork)

        return start(), f"fork {{id}} of {args.source} from step {args.from_step}"

    return await start_and_follow(args, None, None, starter=starter)


def _value(text: str) -> Any:
    """A --set value: JSON when it parses (numbers, true, lists), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


async def cmd_diff(args: argparse.Namespace) -> int:
    from raftline.cli import embedded_db_exists, emit_json, open_session

    async with open_session(args, embed=embedded_db_exists(), worker=None) as session:
        diff = await session.client.diff(args.a, args.b)
        if args.json:
            emit_json(diff)
            return 0
        print(f"{diff['run_a']} -> {diff['run_b']}")
        for row in diff["steps"]:
            a, b = row["a"], row["b"]
            if row["same"]:
                note = " (reused)" if b and b["reused_from"] else ""
                if not note and a and b and a["attempt"] != b["attempt"]:
                    note = f"; a: attempt {a['attempt']}, b: attempt {b['attempt']}"
                print(f"  = {row['step']:<20} same output{note}")
                continue
            sides = " | ".join(
                f"{name}: " + (f"attempt {s['attempt']}, {s['verdict']['tier']}, "
                               f"{s['tokens']} tok, ${s['cost_usd']:.4f}" if s else "absent")
                for name, s in (("a", a), ("b", b))
            )  # fmt: skip
            print(f"  ~ {row['step']:<20} {sides}")
            if row.get("diff"):
                print(textwrap.indent(row["diff"].rstrip(), "      "))
        ua, ub = diff["usage"]["a"], diff["usage"]["b"]
        print(
            f"usage: a {ua['input_tokens'] + ua['output_tokens']} tok ${ua['cost_usd']:.4f}; "
            f"b {ub['input_tokens'] + ub['output_tokens']} tok ${ub['cost_usd']:.4f}; "
            f"saved by reuse: {diff['saved_tokens']} tok ${diff['saved_usd']:.4f}"
        )
        return 0
