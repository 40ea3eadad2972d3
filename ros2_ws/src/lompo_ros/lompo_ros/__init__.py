"""ROS 2 wiring for lompo: policy_node and sim_node (their logic lives in lompo_core.nodes)."""
