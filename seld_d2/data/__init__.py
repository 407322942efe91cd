"""Datasets: STAIRS26 label I/O, Detectron2 registration, and synthetic scene generation (``synth``)."""
