"""The gymnasium adapter: a gymnasium env as the sim robot (robot_rl/sim/gym_adapter.py).

The adapter alone (reset/step, action bounds, the safety envelope, success rules, the scripted
expert), profile mistakes rejected with the field named, and `robot-rl collect` through the real
ROS graph (sim robot node on the gym profile, expert teleop, recorder) into a store that passes
`robot-rl store check`.
"""
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium import spaces

from robot_rl.config import ConfigError, load_profile
from robot_rl.config.nodes import SimRobotParams
from robot_rl.data.recording import STATE_KEY, store_layout
from robot_rl.policies.spec import default_obs_keys
from robot_rl.sim.gym_adapter import GymDriver, GymExpert, GymRobot, load_expert, run_expert_episodes

PROFILE_PATH = Path(__file__).resolve().parents[1] / "hardware" / "profiles" / "gym_reacher.yaml"
REACHER = load_profile(str(PROFILE_PATH))
LOCKSTEP = SimRobotParams(clock="lockstep", render=False)


def write_profile(tmp_path, mutate) -> str:
    data = yaml.safe_load(PROFILE_PATH.read_text())
    mutate(data)
    path = tmp_path / "gym.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def mountain_car(data) -> None:
    """MountainCarContinuous-v0: success = terminated without truncation (its info has no is_success)."""
    data["robot"]["joints"] = [{"name": "force", "lower": -1.0, "upper": 1.0, "max_velocity": 100.0}]
    data["cameras"] = []
    data["gym"] = {"env_id": "MountainCarContinuous-v0", "observation": ["position", "velocity"],
                   "expert": "robot_rl.sim.gym_experts:mountain_car_expert"}


# -- the adapter alone ----------------------------------------------------------------------------
def test_profile_maps_actions_to_joints_and_the_observation_to_obs_state():
    assert REACHER.robot.driver == "gymnasium" and REACHER.sim.task == "gym"
    assert len(REACHER.state_names) == 10 and REACHER.state_names[4] == "target_x"
    keys, attrs = store_layout(REACHER)
    assert keys[STATE_KEY].shape == (10,) and keys["action"].shape == (2,)
    assert keys["obs/camera_render"].shape == (64, 64, 3)
    assert {"name": "state", "shape": [10], "dtype": "float32", "rate_hz": 20.0} in attrs["streams"]
    assert default_obs_keys(keys) == ["obs/camera_render", "obs/joint_pos", STATE_KEY]
    assert STATE_KEY not in store_layout(load_profile("sim"))[0]  # other robots: no state stream


def test_lockstep_driver_steps_the_env_once_per_command_through_the_envelope(tmp_path):
    profile = load_profile(write_profile(tmp_path, lambda d: d["robot"]["joints"][0].update(max_velocity=2.0)))
    driver = GymDriver(profile, LOCKSTEP, stamp_origin=100.0)
    try:
        state = driver.reset(seed=7)
        assert state["episode"] == 1 and state["env_steps"] == 0 and len(state["obs"]) == 10
        assert driver.command(np.array([1.0, 5.0]))  # elbow beyond its bound: clipped
        samples = {s.kind: s for s in driver.step_control()}
        assert set(samples) == {"joint_state", "state", "task_state"}  # render off: no camera
        pos, vel, _ = samples["joint_state"].value
        np.testing.assert_allclose(pos, [0.1, 1.0])  # shoulder rate-limited to 2/s x 0.05 s; elbow clipped to 1
        np.testing.assert_allclose(vel, [2.0, 20.0])
        assert samples["task_state"].value["env_steps"] == 1 and samples["state"].value.shape == (10,)
        np.testing.assert_allclose(samples["state"].value, driver.robot.state())
        d = driver.diagnostics()
        assert d["position_clips"] == "1" and d["clips.elbow_torque"] == "1" and d["env"] == "Reacher-v5"
        assert not driver.command(np.array([np.nan, 0.0])) and driver.diagnostics()["holding"] == "true"
        stamps = [s.stamp for s in driver.step_control()] + [driver.reset()["stamp"]]
        assert stamps[-1] > stamps[0] > samples["state"].stamp  # strictly increasing, across resets too
        driver.set_estop(True)
        assert not driver.command(np.zeros(2)) and driver.diagnostics()["estop_active"] == "true"
    finally:
        driver.close()


def test_same_seed_same_episode_and_rendered_camera():
    a, b = GymRobot(REACHER, seed=3, render=True), GymRobot(REACHER, seed=3, render=False)
    try:
        for robot in (a, b):
            robot.reset(11)
            for _ in range(5):
                robot.step(np.array([0.3, -0.2]))
        np.testing.assert_array_equal(a.state(), b.state())
        frame = a.render("render")
        assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8 and frame.std() > 5
        with pytest.raises(KeyError, match="unknown camera"):
            a.render("front")
    finally:
        a.close()
        b.close()


