"""Small random scenarios for the soundness tests: threads of read, write, lock and unlock steps
over a few keys, and invariants of the form "key k never equals v" / "k ends equal to v"."""
from __future__ import annotations

from hypothesis import strategies as st

from kit.explore import Invariant, Lock, Scenario, Step

KEYS = ("x", "y", "z")
LOCKS = ("L1", "L2")


class Generated(Scenario):
    """Threads from op lists: ``("r", k)`` loads k into the thread's accumulator, ``("w", k, c)``
    stores accumulator + c into k, ``("lock", L)``/``("unlock", L)`` (an unlock of a lock the
    thread does not hold raises, so the ``no-exception`` invariant is exercised too)."""

    name = "generated"

    def __init__(self, programs, invariants=()):
        self.programs = programs
        self.invariants = list(invariants)

    def setup(self):
        self.mem = dict.fromkeys(KEYS, 0)
        self.locks = {name: Lock(name) for name in LOCKS}
        return self.threads()

    def threads(self):
        return {f"T{i}": self.thread(ops) for i, ops in enumerate(self.programs)}

    def thread(self, ops):
        acc = 0
        for op in ops:
            if op[0] == "r":
                k = op[1]
                acc = yield Step(f"r {k}", reads={k}, action=lambda t, k=k: self.mem[k])
            elif op[0] == "w":
                k, v = op[1], acc + op[2]
                yield Step(f"w {k}={v}", writes={k}, action=lambda t, k=k, v=v: self.mem.__setitem__(k, v))
            elif op[0] == "lock":
                yield self.locks[op[1]].acquire()
            else:
                yield self.locks[op[1]].release()

    def state_key(self):
        return tuple(self.mem.values()), tuple(lock.state() for lock in self.locks.values())

    def state_view(self):
        return {**self.mem, **{n: lock.holder for n, lock in self.locks.items()}}

    def snapshot(self):
        return self.state_key()

    def restore(self, snap):
        values, holders = snap
        self.mem.update(zip(KEYS, values))
        for lock, holder in zip(self.locks.values(), holders):
            lock.set_state(holder)


def never(k, v):
    return Invariant(f"{k} never {v}", lambda s: s.mem[k] != v)


def ends(k, v):
    return Invariant(f"{k} ends {v}", lambda s: s.mem[k] == v, final=True)


ops = st.one_of(
    st.tuples(st.just("r"), st.sampled_from(KEYS)),
    st.tuples(st.just("w"), st.sampled_from(KEYS), st.integers(0, 2)),
    st.tuples(st.just("lock"), st.sampled_from(LOCKS)),
    st.tuples(st.just("unlock"), st.sampled_from(LOCKS)),
)


@st.composite
def scenarios(draw, max_threads=3, max_ops=9):
    n = draw(st.integers(2, max_threads))
    sizes = draw(st.lists(st.integers(1, 4), min_size=n, max_size=n).filter(lambda s: sum(s) <= max_ops))
    programs = [draw(st.lists(ops, min_size=m, max_size=m)) for m in sizes]
    invs = draw(st.lists(st.tuples(st.sampled_from(["never", "ends"]), st.sampled_from(KEYS), st.integers(0, 3)),
                         max_size=4, unique=True))
    return Generated(programs, [(never if kind == "never" else ends)(k, v) for kind, k, v in invs])
