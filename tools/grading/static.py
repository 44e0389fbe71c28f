"""Trusted source checks of a submission (grading process; parses, never executes the code).

- `syntax_error(source)`: the SyntaxError as a student-facing line, or None.
- `forbidden_uses(source)`: `{item: [finding, ...]}` for 1a (convolution routines reachable from
  `CustomConv2DFunction` / `CustomConv2d` / `custom_conv2d`) and 2a (attention routines reachable from
  `Attention`). "Reachable" follows module-level functions, classes and assignments the scope names, and
  resolves import aliases (`from torch.nn.functional import conv2d as c`). String constants equal to a
  forbidden name count too (`getattr(F, "conv2d")`). This complements the runtime dispatch spy in the
  sandbox, whose verdict comes from an untrusted process.
"""
import ast

CONV_NAMES = frozenset({
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "convolution",
    "_convolution", "convolution_backward", "conv2d_input", "conv2d_weight", "conv_tbc", "mkldnn_convolution",
    "cudnn_convolution", "thnn_conv2d", "slow_conv2d", "_slow_conv2d_forward", "_conv_forward",
    "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "LazyConv2d",
})
ATTENTION_NAMES = frozenset({
    "scaled_dot_product_attention", "multi_head_attention_forward", "MultiheadAttention",
    "_scaled_dot_product_attention_math", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention", "_flash_attention_forward", "_efficient_attention_forward",
})
# item -> (roots of the scope, forbidden names, what it is)
SCOPES = {
    "1a": (("CustomConv2DFunction", "CustomConv2d", "custom_conv2d"), CONV_NAMES, "convolution routine"),
    "2a": (("Attention",), ATTENTION_NAMES, "attention routine"),
}


def syntax_error(source):
    """None when `source` parses; else `"SyntaxError: <msg> (student_code.py line N)"`."""
    try:
        ast.parse(source, filename="student_code.py")
    except SyntaxError as exc:
        return f"{type(exc).__name__}: {exc.msg} (student_code.py line {exc.lineno})"
    except (ValueError, RecursionError, MemoryError) as exc:  # e.g. null bytes, absurd nesting
        return f"student_code.py cannot be parsed: {type(exc).__name__}: {exc}"
    return None


def _module_definitions(tree):
    """Top-level name -> list of nodes defining it (defs, classes, assignments), and the import aliases."""
    defs, aliases = {}, {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defs.setdefault(node.name, []).append(node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        defs.setdefault(name.id, []).append(node)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = alias.name
        elif isinstance(node, (ast.If, ast.Try, ast.With)):  # definitions nested in module-level blocks
            for sub in ast.walk(node):
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    defs.setdefault(sub.name, []).append(sub)
                elif isinstance(sub, (ast.Import, ast.ImportFrom)):
                    for alias in sub.names:
                        aliases[alias.asname or alias.name.split(".")[0]] = alias.name
    return defs, aliases


def _scan_nodes(nodes, forbidden, aliases):
    """Findings `(name, line)` in `nodes`, and the module-level names they reference."""
    findings, referenced = [], set()
    for root in nodes:
        for node in ast.walk(root):
            name = None
            if isinstance(node, ast.Name):
                referenced.add(node.id)
                original = aliases.get(node.id, "")
                if original.split(".")[-1] in forbidden:
                    name = f"{node.id} (imported as {original})"
            elif isinstance(node, ast.Attribute):
                if node.attr in forbidden:
                    name = ast.unparse(node) if hasattr(ast, "unparse") else node.attr
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    if alias.name.split(".")[-1] in forbidden:
                        name = f"import of {alias.name}"
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if node.value in forbidden:
                    name = f"the string {node.value!r}"
            if name is not None:
                findings.append((name, getattr(node, "lineno", 0)))
    return findings, referenced


def forbidden_uses(source):
    """`{item: [message, ...]}` (only items with findings). Unparsable source gives `{}` (the syntax check
    reports it)."""
    try:
        tree = ast.parse(source, filename="student_code.py")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return {}
    defs, aliases = _module_definitions(tree)
    out = {}
    for item, (roots, forbidden, what) in SCOPES.items():
        seen, todo, findings = set(), list(roots), []
        while todo:
            name = todo.pop()
            if name in seen or name not in defs:
                continue
            seen.add(name)
            found, referenced = _scan_nodes(defs[name], forbidden, aliases)
            findings.extend(found)
            todo.extend(r for r in referenced if r in defs and r not in seen)
        if findings:
            unique = sorted(set(findings), key=lambda f: f[1])
            out[item] = [f"{what} `{name}` used (student_code.py line {line})" for name, line in unique[:5]]
    return out
