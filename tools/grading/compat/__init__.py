"""Compatibility modules placed inside the sandbox for submissions written against the course's templates.

The course's templates import names this kit spells differently or does not ship: `utils` (resize_image,
AverageMeter, ...), `custom_transforms` (the course's name for `custom_augment`, with its constructor
arguments), and in 2022-23 `custom_blocks.Attention` / `TransformerBlock` / `Mlp` (given code then).
These files re-implement those *given* pieces from their documented behaviour, on top of the kit's own
modules; nothing here computes an answer a student must write.

`sandbox_files(profile, given)` returns the files of a version's sandbox: the kit's given files plus the
version's compatibility modules (`Profile.compat_modules`). When a version gets the compat
`custom_blocks.py`, the kit's one moves beside it as `_kit_custom_blocks.py` (the compat module builds on it).
"""
import os

COMPAT_DIR = os.path.dirname(os.path.abspath(__file__))
KIT_BLOCKS_NAME = "_kit_custom_blocks.py"


def read(name):
    """The bytes of one compatibility module (`utils.py`, `custom_transforms.py`, `custom_blocks.py`)."""
    with open(os.path.join(COMPAT_DIR, name), "rb") as f:
        return f.read()


def sandbox_files(profile, given):
    """`{name in the sandbox: bytes}`: `given` (the kit's files, as `submission.read_kit` returns them) with
    `profile`'s compatibility modules added. `given` is not modified."""
    files = dict(given)
    for name in profile.compat_modules:
        if name == "custom_blocks.py" and "custom_blocks.py" in files:
            files[KIT_BLOCKS_NAME] = files["custom_blocks.py"]
        files[name] = read(name)
    return files
