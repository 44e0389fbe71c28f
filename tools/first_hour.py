"""Walk a student's first hour in a fresh release and time each step (staff tool; figures for HANDOUT.md).

    python tools/first_hour.py OUT [--python PY] [--parts 1a] [--epochs 2]

Builds the release with `tools/make_release.py OUT --no-grade`, then, inside `OUT/release` with the
interpreter PY (default: this one; give a fresh CPU-only environment to time what students get):
  1. demo on the stubs: `python main.py --use-simplenet --epochs E` (the given SimpleNet; the embedded
     dataset is built on first use, in a fresh cache under OUT);
  2. self-check on the stubs: `python -m pytest tests`;
  3. fill the parts of `--parts` with the reference answers (what a student who solved them would have),
     then `python -m pytest tests --part 1a` (one `--part` per filled part);
  4. the issue-16 scenario: `python main.py --use-simplenet --use-custom-conv --epochs E` (trains with the
     filled Part 1a; the final attack of Part 3a is skipped with a note);
  5. `python zip_submission.py`.
Prints one line per step (exit status, wall time, the last line of output) and the machine's load average
before and after, so a figure measured on a loaded machine says so.
"""
import argparse
import os
import re
import subprocess
import sys
import time

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

from release import markers, parts as course_parts  # noqa: E402


def fill_parts(reference, parts, ship=None):
    """`reference` stripped into the release's stubs except for the solution blocks of `parts`, whose
    answers stay (their marker lines removed): the student_code.py of a student who solved `parts`. The
    optional parts the course does not ship (`ship`, default: the kit's course_parts.json) are left out
    first, as make_release does."""
    ship = course_parts.load_config(ROOT)["parts"] if ship is None else ship
    reference = course_parts.select_text(reference, ship, "student_code.py")
    blocks = markers.parse_blocks(reference)
    drop = {line for b in blocks if b.part in parts for line in (b.begin, b.end)}
    lines = reference.splitlines(keepends=True)
    partial = "".join(line for i, line in enumerate(lines, start=1) if i not in drop)
    if not any(b.part not in parts for b in blocks):
        return partial
    stub, _ = markers.strip_source(partial)
    return stub


def load_average():
    try:
        with open("/proc/loadavg", encoding="ascii") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return "unknown"


def step(name, cmd, cwd, env):
    """Run one step; returns `(name, exit status, seconds, last output line)`."""
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    secs = time.time() - t0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    notes = [line for line in proc.stderr.splitlines() if line.startswith(("note:", "error:"))]
    last = (notes[-1] + " | " if notes else "") + (lines[-1] if lines else "")
    return name, proc.returncode, secs, last


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="output folder (gets release/ and a dataset cache)")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the student's environment")
    parser.add_argument("--parts", default="1a", help="parts to fill in step 3 (comma separated)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the two training steps")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    env = dict(os.environ, MINIPLACES_KIT_CACHE=os.path.join(out, "dataset_cache"), PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    print(f"load average before: {load_average()}", flush=True)
    t0 = time.time()
    build = subprocess.run([sys.executable, os.path.join(TOOLS, "make_release.py"), out, "--no-grade"],
                           capture_output=True, text=True)
    print(f"build release (make_release.py --no-grade): exit {build.returncode}, {time.time() - t0:.0f} s",
          flush=True)
    if build.returncode != 0:
        print(build.stdout[-2000:] + build.stderr[-2000:])
        return 1
    release = os.path.join(out, "release")
    py = args.python
    results = [step("demo on the stubs", [py, "main.py", "--use-simplenet", "--epochs", str(args.epochs)],
                    release, env),
               step("self-check on the stubs", [py, "-m", "pytest", "tests", "-p", "no:cacheprovider"], release,
                    env)]
    with open(os.path.join(ROOT, "student_code.py"), encoding="utf-8") as fh:
        filled = fill_parts(fh.read(), parts)
    with open(os.path.join(release, "student_code.py"), "w", encoding="utf-8") as fh:
        fh.write(filled)
    part_flags = [a for p in parts for a in ("--part", p)]
    results.append(step(f"self-check of Part {','.join(parts)} once filled",
                        [py, "-m", "pytest", "tests", "-p", "no:cacheprovider"] + part_flags, release, env))
    results.append(step("train with the custom conv, Part 3 missing",
                        [py, "main.py", "--use-simplenet", "--use-custom-conv", "--epochs", str(args.epochs)],
                        release, env))
    results.append(step("zip", [py, "zip_submission.py"], release, env))
    for name, code, secs, last in results:
        last = re.sub(r"\s+", " ", last)[:200]
        print(f"{name}: exit {code}, {secs:.0f} s | {last}")
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
