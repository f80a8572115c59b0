"""Golden regression: fixed tiny BC and diffusion checkpoints (tests/golden/, made by
tests/golden/make_golden.py) on a fixed input must give the stored features, action chunks, UNet
outputs and checkpoint hashes. A failure means the numerics (or the hash definition, which keys
cached base actions) changed: if intended, regenerate with make_golden.py and say so."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from robot_rl.policies.checkpoint import checkpoint_hash
from robot_rl.policies.policy import load_policy

GOLDEN = Path(__file__).parent / "golden"
ATOL = 1e-4


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    torch.set_num_threads(1)
    return {k: v.numpy() for k, v in load_file(str(GOLDEN / "reference.safetensors")).items()}


def inputs(ref) -> dict[str, np.ndarray]:
    return {k[len("input."):]: v for k, v in ref.items() if k.startswith("input.")}


@pytest.mark.parametrize("name", ["bc", "diffusion"])
def test_checkpoint_hash_is_stable(name):
    assert checkpoint_hash(GOLDEN / name) == json.loads((GOLDEN / "hashes.json").read_text())[name]


@pytest.mark.parametrize("name", ["bc", "diffusion"])
def test_features(ref, name):
    policy = load_policy(GOLDEN / name)
    np.testing.assert_allclose(policy.features(inputs(ref)).numpy(), ref[f"{name}.features"], atol=ATOL, rtol=0)


def test_bc_actions(ref):
    policy = load_policy(GOLDEN / "bc")
    np.testing.assert_allclose(policy.predict(inputs(ref)), ref["bc.actions"], atol=ATOL, rtol=0)
    one = {k: v[1] for k, v in inputs(ref).items()}  # unbatched window = row 1 of the batch
    np.testing.assert_allclose(policy.predict(one), ref["bc.actions"][1], atol=ATOL, rtol=0)


def test_diffusion_unet(ref):
    policy = load_policy(GOLDEN / "diffusion")
    feats = torch.from_numpy(ref["diffusion.features"])
    x = torch.from_numpy(ref["diffusion.eps_input"])
    for key in (k for k in ref if k.startswith("diffusion.eps.t")):
        t = int(key.rsplit("t", 1)[1])
        with torch.no_grad():
            out = policy.model.unet(x, torch.full((2,), t), feats).numpy()
        np.testing.assert_allclose(out, ref[key], atol=ATOL, rtol=0, err_msg=key)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("steps", [1, 4, 10])
def test_diffusion_actions(ref, seed, steps):
    policy = load_policy(GOLDEN / "diffusion")
    got = policy.predict(inputs(ref), seed=seed, steps=steps)
    np.testing.assert_allclose(got, ref[f"diffusion.actions.seed{seed}.steps{steps}"], atol=ATOL, rtol=0)
