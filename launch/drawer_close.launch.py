"""Serve a lompo policy on the drawer-closing task, against the sim or a real robot.

    ros2 launch lompo_ros drawer_close.launch.py                     # sim + policy
    ros2 launch lompo_ros drawer_close.launch.py use_sim:=false      # real robot (camera + Servo)
    ros2 launch lompo_ros drawer_close.launch.py record:=true        # also record a bag
    ros2 launch lompo_ros drawer_close.launch.py --show-args         # all arguments

Installed into share/lompo_ros/launch by the lompo_ros package (a symlink in the package).
"""

from __future__ import annotations

import os
from pathlib import Path

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription

PACKAGE = "lompo_ros"
POLICY = Path("models") / "drawer_close"
# The topics the converter reads besides the image and the command (lompo_core.messages).
REWARD_TOPIC = "/drawer_sim/reward"
# lompo_core.nodes.DEFAULT_COMMAND_TOPICS: where each interface's consumer listens by default.
SERVO_TOPIC = "/servo_node/delta_twist_cmds"
JOINT_GROUP_TOPIC = "/forward_velocity_controller/commands"
SUCCESS_TOPIC = "/drawer_sim/success"


def _share() -> Path | None:
    try:
        return Path(get_package_share_directory(PACKAGE))
    except PackageNotFoundError:
        return None


def default_model_path() -> str:
    """The shipped policy: installed in the package share, else beside this file in the repo.

    The repository fallback serves a --symlink-install build, where this file is a link into it.
    """
    share = _share()
    candidates = [share / POLICY] if share else []
    candidates.append(Path(os.path.realpath(__file__)).parent.parent / POLICY)
    for path in candidates:
        if (path / "policy.json").is_file():
            return str(path)
    return str(candidates[0])  # absent: the node's configure names it in its error


def default_params_file() -> str:
    share = _share()
    config = Path("config") / "drawer_close.yaml"
    if share and (share / config).is_file():
        return str(share / config)
    return str(
        Path(os.path.realpath(__file__)).parent.parent / "ros2_ws" / "src" / PACKAGE / config
    )


def generate_launch_description() -> LaunchDescription:
    use_sim = LaunchConfiguration("use_sim")
    model_path = LaunchConfiguration("model_path")
    params_file = LaunchConfiguration("params_file")
    image_topic = LaunchConfiguration("image_topic")
    command_topic = LaunchConfiguration("command_topic")
    command_interface = LaunchConfiguration("command_interface")
    namespace = LaunchConfiguration("namespace")
    log_level = LaunchConfiguration("log_level")
    record = LaunchConfiguration("record")

    arguments = [
        DeclareLaunchArgument(
            "use_sim", default_value="true", description="also start the MuJoCo sim_node"
        ),
        DeclareLaunchArgument(
            "model_path",
            default_value=default_model_path(),
            description="exported policy folder (policy.onnx + policy.json)",
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=default_params_file(),
            description="ROS parameters of policy_node and sim_node",
        ),
        DeclareLaunchArgument(
            "image_topic",
            default_value="/overhead_camera/image_raw",
            description="camera topic (sensor_msgs/Image, or CompressedImage with "
            "image_transport:=compressed in the params file)",
        ),
        DeclareLaunchArgument(
            "command_topic",
            default_value="",
            description="command topic; empty: /servo_node/delta_twist_cmds for servo_twist, "
            "/forward_velocity_controller/commands for joint_group",
        ),
        DeclareLaunchArgument(
            "command_interface",
            default_value="servo_twist",
            choices=["servo_twist", "joint_group"],
            description="servo_twist: geometry_msgs/TwistStamped (MoveIt Servo); "
            "joint_group: std_msgs/Float64MultiArray",
        ),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the nodes"),
        DeclareLaunchArgument(
            "log_level",
            default_value="info",
            choices=["debug", "info", "warn", "error", "fatal"],
            description="log level of the nodes",
        ),
        DeclareLaunchArgument(
            "record",
            default_value="false",
            description="record the converter's topics with `ros2 bag record` (in the current folder)",
        ),
    ]
    # An empty command_topic means the interface's default; resolved here so that the recorder
    # gets a real topic name too.
    resolved_command_topic = PythonExpression(
        [
            "'", command_topic, "' or ('", SERVO_TOPIC, "' if '", command_interface,
            "' == 'servo_twist' else '", JOINT_GROUP_TOPIC, "')",
        ]
    )  # fmt: skip
    # Typed as strings: launch would otherwise read a value such as a numeric path as YAML.
    topics = {
        "image_topic": ParameterValue(image_topic, value_type=str),
        "command_topic": ParameterValue(resolved_command_topic, value_type=str),
        "command_interface": ParameterValue(command_interface, value_type=str),
    }
    policy = Node(
        package=PACKAGE,
        executable="policy_node",
        name="policy_node",
        namespace=namespace,
        output="screen",
        parameters=[
            params_file,
            {**topics, "model_path": ParameterValue(model_path, value_type=str)},
        ],
        ros_arguments=["--log-level", log_level],
    )
    sim = Node(
        package=PACKAGE,
        executable="sim_node",
        name="sim_node",
        namespace=namespace,
        output="screen",
        parameters=[params_file, topics],
        ros_arguments=["--log-level", log_level],
        condition=IfCondition(use_sim),
    )
    recorder = ExecuteProcess(
        cmd=[
            "ros2",
            "bag",
            "record",
            image_topic,
            resolved_command_topic,
            REWARD_TOPIC,
            SUCCESS_TOPIC,
        ],
        output="screen",
        condition=IfCondition(record),
    )
    return LaunchDescription([*arguments, sim, policy, recorder])
