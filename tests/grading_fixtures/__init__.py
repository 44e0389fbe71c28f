"""Submissions for the autograder's tests, generated from the kit's reference `student_code.py` (see
`variants.py`); nothing is stored here but the generator, so the fixtures follow the reference."""
