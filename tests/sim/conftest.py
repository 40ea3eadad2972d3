import pytest

from lompo_core.sim import DrawerCloseSim


@pytest.fixture(scope="module")
def sim():
    s = DrawerCloseSim(image_size=64)
    yield s
    s.close()
