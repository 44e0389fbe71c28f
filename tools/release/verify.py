"""Checks that a stripped `student_code.py` and a release tree hold no answers and keep the interface.

Each `check_*` function returns a list of problems (strings); an empty list means the check passed.
`tools/make_release.py` runs them all and refuses to report success while any problem remains.

Answer-line rule: a line inside a solution block is an *answer line* unless its normalized text (comments
dropped, whitespace collapsed) also occurs outside every solution block of the reference; lines that
students receive anyway (`return x`, `else:`, `x = self.proj(x)` when it also appears outside) are
therefore exempt, and nothing else is. No answer line may appear in the stub. The same holds per
identifier: a name used only inside solution blocks (`baddbmm`, `ResidualCNN`, ...) must not occur in the
stub's code. In the other shipped text files (public tests, handout, runner) no answer line of at least
`LEAK_MIN_CHARS` characters may occur, nor, in tests and docs, `LEAK_MIN_RUN` consecutive answer lines (one
short line alone is too generic to be evidence of a leak; see `check_leaks`).
"""
import ast
import io
import json
import os
import subprocess
import sys
import tokenize

from . import markers

LEAK_MIN_CHARS = 50
LEAK_MIN_RUN = 3
PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe.py")
TEXT_SUFFIXES = (".py", ".md", ".txt", ".sh", ".cfg", ".ini", ".toml")


def normalize(line):
    """Line text without its trailing comment and with whitespace collapsed ('' for blank lines).
    A comment-only line normalizes to its comment."""
    text = line.strip()
    if text.startswith("#"):
        return " ".join(text.split())
    quote = None
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if text.startswith(quote, i):
                i += len(quote)
                quote = None
                continue
        elif ch in "\"'":
            quote = text[i:i + 3] if text[i:i + 3] in ('"""', "'''") else ch
            i += len(quote)
            continue
        elif ch == "#":
            text = text[:i]
            break
        i += 1
    return " ".join(text.split())


def answer_lines(reference, blocks):
    """`[(part, line_number, normalized)]` of the reference's answer lines (see the module docstring)."""
    given = {normalize(l) for l in markers.outside_lines(reference, blocks)}
    out = []
    for part, lineno, text in markers.inside_lines(reference, blocks):
        norm = normalize(text)
        if norm and norm not in given:
            out.append((part, lineno, norm))
    return out


def _code_names(source):
    """NAME tokens of `source` with their line numbers (comments and strings excluded)."""
    names = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME:
            names.append((tok.string, tok.start[0]))
    return names


def solution_only_names(reference, blocks):
    """Identifiers that occur in the reference's code only inside solution blocks."""
    inside = set()
    for b in blocks:
        inside.update(range(b.begin, b.end + 1))
    names_in, names_out = set(), set()
    for name, lineno in _code_names(reference):
        (names_in if lineno in inside else names_out).add(name)
    return names_in - names_out


def check_stub_text(reference, stub, blocks):
    """The stub parses, every answer line and solution-only identifier is gone, every function block
    became exactly one `raise NotImplementedError("Part X: implement Q ...")`, and the text outside the
    blocks is unchanged."""
    problems = []
    try:
        ast.parse(stub)
    except SyntaxError as exc:
        return [f"the stub does not parse: {exc}"]
    stub_norm = {normalize(l) for l in stub.splitlines()}
    for part, lineno, norm in answer_lines(reference, blocks):
        if norm in stub_norm:
            problems.append(f"answer line of Part {part} (reference line {lineno}) survives in the stub: {norm!r}")
    leaked = sorted(solution_only_names(reference, blocks) & {n for n, _ in _code_names(stub)})
    if leaked:
        problems.append(f"identifiers used only by the reference answers occur in the stub: {', '.join(leaked)}")
    expected = []
    seen = set()
    for b in blocks:
        if not b.module_level and b.qualname not in seen:
            seen.add(b.qualname)
            expected.append(b.stub_message())
    found = [l.strip() for l in stub.splitlines() if "raise NotImplementedError(" in l]
    for msg in expected:
        line = f"raise NotImplementedError({json.dumps(msg)})"
        if found.count(line) != 1:
            problems.append(f"expected exactly one `{line}` in the stub, found {found.count(line)}")
    kept = [l for l in stub.splitlines() if "raise NotImplementedError(" not in l or
            l.strip() not in {f"raise NotImplementedError({json.dumps(m)})" for m in expected}]
    if kept != markers.outside_lines(reference, blocks):
        problems.append("the text outside the solution blocks changed while stripping")
    problems += check_stub_reads_as_a_stub(stub)
    return problems


def _is_not_implemented(node):
    exc = node.exc.func if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) else None
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


def check_stub_reads_as_a_stub(stub):
    """What students read makes sense without the markers: no statement follows a stub's
    `raise NotImplementedError(...)` in its block (unreachable code such as `return output`, a name the
    student has not defined yet: move it inside the solution block), and no text mentions the solution
    markers, which the release does not have."""
    problems = []
    tree = ast.parse(stub)
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            suite = getattr(node, field, None)
            if not isinstance(suite, list):
                continue
            for i, stmt in enumerate(suite[:-1]):
                if _is_not_implemented(stmt):
                    after = ast.get_source_segment(stub, suite[i + 1]) or ""
                    problems.append(f"stub line {suite[i + 1].lineno}: unreachable code after the stub's raise "
                                    f"({after.splitlines()[0][:80]!r}): put it inside the solution block")
    for n, line in enumerate(stub.splitlines(), start=1):
        if "marker" in line.lower():
            problems.append(f"stub line {n} mentions markers, which the release does not have: {line.strip()!r}")
    return problems


