"""Staff tests of the release builder (`tools/make_release.py`, `tools/release/`): solution-marker stripping,
the no-answer and same-interface checks, the student release and the autograder bundle.

Fast tier: stripping rules on small synthetic sources, the checks catching planted leaks, one build of the
real release with `--no-grade` (layout, stubs, bundle), and grading of two parts of the built bundle
(reference full marks, release zero). Slow tier (`-m slow`): the whole build with every part graded.

Run: python -m pytest tests/test_release.py            (slow tier: add -m slow)
"""
import ast
import json
import os
import subprocess
import sys
import zipfile

import pytest

from _staff import ROOT, TOOLS, reference_source

from release import files, grade, markers, verify  # noqa: E402
from release import parts as course_parts  # noqa: E402

PARTS = {"1a", "1b-iii", "2a", "2b", "3a", "3b", "4a", "4b", "4c", "4d"}
STUBBED = {"CustomConv2DFunction.forward", "CustomConv2DFunction.backward", "default_cnn_model",
           "Attention.forward", "TransformerBlock.forward", "SimpleViT.__init__", "SimpleViT.forward",
           "default_vit_model", "PGDAttack.perturb", "default_attack", "GradAttention.explain",
           "default_attention", "adversarial_training_step", "SmoothGrad.explain", "GradCAM.channel_weights",
           "GradCAM.layer_cam", "GradCAMPlusPlus.channel_weights", "IntegratedGradients.attribute",
           "attention_rollout"}
PART4_NAMES = ("SmoothGrad", "GradCAM", "GradCAMPlusPlus", "IntegratedGradients", "attention_rollout")


def course_reference(ship=course_parts.REQUIRED):
    """The reference of a course shipping `ship` (default: Parts 1-3, optional Part 4 left out)."""
    return course_parts.select_text(reference_source(), ship)


def course_handout(ship=course_parts.REQUIRED, points=None):
    with open(os.path.join(ROOT, "HANDOUT.md"), encoding="utf-8") as fh:
        return course_parts.fill_points(course_parts.select_text(fh.read(), ship, "HANDOUT.md"), points or {})
FAST_PARTS = "2a,3b"  # two quick items for the fast grading tier

SAMPLE = '''"""doc"""
import math


# BEGIN SOLUTION (Part 9z)
class Helper:
    """answer helper"""
# END SOLUTION


def f(x, y=2):
    """f doc"""
    z = x + 1
    # BEGIN SOLUTION (Part 1a)
    secret = math.sqrt(z) * 42
    return secret
    # END SOLUTION


class C:
    def g(self):
        """g doc"""
        if True:
            # BEGIN SOLUTION (Part 2b)
            hidden_answer = 7
            # END SOLUTION
        # BEGIN SOLUTION (Part 2b)
        return hidden_answer
        # END SOLUTION
'''


# ----------------------------------------------------------------------------------------- stripping rules
def test_strip_sample_follows_the_rules():
    stub, blocks = markers.strip_source(SAMPLE)
    assert [(b.part, b.qualname) for b in blocks] == [("9z", ""), ("1a", "f"), ("2b", "C.g"), ("2b", "C.g")]
    assert "class Helper" not in stub and "secret" not in stub and "hidden_answer" not in stub
    assert '    raise NotImplementedError("Part 1a: implement f (see its docstring)")\n' in stub
    # the first block of C.g raises at its own indentation; the second one vanishes
    assert stub.count("Part 2b: implement C.g") == 1
    assert '            raise NotImplementedError("Part 2b: implement C.g (see its docstring)")\n' in stub
    assert stub.count("NotImplementedError") == 2
    assert markers.module_level_names(SAMPLE, blocks) == {"Helper"}
    ast.parse(stub)
    assert verify.check_stub_text(SAMPLE, stub, blocks) == []


def test_strip_keeps_outside_text_byte_identical_crlf():
    src = SAMPLE.replace("\n", "\r\n")
    stub, blocks = markers.strip_source(src)
    assert "\r\n" in stub and "\n" not in stub.replace("\r\n", "")
    kept = [l for l in stub.split("\r\n") if "NotImplementedError" not in l]
    assert kept == markers.outside_lines(src, blocks) + [""]


