"""policy_node: a base policy (BC or diffusion, action chunks) controlling the robot.

Observations are built at each control tick by the as-of join the recorder uses. Chunk inference
runs in its own thread and is requested `lead_steps` ticks before the current chunk runs out, so
the control loop never waits on it (realtime clock). With `tick: observation` (the lockstep sim)
each new complete observation is one tick, and the loop waits for inference because the robot
does too; an enable acts from the first observation of the sim's next episode (control/lockstep.py).
Publishes /robot/command with /policy/base_action, /policy/residual and /policy/chunk_phase
on one stamp.
"""
from __future__ import annotations

import json
import threading
import time

import numpy as np
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String, UInt8MultiArray
from std_srvs.srv import SetBool

from robot_rl.config import ConfigError
from robot_rl.control.chunking import ChunkExecutor, ObservationHistory
from robot_rl.control.intervention import InterventionGate
from robot_rl.control.lockstep import EpisodeStartGate
from robot_rl.data.align import AsOfAligner
from robot_rl.data.recording import ACTION, CHUNK_PHASE, observation_values, stream_max_ages
from robot_rl.ros import convert, qos, topics
from robot_rl.ros.node import OK, WARN, RobotRLNode, run_node
from robot_rl.ros.streams import AlignerSink, subscribe_observations


