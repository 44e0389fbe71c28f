"""Recognise the template version of a submission from its own definitions (AST: names, signatures).

Evidence, strongest first (each rule names what it saw, for results.json):

- kit: `perturb(self, model, input, target=None)`, `adversarial_training_step`, `valid_input_range`,
  `get_train_transforms(img_size=...)`, `import custom_augment`;
- 2022-23: `GradAttention` defined while `Attention` is not (it was given in `custom_blocks`),
  `TransformerBlock` imported from `custom_blocks`, `get_train_transforms(normalize)`, `vis_grad_attention`;
- 2024 / 2025: `Attention` and `TransformerBlock` defined, no `GradAttention`, `vis_grid`,
  `get_train_transforms()` without arguments. The two differ in `TransformerBlock.forward` (given in 2024,
  a stub in 2025): exactly the given block -> 2024, the 2025 stub -> 2025; otherwise the template's
  docstring wording of `CustomConv2DFunction.forward` ("equal stride/padding" in 2024, "equal stride and
  padding" in 2025) decides, then the 2025 default.

With no evidence at all (a file that defines none of these), the kit's own API is assumed.

    >>> detect("import custom_augment\\n").name
    'kit'
"""
import ast

from . import astnorm
from .profiles import BLOCK_FORWARD_GIVEN_2024, PROFILES


def _imports(tree):
    """(modules imported, {module: names imported from it}) at any depth."""
    modules, names = set(), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            names.setdefault(node.module, set()).update(a.name for a in node.names)
    return modules, names


def _params(tree, qualname):
    func = astnorm.find_function(tree, qualname)
    return None if func is None else astnorm.arg_names(func)


def evidence(tree):
    """`{profile name: [reasons]}` of everything in the module that points at a version."""
    ev = {name: [] for name in PROFILES}
    modules, from_names = _imports(tree)
    has = {n: astnorm.defines(tree, n) for n in (
        "Attention", "TransformerBlock", "SimpleViT", "GradAttention", "adversarial_training_step",
        "valid_input_range", "vis_grid", "vis_grad_attention")}
    perturb = _params(tree, "PGDAttack.perturb")
    train_tf = _params(tree, "get_train_transforms")

    if perturb is not None and len(perturb) >= 4:
        ev["kit"].append(f"PGDAttack.perturb takes {', '.join(perturb[1:])}")
    if has["adversarial_training_step"] == "function":
        ev["kit"].append("defines adversarial_training_step")
    if has["valid_input_range"] == "function":
        ev["kit"].append("defines valid_input_range")
    if "custom_augment" in modules:
        ev["kit"].append("imports custom_augment")
    if train_tf and "img_size" in train_tf:
        ev["kit"].append("get_train_transforms(img_size)")

    old = []
    if has["GradAttention"] == "class" and has["Attention"] != "class":
        old.append("defines GradAttention but not Attention")
    if "TransformerBlock" in from_names.get("custom_blocks", ()):
        old.append("imports TransformerBlock from custom_blocks")
    if train_tf is not None and train_tf[:1] == ["normalize"]:
        old.append("get_train_transforms(normalize)")
    if has["vis_grad_attention"] == "function":
        old.append("defines vis_grad_attention")
    ev["2022-23"] = old

    new = []
    if has["Attention"] == "class" and has["TransformerBlock"] == "class" and has["GradAttention"] is None:
        new.append("defines Attention and TransformerBlock, no GradAttention")
    if has["vis_grid"] == "function":
        new.append("defines vis_grid")
    if train_tf is not None and train_tf == []:
        new.append("get_train_transforms() takes no argument")
    if "MLP" in from_names.get("custom_blocks", ()) and "custom_transforms" in modules:
        new.append("imports MLP from custom_blocks and custom_transforms")
    ev["2024"] = list(new)
    ev["2025"] = list(new)
    return ev


def _split_2024_2025(tree):
    """("2024" | "2025", reason) for a module of the 2024/2025 family."""
    func = astnorm.find_function(tree, "TransformerBlock.forward")
    if func is not None:
        body = astnorm.body_dumps(func.body)
        if body == astnorm.parse_statements(BLOCK_FORWARD_GIVEN_2024):
            return "2024", "TransformerBlock.forward is the block given in the 2024 template"
        from .stubs import function_is_stub
        if function_is_stub(tree, "TransformerBlock.forward", PROFILES["2025"].stubs["TransformerBlock.forward"]):
            return "2025", "TransformerBlock.forward is the 2025 stub"
    doc = astnorm.docstring(astnorm.find_function(tree, "CustomConv2DFunction.forward"))
    if "equal stride/padding" in doc:
        return "2024", "CustomConv2DFunction.forward docstring of the 2024 template (equal stride/padding)"
    if "equal stride and padding" in doc:
        return "2025", "CustomConv2DFunction.forward docstring of the 2025 template (equal stride and padding)"
    return "2025", "TransformerBlock.forward written by the student (2025 asks for it)"


def detect_with_reasons(source_text):
    """`(profile, reasons)`: the recognised version and the list of facts that decided it.

    A source that does not parse is graded as the kit (the syntax error is reported by the grader)."""
    try:
        tree = ast.parse(source_text)
    except (SyntaxError, ValueError):
        return PROFILES["kit"], ["source does not parse; the kit's API assumed"]
    ev = evidence(tree)
    kit, old, new = len(ev["kit"]), len(ev["2022-23"]), len(ev["2024"])
    if kit == old == new == 0:
        return PROFILES["kit"], ["no version-specific definition found; the kit's API assumed"]
    if kit >= old and kit >= new:
        return PROFILES["kit"], ev["kit"]
    if old > new:
        return PROFILES["2022-23"], ev["2022-23"]
    name, why = _split_2024_2025(tree)
    return PROFILES[name], ev[name] + [why]


def detect(source_text):
    """The `Profile` of the template version the submission was written against."""
    return detect_with_reasons(source_text)[0]