@pytest.mark.parametrize("bad,message", [
    ("def f():\n    # BEGIN SOLUTION (Part 1a)\n    # BEGIN SOLUTION (Part 1a)\n    pass\n    # END SOLUTION\n",
     "inside the block"),
    ("def f():\n    pass\n    # END SOLUTION\n", "without a BEGIN"),
    ("def f():\n    # BEGIN SOLUTION (Part 1a)\n    pass\n", "never closed"),
    ("def f():\n    # BEGIN SOLUTION (Part 1a)\n    pass\n# END SOLUTION\n", "indented differently"),
    ("def f():\n    # BEGIN SOLUTION (Part one)\n    pass\n    # END SOLUTION\n", "part label"),
    ("def f():\n    # BEGIN SOLUTION Part 1a\n    pass\n    # END SOLUTION\n", "not spelled exactly"),
    ("class A:\n    # BEGIN SOLUTION (Part 1a)\n    x = 1\n    # END SOLUTION\n", "class A"),
    ("def f():\n    # BEGIN SOLUTION (Part 1a)\n    # END SOLUTION\n    pass\n", "empty solution block"),
    ("def f(:\n    pass\n", "does not parse"),
])
def test_malformed_markers_are_rejected(bad, message):
    with pytest.raises(markers.MarkerError, match=message):
        markers.strip_source(bad)


def test_reference_markers_cover_every_part():
    stub, blocks = markers.strip_source(reference_source())
    assert {b.part for b in blocks} == PARTS
    assert {b.qualname for b in blocks if not b.module_level} == STUBBED
    assert verify.check_stub_text(reference_source(), stub, blocks) == []
    assert course_parts.optional_parts_in(reference_source()) == ["4"]


# ----------------------------------------------------------------------------------------- optional parts
OPTIONAL_SAMPLE = "a = 1\n# BEGIN OPTIONAL PART 4\nb = 2\n# END OPTIONAL PART 4\nc = 3\n"


def test_optional_part_selection_and_markers():
    assert course_parts.select_text(OPTIONAL_SAMPLE, ("1", "2", "3")) == "a = 1\nc = 3\n"
    assert course_parts.select_text(OPTIONAL_SAMPLE, ("1", "2", "3", "4")) == "a = 1\nb = 2\nc = 3\n"
    md = "x\n<!-- BEGIN OPTIONAL PART 4 -->\n| 4a | @4a_POINTS@ | @PART4_POINTS@ |\n<!-- END OPTIONAL PART 4 -->\n"
    assert course_parts.select_text(md, ("1", "2", "3")) == "x\n"
    shipped = course_parts.fill_points(course_parts.select_text(md, ("1", "2", "3", "4")),
                                       course_parts.split_points(6))
    assert shipped == "x\n| 4a | 1.5 | 6 |\n"
    for bad, message in (("# BEGIN OPTIONAL PART 4\n", "never closed"), ("# END OPTIONAL PART 4\n", "without"),
                         ("# BEGIN OPTIONAL PART 4\n# BEGIN OPTIONAL PART 4\n", "inside")):
        with pytest.raises(course_parts.PartsError, match=message):
            course_parts.select_text(bad, ("1", "2", "3"))
    assert course_parts.parse_parts("4,1,2,3") == ("1", "2", "3", "4")
    for bad in ("1,2", "1,2,3,5"):
        with pytest.raises(course_parts.PartsError):
            course_parts.parse_parts(bad)
    with pytest.raises(course_parts.PartsError):
        course_parts.split_points(0)


def test_default_course_leaves_part4_out_of_every_shipped_file():
    """Parts 1-3 (the default): the stub is exactly the one of a reference without Part 4, no Part 4 name,
    test or handout line ships; with Part 4 its tests and oracle requirements ship too."""
    assert course_parts.load_config(ROOT)["parts"] == ["1", "2", "3"]
    stub, _ = markers.strip_source(course_reference())
    assert not any(name in stub for name in PART4_NAMES) and "OPTIONAL PART" not in stub
    handout = course_handout()
    assert "Part 4" not in handout and "_POINTS@" not in handout and "explain smoothgrad" not in handout
    default, _ = files.release_files(ROOT)
    full, _ = files.release_files(ROOT, ("1", "2", "3", "4"))
    assert set(full) - set(default) == {"tests/test_explain.py", "requirements-oracles.txt"}
    assert "tests/hidden/test_explain_hidden.py" in files.bundle_files(ROOT, ("1", "2", "3", "4"))
    assert "tests/hidden/test_explain_hidden.py" not in files.bundle_files(ROOT)


