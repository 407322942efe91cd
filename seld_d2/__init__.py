"""seld_d2."""
