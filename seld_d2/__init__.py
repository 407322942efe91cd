"""seld_d2: a Detectron2 extension for audiovisual sound event localisation and detection as
semantic acoustic imaging (DCASE 2026 Task 3).

Importing the package is cheap, so tools that need no model (``evaluate.py --help``,
``seld_d2.acoustics``) do not pay for Detectron2 and torchvision. seld_d2's components are
registered in Detectron2's registries when ``seld_d2.modeling`` is imported, which
``add_seld_config`` (the first step of building a seld_d2 model from a config) does.
"""

__version__ = "0.1.0"
__all__ = ["add_seld_config", "__version__"]


def __getattr__(name: str):
    # ``from seld_d2 import add_seld_config`` imports Detectron2 (and registers the model
    # components) only when asked for.
    if name == "add_seld_config":
        from .config import add_seld_config

        return add_seld_config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
