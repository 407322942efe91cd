"""STAIRS26 datasets: layout checks and Detectron2 registration (SPEC §1).

``register_stairs26(name, root, splits)`` registers a Detectron2 dataset whose records are one
per 100 ms frame::

    {"file_name": ".../frames_dev/<split>/<seq>/<seq>_0042.png", "height": 180, "width": 360,
     "image_id": "<split>/<seq>/42", "split", "sequence", "frame_index": 42,
     "wav_file": ".../mic_dev/<split>/<seq>.wav", "feature_file": ".../<seq>.npz",
     "annotations": [{"category_id", "instance_id", "distance" (cm, NaN when the file has none),
                      "segmentation": [float32 (K, 3) x/y/v arrays], "bbox", "bbox_mode",
                      "iscrowd"}, ...]}

Every annotation of the label file is a record annotation (the evaluator counts them all, as the
official one does). Those that train no instance have ``iscrowd: 1``: an annotation without map
(released STAIRS26 files may hold ``segmentation: []``; it has no ``bbox`` either) and a repeated
copy of an earlier one (same frame, instance, class and polygons, see
:func:`~seld_d2.data.labels.repeated_annotations`). What a split's files held that the project's
writers never write (those two, float coordinates, missing distances, empty polygons) is logged
once per split, one warning line per kind with the count.

Each clip is checked once (wav header, frame naming/count/size, label JSON); the resulting index
is cached under ``<root>/.seld_index/`` keyed by the sizes and modification times of every file it
read, so registering and loading a large split again takes seconds.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..acoustics.audio import SAMPLE_RATE, AudioError, check_wav
from ..acoustics.geometry import CANVAS_HEIGHT, CANVAS_WIDTH
from ..acoustics.visibility import FRAME_RATE
from ..utils.errors import DatasetError
from ..utils.io import atomic_open
from .classes import CLASS_COLORS, CLASS_NAMES
from .labels import Annotation, LabelError, LabelNotes, load_labels, repeated_annotations

logger = logging.getLogger(__name__)

INDEX_VERSION = 2
AUDIO_FORMATS = {"mic": ("mic_dev", 4), "eigen": ("eigen_dev", 32)}


class FrameError(DatasetError):
    """A problem with a clip's video frames; ``str(err)`` is ``"<path>: <problem>"``."""


@dataclass
class ClipIndex:
    """What the loader knows about one checked clip."""

    split: str
    sequence: str
    wav_file: str
    frames_dir: str
    num_frames: int
    label_file: str | None
    annotations: list[Annotation] = field(default_factory=list)
    repeated: set[int] = field(default_factory=set)  # indices of repeated copies (train once)
    notes: LabelNotes = field(default_factory=LabelNotes)  # what the label file held beyond our writers'


def label_path(root: Path, split: str, seq: str) -> Path | None:
    """``labels_dev/<split>/<seq>_std.json``, else ``<seq>.json``, else None."""
    for name in (f"{seq}_std.json", f"{seq}.json"):
        p = root / "labels_dev" / split / name
        if p.is_file():
            return p
    return None


def clip_wav(root: Path, split: str, seq: str, audio: str = "mic") -> Path:
    """``<root>/mic_dev/<split>/<seq>.wav`` (``eigen_dev`` for ``audio="eigen"``)."""
    return root / AUDIO_FORMATS[audio][0] / split / f"{seq}.wav"


def clip_frames_dir(root: Path, split: str, seq: str) -> Path:
    """``<root>/frames_dev/<split>/<seq>``, the folder of a clip's video frames."""
    return root / "frames_dev" / split / seq


def frame_file(frames_dir: str | os.PathLike, seq: str, k: int) -> str:
    """Path of frame k (zero-based) of a clip."""
    return os.path.join(frames_dir, f"{seq}_{k:04d}.png")


def frame_record(
    frames_dir: str | os.PathLike,
    split: str | None,
    seq: str,
    k: int,
    feature_file: str | os.PathLike | None = None,
) -> dict:
    """The fields of frame k's record that need no labels (training adds ``wav_file`` and
    ``annotations``): ``image_id`` is ``"<split>/<seq>/<k>"``, ``"<seq>/<k>"`` for a clip outside
    a split (``split`` None: a single clip given by its files)."""
    return {
        "file_name": frame_file(frames_dir, seq, k),
        "height": CANVAS_HEIGHT,
        "width": CANVAS_WIDTH,
        "image_id": f"{seq}/{k}" if split is None else f"{split}/{seq}/{k}",
        "split": split,
        "sequence": seq,
        "frame_index": k,
        "feature_file": None if feature_file is None else str(feature_file),
    }


def list_sequences(root: Path, split: str, audio: str = "mic") -> list[str]:
    """Every sequence with a wav or a label file in the split, sorted."""
    wav_dir = root / AUDIO_FORMATS[audio][0] / split
    names = {p.stem for p in wav_dir.glob("*.wav")}
    names |= {p.stem.removesuffix("_std") for p in (root / "labels_dev" / split).glob("*.json")}
    return sorted(names)


