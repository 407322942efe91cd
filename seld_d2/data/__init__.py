"""Datasets: STAIRS26 I/O, Detectron2 registration, synthetic scenes."""
