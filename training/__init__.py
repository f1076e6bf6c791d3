"""Training for actstream: datasets (synthetic videos, video folders, ActionFormer-format
feature sets), targets and losses, the training loop, evaluation metrics, checkpoints.

Checkpoints are written with `engine.checkpoint.save_checkpoint` (the detector reads them
with `engine.checkpoint.load_checkpoint`).
"""