# ----------------------------------------------------------------------------------------- the checks
def test_check_stub_text_catches_a_surviving_answer_line():
    ref = reference_source()
    stub, blocks = markers.strip_source(ref)
    _, lineno, answer = next(a for a in verify.answer_lines(ref, blocks) if a[0] == "2a" and "softmax" in a[2])
    leaky = stub.replace('        raise NotImplementedError("Part 2a',
                         f"        {answer}\n" + '        raise NotImplementedError("Part 2a', 1)
    problems = verify.check_stub_text(ref, leaky, blocks)
    assert any("survives in the stub" in p and f"line {lineno}" in p for p in problems), problems
    assert any("changed while stripping" in p for p in problems), problems


def test_check_stub_text_catches_an_answer_identifier_and_a_missing_raise():
    ref = reference_source()
    stub, blocks = markers.strip_source(ref)
    leaky = stub.replace('raise NotImplementedError("Part 1b-iii: implement default_cnn_model (see its docstring)")',
                         "return ResidualCNN(conv_op, num_classes)")
    problems = verify.check_stub_text(ref, leaky, blocks)
    assert any("ResidualCNN" in p for p in problems), problems
    assert any("Part 1b-iii: implement default_cnn_model" in p and "found 0" in p for p in problems), problems


def test_stub_has_no_code_after_its_raise_and_no_marker_wording():
    """Students never see the markers: a stub ends at its raise (no `return output` naming a variable
    they have not written yet) and no text tells them to fill in 'between the markers'."""
    ref = reference_source()
    stub, blocks = markers.strip_source(ref)
    assert verify.check_stub_reads_as_a_stub(stub) == []
    dead = stub.replace('raise NotImplementedError("Part 2a: implement Attention.forward (see its docstring)")\n',
                        'raise NotImplementedError("Part 2a: implement Attention.forward (see its docstring)")\n'
                        '        return output\n', 1)
    assert dead != stub
    problems = verify.check_stub_reads_as_a_stub(dead + "# fill in between the markers\n")
    assert any("unreachable code" in p and "return output" in p for p in problems), problems
    assert any("mentions markers" in p for p in problems), problems


def test_answer_rule_exempts_lines_given_outside_the_blocks():
    src = "def f(x):\n    return x\n\n\ndef g(x):\n    # BEGIN SOLUTION (Part 1a)\n    y = x * 3\n    return x\n" \
          "    # END SOLUTION\n"
    _, blocks = markers.strip_source(src)
    assert [a[2] for a in verify.answer_lines(src, blocks)] == ["y = x * 3"]
    assert verify.normalize("  x = self.proj(x)   # merge '#' heads ") == "x = self.proj(x)"
    assert verify.normalize("s = 'a # b'  # c") == "s = 'a # b'"


def test_check_leaks_finds_an_answer_line_in_a_shipped_file(tmp_path):
    ref = reference_source()
    _, blocks = markers.strip_source(ref)
    long_answer = next(a[2] for a in verify.answer_lines(ref, blocks)
                       if len(a[2]) >= verify.LEAK_MIN_CHARS and " = " in a[2] and not set("#'\"") & set(a[2]))
    shipped = tmp_path / "test_leak.py"
    shipped.write_text(f"def helper():\n    {long_answer}  # copied\n")
    problems = verify.check_leaks(ref, blocks, [str(shipped)])
    assert len(problems) == 1 and "test_leak.py:2" in problems[0], problems


def test_written_out_oracles_in_public_tests_are_rejected(tmp_path):
    import make_release

    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_ok.py").write_text("def torch_conv(x):\n    return x\n")
    (tmp_path / "tests" / "test_bad.py").write_text(
        "class Helpers:\n    @staticmethod\n    def manual_step(m):\n        return m\n\n"
        "def reference_pgd(m):\n    return m\n")
    problems = make_release.written_out_oracles(str(tmp_path), ["tests/test_ok.py", "tests/test_bad.py"])
    assert len(problems) == 1 and "tests/test_bad.py" in problems[0], problems
    assert "manual_step, reference_pgd" in problems[0] and "tests/hidden/" in problems[0], problems


