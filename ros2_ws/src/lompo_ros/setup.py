"""lompo_ros: an ament_python package; `colcon build` installs it where ros2 run/launch look."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "lompo_ros"
POLICY = glob("models/drawer_close/*")

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        # The ament index marker: how `ros2 run` and `ros2 launch` find the package.
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        # `launch` is a symlink to the repository's top-level launch/ (DESIGN.md): a relative path
        # out of the package would install a dangling link under --symlink-install.
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ]
    # The shipped policy, when the repository has one (models/ is a symlink like launch/).
    + ([(f"share/{PACKAGE}/models/drawer_close", POLICY)] if POLICY else []),
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="lompo maintainers",
    maintainer_email="lompo@example.com",
    description="ROS 2 policy and sim nodes for lompo (offline RL from camera images)",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            f"policy_node = {PACKAGE}.policy_node:main",
            f"sim_node = {PACKAGE}.sim_node:main",
        ],
    },
)
