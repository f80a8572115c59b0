"""Recorded data: the zarr store (schema v1) and its episode writer, time alignment, training samplers.

store.py (Store, repair, check) · episode_writer.py (EpisodeWriter) · schema.py (KeySpec, StoreError,
layout) · align.py (AsOfAligner) · sampler.py (SequenceSampler). Nothing is imported here so that
`robot_rl.data.align` stays importable without zarr.
"""
