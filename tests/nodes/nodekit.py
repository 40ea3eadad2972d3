"""What the tests of lompo_core.nodes share: rosbags' message classes, CDR round trips, fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lompo_core import messages as m
from lompo_core.actions import ActionScaling
from lompo_core.messages import MessageKit

SCALING = ActionScaling(("linear.x", "linear.y", "linear.z"), "m/s", (0.8, 0.8, 0.8))
NOW_NS = 1_767_225_600_123_456_789


def wire(ts, msg):
    """A CDR round trip: what DDS does to a message between two nodes."""
    return ts.deserialize_cdr(ts.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


@pytest.fixture(params=m.DISTROS)
def ts(request):
    return m.typestore(request.param)


@pytest.fixture
def kit(ts):
    return MessageKit.from_typestore(ts)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
    from policy_fixtures import shared_policy

    return shared_policy(tmp_path_factory.getbasetemp())[1]


@pytest.fixture(scope="module")
def sim():
    from lompo_core.sim import DrawerCloseSim

    s = DrawerCloseSim(image_size=64, max_steps=6)
    yield s
    s.close()
