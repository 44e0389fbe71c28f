"""Part 3 checks (trusted grading process): inputs, reference outputs and scoring of 3a and 3b.

Both items run on the fixed `harness.SmallCNN` (float64, BatchNorm with random statistics). 3a: the
submission's `PGDAttack` / `default_attack` vs the kit's reference attack on the same model and inputs
(targeted and untargeted, several budgets; `random_start` with the global RNG seeded the same way on both sides;
`default_attack`'s budget attributes), the L-inf ball and image range, the model left exactly as
found (parameters, buffers, `.grad`, `requires_grad`, modes; the child returns its state after each call),
and `GradAttention` vs vanilla-gradient saliency computed here with autograd. 3b: one
`adversarial_training_step` with the trusted recording FGSM attacker vs the kit's reference step (parameters,
BatchNorm statistics, loss and output after the step), and the protocol (eval mode while crafting, train
mode restored, gradients zeroed: a step on a model whose parameters carry stale `.grad` values must equal
the reference step, exactly one optimizer step).
"""
import torch
import torch.nn as nn

from . import harness
from .compare import case_error, close, generator, summarize
from .results import ItemGrade

F64 = torch.float64
PGD_TOL = 1e-7  # per-element agreement with the reference attack (float64)
PGD_MISMATCH_FRACTION = 2e-3  # share of elements allowed to differ (sign of a ~0 gradient)
BUDGET_ATTRS = ("num_steps", "step_size", "epsilon", "random_start")  # read from default_attack's result


