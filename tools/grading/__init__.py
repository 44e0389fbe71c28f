"""The autograder package (staff only): grades a submission's `student_code.py` against the kit's reference.

Entry point: `python tools/autograde.py SUBMISSION --results FILE` (see `tools/autograde.py`).

Modules:
- `rubric`: the graded items, their points, time budgets and the sandbox groups (decisions documented there).
- `submission`: finds `student_code.py` in a directory or zip; reads the kit's given files.
- `static`: trusted source (AST) checks in the grading process: syntax, forbidden APIs.
- `sandbox`: runs the untrusted child in a fresh interpreter with time/memory/CPU limits.
- `child`: the harness that runs INSIDE the sandbox (imports the submission, writes tensors).
- `harness`: trusted helper models/attackers shared by the child and the grading process.
- `checks_part1/2/3`: per item, the inputs, the reference outputs and the scoring (grading process).
- `compare`: tensor comparison with per-dtype tolerances and readable messages.
- `results`: Gradescope `results.json` and the batch CSV.
- `grade`: orchestration of one submission and of a batch.
"""