class PolicyNode(RobotRLNode):
    def __init__(self):
        super().__init__("policy", "policy_node")
        p = self.params
        if not p.checkpoint:
            raise ConfigError("no base policy checkpoint given (set the 'checkpoint' parameter)",
                              "policy.params.checkpoint", self.profile.source)
        from robot_rl.policies.policy import load_policy

        try:
            self.policy = load_policy(p.checkpoint, self.profile)
        except (ValueError, FileNotFoundError, KeyError) as e:
            raise ConfigError(str(e), "policy.params.checkpoint", self.profile.source) from None
        self.dt = 1.0 / self.profile.robot.control_rate_hz
        self.lower = np.array([j.lower for j in self.profile.robot.joints])
        self.upper = np.array([j.upper for j in self.profile.robot.joints])
        self.joint_names = self.profile.robot.joint_names
        ages = {s: a for s, a in stream_max_ages(self.profile).items() if s != ACTION}
        self.sink = AlignerSink(AsOfAligner(ages))
        subscribe_observations(self, self.profile, self.sink)
        self.history = ObservationHistory(self.policy.obs_horizon)
        self.chunks = ChunkExecutor(self.dt, self.policy.exec_horizon, p.ensemble_k)
        self.command_pub = self.create_publisher(JointState, topics.ROBOT_COMMAND, qos.COMMAND)
        self.base_pub = self.create_publisher(JointState, topics.POLICY_BASE_ACTION, qos.RELIABLE)
        self.residual_pub = self.create_publisher(JointState, topics.POLICY_RESIDUAL, qos.RELIABLE)
        self.phase_pub = self.create_publisher(JointState, topics.POLICY_CHUNK_PHASE, qos.RELIABLE)
        self.create_service(SetBool, topics.POLICY_ENABLE, self.on_enable)
        self.residual = None
        if p.residual:
            from robot_rl.control.residual import ResidualRunner
            from robot_rl.rl.cpu import keep_freed_memory

            # every weights message allocates tens of MB (deserialise, copy, tensors); glibc would mmap and
            # unmap each, and the page faults cost ~20x the copies (bench/control.py: swap p95 at 23.6 MB)
            keep_freed_memory()

            try:
                self.residual = ResidualRunner(self.profile, self.policy.exec_horizon, p.rl_preset, p.seed,
                                               rl_config=p.rl_config, base_feature_dim=self.policy.feature_dim)
            except ConfigError as e:
                raise ConfigError(str(e), "policy.params.rl_config", self.profile.source) from None
            if p.residual_weights:
                self.load_residual(p.residual_weights)
            self.create_subscription(UInt8MultiArray, topics.LEARNER_WEIGHTS, self.on_weights, qos.LATCHED)
        self.gate = None
        if p.interventions:  # HIL: the teleop device takes over at the next tick while it intervenes
            self.gate = InterventionGate(max_age_s=3 * self.dt)
            self.create_subscription(JointState, topics.TELEOP_COMMAND, self.on_teleop, qos.RELIABLE)
            self.create_subscription(Bool, topics.TELEOP_INTERVENING, lambda m: self.gate.intervening(m.data),
                                     qos.RELIABLE)
        self.enabled = p.enabled
        if p.tick == "observation":  # only a lockstep sim waits for commands; its task state numbers episodes
            self.episode_gate = EpisodeStartGate(enabled_at_start=p.enabled)
            self.enabled_at = time.monotonic()
            self.create_subscription(String, topics.SIM_TASK_STATE, self.on_task_state, qos.RELIABLE)
        self.stats = {"ticks": 0, "commands": 0, "invalid_ticks": 0, "no_action_ticks": 0, "chunks": 0,
                      "dropped_ticks": 0}
        self.inference_ms: list[float] = []
        self.tick_ms: list[float] = []  # observation in -> command out, per published tick
        self.new_samples: dict[str, list[float]] = {"inference_ms": [], "tick_ms": []}  # since the last /diagnostics
        self.request: tuple[float, dict] | None = None
        self.request_ready = threading.Condition()
        self.chunk_done = threading.Condition()
        self.episode = self.tick_episode = 0
        self.start_worker(self.inference_loop, "inference")
        self.start_worker(self.observation_loop if p.tick == "observation" else self.timer_loop, "control")
        self.get_logger().info(f"policy {self.policy.__class__.__name__} from {p.checkpoint} "
                               f"(obs {self.policy.obs_horizon}, pred {self.policy.pred_horizon}, "
                               f"exec {self.policy.exec_horizon}), tick: {p.tick}, "
                               f"{'enabled' if self.enabled else 'waiting for /policy/enable'}")

    def on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self.episode += 1  # the control thread starts afresh (history, chunks) at its next tick
        if request.data and self.params.tick == "observation":
            with self.sink.complete:
                self.episode_gate.enabled()
                self.enabled_at = time.monotonic()
        self.enabled = request.data
        if self.gate is not None and request.data:
            self.gate.reset_episode()
        response.success, response.message = True, "enabled" if request.data else "disabled"
        return response

    # -- control thread -------------------------------------------------------------------------
    def timer_loop(self) -> None:
        next_tick = time.monotonic()
        while not self.stopping:
            next_tick += self.dt
            self.tick(time.time(), wait_for_chunk=False)
            self.wait(max(0.0, next_tick - time.monotonic()))

    def on_task_state(self, msg: String) -> None:
        state = json.loads(msg.data)
        if "episode" in state and "stamp" in state:
            with self.sink.complete:
                self.episode_gate.episode_seen(int(state["episode"]), float(state["stamp"]))
                self.sink.complete.notify_all()

    def observation_loop(self) -> None:
        """One tick per new complete observation (all streams stamped at or after it), while enabled,
        from the first observation of a sim episode this policy has not acted in yet."""
        last, gate = -np.inf, self.episode_gate

        def due() -> bool:
            return self.enabled and self.sink.newest_complete > last and gate.allows(self.sink.newest_complete)

        while not self.stopping:
            with self.sink.complete:
                self.sink.complete.wait_for(lambda: due() or self.stopping, timeout=0.1)
                t, go = self.sink.newest_complete, due()
                if go:
                    gate.acting()
                elif self.enabled and gate.armed and time.monotonic() - self.enabled_at > 2.0:
                    self.get_logger().info(f"enabled, waiting for {gate.waiting_for()}", throttle_duration_sec=5.0)
            if go:
                last = t
                self.tick(t, wait_for_chunk=True)

    def on_teleop(self, msg: JointState) -> None:
        try:
            self.gate.command(convert.joint_positions_from_msg(msg, self.joint_names))
        except ValueError as e:
            self.get_logger().warning(f"teleop command ignored: {e}", throttle_duration_sec=5.0)

    def tick(self, t: float, wait_for_chunk: bool) -> None:
        if not self.enabled:
            return
        started = time.perf_counter()
        if self.tick_episode != self.episode:  # enabled anew: forget the previous episode's history
            self.tick_episode = self.episode
            self.history.reset()
            self.chunks.reset()
            if self.residual is not None:
                self.residual.new_episode()
        self.stats["ticks"] += 1
        obs = self.sink.aligner.observe(t)
        if not obs.valid:
            self.stats["invalid_ticks"] += 1
            self.get_logger().warning(f"no valid observation: {obs.reason}", throttle_duration_sec=2.0)
            return
        self.history.push(observation_values(self.profile, obs.values))
        # Lockstep: the robot waits for us, so chunks run back to back, exactly exec_horizon actions
        # each (open loop from the episode start, as in training and as the residual's phase assumes).
        lead = 0 if wait_for_chunk else self.params.lead_steps
        waited = False
        if self.chunks.needs_chunk(t, lead):
            self.request_chunk(t, wait=wait_for_chunk)
            waited = wait_for_chunk
        picked = self.chunks.action_at(t)
        if picked is None and wait_for_chunk and self.tick_episode == self.episode:
            self.request_chunk(t, wait=True)
            picked = self.chunks.action_at(t)
            waited = True
        if self.tick_episode != self.episode:  # disabled while the chunk was computed: its episode is over
            self.stats["dropped_ticks"] += 1
            return
        if picked is None:
            self.stats["no_action_ticks"] += 1
            return
        action, phase = picked
        base = np.clip(action, self.lower, self.upper)
        residual = np.zeros_like(base)
        human = self.gate.override() if self.gate is not None else None
        if human is not None:  # the human drives; the residual records what they added to the base
            residual = np.clip(human, self.lower, self.upper) - base
            if self.residual is not None:
                self.residual.interrupted()
        elif self.residual is not None:  # every tick, even when no new chunk was computed
            current = {k: v[-1] for k, v in self.history.window().items()}
            if self.residual.wants_base_features:
                current[self.residual.features_key] = self.chunks.features()
            residual = self.residual.apply(current, base, phase, explore=self.params.explore)
        self.publish(t, base, residual, phase)
        if not waited:  # the control tick itself (a cached chunk), not the inference it waited for
            self.tick_ms.append((time.perf_counter() - started) * 1e3)
            del self.tick_ms[:-200]
            self.new_samples["tick_ms"].append(self.tick_ms[-1])

    def load_residual(self, path: str) -> None:
        """A fine-tuned residual from disk (deployment, evaluation); checked like learner weights."""
        from robot_rl.rl import read_residual_weights

        where = "policy.params.residual_weights"
        try:
            data, meta = read_residual_weights(path)
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(str(e), where, self.profile.source) from None
        if not self.residual.offer(data, meta):
            raise ConfigError(f"{path}: {self.residual.counters.last_reject_reason}", where, self.profile.source)
        self.get_logger().info(f"residual weights v{meta['version']} from {path}")

    def on_weights(self, msg: UInt8MultiArray) -> None:
        try:
            data, meta = convert.msg_to_weights(msg)
        except ValueError as e:
            data, meta = b"", {"error": str(e)}
        if self.residual.offer(data, meta):
            self.get_logger().info(f"residual weights v{meta['version']} (env step {meta.get('step')}) active")
        else:
            self.get_logger().warning(f"residual weights rejected: {self.residual.counters.last_reject_reason}",
                                   throttle_duration_sec=2.0)

    def publish(self, t: float, base: np.ndarray, residual: np.ndarray, phase: int) -> None:
        command = np.clip(base + residual, self.lower, self.upper)
        residual = command - base  # what was really added after clipping
        # the recorder joins the four messages of a tick by their common stamp, in any arrival order
        self.phase_pub.publish(convert.joint_state_msg([CHUNK_PHASE], [float(phase)], stamp=t))
        for pub, value in ((self.base_pub, base), (self.residual_pub, residual), (self.command_pub, command)):
            pub.publish(convert.joint_state_msg(self.joint_names, value, stamp=t))
        self.stats["commands"] += 1

    # -- inference thread -----------------------------------------------------------------------
    def request_chunk(self, t: float, wait: bool) -> None:
        with self.request_ready:
            if self.request is None:
                self.request = (t, self.history.window())
                self.request_ready.notify_all()
        if wait:
            with self.chunk_done:
                self.chunk_done.wait_for(lambda: self.request is None or self.stopping, timeout=30.0)

    def inference_loop(self) -> None:
        while not self.stopping:
            with self.request_ready:
                self.request_ready.wait_for(lambda: self.request is not None or self.stopping, timeout=0.1)
                job = self.request
            if job is None:
                continue
            t_obs, window = job
            episode = self.episode
            start = time.perf_counter()
            actions = self.policy.predict(window, seed=self.params.seed + self.stats["chunks"])
            features = self.policy.features(window).numpy() \
                if self.residual is not None and self.residual.wants_base_features else None
            self.inference_ms.append((time.perf_counter() - start) * 1e3)
            del self.inference_ms[:-200]
            self.new_samples["inference_ms"].append(self.inference_ms[-1])
            now = t_obs if self.params.tick == "observation" else time.time()
            if episode == self.episode:  # a chunk for an episode that was reset meanwhile is dropped
                self.chunks.add(t_obs, actions, now, features)
                self.stats["chunks"] += 1
            with self.chunk_done:
                self.request = None
                self.chunk_done.notify_all()

    def _take(self, key: str) -> list[float]:
        taken, self.new_samples[key] = self.new_samples[key], []  # a sample racing the swap may be lost, never sent twice
        return taken

    def diagnostics(self):
        lat = np.asarray(self.inference_ms) if self.inference_ms else np.zeros(1)
        values = {**self.stats, "enabled": str(self.enabled).lower(), "late_chunks": self.chunks.late_chunks,
                  **({f"weights_{k}": v for k, v in vars(self.residual.counters).items()} if self.residual else {}),
                  "skipped_actions": self.chunks.skipped, "inference_p50_ms": round(float(np.percentile(lat, 50)), 2),
                  "inference_p99_ms": round(float(np.percentile(lat, 99)), 2),
                  # every sample since the previous message, once (session reports' latency histograms)
                  **{k: json.dumps([round(x, 3) for x in self._take(k)[-500:]]) for k in self.new_samples},
                  **({"interventions": self.gate.episode_ticks, "intervention_ticks": self.gate.ticks}
                     if self.gate is not None else {})}
        level = WARN if self.stats["invalid_ticks"] or self.stats["no_action_ticks"] else OK
        return level, "enabled" if self.enabled else "disabled", values


def main(args=None) -> int:
    return run_node(PolicyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