def check_leaks(reference, blocks, paths, runs_in=("tests/", ".md")):
    """No reference answer shows up in the other shipped text files: no answer line of at least
    `LEAK_MIN_CHARS` characters anywhere, and in the files whose path contains one of `runs_in` (public tests,
    docs) no `LEAK_MIN_RUN` consecutive code lines that are all answer lines. Short generic lines prove
    nothing alone, and given runtime code legitimately shares a few of them (the runner's plain training
    step is the second half of adversarial_training_step), hence runs are looked for only in tests and docs."""
    answers = {}
    for part, lineno, norm in answer_lines(reference, blocks):
        if not norm.startswith("#"):
            answers.setdefault(norm, (part, lineno))
    problems = []
    for path in paths:
        if not path.endswith(TEXT_SUFFIXES):
            continue
        with open(path, encoding="utf-8", errors="replace") as fh:
            code = [(n, normalize(line)) for n, line in enumerate(fh, start=1)]
        code = [(n, text) for n, text in code if text and not text.startswith("#")]
        run = []
        for n, text in code + [(None, None)]:
            hit = answers.get(text) if text is not None else None
            if hit and len(text) >= LEAK_MIN_CHARS:
                problems.append(f"{path}:{n}: reference answer line of Part {hit[0]} (student_code.py line "
                                f"{hit[1]}) is shipped: {text!r}")
            if hit:
                run.append((n, text, hit))
                continue
            if len(run) >= LEAK_MIN_RUN and any(k in path.replace(os.sep, "/") for k in runs_in):
                problems.append(f"{path}:{run[0][0]}-{run[-1][0]}: {len(run)} consecutive reference answer lines "
                                f"(Part {run[0][2][0]}) are shipped: " + " / ".join(t for _, t, _ in run))
            run = []
    return problems


def probe_command(mode, *args):
    """Command line of `probe.py MODE ARGS...` (directories made absolute)."""
    return [sys.executable, PROBE, mode] + [os.path.abspath(a) if os.path.isdir(a) else a for a in args]


def parse_probe(proc, what):
    """Parsed JSON output of a finished probe (`subprocess.CompletedProcess`); RuntimeError if it failed."""
    if proc.returncode != 0:
        raise RuntimeError(f"probe of {what} failed (exit {proc.returncode}):\n{proc.stderr.strip()[-3000:]}")
    return json.loads(proc.stdout)


def run_probe(mode, directory, *extra, timeout=180):
    """Run `probe.py MODE DIRECTORY ...` in a fresh interpreter (cwd = DIRECTORY); parsed JSON output."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(probe_command(mode, directory, *extra), cwd=directory, capture_output=True, text=True,
                          timeout=timeout, env=env)
    return parse_probe(proc, f"{directory}/student_code.py ({mode})")


def check_api(reference_desc, stub_desc, removed):
    """Same globals (minus `removed`, the names defined by module-level solution blocks), and for every
    function, class and method the same `inspect.signature` and docstring."""
    problems = []
    ref_names = set(reference_desc) - set(removed)
    stub_names = set(stub_desc)
    for name in sorted(ref_names - stub_names):
        problems.append(f"the stub lacks the global {name!r}")
    for name in sorted(stub_names - ref_names):
        problems.append(f"the stub has an unexpected global {name!r}")
    for name in sorted(ref_names & stub_names):
        problems.extend(_compare(name, reference_desc[name], stub_desc[name]))
    return problems


def _compare(path, ref, stub):
    problems = []
    for key in ("kind", "signature", "doc", "bases", "module", "qualname", "type"):
        if ref.get(key) != stub.get(key):
            what = {"doc": "docstring", "signature": "signature"}.get(key, key)
            problems.append(f"{path}: {what} differs: reference {ref.get(key)!r}, stub {stub.get(key)!r}")
    ref_m, stub_m = ref.get("members", {}), stub.get("members", {})
    for name in sorted(set(ref_m) | set(stub_m)):
        if name not in stub_m:
            problems.append(f"{path}.{name}: missing in the stub")
        elif name not in ref_m:
            problems.append(f"{path}.{name}: not in the reference")
        else:
            problems.extend(_compare(f"{path}.{name}", ref_m[name], stub_m[name]))
    return problems


def check_stubs_raise(results):
    """Every stub raised `NotImplementedError` whose message starts with `Part X: implement Q`."""
    problems = []
    for r in results:
        want = f"Part {r['part']}: implement {r['qualname']}"
        if r["raised"] != "NotImplementedError" or not r["message"].startswith(want):
            hint = "" if r["recipe"] else "; if given code runs before the stub, add a recipe in tools/release/probe.py"
            problems.append(f"calling the stub {r['qualname']} raised {r['raised']}: {r['message'][:300]!r} "
                            f"(expected NotImplementedError starting with {want!r}{hint})")
    return problems
