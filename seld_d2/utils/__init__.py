"""Small helpers shared across seld_d2 (no Detectron2 imports)."""
