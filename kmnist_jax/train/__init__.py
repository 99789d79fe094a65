"""Gradient training: optimizers, augmentation, the jitted steps, checkpoints
and the loop."""
