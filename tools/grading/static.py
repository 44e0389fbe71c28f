"""Trusted source checks of a submission (grading process; parses, never executes the code).

- `decode(data)`: the source text exactly as Python reads it (its coding line honoured, so a
  `# coding: utf-7` file is scanned as the text Python will run), plus the encoding name.
- `syntax_error(text)`: the SyntaxError as a student-facing line, or None.
- `forbidden_uses(text)`: `{rule name: [finding, ...]}` for each `Rule` (`CONV`, `ATTENTION`): inside the
  rule's scope (its root names and every module-level function, class or assignment they reach; import
  aliases resolved) any use of a forbidden name (attribute, name, import, string constant, or a string
  built from constants such as `"con" + "v2d"`), any computed attribute lookup on a torch module
  (`getattr(F, name)`, `F.__dict__[...]`, `vars(torch)`), any `torch.ops` / `torch._C` use, and
  `eval` / `exec` / `compile` / `__import__` / `importlib`.
- `Rule.matches_op(name)`: whether a recorded ATen operator name is forbidden (the runtime side of a rule).
- `review_flags(text)`: what cannot be decided safely (dispatch modes, `sys.modules`, the sandbox's helper
  modules, threads, the profiler, frames, ctypes, signals, subprocesses...), for the staff output only.
- `defined_names(text)`: the module-level names the file defines (to report missing graded names).
"""
import ast
import dataclasses
import importlib.util
import re

from . import protocol

CONV_NAMES = frozenset({
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "convolution",
    "_convolution", "convolution_backward", "conv2d_input", "conv2d_weight", "conv_tbc", "mkldnn_convolution",
    "cudnn_convolution", "thnn_conv2d", "slow_conv2d", "_slow_conv2d_forward", "_conv_forward",
    "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "LazyConv2d",
    "_ConvNd",
})
ATTENTION_NAMES = frozenset({
    "scaled_dot_product_attention", "multi_head_attention_forward", "MultiheadAttention",
    "_scaled_dot_product_attention_math", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention", "_flash_attention_forward", "_efficient_attention_forward",
    "_native_multi_head_attention", "_scaled_dot_product_cudnn_attention", "_fused_sdp_choice",
})


@dataclasses.dataclass(frozen=True)
class Rule:
    """A forbidden-API rule: `roots` (the scope in student_code.py), forbidden `names` (static) and
    `op_pattern` (a regex on recorded ATen operator names, runtime), `what` (in messages)."""
    name: str
    roots: tuple
    names: frozenset
    op_pattern: str
    what: str

    def matches_op(self, op):
        return re.search(self.op_pattern, str(op)) is not None


CONV_OPS = r"convolution|conv[123]d|conv_transpose|conv_tbc|conv_depthwise"
# 1a: the autograd function; 1b-i/ii/iv: the module wrapper (so `CustomConv2d = nn.Conv2d` costs 1b only)
CONV = Rule("conv", ("CustomConv2DFunction", "custom_conv2d"), CONV_NAMES, CONV_OPS, "convolution routine")
CONV_MODULE = Rule("conv_module", ("CustomConv2d", "CustomConv2DFunction", "custom_conv2d"), CONV_NAMES,
                   CONV_OPS, "convolution routine")
ATTENTION = Rule("attention", ("Attention",), ATTENTION_NAMES,
                 r"scaled_dot_product|multi_head_attention|flash_attention|efficient_attention|cudnn_attention"
                 r"|_fused_sdp", "attention routine")
# Part 4 (optional): the attribution libraries the grader compares with
ATTRIBUTION_NAMES = frozenset({"captum", "pytorch_grad_cam", "NoiseTunnel", "LayerGradCam", "ttach"})
ATTRIBUTION = Rule("attribution", ("SmoothGrad", "GradCAM", "GradCAMPlusPlus", "IntegratedGradients",
                                   "attention_rollout"), ATTRIBUTION_NAMES, r"(?!)", "attribution library")
