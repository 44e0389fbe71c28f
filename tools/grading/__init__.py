"""The autograder package (staff only): grades a submission's `student_code.py` against the kit's reference.

Entry point: `python tools/autograde.py SUBMISSION --results FILE` (see `tools/autograde.py`).

Two rules: the untrusted process sees nothing it may not see, and produces only raw outputs; every verdict
is computed in the trusted grading process.

Modules:
- `protocol`: what parent and child share (status words, isolation levels, output limits, dataclasses).
- `rubric`: the graded items (derived from `items/`), their points, time budgets and sandbox groups.
- `items/`: one module per rubric item: its inputs, what the child runs, the reference, the scoring.
- `submission`: finds `student_code.py` in a folder or zip (and what is odd about the upload); reads the
  kit's given files.
- `static`: trusted source checks: decoding as Python does, syntax, forbidden APIs, review flags.
- `sandbox`: runs the untrusted child under bubblewrap (or a dedicated uid), with time/memory limits.
- `child`: the harness that runs INSIDE the sandbox (imports the submission, writes raw outputs).
- `childlib`: helpers the child uses (models, the recording attacker, the 2b stand-in); no answers.
- `outputs`: loads the child's files safely and validates every tensor before use.
- `compare`: tensor comparison with per-dtype tolerances and readable messages.
- `results`: Gradescope `results.json` (with a staff-only section) and the batch CSV.
- `grade`: orchestration of one submission and of a batch.
"""
