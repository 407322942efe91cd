"""seld_d2: a Detectron2 extension for audiovisual SELD as semantic acoustic imaging."""

from setuptools import find_packages, setup

setup(
    name="seld_d2",
    version="0.1.0",
    description=(
        "Detectron2 extension for DCASE 2026 Task 3: UpLAM acoustic features + RGB into a "
        "19-channel Mask R-CNN with energy-map, full-map and distance heads"
    ),
    packages=find_packages(include=["seld_d2", "seld_d2.*"]),
    python_requires=">=3.10",
    # torch/torchvision and detectron2 are installed by tools/setup_env.sh (detectron2 is not on
    # PyPI; see README), so they are not listed here.
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "soundfile>=0.12",
        "tqdm>=4.60",
        "tensorboard>=2.10",
        "pillow>=9",
        "matplotlib>=3.6",
        "av>=12",  # PyAV: frame extraction from the STARSS23 videos
        "librosa>=0.10",  # the mel16 band centres (SPEC §3)
        "threadpoolctl>=3",  # BLAS thread limits (seld_d2.utils.threads)
    ],
    extras_require={
        "synth": ["audiblelight==0.1.2", "trimesh==4.6.11"],  # the versions the backend is tested with
        # AudibleLight's 360° video renderer (--video-renderer audiblelight), which does not declare
        # them; with "synth". tools/setup_env.sh installs both (SELD_SYNTH=0: neither).
        "synth-video": ["pyvista==0.49.1", "vtk==9.7.1", "opencv-python-headless==5.1.0.95"],
        "dev": ["pytest>=7", "ruff>=0.5"],
    },
)
