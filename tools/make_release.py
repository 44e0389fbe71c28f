"""Build the student release and the Gradescope autograder bundle, and prove both are right (staff tool).

    python tools/make_release.py OUT [--no-grade] [--grade-parts 2a,3a] [--timeout-scale X]

Writes
    OUT/release/          the student kit: top-level kit files with `student_code.py` stripped to stubs,
                          README.md (= HANDOUT.md), logs/.gitkeep, the public tests; no tools/, no answers
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


def check_release_tree(release, shipped, reference, blocks):
    """No staff or binary file ships; README is the handout; no long answer line in other files."""
    problems = []
    for rel in shipped:
        if any(rel == d or rel.startswith(d + "/") for d in STAFF_DIRS):
            problems.append(f"staff path would ship: {rel}")
        if rel.endswith(FORBIDDEN_SUFFIXES):
            problems.append(f"binary/data file would ship: {rel}")
        if rel.startswith("tests/") and files.staff_only_test(os.path.join(release, rel)):
            problems.append(f"staff-only test would ship: {rel}")
    if read_bytes(os.path.join(release, "README.md")) != read_bytes(os.path.join(ROOT, files.HANDOUT)):
        problems.append("release/README.md is not HANDOUT.md")
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


def check_release_runs(release, blocks, tmp):
    """In fresh interpreters, concurrently: the stub's interface and stubs (probe), the public tests collect,
    `main.py --help` works, `zip_submission.py` packages the stub.
    Returns `(problems, path of the release's submission zip)`."""
    zip_path = os.path.join(tmp, "release_submission.zip")
    procs = run_many({
        "probe": (release, verify.probe_command("all", ROOT, release, json.dumps(stub_targets(blocks)))),
        "collect": (release, [sys.executable, "-m", "pytest", "tests", "-q", "--collect-only", "-p",
                              "no:cacheprovider"]),
        "help": (release, [sys.executable, "main.py", "--help"]),
        "zip": (release, [sys.executable, "zip_submission.py", "--out", zip_path]),
    })
    probe = verify.parse_probe(procs["probe"], "the reference and the stub")
    with open(os.path.join(ROOT, "student_code.py"), encoding="utf-8") as fh:
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


def bundle_entries(reference_bytes):
    """`{arcname: bytes}` of the autograder bundle."""
    mapping = files.bundle_files(ROOT)
    entries = {}
    for rel, src in mapping.items():
        entries[rel] = b"" if src is None else read_bytes(src)
    entries["student_code.py"] = reference_bytes
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


def build(out, grade_release=True, parts=None, timeout_scale=None):
    """Build and verify; returns a one-line summary. Raises `ReleaseError` on any failed check."""
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

    reference_bytes = read_bytes(os.path.join(ROOT, "student_code.py"))
    reference = reference_bytes.decode("utf-8")
    try:
        stub, blocks = markers.strip_source(reference)
    except markers.MarkerError as exc:
        raise ReleaseError(f"solution markers: {exc}") from None
    parts_found = sorted({b.part for b in blocks})
    log(f"[1/4] stripped {len(blocks)} solution blocks (parts {', '.join(parts_found)}) into "
        f"{len(stub_targets(blocks))} stubs")
    _fail_if(verify.check_stub_text(reference, stub, blocks), "the stub text")

    mapping, notes = files.release_files(ROOT)
    overrides = {"student_code.py": stub.encode("utf-8")}
    if "pytest.ini" in mapping:
        with open(mapping["pytest.ini"], encoding="utf-8") as fh:
            overrides["pytest.ini"] = files.student_pytest_ini(fh.read()).encode("utf-8")
    write_tree(release, mapping, overrides)
    shipped = sorted(mapping)
    for note in notes:
        log(f"      {note}")
    log(f"[2/4] wrote {release} ({len(shipped)} files)")
    _fail_if(check_release_tree(release, shipped, reference, blocks), "the release tree")

    with tempfile.TemporaryDirectory(prefix="make_release_") as tmp:
        problems, release_zip = check_release_runs(release, blocks, tmp)
        _fail_if(problems, "the release")
        log("[3/4] in fresh interpreters: the stub imports, its names, signatures and docstrings equal the "
            "reference's, every stub raises NotImplementedError naming its part; the public tests collect, "
            "main.py --help runs, zip_submission.py packages the stub")

        bundle_tmp = os.path.join(out, ".autograder.zip.tmp")
        files.write_zip(bundle_tmp, bundle_entries(reference_bytes))
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
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    if out == ROOT or ROOT.startswith(out + os.sep):
        parser.error("OUT must not be the repository or one of its parents")
    parts = [p.strip() for p in args.grade_parts.split(",") if p.strip()] if args.grade_parts else None
    try:
        summary = build(out, grade_release=not args.no_grade, parts=parts, timeout_scale=args.timeout_scale)
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
