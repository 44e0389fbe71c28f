"""Grading one submission or a batch (trusted grading process; no student code ever runs here).

`Kit(kit_dir)` reads the kit's given files into memory and loads the kit's reference `student_code.py`
(trusted) under a private module name; it computes, once per process and item, the seeded inputs
(`Kit.inputs`) and the reference outputs (`Kit.expected`) with the item modules (`items/`).
`grade_submission(...)` then:

1. reads the submission's `student_code.py` (folder or zip; oddities of the upload are noted for staff);
2. decodes it as Python would (coding line honoured), parses it (syntax error -> every item 0 with the
   line), scans it for forbidden APIs and for constructs staff should review, and lists missing names;
3. runs each sandbox group (rubric.GROUPS) in its own sandboxed child (`sandbox.run_group`, each group with
   its own time limits), groups in parallel threads, while the reference outputs are computed here;
4. scores every item from the child's raw outputs against the reference (forbidden operators recorded in
   the child are judged here too) and returns Gradescope's results dict, with a staff-only section
   (`extra_data.staff`: isolation level, review flags, oddities, forbidden operators, sandbox log).

`grade_batch(...)` grades every subfolder / .zip of a folder with N worker threads sharing one `Kit`: each
submission gets its own sandboxes (fresh folders with unpredictable names; under `uid` isolation each
concurrent sandbox its own uid), so no submission can read or write another's.
"""
import concurrent.futures
import hashlib
import importlib.util
import io
import json
import os
import secrets
import sys
import threading
import time
import traceback

import torch

from . import child as child_module
from . import childlib, compat, items, protocol, rubric, sandbox, static  # noqa: F401 (childlib: its file)
from . import versions
from .versions import items as version_items
from .results import ItemGrade, build_results, csv_header, csv_row, failed_everywhere, write_csv, \
    write_json_atomic
from .submission import KitError, SubmissionError, read_kit, read_submission

HERE = os.path.dirname(os.path.abspath(__file__))


def _read(path):
    with open(path, "rb") as f:
        return f.read()


class Kit:
    """The kit: its given files (bytes, for the sandboxes), the reference module (trusted, never shipped),
    and a per-item cache of `(inputs, expected)` (thread-safe)."""

    def __init__(self, kit_dir):
        self.dir = os.path.abspath(kit_dir)
        given, self.reference_path = read_kit(self.dir)
        self.files = dict(given)
        self.files[protocol.CHILD_FILE] = _read(child_module.__file__)
        self.lib_source = _read(childlib.__file__)
        self.ref = _load_reference(self.dir, self.reference_path)
        self.parts, self.points = read_course_parts(self.dir)
        # one lock for every reference computation: they seed torch's global RNG (module initialization)
        self._lock = threading.RLock()
        self._inputs, self._expected = {}, {}

    @property
    def numbers(self):
        """The items graded by default: Parts 1-3, plus the optional Part 4 when the course ships it."""
        return tuple(rubric.DISPLAY_ORDER) + tuple(n for n in rubric.OPTIONAL_ORDER if n[0] in self.parts)

    def rescale(self, grades):
        """`grades` with the course's points for the optional items (course_parts.json `part4_points`)."""
        return [g.rescale(self.points[g.item.number]) if g.item.number in self.points else g for g in grades]

    def inputs(self, number, module=None):
        """The seeded inputs of item `number` (of `module`: a template version's own item module)."""
        module = module or rubric.MODULES[number]
        key = getattr(module, "cache_key", number)
        with self._lock:
            if key not in self._inputs:
                with _reference_numerics():
                    self._inputs[key] = module.inputs(self.ref)
            return self._inputs[key]

    def expected(self, number, module=None):
        module = module or rubric.MODULES[number]
        key = getattr(module, "cache_key", number)
        with self._lock:
            if key not in self._expected:
                inp = self.inputs(number, module)
                with _reference_numerics():
                    self._expected[key] = module.expected(self.ref, inp)
            return self._expected[key]

    def inputs_bytes(self, numbers, modules=None):
        modules = modules or {}
        buf = io.BytesIO()
        torch.save(_detached({n: self.inputs(n, modules.get(n)) for n in numbers}), buf)
        return buf.getvalue()

    def sandbox_files(self, source, numbers, profile=None, modules=None):
        """`({file name: bytes}, child arguments)` of a sandbox for item `numbers`: the given files (with the
        template version's compatibility modules, tools/grading/compat), the child harness, the helper
        library and the selected items' runners (both under fresh random module names, so code cannot name
        them), and the submission."""
        files = compat.sandbox_files(profile, self.files) if profile is not None else dict(self.files)
        lib, runners = (f"_m{secrets.token_hex(8)}" for _ in range(2))
        files[lib + ".py"] = self.lib_source
        files[runners + ".py"] = items.runner_source(numbers, modules).encode()
        files["student_code.py"] = source
        return files, ["--lib", lib, "--runners", runners]


