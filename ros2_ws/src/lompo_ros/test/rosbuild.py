"""What the lompo_ros tests share: a real ``colcon build`` and the launch file read as source.

launch and launch_ros are not on PyPI, so the launch file's arguments and calls are read from its
syntax tree; the node tests start the nodes with what it declares, as ``ros2 launch`` would.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1]
REPO = PKG.parents[2]
LAUNCH = REPO / "launch" / "drawer_close.launch.py"
CONFIG = PKG / "config" / "drawer_close.yaml"


def _colcon() -> list[str]:
    # `python -m colcon` with this interpreter: the node scripts then run in the environment
    # that has lompo_core (a system colcon would write a system Python shebang).
    if importlib.util.find_spec("colcon") is None:
        pytest.skip("colcon is not installed (pip install colcon-core colcon-ros)")
    return [sys.executable, "-m", "colcon"]


def colcon_build(root: Path, symlink: bool = False) -> Path:
    """``colcon build`` of ros2_ws/src into ``root`` (build, install and log bases)."""
    cmd = _colcon() + [
        "--log-base",
        str(root / "log"),
        "build",
        "--base-paths",
        str(REPO / "ros2_ws" / "src"),
        "--build-base",
        str(root / "build"),
        "--install-base",
        str(root / "install"),
    ]
    if symlink:
        cmd.append("--symlink-install")
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root / "install" / "lompo_ros"


def literal(node: ast.AST, consts: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return consts.get(node.id)
    return None


class LaunchFile:
    """What the launch file declares and calls, read from its source."""

    def __init__(self, path: Path) -> None:
        self.tree = ast.parse(path.read_text())
        self.consts = {
            t.id: n.value.value
            for n in self.tree.body
            if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
            for t in n.targets
            if isinstance(t, ast.Name)
        }
        self.calls: dict[str, list[ast.Call]] = {}
        for n in ast.walk(self.tree):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name):
                self.calls.setdefault(n.func.id, []).append(n)
        self.generate = next(
            n
            for n in self.tree.body
            if isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description"
        )

    def kw(self, call: ast.Call, name: str) -> ast.AST | None:
        return next((k.value for k in call.keywords if k.arg == name), None)

    def declared(self) -> dict[str, ast.Call]:
        return {literal(c.args[0], self.consts): c for c in self.calls["DeclareLaunchArgument"]}

    def configurations(self) -> dict[str, str]:
        """variable -> argument name, for ``x = LaunchConfiguration("name")``."""
        out = {}
        for n in ast.walk(self.generate):
            if (
                isinstance(n, ast.Assign)
                and isinstance(n.value, ast.Call)
                and getattr(n.value.func, "id", None) == "LaunchConfiguration"
            ):
                out[n.targets[0].id] = literal(n.value.args[0], self.consts)
        return out

    def loads(self) -> set[str]:
        return {
            n.id
            for n in ast.walk(self.generate)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
        }

    def dict_keys(self, node: ast.AST) -> set[str]:
        """Keys of a dict literal, following ``**name`` into a dict assigned in the function."""
        if isinstance(node, ast.Name):
            node = next(
                a.value
                for a in ast.walk(self.generate)
                if isinstance(a, ast.Assign) and getattr(a.targets[0], "id", None) == node.id
            )
        assert isinstance(node, ast.Dict), ast.dump(node)
        keys = set()
        for k, v in zip(node.keys, node.values, strict=True):
            keys |= self.dict_keys(v) if k is None else {literal(k, self.consts)}
        return keys

    def defaults(self) -> dict[str, str]:
        """Each launch argument's default, where it is a literal (not computed at launch)."""
        out = {}
        for name, call in self.declared().items():
            value = self.kw(call, "default_value")
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                out[name] = value.value
        return out
