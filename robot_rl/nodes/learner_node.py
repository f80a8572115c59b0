"""learner_node: trains the residual asynchronously (robot_rl.rl.learner) and streams its weights.

Follows the store for newly committed episodes (demos and the robot's rollouts), trains at the
enforced update-to-data ratio (it throttles instead of running ahead), publishes the residual's
weights on /learner/residual_weights (latched: a policy node that starts late gets the newest) every
`publish_every` updates, checkpoints atomically and resumes exactly. On another machine than the
robot it only needs DDS reachability and the store's path (e.g. a network mount).
"""
from __future__ import annotations

import time

from std_msgs.msg import UInt8MultiArray

from robot_rl.config import ConfigError
from robot_rl.ros import convert, qos, topics
from robot_rl.ros.node import OK, WARN, RobotRLNode, run_node

IDLE_WAIT_S = 0.05


class LearnerNode(RobotRLNode):
    def __init__(self):
        super().__init__("learner", "learner_node")
        p = self.params
        if not p.base_checkpoint:
            raise ConfigError("no base checkpoint given (set 'base_checkpoint')", "learner.params.base_checkpoint",
                              self.profile.source)
        from robot_rl.policies.policy import load_policy
        from robot_rl.rl.config import config_from_dict, load_config, preset
        from robot_rl.rl.cpu import configure_cpu
        from robot_rl.rl.learner import Learner, LearnerError

        configure_cpu(threads=p.threads)
        try:
            base = load_policy(p.base_checkpoint, self.profile)
            cfg = load_config(p.config) if p.config else preset(p.preset)
            cfg = config_from_dict({**_as_dict(cfg), "chunk_length": base.exec_horizon,
                                    "base_obs_horizon": base.obs_horizon})
            self.learner = Learner(p.store.replace("{profile}", self.profile.name), base, cfg, p.run_dir,
                                   profile=self.profile)
        except (ValueError, KeyError, LearnerError) as e:
            raise ConfigError(str(e), "learner.params", self.profile.source) from None
        self.weights_pub = self.create_publisher(UInt8MultiArray, topics.LEARNER_WEIGHTS, qos.LATCHED)
        self.published_version = -1
        self.publishes = 0
        self.publish()  # the zero residual (or the resumed one) right away
        self.start_worker(self.loop, "learner")
        s = self.learner.status()
        self.get_logger().info(f"learner {'resumed' if s['resumed'] else 'started'}: {s['demo_size']} demo / "
                               f"{s['online_size']} online transitions, preset {p.preset}")

    def loop(self) -> None:
        since_publish = 0
        while not self.stopping:
            self.learner.ingest()
            done = self.learner.train(max_updates=min(50, self.params.publish_every))
            since_publish += done
            if since_publish >= self.params.publish_every:
                self.publish()
                since_publish = 0
            if time.monotonic() - self.learner.last_checkpoint > self.params.checkpoint_every_s:
                self.learner.checkpoint()
            if done == 0:
                self.wait(IDLE_WAIT_S)  # throttled: wait for new data instead of running ahead
        self.learner.checkpoint()

    def publish(self) -> None:
        data, meta = self.learner.weights()
        if meta["version"] == self.published_version:
            return
        self.weights_pub.publish(convert.weights_to_msg(data, meta))
        self.published_version = meta["version"]
        self.publishes += 1

    def diagnostics(self):
        status = self.learner.status()
        status.update({"weight_version": self.published_version, "publishes": self.publishes})
        waiting = status["env_steps"] == 0
        return (WARN if waiting else OK), ("waiting for rollouts" if waiting else "training"), status

    def shutdown(self) -> None:
        super().shutdown()
        self.learner.close()


def _as_dict(cfg) -> dict:
    from robot_rl.config import to_dict

    return to_dict(cfg)


def main(args=None) -> int:
    return run_node(LearnerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