def read_course_parts(kit_dir):
    """`(parts shipped, {optional item: points})` from the kit's `course_parts.json` (written by
    tools/make_release.py); Parts 1-3 and the items' default points without it."""
    path = os.path.join(kit_dir, "course_parts.json")
    try:
        with open(path, encoding="utf-8") as fh:
            config = json.load(fh)
        parts = tuple(str(p) for p in config.get("parts", ("1", "2", "3")))
        points = {str(k): float(v) for k, v in config.get("part4_points", {}).items()
                  if str(k) in rubric.OPTIONAL_ORDER and float(v) > 0}
    except FileNotFoundError:
        return ("1", "2", "3"), {}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise KitError(f"{path} is not a valid course_parts.json: {exc}") from None
    return parts, points


def _detached(obj):
    """A copy of a nested dict/list/tuple structure with every tensor detached."""
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, dict):
        return {k: _detached(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_detached(v) for v in obj)
    return obj


class _reference_numerics:
    """TF32 off, one intra-op thread, and the global RNG restored around reference computations."""

    def __enter__(self):
        self.old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        self.threads = torch.get_num_threads()
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_num_threads(1)
        self.rng = torch.random.fork_rng(devices=[])
        self.rng.__enter__()
        torch.manual_seed(0)
        return self

    def __exit__(self, *exc):
        self.rng.__exit__(*exc)
        torch.set_num_threads(self.threads)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.old
        return False


def _load_reference(kit_dir, path):
    """Import the kit's reference student_code.py under a private name (its sibling imports resolve in the
    kit directory)."""
    digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:10]
    name = f"_autograde_reference_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, kit_dir)
    try:
        spec.loader.exec_module(module)
    finally:
        try:
            sys.path.remove(kit_dir)
        except ValueError:
            pass
    sys.modules[name] = module
    return module


def runtime_forbidden(rule, out):
    """`(student-facing reasons, staff lines)` for the operators the child recorded while an item with
    forbidden rule `rule` ran."""
    ops = out.get("_ops")
    alive = isinstance(ops, list) and all(s in ops for s in child_module.SENTINELS)
    if not alive or out.get("_recording") is not True:
        return (["the grader's record of the operators your code ran was switched off or tampered with"],
                ["operator recording switched off / tampered with"])
    hits = sorted({op for op in ops if isinstance(op, str) and rule.matches_op(op)})
    if hits:
        return ([f"forbidden operator {hits[0]} ran while this item was graded ({rule.what}s are not "
                 f"allowed here)"], [f"forbidden operators: {', '.join(hits[:6])}"])
    return [], []


def _score(number, kit, output, error, findings, staff_log, verbose, module=None):
    """The ItemGrade of one item (never raises)."""
    module = module or rubric.MODULES[number]
    rule = getattr(module, "FORBIDDEN", None)
    if output is None:
        grade = ItemGrade(number)
        grade.fail(error or "no result")
        for f in findings:
            grade.forbid(f)
        return grade
    try:
        grade = module.score(kit.inputs(number, module), kit.expected(number, module), output)
    except Exception as exc:  # noqa: BLE001 - malformed outputs from the untrusted child
        grade = ItemGrade(number)
        grade.fail("the outputs of your code could not be checked (malformed results)")
        staff_log.append(f"{number}: scoring raised {type(exc).__name__}: {exc}"[:500])
        if verbose:
            traceback.print_exc()
    for f in findings:
        grade.forbid(f)
    if rule is not None:
        reasons, lines = runtime_forbidden(rule, output)
        for r in reasons:
            grade.forbid(r)
        staff_log.extend(f"{number}: {line}" for line in lines)
    if output.get("error") and not grade.components and grade.failure is None:
        grade.fail(str(output["error"])[:600])
    return grade


