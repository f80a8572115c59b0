"""Hardware access without ROS: cameras, tactile sensors, arms, teleop devices."""
