#!/usr/bin/env bash
# Idempotent set-up of the project's virtual environment in .venv:
# torch/torchvision, Detectron2 0.6 (pb1-detectron2 sdist + our minimal op library),
# and seld_d2 in editable mode with its synth extra (AudibleLight 0.1.2 + trimesh 4.6.11, which pin
# numpy 2.0.2 and pillow 11.2.1 and build rlr-audio-propagation from source, about a minute) and
# its synth-video extra (pyvista, vtk, opencv for AudibleLight's video renderer); SELD_SYNTH=0
# leaves both out. A second run reuses everything already built.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${SELD_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}
D2_VERSION=0.6
D2_SHA256=5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29
# Detectron2 0.6 defaults ExtentTransform's interpolation to PIL.Image.LINEAR, which Pillow 10
# removed (it was always BILINEAR); the sdist is fixed here, before it is built, so importing
# detectron2.data works on current Pillow without any run-time alias.
D2_PILLOW_FIX='s/interp=Image\.LINEAR,/interp=Image.BILINEAR,/'
D2_PILLOW_FILE=detectron2/data/transforms/transform.py
STAMP=$VENV/.seld_d2_ready
SYNTH=${SELD_SYNTH:-1}
# The stamps record the inputs of the set-up; any change to them redoes the affected steps.
D2_WANT="d2=$D2_SHA256 ops=$(sha256sum third_party/d2_ops/vision.cpp | cut -c1-16) pillow=$(printf %s "$D2_PILLOW_FIX" | sha256sum | cut -c1-16)"
WANT="torch==2.14.1 torchvision==0.29.1 $D2_WANT setup=$(sha256sum setup.py | cut -c1-16) synth=$SYNTH"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi
log() { printf '[setup] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! "$VENV/bin/python" -c "import torch, torchvision, sys; sys.exit(0 if (torch.__version__.startswith('2.14.1') and torchvision.__version__.startswith('0.29.1')) else 1)" 2>/dev/null; then
  log "installing torch 2.14.1 + torchvision 0.29.1"
  $PIP install -q torch==2.14.1 torchvision==0.29.1
fi

# Build-time needs of the detectron2 sdist, and runtime needs of the project.
$PIP install -q wheel setuptools "numpy>=1.24" scipy soundfile tqdm tensorboard pillow matplotlib \
  fvcore==0.1.5.post20221221 "iopath>=0.1.7,<0.1.10" pycocotools yacs termcolor tabulate cloudpickle \
  "omegaconf>=2.1" "hydra-core>=1.1" av pytest ruff

D2_STAMP=$VENV/.detectron2_built
if ! "$VENV/bin/python" -c "import detectron2._C" 2>/dev/null || [ "$(cat "$D2_STAMP" 2>/dev/null)" != "$D2_WANT" ]; then
  BUILD=$ROOT/.build/detectron2
  mkdir -p "$BUILD"
  SDIST=$BUILD/pb1-detectron2-$D2_VERSION.tar.gz
  if [ ! -f "$SDIST" ]; then
    log "downloading pb1-detectron2==$D2_VERSION sdist"
    $PIP download -q --no-deps --no-binary :all: --no-build-isolation -d "$BUILD" pb1-detectron2==$D2_VERSION
  fi
  GOT=$(sha256sum "$SDIST" | cut -d' ' -f1)
  if [ "$GOT" != "$D2_SHA256" ]; then
    echo "error: $SDIST has sha256 $GOT, expected $D2_SHA256" >&2
    exit 1
  fi
  SRC=$BUILD/src
  rm -rf "$SRC" && mkdir -p "$SRC"
  tar -xzf "$SDIST" -C "$SRC" --strip-components=1
  mkdir -p "$SRC/detectron2/layers/csrc"
  cp third_party/d2_ops/vision.cpp "$SRC/detectron2/layers/csrc/vision.cpp"
  sed -i "$D2_PILLOW_FIX" "$SRC/$D2_PILLOW_FILE"
  if grep -q "Image\.LINEAR" "$SRC/$D2_PILLOW_FILE"; then
    echo "error: $D2_PILLOW_FILE still refers to PIL.Image.LINEAR after the fix" >&2
    exit 1
  fi
  log "building detectron2 (CPU op library, about a minute)"
  (cd "$SRC" && CUDA_VISIBLE_DEVICES= FORCE_CUDA=0 $PIP install -q --no-build-isolation --no-deps .)
  echo "$D2_WANT" > "$D2_STAMP"
fi

if [ "$SYNTH" = 1 ]; then
  # The extra's pins come from setup.py (hashed into the stamp above); torch is already satisfied.
  log "installing seld_d2 (editable) with the synth and synth-video extras (AudibleLight; about a minute the first time)"
  # Build isolation: rlr-audio-propagation (an sdist) brings its own build requirements.
  $PIP install -q -e ".[synth,synth-video]"
else
  log "installing seld_d2 (editable), without the synth extra (SELD_SYNTH=0)"
  $PIP install -q --no-build-isolation --no-deps -e .
fi
"$VENV/bin/python" -c "import seld_d2, detectron2; print('[setup] seld_d2 ready, detectron2', detectron2.__version__)"
echo "$WANT" > "$STAMP"
