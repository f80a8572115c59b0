"""Test isolation for real ROS 2 graphs: a fresh ROS_DOMAIN_ID per test, localhost discovery only,
ROS logs in a temp dir, headless MuJoCo rendering."""
import itertools
import os
import tempfile

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
_ros_home = tempfile.mkdtemp(prefix="robot_rl_test_ros_")
os.environ["ROS_HOME"] = _ros_home
os.environ["ROS_LOG_DIR"] = os.path.join(_ros_home, "log")

# Domains 1..200 (valid for Fast DDS on localhost); spread by pid so parallel sessions rarely collide.
_domains = itertools.cycle(range(1, 201))
for _ in range(os.getpid() % 200):
    next(_domains)


@pytest.fixture
def ros_domain(monkeypatch) -> int:
    """A fresh ROS_DOMAIN_ID for this test, exported to every child process it starts."""
    domain = next(_domains)
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    return domain


@pytest.fixture(scope="module")
def module_ros_domain() -> int:
    """Like ros_domain, for a graph shared by a whole test module."""
    with pytest.MonkeyPatch.context() as mp:
        domain = next(_domains)
        mp.setenv("ROS_DOMAIN_ID", str(domain))
        yield domain


@pytest.fixture
def probe(ros_domain):
    """An independent rclpy node (own context) on this test's domain."""
    import rclpy

    from robot_rl.ros.probe import TopicProbe

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain)
    p = TopicProbe(context=context)
    yield p
    p.close()
    context.try_shutdown()


@pytest.fixture(scope="session")
def profile():
    """The shipped sim profile (loaded once)."""
    from robot_rl.config import load_profile

    return load_profile("sim")
