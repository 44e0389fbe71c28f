"""A version's score of one item, from the kit item's checks: what the version has, nothing for given code.

The item modules grade with checks `(label, points, ok, detail)` (an `ItemGrade`). For a version:

- checks that exercise something the version does not have are dropped (the untargeted attack outside the
  kit, `GradAttention` in 2024/2025, `TransformerBlock` where it was given code);
- every check belongs to one component of the version's item (`Profile.items[...].components`); a
  component whose stubs are unchanged (`stubs.unchanged_components`) earns nothing, whatever its checks say;
- each component earns its points in proportion to the points of its checks that passed; the item's score
  is their sum (for the kit, whose components carry the checks' own points, this is the kit's score).

`entry(profile, grade, source)` returns the results.json test entry (Gradescope format) of the item in
that version, or None when the version has no such item.
"""
from .stubs import unchanged_components

_MAX_OUTPUT = 8000


def component_of(profile, number, label):
    """The component of `profile`'s item `number` that the check `label` grades, or None (dropped)."""
    item = profile.item(number)
    if item is None or not item.components:
        return None
    names = [c.name for c in item.components]
    text = label.lower()
    if number == "3a":
        if "gradattention" in text or "saliency" in text:
            return "GradAttention" if "GradAttention" in names else None
        if "untargeted" in text and not profile.untargeted_graded:
            return None
        return "PGDAttack"
    if number == "2b":
        if "transformerblock" in text and "simplevit" not in text:
            return "TransformerBlock" if "TransformerBlock" in names else None
        return "SimpleViT"
    return names[0]


def _score_lines(profile, number, checks, stubbed):
    """`(score, lines)`: the version's score of the kept checks and one message line per check."""
    item = profile.item(number)
    per = {c.name: [0.0, 0.0] for c in item.components}  # earned, available (check points)
    kept = []
    for label, points, ok, detail in checks:
        comp = component_of(profile, number, label)
        if comp is None:
            continue
        if comp in stubbed:
            ok, detail = False, "still the template's code: nothing written here"
        per[comp][1] += points
        per[comp][0] += points if ok else 0.0
        kept.append((comp, label, points, ok, detail))
    weight = {c.name: (c.points / per[c.name][1] if per[c.name][1] else 0.0) for c in item.components}
    score = sum(weight[c.name] * per[c.name][0] for c in item.components)
    lines = []
    for comp, label, points, ok, detail in kept:
        worth = weight[comp] * points
        line = f"[{'pass' if ok else 'FAIL'} {worth if ok else 0:.3g}/{worth:.3g}] {label}"
        lines.append(line + (f": {detail}" if detail else ""))
    return round(min(score, item.max_score), 4), lines


def entry(profile, grade, source):
    """The results.json test entry of `grade` (an ItemGrade of the kit's item) graded as `profile`."""
    number = grade.item.number
    item = profile.item(number)
    if item is None:
        return None
    head = f"graded as the {profile.label}"
    base = {"name": item.name, "number": number, "max_score": item.max_score, "visibility": "visible"}
    if item.manual:
        return dict(base, score=0.0, status="failed",
                    output=f"{head}: this template's bonus has no function to call; the staff grade it from "
                           f"your write-up (0 automatic points)")
    stubbed = set(unchanged_components(profile, number, source))
    lines = [head]
    if grade.failure is not None or grade.forbidden:
        score = 0.0
        if grade.failure is not None:
            lines.append(f"0/{item.max_score:g}: {grade.failure}")
        if grade.forbidden:
            lines.append(f"0/{item.max_score:g}: forbidden API use - " + "; ".join(grade.forbidden))
    elif stubbed and len(stubbed) == len(item.components):
        score = 0.0
        lines.append(f"0/{item.max_score:g}: the code of this item is still the template's (nothing written "
                     f"in {', '.join(q.lstrip('=') for c in item.components for q in c.stubs)})")
    else:
        score, check_lines = _score_lines(profile, number, grade.components, stubbed)
        lines.extend(check_lines)
    lines.extend(grade.notes)
    output = "\n".join(lines)
    if len(output) > _MAX_OUTPUT:
        output = output[:_MAX_OUTPUT] + " ..."
    return dict(base, score=score, status="passed" if score >= item.max_score else "failed", output=output)
