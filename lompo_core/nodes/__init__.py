"""What the ROS nodes decide and send, without ROS: one module per node of ``lompo_ros``.

``lompo_ros``'s ``policy_node`` and ``sim_node`` are wiring: they read parameters, create
publishers, and hand every message to the classes here (``policy.PolicyCore``,
``sim.SimLoop``), which decide what to publish and build the messages with
:class:`lompo_core.messages.MessageKit`. ``common`` holds what both share (the command
interfaces). No rclpy, no torch: this package runs on the robot computer and in CI alike.
"""
