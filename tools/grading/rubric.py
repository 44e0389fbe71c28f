"""The graded items of SPEC section 4 (12 points + 2 bonus), derived from the item modules (`items/`), with
the sandbox phase budgets.

Every results.json lists every item (or the `--parts` selection) in `DISPLAY_ORDER`, even when the
submission cannot be imported.

Decisions (documented here because the SPEC leaves them open; details in each item module):

- Every item measures code the student writes, so the stripped release scores exactly 0. Given code alone
  earns nothing.
- 1b-i trains the given SimpleNet built with the student's `CustomConv2d`; 1b-ii compares it with
  `nn.Conv2d` in float64; 1b-iv swaps the student's `CustomConv2d` into torchvision's ResNet-18. All three,
  like 1a, forbid convolution routines (`CustomConv2d = nn.Conv2d` earns nothing).
- 2b is graded with a stand-in for `Attention` (childlib.TokenMixer) on both sides, so a 2a bug does not
  cost 2b points twice and no 2a answer enters the sandbox.
- 3b is graded with the grader's own gradient-free recording attacker, so 3b does not depend on 3a.
- Partial credit per component inside an item; forbidden-API use sets the item to 0 with the reason.
- Every verdict, 1b-iii's property checks included, is computed in the grading process from the raw
  outputs of the sandbox.
"""
import collections

from . import items as item_modules

Item = collections.namedtuple("Item", "number name max_score bonus group budget_s")

def _item(m):
    return Item(m.NUMBER, m.TITLE, float(m.POINTS), bool(m.BONUS), m.GROUP, float(m.BUDGET_S))


ITEMS = tuple(_item(m) for m in item_modules.ITEMS)
# the optional Part 4 (graded when the kit's course_parts.json ships it; POINTS are defaults, the course's
# points come from course_parts.json, see grade.Kit)
OPTIONAL_ITEMS = tuple(_item(m) for m in item_modules.OPTIONAL_ITEMS)
MODULES = item_modules.BY_NUMBER
# the order of results.json (ITEMS lists 1b-iv before 1b-iii only to keep each sandbox group together)
DISPLAY_ORDER = ("1a", "1b-i", "1b-ii", "1b-iii", "1b-iv", "2a", "2b", "3a", "3b")
OPTIONAL_ORDER = ("4a", "4b", "4c", "4d")
ALL_ORDER = DISPLAY_ORDER + OPTIONAL_ORDER
BY_NUMBER = {item.number: item for item in ITEMS + OPTIONAL_ITEMS}
# sandbox groups: one child process each (torch imported once per child), heaviest first
GROUPS = tuple(dict.fromkeys(item.group for item in ITEMS + OPTIONAL_ITEMS))
TOTAL = sum(item.max_score for item in ITEMS if not item.bonus)  # 12
BONUS = sum(item.max_score for item in ITEMS if item.bonus)  # 2

# sandbox phase budgets in CPU seconds (before --timeout-scale, which scales every budget covering student
# code); each phase also has a wall-clock cap of 2x its budget + 20 s (sandbox.Limits)
STARTUP_S = 180.0  # python + torch import, before any student code runs: not scaled
IMPORT_S = 30.0  # `import student_code`
GAP_S = 30.0  # between two items


def ordered(numbers):
    """`numbers` sorted in the assignment's order (1a, 1b-i, ..., 3b)."""
    return sorted(numbers, key=ALL_ORDER.index)


def parse_parts(text):
    """`--parts` value -> tuple of item numbers in assignment order. Accepts item numbers (`1a`, `1b-iii`),
    whole parts (`1`, `2`, `3`) and `1b` (all of 1b). Raises `ValueError` naming an unknown entry."""
    if text is None or not text.strip():
        return tuple(DISPLAY_ORDER)
    chosen = set()
    parts = sorted({n[0] for n in ALL_ORDER})  # whole parts: "1", "2", "3", "4" (optional)
    for raw in text.split(","):
        key = raw.strip().lower()
        if not key:
            continue
        if key in BY_NUMBER:
            chosen.add(key)
        elif key in parts or key == "1b":
            chosen.update(n for n in ALL_ORDER if n.startswith(key))
        else:
            raise ValueError(f"unknown part {raw.strip()!r}; choose from {', '.join(ALL_ORDER)} "
                             f"(or {', '.join(parts)}, 1b)")
    return tuple(ordered(chosen))


def groups_of(numbers):
    """`{group: [item numbers in group order]}` for the selected items, groups in `GROUPS` order."""
    out = collections.OrderedDict()
    for group in GROUPS:
        members = [item.number for item in ITEMS + OPTIONAL_ITEMS if item.group == group and item.number in numbers]
        if members:
            out[group] = members
    return out