def check_frames(
    frames_dir: Path, seq: str, expected: int, tolerance: int = 1, wav: str | os.PathLike | None = None
) -> int:
    """Check a clip's frame folder: names ``<seq>_<k:04d>.png`` from 0 without gaps, a count
    within ``tolerance`` of the audio's frame count, 360x180 (first frame; others are resized
    with a warning when loaded). Returns the number of frames; raises :class:`FrameError`, or
    :class:`AudioError` naming ``wav`` (when given) if the audio is the shorter one."""
    if not frames_dir.is_dir():
        raise FrameError(frames_dir, "frame folder not found")
    pattern = re.compile(rf"^{re.escape(seq)}_(\d{{4,}})\.png$")
    indices, strays = [], []
    for entry in os.scandir(frames_dir):
        m = pattern.match(entry.name)
        if m:
            indices.append(int(m.group(1)))
        else:
            strays.append(entry.name)
    if strays:
        raise FrameError(
            frames_dir, f"unexpected file {sorted(strays)[0]!r} (frames are named {seq}_<k:04d>.png)"
        )
    if not indices:
        raise FrameError(frames_dir, "no frames")
    indices.sort()
    n = indices[-1] + 1
    if len(indices) != n:
        missing = sorted(set(range(n)) - set(indices))
        shown = ", ".join(os.path.basename(frame_file(frames_dir, seq, k)) for k in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise FrameError(frames_dir, f"missing {len(missing)} frame(s): {shown}{more}")
    if n - expected > tolerance and wav is not None:
        raise AudioError(wav, f"shorter than its clip: {expected} frames of audio (10 fps), {n} video frames")
    if abs(n - expected) > tolerance:
        raise FrameError(frames_dir, f"{n} frames, but the audio has {expected} (10 fps)")
    with Image.open(frame_file(frames_dir, seq, 0)) as im:
        if im.size != (CANVAS_WIDTH, CANVAS_HEIGHT):
            logger.warning("%s: frames are %dx%d, will be resized to 360x180", frames_dir, *im.size)
    return n


def load_frame(path: str | os.PathLike) -> np.ndarray:
    """An RGB frame as uint8 (180, 360, 3); other sizes are resized, with a warning."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (CANVAS_WIDTH, CANVAS_HEIGHT):
                logger.warning("%s: %dx%d frame resized to 360x180", path, *im.size)
                im = im.resize((CANVAS_WIDTH, CANVAS_HEIGHT), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise FrameError(path, "frame not found") from None
    except PermissionError:
        raise FrameError(path, "permission denied") from None
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, EOFError, zlib.error...
        raise FrameError(path, f"not a readable image ({type(err).__name__}: {err})") from None


def check_clip(
    root: Path, split: str, seq: str, audio: str = "mic", require_labels: bool = True
) -> ClipIndex:
    """Check one clip (wav header, frames, labels) and index it; raises a DatasetError."""
    channels = AUDIO_FORMATS[audio][1]
    wav = clip_wav(root, split, seq, audio)
    info = check_wav(wav, channels=channels, sample_rate=SAMPLE_RATE)
    audio_frames = math.ceil(info.num_samples / (SAMPLE_RATE // FRAME_RATE))
    frames_dir = clip_frames_dir(root, split, seq)
    n = check_frames(frames_dir, seq, audio_frames, wav=wav)
    labels = label_path(root, split, seq)
    notes = LabelNotes()
    if labels is None:
        if require_labels:
            raise LabelError(root / "labels_dev" / split / f"{seq}_std.json", "", "file not found")
        anns = []
    else:
        anns = load_labels(labels, num_frames=max(n, audio_frames), notes=notes)
    repeated = repeated_annotations(anns)
    if repeated:
        notes.add("duplicate", labels, n=len(repeated))
    label_file = str(labels) if labels else None
    return ClipIndex(split, seq, str(wav), str(frames_dir), n, label_file, anns, repeated, notes)


def _log_notes(split: str, clips: list[ClipIndex]) -> None:
    """One warning per kind of what the split's label files held beyond the project's writers."""
    notes = LabelNotes()
    for clip in clips:
        notes.update(clip.notes)
    for line in notes.lines():
        logger.warning("%s labels: %s", split, line)


def _fingerprint(root: Path, split: str, audio: str, seqs: list[str]) -> str:
    """Hash of everything the index of a split depends on (paths, sizes, mtimes, options)."""
    h = hashlib.sha256(f"v{INDEX_VERSION}|{root.resolve()}|{split}|{audio}".encode())
    for seq in seqs:
        for p in (
            clip_wav(root, split, seq, audio),
            clip_frames_dir(root, split, seq),
            root / "labels_dev" / split / f"{seq}_std.json",
            root / "labels_dev" / split / f"{seq}.json",
        ):
            try:
                st = p.stat()
                h.update(f"|{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
            except FileNotFoundError:
                h.update(f"|{p.name}:-".encode())
    return h.hexdigest()[:20]


def index_split(
    root: str | os.PathLike,
    split: str,
    *,
    audio: str = "mic",
    on_error: str = "skip",
    require_labels: bool = True,
    use_cache: bool = True,
    progress: bool = False,
) -> list[ClipIndex]:
    """Check and index every clip of a split.

    ``on_error="skip"`` logs a one-line warning per bad clip and keeps the others; ``"raise"``
    raises the first problem. The result is cached in ``<root>/.seld_index/`` under a key that
    changes with any file of the split, together with the bad clips' messages, which are logged
    again each time the cached index is used.
    """
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    root = Path(root)
    seqs = list_sequences(root, split, audio)
    if not seqs:
        raise FileNotFoundError(
            f"{root}: no clips in split {split!r} (looked in {AUDIO_FORMATS[audio][0]}/, labels_dev/)"
        )
    cache = root / ".seld_index" / f"{split}-{audio}-{_fingerprint(root, split, audio, seqs)}.pkl"
    if use_cache and cache.is_file() and on_error == "skip":
        try:
            with open(cache, "rb") as f:
                clips, bad = pickle.load(f)
            for message in bad:
                logger.warning("skipping clip: %s", message)
            _log_notes(split, clips)
            return clips
        except Exception:  # a damaged cache is rebuilt
            pass
    clips, bad = [], []
    iterator = seqs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(seqs, desc=f"indexing {split}", unit="clip")
    for seq in iterator:
        try:
            clips.append(check_clip(root, split, seq, audio, require_labels))
        except DatasetError as err:
            if on_error == "raise":
                raise
            logger.warning("skipping clip: %s", err)
            bad.append(str(err))
    if use_cache:
        with atomic_open(cache, "wb") as f:
            pickle.dump((clips, bad), f, protocol=pickle.HIGHEST_PROTOCOL)
    _log_notes(split, clips)
    return clips


def clip_records(clip: ClipIndex, feature_dir: str | os.PathLike | None = None) -> list[dict]:
    """One Detectron2 record per frame of a clip (frames without events have no annotations)."""
    from detectron2.structures import BoxMode

    by_frame: dict[int, list[tuple[Annotation, bool]]] = {}
    for i, ann in enumerate(clip.annotations):
        trains = bool(ann.polygons) and i not in clip.repeated
        by_frame.setdefault(ann.frame, []).append((ann, trains))
    feature_file = Path(feature_dir) / f"{clip.sequence}.npz" if feature_dir else None
    records = []
    for k in range(clip.num_frames):
        records.append(
            {
                **frame_record(clip.frames_dir, clip.split, clip.sequence, k, feature_file),
                "wav_file": clip.wav_file,
                "annotations": [
                    {
                        "category_id": a.category_id,
                        "instance_id": a.instance_id,
                        "distance": a.distance,
                        "segmentation": a.polygons,
                        **({"bbox": a.bbox(), "bbox_mode": BoxMode.XYXY_ABS} if a.polygons else {}),
                        "iscrowd": 0 if trains else 1,
                    }
                    for a, trains in by_frame.get(k, [])
                ],
            }
        )
    return records


def load_stairs26(
    root: str | os.PathLike,
    splits: str | list[str],
    *,
    feature_cache: str | os.PathLike | None = None,
    audio: str = "mic",
    on_error: str = "skip",
) -> list[dict]:
    """All frame records of the given splits (see the module docstring).

    ``feature_cache`` is the folder holding ``<split>/<seq>.npz`` feature files (default
    ``<root>/features_dev``).
    """
    root = Path(root)
    splits = [splits] if isinstance(splits, str) else list(splits)
    feature_root = Path(feature_cache) if feature_cache else root / "features_dev"
    records: list[dict] = []
    for split in splits:
        for clip in index_split(root, split, audio=audio, on_error=on_error, progress=True):
            records.extend(clip_records(clip, feature_root / split))
    return records


def register_stairs26(
    name: str,
    root: str | os.PathLike,
    splits: str | list[str],
    *,
    feature_cache: str | os.PathLike | None = None,
    audio: str = "mic",
    on_error: str = "skip",
) -> None:
    """Register a STAIRS26-layout dataset in Detectron2's DatasetCatalog and MetadataCatalog.

    The records are built lazily (on ``DatasetCatalog.get(name)``), from the cached index.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    splits = [splits] if isinstance(splits, str) else list(splits)
    DatasetCatalog.register(
        name,
        lambda: load_stairs26(root, splits, feature_cache=feature_cache, audio=audio, on_error=on_error),
    )
    MetadataCatalog.get(name).set(
        thing_classes=list(CLASS_NAMES),
        thing_colors=[tuple(c) for c in CLASS_COLORS],
        root=str(root),
        splits=splits,
        feature_cache=str(feature_cache or Path(root) / "features_dev"),
        evaluator_type="stairs26",
    )
