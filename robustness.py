"""Robustness evaluation for `main.py -a`: attack selection (the student's PGD, or torchattacks' APGD-CE and
AutoAttack), budget sweeps and transfer attacks. `main.evaluate` stays the one evaluation loop; this module
builds the attackers and hooks it is given.

    python main.py ../data -a --resume CKPT --attack autoattack          # AutoAttack (standard, L-inf)
    python main.py ../data -a --resume CKPT --attack apgd-ce
    python main.py ../data -a --resume CKPT --eps-sweep 0,0.02,0.05,0.1,0.2
    python main.py ../data -a --resume CKPT --steps-sweep 1,2,5,10,20
    python main.py ../data -a --resume TARGET_CKPT --transfer-from SOURCE_CKPT

Transfer. `--transfer-from` crafts every batch on the source model and evaluates the `--resume` model on
it, in one pass. Saved images are a transfer test too: `main.py ../data -a --save-adv DIR --resume SOURCE`
then `main.py DIR -e --resume TARGET` evaluates TARGET on SOURCE's adversarial images (8-bit rounded).

Units. The kit's images are normalized per channel, `x = (p - mean_c) / std_c` for pixels p in [0, 1], and
`--attack-eps` is an L-inf budget in those normalized units. torchattacks works on pixels in [0, 1] with
one scalar budget, so its attacks get the model `p -> model((p - mean) / std)` and the pixel budget
`eps_pixel = eps * min_c std_c` (0.224 for the ImageNet statistics, i.e. eps 0.1 -> 0.0224 ~ 5.7/255).
With the smallest std the pixel ball lies inside the normalized ball on every channel (the red and blue
budgets are 2.2% and 0.4% smaller than PGD's): the library attack never gets more room than the student's
PGD, so "AutoAttack accuracy <= PGD accuracy" is not an artifact of a larger budget.
"""
import argparse
import csv
import json
import os

import torch
import torch.distributed as dist
import torch.nn as nn

ATTACKS = ("pgd", "apgd-ce", "autoattack")
LIBRARY_ATTACKS = ("apgd-ce", "autoattack")
AUTOATTACK_TARGET_CLASSES = 9  # the standard version's APGD-T / FAB-T targets (Croce & Hein 2020)
APGD_STEPS = 100  # the standard version's iterations per APGD run


################################################################################
# Flags
################################################################################
def parse_list(text, flag, cast):
    """`"0,0.02,0.1"` -> `[0.0, 0.02, 0.1]` (`cast` float or int); values non-negative, finite, distinct.
    Raises ValueError with a sentence naming `flag`."""
    values = []
    for item in text.split(","):
        item = item.strip()
        try:
            value = cast(item)
        except ValueError:
            raise ValueError(f"{flag}: {item!r} is not a {'number' if cast is float else 'whole number'} "
                             f"(give a comma-separated list, e.g. {'0,0.05,0.1' if cast is float else '1,5,10'})") from None
        if not (value >= 0 and value == value and value != float("inf")):
            raise ValueError(f"{flag}: values must be non-negative and finite, got {item}")
        values.append(value)
    if len(set(values)) != len(values):
        raise ValueError(f"{flag}: repeated value in {text!r}")
    return values