def _workers(groups, parallel_groups):
    return parallel_groups or int(os.environ.get("AUTOGRADE_PARALLEL", 0)) or min(len(groups), _cpus())


def grade_submission(submission, kit, numbers=None, limits=None, supervisor=None, parallel_groups=None,
                     verbose=False, log=None):
    """Grade `submission` (folder or zip) -> `(results dict, status str)`. `supervisor` carries the
    isolation level (probed here on first use: `sandbox.IsolationError` when none is available)."""
    t0 = time.monotonic()
    numbers = tuple(numbers or kit.numbers)
    limits = limits or sandbox.Limits()
    supervisor = supervisor or sandbox.Supervisor()
    isolation = sandbox.choose_isolation(supervisor, kit.reference_path)
    log = log if log is not None else (lambda msg: print(msg, file=sys.stderr) if verbose else None)
    staff = {"isolation": isolation.level, "isolation_detail": isolation.detail, "review": [],
             "oddities": [], "log": []}
    notes = []
    try:
        sub = read_submission(submission)
        staff["oddities"].extend(sub.oddities)
        text, encoding = static.decode(sub.source)
    except SubmissionError as exc:
        grades = failed_everywhere(numbers, str(exc))
        staff["oddities"].append(f"not gradable: {exc}")
        return build_results(kit.rescale(grades), time.monotonic() - t0, [str(exc)], staff), f"not gradable: {exc}"
    except (UnicodeDecodeError, SyntaxError, LookupError) as exc:
        reason = f"student_code.py cannot be read as Python source ({type(exc).__name__}); save it as UTF-8"
        grades = failed_everywhere(numbers, reason)
        staff["oddities"].append(reason)
        return build_results(kit.rescale(grades), time.monotonic() - t0, [reason], staff), "not gradable: encoding"
    if encoding.lower().replace("_", "-") not in ("utf-8", "utf-8-sig", "ascii"):
        staff["review"].append(f"declares the source encoding {encoding!r} (scanned as decoded)")
    error = static.syntax_error(text)
    if error:
        grades = failed_everywhere(numbers, f"student_code.py does not parse: {error}")
        staff["oddities"].append("syntax error")
        return build_results(kit.rescale(grades), time.monotonic() - t0, [error], staff), "syntax error"
    staff["review"].extend(f"{what} (line {line})" for what, line in static.review_flags(text))
    tamper = static.tampering(text)
    if tamper:
        reason = f"student_code.py {tamper[0][0]} (line {tamper[0][1]}): every item scores 0"
        staff["review"].append(reason)
        grades = failed_everywhere(numbers, reason)
        return build_results(kit.rescale(grades), time.monotonic() - t0, [reason], staff), "tampering: " + reason
    profile, evidence = versions.detect_with_reasons(text)
    staff["version"] = {"name": profile.name, "label": profile.label, "evidence": evidence}
    notes.append(f"template version recognised: {profile.label} ({'; '.join(evidence[:3])})")
    all_numbers = numbers
    numbers = version_items.graded_numbers(profile, numbers)
    modules = {n: version_items.module_for(profile, n) for n in numbers}
    findings_by_rule = static.forbidden_uses(text)
    defined = static.defined_names(text)
    missing = {n: [name for name in modules[n].REQUIRES if name not in defined] for n in numbers}
    all_missing = sorted({name for names in missing.values() for name in names})
    if all_missing:
        staff["oddities"].append("missing graded names: " + ", ".join(all_missing))
        notes.append("student_code.py does not define: " + ", ".join(all_missing))
    groups = rubric.groups_of(numbers)
    outputs, errors = {}, {}
    lock = threading.Lock()

    def run(group, members):
        inputs_bytes = kit.inputs_bytes(members, modules)
        files, child_args = kit.sandbox_files(sub.source, members, profile, modules)
        record = [n for n in members if getattr(modules[n], "FORBIDDEN", None) is not None]
        log(f"[{group}] child for {','.join(members)}")
        outcome = sandbox.run_group(members, inputs_bytes, files, limits, supervisor, record=record,
                                    child_args=child_args)
        with lock:
            staff["log"].extend(f"[{group}] {line}" for line in outcome.log)
            for line in outcome.log:
                log(f"[{group}] {line}")
            if verbose and outcome.stderr.strip():
                log(f"[{group}] child stderr (tail):\n{outcome.stderr[-3000:]}")
            outputs.update(outcome.outputs)
            errors.update(outcome.errors)

    for number in numbers:  # cheap, and needed before the children start
        kit.inputs(number, modules[number])
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, _workers(groups, parallel_groups))) as pool:
        futures = [pool.submit(run, g, members) for g, members in groups.items()]
        for number in numbers:  # reference outputs meanwhile, in this thread
            kit.expected(number, modules[number])
        for fut in futures:
            fut.result()
    supervisor.sweep()
    grades = []
    for n in numbers:
        rule = getattr(modules[n], "FORBIDDEN", None)
        findings = findings_by_rule.get(rule.name, []) if rule is not None else []
        if findings:
            staff["log"].append(f"{n}: static findings: {'; '.join(findings)[:400]}")
        grade = _score(n, kit, outputs.get(n), errors.get(n), findings, staff["log"], verbose, modules[n])
        if missing[n]:
            grade.note(f"student_code.py does not define {', '.join(missing[n])} (needed by this item)")
        grades.append(grade)
    import_errors = {e for n, e in errors.items() if n not in outputs and e.startswith("import")}
    notes.extend(sorted(import_errors))
    status = "graded" if not [n for n in errors if n not in outputs] else "graded; no result for " + ", ".join(
        rubric.ordered([n for n in errors if n not in outputs]))
    extra = [o for o in staff["oddities"]] + [f"review: {r}" for r in staff["review"]]
    if isolation.level != protocol.ISOLATION_BWRAP:
        extra.append(f"isolation: {isolation.level}")
    if extra:
        status += "; " + "; ".join(extra)
    if profile.name != "kit":
        grades = version_items.versioned(profile, grades, text, all_numbers)
        status += f"; version {profile.name}"
    results = build_results(kit.rescale(grades), time.monotonic() - t0, notes, staff)
    results["version"] = profile.name
    return results, status


