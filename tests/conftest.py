import os

# MuJoCo reads MUJOCO_GL at import: headless EGL unless the caller chose otherwise.
os.environ.setdefault("MUJOCO_GL", "egl")
