"""The base class of the project's input-file errors (no Detectron2, no numpy imports)."""

from __future__ import annotations

import os


class DatasetError(ValueError):
    """A dataset file that cannot be used (wav, video frame, label file); ``str(err)`` is
    ``"<path>: <problem>"``, one line. ``AudioError``, ``FrameError`` and ``LabelError`` derive
    from it, so ``except DatasetError`` catches any of them."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path, self.problem = os.fspath(path), problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # pickle (loader workers) rebuilds it from its own arguments
        return type(self), (self.path, self.problem)
