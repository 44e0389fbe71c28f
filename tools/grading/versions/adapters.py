"""Call each graded piece the way its version's runner (`main.py`) called it.

Self-contained (torch only, no grader imports) so that the sandbox harness can use it next to the
submission. Every function takes the `Profile` (or its name), the imported student module `sc` where needed,
and returns what the student's code returned, untouched.

| call | kit | 2022-23 | 2024 / 2025 |
|---|---|---|---|
| attack | `sc.default_attack(loss_fn)` | `sc.default_attack(loss_fn)` (the class) | same |
| perturb | `perturb(model, x, target)`, model in any mode | `model.eval()` then `perturb(model, x)` | same as 2022-23 |
| saliency | `sc.default_attention(loss_fn).explain(model, x)` | `model.eval()` then the same | none in the template |
| transforms | `get_train_transforms(img_size)` | `get_train_transforms(normalize)` | `get_train_transforms()` |
| grid | `default_visfunction(x, vis_output=m)` | same | `default_visfunction(x)` |

Where the runner called `model.eval()` first, the adapter does so and restores every module's mode
afterwards, so that "left the model as found" checks see only what the student's code changed.
"""
import contextlib

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class NotInVersion(Exception):
    """The call asked for does not exist in this template version (e.g. saliency in 2024)."""


CALL_FIELDS = ("name", "perturb_takes_target", "perturb_after_eval", "explain", "transforms_arg", "visfunction")


def calls(profile):
    """The call facts of `profile` as a plain dict (what the sandbox receives in an item's inputs; every
    function here accepts it in place of the Profile)."""
    return {f: getattr(profile, f) for f in CALL_FIELDS}


def _get(profile, field):
    return profile[field] if isinstance(profile, dict) else getattr(profile, field)


@contextlib.contextmanager
def runner_eval(model, enabled=True):
    """`model.eval()` for the block (as the version's `validate()` did), each module's mode restored after."""
    if not enabled:
        yield model
        return
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


def make_attack(profile, sc, loss_fn, num_steps=None, step_size=None, epsilon=None):
    """The version's attacker: `sc.default_attack(loss_fn)` with the budget set on it afterwards (every
    template reads `num_steps`, `step_size`, `epsilon` from `self`)."""
    attack = sc.default_attack(loss_fn)
    for name, value in (("num_steps", num_steps), ("step_size", step_size), ("epsilon", epsilon)):
        if value is not None:
            setattr(attack, name, value)
    return attack


def perturb(profile, attack, model, x, target=None):
    """Adversarial inputs as the version's runner asked for them. `target` (true labels, untargeted attack)
    exists only where `perturb` takes it (the kit); elsewhere it raises `NotInVersion`."""
    if target is not None and not _get(profile, 'perturb_takes_target'):
        raise NotInVersion(f"the {_get(profile, 'name')} template's perturb(model, input) has no target")
    with runner_eval(model, _get(profile, 'perturb_after_eval')):
        if _get(profile, 'perturb_takes_target'):
            return attack.perturb(model, x, target)
        return attack.perturb(model, x)


def make_explainer(profile, sc, loss_fn):
    if _get(profile, 'explain') is None:
        raise NotInVersion(f"the {_get(profile, 'name')} template has no saliency method")
    factory = getattr(sc, "default_attention", None) or sc.GradAttention
    return factory(loss_fn)


def explain(profile, explainer, model, x):
    """The saliency map, the model put in eval mode first where that version's runner did so."""
    if _get(profile, 'explain') is None:
        raise NotInVersion(f"the {_get(profile, 'name')} template has no saliency method")
    with runner_eval(model, _get(profile, 'explain') == "after_eval"):
        return explainer.explain(model, x)


def transforms(profile, sc, train, img_size=128, normalize=None):
    """The student's train (`train=True`) or validation transform pipeline, built as the runner built it.

    `normalize` (2022-23 only) is the runner's `Normalize(mean, std)`; by default the sandbox's
    `custom_transforms.Normalize` with the ImageNet statistics."""
    fn = sc.get_train_transforms if train else sc.get_val_transforms
    if _get(profile, 'transforms_arg') == "img_size":
        return fn(img_size)
    if _get(profile, 'transforms_arg') == "normalize":
        if normalize is None:
            import custom_transforms  # the sandbox's compat module (the course's name)
            normalize = custom_transforms.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
        return fn(normalize)
    return fn()


def visualize(profile, sc, x, vis_output=None):
    """The student's `default_visfunction` image grid, called with the version's arguments."""
    if _get(profile, 'visfunction') == "grid":
        return sc.default_visfunction(x)
    if vis_output is None:
        return sc.default_visfunction(x)
    return sc.default_visfunction(x, vis_output=vis_output)