def test_reacher_expert_succeeds_within_the_time_limit():
    results = run_expert_episodes(REACHER, episodes=30, seed=0, noise=1.0)
    wins = sum(r["success"] for r in results)
    assert wins >= 27, results  # measured: 100 % over 200 episodes at noise 0, 1 and 2 (~10 steps each)
    assert max(r["steps"] for r in results if r["success"]) <= 50


def test_terminated_without_truncation_is_success_and_a_done_env_freezes(tmp_path):
    profile = load_profile(write_profile(tmp_path, mountain_car))
    results = run_expert_episodes(profile, episodes=3, seed=0)
    assert all(r["success"] for r in results) and all(r["steps"] < 999 for r in results)

    def short(d):
        mountain_car(d)
        d["gym"]["max_episode_steps"] = 20  # too short to reach the flag: truncated, not a success

    robot = GymRobot(load_profile(write_profile(tmp_path, short)), seed=0, render=False)
    expert = GymExpert(robot.profile, noise=0.0)
    try:
        for _ in range(25):
            robot.step(expert.act(robot.action, robot.task_state()))
        state = robot.task_state()
        assert state["truncated"] and state["done"] and not state["success"] and state["env_steps"] == 20
        frozen = robot.state()
        robot.step(np.array([1.0]))
        np.testing.assert_array_equal(robot.state(), frozen)
        robot.reset(1)
        assert not robot.done and robot.episode_steps == 0
    finally:
        robot.close()


class GoalEnv(gym.Env):
    """A point moving to a goal, with a gymnasium-robotics-style Dict observation and info["is_success"]."""

    observation_space = spaces.Dict({"observation": spaces.Box(-1, 1, (2,)), "desired_goal": spaces.Box(-1, 1, (2,))})
    action_space = spaces.Box(-0.1, 0.1, (2,))

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.goal = np.zeros(2), self.np_random.uniform(-0.5, 0.5, 2)
        return self._obs(), {}

    def _obs(self):
        return {"observation": self.pos.astype(np.float32), "desired_goal": self.goal.astype(np.float32)}

    def step(self, action):
        self.pos = np.clip(self.pos + action, -1, 1)
        success = float(np.linalg.norm(self.goal - self.pos) < 0.05)
        return self._obs(), success - 1.0, False, False, {"is_success": success}


def goal_expert(obs):
    return np.clip(obs["desired_goal"] - obs["observation"], -0.1, 0.1)


def test_dict_observations_are_flattened_and_is_success_is_the_default_rule(tmp_path):
    if "RobotRlGoal-v0" not in gym.registry:
        gym.register(id="RobotRlGoal-v0", entry_point=GoalEnv, max_episode_steps=40)

    def goal(d):
        d["robot"]["joints"] = [{"name": n, "lower": -0.1, "upper": 0.1, "max_velocity": 10.0} for n in ("vx", "vy")]
        d["cameras"] = []
        d["gym"] = {"env_id": "RobotRlGoal-v0", "observation": 4, "expert": f"{__name__}:goal_expert"}

    profile = load_profile(write_profile(tmp_path, goal))
    assert profile.state_names == ["obs_0", "obs_1", "obs_2", "obs_3"]
    results = run_expert_episodes(profile, episodes=5, seed=0)
    assert all(r["success"] for r in results) and all(r["steps"] < 40 for r in results)
    robot = GymRobot(profile, seed=0, render=False)
    try:
        robot.reset(2)
        assert robot.state().shape == (4,) and isinstance(robot.task_state()["obs"], dict)
    finally:
        robot.close()


# -- profile mistakes ------------------------------------------------------------------------------
def config_error(make) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        make()
    return info.value


@pytest.mark.parametrize("mutate, field, words", [
    (lambda d: d["gym"].update(env_id="NoSuchEnv-v0"), "gym.env_id", "NoSuchEnv-v0"),
    (lambda d: d["gym"].update(env_id="CartPole-v1", kwargs={}), "gym.env_id", "only a 1-D Box"),
    (lambda d: d["gym"].update(kwargs={"no_such_argument": 1}), "gym.kwargs", "no_such_argument"),
    (lambda d: d["gym"].update(observation=9), "gym.observation", "has 10 values"),
    (lambda d: d["robot"]["joints"][1].update(upper=2.0), "robot.joints[1].upper",
     "joint elbow_torque: upper 2.0 differs from Reacher-v5's action bound 1.0"),
    (lambda d: d["robot"]["joints"].pop(), "robot.joints", "1 joints, but Reacher-v5 has 2 action dimensions"),
])
def test_env_mismatches_are_rejected_at_start_naming_the_field(tmp_path, mutate, field, words):
    profile = load_profile(write_profile(tmp_path, mutate))
    e = config_error(lambda: GymRobot(profile, render=False))
    assert e.field == field and words in e.problem and e.source == profile.source, str(e)


