"""Race explorer: search size and speed on a three-thread scenario shaped like CASE1, then on
the CASE1 scenario on the kit's model (``host-write-vs-conversion``).

The scenario follows the race of the SEV-SNP host-write review ("[PATCH Part2 v5 39/45] KVM:
SVM: Introduce ops for the post gfn map and unmap", October 2021): a KVM host writer maps a guest
page, writes it and unmaps it; the guest's conversion does check-then-act (attributes, "is it
mapped?", RMPUPDATE) under the scheme's protection; the host #PF handler reads the RMP when it
runs. The writer maps, writes and unmaps twice. Three schemes: ``lockless`` (a map counter with
separate load and store), ``locked`` (map and conversion under one lock), ``srcu`` (SRCU around
the map, ``synchronize_srcu_expedited`` before the RMPUPDATE). The model is a handful of values: the engine, not the kit's model, is
what is measured here.

Prints, in one run:
1. per scheme: schedules run with the reduction (sleep sets + state hashing) and without (plain
   enumeration), their ratio, the time of each, and the invariants broken (target: exhaustive
   <= 10 s per scheme);
2. steps per second through the explorer against the same steps driven directly in a loop (the
   generators resumed and the actions called, nothing else): the explorer's overhead as a ratio;
3. the cost of getting back to an earlier state: replaying its schedule against restoring a
   snapshot, per step of the prefix, and the exhaustive search end to end with each.

Then the same questions on the kit's model (:mod:`kit.explore.scenarios`): the scenario
``host-write-vs-conversion`` with its three threads (``writer``, ``conversion``, ``writer2``) on
a 64 MiB host, every step a model call (``Host.raise_fault``/``handle_fault``, the three steps
of ``rmpupdate()``, ``kvm_vm_set_mem_attributes``, PVALIDATE):

4. exhaustive under each conversion scheme (target <= 10 s each): schedules, states, time,
   the invariants broken;
5. schedules with and without the reduction: complete on the two-thread variant (no
   ``writer2``), and on the three threads with plain enumeration cut at a time budget;
6. steps per second through the explorer against the same model steps driven directly;
7. what a snapshot and a restore of the model cost (bytes, microseconds, per explored step),
   against rebuilding by replay.

Run: .venv/bin/python benchmarks/explore.py [--repeat 3] [--plain-budget 20]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from kit.explore import Counter, Invariant, Lock, Scenario, Srcu, Step, explore  # noqa: E402
from kit.explore import engine  # noqa: E402
from kit.explore import explore_named, schemes_for  # noqa: E402
from kit.explore.scenarios import ConversionWorld, HostWriteVsConversion as ModelScenario  # noqa: E402

SCHEMES = ("lockless", "locked", "srcu")


class HostWriteVsConversion(Scenario):
    """Writer, conversion and #PF handler over one page: ``attrs`` and ``rmp`` are "shared" or
    "private"; ``maps`` counts the host's live maps."""

    name = "case1-shaped"
    invariants = [
        Invariant("no RMPUPDATE to private while mapped", lambda s: not s.update_while_mapped),
        Invariant("no RMP #PF on a page the host mapped", lambda s: not s.rmp_fault),
    ]

    def __init__(self, scheme: str, writes: int = 2):
        if scheme not in SCHEMES:
            raise ValueError(f"scheme: unknown {scheme!r}; allowed: {', '.join(SCHEMES)}")
        self.scheme = scheme
        self.writes = writes

    def setup(self):
        self.attrs = "shared"
        self.rmp = "shared"
        self.maps = Counter("maps")
        self.lock = Lock("kvm->lock")
        self.srcu = Srcu("kvm->srcu")
        self.update_while_mapped = False
        self.rmp_fault = False
        self.faults = 0
        return self.threads()

    def threads(self):
        return {"writer": self.writer(), "conversion": self.conversion(), "handler": self.handler()}

    # ------------------------------------------------------------------ steps on the page
    def check_rmp(self):
        """The map-time check of the reviewed patch (``post_map_gfn``): is the page private in the RMP?"""
        return Step("check RMP", reads={"rmp"}, action=lambda t: self.rmp)

    def host_write(self):
        def write(thread):
            if self.rmp == "private":
                self.rmp_fault = True
                self.faults += 1
        return Step("host write", reads={"rmp"}, writes={"fault"}, action=write)

    def rmpupdate_private(self):
        def update(thread):
            self.update_while_mapped |= self.maps.value > 0
            self.rmp = "private"
        return Step("RMPUPDATE private", reads={self.maps.key}, writes={"rmp"}, action=update)

    # ------------------------------------------------------------------ threads
    def writer(self):
        """``kvm_vcpu_map()``, a write, ``kvm_vcpu_unmap()``, twice."""
        for _ in range(self.writes):
            yield from self.map_write_unmap()

    def map_write_unmap(self):
        if self.scheme == "srcu":
            token = yield self.srcu.read_lock()
            if (yield self.check_rmp()) == "shared":
                yield self.maps.add(1)
                yield self.host_write()
                yield self.maps.add(-1)
            yield self.srcu.read_unlock(token)
            return
        if self.scheme == "locked":
            yield self.lock.acquire()
        mapped = (yield self.check_rmp()) == "shared"
        if mapped:
            yield from self.maps.increment()
        if self.scheme == "locked":
            yield self.lock.release()
        if mapped:
            yield self.host_write()
            if self.scheme == "locked":
                yield self.lock.acquire()
            yield from self.maps.increment(-1)
            if self.scheme == "locked":
                yield self.lock.release()

    def conversion(self):
        """The page-state change to private: attributes, the scheme's synchronisation, the
        "still mapped?" check, RMPUPDATE."""
        if self.scheme == "locked":
            yield self.lock.acquire()
        yield Step("set attributes private", writes={"attrs"}, action=lambda t: setattr(self, "attrs", "private"))
        if self.scheme == "srcu":
            yield from self.srcu.synchronize(expedited=True)
        mapped = yield self.maps.load()
        if not mapped:
            yield self.rmpupdate_private()
        if self.scheme == "locked":
            yield self.lock.release()

    def handler(self):
        """The host #PF handler: reads the RMP when it runs; flips a private page back."""
        state = yield Step("read RMP", reads={"rmp", "fault"}, action=lambda t: (self.rmp, self.faults))
        if state[0] == "private" and state[1]:
            yield Step("RMPUPDATE shared", writes={"rmp"}, action=lambda t: setattr(self, "rmp", "shared"))

    def state_key(self):
        return (self.attrs, self.rmp, self.maps.state(), self.lock.state(), self.srcu.state(),
                self.update_while_mapped, self.rmp_fault, self.faults)

    def state_view(self):
        return {"attrs": self.attrs, "rmp": self.rmp, "maps": self.maps.value, "lock": self.lock.holder,
                "srcu readers": self.srcu.view()}

    def snapshot(self):
        return self.state_key()

    def restore(self, snap):
        (self.attrs, self.rmp, maps, lock, srcu, self.update_while_mapped, self.rmp_fault, self.faults) = snap
        self.maps.set_state(maps)
        self.lock.set_state(lock)
        self.srcu.set_state(srcu)


