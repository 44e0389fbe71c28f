"""The public grading corpus of every template version: correct submissions written for this kit in each
version's API, with the mistakes real students make planted one at a time.

Layout: `<version>/student_code.py` (the correct submission; for the kit it is built from the kit's own
release, `kit/solutions.py` filling every stub) and `<version>/manifest.json`:

    {"version": "2024",
     "mutants": [{"name": ..., "mistake": ..., "costs": "3a" | null, "also": [...],
                  "replace": [[old, new], ...]}, ...]}

A mutant is the correct file with each `old` (which must occur exactly once) replaced by `new`. It must
cost `costs` (score below that item's maximum) and nothing else at full marks except the items in `also`
(items that run the same broken code, e.g. ResNet-18 on a convolution that ignores `bias=None`, may lose
points too). `costs: null` marks code that is correct *for this version* although another version's
contract would reject it. `stub_text(version)` is the version's template as handed out (stubs unfilled):
every item scores 0.

    from grading_fixtures import versions as corpus
    text = corpus.mutant_text("2024", "pgd_ascent")
"""
import ast
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
VERSIONS = ("kit", "2022-23", "2024", "2025")
GIVEN_KIT_FILES = ("custom_blocks.py", "custom_augment.py", "custom_dataloader.py")


def _tools():
    tools = os.path.join(ROOT, "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)


def manifest(version):
    with open(os.path.join(HERE, version, "manifest.json"), encoding="utf-8") as f:
        return json.load(f)


def mutant_names(version):
    return [m["name"] for m in manifest(version)["mutants"]]


def _splice_kit():
    """The kit's release with every stub's `raise NotImplementedError(...)` replaced by the corpus body."""
    _tools()
    from release import markers

    sys.path.insert(0, os.path.join(HERE, "kit"))
    try:
        import solutions
    finally:
        sys.path.pop(0)
    with open(os.path.join(ROOT, "student_code.py"), encoding="utf-8") as f:
        release, _ = markers.strip_source(f.read())
    tree = ast.parse(release)
    lines = release.splitlines(keepends=True)
    edits = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef) and not isinstance(node, ast.Module):
            continue
        for sub in node.body:
            if not isinstance(sub, ast.FunctionDef):
                continue
            qualname = sub.name if isinstance(node, ast.Module) else f"{node.name}.{sub.name}"
            if qualname not in solutions.BODIES:
                continue
            raises = [s for s in sub.body if isinstance(s, ast.Raise)]
            if not raises:
                raise AssertionError(f"the kit release has no stub raise in {qualname}")
            stmt = raises[0]
            indent = re.match(r"\s*", lines[stmt.lineno - 1]).group(0)
            body = "".join(indent + l + "\n" if l.strip() else "\n"
                           for l in solutions.BODIES[qualname].strip("\n").splitlines())
            edits.append((stmt.lineno, stmt.end_lineno, body))
    if len(edits) != len(solutions.BODIES):
        raise AssertionError(f"spliced {len(edits)} of {len(solutions.BODIES)} corpus bodies into the kit release")
    for start, end, body in sorted(edits, reverse=True):
        lines[start - 1:end] = [body]
    return "".join(lines) + solutions.EXTRA


def correct_text(version):
    """The correct submission of `version` (text of its student_code.py)."""
    if version == "kit":
        return _splice_kit()
    with open(os.path.join(HERE, version, "student_code.py"), encoding="utf-8") as f:
        return f.read()


def apply(text, replacements, what=""):
    for old, new in replacements:
        count = text.count(old)
        if count != 1:
            raise AssertionError(f"{what}: {old!r} occurs {count} times (must be exactly once)")
        text = text.replace(old, new)
    return text


def mutant(version, name):
    for m in manifest(version)["mutants"]:
        if m["name"] == name:
            return m
    raise KeyError(f"{version} has no mutant {name!r}")


def mutant_text(version, name):
    m = mutant(version, name)
    text = stub_text(version, m["stub_items"]) if m.get("stub_items") else correct_text(version)
    return apply(text, m["replace"], f"{version}/{name}")


def stub_text(version, items=None):
    """The version's template as handed out: every stub function of `Profile.stubs` reduced to its given
    statements, the assignment stubs back to the given class (`default_cnn_model = SimpleNet`). With
    `items`, only the stubs of those items (the rest stays correct)."""
    _tools()
    from grading.versions import PROFILES

    profile = PROFILES[version]
    wanted = None
    if items is not None:
        wanted = {q for number in items for c in profile.item(number).components for q in c.stubs}
    if version == "kit":
        if items is not None:
            raise NotImplementedError("partial stubs of the kit: use the kit's own mutants (tools/mutants.py)")
        from release import markers

        with open(os.path.join(ROOT, "student_code.py"), encoding="utf-8") as f:
            return markers.strip_source(f.read())[0]
    text = correct_text(version)
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    edits = []
    for qualname, snippets in profile.stubs.items():
        if wanted is not None and qualname not in wanted:
            continue
        if qualname.startswith("="):
            name = qualname[1:]
            for node in tree.body:
                if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
                    edits.append((node.lineno, node.end_lineno, f"{name} = {snippets[0]}\n"))
            continue
        from grading.versions import astnorm

        func = astnorm.find_function(tree, qualname)
        if func is None:
            continue
        first = func.body[0]
        indent = re.match(r"\s*", lines[first.lineno - 1]).group(0)
        kept = []
        for code in snippets:  # the given statements, in the template's order
            kept.append("".join(indent + l + "\n" for l in code.splitlines()))
        start = func.body[0].lineno
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):  # keep the docstring
            start = first.end_lineno + 1
        if qualname == "SimpleViT.__init__":  # the template calls one of the two spellings of super()
            kept = [k for k in kept if "super()" not in k]
        edits.append((start, func.end_lineno, "".join(kept) or indent + "pass\n"))
    for start, end, body in sorted(edits, reverse=True):
        lines[start - 1:end] = [body]
    return "".join(lines)


def sandbox_dir(version, text, dest):
    """Write a runnable sandbox-like folder: `student_code.py` = `text`, the kit's given files and the
    version's compatibility modules (what the grader places beside a submission of that version)."""
    _tools()
    from grading import compat
    from grading.versions import PROFILES

    given = {}
    for name in GIVEN_KIT_FILES:
        with open(os.path.join(ROOT, name), "rb") as f:
            given[name] = f.read()
    os.makedirs(dest, exist_ok=True)
    for name, data in compat.sandbox_files(PROFILES[version], given).items():
        with open(os.path.join(dest, name), "wb") as f:
            f.write(data)
    with open(os.path.join(dest, "student_code.py"), "w", encoding="utf-8") as f:
        f.write(text)
    return dest
