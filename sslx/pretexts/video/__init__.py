"""Video pretext tasks: inputs from ``batch["video"]``, (B, T, H, W, 3) RGB frames in [0, 1]."""
