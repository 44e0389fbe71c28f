"""Mutation suite: plant single bugs in the reference answers and check that the autograder catches them.

    python tools/mutants.py [--jobs N] [--only NAME[,NAME...]] [--part 2a] [--list] [--json FILE]

The bugs are listed in `tools/release/mutant_list.py` (one text substitution inside the solution blocks of
one function, verified to apply exactly once). Mutants are graded by `tools/autograde.py --batch`, one batch
per rubric item with `--parts ITEM` (only the item the mutant touches, for speed; the grader computes the
reference outputs once per batch), `--jobs` submissions at a time. Each batch also grades the unmodified
reference, which must get full marks there (otherwise a lost point would prove nothing). A mutant is
*killed* when it loses points on its item.

Prints one line per mutant (killed or SURVIVED, score, the grader's first failing component, seconds per
batch) and the kill rate; exits 1 when the kill rate is below `--min-kill` (default 0.95), when the
reference is not at full marks or when the grader fails; 2 when a mutant no longer applies.
"""
import argparse
import json
import os
import sys
import time

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

from release import grade, mutate  # noqa: E402
from release.mutant_list import MUTANTS  # noqa: E402

GRADER = os.path.join(TOOLS, "autograde.py")
BASELINE = "reference_unmodified"


def select(only=None, part=None):
    """The mutants to run: all, or those named in `only` (a list), or those of rubric item `part`."""
    chosen = list(MUTANTS)
    if only:
        known = {m.name for m in MUTANTS}
        unknown = [n for n in only if n not in known]
        if unknown:
            raise SystemExit(f"mutants.py: unknown mutant(s): {', '.join(unknown)} (see --list)")
        chosen = [m for m in chosen if m.name in only]
    if part:
        chosen = [m for m in chosen if m.part == part]
    return chosen


def read_reference():
    with open(os.path.join(ROOT, "student_code.py"), encoding="utf-8") as fh:
        return fh.read()


def first_failure(results):
    """The first failing line of the grader's messages (what caught the mutant), shortened."""
    for test in results.get("tests", []):
        for line in test.get("output", "").splitlines():
            if line.startswith(("[FAIL", "0/")):
                return line[:160]
    return ""


def grade_part(part, mutants, reference, jobs=1, timeout_scale=None, grader=GRADER, kit=None, baseline=True):
    """Grade `mutants` (all of item `part`) in one batch. Returns `(problems, results)`: the baseline's
    problems (list of strings) and one result dict per mutant."""
    submissions = {m.name: mutate.apply(reference, m) for m in mutants}
    if baseline:
        submissions[BASELINE] = reference
    t0 = time.time()
    graded = grade.run_batch(grader, submissions, kit=kit, parts=[part], jobs=jobs, timeout_scale=timeout_scale)
    seconds = time.time() - t0
    problems = []
    if baseline:
        score, max_score, tests = grade.summarize(graded[BASELINE])
        if not tests or max_score <= 0:
            problems.append(f"part {part}: the grader ran no scored test")
        for name, s, m in grade.lost_points(tests):
            problems.append(f"part {part}: the reference loses points on {name} ({s:g}/{m:g}): "
                            f"{first_failure(graded[BASELINE])}")
    results = []
    for m in mutants:
        score, max_score, tests = grade.summarize(graded[m.name])
        lost = grade.lost_points(tests)
        results.append({"name": m.name, "part": part, "killed": bool(lost) or score < max_score - 1e-9,
                        "score": score, "max_score": max_score, "caught_by": first_failure(graded[m.name]),
                        "why": m.why, "batch_seconds": round(seconds, 1)})
    return problems, results


def run_suite(mutants, jobs=1, timeout_scale=None, grader=GRADER, kit=None, baseline=True, log=print):
    """Grade every mutant, one batch per item. Returns `(problems, results)` (results in `mutants` order)."""
    reference = read_reference()
    for m in mutants:  # fail fast on a stale mutant, before any grading
        mutate.apply(reference, m)
    problems, by_name = [], {}
    for part in sorted({m.part for m in mutants}):
        group = [m for m in mutants if m.part == part]
        log(f"[{part}] grading {len(group)} mutant(s){' and the reference' if baseline else ''} ...")
        part_problems, results = grade_part(part, group, reference, jobs, timeout_scale, grader, kit, baseline)
        problems += part_problems
        for r in results:
            by_name[r["name"]] = r
            log(format_result(r))
    return problems, [by_name[m.name] for m in mutants]


def format_result(r):
    status = "killed  " if r["killed"] else "SURVIVED"
    detail = r["caught_by"] if r["killed"] else f"({r['why']})"
    return f"  {status} {r['name']:<42} [{r['part']}] {r['score']:g}/{r['max_score']:g}  {detail}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="submissions graded at once inside each batch")
    parser.add_argument("--only", help="comma-separated mutant names")
    parser.add_argument("--part", help="only the mutants of this rubric item (e.g. 2a)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--min-kill", type=float, default=0.95, help="kill rate below which the exit status is 1")
    parser.add_argument("--timeout-scale", type=float, help="passed to tools/autograde.py")
    parser.add_argument("--no-baseline", action="store_true", help="do not grade the reference alongside")
    parser.add_argument("--json", help="write the per-mutant results to this file")
    args = parser.parse_args(argv)

    mutants = select(args.only.split(",") if args.only else None, args.part)
    if args.list:
        for m in mutants:
            print(f"{m.name:<42} [{m.part}] {m.where}: {m.why}")
        return 0
    if not mutants:
        print("mutants.py: no mutant selected", file=sys.stderr)
        return 2
    try:
        reference = read_reference()
        for m in mutants:
            mutate.apply(reference, m)
    except mutate.MutantError as exc:
        print(f"mutants.py: {exc}", file=sys.stderr)
        return 2

    t0 = time.time()
    try:
        problems, results = run_suite(mutants, args.jobs, args.timeout_scale, baseline=not args.no_baseline,
                                      log=lambda s: print(s, flush=True))
    except grade.GradingError as exc:
        print(f"mutants.py: {exc}", file=sys.stderr)
        return 1
    elapsed = time.time() - t0
    killed = [r for r in results if r["killed"]]
    survived = [r for r in results if not r["killed"]]
    rate = len(killed) / len(results)
    print(f"\nkill rate {len(killed)}/{len(results)} = {rate:.1%} in {elapsed:.0f} s ({args.jobs} job(s)); "
          f"survivors: {', '.join(r['name'] for r in survived) or 'none'}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"kill_rate": rate, "seconds": elapsed, "problems": problems, "results": results}, fh,
                      indent=1)
    if problems:
        print("mutants.py: the reference is not at full marks, so lost points prove nothing:\n  "
              + "\n  ".join(problems), file=sys.stderr)
        return 1
    return 1 if rate < args.min_kill else 0


if __name__ == "__main__":
    sys.exit(main())
