"""Run the autograder (`tools/autograde.py`) on a submission and summarize its Gradescope results.json.

Used by `make_release.py` (bundle self-check) and `mutants.py`. The grader always runs in its own
process; this module only builds the command line and reads the JSON it writes.
"""
import json
import os
import subprocess
import sys
import tempfile


class GradingError(RuntimeError):
    """The grader did not produce a results.json."""


def run_autograde(grader, submission, kit=None, parts=None, timeout_scale=None, timeout=3600, env=None):
    """Grade `submission` (a folder with student_code.py, or a zip) with the script `grader`.

    Returns the parsed results.json. Raises `GradingError` when the grader exits non-zero or writes no
    results (the contract: exit 0 whenever results.json was written)."""
    with tempfile.TemporaryDirectory(prefix="grade_") as tmp:
        results = os.path.join(tmp, "results.json")
        cmd = [sys.executable, grader, os.path.abspath(submission), "--results", results]
        if kit:
            cmd += ["--kit", os.path.abspath(kit)]
        if parts:
            cmd += ["--parts", ",".join(parts)]
        if timeout_scale:
            cmd += ["--timeout-scale", str(timeout_scale)]
        run_env = dict(os.environ if env is None else env, PYTHONDONTWRITEBYTECODE="1")
        run_env.pop("PYTHONPATH", None)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=run_env,
                                  cwd=os.path.dirname(os.path.dirname(os.path.abspath(grader))))
        except subprocess.TimeoutExpired:
            raise GradingError(f"the grader ran past {timeout} s: {' '.join(cmd)}") from None
        if proc.returncode != 0 or not os.path.isfile(results):
            raise GradingError(f"the grader failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                               f"{(proc.stdout + proc.stderr).strip()[-3000:]}")
        with open(results, encoding="utf-8") as fh:
            return json.load(fh)


def summarize(results):
    """`(score, max_score, tests)` of a Gradescope results dict; `tests` is `[(name, score, max_score)]`.
    `max_score` sums the tests' maxima (bonus items included)."""
    tests = [(t.get("name", "?"), float(t.get("score", 0.0)), float(t.get("max_score", 0.0)))
             for t in results.get("tests", [])]
    score = float(results.get("score", sum(s for _, s, _ in tests)))
    return score, sum(m for _, _, m in tests), tests


def lost_points(tests):
    """`[(name, score, max_score)]` of the tests below their maximum."""
    return [t for t in tests if t[1] < t[2] - 1e-9]


def run_batch(grader, submissions, kit=None, parts=None, jobs=None, timeout_scale=None, timeout=7200):
    """Grade several submissions in one grader process (`autograde.py --batch`: the reference outputs are
    computed once). `submissions` is `{name: student_code source text}`; names must be plain folder names.
    Returns `{name: results dict}`; raises `GradingError` when the grader fails or a result is missing."""
    with tempfile.TemporaryDirectory(prefix="grade_batch_") as tmp:
        folder = os.path.join(tmp, "submissions")
        for name, source in submissions.items():
            os.makedirs(os.path.join(folder, name))
            with open(os.path.join(folder, name, "student_code.py"), "w", encoding="utf-8") as fh:
                fh.write(source)
        out = os.path.join(tmp, "out")
        os.makedirs(out)
        cmd = [sys.executable, grader, "--batch", folder, "--csv", os.path.join(out, "grades.csv")]
        if kit:
            cmd += ["--kit", os.path.abspath(kit)]
        if parts:
            cmd += ["--parts", ",".join(parts)]
        if jobs:
            cmd += ["-j", str(jobs)]
        if timeout_scale:
            cmd += ["--timeout-scale", str(timeout_scale)]
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        env.pop("PYTHONPATH", None)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                                  cwd=os.path.dirname(os.path.dirname(os.path.abspath(grader))))
        except subprocess.TimeoutExpired:
            raise GradingError(f"the grader ran past {timeout} s: {' '.join(cmd)}") from None
        if proc.returncode != 0:
            raise GradingError(f"the grader failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                               f"{(proc.stdout + proc.stderr).strip()[-3000:]}")
        results = {}
        for name in submissions:
            path = os.path.join(out, f"{name}.results.json")
            if not os.path.isfile(path):
                raise GradingError(f"the grader wrote no results for {name}:\n{proc.stderr.strip()[-3000:]}")
            with open(path, encoding="utf-8") as fh:
                results[name] = json.load(fh)
        return results