def validate_args(args, error_cls):
    """Check and resolve this module's flags on `args` (raises `error_cls` with one sentence):
    `-a/--attack NAME`, `--report`, `--eps-sweep`, `--steps-sweep`, `--transfer-from`. Sets
    `args.eps_sweep_values` / `args.steps_sweep_values` (lists or None)."""
    if args.attack is not None and args.attack not in ATTACKS:
        if args.data_folder is None and os.path.isdir(args.attack):  # `main.py -a ../data`: the folder
            args.data_folder, args.attack = args.attack, "pgd"
        else:
            hint = (" (a data folder that does not exist? put it first: main.py DATA -a)"
                    if os.sep in args.attack or args.attack.startswith(".") else "")
            raise error_cls(f"-a/--attack: unknown attack {args.attack!r}; choose one of {', '.join(ATTACKS)}{hint}")
    if args.report and not args.evaluate:
        raise error_cls("--report applies to -e/--evaluate only")
    for flag, name in (("--eps-sweep", "eps_sweep"), ("--steps-sweep", "steps_sweep"),
                       ("--transfer-from", "transfer_from")):
        if getattr(args, name) and not args.attack:
            raise error_cls(f"{flag} needs -a/--attack")
    try:
        args.eps_sweep_values = parse_list(args.eps_sweep, "--eps-sweep", float) if args.eps_sweep else None
        args.steps_sweep_values = parse_list(args.steps_sweep, "--steps-sweep", int) if args.steps_sweep else None
    except ValueError as exc:
        raise error_cls(str(exc)) from None
    if args.steps_sweep_values and args.attack == "autoattack":
        raise error_cls("--steps-sweep does not apply to --attack autoattack (its budgets are fixed); "
                        "use pgd or apgd-ce")
    if args.transfer_from and (args.eps_sweep or args.steps_sweep):
        raise error_cls("--transfer-from and --eps-sweep/--steps-sweep are separate runs: use one of them")
    if args.transfer_from and not os.path.isfile(args.transfer_from):
        raise error_cls(f"--transfer-from: no checkpoint file at {args.transfer_from}")
    if args.transfer_from and not args.resume:
        raise error_cls("--transfer-from needs --resume: the model that the transferred images are tested on")


################################################################################
# Attacks
################################################################################
class PixelSpaceModel(nn.Module):
    """`p (N, 3, H, W)` pixels in [0, 1] -> `model((p - mean) / std)` logits: the kit's model as torchattacks
    sees it. `mean`, `std`: `(1, 3, 1, 1)` tensors."""

    def __init__(self, model, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, pixels):
        return self.model((pixels - self.mean) / self.std)


def channel_stats(device, dtype=torch.float32):
    """The data pipeline's normalization: `(mean, std)`, each `(1, 3, 1, 1)`."""
    import custom_augment

    mean = torch.tensor(custom_augment.IMAGENET_MEAN, dtype=dtype, device=device).view(1, 3, 1, 1)
    std = torch.tensor(custom_augment.IMAGENET_STD, dtype=dtype, device=device).view(1, 3, 1, 1)
    return mean, std


def pixel_epsilon(eps_norm):
    """L-inf budget in pixel units [0, 1] for a budget `eps_norm` in normalized units: `eps * min_c std_c`
    (the pixel ball inside the normalized ball on every channel; see the module docstring)."""
    import custom_augment

    return eps_norm * min(custom_augment.IMAGENET_STD)


class LibraryAttack:
    """`--attack apgd-ce` / `--attack autoattack`: torchattacks' APGD (cross-entropy, 100 steps) or
    AutoAttack (standard version: APGD-CE, APGD-T, FAB-T, Square, 9 target classes), L-inf, untargeted on
    the true labels, behind the `perturb(model, input, target)` interface of the student's PGD.

    `input (N, 3, H, W)` is a normalized batch; the result is normalized too, within `epsilon` of `input`
    on every channel and inside the valid image range. The model is left as found (mode, parameters,
    `requires_grad`, `.grad`), and so is the global random state (torchattacks reseeds it with `seed`)."""

    needs_labels = True  # evaluate() passes the true labels

    def __init__(self, name, epsilon, num_classes, seed=0, steps=APGD_STEPS):
        if name not in LIBRARY_ATTACKS:
            raise ValueError(f"unknown library attack {name!r}")
        self.name, self.epsilon, self.num_classes, self.seed, self.steps = name, epsilon, num_classes, seed, steps

    def _attack(self, pixel_model):
        import torchattacks

        eps = pixel_epsilon(self.epsilon)
        if self.name == "apgd-ce":
            return torchattacks.APGD(pixel_model, norm="Linf", eps=eps, steps=self.steps, n_restarts=1,
                                     loss="ce", seed=self.seed)
        # n_classes - 1 target classes in torchattacks: 10 gives the standard 9 (fewer when there are fewer)
        return torchattacks.AutoAttack(pixel_model, norm="Linf", eps=eps, version="standard",
                                       n_classes=min(self.num_classes, AUTOATTACK_TARGET_CLASSES + 1),
                                       seed=self.seed)

    def perturb(self, model, input, target=None):
        if target is None:
            raise ValueError(f"{self.name} is untargeted: it needs the true labels")
        if self.epsilon == 0 or (self.name == "apgd-ce" and self.steps == 0):
            return input.detach().clone()  # the zero ball (or no step): the identity
        mean, std = channel_stats(input.device, input.dtype)
        pixels = (input.detach() * std + mean).clamp(0, 1)
        was_training = model.training
        flags = [(p, p.requires_grad) for p in model.parameters()]
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if input.device.type == "cuda" else None
        try:
            for p, _ in flags:
                p.requires_grad_(False)  # gradients w.r.t. the input only: no parameter .grad is touched
            model.eval()
            adv_pixels = self._attack(PixelSpaceModel(model, mean, std))(pixels, target)
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
            model.train(was_training)
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)
        return ((adv_pixels.detach() - mean) / std).to(input.dtype)