@pytest.mark.parametrize("expert, words", [
    ("robot_rl.sim.no_such_module:expert", "cannot import module 'robot_rl.sim.no_such_module'"),
    ("robot_rl.sim.gym_experts:no_such_expert", "has no attribute 'no_such_expert'"),
    ("robot_rl.sim.gym_experts:REACHER_L1", "not a callable"),
])
def test_bad_expert_is_rejected_naming_the_field(tmp_path, expert, words):
    profile = load_profile(write_profile(tmp_path, lambda d: d["gym"].update(expert=expert)))
    for make in (lambda: load_expert(profile), lambda: GymExpert(profile)):
        e = config_error(make)
        assert e.field == "gym.expert" and words in e.problem, str(e)


@pytest.mark.parametrize("mutate, field, words", [
    (lambda d: d["gym"].update(expert="robot_rl.sim.gym_experts.reacher_expert"), "gym.expert", "module:function"),
    (lambda d: d["gym"].update(kwargs={"render_mode": "human"}), "gym.kwargs.render_mode", "set by the adapter"),
    (lambda d: d["gym"].pop("observation"), "gym.observation", "required"),
    (lambda d: d.pop("gym"), "gym", "a 'gym:' section is required"),
    (lambda d: d["sim"].update(task="pick_place"), "sim.task", "task: gym"),
    (lambda d: d["robot"].update(state_rate_hz=100.0), "robot.state_rate_hz", "one observation per step"),
    (lambda d: d["cameras"][0].update(depth=True), "cameras[0].depth", "no depth"),
])
def test_bad_gym_sections_are_rejected_at_load(tmp_path, mutate, field, words):
    e = config_error(lambda: load_profile(write_profile(tmp_path, mutate)))
    assert e.field == field and words in e.problem and e.source.endswith("gym.yaml"), str(e)


def test_gym_section_needs_the_gymnasium_driver(tmp_path):
    sim = Path(load_profile("sim").source)
    data = yaml.safe_load(sim.read_text())
    data["gym"] = {"env_id": "Reacher-v5", "observation": 10}
    path = tmp_path / "sim_gym.yaml"
    path.write_text(yaml.safe_dump(data))
    e = config_error(lambda: load_profile(str(path)))
    assert e.field == "gym" and "needs robot.driver gymnasium" in e.problem


# -- through the ROS graph ---------------------------------------------------------------------------
EPISODES = 4


@pytest.mark.timeout(300)
def test_collect_expert_episodes_from_the_gym_robot_into_a_store(tmp_path, ros_domain):
    from robot_rl.data.store import Store

    store, log = tmp_path / "gym.zarr", tmp_path / "graph.log"
    run = lambda *args: subprocess.run([sys.executable, "-m", "robot_rl.cli.main", *args],  # noqa: E731
                                       capture_output=True, text=True, timeout=240)
    result = run("collect", "--profile", str(PROFILE_PATH), "--store", str(store), "--episodes", str(EPISODES),
                 "--max-seconds", "5", "--seed", "3", "--log", str(log))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + log.read_text()[-3000:]
    assert f"collected {EPISODES} episodes" in result.stdout
    check = run("store", "check", str(store), "--deep")
    assert check.returncode == 0, check.stdout + check.stderr

    s = Store.open(store)
    meta = s.episodes_meta()
    assert s.n_episodes == EPISODES and all(m["source"] == "demo" for m in meta)
    assert sum(m["success"] for m in meta) >= EPISODES - 1  # the expert reaches within ~10 steps
    assert s.attrs["profile"]["gym"]["env_id"] == "Reacher-v5"
    for i, m in enumerate(meta):
        ep = s.read_episode(i)
        n = m["length"]
        assert ep[STATE_KEY].shape == (n, 10) and ep["obs/camera_render"].shape == (n, 64, 64, 3)
        assert np.all(np.abs(ep["action"]) <= 1.0) and np.all(np.diff(ep["stamp"]) > 0)
        assert np.ptp(ep[STATE_KEY][:, 4:6], axis=0).max() < 1e-6  # one target per episode
        assert ep["reward"][:-1].sum() == 0 and ep["reward"][-1] == float(m["success"])
        if m["success"] and n > 1:  # the recorded distance shrank towards the success threshold
            dist = np.linalg.norm(ep[STATE_KEY][:, 8:10], axis=1)
            assert dist[-1] < dist[0]
