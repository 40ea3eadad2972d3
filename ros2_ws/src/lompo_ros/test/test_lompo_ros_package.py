"""lompo_ros checked by everything that runs without ROS.

A real `colcon build` (colcon-core + colcon-ros from PyPI) into a temporary folder, the manifest
through catkin_pkg, and the launch file, config and Dockerfile read as source (ast, YAML): launch
and launch_ros cannot be imported here, so the launch file's calls are checked statically.
"""

from __future__ import annotations

import ast
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from rosbuild import CONFIG, LAUNCH, PKG, REPO, LaunchFile, colcon_build, literal

from lompo_core import messages as m
from lompo_core.nodes import common
from lompo_core.nodes.policy import PolicyNodeParams
from lompo_core.nodes.sim import SimNodeParams

DOCKER = REPO / "docker"
NODE_PARAMS = {
    "policy_node": {f.name for f in fields(PolicyNodeParams)} | {"autostart"},
    "sim_node": {f.name for f in fields(SimNodeParams)},
}
LAUNCH_ARGUMENTS = {
    "use_sim",
    "model_path",
    "params_file",
    "image_topic",
    "command_topic",
    "command_interface",
    "namespace",
    "log_level",
    "record",
}
# Python modules whose rosdep key is not their own name.
ROSDEP_KEYS = {"numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml"}
# Installed by pip into the nodes' environment (docker/Dockerfile), not by rosdep.
PIP_INSTALLED = {"lompo_core"}


@pytest.fixture(scope="module", params=["copy", "symlink"])
def install(request, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp(f"colcon_{request.param}")
    return colcon_build(root, symlink=request.param == "symlink")


def test_installed_where_ros2_run_and_launch_look(install):
    share = install / "share" / "lompo_ros"
    marker = install / "share" / "ament_index" / "resource_index" / "packages" / "lompo_ros"
    assert marker.is_file()
    launch = share / "launch" / "drawer_close.launch.py"
    # Resolved, not only present: --symlink-install must not leave a dangling link.
    assert launch.resolve().read_text() == LAUNCH.read_text()
    assert yaml.safe_load((share / "config" / "drawer_close.yaml").resolve().read_text())
    assert (share / "package.xml").resolve().is_file()
    for exe in ("policy_node", "sim_node"):
        script = install / "lib" / "lompo_ros" / exe
        assert script.is_file() and os.access(script, os.X_OK), script
        # The script runs the interpreter that built it: the environment that has lompo_core.
        assert script.read_text().startswith(f"#!{sys.executable}"), script.read_text()[:80]


def test_entry_points_are_the_nodes_main_functions(install):
    eps = next(install.glob("lib/python*/site-packages/lompo_ros*.egg-info/entry_points.txt"), None)
    if eps is None:  # --symlink-install: the egg-info stays in the build folder
        eps = next(install.parents[1].glob("build/lompo_ros/lompo_ros.egg-info/entry_points.txt"))
    scripts = {}
    for line in eps.read_text().splitlines():
        if "=" in line:
            name, target = (s.strip() for s in line.split("="))
            scripts[name] = target
    assert scripts == {
        "policy_node": "lompo_ros.policy_node:main",
        "sim_node": "lompo_ros.sim_node:main",
    }
    for target in scripts.values():
        module = PKG / (target.split(":")[0].replace(".", "/") + ".py")
        tree = ast.parse(module.read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body), module


# -- package.xml ------------------------------------------------------------------------------


def _imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"__future__"}


def test_manifest_declares_what_the_nodes_and_launch_file_import():
    from catkin_pkg.package import parse_package

    warnings: list[str] = []
    package = parse_package(str(PKG / "package.xml"), warnings=warnings)
    package.validate()
    assert package.name == "lompo_ros" and package.package_format == 3
    assert package.get_build_type() == "ament_python"
    assert not warnings, warnings
    exec_deps = {d.name for d in package.exec_depends}
    sources = [*PKG.glob("lompo_ros/*.py"), LAUNCH]
    imported = set().union(*(_imported_modules(p) for p in sources)) - {"lompo_ros"}
    needed = {ROSDEP_KEYS.get(mod, mod) for mod in imported - PIP_INSTALLED}
    assert needed <= exec_deps, f"missing exec_depend: {sorted(needed - exec_deps)}"
    assert "ros2bag" in exec_deps  # record:=true runs `ros2 bag record`
    assert {"launch_pytest", "launch_testing"} <= {d.name for d in package.test_depends}
    # The Python package's version follows the manifest's.
    setup = ast.parse((PKG / "setup.py").read_text())
    version = next(
        kw.value.value
        for n in ast.walk(setup)
        if isinstance(n, ast.Call)
        for kw in n.keywords
        if kw.arg == "version"
    )
    assert version == package.version


# -- the launch file --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def launch_file() -> LaunchFile:
    return LaunchFile(LAUNCH)


def test_launch_arguments_are_the_documented_ones_and_all_used(launch_file):
    declared = launch_file.declared()
    assert set(declared) == LAUNCH_ARGUMENTS
    for name, call in declared.items():
        assert launch_file.kw(call, "description") is not None, name
        assert launch_file.kw(call, "default_value") is not None, name
    configs = launch_file.configurations()
    assert set(configs.values()) == LAUNCH_ARGUMENTS
    unused = {var for var in configs if var not in launch_file.loads()}
    assert not unused, f"declared but never used: {unused}"
    choices = launch_file.kw(declared["command_interface"], "choices")
    assert [c.value for c in choices.elts] == list(common.COMMAND_INTERFACES)