def test_check_api_reports_signature_and_docstring_changes():
    ref = {"f": {"kind": "function", "signature": "(x, y=2)", "doc": "d"},
           "C": {"kind": "class", "signature": "()", "doc": "c", "bases": ["object"],
                 "members": {"g": {"kind": "function", "signature": "(self)", "doc": "g"}}},
           "Gone": {"kind": "class", "signature": "()", "doc": None, "bases": [], "members": {}}}
    stub = json.loads(json.dumps(ref))
    stub["f"]["signature"] = "(x, y=3)"
    stub["C"]["members"]["g"]["doc"] = "changed"
    del stub["Gone"]
    problems = verify.check_api(ref, stub, removed={"Gone"})
    assert len(problems) == 2, problems
    assert any("f: signature differs" in p for p in problems) and any("C.g: docstring differs" in p for p in problems)
    assert any("lacks the global 'Gone'" in p for p in verify.check_api(ref, stub, removed=set()))


def test_staff_only_tests_are_recognized(tmp_path):
    public = tmp_path / "test_public.py"
    public.write_text("import student_code\n")
    staff = tmp_path / "test_other.py"
    staff.write_text("import sys\nsys.path.insert(0, os.path.join(ROOT, 'tools'))\n")
    assert files.staff_only_test(str(public)) is None
    assert files.staff_only_test(str(staff)) == "uses the staff tools"
    assert files.staff_only_test(str(tmp_path / "test_release.py")) == "staff-only test (name)"
    helper_user = tmp_path / "test_helper_user.py"  # tests/_staff.py is staff-only: so is a test importing it
    helper_user.write_text("import pytest\n\nimport _staff  # noqa: F401\nimport realdata_experiment\n")
    assert files.staff_only_test(str(helper_user)) == "uses the staff tools"


def test_points_plugin_maps_tests_and_counts_only_fully_passing_items():
    """The students' points summary (tests/points_plugin.py): file/marker mapping and the estimate rule."""
    import points_plugin as pp

    assert pp.part_of("tests/test_attention.py::test_x[cpu-1]") == "2a"
    assert pp.part_of("tests/test_conv.py::test_y") == "1a"
    assert pp.part_of("tests/test_blocks.py::test_z") is None
    assert pp.part_of("tests/test_blocks.py::test_z", marker_part="2b") == "2b"
    assert [i for i, _, _, _ in pp.RUBRIC] == ["1a", "1b-i", "1b-ii", "1b-iii", "1b-iv", "2a", "2b", "3a", "3b"]
    four = pp.summary_lines({"a": ("passed", "4a"), "b": ("failed", "4c")},
                            config=(("1", "2", "3", "4"), {"4a": 1.5, "4b": 1.5, "4c": 1.5, "4d": 1.5}))
    assert any(line.startswith("4a") and "1.5/1.5" in line for line in four)
    assert any(line.startswith("4d") and "not run" in line for line in four)
    assert four[-1].startswith("estimate 1.5/18 + bonus 0/2")
    assert not any(line.startswith("4") for line in pp.summary_lines({"a": ("passed", "2a")},
                                                                     config=(("1", "2", "3"), {})))
    assert sum(p for _, p, bonus, _ in pp.RUBRIC if not bonus) == 12
    lines = pp.summary_lines({"a": ("passed", "2a"), "b": ("passed", "2a"), "c": ("skipped", "2a"),
                              "d": ("passed", "1a"), "e": ("failed", "1a"), "f": ("passed", "3b"),
                              "g": ("passed", None)})
    text = "\n".join(lines)
    assert "2/2  2 passed, 1 skipped" in text and "0/2  1 passed, 1 FAILED" in text
    assert lines[-1].startswith("estimate 2/12 + bonus 2/2")


PLUGIN_TESTS = {
    "test_conv.py": "import pytest\n\n\n@pytest.mark.parametrize('k', [1, 3, 5])\n"
                    "def test_forward_matches(k):\n"
                    "    assert k == 1, f'max abs diff 0.{k} against F.conv2d: check the padding'\n",
    "test_attention.py": "def test_shape():\n    assert True\n",
    "test_blocks.py": "import pytest\n\n\ndef test_given():\n    pass\n\n\ndef test_gpu():\n"
                      "    pytest.skip('no CUDA GPU')\n",
}


