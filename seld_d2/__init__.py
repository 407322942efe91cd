"""seld_d2: a Detectron2 extension for audiovisual sound event localisation and detection as
semantic acoustic imaging (DCASE 2026 Task 3).

Importing the package makes Detectron2 0.6 importable on current Pillow, and nothing more: it
is cheap, so tools that need no model (``evaluate.py --help``, ``seld_d2.acoustics``) do not pay
for Detectron2 and torchvision. seld_d2's components are registered in Detectron2's registries
when ``seld_d2.modeling`` is imported, which ``add_seld_config`` (the first step of building a
seld_d2 model from a config) does.
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

__version__ = "0.1.0"
__all__ = ["add_seld_config", "__version__"]


def __getattr__(name: str):
    # ``from seld_d2 import add_seld_config`` imports Detectron2 (and registers the model
    # components) only when asked for.
    if name == "add_seld_config":
        from .config import add_seld_config

        return add_seld_config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