def test_launch_constants_match_lompo_core(launch_file):
    c = launch_file.consts
    assert c["PACKAGE"] == "lompo_ros"
    assert c["SERVO_TOPIC"] == common.DEFAULT_COMMAND_TOPICS[common.SERVO_TWIST]
    assert c["JOINT_GROUP_TOPIC"] == common.DEFAULT_COMMAND_TOPICS[common.JOINT_GROUP]
    assert (c["REWARD_TOPIC"], c["SUCCESS_TOPIC"]) == (m.REWARD_TOPIC, m.SUCCESS_TOPIC)
    image_default = launch_file.kw(launch_file.declared()["image_topic"], "default_value")
    assert image_default.value == m.IMAGE_TOPIC


def test_launched_nodes_exist_and_their_parameters_are_declared(launch_file):
    config = yaml.safe_load(CONFIG.read_text())
    setup = (PKG / "setup.py").read_text()
    launched = {}
    for call in launch_file.calls["Node"]:
        package = literal(launch_file.kw(call, "package"), launch_file.consts)
        executable = literal(launch_file.kw(call, "executable"), launch_file.consts)
        name = literal(launch_file.kw(call, "name"), launch_file.consts)
        assert package == "lompo_ros"
        assert f"{{PACKAGE}}.{executable}:main" in setup, executable
        overrides = set()
        for item in launch_file.kw(call, "parameters").elts:
            if isinstance(item, (ast.Dict, ast.Name)) and not (
                isinstance(item, ast.Name) and item.id == "params_file"
            ):
                overrides |= launch_file.dict_keys(item)
        launched[name] = overrides
    assert set(launched) == {"policy_node", "sim_node"}
    for name, overrides in launched.items():
        in_file = set(config[f"/**/{name}"]["ros__parameters"])
        assert overrides <= NODE_PARAMS[name], overrides - NODE_PARAMS[name]
        # The file lists every parameter the node declares, and nothing it does not.
        assert in_file == NODE_PARAMS[name], in_file ^ NODE_PARAMS[name]


def test_config_values_are_valid_parameters():
    config = yaml.safe_load(CONFIG.read_text())
    policy = dict(config["/**/policy_node"]["ros__parameters"])
    assert policy.pop("autostart") is True
    policy["model_path"] = "/somewhere"  # the launch file fills it in
    PolicyNodeParams.from_mapping(policy)
    SimNodeParams.from_mapping(config["/**/sim_node"]["ros__parameters"])
    # ROS parameter types are fixed by the declared default: a 0 where 0.0 is declared fails.
    for name, values in (
        ("policy_node", policy),
        ("sim_node", config["/**/sim_node"]["ros__parameters"]),
    ):
        cls = PolicyNodeParams if name == "policy_node" else SimNodeParams
        for f in fields(cls):
            assert type(values[f.name]) is type(f.default), (name, f.name, values[f.name])


# -- docker -----------------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    lines, current = [], ""
    for raw in (DOCKER / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        current += " " + line.rstrip("\\").strip() if current else line.rstrip("\\").strip()
        if not line.endswith("\\"):
            lines.append(current)
            current = ""
    return [
        (ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines
    ]


def test_dockerfile_copies_paths_that_exist_and_names_the_package():
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("ARG", "ROS_DISTRO=jazzy")
    assert any(i == "FROM" and "ros:${ROS_DISTRO}" in a for i, a in instructions)
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    contexts = {
        (DOCKER / s["build"]["context"]).resolve()
        for s in compose["services"].values()
        if "build" in s
    }
    assert contexts == {REPO}
    ignored = [
        ln.strip().rstrip("/")
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    copies = [a.split() for i, a in instructions if i == "COPY"]
    assert copies
    for args in copies:
        for src in [a for a in args[:-1] if not a.startswith("--")]:
            assert (REPO / src).exists(), f"COPY {src}: not in the build context"
            assert src.rstrip("/") not in ignored, f"COPY {src} is excluded by .dockerignore"
    for needed in ("launch", "ros2_ws/src", "lompo_core", "pyproject.toml"):
        assert needed not in ignored
    text = " ".join(a for _, a in instructions)
    assert "--system-site-packages" in text and "numpy<2" in text
    assert "colcon build" in text and "--base-paths ros2_ws/src" in text
    exec_form = {i: json.loads(a) for i, a in instructions if i in ("CMD", "ENTRYPOINT")}
    assert exec_form["CMD"] == ["ros2", "launch", "lompo_ros", LAUNCH.name]
    workdir = next(a for i, a in instructions if i == "WORKDIR")
    assert ("COPY", ". .") in instructions  # the repository lands in WORKDIR
    entrypoint = REPO / Path(exec_form["ENTRYPOINT"][0]).relative_to(workdir)
    assert entrypoint.is_file() and os.access(entrypoint, os.X_OK)
    assert "install/setup.bash" in entrypoint.read_text()
    for service in compose["services"].values():
        command = " ".join(service.get("command", []))
        for exe in ("policy_node", "sim_node"):
            if f"lompo_ros {exe}" in command:
                assert exe in NODE_PARAMS
        if "ros2 launch" in command:
            assert "lompo_ros drawer_close.launch.py" in command
