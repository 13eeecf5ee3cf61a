"""Torch building blocks the first-party adapter plugins share, and adapter checkpoints."""
