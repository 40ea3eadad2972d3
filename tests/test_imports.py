"""lompo uses its libraries through their public API: no private or internal module imported."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, name) of every absolute import in a file (name None for ``import module``)."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.module, alias.name) for alias in node.names]
    return found


def test_no_private_module_of_another_package_is_imported() -> None:
    private = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted((ROOT / "lompo_core").rglob("*.py"))
        for module, _ in _imports(path)
        if module.split(".")[0] != "lompo_core"
        and any(part.startswith("_") for part in module.split(".")[1:])
    ]
    assert not private, private


def test_rosbags_is_used_through_what_its_packages_export() -> None:
    # rosbags documents its API as what each subpackage's __init__ exports (__all__); its
    # modules below that (storage readers, the directory reader) change between minor releases.
    internal = []
    for path in sorted((ROOT / "lompo_core").rglob("*.py")):
        for module, name in _imports(path):
            if module.split(".")[0] != "rosbags":
                continue
            exported = getattr(importlib.import_module(module), "__all__", [])
            if len(module.split(".")) != 2 or name is None or name not in exported:
                internal.append(f"{path.relative_to(ROOT)}: from {module} import {name}")
    assert not internal, internal
