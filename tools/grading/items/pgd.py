"""3a (2 points): `PGDAttack`, `default_attack` and `GradAttention` on the fixed `childlib.SmallCNN` (float64,
BatchNorm with random statistics).

The submission's attacks vs the kit's reference attack on the same model and inputs (targeted and
untargeted, several budgets; `random_start` with the global RNG seeded the same way on both sides;
`default_attack`'s budget attributes), the L-inf ball and image range, the model left exactly as found
(parameters, buffers, `.grad`, `requires_grad`, modes: the child returns its state after each call), and
`GradAttention` vs vanilla-gradient saliency computed here with autograd.
"""
import torch
import torch.nn as nn

from .. import childlib
from ..compare import case_error, close, generator, summarize
from ..results import ItemGrade
from ._common import small_cnn, small_cnn_setup

NUMBER = "3a"
TITLE = "3a PGDAttack, default_attack, GradAttention"
POINTS = 2.0
BONUS = False
GROUP = "adv"
BUDGET_S = 60.0
REQUIRES = ("PGDAttack", "default_attack", "GradAttention", "default_attention")
F64 = torch.float64
PGD_TOL = 1e-7  # per-element agreement with the reference attack (float64)


PGD_MISMATCH_FRACTION = 2e-3  # share of elements allowed to differ (sign of a ~0 gradient)


BUDGET_ATTRS = ("num_steps", "step_size", "epsilon", "random_start")  # read from default_attack's result


# ---------------------------------------------------------------------------------------------------------
# 3a
# ---------------------------------------------------------------------------------------------------------
# (kind, num_steps, step_size, epsilon, targeted, random_start, public, hint)
ATTACK_CASES = (
    ("pgd", 5, 0.02, 0.05, False, False, True, ""),
    ("pgd", 5, 0.02, 0.05, True, False, True, ""),
    ("pgd", 1, 0.1, 0.1, False, False, False, "one step of size epsilon (FGSM)"),
    ("pgd", 8, 0.03, 0.1, True, False, False, "a targeted attack with a larger budget"),
    ("default", 10, 0.01, 0.1, False, False, True, ""),
    ("pgd", 3, 0.02, 0.05, False, True, True, ""),
)


def _attack_text(case):
    kind, steps, step, eps, targeted, random_start, public, hint = case
    if kind == "default":
        return "default_attack(loss_fn).perturb(model, x, target)"
    if not public:
        return f"a hidden case ({hint})"
    what = "target=None (targeted towards the least-confident class)" if targeted else "target given (untargeted)"
    extra = ", random_start=True" if random_start else ""
    return f"PGDAttack(num_steps={steps}, step_size={step}, epsilon={eps}{extra}), {what}"



def inputs(ref):
    gen = generator(301)
    # the child seeds the global RNG with "seed" right before each perturb (random_start draws from it)
    cases = [{"kind": k, "num_steps": n, "step_size": s, "epsilon": e, "targeted": t, "random_start": r,
              "seed": 303 + i} for i, (k, n, s, e, t, r, _, _) in enumerate(ATTACK_CASES)]
    return {"setup": small_cnn_setup(302, frozen=("bn1.bias",), grads=("conv1.weight", "fc.bias")),
            "x": childlib.seeded_images(gen, 4, 16, 16), "y": torch.randint(0, 10, (4,), generator=gen),
            "cases": cases}



def run(sc, inp, lib):
    setup = inp["setup"]
    model = lib.SmallCNN().double()
    loss_fn = nn.CrossEntropyLoss()
    res = {"attacks": [], "saliency": []}
    for c in inp["cases"]:
        r = {}
        try:
            lib.load_model_state(model, setup)
            x = inp["x"].clone()
            if c["kind"] == "default":
                attack = sc.default_attack(loss_fn)
            elif c["random_start"]:
                attack = sc.PGDAttack(loss_fn, num_steps=c["num_steps"], step_size=c["step_size"],
                                      epsilon=c["epsilon"], random_start=True)
            else:
                attack = sc.PGDAttack(loss_fn, num_steps=c["num_steps"], step_size=c["step_size"],
                                      epsilon=c["epsilon"])
            if c["kind"] == "default":
                try:
                    r["budget"] = torch.tensor([float(getattr(attack, name)) for name in
                                                ("num_steps", "step_size", "epsilon", "random_start")],
                                               dtype=torch.float64)
                except BaseException:  # noqa: B902
                    r["budget"] = None
            torch.manual_seed(int(c["seed"]))  # random_start draws from the global RNG
            adv = attack.perturb(model, x, None if c["targeted"] else inp["y"].clone())
            r["adv_requires_grad"] = bool(getattr(adv, "requires_grad", False))
            r["adv"] = lib.plain(adv)
            r["x_after"] = lib.plain(x)
            r["model"] = lib.model_snapshot(model)
        except BaseException as exc:  # noqa: B902
            r["error"] = lib.describe(exc)
        res["attacks"].append(r)
    for kind in ("grad", "default"):
        r = {}
        try:
            lib.load_model_state(model, setup)
            x = inp["x"].clone()
            explainer = sc.GradAttention(loss_fn) if kind == "grad" else sc.default_attention(loss_fn)
            sal = explainer.explain(model, x)
            r["requires_grad"] = bool(getattr(sal, "requires_grad", False))
            r["map"] = lib.plain(sal)
            r["model"] = lib.model_snapshot(model)
        except BaseException as exc:  # noqa: B902
            r["error"] = lib.describe(exc)
        res["saliency"].append(r)
    return res



