"""Which item module grades item N of a version, and the version's entries in results.json.

The kit's item modules (`tools/grading/items/`) grade every version where the template's interface is the
kit's (1a, 1b-*, 2a: same names and signatures). Where a course version differs, a module of this package
takes over, in the same item protocol (`NUMBER`, `GROUP`, `REQUIRES`, `inputs`, `run`, `expected`,
`score`): 2b (`vit_behaviour`: the ViT judged by behaviour) and 3a (`pgd_behaviour`: `perturb(model,
input)` and saliency as the version's runner called them). The kit's 3b has no counterpart in the course
templates (manual). `VersionedGrade` renders an item's grade with the version's points
(`scoring.entry`) for `results.build_results`.
"""
import collections

from .. import rubric
from ..results import ItemGrade
from . import adapters, pgd_behaviour, scoring, vit_behaviour

# names each course version's item needs in student_code.py (the kit's REQUIRES where not listed)
_COURSE_REQUIRES = {
    "2b": ("SimpleViT", "default_vit_model"),
    "3a": ("PGDAttack", "default_attack"),
}


class CourseItem:
    """A kit item graded the way a course version needs (item protocol of tools/grading/items)."""

    def __init__(self, profile, number, impl):
        kit = rubric.MODULES[number]
        spec = profile.item(number)
        self.NUMBER, self.TITLE, self.POINTS, self.BONUS = number, spec.name, spec.max_score, spec.bonus
        self.GROUP, self.BUDGET_S = kit.GROUP, kit.BUDGET_S
        requires = _COURSE_REQUIRES.get(number, kit.REQUIRES)
        if number == "3a" and profile.explain is not None:
            requires = requires + ("GradAttention",)
        self.REQUIRES = requires
        self.profile, self.impl = profile, impl
        self.run = impl.run
        self.cache_key = f"{profile.name}:{number}"

    def inputs(self, ref):
        if self.impl is pgd_behaviour:
            return pgd_behaviour.inputs(adapters.calls(self.profile))
        return self.impl.inputs()

    def expected(self, ref, inp):
        return {}  # the references are computed in `score` from the inputs and the child's own weights

    def score(self, inp, exp, out):
        grade = ItemGrade(self.NUMBER)
        if not isinstance(out, dict) or (out.get("error") and len(out) == 1):
            grade.fail(str(out.get("error")) if isinstance(out, dict) else "no results came back")
            return grade
        for label, points, ok, detail in self.impl.checks(inp, out):
            grade.add(label, points, ok, detail)
        return grade


_IMPLS = {"2b": vit_behaviour, "3a": pgd_behaviour}
_CACHE = {}


def module_for(profile, number):
    """The item module grading `number` for `profile`."""
    if profile.name == "kit" or number not in _IMPLS:
        return rubric.MODULES[number]
    key = (profile.name, number)
    if key not in _CACHE:
        _CACHE[key] = CourseItem(profile, number, _IMPLS[number])
    return _CACHE[key]


def graded_numbers(profile, numbers):
    """The items of `numbers` that run in the sandbox for `profile` (the version has them, not manual)."""
    if profile.name == "kit":  # the kit's own API: every item it grades, the optional Part 4 included
        return tuple(numbers)
    return tuple(n for n in numbers if profile.item(n) is not None and not profile.item(n).manual)


_VItem = collections.namedtuple("VItem", "number name max_score bonus")


class VersionedGrade:
    """An item's grade rendered with the version's points (duck-types ItemGrade for build_results)."""

    def __init__(self, profile, grade, source):
        spec = profile.item(grade.item.number)
        self.grade, self.profile, self.source = grade, profile, source
        self.item = _VItem(spec.number, spec.name, spec.max_score, spec.bonus)

    def to_test(self):
        return scoring.entry(self.profile, self.grade, self.source)


def versioned(profile, grades, source, numbers):
    """`grades` (ItemGrade per graded number) as the version's entries, manual items added, in `numbers`."""
    by_number = {g.item.number: g for g in grades}
    out = []
    for n in numbers:
        spec = profile.item(n)
        if spec is None:
            continue
        grade = by_number.get(n)
        if grade is None:  # a manual item: an empty grade, rendered by scoring.entry
            grade = ItemGrade(n)
        out.append(VersionedGrade(profile, grade, source))
    return out
