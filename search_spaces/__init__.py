"""What a sweep searches and with what defaults.

- ``defaults``: per-dataset defaults (teacher and student architectures, training recipe, validation
  size);
- ``profiles``: the sweep profiles (``smoke``, ``fast``, ``paper``), which fix the architectures, the
  recipe, the scoring runs per method and the trials per cell;
- ``alpha_space``: the search space of alpha and tau (``AlphaSpace``) and the alpha designs that pick
  each cell's trials (enqueued points, the alpha = 0 baseline first, then a seeded Optuna sampler).
"""
