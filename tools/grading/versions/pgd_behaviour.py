"""3a of the course's templates: `PGDAttack.perturb(model, input)` and (2022-23) `GradAttention.explain`,
called as each version's `main.py` called them, judged against references computed here.

What the templates asked for, and therefore what is accepted: a targeted PGD towards "the least confident
label" (the argmin of the logits; computed once on the clean input or again at each step - the template
does not say which), steps of `step_size * sign(grad)` descending its loss, projection onto the L-inf ball
of radius `epsilon` around the input (optionally also onto the valid image range: the templates did not ask
for it, so both are right). Not required there (unlike the kit): a detached result, the untargeted attack,
`.grad` left untouched. Required: same shape and dtype, the input tensor not modified, the model's
parameters and their `requires_grad` flags as found (a frozen model would stop adversarial training).
Saliency (2022-23): the max over colour channels of |d loss(predicted label) / d input|, `(N, 1, H, W)`,
with the model in eval mode (main.py set it).

Item protocol of tools/grading/items: `inputs(calls)`, `run(sc, inp, lib)` (CHILD; only its arguments and
torch / nn / F), `checks(inp, out)` (PARENT) -> `[(label, points, ok, detail)]` for `scoring.entry`.
"""
import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

CASES = ((5, 0.02, 0.05), (1, 0.1, 0.1), (8, 0.03, 0.1), (None, None, None))  # None: default_attack's budget
DEFAULT_BUDGET = (10, 0.01, 0.1)  # every template's PGDAttack defaults
MISMATCH_FRACTION = 2e-3  # share of elements allowed to differ (the sign of a ~0 gradient)
TOL = 1e-7  # float64
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _layers():
    """The fixed model attacked (float64): conv-BN-ReLU, pooling, linear (the same layers as in `run`)."""
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                         nn.Flatten(), nn.Linear(96, 5)).double()


def build_model(state):
    model = _layers()
    model.load_state_dict(state)
    return model


def inputs(calls, seed=3301):
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _layers()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["1.running_mean"] = 0.3 * torch.randn(6, generator=gen, dtype=torch.float64)
    state["1.running_var"] = 0.5 + torch.rand(6, generator=gen, dtype=torch.float64)
    pixels = torch.rand(6, 3, 16, 16, generator=gen, dtype=torch.float64)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    return {"calls": dict(calls), "state": state, "x": (pixels - mean) / std,
            "cases": [[-1 if v is None else v for v in c] for c in CASES]}


def run(sc, inp, lib):
    calls = inp["calls"]

    def build():
        model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                              nn.Flatten(), nn.Linear(96, 5)).double()
        model.load_state_dict(inp["state"])
        return model.train()  # the runner's validate() switches it to eval where the version did so

    def as_runner(model, fn):
        modes = [(m, m.training) for m in model.modules()]
        if calls["perturb_after_eval"]:
            model.eval()
        try:
            return fn()
        finally:
            for m, mode in modes:
                m.training = mode

    res = {"attacks": []}
    for steps, step, eps in inp["cases"]:
        r = {}
        try:
            model = build()
            attack = sc.default_attack(nn.CrossEntropyLoss())
            if steps >= 0:
                attack.num_steps, attack.step_size, attack.epsilon = int(steps), float(step), float(eps)
            else:
                r["budget"] = [getattr(attack, n, None) for n in ("num_steps", "step_size", "epsilon")]
                r["budget"] = [float(v) if isinstance(v, (int, float)) else -1.0 for v in r["budget"]]
            x = inp["x"].clone()
            if calls["perturb_takes_target"]:
                adv = as_runner(model, lambda: attack.perturb(model, x, None))
            else:
                adv = as_runner(model, lambda: attack.perturb(model, x))
            r["adv"] = lib.plain(adv)
            r["dtype"] = str(adv.dtype)
            r["requires_grad"] = bool(getattr(adv, "requires_grad", False))
            r["x_changed"] = not torch.equal(x, inp["x"])
            r["frozen"] = [n for n, p in model.named_parameters() if not p.requires_grad]
            state = model.state_dict()
            r["weights_changed"] = [n for n, p in model.named_parameters() if not torch.equal(state[n], inp["state"][n])]
        except BaseException as exc:  # noqa: B902
            r["error"] = lib.describe(exc)
        res["attacks"].append(r)
    if calls["explain"] is not None:
        r = {}
        try:
            model = build()
            factory = getattr(sc, "default_attention", None) or sc.GradAttention
            explainer = factory(nn.CrossEntropyLoss())
            x = inp["x"].clone()
            modes = [(m, m.training) for m in model.modules()]
            if calls["explain"] == "after_eval":
                model.eval()
            try:
                sal = explainer.explain(model, x)
            finally:
                for m, mode in modes:
                    m.training = mode
            r["saliency"] = lib.plain(sal) if isinstance(sal, torch.Tensor) else None
            r["type"] = type(sal).__name__
            r["frozen"] = [n for n, p in model.named_parameters() if not p.requires_grad]
        except BaseException as exc:  # noqa: B902
            r["error"] = lib.describe(exc)
        res["saliency"] = r
    return res


