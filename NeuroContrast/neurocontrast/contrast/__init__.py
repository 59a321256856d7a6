"""Virtual gadolinium: preprocessing, low-dose simulation, differential contrast and inference."""
