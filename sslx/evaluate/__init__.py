"""Evaluation of pretrained backbones, run as separate processes from a workdir."""
