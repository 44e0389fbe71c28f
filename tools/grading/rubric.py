"""The graded items of SPEC section 4 (12 points + 2 bonus), with their time budgets and sandbox groups.

Every results.json lists every item below (or the `--parts` selection), in this order, even when the
submission cannot be imported.

Decisions (documented here because the SPEC leaves them open):

- Every item measures code the student writes, so the stripped release (all solution blocks replaced by
  `raise NotImplementedError`) scores exactly 0 (SPEC section 5). Given code alone earns nothing.
- 1b-i "SimpleNet trains end to end": `SimpleNet` itself is given code, so the item trains the given
  SimpleNet built with the student's `CustomConv2d` (`conv_op=CustomConv2d`, as `--use-custom-conv` does):
  the parameter count must be the given network's, a few SGD steps on a fixed batch must lower the loss,
  and the loss trajectory must equal the one of the same network on `nn.Conv2d` (float32 tolerance).
  (1b-ii is the float64 exactness check of outputs and gradients; 1b-i is the end-to-end training run with
  in-place ReLUs after every convolution and an optimizer.)
- 1b-iv "ResNet-18": the ResNet-18 path of `main.py` is kit code (torchvision's architecture with a fresh
  head; pretrained weights are not available offline while grading). The item grades the part of that path
  the student writes: torchvision's ResNet-18 (randomly initialized, seeded, random BatchNorm statistics)
  with every `nn.Conv2d` replaced by the student's `CustomConv2d` carrying the same weights must give the
  outputs (eval and train mode) and the gradients (input and every parameter) of the `nn.Conv2d` model.
  That exercises convolutions SimpleNet lacks (bias-free 1x1 stride-2 projections on odd grids, 3x3
  stride-2), i.e. `--use-resnet18 --use-custom-conv`.
- 2b is graded with a trusted reference `Attention` substituted for the student's inside the sandbox, so
  a bug in 2a does not cost 2b points twice.
- 3b is graded with a trusted recording FGSM attacker (not the student's `PGDAttack`), so 3b does not
  depend on 3a.
- Partial credit is given per component inside an item (listed in each item's message); forbidden-API use
  sets the item to 0 with the reason.
- Design items (1b-iii) are property checks computed inside the untrusted sandbox; all other items are
  compared, in the grading process, with reference outputs computed from the kit's own code.
"""
import collections

# budget_s: CPU seconds the item may use in the sandbox (times --timeout-scale)
Item = collections.namedtuple("Item", "number name max_score bonus group budget_s")

ITEMS = (
    Item("1a", "1a CustomConv2DFunction: forward and backward", 2.0, False, "conv", 40.0),
    Item("1b-i", "1b-i SimpleNet trains with your CustomConv2d", 1.0, False, "conv", 40.0),
    Item("1b-ii", "1b-ii SimpleNet: CustomConv2d equals nn.Conv2d", 1.0, False, "conv", 40.0),
    Item("1b-iv", "1b-iv ResNet-18 on your CustomConv2d", 1.0, False, "conv", 60.0),
    Item("1b-iii", "1b-iii default_cnn_model", 1.0, False, "cnn", 90.0),
    Item("2a", "2a Attention", 2.0, False, "vit", 40.0),
    Item("2b", "2b TransformerBlock, SimpleViT, default_vit_model", 2.0, False, "vit", 60.0),
    Item("3a", "3a PGDAttack, default_attack, GradAttention", 2.0, False, "adv", 60.0),
    Item("3b", "3b (bonus) adversarial_training_step", 2.0, True, "adv", 40.0),
)
# the order of results.json (ITEMS lists 1b-iv before 1b-iii only to keep each sandbox group together)
DISPLAY_ORDER = ("1a", "1b-i", "1b-ii", "1b-iii", "1b-iv", "2a", "2b", "3a", "3b")
BY_NUMBER = {item.number: item for item in ITEMS}
# sandbox groups: one child process each (torch imported once per child), heaviest first
GROUPS = ("conv", "cnn", "vit", "adv")
TOTAL = sum(item.max_score for item in ITEMS if not item.bonus)  # 12
BONUS = sum(item.max_score for item in ITEMS if item.bonus)  # 2

# sandbox phase budgets in CPU seconds (before --timeout-scale, which scales every budget covering student code);
# each phase also has a wall-clock cap of 2x its budget + 20 s (sandbox.Limits)
STARTUP_S = 180.0  # python + torch import, before any student code runs: not scaled
IMPORT_S = 30.0  # `import student_code`
GAP_S = 30.0  # loading the inputs / between two items
SUBMISSION_S = 480.0  # wall clock for a whole submission, whatever happens (below Gradescope's own timeout)


def ordered(numbers):
    """`numbers` sorted in the assignment's order (1a, 1b-i, ..., 3b)."""
    return sorted(numbers, key=DISPLAY_ORDER.index)


def parse_parts(text):
    """`--parts` value -> tuple of item numbers in assignment order. Accepts item numbers (`1a`, `1b-iii`),
    whole parts (`1`, `2`, `3`) and `1b` (all of 1b). Raises `ValueError` naming an unknown entry."""
    if text is None or not text.strip():
        return tuple(DISPLAY_ORDER)
    chosen = set()
    for raw in text.split(","):
        key = raw.strip().lower()
        if not key:
            continue
        if key in BY_NUMBER:
            chosen.add(key)
        elif key in ("1", "2", "3", "1b"):
            chosen.update(n for n in DISPLAY_ORDER if n.startswith(key))
        else:
            raise ValueError(f"unknown part {raw.strip()!r}; choose from {', '.join(DISPLAY_ORDER)} "
                             f"(or 1, 1b, 2, 3)")
    return tuple(ordered(chosen))


def groups_of(numbers):
    """`{group: [item numbers in group order]}` for the selected items, groups in `GROUPS` order."""
    out = collections.OrderedDict()
    for group in GROUPS:
        members = [item.number for item in ITEMS if item.group == group and item.number in numbers]
        if members:
            out[group] = members
    return out
