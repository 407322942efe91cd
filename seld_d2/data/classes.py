"""The 13 sound event classes of STARSS23/STAIRS26 (category_id order) and their display colours."""

CLASS_NAMES = (
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

# Distinct RGB colours (0-255), one per class, for pictures and synthetic video objects.
CLASS_COLORS = (
    (230, 25, 75),
    (0, 130, 200),
    (255, 225, 25),
    (60, 180, 75),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
    (128, 0, 0),
)

NUM_CLASSES = len(CLASS_NAMES)
