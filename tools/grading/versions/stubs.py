"""No points for given code: is the student's code for an item still the version's stub?

A stub function is *unchanged* when every statement of its body (docstrings, comments, `pass` dropped) is
one of the statements the template gave in that stub (`Profile.stubs`), or the kit's
`raise NotImplementedError(...)` marker. A missing function counts as unchanged (nothing written). An
assignment stub (`"=default_cnn_model": ("SimpleNet",)`) is unchanged when the module still binds the name
to the given class and that class still has the given layers (`SIMPLENET_LAYERS`). Pure functions on the
source text.

    >>> from grading.versions import profiles
    >>> is_unchanged_stub(profiles.V2024, "3a", "class PGDAttack:\\n def perturb(self, model, input):\\n"
    ...                   "  output = input.clone()\\n  return output\\n")
    True
"""
import ast
import functools
import os
import sys

from . import astnorm
from .profiles import SIMPLENET_LAYERS

# the repository holding the kit's reference student_code.py (tools/grading/versions -> repository root)
KIT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

_NOT_IMPLEMENTED = "raise NotImplementedError"


@functools.lru_cache(maxsize=4)
def kit_release_bodies(kit_root=KIT_ROOT):
    """`{qualname: [canonical statements]}` of every function of the kit's release (the reference with its
    solution blocks stripped by tools/release/markers.py): the kit's stubs and their given lines."""
    tools = os.path.join(kit_root, "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    from release import markers

    with open(os.path.join(kit_root, "student_code.py"), encoding="utf-8") as f:
        stub_source, _ = markers.strip_source(f.read())
    out = {}
    for node in ast.parse(stub_source).body:
        if isinstance(node, ast.FunctionDef):
            out[node.name] = astnorm.body_dumps(node.body)
        elif isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, ast.FunctionDef):
                    out[f"{node.name}.{sub.name}"] = astnorm.body_dumps(sub.body)
    return out


def _given_for(profile, qualname):
    """The set of given canonical statements of one stub of `profile`."""
    if profile.stubs is None:  # the kit: read from its release
        return {_NOT_IMPLEMENTED, *kit_release_bodies().get(qualname, ())}
    return _given_dumps(profile.stubs.get(qualname, ()))


def _given_dumps(snippets):
    out = {_NOT_IMPLEMENTED}
    for code in snippets:
        out.update(astnorm.parse_statements(code))
    return out


def _layer_calls(class_node):
    """The constructor calls of a class's __init__ (super() calls and calls inside other calls' arguments
    excluded: nn.Sequential(a, b) counts a and b, not the Sequential), as canonical texts in order."""
    init = next((n for n in class_node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    if init is None:
        return []
    calls = []

    def visit(node):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "Sequential":  # containers: their arguments are the layers
                for arg in node.args:
                    visit(arg)
                return
            if name in ("super", "__init__") or (isinstance(func, ast.Attribute) and func.attr == "__init__"):
                return
            calls.append(ast.dump(node, annotate_fields=False, include_attributes=False))
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    for stmt in init.body:
        visit(stmt)
    return calls


def given_simplenet_layers():
    return [ast.dump(ast.parse(line.strip(), mode="eval").body, annotate_fields=False, include_attributes=False)
            for line in SIMPLENET_LAYERS.strip().splitlines() if line.strip()]


def simplenet_is_given(tree):
    """Whether the module's `SimpleNet` still has the given layers (same constructor calls, same order).
    True when the module has no SimpleNet of its own (the kit's given one is used)."""
    node = astnorm.find_class(tree, "SimpleNet")
    return node is None or _layer_calls(node) == given_simplenet_layers()


def function_is_stub(tree, qualname, snippets=None, given=None):
    """Whether `qualname` is missing or consists only of given statements (`snippets` as code, or `given`
    as canonical texts)."""
    func = astnorm.find_function(tree, qualname)
    if func is None:
        return True
    if given is None:
        given = _given_dumps(snippets or ())
    return all(d in given for d in astnorm.body_dumps(func.body))


def _assignment_is_stub(tree, name, snippets):
    kind = astnorm.defines(tree, name)
    if kind is None:
        return True
    if kind != "assign":
        return False
    value = astnorm.module_assignment(tree, name)
    if not (isinstance(value, ast.Name) and value.id in snippets):
        return False
    return value.id != "SimpleNet" or simplenet_is_given(tree)


def stub_unchanged(tree, profile, qualname):
    """Whether one stub (`Profile.stubs` key) is unchanged in the parsed module `tree`."""
    if qualname.startswith("="):
        return _assignment_is_stub(tree, qualname[1:], profile.stubs.get(qualname, ()))
    if "." not in qualname and astnorm.defines(tree, qualname) in ("assign", "class", "import"):
        # a module-level function of the template bound another way (`default_cnn_model = MyNet`): only
        # binding it to the given SimpleNet is the stub
        return _assignment_is_stub(tree, qualname, ("SimpleNet",))
    return function_is_stub(tree, qualname, given=_given_for(profile, qualname))


def unchanged_components(profile, number, source):
    """Names of the components of item `number` whose stubs are all unchanged (they score 0)."""
    item = profile.item(number)
    if item is None:
        return []
    tree = ast.parse(source)
    return [c.name for c in item.components if c.stubs and all(stub_unchanged(tree, profile, q) for q in c.stubs)]


def is_unchanged_stub(profile, item, source):
    """True when the student wrote nothing for `item` (every component's stubs unchanged): the item scores 0.

    A manual item (no stubs) or an item the version does not have is never "unchanged" here."""
    spec = profile.item(item)
    if spec is None or not spec.components:
        return False
    return len(unchanged_components(profile, item, source)) == len(spec.components)
