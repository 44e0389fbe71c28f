"""Subprocess probe of a `student_code.py` (run by the release checks, never imported by student code).

    python tools/release/probe.py describe DIR            # JSON: the public API of DIR/student_code.py
    python tools/release/probe.py call-stubs DIR JSON     # JSON: what each stub raises when called
    python tools/release/probe.py all REF_DIR STUB_DIR JSON   # both descriptions and the stub calls

It imports `student_code` from DIR (with DIR first on `sys.path`, so the given files next to it are the
ones used) and prints one JSON document on stdout. Running it in a fresh interpreter keeps the builder's
own process free of the code it checks.

`describe`: for every global of the module (dunders aside) its kind and, for functions and classes, the
`inspect.signature` text and the docstring (`__doc__`, exactly); for classes, the same for every function,
static/class method and property defined in the class body.

`call-stubs`: JSON is a list of `[qualname, part]`; each stub is called (with a recipe when given code runs
before the stub's `raise`, else with `None` for every parameter that has no default) and the probe reports
the exception type and message.
"""
import inspect
import json
import sys


def _signature(obj):
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return None


def _describe_function(obj):
    return {"kind": "function", "signature": _signature(obj), "doc": obj.__doc__}


def _describe_class(cls):
    members = {}
    for name, raw in vars(cls).items():
        if name.startswith("__") and name.endswith("__") and name not in ("__init__", "__call__"):
            continue
        if isinstance(raw, (staticmethod, classmethod)):
            desc = _describe_function(raw.__func__)
            desc["kind"] = type(raw).__name__
        elif isinstance(raw, property):
            desc = {"kind": "property", "signature": _signature(raw.fget) if raw.fget else None,
                    "doc": raw.__doc__}
        elif inspect.isfunction(raw):
            desc = _describe_function(raw)
        else:
            desc = {"kind": "attribute", "type": type(raw).__name__}
        members[name] = desc
    return {"kind": "class", "signature": _signature(cls), "doc": cls.__doc__,
            "bases": [b.__qualname__ for b in cls.__bases__], "members": members}


def describe(module):
    """`{name: description}` for the module's globals (dunders aside)."""
    out = {}
    for name, obj in sorted(vars(module).items()):
        if name.startswith("__") and name.endswith("__"):
            continue
        if inspect.ismodule(obj):
            out[name] = {"kind": "module", "module": obj.__name__}
        elif inspect.isclass(obj):
            if obj.__module__ == module.__name__:
                out[name] = _describe_class(obj)
            else:
                out[name] = {"kind": "imported class", "qualname": f"{obj.__module__}.{obj.__qualname__}"}
        elif inspect.isfunction(obj):
            if obj.__module__ == module.__name__:
                out[name] = _describe_function(obj)
            else:
                out[name] = {"kind": "imported function", "qualname": f"{obj.__module__}.{obj.__qualname__}"}
        else:
            out[name] = {"kind": "other", "type": type(obj).__name__, "signature": _signature(obj)
                         if callable(obj) else None}
    return out


def _recipes():
    """Calls for stubs whose function runs given code (shape asserts, unpacking) before the `raise`."""
    import torch

    return {
        "CustomConv2DFunction.forward":
            lambda m: m.custom_conv2d(torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3), torch.randn(3), 1, 1),
        "CustomConv2DFunction.backward":
            lambda m: m.CustomConv2DFunction.backward(None, torch.randn(1, 3, 5, 5)),
        "Attention.forward": lambda m: m.Attention(8, num_heads=2)(torch.randn(1, 2, 3, 8)),
        "TransformerBlock.forward": lambda m: m.TransformerBlock(8, 2)(torch.randn(1, 2, 3, 8)),
        "SimpleViT.__init__": lambda m: m.SimpleViT(img_size=32, num_classes=5),
    }


def _resolve(module, qualname):
    owner, obj = None, module
    for part in qualname.split("."):
        owner = obj
        obj = inspect.getattr_static(obj, part) if inspect.isclass(obj) else getattr(obj, part)
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    return owner, obj


def _generic_call(module, qualname):
    owner, func = _resolve(module, qualname)
    if qualname.endswith(".__init__") and inspect.isclass(owner):
        params = list(inspect.signature(func).parameters.values())[1:]
        return owner(*[None for p in params if p.default is p.empty and p.kind == p.POSITIONAL_OR_KEYWORD])
    params = inspect.signature(func).parameters.values()
    args = [None for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY,
                                                                          p.POSITIONAL_OR_KEYWORD)]
    return func(*args)


def call_stubs(module, stubs):
    recipes = _recipes()
    out = []
    for qualname, part in stubs:
        call = recipes.get(qualname)
        try:
            if call is not None:
                call(module)
            else:
                _generic_call(module, qualname)
        except BaseException as exc:  # noqa: BLE001 - report whatever the stub raised
            out.append({"qualname": qualname, "part": part, "raised": type(exc).__name__,
                        "message": str(exc), "recipe": call is not None})
        else:
            out.append({"qualname": qualname, "part": part, "raised": None, "message": "",
                        "recipe": call is not None})
    return out


def import_from(directory):
    """Import `student_code` from `directory` (first on `sys.path`), forgetting any module loaded from
    another kit folder before (so the given files next to it are the ones used)."""
    import importlib
    import os

    directory = os.path.abspath(directory)
    for name, mod in list(sys.modules.items()):
        path = getattr(mod, "__file__", None) or ""
        if name == "student_code" or (name.startswith("custom_") and os.path.dirname(path) != directory):
            del sys.modules[name]
    sys.path.insert(0, directory)
    try:
        return importlib.import_module("student_code")
    finally:
        sys.path.remove(directory)


def main(argv):
    import os

    sys.dont_write_bytecode = True
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]  # no staff module shadows anything
    if len(argv) == 2 and argv[0] == "describe":
        result = describe(import_from(argv[1]))
    elif len(argv) == 3 and argv[0] == "call-stubs":
        result = call_stubs(import_from(argv[1]), json.loads(argv[2]))
    elif len(argv) == 4 and argv[0] == "all":
        result = {"reference": describe(import_from(argv[1])), "stub": describe(import_from(argv[2]))}
        result["calls"] = call_stubs(sys.modules["student_code"], json.loads(argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    sys.stdout.write(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