@pytest.fixture()
def plugin_kit(tmp_path):
    """A tiny test folder laid out like the release: the real points plugin and the release's pytest.ini."""
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "conftest.py").write_text(f"import sys\nsys.path.insert(0, {os.path.join(ROOT, 'tests')!r})\n"
                                       f"pytest_plugins = ['points_plugin']\n")
    for name, text in PLUGIN_TESTS.items():
        (tests / name).write_text(text)
    with open(os.path.join(ROOT, "pytest.ini"), encoding="utf-8") as fh:
        (tmp_path / "pytest.ini").write_text(files.student_pytest_ini(fh.read()))
    return tmp_path


def run_pytest(kit, *args):
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests", "-p", "no:cacheprovider", *args], cwd=kit,
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout.rstrip("\n").splitlines()


def test_student_pytest_ini_drops_ra_and_asks_for_the_short_report():
    with open(os.path.join(ROOT, "pytest.ini"), encoding="utf-8") as fh:
        staff = fh.read()
    assert "-ra" in staff, "staff keep pytest's long summary"
    student = files.student_pytest_ini(staff)
    assert "-ra" not in student and "points_report = short" in student and "--strict-markers" in student
    assert student.splitlines()[:2] == ["[pytest]", "points_report = short"]
    assert files.student_pytest_ini(student) == student


def test_short_report_puts_the_points_table_last(plugin_kit):
    """Release mode: one line per failing check with its hint, then the points table, then the totals as
    the very last line; no traceback and no pytest summary list after the table."""
    code, lines = run_pytest(plugin_kit)
    assert code == 1, lines
    assert lines[-1] == "tests: 3 passed, 2 failed, 1 skipped", lines[-5:]
    table = lines.index("points summary (public tests, estimate):")
    assert lines[-2].startswith("estimate 2/12") and table > len(lines) - 16, lines[table:]
    after = "\n".join(lines[table:])
    assert "FAILED tests/" not in after and "short test summary" not in after and "===" not in after, after
    checks = [line for line in lines if line.startswith("  ") and "test_conv.py::test_forward_matches" in line]
    assert len(checks) == 1 and "[2 of 3 cases]" in checks[0], checks
    assert "max abs diff 0.3 against F.conv2d: check the padding" in checks[0], checks
    assert checks[0].split()[0] == "1a" and lines.index(checks[0]) < table
    assert not any(line.startswith("E   ") or "def test_forward_matches" in line for line in lines), \
        "a traceback was printed"


def test_short_report_verbose_and_part_filter(plugin_kit):
    code, lines = run_pytest(plugin_kit, "-v")
    assert code == 1 and any(line.startswith("E ") for line in lines), "-v must restore the tracebacks"
    code, lines = run_pytest(plugin_kit, "--part", "2a")
    assert code == 0 and lines[-1] == "tests: 1 passed, 0 failed, 0 skipped", lines[-5:]
    code, lines = run_pytest(plugin_kit, "--part", "1a,2a")
    assert lines[-1] == "tests: 2 passed, 2 failed, 0 skipped", lines[-5:]
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests", "--part", "9z"], cwd=plugin_kit,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "unknown rubric item" in proc.stderr + proc.stdout


def read_requirements(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip() and not line.lstrip().startswith("#")]


