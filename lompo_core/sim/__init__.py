"""The simulated drawer task and the behaviour policies that generate data in it."""

from lompo_core.sim.drawer import ACTION_NAMES, DrawerCloseSim, Step
from lompo_core.sim.policies import POLICIES, make_policy

__all__ = ["ACTION_NAMES", "DrawerCloseSim", "POLICIES", "Step", "make_policy"]