def pgd_step_size(args):
    """The PGD step size of the flags: `--attack-step-size`, or a tenth of `--attack-eps` when not given."""
    return args.attack_eps / 10 if args.attack_step_size is None else args.attack_step_size


def make_attacker(args, criterion, num_classes, build_pgd, epsilon=None, steps=None):
    """The attacker of `-a`: `build_pgd(args, criterion)` (main.build_attacker: the student's PGD) or a
    `LibraryAttack`, with the budget `epsilon` / `steps` when given (else `--attack-eps`, `--attack-steps`;
    APGD's default is 100 steps). A PGD `epsilon` scales the step size with it
    (`--attack-step-size * epsilon / --attack-eps`: 10 steps of eps/10 by default), so that the iterates can
    reach every budget of a sweep."""
    name = args.attack or "pgd"
    if name == "pgd":
        local = argparse.Namespace(**vars(args))
        if epsilon is not None:  # the step size keeps its ratio to the budget, so every budget is reachable
            if args.attack_eps > 0:
                local.attack_step_size = pgd_step_size(args) * epsilon / args.attack_eps
            local.attack_eps = epsilon
        if steps is not None:
            local.attack_steps = steps
        return build_pgd(local, criterion)
    return LibraryAttack(name, args.attack_eps if epsilon is None else epsilon, num_classes, seed=args.seed,
                         steps=APGD_STEPS if steps is None else steps)


def describe(args, swept=None):
    """One phrase for the attack of `-a`, e.g. `PGD (least-likely, eps 0.1, 10 steps of 0.01)`; the budget
    named by `swept` ("eps" or "steps") is left out."""
    name = args.attack or "pgd"
    eps = "" if swept == "eps" else f", eps {args.attack_eps}"
    if name == "pgd":
        mode = "untargeted" if args.attack_untargeted else "least-likely"
        step = pgd_step_size(args)
        steps = {"steps": f", step size {step:g}",
                 "eps": f", {args.attack_steps} steps of eps x {step / args.attack_eps:g}"
                 if args.attack_eps else f", {args.attack_steps} steps of {step:g}"}.get(
            swept, f", {args.attack_steps} steps of {step:g}")
        return f"PGD ({mode}{eps}{steps})"
    if swept != "eps":
        eps += f" = {pixel_epsilon(args.attack_eps):.4f} in pixels"
    extra = (f", {APGD_STEPS} steps" if swept != "steps" else "") if name == "apgd-ce" else ", standard"
    return f"{'APGD-CE' if name == 'apgd-ce' else 'AutoAttack'} (torchattacks, L-inf{eps}{extra})"


################################################################################
# Sweeps
################################################################################
SWEEP_FIELDS = ("top1", "top5", "adv_top1", "adv_top5", "success")


