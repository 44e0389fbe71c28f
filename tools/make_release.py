"""Build the student release and the Gradescope autograder bundle, and prove both are right (staff tool).

    python tools/make_release.py OUT [--parts 1,2,3[,4]] [--part4-points X] [--no-grade] [--grade-parts 2a,3a]
                                     [--timeout-scale X]

`--parts` picks the parts the course ships (default: those of the kit's `course_parts.json`, Parts 1-3):
the optional Part 4 (explanations) is left out entirely by default (its code, its tests, its handout
section), and shipped with stubs, public tests and hidden tests with `--parts 1,2,3,4`, worth
`--part4-points` (default: the sum in `course_parts.json`), split evenly over 4a-4d. The choice is written to
`course_parts.json` in the release and the bundle (the grader and the points summary read it); see
tools/release/parts.py.

Writes
    OUT/release/          the student kit: top-level kit files with `student_code.py` stripped to stubs,
                          README.md (= HANDOUT.md), logs/.gitkeep, the public tests, and a pytest.ini
                          asking for the short self-check report (files.student_pytest_ini); no tools/,
                          no answers
    OUT/autograder.zip    Gradescope bundle: setup.sh, run_autograder, tools/autograde.py + tools/grading/,
                          the reference student_code.py and the given files, public and hidden tests
and reports success (exit 0) only after every check passed:
  1. the solution markers are well formed; the stub parses; no answer line or answer-only identifier
     survives; the text outside the markers is unchanged (see tools/release/verify.py for the rule);
  2. no answer leaks into another shipped file (tools/release/verify.py `check_leaks`); no staff file
     ships; no public test defines a written-out oracle (a function named `reference_*`, `ref_*` or
     `manual_*`: such oracles, a few lines from an answer, live in tests/hidden/);
  3. in fresh interpreters (run concurrently): the stub imports next to the given files, its globals,
     signatures and docstrings equal the reference's, every stub raises NotImplementedError naming its
     part; the public tests collect in the release, `main.py --help` runs there, and the release's own
     `zip_submission.py` packages the stubbed student_code.py;
  4. the bundle unpacks with its entry points executable, and (unless --no-grade) its grader run with
     `--kit` = the unpacked bundle gives the reference full marks and the release zero.
On any failure it prints the reasons, renames OUT/release to OUT/release.rejected, writes no
autograder.zip, and exits 1 (an OUT/release it did not make is never touched). Output is deterministic
(sorted zip entries, fixed timestamps).
"""
import argparse
import ast
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

from release import files, gradescope, grade, markers, verify  # noqa: E402
from release import parts as course_parts  # noqa: E402

STAFF_DIRS = ("tools", "tests/hidden", ".ci", ".git", "data", ".venv")
FORBIDDEN_SUFFIXES = (".pth", ".pth.tar", ".pt", ".safetensors", ".pyc", ".zip", ".ckpt")


class ReleaseError(RuntimeError):
    """One or more checks failed; the message lists them."""


def log(msg):
    print(msg, flush=True)


def _fail_if(problems, what):
    if problems:
        raise ReleaseError(f"{what}:\n  - " + "\n  - ".join(problems))


def stub_targets(blocks):
    """`[[qualname, part]]` of the functions that became stubs, in file order."""
    out = []
    for b in blocks:
        if not b.module_level and [b.qualname, b.part] not in out:
            out.append([b.qualname, b.part])
    return out


def write_tree(dest, mapping, overrides):
    """Copy `mapping` (`{rel: source or None}`) under `dest`; `overrides` gives `{rel: bytes}`."""
    for rel in sorted(mapping):
        path = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if rel in overrides:
            with open(path, "wb") as fh:
                fh.write(overrides[rel])
        elif mapping[rel] is None:
            open(path, "wb").close()
        else:
            shutil.copyfile(mapping[rel], path)
        mode = 0o755 if files.is_executable_name(rel) else 0o644
        os.chmod(path, mode)


def read_bytes(path):
    with open(path, "rb") as fh:
        return fh.read()


