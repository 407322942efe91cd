"""Training engine: the Detectron2 trainer, parameter groups and epoch hooks."""
