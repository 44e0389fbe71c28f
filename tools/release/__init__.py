"""Staff-only helpers of the release builder (`tools/make_release.py`) and the mutation suite
(`tools/mutants.py`): solution-marker stripping, file selection, deterministic zips, and the checks that
prove a release holds no answers.

Import it with `tools/` on `sys.path` (as the two scripts do): `from release import markers`.
"""