def expected(ref, inp):
    loss_fn = nn.CrossEntropyLoss()
    advs, no_start = [], []
    for c in inp["cases"]:
        target = None if c["targeted"] else inp["y"]
        model = small_cnn(inp["setup"])
        attack = ref.default_attack(loss_fn) if c["kind"] == "default" else ref.PGDAttack(
            loss_fn, num_steps=c["num_steps"], step_size=c["step_size"], epsilon=c["epsilon"],
            random_start=c["random_start"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c["seed"])
            advs.append(attack.perturb(model, inp["x"].clone(), target))
        no_start.append(None)
        if c["random_start"]:  # the same attack started at the input (what ignoring random_start gives)
            attack.random_start = False
            no_start[-1] = attack.perturb(small_cnn(inp["setup"]), inp["x"].clone(), target)
    model = small_cnn(inp["setup"])
    model.eval()
    x = inp["x"].clone().requires_grad_(True)
    logits = model(x)
    grad, = torch.autograd.grad(loss_fn(logits, logits.argmax(dim=1)), x)
    saliency = grad.abs().amax(dim=1, keepdim=True)  # (N, 1, H, W)
    pristine = childlib.model_snapshot(small_cnn(inp["setup"]))
    default = ref.default_attack(loss_fn)
    budget = torch.tensor([float(getattr(default, name)) for name in BUDGET_ATTRS], dtype=F64)
    return {"advs": advs, "no_start": no_start, "saliency": saliency, "pristine": pristine,
            "default_eps": default.epsilon, "default_budget": budget}



def _budget_problem(r, want):
    """'' when `default_attack`'s attributes (`r["budget"]`, in `BUDGET_ATTRS` order) equal `want`."""
    got = r.get("budget")
    if isinstance(got, torch.Tensor) and got.shape == want.shape and got.dtype == want.dtype \
            and bool(torch.isfinite(got).all()) and bool(((got - want).abs() <= 1e-12).all()):
        return ""
    shown = ", ".join(f"{n}={bool(v)}" if n == "random_start" else f"{n}={v:g}"
                      for n, v in zip(BUDGET_ATTRS, got.tolist())) \
        if isinstance(got, torch.Tensor) and got.shape == want.shape else "unreadable attributes"
    return (f"default_attack(loss_fn) must be PGDAttack(loss_fn) with the default budget (num_steps=10, "
            f"step_size=0.01, epsilon=0.1, random_start=False); got {shown}")


def _untouched(snapshot, pristine):
    """'' when the model state after the call equals the pristine one, else what changed."""
    if not isinstance(snapshot, dict):
        return "the model state after the call did not come back"
    state = snapshot.get("state")
    if not isinstance(state, dict) or set(state) != set(pristine["state"]):
        return "the model's parameters/buffers changed names"
    for name, want in pristine["state"].items():
        got = state[name]
        if not isinstance(got, torch.Tensor) or got.shape != want.shape or got.dtype != want.dtype \
                or not torch.equal(got, want):
            kind = "BatchNorm statistic" if "running" in name or "num_batches" in name else "parameter"
            return f"{kind} {name} was changed (did the attack run the model in train mode, or step it?)"
    grads = snapshot.get("grads")
    if not isinstance(grads, dict) or set(grads) != set(pristine["grads"]):
        return "the parameters' .grad changed (compute gradients with respect to the input only, e.g. " \
               "torch.autograd.grad)"
    for name, want in pristine["grads"].items():
        got = grads[name]
        if not isinstance(got, torch.Tensor) or got.shape != want.shape or not torch.equal(got, want):
            return f"the .grad of {name} changed"
    for key, what in (("requires_grad", "requires_grad flags"), ("training", "train/eval modes")):
        got = snapshot.get(key)
        if not isinstance(got, torch.Tensor) or not torch.equal(got, pristine[key]):
            return f"the model's {what} were not restored"
    return ""


def _rules_problem(r, x, eps, lo, hi):
    """'' when the adversarial batch `r["adv"]` respects the rules (shape, dtype, detached, finite, L-inf ball,
    image range, input untouched), else the reason."""
    adv = r.get("adv")
    if not isinstance(adv, torch.Tensor):
        return "no adversarial batch came back"
    if adv.shape != x.shape or adv.dtype != x.dtype:
        return f"returned shape {tuple(adv.shape)} / {adv.dtype}, expected {tuple(x.shape)} / {x.dtype}"
    if r.get("adv_requires_grad"):
        return "the returned tensor requires grad (return it detached)"
    if not bool(torch.isfinite(adv).all()):
        return "the adversarial batch contains NaN or inf"
    dist = float((adv - x).abs().max())
    if dist > eps + 1e-9:
        return f"leaves the L-inf ball: max |adv - x| = {dist:.4g} > epsilon {eps:g}"
    below, above = float((lo - adv).max()), float((adv - hi).max())
    if max(below, above) > 1e-9:
        return f"leaves the valid image range by {max(below, above):.3g} (project onto valid_input_range())"
    if isinstance(r.get("x_after"), torch.Tensor) and not torch.equal(r["x_after"], x):
        return "the input batch was modified in place"
    return ""


def _mismatch(adv, want):
    """'' when `adv` equals the reference attack's `want` (up to a few sign flips of ~0 gradients)."""
    diff = (adv - want).abs()
    bad = float((diff > PGD_TOL).double().mean())
    if bad > PGD_MISMATCH_FRACTION:
        return f"differs from the reference PGD in {100 * bad:.1f}% of the values (max abs diff {float(diff.max()):.3g})"
    return ""



def score(inp, exp, out):
    grade = ItemGrade("3a")
    attacks = out.get("attacks") if isinstance(out, dict) else None
    if not isinstance(attacks, list) or len(attacks) != len(ATTACK_CASES):
        grade.fail(f"raised {case_error(out)}" if case_error(out) else "no attack results came back")
        return grade
    x = inp["x"]
    lo, hi = childlib.valid_range(F64)
    groups = {"untargeted": [], "targeted": [], "rules": []}
    counts = {"untargeted": 0, "targeted": 0, "rules": 0}
    for case, c, want, plain, r in zip(ATTACK_CASES, inp["cases"], exp["advs"], exp["no_start"], attacks):
        err = case_error(r)
        r = r if isinstance(r, dict) else {}
        text = _attack_text(case)
        if c["kind"] == "default" or c["random_start"]:
            key = "rules"
        else:
            key = "targeted" if c["targeted"] else "untargeted"
        counts[key] += 1
        counts["rules"] += key != "rules"
        eps = exp["default_eps"] if c["kind"] == "default" else c["epsilon"]
        if "adv" not in r:
            problem = f"raised {err}" if err else "no adversarial batch came back"
            groups[key].append(f"{problem} for {text}")
            if key != "rules":
                groups["rules"].append(f"{problem} for {text}")
            continue
        rules = _rules_problem(r, x, eps, lo, hi) or _untouched(r.get("model"), exp["pristine"])
        if not rules and c["kind"] == "default":
            rules = _budget_problem(r, exp["default_budget"])
        if rules:
            groups["rules"].append(f"{rules} for {text}")
        mismatch = _mismatch(r["adv"], want) if want is not None and not rules.startswith(("no adv", "returned")) \
            else ""
        if mismatch and plain is not None:
            mismatch = ("random_start=True was ignored (the result equals the attack started at the input)"
                        if not _mismatch(r["adv"], plain) else
                        mismatch + "; with the global RNG seeded, the start must be input + "
                        "torch.empty_like(input).uniform_(-epsilon, epsilon) (one draw, no other), projected")
        if key != "rules" and (rules or mismatch):
            groups[key].append(f"{rules or mismatch} for {text}")
        elif key == "rules" and mismatch:
            groups[key].append(f"{mismatch} for {text}")
    grade.add("untargeted attack (target given) matches the reference PGD", 0.5, not groups["untargeted"],
              summarize(groups["untargeted"], counts["untargeted"], "cases"))
    grade.add("targeted attack (target=None: least-confident class) matches the reference PGD", 0.5,
              not groups["targeted"], summarize(groups["targeted"], counts["targeted"], "cases"))
    grade.add("every attack stays in the epsilon ball and the image range, returns a detached batch, leaves "
              "the model exactly as found; default_attack and random_start", 0.5, not groups["rules"],
              summarize(groups["rules"], counts["rules"], "checks"))
    sal = out.get("saliency")
    problems = []
    if not isinstance(sal, list) or len(sal) != 2:
        problems.append("no saliency results came back")
    else:
        for what, r in zip(("GradAttention(loss_fn).explain", "default_attention(loss_fn).explain"), sal):
            err = case_error(r)
            r = r if isinstance(r, dict) else {}
            if "map" not in r:
                problems.append(f"{what} raised {err}" if err else f"{what}: no map came back")
                continue
            ok, msg = close(r["map"], exp["saliency"], what=f"{what} map")
            if not ok:
                problems.append(msg + " (expected max over colour channels of |d loss(predicted label) / d input|"
                                ", model in eval mode)")
            elif r.get("requires_grad"):
                problems.append(f"{what} returns a tensor that requires grad")
            else:
                changed = _untouched(r.get("model"), exp["pristine"])
                if changed:
                    problems.append(f"{what}: {changed}")
    grade.add("GradAttention saliency matches autograd; model left as found", 0.5, not problems,
              summarize(problems, 2, "checks"))
    return grade

