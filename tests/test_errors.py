"""Every project exception class survives a pickle round trip (DataLoader workers send errors to
the main process pickled), keeping its type, its arguments and its one-line message."""

import importlib
import inspect
import pickle
import sys
from pathlib import Path

import pytest

import seld_d2

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def project_exceptions() -> list[type]:
    package = Path(seld_d2.__file__).parent  # walked as files: acoustics/ has no __init__.py
    names = sorted(
        ".".join(("seld_d2", *p.relative_to(package).with_suffix("").parts)).removesuffix(".__init__")
        for p in package.rglob("*.py")
    )
    modules = [importlib.import_module(n) for n in names]
    sys.path.insert(0, str(TOOLS))
    modules += [importlib.import_module(p.stem) for p in sorted(TOOLS.glob("*.py"))]
    found = {}
    for mod in modules:
        for _, obj in inspect.getmembers(mod, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == mod.__name__:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


EXCEPTIONS = project_exceptions()


def test_the_known_classes_are_found():
    names = {c.__name__ for c in EXCEPTIONS}
    assert {"AudioError", "LabelError", "FrameError", "MetricError", "WriteError", "StopTraining"} <= names


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda c: c.__name__)
def test_pickle_round_trip(cls):
    params = [
        p
        for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    args = [f"/data/x/{p.name}.wav" if "path" in p.name else f"the {p.name}" for p in params] or ["one line"]
    err = cls(*args)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls and str(back) == str(err) and back.args == err.args
    assert vars(back) == vars(err)
    assert "\n" not in str(err)
