"""`robot-rl up`: real node processes, stopped cleanly on Ctrl-C / SIGTERM or when one dies;
the lockstep clock advances exactly one control period per command."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sensor_msgs.msg import JointState

from robot_rl.config import load_profile
from robot_rl.ros import convert, qos, topics
from robot_rl.ros.graph import GraphRunner

pytestmark = pytest.mark.timeout(180)
PROFILE = load_profile("sim")


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


@pytest.fixture
def up(probe):
    """`robot-rl up sim` as a child process; killed with its nodes whatever the test does."""
    probe.watch(topics.JOINT_STATES, JointState, qos.SENSOR)
    proc = subprocess.Popen([sys.executable, "-m", "robot_rl.cli.main", "up", "sim"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert probe.wait_count(topics.JOINT_STATES, 5, timeout=90), "sim graph never published joint states"
        nodes = children(proc.pid)
        assert len(nodes) == len(PROFILE.nodes_for("robot"))
        yield proc, nodes
    finally:
        if proc.poll() is None:
            proc.kill()  # the nodes get SIGTERM from the kernel (PR_SET_PDEATHSIG)
            proc.communicate(timeout=30)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_up_stops_every_node_cleanly(up, sig):
    proc, nodes = up
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert not any(alive(pid) for pid in nodes), "a node process outlived robot-rl up"
    assert "[sim_robot]" in out  # logs streamed with the node's prefix


def test_up_stops_the_graph_when_a_node_dies(up):
    proc, nodes = up
    os.kill(nodes[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "node 'sim_robot' exited with status -9; stopped the graph" in err
    assert "warning: node 'sim_robot' ended with status -9 before the graph was stopped" in err  # named at stop


def test_nodes_do_not_outlive_a_killed_runner(up):
    proc, nodes = up
    proc.kill()  # SIGKILL: the runner gets no chance to clean up
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in nodes) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in nodes), "a node was orphaned by a killed runner"


def test_probe_waits_for_another_nodes_subscription(probe, ros_domain):
    """What `robot-rl eval` waits for before its first reset: the policy node subscribed to the sim's
    task state (a publisher's match count cannot show another node's subscription)."""
    import rclpy
    from std_msgs.msg import String

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain)
    other = rclpy.create_node("listener", context=context)
    try:
        assert not probe.wait_subscribed(topics.SIM_TASK_STATE, "listener", timeout=0.5)
        other.create_subscription(String, topics.SIM_TASK_STATE, lambda msg: None, qos.RELIABLE)
        assert probe.wait_subscribed(topics.SIM_TASK_STATE, "listener", timeout=10)
        assert not probe.wait_subscribed(topics.SIM_TASK_STATE, "someone_else", timeout=0.3)
    finally:
        other.destroy_node()
        context.try_shutdown()


def test_lockstep_clock_advances_one_control_period_per_command_within_the_episode_budget(probe):
    from std_srvs.srv import Trigger

    probe.watch(topics.JOINT_STATES, JointState, qos.sensor_subscription(100))
    runner = GraphRunner(PROFILE, overrides={"sim_robot": {"clock": "lockstep", "episode_steps": "6"}}, out=None).start()
    try:
        pub = probe.node.create_publisher(JointState, topics.ROBOT_COMMAND, qos.COMMAND)
        assert probe.wait_matched(pub, timeout=60), runner.log("sim_robot")
        assert probe.wait_for(lambda: probe.node.count_publishers(topics.JOINT_STATES) > 0, timeout=20)
        # no command, no time: only the start-up observation, re-sent (same stamp) for readers that
        # matched after it went out, so a lost observation cannot stall a lockstep graph
        assert probe.wait_count(topics.JOINT_STATES, 2, timeout=10), runner.log("sim_robot")
        (start,) = {a.stamp for a in probe.arrivals[topics.JOINT_STATES]}
        q = [j.home for j in PROFILE.robot.joints]

        def steps() -> list[float]:
            return sorted({a.stamp for a in probe.arrivals[topics.JOINT_STATES]} - {start})

        for i in range(6):
            pub.publish(convert.joint_state_msg(PROFILE.robot.joint_names, q))
            assert probe.wait_for(lambda: len(steps()) >= 1 + i, timeout=10)
        stamps = steps()
        period = 1.0 / PROFILE.robot.control_rate_hz
        assert [round(b - a, 6) for a, b in zip(stamps, stamps[1:])] == [period] * 5
        # the budget (6) is spent: further commands are refused until a reset, not stepped
        for _ in range(3):
            pub.publish(convert.joint_state_msg(PROFILE.robot.joint_names, q))
        assert not probe.wait_for(lambda: len(steps()) > 6, timeout=1.5)
        reset = probe.node.create_client(Trigger, topics.ROBOT_RESET)
        assert reset.wait_for_service(timeout_sec=20)
        future = reset.call_async(Trigger.Request())
        assert probe.wait_for(lambda: future.done(), timeout=20) and future.result().success
        assert probe.wait_for(lambda: len(steps()) == 7, timeout=10)  # the reset's own observation
        pub.publish(convert.joint_state_msg(PROFILE.robot.joint_names, q))
        assert probe.wait_for(lambda: len(steps()) == 8, timeout=10)  # a new episode: stepping again
    finally:
        assert runner.stop() == 0


STUCK_NODE = '''
import sys, time
from robot_rl.ros.node import RobotRLNode, run_node

class Stuck(RobotRLNode):
    """A real rclpy node whose {where} never returns."""
    def __init__(self):
        super().__init__("stuck", "episode_manager_node")
        self.spinning = False
        self.create_timer(0.01, self.say_up)  # "up" once spinning: a SIGINT inside __init__ has no node to stop
    def say_up(self):
        if not self.spinning:
            self.spinning = True
            print("up", flush=True)
    def {method}(self):
        time.sleep(120)

raise SystemExit(run_node(Stuck))
'''


def start_stuck_node(tmp_path, method: str) -> subprocess.Popen:
    script = tmp_path / f"stuck_{method}.py"
    script.write_text(STUCK_NODE.format(where=method.replace("_", " "), method=method))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "up", "the stuck node never came up"
    return proc


def test_a_node_whose_teardown_hangs_exits_with_its_threads_stacks(tmp_path, ros_domain):
    """The hang is a stand-in (a sleeping destroy_node) for a DDS/GL teardown that never returns,
    which cannot be provoked on demand; the node, signals and watchdog are real."""
    proc = start_stuck_node(tmp_path, "destroy_node")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out  # its work was saved before the teardown: still a clean stop
    assert "teardown not done after" in out and "in destroy_node" in out, out


def test_the_runner_logs_where_a_node_hangs_before_killing_it(tmp_path, ros_domain, capsys):
    """A node stuck in its own shutdown ignores SIGINT and SIGTERM: stop() asks it for its threads'
    stacks (SIGUSR1) before SIGKILL and shows them with the warning."""
    from robot_rl.ros.graph import NodeProcess

    runner = GraphRunner(PROFILE, only=[], out=None)
    proc = start_stuck_node(tmp_path, "shutdown")
    node = NodeProcess("stuck", proc)
    node.reader = threading.Thread(target=lambda: node.lines.extend(line.rstrip() for line in proc.stdout))
    node.reader.start()
    runner.nodes.append(node)
    assert runner.stop(timeout=2.0) == 1
    err = capsys.readouterr().err
    assert "warning: node 'stuck' ended with status -9 after SIGKILL" in err
    assert "threads' stacks" in err and "in shutdown" in err, err