# ---------------------------------------------------------------------------------------------------------
# parent
# ---------------------------------------------------------------------------------------------------------
def _valid_range():
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    return (0.0 - mean) / std, (1.0 - mean) / std


def eval_forward(state, x):
    """The attacked model in eval mode, written functionally from its state: the grading process builds no
    module while scoring (module initialization draws from torch's global RNG, which other threads of a
    batch use for their own reference computations)."""
    y = F.conv2d(x, state["0.weight"], state["0.bias"], padding=1)
    y = F.batch_norm(y, state["1.running_mean"], state["1.running_var"], state["1.weight"], state["1.bias"],
                     training=False, eps=1e-5)
    y = F.adaptive_avg_pool2d(F.relu(y), 4).flatten(1)  # (N, 96)
    return F.linear(y, state["5.weight"], state["5.bias"])  # (N, 5)


def reference_pgd(state, x, steps, step, eps, per_step_target=False, image_range=False, ascend=False,
                  most_likely=False):
    """The templates' PGD towards the least-confident label (model in eval mode, float64). `ascend` and
    `most_likely` build the two classic mistakes (for the message only)."""
    model = functools.partial(eval_forward, {k: v.detach() for k, v in state.items()})
    lo, hi = _valid_range()
    with torch.no_grad():
        target = model(x).argmax(dim=1) if most_likely else model(x).argmin(dim=1)
    adv = x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        logits = model(adv)
        if per_step_target:
            target = logits.detach().argmin(dim=1)
        grad, = torch.autograd.grad(nn.functional.cross_entropy(logits, target), adv)
        adv = adv.detach() + (step if ascend else -step) * grad.sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps)
        if image_range:
            adv = torch.min(torch.max(adv, lo), hi)
    return adv.detach()


def reference_saliency(state, x):
    model = functools.partial(eval_forward, {k: v.detach() for k, v in state.items()})
    x = x.clone().requires_grad_(True)
    logits = model(x)
    grad, = torch.autograd.grad(nn.functional.cross_entropy(logits, logits.argmax(dim=1)), x)
    return grad.abs().amax(dim=1, keepdim=True)


def _matches(adv, want):
    bad = (adv - want).abs() > TOL
    return float(bad.double().mean()) <= MISMATCH_FRACTION


