"""seld_d2: a Detectron2 extension for audiovisual sound event localisation and detection as
semantic acoustic imaging (DCASE 2026 Task 3).

Importing the package makes Detectron2 0.6 importable on current Pillow and registers every
seld_d2 component in Detectron2's registries.
"""

import warnings

import PIL.Image

# Detectron2 0.6 refers to PIL.Image.LINEAR, removed in Pillow 10; it was always BILINEAR.
# This must run before anything imports detectron2.
if not hasattr(PIL.Image, "LINEAR"):
    PIL.Image.LINEAR = PIL.Image.BILINEAR

# Detectron2 0.6 scripts a few helpers with torch.jit.script, which current torch deprecates
# with a FutureWarning at import; it says nothing about seld_d2 and would clutter every tool.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

from . import modeling  # noqa: E402, F401  (registers the model components)
from .config import add_seld_config  # noqa: E402  (after the Pillow alias)

__version__ = "0.1.0"
__all__ = ["add_seld_config", "__version__"]
