"""Pretexts that learn from video with its sound: correspondence, synchronisation, localisation."""
