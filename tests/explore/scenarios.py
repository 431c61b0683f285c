"""Small scenarios the explorer tests share."""
from __future__ import annotations

from kit.explore import Counter, Invariant, Lock, Scenario, Srcu, Step


class LostUpdate(Scenario):
    """Two threads increment one counter with a separate load and store (``locked``: under a lock)."""

    name = "lost-update"
    invariants = [Invariant("no lost update", lambda s: s.c.value == 2, final=True)]

    def __init__(self, locked=False):
        self.locked = locked

    def setup(self):
        self.c = Counter("c")
        self.lock = Lock("lock")
        return {"A": self.increment(), "B": self.increment()}

    def increment(self):
        if self.locked:
            yield self.lock.acquire()
        yield from self.c.increment()
        if self.locked:
            yield self.lock.release()

    def state_key(self):
        return self.c.state(), self.lock.state()

    def snapshot(self):
        return self.state_key()

    def restore(self, snap):
        self.c.set_state(snap[0])
        self.lock.set_state(snap[1])


class OppositeOrder(Scenario):
    """Two threads take two locks in opposite order (ABBA)."""

    name = "abba"

    def setup(self):
        self.a, self.b = Lock("a"), Lock("b")
        return {"T1": self.take(self.a, self.b), "T2": self.take(self.b, self.a)}

    def take(self, first, second):
        yield first.acquire()
        yield second.acquire()
        yield second.release()
        yield first.release()

    def state_key(self):
        return self.a.state(), self.b.state()


class SrcuFree(Scenario):
    """The SRCU pattern (Documentation/RCU/whatisRCU.rst): a writer unpublishes an object, waits
    for a grace period, then frees it; a reader uses the object inside a read-side section.
    Without ``synchronize`` the reader can use freed memory."""

    name = "srcu-free"
    invariants = [Invariant("no use after free", lambda s: not s.use_after_free),
                  Invariant("readers older than the grace period are waited for", lambda s: not s.overtaken)]

    def __init__(self, synchronize=True):
        self.synchronize = synchronize

    def setup(self):
        self.srcu = Srcu("kvm->srcu")
        self.ptr = Counter("ptr", 1)
        self.freed = False
        self.use_after_free = False
        self.overtaken = False
        return {"reader": self.reader(), "writer": self.writer()}

    def reader(self):
        token = yield self.srcu.read_lock()
        p = yield self.ptr.load()
        if p:
            yield Step("use object", reads={"object"}, action=self.use)
        yield self.srcu.read_unlock(token)

    def writer(self):
        yield self.ptr.store(0)
        if self.synchronize:
            waited = yield from self.srcu.synchronize(expedited=True)
            yield Step("check readers", reads={self.srcu.key}, action=lambda t: self.check(waited))
        yield Step("free object", writes={"object"}, action=self.free)

    def use(self, thread):
        self.use_after_free |= self.freed

    def check(self, waited):
        self.overtaken |= not waited.isdisjoint(self.srcu.sections)

    def free(self, thread):
        self.freed = True

    def state_key(self):
        return self.srcu.state(), self.ptr.state(), self.freed, self.use_after_free, self.overtaken


class Spin(Scenario):
    """A thread that waits for a flag nobody sets (``setter``: another thread sets it)."""

    name = "spin"

    def __init__(self, setter=False):
        self.setter = setter

    def setup(self):
        self.flag = Counter("flag")
        threads = {"waiter": self.wait()}
        if self.setter:
            threads["setter"] = self.set()
        return threads

    def wait(self):
        while not (yield self.flag.load()):
            pass

    def set(self):
        yield self.flag.store(1)

    def state_key(self):
        return self.flag.state()
