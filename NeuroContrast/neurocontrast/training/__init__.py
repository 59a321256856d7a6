"""Training: datasets, samplers, losses and loops behind ``neurocontrast train``."""
