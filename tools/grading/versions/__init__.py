"""Template versions of the assignment: which version a submission was written against, its rubric, its
stubs and how its runner called each piece.

- `profiles`: the table (`PROFILES`, one `Profile` per version: kit, 2022-23, 2024, 2025).
- `detect`: `detect(source_text) -> Profile` from the submission's own definitions.
- `stubs`: `is_unchanged_stub(profile, item, source)`, `unchanged_components(...)`: no points for given code.
- `adapters`: per-version calls (`perturb`, `explain`, `transforms`, `visualize`), self-contained.
- `scoring`: a version's score of an item from the kit item's checks (`entry`).
- `vit_behaviour`, `pgd_behaviour`: the course versions' 2b and 3a in the item protocol of `items/`.
- `items`: which item module grades item N of a version; the version's results.json entries
  (used by `grade.grade_submission`, which also places the version's `compat` modules in the sandbox).
- `astnorm`: normalized-AST helpers shared by the above.

Adding a version: see the README section "Template versions".
"""
from .detect import detect, detect_with_reasons
from .profiles import ORDER, PROFILES, Profile
from .stubs import is_unchanged_stub, unchanged_components

__all__ = ["ORDER", "PROFILES", "Profile", "detect", "detect_with_reasons", "is_unchanged_stub",
           "unchanged_components"]