def check_release_tree(release, shipped, reference, blocks, handout):
    """No staff or binary file ships; README is the handout; no long answer line in other files."""
    problems = []
    for rel in shipped:
        if any(rel == d or rel.startswith(d + "/") for d in STAFF_DIRS):
            problems.append(f"staff path would ship: {rel}")
        if rel.endswith(FORBIDDEN_SUFFIXES):
            problems.append(f"binary/data file would ship: {rel}")
        if rel.startswith("tests/") and files.staff_only_test(os.path.join(release, rel)):
            problems.append(f"staff-only test would ship: {rel}")
    if read_bytes(os.path.join(release, "README.md")) != handout:
        problems.append("release/README.md is not HANDOUT.md (with the course's parts and points)")
    if "@PART4_POINTS@" in handout.decode("utf-8") or "OPTIONAL PART" in handout.decode("utf-8"):
        problems.append("release/README.md keeps an optional-part marker or a points placeholder")
    others = [os.path.join(release, rel) for rel in shipped if rel != "student_code.py"]
    problems += verify.check_leaks(reference, blocks, others)
    problems += written_out_oracles(release, shipped)
    return problems


ORACLE_PREFIXES = ("reference_", "ref_", "manual_")


def written_out_oracles(release, shipped):
    """Public tests that define written-out oracles (functions named `reference_*`, `ref_*`, `manual_*`,
    at any depth). Those ship to students and sit a few lines from a graded answer, so they belong in
    tests/hidden/ (e.g. tests/hidden/oracles.py); public tests compare with a library (PyTorch's own ops,
    torchattacks, captum) or check properties. The names are the tripwire: a library-built oracle is named
    after its library (`torch_conv`, `torch_vit`)."""
    out = []
    for rel in shipped:
        if not (rel.startswith("tests/") and rel.endswith(".py")):
            continue
        with open(os.path.join(release, rel), encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
        names = sorted({n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                        and n.name.startswith(ORACLE_PREFIXES)})
        if names:
            out.append(f"{rel} (a public test) defines written-out oracles: {', '.join(names)}; move them to "
                       f"tests/hidden/ or compare with a library op instead")
    return out


def _env():
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    return env


def run_in(directory, cmd, timeout=600):
    return subprocess.run(cmd, cwd=directory, capture_output=True, text=True, timeout=timeout, env=_env(),
                          stdin=subprocess.DEVNULL)


def run_many(jobs, timeout=600):
    """Run `{name: (cwd, cmd)}` concurrently (each interpreter start costs seconds); `{name: CompletedProcess}`."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {name: pool.submit(run_in, cwd, cmd, timeout) for name, (cwd, cmd) in jobs.items()}
        return {name: fut.result() for name, fut in futures.items()}


def check_release_runs(release, blocks, tmp, reference_dir):
    """In fresh interpreters, concurrently: the stub's interface and stubs (probe), the public tests collect,
    `main.py --help` works, `zip_submission.py` packages the stub.
    Returns `(problems, path of the release's submission zip)`."""
    zip_path = os.path.join(tmp, "release_submission.zip")
    procs = run_many({
        "probe": (release, verify.probe_command("all", reference_dir, release, json.dumps(stub_targets(blocks)))),
        "collect": (release, [sys.executable, "-m", "pytest", "tests", "-q", "--collect-only", "-p",
                              "no:cacheprovider"]),
        "help": (release, [sys.executable, "main.py", "--help"]),
        "zip": (release, [sys.executable, "zip_submission.py", "--out", zip_path]),
    })
    probe = verify.parse_probe(procs["probe"], "the reference and the stub")
    with open(os.path.join(reference_dir, "student_code.py"), encoding="utf-8") as fh:
        removed = markers.module_level_names(fh.read(), blocks)
    problems = verify.check_api(probe["reference"], probe["stub"], removed)
    problems += verify.check_stubs_raise(probe["calls"])
    proc = procs["collect"]
    if proc.returncode != 0:
        problems.append("the public tests do not collect in the release:\n"
                        + (proc.stdout + proc.stderr).strip()[-2000:])
    proc = procs["help"]
    if proc.returncode != 0:
        problems.append(f"`python main.py --help` fails in the release:\n{proc.stderr.strip()[-2000:]}")
    proc = procs["zip"]
    if proc.returncode != 0 or not os.path.isfile(zip_path):
        problems.append(f"the release's zip_submission.py rejects the stubbed student_code.py:\n"
                        f"{(proc.stdout + proc.stderr).strip()[-2000:]}")
    return problems, zip_path


def bundle_entries(reference_bytes, parts=course_parts.REQUIRED, config=b""):
    """`{arcname: bytes}` of the autograder bundle."""
    mapping = files.bundle_files(ROOT, parts)
    entries = {}
    for rel, src in mapping.items():
        entries[rel] = b"" if src is None else read_bytes(src)
    entries["student_code.py"] = reference_bytes
    entries[course_parts.CONFIG] = config
    entries["setup.sh"] = gradescope.SETUP_SH.encode()
    entries["run_autograder"] = gradescope.RUN_AUTOGRADER.encode()
    return entries


def unpack_and_check_bundle(zip_path, dest):
    """Unpack the bundle (restoring permissions) and check its entry points; returns problems."""
    problems = []
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        if names != sorted(names):
            problems.append("bundle entries are not sorted")
        for info in zf.infolist():
            if info.date_time != files.FIXED_DATE:
                problems.append(f"bundle entry {info.filename} has timestamp {info.date_time}")
            path = zf.extract(info, dest)
            os.chmod(path, (info.external_attr >> 16) & 0o777)
    for rel in ("setup.sh", "run_autograder", "tools/autograde.py", "student_code.py", "tests/forbidden.py",
                "tests/conftest.py", "requirements.txt"):
        if rel not in names:
            problems.append(f"bundle lacks {rel}")
    for rel in ("setup.sh", "run_autograder"):
        if rel in names and not os.access(os.path.join(dest, rel), os.X_OK):
            problems.append(f"bundle's {rel} is not executable")
    if any(n.startswith("tools/") and not (n == "tools/autograde.py" or n.startswith("tools/grading/"))
           for n in names):
        problems.append("bundle carries staff tools beyond autograde.py and grading/")
    return problems


def check_grades(bundle, reference_zip, release_zip, parts, timeout_scale):
    """The bundle's grader gives the reference full marks and the release zero."""
    problems = []
    grader = os.path.join(bundle, "tools", "autograde.py")
    t0 = time.time()
    ref = grade.run_autograde(grader, reference_zip, kit=bundle, parts=parts, timeout_scale=timeout_scale)
    score, max_score, tests = grade.summarize(ref)
    log(f"  reference: {score:g} / {max_score:g} over {len(tests)} tests ({time.time() - t0:.0f} s)")
    if not tests or max_score <= 0:
        problems.append("grading the reference produced no scored tests")
    for name, s, m in grade.lost_points(tests):
        output = next((t.get("output", "") for t in ref["tests"] if t.get("name") == name), "")
        problems.append(f"reference loses points on {name}: {s:g}/{m:g}\n{output.strip()[-800:]}")
    if abs(score - max_score) > 1e-6:
        problems.append(f"reference total {score:g} != {max_score:g}")
    t0 = time.time()
    rel = grade.run_autograde(grader, release_zip, kit=bundle, parts=parts, timeout_scale=timeout_scale)
    score_r, max_r, tests_r = grade.summarize(rel)
    log(f"  release:   {score_r:g} / {max_r:g} over {len(tests_r)} tests ({time.time() - t0:.0f} s)")
    if abs(max_r - max_score) > 1e-6:
        problems.append(f"the release is graded out of {max_r:g} but the reference out of {max_score:g}")
    for name, s, m in tests_r:
        if s > 0:
            problems.append(f"the stubbed release scores {s:g}/{m:g} on {name}")
    if score_r != 0:
        problems.append(f"release total {score_r:g} != 0")
    return problems


def course_texts(ship, part4_points):
    """`(reference, handout, config)` bytes of the course's choice of parts: the reference `student_code.py`
    and `HANDOUT.md` with the optional regions of the parts not shipped removed, Part 4's points filled in,
    and the `course_parts.json` text."""
    reference = read_bytes(os.path.join(ROOT, "student_code.py")).decode("utf-8")
    handout = read_bytes(os.path.join(ROOT, files.HANDOUT)).decode("utf-8")
    points = course_parts.split_points(part4_points) if "4" in ship else {}
    try:
        reference = course_parts.select_text(reference, ship, "student_code.py")
        handout = course_parts.fill_points(course_parts.select_text(handout, ship, files.HANDOUT), points)
    except course_parts.PartsError as exc:
        raise ReleaseError(f"optional-part markers: {exc}") from None
    config = course_parts.config_text(ship, points)
    return reference.encode("utf-8"), handout.encode("utf-8"), config.encode("utf-8")


def build(out, grade_release=True, parts=None, timeout_scale=None, ship=None, part4_points=None):
    """Build and verify; returns a one-line summary. Raises `ReleaseError` on any failed check.
    `ship`: the course's parts (default: the kit's course_parts.json); `part4_points`: Part 4's total."""
    defaults = course_parts.load_config(ROOT)
    ship = tuple(ship) if ship else tuple(defaults["parts"])
    if part4_points is None:
        part4_points = sum(defaults["part4_points"].values()) or float(len(course_parts.PART4_ITEMS))
    t_start = time.time()
    os.makedirs(out, exist_ok=True)
    release = os.path.join(out, "release")
    stamp = os.path.join(out, ".made_by_make_release")
    for stale in (release, release + ".rejected"):
        if os.path.exists(stale):
            if not os.path.isfile(stamp):
                raise ReleaseError(f"{stale} exists and was not made by this tool (no {stamp}): "
                                   f"refusing to overwrite it")
            shutil.rmtree(stale)
    open(stamp, "w").close()
    for stale in ("autograder.zip", "MANIFEST.txt"):
        if os.path.exists(os.path.join(out, stale)):
            os.remove(os.path.join(out, stale))

    reference_bytes, handout, config = course_texts(ship, part4_points)
    reference = reference_bytes.decode("utf-8")
    log(f"      parts shipped: {', '.join(ship)}"
        + (f" (Part 4: {part4_points:g} points)" if "4" in ship else " (optional Part 4 left out)"))
    try:
        stub, blocks = markers.strip_source(reference)
    except markers.MarkerError as exc:
        raise ReleaseError(f"solution markers: {exc}") from None
    parts_found = sorted({b.part for b in blocks})
    log(f"[1/4] stripped {len(blocks)} solution blocks (parts {', '.join(parts_found)}) into "
        f"{len(stub_targets(blocks))} stubs")
    _fail_if(verify.check_stub_text(reference, stub, blocks), "the stub text")

    mapping, notes = files.release_files(ROOT, ship)
    overrides = {"student_code.py": stub.encode("utf-8"), "README.md": handout, course_parts.CONFIG: config}
    if "pytest.ini" in mapping:
        with open(mapping["pytest.ini"], encoding="utf-8") as fh:
            overrides["pytest.ini"] = files.student_pytest_ini(fh.read()).encode("utf-8")
    write_tree(release, mapping, overrides)
    shipped = sorted(mapping)
    for note in notes:
        log(f"      {note}")
    log(f"[2/4] wrote {release} ({len(shipped)} files)")
    _fail_if(check_release_tree(release, shipped, reference, blocks, handout), "the release tree")

    with tempfile.TemporaryDirectory(prefix="make_release_") as tmp:
        reference_dir = os.path.join(tmp, "reference")  # the course's reference next to the given files
        write_tree(reference_dir, {rel: src for rel, src in mapping.items() if not rel.startswith("tests/")},
                   {"student_code.py": reference_bytes, "README.md": handout, course_parts.CONFIG: config})
        problems, release_zip = check_release_runs(release, blocks, tmp, reference_dir)
        _fail_if(problems, "the release")
        log("[3/4] in fresh interpreters: the stub imports, its names, signatures and docstrings equal the "
            "reference's, every stub raises NotImplementedError naming its part; the public tests collect, "
            "main.py --help runs, zip_submission.py packages the stub")

        bundle_tmp = os.path.join(out, ".autograder.zip.tmp")
        files.write_zip(bundle_tmp, bundle_entries(reference_bytes, ship, config))
        try:
            bundle = os.path.join(tmp, "bundle")
            _fail_if(unpack_and_check_bundle(bundle_tmp, bundle), "the autograder bundle")
            if grade_release:
                reference_zip = os.path.join(tmp, "reference_submission.zip")
                proc = run_in(bundle, [sys.executable, "zip_submission.py", "--out", reference_zip])
                _fail_if([] if proc.returncode == 0 else [(proc.stdout + proc.stderr)[-2000:]],
                         "zip_submission.py rejects the reference")
                log(f"[4/4] grading with the bundle's grader{' (parts ' + ','.join(parts) + ')' if parts else ''}")
                _fail_if(check_grades(bundle, reference_zip, release_zip, parts, timeout_scale),
                         "grading with the bundle")
            else:
                log("[4/4] bundle unpacked and checked (grading skipped: --no-grade)")
            os.replace(bundle_tmp, os.path.join(out, "autograder.zip"))
        finally:
            if os.path.exists(bundle_tmp):
                os.remove(bundle_tmp)
    with open(os.path.join(out, "MANIFEST.txt"), "w", encoding="utf-8") as fh:
        fh.write("# files of release/ (written by tools/make_release.py)\n")
        fh.writelines(f"{rel}\n" for rel in shipped)
    return f"release and autograder bundle verified in {time.time() - t_start:.0f} s"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="output folder (gets release/ and autograder.zip)")
    parser.add_argument("--no-grade", action="store_true", help="skip grading the reference and the release")
    parser.add_argument("--grade-parts", help="grade only these parts (comma separated, e.g. 2a,3a)")
    parser.add_argument("--timeout-scale", type=float, help="passed to tools/autograde.py")
    parser.add_argument("--parts", help="parts the course ships, e.g. 1,2,3,4 (default: course_parts.json, "
                                        "Parts 1-3; Part 4 is optional)")
    parser.add_argument("--part4-points", type=float, help="Part 4's points when it ships, split evenly over "
                                                           "4a-4d (default: course_parts.json)")
    args = parser.parse_args(argv)
    try:
        ship = course_parts.parse_parts(args.parts) if args.parts else None
        if args.part4_points is not None:
            course_parts.split_points(args.part4_points)
    except course_parts.PartsError as exc:
        parser.error(str(exc))
    if args.part4_points is not None and "4" not in (ship or course_parts.load_config(ROOT)["parts"]):
        parser.error("--part4-points needs Part 4 in --parts (e.g. --parts 1,2,3,4)")
    out = os.path.abspath(args.out)
    if out == ROOT or ROOT.startswith(out + os.sep):
        parser.error("OUT must not be the repository or one of its parents")
    parts = [p.strip() for p in args.grade_parts.split(",") if p.strip()] if args.grade_parts else None
    try:
        summary = build(out, grade_release=not args.no_grade, parts=parts, timeout_scale=args.timeout_scale,
                        ship=ship, part4_points=args.part4_points)
    except (ReleaseError, files.ManifestError, grade.GradingError, RuntimeError,
            subprocess.TimeoutExpired) as exc:
        release = os.path.join(out, "release")
        print(f"make_release: FAILED: {exc}", file=sys.stderr)
        if os.path.isfile(os.path.join(out, ".made_by_make_release")) and os.path.isdir(release):
            os.replace(release, release + ".rejected")
            print(f"make_release: no autograder.zip written; the release is left in {release}.rejected for "
                  f"inspection: do not distribute it", file=sys.stderr)
        return 1
    log(f"OK: {summary}: {os.path.join(out, 'release')} and {os.path.join(out, 'autograder.zip')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