def _setup(seed, frozen=(), grads=(), train=True):
    """A SmallCNN state: seeded weights, random BatchNorm statistics, some frozen parameters and some
    existing `.grad`s (what an attack must leave untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = harness.SmallCNN().double()
    harness.randomize_bn_stats(model, generator(seed + 1))
    gen = generator(seed + 2)
    params = dict(model.named_parameters())
    return {"state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "grads": {n: torch.randn(params[n].shape, generator=gen, dtype=F64) for n in grads},
            "frozen": list(frozen), "train": train}


def _model(setup):
    return harness.load_model_state(harness.SmallCNN().double(), setup)


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


def inputs_3a(ref):
    gen = generator(301)
    # the child seeds the global RNG with "seed" right before each perturb (random_start draws from it)
    cases = [{"kind": k, "num_steps": n, "step_size": s, "epsilon": e, "targeted": t, "random_start": r,
              "seed": 303 + i} for i, (k, n, s, e, t, r, _, _) in enumerate(ATTACK_CASES)]
    return {"setup": _setup(302, frozen=("bn1.bias",), grads=("conv1.weight", "fc.bias")),
            "x": harness.seeded_images(gen, 4, 16, 16), "y": torch.randint(0, 10, (4,), generator=gen),
            "cases": cases}


def expected_3a(ref, inp):
    loss_fn = nn.CrossEntropyLoss()
    advs, no_start = [], []
    for c in inp["cases"]:
        target = None if c["targeted"] else inp["y"]
        model = _model(inp["setup"])
        attack = ref.default_attack(loss_fn) if c["kind"] == "default" else ref.PGDAttack(
            loss_fn, num_steps=c["num_steps"], step_size=c["step_size"], epsilon=c["epsilon"],
            random_start=c["random_start"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c["seed"])
            advs.append(attack.perturb(model, inp["x"].clone(), target))
        no_start.append(None)
        if c["random_start"]:  # the same attack started at the input (what ignoring random_start gives)
            attack.random_start = False
            no_start[-1] = attack.perturb(_model(inp["setup"]), inp["x"].clone(), target)
    model = _model(inp["setup"])
    model.eval()
    x = inp["x"].clone().requires_grad_(True)
    logits = model(x)
    grad, = torch.autograd.grad(loss_fn(logits, logits.argmax(dim=1)), x)
    saliency = grad.abs().amax(dim=1, keepdim=True)  # (N, 1, H, W)
    pristine = harness.model_snapshot(_model(inp["setup"]))
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


def score_3a(inp, exp, out, findings):
    grade = ItemGrade("3a")
    attacks = out.get("attacks") if isinstance(out, dict) else None
    if not isinstance(attacks, list) or len(attacks) != len(ATTACK_CASES):
        grade.fail(f"raised {case_error(out)}" if case_error(out) else "no attack results came back")
        return grade
    x = inp["x"]
    lo, hi = harness.valid_range(F64)
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


# ---------------------------------------------------------------------------------------------------------
# 3b
# ---------------------------------------------------------------------------------------------------------
# (adv_fraction, public)
TRAIN_CASES = ((1.0, True), (0.5, True), (0.0, True), (1.0 / 3.0, False))
STALE_GRAD = 3.0  # the .grad every parameter carries before the stale-gradient step


def inputs_3b(ref):
    gen = generator(311)
    return {"setup": _setup(312), "x": harness.seeded_images(gen, 6, 12, 12),
            "y": torch.randint(0, 10, (6,), generator=gen),
            "cases": [{"adv_fraction": f, "lr": 0.1, "momentum": 0.9, "epsilon": 0.05} for f, _ in TRAIN_CASES],
            # every parameter starts with a stale .grad (STALE_GRAD): the step must zero the gradients
            "stale": {"adv_fraction": 0.5, "lr": 0.1, "momentum": 0.9, "epsilon": 0.05, "stale_grad": STALE_GRAD}}


def _reference_step(ref, inp, c):
    model = _model(inp["setup"])
    if c.get("stale_grad") is not None:
        for p in model.parameters():
            p.grad = torch.full_like(p, float(c["stale_grad"]))
    opt = torch.optim.SGD(model.parameters(), lr=c["lr"], momentum=c["momentum"])
    attacker = harness.RecordingFGSM(nn.CrossEntropyLoss(), epsilon=c["epsilon"])
    loss, output = ref.adversarial_training_step(model, inp["x"].clone(), inp["y"].clone(),
                                                 nn.CrossEntropyLoss(), opt, attacker,
                                                 adv_fraction=c["adv_fraction"])
    return {"loss": loss.detach().double(), "output": output.detach(),
            "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "n_adv": int(round(c["adv_fraction"] * inp["x"].shape[0]))}


def expected_3b(ref, inp):
    return {"cases": [_reference_step(ref, inp, c) for c in inp["cases"]],
            "stale": _reference_step(ref, inp, inp["stale"])}


def _step_problem(r, e):
    """'' when the step's results equal the reference step's, else the first difference."""
    state = r.get("state")
    if not isinstance(state, dict):
        return "the model state after the step did not come back"
    for name, want in e["state"].items():
        ok, msg = close(state.get(name), want, what=name, tol=(1e-10, 1e-8))
        if not ok:
            if "running" in name:
                msg += " (BatchNorm statistics: craft in eval mode, then one train-mode forward)"
            return msg
    ok, msg = close(r.get("loss").reshape(()) if isinstance(r.get("loss"), torch.Tensor) and
                    r["loss"].numel() == 1 else r.get("loss"), e["loss"].reshape(()), what="returned loss")
    if not ok:
        return msg
    ok, msg = close(r.get("output"), e["output"], what="returned output")
    return "" if ok else msg


def score_3b(inp, exp, out, findings):
    grade = ItemGrade("3b")
    results = out.get("cases") if isinstance(out, dict) else None
    if not isinstance(results, list) or len(results) != len(TRAIN_CASES):
        grade.fail(f"raised {case_error(out)}" if case_error(out) else "no results came back")
        return grade
    first, rest, protocol = [], [], []
    for i, ((fraction, public), e, r) in enumerate(zip(TRAIN_CASES, exp["cases"], results)):
        problems = first if i == 0 else rest
        err = case_error(r)
        r = r if isinstance(r, dict) else {}
        text = f"adv_fraction={fraction:g}" if public else "a hidden adv_fraction"
        if err or "state" not in r:
            problems.append(f"raised {err} for {text}" if err else f"no result for {text}")
            protocol.append(problems[-1])
            continue
        problem = _step_problem(r, e)
        if problem:
            problems.append(f"{problem} for {text}")
        calls = r.get("calls")
        n_adv = e["n_adv"]
        if not isinstance(calls, torch.Tensor) or calls.dim() != 2 or calls.shape[1] != 2:
            protocol.append(f"attacker calls not recorded for {text}")
        else:
            real = calls[calls[:, 1] > 0] if calls.numel() else calls
            if n_adv > 0 and (real.shape[0] != 1 or int(real[0, 1]) != n_adv):
                protocol.append(f"the attacker should be called once with the first {n_adv} samples for {text} "
                                f"(calls: {calls.tolist()})")
            elif real.numel() and bool(real[:, 0].any()):
                protocol.append(f"the attacker was called with the model in train mode for {text}")
        if r.get("training_after") is not True:
            protocol.append(f"the model was not back in train mode after the step for {text}")
        if r.get("steps") != 1:
            protocol.append(f"optimizer.step() was called {r.get('steps')} times (expected once) for {text}")
        if r.get("loss_requires_grad") or r.get("output_requires_grad"):
            protocol.append(f"the returned loss/output are not detached for {text}")
    stale = out.get("stale")
    if isinstance(stale, dict) and "state" in stale and not case_error(stale):
        problem = _step_problem(stale, exp["stale"])
        if problem:
            protocol.append(f"with stale .grad values on the parameters before the call (as after an earlier "
                            f"step), the step differs from the reference ({problem}): zero the gradients "
                            f"before backward")
    else:
        err = case_error(stale) if isinstance(stale, dict) else None
        protocol.append(f"raised {err} with stale .grad values on the parameters" if err else
                        "no result for the step with stale .grad values on the parameters")
    grade.add("adv_fraction=1: parameters, BatchNorm statistics, loss and output after the step equal the "
              "reference step", 1.0, not first, summarize(first, 1, "cases"))
    grade.add("mixed batches (adv_fraction 0.5, 0 and a hidden one) equal the reference step", 0.5, not rest,
              summarize(rest, len(TRAIN_CASES) - 1, "cases"))
    grade.add("protocol: attacker sees eval mode, train mode restored, gradients zeroed, one optimizer step, "
              "detached results", 0.5,
              not protocol, summarize(protocol, len(TRAIN_CASES) + 1, "checks"))
    grade.note("(3b uses the grader's own FGSM attacker, so your PGDAttack does not affect this item.)")
    return grade


INPUTS = {"3a": inputs_3a, "3b": inputs_3b}
EXPECTED = {"3a": expected_3a, "3b": expected_3b}
SCORE = {"3a": score_3a, "3b": score_3b}
