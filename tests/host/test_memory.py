"""Frame allocator (kit/host/memory.py)."""
import numpy as np
import pytest

from kit.host.memory import OutOfMemory, PhysicalMemory


def mem(regions=4, placement="lowest", seed=0):
    return PhysicalMemory(regions * 512, rng=np.random.default_rng(seed), placement=placement)


def test_2m_and_4k_allocation_and_free():
    m = mem()
    g = m.alloc(9, "guest", 2)
    assert list(g) == [0, 512] and m.owner(700) == "guest"
    k = m.alloc(0, "kernel", 600)                    # breaks two free regions, fills the first
    assert k[0] == 1024 and k[-1] == 1024 + 599 and m.free_pages() == 2 * 512 - 600
    more = m.alloc(0, "kernel", 5)                   # from the partly used region first
    assert more[0] == 1024 + 600
    m.free(1024 + 3)
    assert m.owner(1024 + 3) == "free" and m.alloc(0, "kernel")[0] == 1024 + 3
    m.free(0, order=9)
    assert m.owner(5) == "free"


def test_all_or_nothing_and_errors():
    m = mem(regions=2)
    m.alloc(9, "guest", 1)
    with pytest.raises(OutOfMemory):
        m.alloc(9, "guest", 2)
    with pytest.raises(OutOfMemory):
        m.alloc(0, "kernel", 513)
    assert m.free_pages() == 512
    with pytest.raises(ValueError, match="order"):
        m.alloc(3)
    with pytest.raises(ValueError, match="owner"):
        m.alloc(0, "nobody")
    with pytest.raises(ValueError, match="free or leaked"):
        m.free(600)
    with pytest.raises(ValueError, match="placement"):
        mem(placement="first-fit")


def test_random_placement_is_seeded():
    a = mem(regions=64, placement="random", seed=7).alloc(9, "guest", 5)
    b = mem(regions=64, placement="random", seed=7).alloc(9, "guest", 5)
    c = mem(regions=64, placement="random", seed=8).alloc(9, "guest", 5)
    assert list(a) == list(b) and list(a) != list(c)