def best_of(repeat, fn):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def direct_steps(scn: Scenario, rounds: int) -> int:
    """The same threads driven directly: resume each generator in turn and call its actions."""
    steps = 0
    for _ in range(rounds):
        gens = list(scn.setup().items())
        pending = {}
        for name, g in gens:
            pending[name] = next(g, None)
        live = [name for name, _ in gens]
        threads = dict(gens)
        while live:
            for name in list(live):
                step = pending[name]
                if step is None:
                    live.remove(name)
                    continue
                if step.guard is not None and not step.guard():
                    continue
                value = step.action(name) if step.action is not None else None
                steps += 1
                try:
                    pending[name] = threads[name].send(value)
                except StopIteration:
                    pending[name] = None
    return steps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs for each timing")
    ap.add_argument("--plain-budget", type=float, default=20.0,
                    help="seconds for each plain enumeration of the three-thread model scenario")
    a = ap.parse_args(argv)

    print("== 1. schedules with and without the reduction (exhaustive, every interleaving)")
    print(f"{'scheme':<9} {'reduced':>8} {'plain':>8} {'ratio':>6} {'states':>7} {'t reduced':>10} {'t plain':>8}"
          f"  broken")
    worst = 0.0
    for scheme in SCHEMES:
        t_red, red = best_of(a.repeat, lambda: explore(HostWriteVsConversion(scheme)))
        t_plain, plain = best_of(1, lambda: explore(HostWriteVsConversion(scheme), reduction=False, hashing=False))
        assert red.complete and plain.complete and red.violated == plain.violated
        worst = max(worst, t_red)
        print(f"{scheme:<9} {red.schedules:>8} {plain.schedules:>8} {plain.schedules / red.schedules:>6.1f} "
              f"{red.states:>7} {t_red:>9.3f}s {t_plain:>7.2f}s  {', '.join(red.violated) or '-'}")
    print(f"slowest exhaustive search with the reduction: {worst:.3f} s (target <= 10 s)")
    for scheme in ("srcu", "lockless"):
        ex = explore(HostWriteVsConversion(scheme)).example("no RMPUPDATE to private while mapped")
        if ex is not None:
            print(f"\n{scheme}: {ex}")

    print("\n== 2. explorer overhead: steps per second, explorer vs the same steps driven directly")
    scn = HostWriteVsConversion("lockless")
    t_plain, plain = best_of(a.repeat, lambda: explore(scn, reduction=False, hashing=False))
    rounds = max(1, plain.steps // 12)
    t_direct, direct = best_of(a.repeat, lambda: direct_steps(scn, rounds))
    explorer_rate, direct_rate = plain.steps / t_plain, direct / t_direct
    print(f"explorer (plain enumeration, rebuild={plain.options['rebuild']}, invariants and state key every step): "
          f"{plain.steps} steps in {t_plain:.3f} s = {explorer_rate:,.0f} steps/s")
    print(f"direct loop (generators + actions only): {direct} steps in {t_direct:.3f} s = {direct_rate:,.0f} steps/s")
    print(f"overhead: {direct_rate / explorer_rate:.1f}x")
    t_red, red = best_of(a.repeat, lambda: explore(scn))
    print(f"with the reduction: {red.steps} steps in {t_red:.4f} s = {red.steps / t_red:,.0f} steps/s "
          f"(the time includes the counterexamples' minimisation, {red.minimize_steps} steps)")

    print("\n== 3. back to an earlier state: replay its schedule vs restore a snapshot")
    interner = {}
    ex = engine.Execution(scn, interner, record=True)
    names = ex.names
    path = []
    while True:
        en = [i for i in range(len(names)) if ex.enabled(i)]
        if not en:
            break
        ex.run(en[len(path) % len(en)])
        path.append(en[len(path) % len(en)])
    snap = engine.snapshot(ex)
    n = 2000
    t_replay, _ = best_of(a.repeat, lambda: [engine.replay(scn, interner, names, path) for _ in range(n)])
    t_restore, _ = best_of(a.repeat, lambda: [engine.restore(scn, interner, names, snap) for _ in range(n)])
    t_snap, _ = best_of(a.repeat, lambda: [engine.snapshot(ex) for _ in range(n)])
    print(f"prefix of {len(path)} steps: replay {t_replay / n * 1e6:.1f} us ({t_replay / n / len(path) * 1e6:.2f} us "
          f"per step), restore {t_restore / n * 1e6:.1f} us ({t_restore / n / len(path) * 1e6:.2f} us per step), "
          f"snapshot {t_snap / n * 1e6:.2f} us")
    for rebuild in ("replay", "snapshot"):
        t, r = best_of(a.repeat, lambda: explore(scn, reduction=False, hashing=False, rebuild=rebuild))
        print(f"exhaustive, plain enumeration, rebuild={rebuild:<8}: {t:.3f} s, {r.steps} steps run")
    model(a)
    return 0


HWC = "host-write-vs-conversion"


def model(a) -> None:
    """Sections 4-7: the CASE1 scenario on the kit's model."""
    schemes = schemes_for(HWC)
    print("\n== 4. the kit's model: host-write-vs-conversion (writer, conversion, writer2), 64 MiB host, "
          "exhaustive with the reduction")
    print(f"{'scheme':<24} {'schedules':>9} {'states':>7} {'steps':>7} {'time':>7}  complete  broken")
    worst = 0.0
    for scheme in schemes:
        t, r = best_of(1, lambda: explore_named(HWC, scheme))
        worst = max(worst, t)
        print(f"{scheme:<24} {r.schedules:>9} {r.states:>7} {r.steps:>7} {t:>6.2f}s  {str(r.complete):<8}  "
              f"{', '.join(r.violated) or '-'}")
    print(f"slowest: {worst:.2f} s (target <= 10 s per scheme; the time includes shrinking the counterexamples)")

    print("\n== 5. schedules with and without the reduction")
    print("two threads (writer, conversion), both complete:")
    print(f"{'scheme':<24} {'reduced':>8} {'plain':>8} {'ratio':>7} {'t reduced':>10} {'t plain':>8}  same verdicts")
    for scheme in schemes:
        t_red, red = best_of(1, lambda: explore_named(HWC, scheme, second_writer=False))
        t_plain, plain = best_of(1, lambda: explore_named(HWC, scheme, second_writer=False, reduction=False,
                                                          hashing=False))
        same = red.violated == plain.violated and all(red.example(n).steps == plain.example(n).steps
                                                      for n in red.violated)
        print(f"{scheme:<24} {red.schedules:>8} {plain.schedules:>8} {plain.schedules / red.schedules:>7.1f} "
              f"{t_red:>9.2f}s {t_plain:>7.2f}s  {same}")
    print(f"three threads, plain enumeration cut at {a.plain_budget:.0f} s:")
    for scheme in ("srcu", "flip_back_split"):
        red = explore_named(HWC, scheme)
        plain = explore_named(HWC, scheme, reduction=False, hashing=False, time_budget=a.plain_budget)
        bound = "" if plain.complete else ">= "
        print(f"{scheme:<24} reduced {red.schedules:>6}, plain {bound}{plain.schedules} "
              f"({'complete' if plain.complete else 'cut'}), ratio {bound}{plain.schedules / red.schedules:.0f}")

    print("\n== 6. explorer overhead on the model: steps per second")
    scn = ModelScenario("srcu", second_writer=False)
    t_plain, plain = best_of(a.repeat, lambda: explore_named(HWC, "srcu", second_writer=False, reduction=False,
                                                             hashing=False))
    rounds = max(1, plain.schedules)
    t_setup, _ = best_of(a.repeat, lambda: [scn.setup() for _ in range(20)])
    t_setup /= 20
    t_direct, direct = best_of(a.repeat, lambda: direct_steps(scn, rounds))
    t_steps = max(t_direct - rounds * t_setup, 1e-9)
    explorer_rate = plain.steps / t_plain
    print(f"explorer (plain enumeration, rebuild={plain.options['rebuild']}): {plain.steps} steps in {t_plain:.2f} s "
          f"= {explorer_rate:,.0f} steps/s")
    print(f"direct loop, {rounds} runs: {direct} steps in {t_direct:.2f} s, of which building the model "
          f"{rounds * t_setup:.2f} s ({t_setup * 1e3:.2f} ms a run): {direct / t_steps:,.0f} model steps/s")
    print(f"overhead: {direct / t_steps / explorer_rate:.1f}x the model's own steps "
          f"({direct / t_direct / explorer_rate:.1f}x against the loop that builds the model each run)")

    print("\n== 7. snapshot and restore of the model (64 MiB host, KVM, an SNP VM with guest_memfd)")
    scn = ModelScenario("srcu")
    scn.setup()
    snap = scn.snapshot()
    n = 300
    t_snap, _ = best_of(a.repeat, lambda: [scn.snapshot() for _ in range(n)])
    t_rest, _ = best_of(a.repeat, lambda: [scn.restore(snap) for _ in range(n)])
    m = n // 10
    t_build, _ = best_of(a.repeat, lambda: [ConversionWorld(scn.scheme, scn.params) for _ in range(m)])
    t_setup, _ = best_of(a.repeat, lambda: [scn.setup() for _ in range(m)])
    print(f"snapshot: {len(snap[0]):,} bytes (one pickle of the model; the host's state is "
          f"{scn.w.host.nbytes:,} bytes), {t_snap / n * 1e6:.0f} us; restore {t_rest / n * 1e6:.0f} us")
    print(f"building the model: {t_build / m * 1e6:.0f} us; a later setup() (the initial snapshot unpickled): "
          f"{t_setup / m * 1e6:.0f} us")
    timed = Timed("srcu")
    r = explore(timed)
    per_step = (timed.t_snap + timed.t_rest) / r.steps
    print(f"in the exhaustive srcu search: {timed.n_snap} snapshots, {timed.n_rest} restores, "
          f"{(timed.t_snap + timed.t_rest) * 1e3:.0f} ms of {r.elapsed * 1e3:.0f} ms; "
          f"{per_step * 1e6:.0f} us per explored step ({r.steps} steps)")
    for rebuild in ("snapshot", "replay"):
        t, r = best_of(1, lambda: explore_named(HWC, "srcu", rebuild=rebuild))
        print(f"exhaustive srcu, rebuild={rebuild:<8}: {t:.2f} s, {r.steps + r.minimize_steps} steps run")


class Timed(ModelScenario):
    """The scenario with its snapshots and restores timed."""

    t_snap = t_rest = 0.0
    n_snap = n_rest = 0

    def snapshot(self):
        t = time.perf_counter()
        out = super().snapshot()
        self.t_snap += time.perf_counter() - t
        self.n_snap += 1
        return out

    def restore(self, snap):
        t = time.perf_counter()
        super().restore(snap)
        self.t_rest += time.perf_counter() - t
        self.n_rest += 1


if __name__ == "__main__":
    sys.exit(main())