def test_cpu_requirements_pin_the_cpu_build_of_the_same_versions():
    """requirements-cpu.txt (the students' CPU-only install on Linux/Windows) takes torch from PyTorch's CPU
    index at exactly the versions of requirements.txt, which it includes for every other pin; `==2.14.1`
    of requirements.txt accepts `2.14.1+cpu` (PEP 440 local versions), so the two files never conflict."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    cpu = read_requirements("requirements-cpu.txt")
    assert "--index-url https://download.pytorch.org/whl/cpu" in cpu
    assert "--extra-index-url https://pypi.org/simple" in cpu and "-r requirements.txt" in cpu
    pins = {Requirement(line).name: Requirement(line).specifier
            for line in read_requirements("requirements.txt") if not line.startswith("-")}
    for name in ("torch", "torchvision"):
        [line] = [l for l in cpu if l.startswith(name + "==")]
        version = Version(line.split("==", 1)[1])
        assert version.local == "cpu" and version.public == str(next(iter(pins[name])).version), line
        assert pins[name].contains(version), f"requirements.txt's {name}{pins[name]} rejects {version}"


# ----------------------------------------------------------------------------------------- the real build
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """`OUT` of one `make_release.py OUT --no-grade` run (about 30 s)."""
    out = tmp_path_factory.mktemp("release_out")
    proc = subprocess.run([sys.executable, os.path.join(TOOLS, "make_release.py"), str(out), "--no-grade"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, f"make_release failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return out


def test_release_layout(built):
    release = built / "release"
    shipped = sorted(str(p.relative_to(release)).replace(os.sep, "/") for p in release.rglob("*") if p.is_file())
    for required in ("main.py", "student_code.py", "custom_blocks.py", "custom_augment.py", "custom_dataloader.py",
                     "zip_submission.py", "requirements.txt", "README.md", ".gitignore", "logs/.gitkeep",
                     "tests/conftest.py", "tests/forbidden.py", "tests/points_plugin.py", "tests/test_attention.py"):
        assert required in shipped, f"{required} missing from the release: {shipped}"
    leaked = [p for p in shipped if p.startswith(("tools/", "tests/hidden/")) or p in ("HANDOUT.md",)
              or os.path.basename(p).startswith(("test_release", "test_mutants", "test_zip_submission",
                                                 "test_autograde", "test_hostile"))]
    assert not leaked, f"staff files in the release: {leaked}"
    assert (release / "README.md").read_text(encoding="utf-8") == course_handout()
    assert "tests/test_explain.py" not in shipped and "requirements-oracles.txt" not in shipped
    assert json.loads((release / "course_parts.json").read_text())["parts"] == ["1", "2", "3"]
    for name in ("main.py", "custom_blocks.py", "custom_dataloader.py", "custom_augment.py", "zip_submission.py",
                 "requirements.txt", "requirements-cpu.txt"):
        assert (release / name).read_bytes() == open(os.path.join(ROOT, name), "rb").read(), name
    with open(os.path.join(ROOT, "pytest.ini"), encoding="utf-8") as fh:
        assert (release / "pytest.ini").read_text(encoding="utf-8") == files.student_pytest_ini(fh.read())


def test_release_stub_is_the_stripped_reference(built):
    stub = (built / "release" / "student_code.py").read_text(encoding="utf-8")
    expected, blocks = markers.strip_source(course_reference())
    assert stub == expected
    assert "BEGIN SOLUTION" not in stub and "END SOLUTION" not in stub
    assert verify.check_stub_text(course_reference(), stub, blocks) == []


def test_release_stubs_raise_naming_their_part(built):
    """Each stub, called, raises NotImplementedError("Part X: implement Q ...") (in a fresh interpreter)."""
    _, blocks = markers.strip_source(course_reference())
    targets = sorted({(b.qualname, b.part) for b in blocks if not b.module_level})
    results = verify.run_probe("call-stubs", str(built / "release"), json.dumps([list(t) for t in targets]))
    got = {r["qualname"]: (r["raised"], r["message"]) for r in results}
    for qualname, part in targets:
        raised, message = got[qualname]
        assert raised == "NotImplementedError" and message.startswith(f"Part {part}: implement {qualname}"), \
            f"{qualname}: {raised}: {message}"


def test_release_api_equals_the_reference(built, tmp_path):
    ref = verify.run_probe("describe", str(_unpacked_bundle(built, tmp_path)))  # the course's reference
    assert "SmoothGrad" not in ref and "PGDAttack" in ref
    stub = verify.run_probe("describe", str(built / "release"))
    removed = markers.module_level_names(course_reference(), markers.parse_blocks(course_reference()))
    assert verify.check_api(ref, stub, removed) == []
    assert removed and not removed & set(stub)


def test_bundle_contents_and_determinism(built):
    with zipfile.ZipFile(built / "autograder.zip") as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        assert names == sorted(names)
        assert all(i.date_time == files.FIXED_DATE for i in infos)
        for required in ("setup.sh", "run_autograder", "tools/autograde.py", "student_code.py", "tests/forbidden.py",
                         "custom_blocks.py", "custom_augment.py", "custom_dataloader.py", "requirements.txt"):
            assert required in names, f"bundle lacks {required}"
        assert any(n.startswith("tools/grading/") for n in names)
        assert any(n.startswith("tests/hidden/") for n in names), "hidden tests missing from the bundle"
        assert not [n for n in names if n.startswith("tools/") and not (n == "tools/autograde.py"
                                                                       or n.startswith("tools/grading/"))]
        for script in ("setup.sh", "run_autograder"):
            assert (zf.getinfo(script).external_attr >> 16) & 0o111, f"{script} is not executable"
        run = zf.read("run_autograder").decode()
        assert ("tools/autograde.py /autograder/submission --results /autograder/results/results.json" in run
                and "--kit /autograder/source" in run)
        assert zf.read("student_code.py").decode("utf-8") == course_reference()
        assert not {"tests/test_explain.py", "tests/hidden/test_explain_hidden.py"} & set(names), "Part 4 tests in the default bundle"
    # a second bundle from the same sources is byte-identical
    entries = {i.filename: zipfile.ZipFile(built / "autograder.zip").read(i.filename) for i in infos}
    again = built / "again.zip"
    files.write_zip(str(again), entries)
    assert again.read_bytes() == (built / "autograder.zip").read_bytes()


def test_foreign_output_folder_is_left_alone(tmp_path):
    """`OUT/release` not made by make_release is neither overwritten nor renamed; no bundle is written."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "release").mkdir()
    (out / "release" / "mine.txt").write_text("not made by make_release")
    proc = subprocess.run([sys.executable, os.path.join(TOOLS, "make_release.py"), str(out), "--no-grade"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 1 and "refusing to overwrite" in proc.stderr
    assert (out / "release" / "mine.txt").exists() and not (out / "autograder.zip").exists()


# ----------------------------------------------------------------------------------------- grading the bundle
def _unpacked_bundle(built, tmp_path):
    dest = tmp_path / "bundle"
    with zipfile.ZipFile(built / "autograder.zip") as zf:
        zf.extractall(dest)
    return dest


def test_bundle_grades_reference_full_and_release_zero_on_two_parts(built, tmp_path):
    """One batch of the unpacked bundle's grader (`--kit` = the bundle) on two items: the reference at full
    marks, the stubbed release at zero."""
    bundle = _unpacked_bundle(built, tmp_path)
    parts = FAST_PARTS.split(",")
    submissions = {"reference": (bundle / "student_code.py").read_text(encoding="utf-8"),
                   "release": (built / "release" / "student_code.py").read_text(encoding="utf-8")}
    graded = grade.run_batch(str(bundle / "tools" / "autograde.py"), submissions, kit=str(bundle), parts=parts,
                             jobs=2)
    score, max_score, tests = grade.summarize(graded["reference"])
    assert len(tests) == len(parts) and max_score > 0
    assert score == max_score, f"reference lost points: {grade.lost_points(tests)}\n{graded['reference']['output']}"
    score_r, max_r, tests_r = grade.summarize(graded["release"])
    assert max_r == max_score and score_r == 0, tests_r


@pytest.mark.slow
@pytest.mark.parametrize("ship", [[], ["--parts", "1,2,3,4", "--part4-points", "6"]], ids=["default", "with-part4"])
def test_full_build_grades_reference_full_and_release_zero(tmp_path, ship):
    proc = subprocess.run([sys.executable, os.path.join(TOOLS, "make_release.py"), str(tmp_path / "out")] + ship,
                          capture_output=True, text=True, timeout=3000, cwd=ROOT)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert "reference:" in proc.stdout and "release:" in proc.stdout
    release = tmp_path / "out" / "release"
    assert ("SmoothGrad" in (release / "student_code.py").read_text()) == bool(ship)
    assert (release / "tests" / "test_explain.py").exists() == bool(ship)


def test_parts_flags_are_checked(tmp_path):
    for argv, message in ((["--parts", "1,2"], "always ship"), (["--parts", "1,2,3,7"], "unknown part"),
                          (["--part4-points", "3"], "needs Part 4"),
                          (["--parts", "1,2,3,4", "--part4-points", "-1"], "positive")):
        proc = subprocess.run([sys.executable, os.path.join(TOOLS, "make_release.py"), str(tmp_path / "o")] + argv,
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert proc.returncode == 2 and message in proc.stderr, (argv, proc.stderr)