RULES = (CONV, CONV_MODULE, ATTENTION, ATTRIBUTION)
# literal references to the sandbox's helpers: tampering with the grader (every item 0)
TAMPER = r"_grading|_sandbox_|RUNNERS\b"
TORCH_ROOTS = ("torch", "torchvision", "functorch")
DYNAMIC_CALLS = frozenset({"eval", "exec", "compile", "__import__", "globals", "locals"})
# (regex on the source, what the staff should look at)
REVIEW = (
    (r"_python_dispatch|TorchDispatchMode|TorchFunctionMode|__torch_dispatch__|__torch_function__|"
     r"_DisableTorchDispatch|_push_mode|_pop_mode", "dispatch / function modes"),
    (r"\bsys\s*\.\s*modules\b|\bimportlib\b|__import__", "sys.modules / dynamic imports"),
    ("|".join(protocol.SANDBOX_HELPERS) + r"|_grading|__main__", "the sandbox's helper modules"),
    (r"\bthreading\b|\bmultiprocessing\b|concurrent\.futures|_thread\b|\bos\s*\.\s*fork\b",
     "threads / processes"),
    (r"\bprofiler\b|_profiler|_disable_profiler|record_function", "the profiler"),
    (r"sys\s*\.\s*_getframe|\binspect\b|\bgc\s*\.\s*get_|f_back|f_globals|f_locals|tb_frame|settrace|setprofile",
     "frames / introspection"),
    (r"\bctypes\b|\bcffi\b", "ctypes"),
    (r"\bsignal\b|\bos\s*\.\s*kill|\bkillpg\b", "signals"),
    (r"\bsubprocess\b|os\s*\.\s*system|os\s*\.\s*exec|os\s*\.\s*spawn|\bpty\b", "subprocesses"),
    (r"/proc\b|/autograder|\bsocket\b|\burllib\b|\brequests\b", "files outside the sandbox / network"),
    (r"\btorch\s*\.\s*ops\b|\btorch\s*\.\s*_C\b|\btorch\s*\.\s*library\b", "torch.ops / torch._C / torch.library"),
    (r"\bbuiltins\b|__builtins__|__code__|__globals__|__subclasses__", "builtins / code objects"),
    (r"\btorch\s*\.\s*save\b|\bopen\s*\(|\bos\s*\.\s*(replace|rename|remove|unlink|write)\b|shutil",
     "opens or writes files"),
)


# dotted names (resolved through import aliases) -> the review flag they raise
REVIEW_DOTTED = {
    "sys.modules": "sys.modules / dynamic imports", "sys._getframe": "frames / introspection",
    "sys.settrace": "frames / introspection", "sys.setprofile": "frames / introspection",
    "gc.get_objects": "frames / introspection", "gc.get_referrers": "frames / introspection",
    "os.kill": "signals", "os.killpg": "signals", "os.fork": "threads / processes",
    "threading.Thread": "threads / processes", "os.system": "subprocesses",
}


def decode(data):
    """`(text, encoding)`: `data` decoded as Python decodes a source file (coding line and BOM honoured).
    Raises `UnicodeDecodeError`/`SyntaxError`/`LookupError` when Python could not read it either."""
    import io
    import tokenize

    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    return importlib.util.decode_source(data), encoding


def syntax_error(source):
    """None when `source` parses; else `"SyntaxError: <msg> (student_code.py line N)"`."""
    try:
        ast.parse(source, filename="student_code.py")
    except SyntaxError as exc:
        return f"{type(exc).__name__}: {exc.msg} (student_code.py line {exc.lineno})"
    except (ValueError, RecursionError, MemoryError) as exc:  # e.g. null bytes, absurd nesting
        return f"student_code.py cannot be parsed: {type(exc).__name__}"
    return None


def _parse(source):
    try:
        return ast.parse(source, filename="student_code.py")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def defined_names(source):
    """Module-level names bound by `source` (defs, classes, assignments, imports; also inside module-level
    if/try/with blocks)."""
    tree = _parse(source)
    if tree is None:
        return set()
    defs, aliases = _module_definitions(tree)
    return set(defs) | set(aliases)


