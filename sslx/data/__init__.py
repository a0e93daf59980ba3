"""Input pipelines: sources (sample, folder, TFDS), host image ops, grain pipelines."""