def checks(inp, out):
    """`[(label, points, ok, detail)]` of 3a from the child's raw `out` (see the module docstring)."""
    out = out if isinstance(out, dict) else {}
    attacks = out.get("attacks") if isinstance(out.get("attacks"), list) else []
    x, state = inp["x"], inp["state"]
    wrong, rules = [], []
    for i, (c, r) in enumerate(zip(inp["cases"], attacks + [{}] * (len(inp["cases"]) - len(attacks)))):
        steps, step, eps = c if c[0] >= 0 else DEFAULT_BUDGET
        what = ("default_attack(loss_fn)" if c[0] < 0 else
                f"PGDAttack(num_steps={steps}, step_size={step}, epsilon={eps})")
        if not isinstance(r, dict) or r.get("error") or not isinstance(r.get("adv"), torch.Tensor):
            error = r.get("error") if isinstance(r, dict) and r.get("error") else "no result"
            if "NVIDIA" in error or "CUDA" in error or "cuda" in error:
                error += " - your code is CUDA-only: create tensors on the input's device (x.device), no .cuda()"
            wrong.append(f"{what}: {error}")
            continue
        adv = r["adv"]
        if adv.shape != x.shape or r.get("dtype") != str(x.dtype):
            wrong.append(f"{what}: returned {tuple(adv.shape)} {r.get('dtype')}, expected {tuple(x.shape)} {x.dtype}")
            continue
        if c[0] < 0 and r.get("budget") != [float(v) for v in DEFAULT_BUDGET]:
            rules.append(f"default_attack(loss_fn) has num_steps, step_size, epsilon = {r.get('budget')}, "
                         f"expected {list(DEFAULT_BUDGET)}")
        adv = adv.double()
        refs = [reference_pgd(state, x, steps, step, eps, per, rng) for per in (False, True) for rng in (False, True)]
        if not any(_matches(adv, want) for want in refs):
            err = min(float((adv - want).abs().max()) for want in refs)
            hint = ""
            for kwargs, why in ((dict(ascend=True), "it ascends the loss of the least-likely label (moves away "
                                 "from it): descend it"),
                                (dict(most_likely=True), "it targets the predicted label (argmax): target the "
                                 "least-confident one (argmin)"),
                                (dict(most_likely=True, ascend=True), "it is an untargeted attack on the predicted "
                                 "label: the template asks for descent towards the least-confident label")):
                variants = (reference_pgd(state, x, steps, step, eps, False, rng, **kwargs) for rng in (False, True))
                if any(_matches(adv, want) for want in variants):
                    hint = f" ({why})"
                    break
            wrong.append(f"{what}: differs from PGD towards the least-confident label by {err:.3g}{hint}")
        dist = float((adv - x).abs().max())
        if dist > eps + 1e-9:
            rules.append(f"{what}: moves {dist:.3g} from the input, more than epsilon={eps} (project onto the "
                         f"L-inf ball around the input, in normalized units; do not clamp to [0, 1])")
        if r.get("x_changed"):
            rules.append(f"{what}: modified the input tensor in place")
        if r.get("frozen"):
            rules.append(f"{what}: left requires_grad=False on {', '.join(r['frozen'][:3])} (restore the flags)")
        if r.get("weights_changed"):
            rules.append(f"{what}: changed the model's weights ({', '.join(r['weights_changed'][:3])})")
    result = [("targeted attack towards the least-confident label matches PGD (every budget, default_attack)",
               1.0, not wrong, "; ".join(wrong[:2])),
              ("every attack stays in the epsilon ball, keeps the shape and dtype, leaves the input and the "
               "model's parameters and requires_grad flags as found", 0.5, not wrong and not rules,
               "; ".join(rules[:2]) if rules else ("not graded: the attack is wrong" if wrong else ""))]
    if inp["calls"]["explain"] is not None:
        s = out.get("saliency") if isinstance(out.get("saliency"), dict) else {}
        sal = s.get("saliency")
        want = reference_saliency(state, x)
        if s.get("error"):
            ok, detail = False, f"explain raised {s['error']}"
        elif not isinstance(sal, torch.Tensor):
            ok, detail = False, f"explain returned a {s.get('type')}, not a tensor"
        elif tuple(sal.shape) != tuple(want.shape):
            ok, detail = False, f"saliency of shape {tuple(sal.shape)}, expected (N, 1, H, W) = {tuple(want.shape)}"
        else:
            err = float((sal.double() - want).abs().max())
            ok = err <= 1e-6 * max(1.0, float(want.abs().max())) and not s.get("frozen")
            detail = (f"left requires_grad=False on {', '.join(s['frozen'][:3])}" if s.get("frozen") else
                      "" if ok else f"differs from max_c |d loss(predicted label) / d input| by {err:.3g}")
        result.append(("GradAttention saliency matches autograd (model in eval mode, as main.py ran it)", 1.0, ok,
                       detail))
    return result
