"""Base policies (BC, diffusion) with action chunking: encoders, normaliser, models, checkpoints,
training (`robot-rl train-base`) and the inference API (`robot_rl.policies.policy.load_policy`).
See docs/policies.md."""
