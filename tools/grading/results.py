"""Item verdicts, Gradescope's `results.json` and the batch CSV (trusted grading process).

`ItemGrade` collects an item's components (`add(label, points, ok, detail)`), an item-wide failure
(`fail(reason)`: every component 0) and forbidden-API findings (`forbid(reason)`: the item scores 0);
`to_test()` renders one entry of Gradescope's `tests` list. The grading process writes results.json
last, atomically (temp file + rename), from its own data only.

Staff-only information (isolation level, review flags, oddities of the upload, forbidden operators seen,
the sandbox log) goes to `extra_data.staff` (Gradescope's field for data not shown to students) and, in
batch mode, to the CSV's status column; never into a student-visible `output`. Scores in the CSV are
written in one format (`fmt_score`: `0`, `1.5`, `14`).
"""
import csv
import json
import os
import tempfile

from . import rubric

MAX_MESSAGE = 4000  # characters of one item's message


def _clip(text, limit=MAX_MESSAGE):
    text = str(text)
    return text if len(text) <= limit else text[:limit - 20] + " ... (truncated)"


class ItemGrade:
    """The verdict of one rubric item, built component by component."""

    def __init__(self, number):
        self.item = rubric.BY_NUMBER[number]
        self.components = []  # (label, points, ok, detail)
        self.failure = None
        self.forbidden = []
        self.notes = []

    def add(self, label, points, ok, detail=""):
        """One component worth `points`, earned when `ok`; `detail` explains a failure (or a pass)."""
        self.components.append((label, float(points), bool(ok), detail))

    def fail(self, reason):
        """The whole item failed (no outputs, import error, timeout...): score 0 with `reason`."""
        self.failure = reason

    def forbid(self, reason):
        """Forbidden-API use: the item scores 0, with `reason`."""
        if reason not in self.forbidden:
            self.forbidden.append(reason)

    def rescale(self, max_score):
        """Worth `max_score` instead of the item's default points (a course's choice for an optional part):
        every component scaled by the same factor."""
        if max_score != self.item.max_score and self.item.max_score > 0:
            factor = max_score / self.item.max_score
            self.components = [(label, points * factor, ok, detail) for label, points, ok, detail in self.components]
            self.item = self.item._replace(max_score=float(max_score))
        return self

    def note(self, text):
        """An extra line for the message (no effect on the score)."""
        self.notes.append(text)

    @property
    def score(self):
        if self.failure is not None or self.forbidden:
            return 0.0
        earned = sum(points for _, points, ok, _ in self.components if ok)
        return round(min(earned, self.item.max_score), 4)

    def message(self):
        lines = []
        if self.failure is not None:
            lines.append(f"0/{self.item.max_score:g}: {self.failure}")
        if self.forbidden:
            lines.append(f"0/{self.item.max_score:g}: forbidden API use - " + "; ".join(self.forbidden))
        for label, points, ok, detail in self.components:
            mark = "pass" if ok else "FAIL"
            line = f"[{mark} {points if ok else 0:g}/{points:g}] {label}"
            if detail:
                line += f": {detail}"
            lines.append(line)
        lines.extend(self.notes)
        return _clip("\n".join(lines))

    def to_test(self):
        score = self.score
        return {
            "name": self.item.name,
            "number": self.item.number,
            "score": score,
            "max_score": self.item.max_score,
            "status": "passed" if score >= self.item.max_score else "failed",
            "visibility": "visible",
            "output": self.message(),
        }


def failed_everywhere(numbers, reason):
    """`ItemGrade`s for `numbers`, each failed with `reason` (e.g. the submission does not import)."""
    grades = []
    for number in numbers:
        grade = ItemGrade(number)
        grade.fail(reason)
        grades.append(grade)
    return grades


MAX_STAFF_LINES = 200  # per list of the staff section (the sandbox log of a restarted child can be long)


def _bounded_staff(staff):
    """The staff section with every list cut to its last `MAX_STAFF_LINES` entries, strings to 1000 chars."""
    out = {}
    for key, value in dict(staff or {}).items():
        if isinstance(value, list):
            value = [_clip(v, 1000) if isinstance(v, str) else v for v in value[-MAX_STAFF_LINES:]]
        out[key] = value
    return out


def build_results(grades, execution_time, notes=(), staff=None):
    """Gradescope's results dict from a list of `ItemGrade` (any order; listed in assignment order)."""
    grades = sorted(grades, key=lambda g: rubric.ALL_ORDER.index(g.item.number))
    tests = [g.to_test() for g in grades]
    total = round(sum(t["score"] for t in tests), 4)
    regular = sum(t["score"] for g, t in zip(grades, tests) if not g.item.bonus)
    bonus = sum(t["score"] for g, t in zip(grades, tests) if g.item.bonus)
    max_regular = sum(g.item.max_score for g in grades if not g.item.bonus)
    max_bonus = sum(g.item.max_score for g in grades if g.item.bonus)
    summary = f"Score {regular:g}/{max_regular:g}"
    if max_bonus:
        summary += f" + bonus {bonus:g}/{max_bonus:g}"
    summary += f" (total {total:g}); graded in {execution_time:.1f} s."
    summary = "\n".join([summary] + [_clip(n, 1000) for n in notes])
    return {
        "score": total,
        "execution_time": round(float(execution_time), 2),
        "output": summary,
        "visibility": "visible",
        "stdout_visibility": "visible",
        "tests": tests,
        "extra_data": {"staff": _bounded_staff(staff)},
    }


def write_json_atomic(path, obj):
    """Write `obj` as JSON to `path` via a temp file in the same directory and `os.replace` (so a file the
    submission planted there is simply replaced)."""
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".results-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def csv_header(numbers):
    return ["name", "total"] + list(numbers) + ["status"]


def fmt_score(value):
    """A score as the CSV writes it: `0`, `0.25`, `1.5`, `14` (never `0.0`); '' for None."""
    if value is None or value == "":
        return ""
    text = f"{round(float(value), 4):.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def csv_row(name, results, numbers, status):
    by_number = {t["number"]: t["score"] for t in results.get("tests", [])}
    return ([name, fmt_score(results.get("score", 0))] + [fmt_score(by_number.get(n)) for n in numbers]
            + [status])


def write_csv(path, header, rows):
    """Write the batch CSV (atomically, like results.json)."""
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".grades-", suffix=".csv", dir=folder)
    with os.fdopen(fd, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
