"""The autograder (staff only): grade a submission's student_code.py into Gradescope's results.json.

Run:
    python tools/autograde.py SUBMISSION --results FILE [--parts 1a,2a,...] [--kit DIR] [--timeout-scale X] [-v]
    python tools/autograde.py --batch DIR --csv FILE [-j N] [--parts ...] [--kit DIR] [--timeout-scale X] [-v]

SUBMISSION: a folder holding student_code.py (other files are ignored) or a zip with student_code.py at its
top (`zip_submission.py`). Only student_code.py comes from the submission; every given file
(custom_blocks.py, custom_augment.py, custom_dataloader.py, tests/forbidden.py) and the reference
student_code.py that produces the expected outputs come from --kit (default: this repository).
Inside the Gradescope bundle: `python tools/autograde.py /autograder/submission
--results /autograder/results/results.json --kit /autograder/source`.

Student code runs only in sandboxed child processes (bubblewrap namespaces, or a dedicated uid where
namespaces are unavailable; time, memory and CPU limits; see tools/grading/sandbox.py); this process loads
their raw tensors, computes every verdict and writes results.json last. Without usable isolation it refuses
to grade (one line, exit 3) unless --unsafe-no-isolation is given (local development only).
Exit code 0 whenever results.json (or the CSV) was written, whatever the score; 2 for bad arguments or a
broken kit; 3 when student code cannot be isolated. `--timeout-scale` multiplies every time limit covering
student code (tests use < 1). Environment: AUTOGRADE_MEM_MB (the child's address-space limit, default
8192), AUTOGRADE_GRADER_MEM_MB (this process's, default 24576), AUTOGRADE_ISOLATION=bwrap|uid|none (force
a level; `none` is unsafe).
With --batch: every subfolder / .zip of DIR is graded (N at a time, default: the number of cores); the CSV has
one row per submission (name, total, per-item scores, status) and `<name>.results.json` is written next to it.
"""
import argparse
import os
import sys
import time

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="autograde.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("submission", nargs="?", help="folder or zip holding student_code.py")
    p.add_argument("--results", help="where to write Gradescope's results.json")
    p.add_argument("--parts", default=None, help="comma-separated items to grade, e.g. 1a,2a or 1,3 or 4 (default: every "
                        "item the kit's course_parts.json ships: Parts 1-3, and the optional Part 4 when shipped)")
    p.add_argument("--kit", default=ROOT, help="folder with the reference student_code.py and the given files "
                                               "(default: the repository root)")
    p.add_argument("--timeout-scale", type=float, default=float(os.environ.get("AUTOGRADE_TIMEOUT_SCALE", 1.0)),
                   help="multiply the time limits of student code by X (default 1)")
    p.add_argument("--batch", metavar="DIR", help="grade every submission (subfolder or .zip) in DIR")
    p.add_argument("--csv", help="with --batch: the CSV to write")
    p.add_argument("-j", "--jobs", type=int, default=None, help="with --batch: submissions graded at once")
    p.add_argument("-v", "--verbose", action="store_true", help="log the sandbox runs to stderr")
    p.add_argument("--unsafe-no-isolation", action="store_true",
                   help="grade even where student code cannot be isolated (local development only)")
    args = p.parse_args(argv)
    if args.batch:
        if args.submission or args.results:
            p.error("--batch takes no SUBMISSION or --results (use --csv)")
        if not args.csv:
            p.error("--batch needs --csv FILE")
        if not os.path.isdir(args.batch):
            p.error(f"--batch {args.batch}: not a folder")
        if args.jobs is not None and args.jobs < 1:
            p.error("-j must be >= 1")
    else:
        if not args.submission or not args.results:
            p.error("give SUBMISSION and --results FILE (or --batch DIR --csv FILE)")
        if not os.path.exists(args.submission):
            p.error(f"{args.submission}: no such file or folder")
    if not args.timeout_scale > 0:
        p.error("--timeout-scale must be > 0")
    return p, args


def bound_memory():
    """Cap this process's address space (AUTOGRADE_GRADER_MEM_MB, default 24576; children inherit at most
    this, and lower it for themselves)."""
    import resource

    mb = int(os.environ.get("AUTOGRADE_GRADER_MEM_MB", 24576))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mb * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):
        pass


def main(argv=None):
    t0 = time.monotonic()
    parser, args = parse_args(sys.argv[1:] if argv is None else argv)
    bound_memory()
    from grading import rubric  # noqa: E402 - after sys.path is set
    try:
        numbers = rubric.parse_parts(args.parts) if args.parts else None  # None: the kit's course_parts.json
    except ValueError as exc:
        parser.error(str(exc))
    from grading.submission import KitError, read_kit

    try:
        read_kit(args.kit)  # a broken kit is grader misuse: say so before the expensive imports
    except KitError as exc:
        print(f"autograde.py: {exc}", file=sys.stderr)
        return 2
    # everything the grading process needs is imported now, before any student code runs
    from grading import grade, results, sandbox

    supervisor = sandbox.Supervisor()
    supervisor.become_subreaper()
    limits = sandbox.Limits(timeout_scale=args.timeout_scale)
    try:
        kit = grade.Kit(args.kit)
    except KitError as exc:
        print(f"autograde.py: {exc}", file=sys.stderr)
        return 2
    try:
        isolation = sandbox.choose_isolation(supervisor, kit.reference_path, unsafe=args.unsafe_no_isolation)
    except sandbox.IsolationError as exc:
        print(f"autograde.py: error: {exc}", file=sys.stderr)
        return 3
    if args.verbose or isolation.level != "bwrap":
        print(f"isolation: {isolation.level} ({isolation.detail})", file=sys.stderr)
    if args.batch:
        grade.grade_batch(args.batch, args.csv, kit, jobs=args.jobs, numbers=numbers, limits=limits,
                          supervisor=supervisor, verbose=args.verbose)
        print(f"wrote {args.csv} in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        return 0
    res, status = grade.grade_submission(args.submission, kit, numbers, limits, supervisor, verbose=args.verbose)
    res["execution_time"] = round(time.monotonic() - t0, 2)
    supervisor.sweep()
    results.write_json_atomic(args.results, res)
    print(f"{res['score']:g} points ({status}); wrote {args.results} in {res['execution_time']:.1f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