def _cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def batch_entries(folder):
    """`[(name, path)]`: subdirectories and .zip files of `folder`, sorted."""
    out = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith("."):
            continue
        if os.path.isdir(path) or name.lower().endswith(".zip"):
            stem = name[:-4] if name.lower().endswith(".zip") else name
            out.append((stem, path))
    return out


def grade_batch(folder, csv_path, kit, jobs=None, numbers=None, limits=None, supervisor=None, verbose=False):
    """Grade every submission in `folder`; write `csv_path` and `<csv dir>/<name>.results.json` each.
    Returns the CSV rows."""
    numbers = tuple(numbers or kit.numbers)
    jobs = jobs or _cpus()
    supervisor = supervisor or sandbox.Supervisor()
    sandbox.choose_isolation(supervisor, kit.reference_path)
    out_dir = os.path.dirname(os.path.abspath(csv_path))
    entries = batch_entries(folder)
    for n in numbers:  # the reference once, before the workers start
        kit.expected(n)

    def one(entry):
        name, path = entry
        try:
            results, status = grade_submission(path, kit, numbers, limits, supervisor, parallel_groups=1,
                                               verbose=verbose)
        except Exception as exc:  # noqa: BLE001 - one broken submission must not stop the batch
            results = build_results(kit.rescale(failed_everywhere(numbers, "grader error (staff have been told)")), 0.0,
                                    staff={"log": [f"grader error: {type(exc).__name__}: {exc}"]})
            status = f"grader error: {type(exc).__name__}: {exc}"
        write_json_atomic(os.path.join(out_dir, f"{name}.results.json"), results)
        print(f"{name}: {results['score']:g} ({status})", file=sys.stderr)
        return csv_row(name, results, numbers, status)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        rows = list(pool.map(one, entries))
    write_csv(csv_path, csv_header(numbers), rows)
    return rows