def _module_definitions(tree):
    """Top-level name -> list of nodes defining it (defs, classes, assignments), and the import aliases."""
    defs, aliases = {}, {}

    def visit(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defs.setdefault(node.name, []).append(node)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:  # `X = ...`, `X.attr = ...`, `X[k] = ...` all (re)define X
                    for name in ast.walk(target):
                        if isinstance(name, ast.Name):
                            defs.setdefault(name.id, []).append(node)
            elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) \
                    and isinstance(node.value.func, ast.Name) and node.value.func.id == "setattr" \
                    and node.value.args and isinstance(node.value.args[0], ast.Name):
                defs.setdefault(node.value.args[0].id, []).append(node)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    if isinstance(node, ast.ImportFrom):
                        full = f"{node.module or ''}.{alias.name}"
                        aliases[alias.asname or alias.name] = full
                    else:
                        aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else \
                            alias.name.split(".")[0]
            elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    sub = getattr(node, field, None) or []
                    for s in sub:
                        visit(s.body if isinstance(s, ast.ExceptHandler) else [s])
            elif isinstance(node, ast.Expr):
                defs.setdefault("<module expressions>", []).append(node)
    visit(tree.body)
    return defs, aliases


def _const_str(node):
    """The string a constant expression evaluates to (`"a" + "b"`, `"%s" % "x"`, `"".join([...])`,
    f-strings of constants), or None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        a, b = _const_str(node.left), _const_str(node.right)
        return a + b if a is not None and b is not None else None
    if isinstance(node, ast.JoinedStr):
        parts = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                parts.append(str(v.value))
            elif isinstance(v, ast.FormattedValue) and _const_str(v.value) is not None:
                parts.append(_const_str(v.value))
            else:
                return None
        return "".join(parts)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "join" \
            and _const_str(node.func.value) is not None and len(node.args) == 1 \
            and isinstance(node.args[0], (ast.List, ast.Tuple)):
        parts = [_const_str(e) for e in node.args[0].elts]
        return _const_str(node.func.value).join(parts) if all(p is not None for p in parts) else None
    return None


def _is_torchish(node, aliases):
    """Does the expression name a torch module or object (`torch`, `F`, `nn.functional`, an alias)?"""
    while isinstance(node, ast.Attribute):
        node = node.value
    if isinstance(node, ast.Name):
        original = aliases.get(node.id, node.id if node.id in TORCH_ROOTS else "")
        return original.split(".")[0] in TORCH_ROOTS
    return False


def _scan_nodes(nodes, rule, aliases):
    """Findings `(text, line)` in `nodes`, and the module-level names they reference."""
    findings, referenced = [], set()
    forbidden = rule.names
    for root in nodes:
        for node in ast.walk(root):
            name = None
            if isinstance(node, ast.Name):
                referenced.add(node.id)
                original = aliases.get(node.id, "")
                if original and (original.split(".")[-1] in forbidden or original.split(".")[0] in forbidden):
                    name = f"{node.id} (imported as {original})"
                elif node.id in DYNAMIC_CALLS or node.id in ("importlib", "vars"):
                    if node.id == "vars":
                        name = None
                    else:
                        name = f"{node.id} (code or names built at run time)"
            elif isinstance(node, ast.Attribute):
                if node.attr in forbidden:
                    name = ast.unparse(node)
                elif node.attr in ("ops", "_C", "library") and _is_torchish(node.value, aliases):
                    name = f"{ast.unparse(node)} (low-level operator access)"
                elif node.attr == "__dict__" and _is_torchish(node.value, aliases):
                    name = f"{ast.unparse(node)} (names looked up at run time)"
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    full = f"{getattr(node, 'module', None) or ''}.{alias.name}"
                    if alias.name.split(".")[-1] in forbidden or full.strip(".").split(".")[0] in forbidden \
                            or "._C" in full or ".ops" in full:
                        name = f"import of {alias.name}"
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in ("getattr", "vars", "dir") and node.args \
                    and _is_torchish(node.args[0], aliases):
                name = f"{node.func.id}() on {ast.unparse(node.args[0])} (names looked up at run time)"
            else:
                text = _const_str(node) if isinstance(node, (ast.Constant, ast.BinOp, ast.JoinedStr, ast.Call)) \
                    else None
                if text is not None and (text in forbidden or text.split(".")[-1] in forbidden
                                         or (len(text) < 80 and rule.matches_op(text)
                                             and not isinstance(node, ast.Constant))):
                    name = f"the string {text!r}"
            if name is not None:
                findings.append((name, getattr(node, "lineno", 0)))
    return findings, referenced


def forbidden_uses(source):
    """`{rule name: [message, ...]}` (only rules with findings). Unparsable source gives `{}` (the syntax
    check reports it)."""
    tree = _parse(source)
    if tree is None:
        return {}
    defs, aliases = _module_definitions(tree)
    out = {}
    for rule in RULES:
        seen, todo, findings = set(), list(rule.roots), []
        while todo:
            name = todo.pop()
            if name in seen or name not in defs:
                continue
            seen.add(name)
            found, referenced = _scan_nodes(defs[name], rule, aliases)
            findings.extend(found)
            todo.extend(r for r in referenced if r in defs and r not in seen)
        # a root bound by an import (`from torch.nn import Conv2d as CustomConv2d`) is itself a finding
        for root in rule.roots:
            original = aliases.get(root, "")
            if original and (original.split(".")[-1] in rule.names or original.split(".")[0] in TORCH_ROOTS):
                findings.append((f"{root} (imported as {original})", 0))
        if findings:
            unique = sorted(set(findings), key=lambda f: f[1])
            out[rule.name] = [f"{rule.what} `{name}` used" + (f" (student_code.py line {line})" if line else "")
                              for name, line in unique[:5]]
    return out


def tampering(source):
    """`[(what, line)]` when the code names the sandbox's helper modules literally (scored 0 everywhere)."""
    code = _code_only(source, keep_strings=True)
    m = re.search(TAMPER, code)
    return [("names the grader's sandbox helpers", code.count("\n", 0, m.start()) + 1)] if m else []


