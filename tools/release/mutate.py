"""Apply one planted bug (`mutant_list.Mutant`) to the reference `student_code.py` text (pure functions).

The substitution is searched only inside the solution blocks of the mutant's function (`where`), must
match there exactly once, and the result must still parse; otherwise `MutantError` says why (a mutant
that silently stopped applying after an edit of the reference would inflate the kill rate).
"""
import ast

from . import markers


class MutantError(ValueError):
    """The mutant does not apply exactly once inside its function's solution blocks."""


def block_spans(source, where):
    """`[(start, end)]` character offsets of the bodies of the solution blocks of `where`."""
    blocks = markers.parse_blocks(source)
    qualname = "" if where == "<module>" else where
    chosen = [b for b in blocks if b.qualname == qualname]
    if not chosen:
        raise MutantError(f"no solution block in {where}")
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    return [(offsets[b.begin], offsets[b.end - 1]) for b in chosen]  # lines begin+1 .. end-1


def apply(source, mutant):
    """Return the mutated source; raises `MutantError` unless `mutant.old` occurs exactly once."""
    hits = []
    for start, end in block_spans(source, mutant.where):
        body = source[start:end]
        i = body.find(mutant.old)
        while i != -1:
            hits.append(start + i)
            i = body.find(mutant.old, i + 1)
    if len(hits) != 1:
        raise MutantError(f"mutant {mutant.name}: {mutant.old!r} occurs {len(hits)} times in the solution "
                          f"blocks of {mutant.where} (must be exactly once)")
    at = hits[0]
    mutated = source[:at] + mutant.new + source[at + len(mutant.old):]
    if mutated == source:
        raise MutantError(f"mutant {mutant.name} changes nothing")
    try:
        ast.parse(mutated)
    except SyntaxError as exc:
        raise MutantError(f"mutant {mutant.name} does not parse: {exc}") from None
    return mutated
