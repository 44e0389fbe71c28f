"""Normalized ASTs of Python statements: what "the same code" means for stub comparison and detection.

Two statements are the same when their ASTs are equal after dropping what does not change behaviour:
comments and layout (the AST has none), docstrings and other bare constant expressions, `pass`, and the
message of a `raise NotImplementedError(...)` (every stub marker counts as the same statement). Pure
functions on source text; nothing is imported or run.

    >>> same_statements("x = (a +\\n b)  # c", "x = a + b")
    True
"""
import ast

_NOT_IMPLEMENTED = "raise NotImplementedError"


def _is_noise(stmt):
    """A statement without behaviour: `pass`, a docstring or other bare constant, `...`."""
    if isinstance(stmt, ast.Pass):
        return True
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)


def _is_not_implemented(stmt):
    if not isinstance(stmt, ast.Raise) or stmt.exc is None:
        return False
    exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


def dump(stmt):
    """Canonical text of one statement (`ast.dump` without positions; stub raises collapsed)."""
    if _is_not_implemented(stmt):
        return _NOT_IMPLEMENTED
    return ast.dump(stmt, annotate_fields=False, include_attributes=False)


def body_dumps(body):
    """Canonical texts of a statement list, noise dropped, in order."""
    return [dump(s) for s in body if not _is_noise(s)]


def parse_statements(code):
    """Canonical texts of the statements in a code snippet (dedented by the caller)."""
    return body_dumps(ast.parse(code).body)


def same_statements(a, b):
    """Whether two snippets hold the same statements once normalized."""
    return parse_statements(a) == parse_statements(b)


def find_function(tree, qualname):
    """The `ast.FunctionDef` named `qualname` ("f" at module level or "Class.method"), or None.

    When a name is defined several times the last definition wins, as at run time."""
    parts = qualname.split(".")
    scope = tree.body
    for cls_name in parts[:-1]:
        classes = [n for n in scope if isinstance(n, ast.ClassDef) and n.name == cls_name]
        if not classes:
            return None
        scope = classes[-1].body
    funcs = [n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == parts[-1]]
    return funcs[-1] if funcs else None


def find_class(tree, name):
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name]
    return classes[-1] if classes else None


def module_assignment(tree, name):
    """The value node of the last module-level `name = ...` (plain assignment), or None."""
    value = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            value = node.value
    return value


def defines(tree, name):
    """What the module binds `name` to at top level: "class", "function", "assign" or None (last wins)."""
    kind = None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            kind = "class"
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            kind = "function"
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            kind = "assign"
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and any((a.asname or a.name) == name for a in node.names):
            kind = "import"
    return kind


def arg_names(func):
    """Positional-or-keyword parameter names of a FunctionDef (self included)."""
    args = func.args
    return [a.arg for a in list(args.posonlyargs) + list(args.args)]


def docstring(node):
    text = ast.get_docstring(node) if node is not None else None
    return " ".join(text.split()) if text else ""