def review_flags(source):
    """`[(what, first line)]`: constructs staff should review (see REVIEW); comments and docstrings are
    skipped (only code tokens are searched)."""
    code = _code_only(source)
    flags = []
    for pattern, what in REVIEW:
        m = re.search(pattern, code)
        if m:
            flags.append((what, code.count("\n", 0, m.start()) + 1))
    # module attributes reached through any alias (`import sys as _s; _s.modules`, `from sys import modules`)
    tree = _parse(source)
    if tree is not None:
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom):
                for a in node.names:
                    aliases[a.asname or a.name] = f"{node.module or ''}.{a.name}"
        seen = {what for what, _ in flags}
        for node in ast.walk(tree):
            dotted = None
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                dotted = f"{aliases[node.value.id]}.{node.attr}"
            elif isinstance(node, ast.Name) and node.id in aliases and "." in aliases[node.id]:
                dotted = aliases[node.id]
            what = REVIEW_DOTTED.get(dotted)
            if what and what not in seen:
                seen.add(what)
                flags.append((what, getattr(node, "lineno", 0)))
    return flags


def _code_only(source, keep_strings=False):
    """`source` with comments and (unless `keep_strings`) string literals blanked (line structure kept)."""
    import io
    import tokenize

    lines = source.splitlines(keepends=True)
    out = [list(line) for line in lines]
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT or (tok.type == tokenize.STRING and not keep_strings):
                (r0, c0), (r1, c1) = tok.start, tok.end
                for r in range(r0, r1 + 1):
                    row = out[r - 1]
                    a = c0 if r == r0 else 0
                    b = c1 if r == r1 else len(row)
                    for i in range(a, min(b, len(row))):
                        if row[i] != "\n":
                            row[i] = " "
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return source
    return "".join("".join(r) for r in out)
