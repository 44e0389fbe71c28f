"""Which parts a course ships: the optional Part 4 and its points (pure functions on text; staff tool).

The reference holds every part. Optional parts sit between whole-line markers, in Python and in Markdown:

    # BEGIN OPTIONAL PART 4            <!-- BEGIN OPTIONAL PART 4 -->
    ...                                ...
    # END OPTIONAL PART 4              <!-- END OPTIONAL PART 4 -->

`select_text(text, parts)` drops every optional region whose part is not in `parts` (markers included) and,
for the parts that ship, only the two marker lines; the solution markers inside are left to
`markers.strip_source`. A whole file belongs to an optional part when one of its first lines is
`# OPTIONAL PART 4` (its public and hidden tests, `requirements-oracles.txt`); `file_part` finds it.
The handout writes Part 4's points as `@PART4_POINTS@` (the total) and `@4a_POINTS@` ... (per item).

The course's choice lives in one file at the kit's top level, `course_parts.json` (`CONFIG`):
`{"parts": ["1", "2", "3"], "part4_points": {"4a": 1.0, ...}}`. The staff repository's copy holds the
defaults (Parts 1-3; Part 4's points if shipped); `make_release.py --parts 1,2,3,4 --part4-points X` writes the
release's and the bundle's copy, which the grader and the students' points summary read.
"""
import json
import os
import re

CONFIG = "course_parts.json"
REQUIRED = ("1", "2", "3")
OPTIONAL = ("4",)
PART4_ITEMS = ("4a", "4b", "4c", "4d")
_MARK = re.compile(r"^[ \t]*(?:#|<!--)[ \t]*(?P<kind>BEGIN|END) OPTIONAL PART (?P<part>\d)[ \t]*(?:-->)?[ \t]*$")
_FILE_MARK = re.compile(r"^#[ \t]*OPTIONAL PART (?P<part>\d)\b")


class PartsError(ValueError):
    """A bad `--parts` / `--part4-points` value or malformed optional-part markers."""


def parse_parts(text):
    """`"1,2,3,4"` -> `("1", "2", "3", "4")`; Parts 1-3 are required, Part 4 is optional."""
    chosen = [p.strip() for p in (text or "").split(",") if p.strip()]
    unknown = [p for p in chosen if p not in REQUIRED + OPTIONAL]
    if unknown:
        raise PartsError(f"--parts: unknown part(s) {', '.join(unknown)}; choose from 1, 2, 3, 4")
    missing = [p for p in REQUIRED if p not in chosen]
    if missing:
        raise PartsError(f"--parts: Parts 1-3 are the assignment's core and always ship (missing {', '.join(missing)})")
    return tuple(sorted(set(chosen)))


def split_points(total):
    """Part 4's `total` points split evenly over its items: `{"4a": total / 4, ...}`."""
    if not (total > 0) or total != total or total == float("inf"):
        raise PartsError(f"--part4-points must be a positive number, got {total}")
    return {item: total / len(PART4_ITEMS) for item in PART4_ITEMS}


def load_config(root):
    """The kit's `course_parts.json` (`{"parts": [...], "part4_points": {...}}`); Parts 1-3 if absent."""
    path = os.path.join(root, CONFIG)
    if not os.path.isfile(path):
        return {"parts": list(REQUIRED), "part4_points": {}}
    with open(path, encoding="utf-8") as fh:
        config = json.load(fh)
    config["parts"] = list(parse_parts(",".join(config.get("parts", REQUIRED))))
    config["part4_points"] = {k: float(v) for k, v in config.get("part4_points", {}).items()}
    return config


def config_text(parts, part4_points):
    return json.dumps({"parts": list(parts), "part4_points": part4_points}, indent=1, sort_keys=True) + "\n"


def select_text(text, parts, filename="student_code.py"):
    """`text` with the optional regions of parts outside `parts` removed and the markers of the others
    dropped; every other line byte for byte. Raises `PartsError` on unbalanced or nested markers."""
    out, open_ = [], None
    for i, line in enumerate(text.splitlines(keepends=True), start=1):
        m = _MARK.match(line.rstrip("\r\n"))
        if m is None:
            if open_ is None or open_[1] in parts:
                out.append(line)
            continue
        if m["kind"] == "BEGIN":
            if open_ is not None:
                raise PartsError(f"{filename}:{i}: BEGIN OPTIONAL PART {m['part']} inside the region opened at "
                                 f"line {open_[0]}")
            open_ = (i, m["part"])
        else:
            if open_ is None or open_[1] != m["part"]:
                raise PartsError(f"{filename}:{i}: END OPTIONAL PART {m['part']} without its BEGIN")
            open_ = None
    if open_ is not None:
        raise PartsError(f"{filename}:{open_[0]}: BEGIN OPTIONAL PART {open_[1]} is never closed")
    return "".join(out)


def optional_parts_in(text):
    """The optional parts that have a region in `text`."""
    return sorted({m["part"] for line in text.splitlines() for m in [_MARK.match(line)] if m})


def file_part(path):
    """The optional part a whole file belongs to (`# OPTIONAL PART 4` in its first 5 lines), or `None`."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = [fh.readline() for _ in range(5)]
    except OSError:
        return None
    for line in head:
        m = _FILE_MARK.match(line)
        if m:
            return m["part"]
    return None


def fill_points(text, part4_points):
    """The handout with `@PART4_POINTS@` and `@4a_POINTS@` ... replaced by the configured points."""
    def fmt(x):
        return f"{x:g}"

    text = text.replace("@PART4_POINTS@", fmt(sum(part4_points.values())))
    for item, points in part4_points.items():
        text = text.replace(f"@{item}_POINTS@", fmt(points))
    return text
