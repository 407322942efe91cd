"""The 13 sound event classes of STARSS23 / DCASE 2026 Task 3 (SPEC §1), with display colours.

``CLASS_COLORS`` are 13 well-separated RGB colours (a categorical palette); they colour the
synthetic video's objects and Detectron2's ``thing_colors``.
"""

from __future__ import annotations

import re

CLASS_NAMES: tuple[str, ...] = (
    "Female speech",
    "Male speech",
    "Clapping",
    "Telephone",
    "Laughter",
    "Domestic sounds",
    "Walk/footsteps",
    "Door open/close",
    "Music",
    "Musical instrument",
    "Water tap",
    "Bell",
    "Knock",
)

NUM_CLASSES = len(CLASS_NAMES)

CLASS_COLORS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),  # Female speech: red
    (60, 180, 75),  # Male speech: green
    (255, 225, 25),  # Clapping: yellow
    (0, 130, 200),  # Telephone: blue
    (245, 130, 48),  # Laughter: orange
    (145, 30, 180),  # Domestic sounds: purple
    (70, 240, 240),  # Walk/footsteps: cyan
    (240, 50, 230),  # Door open/close: magenta
    (210, 245, 60),  # Music: lime
    (250, 190, 212),  # Musical instrument: pink
    (0, 128, 128),  # Water tap: teal
    (220, 190, 255),  # Bell: lavender
    (170, 110, 40),  # Knock: brown
)


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


# Accepted spellings: the official name in any case/punctuation ("walk_footsteps", "WalkFootsteps"),
# plus a few short forms used by sound libraries.
_ALIASES = {_key(n): i for i, n in enumerate(CLASS_NAMES)}
_ALIASES.update(
    {
        "female": 0,
        "male": 1,
        "clap": 2,
        "phone": 3,
        "laugh": 4,
        "domestic": 5,
        "footsteps": 6,
        "walk": 6,
        "door": 7,
        "instrument": 9,
        "water": 10,
        "watertap": 10,
        "knock": 12,
    }
)


def class_index(name: str | int) -> int:
    """Class id of a name (any case/punctuation, e.g. ``"Water tap"``, ``"water_tap"``), a short form
    (``"door"``) or a number (``3``, ``"03"``). Raises ``ValueError`` for anything else."""
    if isinstance(name, int) or (isinstance(name, str) and name.strip().isdigit()):
        idx = int(name)
        if 0 <= idx < NUM_CLASSES:
            return idx
        raise ValueError(f"class id {idx} is out of range 0-{NUM_CLASSES - 1}")
    key = _key(str(name))
    if key in _ALIASES:
        return _ALIASES[key]
    raise ValueError(
        f"unknown class {name!r}; use an id 0-{NUM_CLASSES - 1} or one of {', '.join(CLASS_NAMES)}"
    )
