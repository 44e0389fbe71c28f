"""3b (bonus, 2 points): `adversarial_training_step` with the grader's recording attacker.

One step on the fixed `childlib.SmallCNN` with `childlib.RecordingAttacker` (gradient-free: 3b does not
depend on 3a, and no attack answer enters the sandbox) vs the kit's reference step (parameters, BatchNorm
statistics, loss and output after the step), and the protocol, judged here from what the attacker recorded:
called once with the first `round(adv_fraction * N)` samples and their true labels, the model in eval mode
while crafting, train mode restored, gradients zeroed (a step on a model whose parameters carry stale
`.grad` values must equal the reference step), exactly one optimizer step.
"""
import torch
import torch.nn as nn

from .. import childlib
from ..compare import case_error, close, generator, summarize
from ..results import ItemGrade
from ._common import small_cnn, small_cnn_setup

NUMBER = "3b"
TITLE = "3b (bonus) adversarial_training_step"
POINTS = 2.0
BONUS = True
GROUP = "adv"
BUDGET_S = 40.0
REQUIRES = ("adversarial_training_step",)
F64 = torch.float64
# ---------------------------------------------------------------------------------------------------------
# 3b
# ---------------------------------------------------------------------------------------------------------
# (adv_fraction, public)
TRAIN_CASES = ((1.0, True), (0.5, True), (0.0, True), (1.0 / 3.0, False))


STALE_GRAD = 3.0  # the .grad every parameter carries before the stale-gradient step



def inputs(ref):
    gen = generator(311)
    return {"setup": small_cnn_setup(312), "x": childlib.seeded_images(gen, 6, 12, 12),
            "y": torch.randint(0, 10, (6,), generator=gen),
            "cases": [{"adv_fraction": f, "lr": 0.1, "momentum": 0.9, "epsilon": 0.05} for f, _ in TRAIN_CASES],
            # every parameter starts with a stale .grad (STALE_GRAD): the step must zero the gradients
            "stale": {"adv_fraction": 0.5, "lr": 0.1, "momentum": 0.9, "epsilon": 0.05, "stale_grad": STALE_GRAD}}



def run(sc, inp, lib):
    def one_step(c):
        r = {}
        try:
            model = lib.SmallCNN().double()
            lib.load_model_state(model, inp["setup"])
            if c.get("stale_grad") is not None:  # leftovers of an earlier step: the step must zero them
                for q in model.parameters():
                    q.grad = torch.full_like(q, float(c["stale_grad"]))
            opt = torch.optim.SGD(model.parameters(), lr=c["lr"], momentum=c["momentum"])
            count = [0]
            original_step = opt.step

            def counting_step(*args, _orig=original_step, _count=count, **kwargs):
                _count[0] += 1
                return _orig(*args, **kwargs)

            opt.step = counting_step
            attacker = lib.RecordingAttacker(epsilon=c["epsilon"])
            loss, output = sc.adversarial_training_step(model, inp["x"].clone(), inp["y"].clone(),
                                                        nn.CrossEntropyLoss(), opt, attacker,
                                                        adv_fraction=c["adv_fraction"])
            r["loss_requires_grad"] = bool(getattr(loss, "requires_grad", False))
            r["output_requires_grad"] = bool(getattr(output, "requires_grad", False))
            r["loss"] = lib.plain(torch.as_tensor(loss, dtype=torch.float64) if not isinstance(loss, torch.Tensor)
                               else loss)
            r["output"] = lib.plain(output)
            r["state"] = {k: lib.plain(v) for k, v in model.state_dict().items()}
            r["training_after"] = bool(model.training)
            r["steps"] = int(count[0])
            r["calls"] = torch.tensor(attacker.calls, dtype=torch.int64).reshape(-1, 3)  # (calls, 3)
            r["attacked"] = [lib.plain(x) for x in attacker.inputs[:4]]
            r["targets"] = [lib.plain(t) for t in attacker.targets[:4]]
        except BaseException as exc:  # noqa: B902
            r["error"] = lib.describe(exc)
        return r

    return {"cases": [one_step(c) for c in inp["cases"]], "stale": one_step(inp["stale"])}


def _reference_step(ref, inp, c):
    model = small_cnn(inp["setup"])
    if c.get("stale_grad") is not None:
        for p in model.parameters():
            p.grad = torch.full_like(p, float(c["stale_grad"]))
    opt = torch.optim.SGD(model.parameters(), lr=c["lr"], momentum=c["momentum"])
    attacker = childlib.RecordingAttacker(epsilon=c["epsilon"])
    loss, output = ref.adversarial_training_step(model, inp["x"].clone(), inp["y"].clone(),
                                                 nn.CrossEntropyLoss(), opt, attacker,
                                                 adv_fraction=c["adv_fraction"])
    return {"loss": loss.detach().double(), "output": output.detach(),
            "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "n_adv": int(round(c["adv_fraction"] * inp["x"].shape[0]))}



def expected(ref, inp):
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



def score(inp, exp, out):
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
        if not isinstance(calls, torch.Tensor) or calls.dim() != 2 or calls.shape[1] != 3 \
                or calls.dtype != torch.int64:
            protocol.append(f"attacker calls not recorded for {text}")
        else:
            real = calls[calls[:, 1] > 0] if calls.numel() else calls
            attacked, targets = r.get("attacked"), r.get("targets")
            if n_adv > 0 and (real.shape[0] != 1 or int(real[0, 1]) != n_adv):
                protocol.append(f"the attacker should be called once with the first {n_adv} samples for {text} "
                                f"(calls: {calls[:, :2].tolist()})")
            elif real.numel() and bool(real[:, 0].any()):
                protocol.append(f"the attacker was called with the model in train mode for {text}")
            elif n_adv > 0 and not bool(real[0, 2]):
                protocol.append(f"the attacker got no target for {text} (pass the true labels: untargeted attack)")
            elif n_adv > 0 and not (isinstance(attacked, list) and attacked and isinstance(attacked[0], torch.Tensor)
                                    and attacked[0].shape == inp["x"][:n_adv].shape
                                    and torch.equal(attacked[0], inp["x"][:n_adv])):
                protocol.append(f"the attacker should get the first {n_adv} samples of the batch for {text}")
            elif n_adv > 0 and not (isinstance(targets, list) and targets and isinstance(targets[0], torch.Tensor)
                                    and targets[0].shape == inp["y"][:n_adv].shape
                                    and torch.equal(targets[0], inp["y"][:n_adv])):
                protocol.append(f"the attacker should get the true labels of those samples for {text}")
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
    grade.note("(3b uses the grader's own recording attacker, so your PGDAttack does not affect this item.)")
    return grade

