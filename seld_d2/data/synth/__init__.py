"""Synthetic SELD scenes in the STARSS23/STAIRS26 layout (SPEC §5): scene sampling, procedural
dry sources, em32 rendering (free field or AudibleLight), STAIRS26-style labels and 360° video.

Entry points: :func:`synthesize_split` (and ``tools/synthesize.py``), :class:`ClipSynthesizer`.
"""

from .generate import (
    Clip,
    ClipSynthesizer,
    SynthConfig,
    SynthesisError,
    clip_seed,
    sequence_name,
    synthesize_split,
)
from .labels import Annotation, LabelMaker, annotations_to_json
from .render import BackendUnavailable, make_renderer
from .scene import Event, Scene, SceneConfig, polyphony, sample_scene
from .sources import DrySourceLibrary, dry_source, procedural_source
from .video import VideoConfig, VideoRenderer, VisualObject

__all__ = [
    "Annotation",
    "BackendUnavailable",
    "Clip",
    "ClipSynthesizer",
    "DrySourceLibrary",
    "Event",
    "LabelMaker",
    "Scene",
    "SceneConfig",
    "SynthConfig",
    "SynthesisError",
    "VideoConfig",
    "VideoRenderer",
    "VisualObject",
    "annotations_to_json",
    "clip_seed",
    "dry_source",
    "make_renderer",
    "polyphony",
    "procedural_source",
    "sample_scene",
    "sequence_name",
    "synthesize_split",
]
