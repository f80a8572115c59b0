"""Reward classifier (no ROS): a binary success classifier on a profile's observations, trained from
the store's labelled episodes (`robot-rl train-reward`), used by the episode manager instead of a
human or the sim's ground truth (`label: classifier`).

    from robot_rl.reward.checkpoint import load_classifier
    clf = load_classifier("runs/reward", profile)   # refuses another setup's classifier
    p = clf.probability(obs)                         # one frame, store keys/units -> P(success)
    detector = clf.detector()                        # fires after M consecutive frames >= threshold

Modules: config (typed settings and the labelling rule), dataset (frames from the store, split by
episode), model (encoder + head), metrics (per-frame / per-episode precision and recall, threshold
choice), detector (the firing rule), train (the loop), checkpoint (safetensors + JSON, profile check).
Only `detector` is imported by the session loop, so it stays free of torch.
"""
