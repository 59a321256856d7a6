"""Torch network definitions (``nn.Module`` only; no I/O, no training loops)."""