def run_sweep(kind, values, make, run_eval, args, run_dir=None, writer=None, log=print):
    """One attacked evaluation per budget: `kind` "eps" or "steps", `make(value)` -> attacker,
    `run_eval(attacker)` -> evaluate()'s metrics. Writes `<kind>_sweep.csv`, `<kind>_sweep.png` and the
    TensorBoard scalars `Sweep/<kind>_<metric>` (step: the number of steps, or epsilon x 1000) and figure
    `Sweep/<kind>` into `run_dir` (main process: `run_dir` given). Returns the rows (dicts)."""
    from tqdm import tqdm

    rows = []
    bar = tqdm(values, desc=f"{kind} sweep", dynamic_ncols=True, disable=run_dir is None or None)
    for value in bar:
        metrics = run_eval(make(value))
        rows.append({kind: value, **{k: metrics[k] for k in SWEEP_FIELDS}})
        bar.set_postfix({kind: value, "adv_acc1": f"{metrics['adv_top1']:.1f}"})
        if writer is not None:
            step = int(round(value * 1000)) if kind == "eps" else int(value)
            for k in ("adv_top1", "adv_top5", "success"):
                writer.add_scalar(f"Sweep/{kind}_{k}", metrics[k], step)
    if run_dir is None:
        return rows
    csv_path = os.path.join(run_dir, f"{kind}_sweep.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([kind, "clean_top1", "clean_top5", "adv_top1", "adv_top5", "attack_success"])
        w.writerows([[r[kind]] + [f"{r[k]:.2f}" for k in SWEEP_FIELDS] for r in rows])
    fig = plot_sweep(kind, rows, describe(args, kind))
    png = os.path.join(run_dir, f"{kind}_sweep.png")
    fig.savefig(png)
    if writer is not None:
        writer.add_figure(f"Sweep/{kind}", fig, 0, close=False)
    log(f"{kind} sweep ({describe(args, kind)}):")
    for r in rows:
        log(f"  {kind} {r[kind]}: acc@1 {r['adv_top1']:.2f} acc@5 {r['adv_top5']:.2f}, "
            f"attack success {r['success']:.1f}%")
    log(f"sweep written to {csv_path} and {png}")
    return rows


def run_sweeps(args, criterion, num_classes, build_pgd, run_dir, writer, log, run_eval):
    """`--eps-sweep` and `--steps-sweep` (each when given): `run_sweep` with the attack of `-a` at each
    budget; `run_eval(attacker)` -> evaluate()'s metrics. Returns `{kind: rows}`."""
    out = {}
    for kind, values, key in (("eps", args.eps_sweep_values, "epsilon"), ("steps", args.steps_sweep_values, "steps")):
        if values:
            def make(value, key=key):
                return make_attacker(args, criterion, num_classes, build_pgd, **{key: value})
            out[kind] = run_sweep(kind, values, make, run_eval, args, run_dir, writer, log)
    return out


def plot_sweep(kind, rows, title):
    """A matplotlib `Figure`: top-1, top-5 accuracy and attack success (percent) against the budget."""
    from matplotlib.figure import Figure

    xs = [r[kind] for r in rows]
    fig = Figure(figsize=(6, 4.6), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(xs, [r["adv_top1"] for r in rows], "o-", label="top-1 accuracy")
    ax.plot(xs, [r["adv_top5"] for r in rows], "s-", label="top-5 accuracy")
    ax.plot(xs, [r["success"] for r in rows], "^--", label="attack success (of clean-correct)")
    ax.axhline(rows[0]["top1"], color="gray", lw=0.8, ls=":", label="clean top-1")
    ax.set_xlabel("epsilon (normalized units)" if kind == "eps" else "attack steps")
    ax.set_ylabel("%")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    # the legend goes below the axes, where it hides no point of the curves
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


################################################################################
# Transfer
################################################################################
ARCH_FLAGS = {"simplenet": ("use_simplenet",), "vit": ("use_vit",), "resnet18": ("use_resnet18",),
              "default_cnn": (), "custom_conv": ("use_custom_conv",),
              "simplenet_custom_conv": ("use_simplenet", "use_custom_conv"),
              "resnet18_custom_conv": ("use_resnet18", "use_custom_conv")}
MODEL_FLAGS = ("use_simplenet", "use_custom_conv", "use_vit", "use_resnet18")


class TransferSource:
    """`--transfer-from CKPT`: the source model (any family main.py builds, read from the checkpoint's
    `model_arch`), an attacker wrapper that crafts on it, and an `on_batch` hook that measures it.

    `build_model(args, num_classes)` and `load_checkpoint(path, model)` are main.py's; `error_cls` is the
    error to raise for an unusable checkpoint."""

    def __init__(self, path, args, num_classes, build_model, load_checkpoint, error_cls):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise error_cls(f"--transfer-from: {path} is not a readable checkpoint "
                            f"({str(exc).splitlines()[0]})") from None
        arch = ckpt.get("model_arch") if isinstance(ckpt, dict) else None
        if arch not in ARCH_FLAGS:
            raise error_cls(f"--transfer-from: {path} names no model this runner builds "
                            f"(model_arch {arch!r}; expected one of {', '.join(ARCH_FLAGS)})")
        local = argparse.Namespace(**vars(args))
        for flag in MODEL_FLAGS:
            setattr(local, flag, flag in ARCH_FLAGS[arch])
        self.arch, self.path = arch, path
        self.model = build_model(local, num_classes).to(args.device)
        rng = torch.get_rng_state()
        load_checkpoint(path, self.model)
        torch.set_rng_state(rng)  # the checkpoint's saved RNG state is the training's, not ours
        self.model.eval()
        self.meters = {k: [0.0, 0] for k in ("top1", "adv_top1", "success")}

    def wrap(self, attacker):
        """An attacker that crafts with `attacker` on the source model, whatever model it is handed."""
        return TransferAttack(attacker, self.model)

    def _add(self, key, correct):
        self.meters[key][0] += float(correct.float().sum())
        self.meters[key][1] += int(correct.numel())

    def __call__(self, input, target, output, adv=None, adv_output=None):
        """The source model's clean and adversarial (white-box) accuracy and attack success."""
        with torch.no_grad():
            clean_ok = self.model(input).argmax(1).eq(target)
            adv_ok = self.model(adv).argmax(1).eq(target)
        self._add("top1", clean_ok)
        self._add("adv_top1", adv_ok)
        self._add("success", ~adv_ok[clean_ok])

    def summary(self):
        """`{"top1", "adv_top1", "success"}` of the source model in percent, merged over processes."""
        out = {}
        for k, (s, n) in self.meters.items():
            if dist.is_available() and dist.is_initialized():
                t = torch.tensor([s, float(n)], dtype=torch.float64)
                dist.all_reduce(t)
                s, n = t[0].item(), int(t[1].item())
            out[k] = 100.0 * s / max(n, 1)
        return out

    def report(self, target_arch, metrics, args, run_dir=None, writer=None, log=print):
        """Print and write (`transfer.json`, TensorBoard `Transfer/*`) both models' accuracies and the
        transfer success rate (the share of the target's clean-correct images that the transferred
        images make it get wrong)."""
        src = self.summary()
        result = {"attack": describe(args), "source": self.arch, "source_checkpoint": self.path,
                  "target": target_arch, "target_checkpoint": args.resume,
                  "source_clean_top1": src["top1"], "source_adv_top1": src["adv_top1"],
                  "source_attack_success": src["success"], "target_clean_top1": metrics["top1"],
                  "target_adv_top1": metrics["adv_top1"], "transfer_success": metrics["success"]}
        if run_dir is None:
            return result
        log(f"transfer {self.arch} -> {target_arch} ({describe(args)}): source clean acc@1 {src['top1']:.2f}, "
            f"on its own adversarial images {src['adv_top1']:.2f} (white-box success {src['success']:.1f}%); "
            f"target clean acc@1 {metrics['top1']:.2f}, on the transferred images {metrics['adv_top1']:.2f}; "
            f"transfer success rate {metrics['success']:.1f}%")
        with open(os.path.join(run_dir, "transfer.json"), "w") as f:
            json.dump(result, f, indent=2)
        if writer is not None:
            for k in ("source_clean_top1", "source_adv_top1", "target_clean_top1", "target_adv_top1",
                      "transfer_success"):
                writer.add_scalar(f"Transfer/{k}", result[k], 0)
        return result


class TransferAttack:
    """Crafts with `attacker` on `source`, ignoring the model `evaluate` passes (the one under test)."""

    def __init__(self, attacker, source):
        self.attacker, self.source = attacker, source
        self.needs_labels = getattr(attacker, "needs_labels", False)

    def perturb(self, model, input, target=None):
        return self.attacker.perturb(self.source, input, target)


def chain_hooks(*hooks):
    """One `on_batch` hook calling each of `hooks` (None entries skipped); None when there are none."""
    hooks = [h for h in hooks if h is not None]
    if not hooks:
        return None

    def on_batch(*batch):
        for h in hooks:
            h(*batch)

    return on_batch
