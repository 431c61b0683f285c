"""The RMP's packed storage (kit/host/rmptable.py): raw reads and writes of entries and ranges,
smash, size; and the split between storage and instructions (read with ``ast``)."""
import ast
import inspect
import pathlib

import numpy as np
import pytest

import kit.host.rmp as rmp_module
import kit.host.rmptable as rmptable
from kit.host.rmptable import (F_2M, F_ASSIGNED, F_DETAIL, F_IMMUTABLE, F_LINEAR, F_VALIDATED,
                               F_VMSA, RmpTable)
from kit.units import PAGES_PER_2M

R = PAGES_PER_2M
REGIONS = 8
HOST_DIR = pathlib.Path(rmptable.__file__).parent


@pytest.fixture
def table():
    return RmpTable(REGIONS * R)


def entry(t, pfn):
    bits, asid, gfn, is2m = t.entry(pfn)
    return bits, asid, gfn, is2m


# ------------------------------------------------------------------ reads and writes
def test_boot_table_is_zero_and_costs_only_region_words(table):
    assert entry(table, 0) == (0, 0, 0, False) and entry(table, REGIONS * R - 1) == (0, 0, 0, False)
    assert table.detail_regions == 0
    # at boot, each 2M region costs its word alone: uint8 flags + uint16 ASID + 5-byte GFN
    per_region = 1 + 2 + 4 + 1
    assert RmpTable(256 * R).nbytes - RmpTable(128 * R).nbytes == 128 * per_region


def test_set_range_whole_regions_linear_and_2m(table):
    table.set_range(R, 2 * R, F_ASSIGNED, 5, 0x100, linear=True, size2m=True)
    assert entry(table, R) == (F_ASSIGNED, 5, 0x100, True)
    assert entry(table, 2 * R + 7) == (F_ASSIGNED, 5, 0x100 + R, True)   # next 2M entry's GFN
    assert list(table.region_forms(slice(0, 4))) == [0, F_ASSIGNED | F_2M, F_ASSIGNED | F_2M, 0]
    assert list(table.region_gfns(slice(1, 3))) == [0x100, 0x100 + R]
    table.set_range(3 * R, R, F_ASSIGNED, 6, 0x10, linear=True, size2m=False)
    assert table.region_form(3) == F_ASSIGNED | F_LINEAR
    assert entry(table, 3 * R + 9) == (F_ASSIGNED, 6, 0x10 + 9, False)
    assert table.detail_regions == 0


def test_set_range_partial_edges_go_entry_by_entry(table):
    table.set_range(R - 2, R + 4, F_ASSIGNED, 4, 0x40, linear=True, size2m=False)
    # region 0: 510 zero entries then 2 assigned ones -> detail; region 1 whole -> linear word;
    # region 2: 2 assigned entries -> detail
    assert table.detail_regions == 2
    assert [table.region_form(r) & (F_DETAIL | F_LINEAR) for r in range(3)] == [F_DETAIL, F_LINEAR, F_DETAIL]
    assert entry(table, R - 3) == (0, 0, 0, False)
    assert entry(table, R - 2) == (F_ASSIGNED, 4, 0x40, False)
    assert entry(table, R + 5) == (F_ASSIGNED, 4, 0x40 + 7, False)
    assert entry(table, 2 * R + 1) == (F_ASSIGNED, 4, 0x40 + R + 3, False)
    assert entry(table, 2 * R + 2) == (0, 0, 0, False)
    # unassigned entries store the GFN as given, not advancing
    table.set_range(4 * R + 1, 3, 0, 0, 0x99, linear=False, size2m=False)
    assert [entry(table, 4 * R + i)[2] for i in range(5)] == [0, 0x99, 0x99, 0x99, 0]


def test_writing_a_region_back_to_uniform_frees_its_slot(table):
    table.set_range(5, 1, F_ASSIGNED, 1, 7, linear=True, size2m=False)
    assert table.detail_regions == 1
    grown = table.nbytes
    table.set_range(5, 1, 0, 0, 0, linear=False, size2m=False)
    assert table.detail_regions == 0 and table.region_form(0) == 0
    assert table.nbytes == grown           # the slot goes back to the pool, the pool keeps its size


def test_set_entries_and_entries_round_trip(table):
    flags = np.zeros(R, np.uint8)
    flags[3] = F_ASSIGNED | F_VALIDATED
    asid = np.zeros(R, np.uint16)
    asid[3] = 9
    gfn = np.arange(R, dtype=np.uint64) + np.uint64(1 << 38)   # top GFN bits survive packing
    table.set_entries(2, flags, asid, gfn)
    f2, a2, g2 = table.entries(2)
    assert (f2 == flags).all() and (a2 == asid).all() and (g2 == gfn).all()
    # uniform and linear input is stored as one region word
    table.set_entries(2, np.full(R, F_ASSIGNED, np.uint8), np.full(R, 9, np.uint16), gfn)
    assert table.region_form(2) == F_ASSIGNED | F_LINEAR and table.detail_regions == 0


def test_page_bits_first_page_with_and_any(table):
    table.set_range(R + 10, 5, F_ASSIGNED | F_IMMUTABLE, 1, 0, linear=True, size2m=False)
    bits = table.page_bits(1)
    assert np.flatnonzero(bits & F_IMMUTABLE).tolist() == list(range(10, 15))
    assert table.first_page_with(1, 0, R, F_IMMUTABLE) == 10
    assert table.first_page_with(1, 12, 13, F_IMMUTABLE) == 12
    assert table.first_page_with(1, 15, R, F_IMMUTABLE) == -1
    assert table.regions_any([0, 1, 2], F_ASSIGNED).tolist() == [False, True, False]
    assert table.range_any(R + 15, R, F_ASSIGNED).tolist() == [False, False]
    assert table.range_any(R + 14, 2, F_ASSIGNED).tolist() == [True]
    table.set_range(3 * R, R, F_ASSIGNED, 1, 0, linear=False, size2m=True)
    assert table.page_bits(3, 4, 6).tolist() == [F_ASSIGNED, F_ASSIGNED]
    assert table.first_page_with(3, 4, 6, F_ASSIGNED) == 4


def test_update_bits_of_4k_entries_and_region_words(table):
    table.set_range(0, 2 * R, F_ASSIGNED, 1, 0, linear=True, size2m=False)
    table.update_bits(R - 1, 2, set_bits=F_VALIDATED | F_VMSA)
    assert entry(table, R - 1)[0] == F_ASSIGNED | F_VALIDATED | F_VMSA
    assert entry(table, R)[0] == F_ASSIGNED | F_VALIDATED | F_VMSA
    assert entry(table, R + 1)[0] == F_ASSIGNED
    table.update_bits(R - 1, 2, clear_bits=F_VMSA)
    assert entry(table, R)[0] == F_ASSIGNED | F_VALIDATED
    table.set_range(4 * R, 2 * R, F_ASSIGNED, 2, 0, linear=True, size2m=True)
    table.update_region_bits(np.array([4, 5]), set_bits=F_VALIDATED)
    assert entry(table, 5 * R + 3) == (F_ASSIGNED | F_VALIDATED, 2, R, True)


def test_smash_makes_512_linear_4k_entries_and_copies_vmpl_masks(table):
    table.set_range(2 * R, R, F_ASSIGNED | F_VALIDATED, 3, 0x200, linear=True, size2m=True)
    table.set_perms(2 * R, (1, 0, 4))
    table.smash(2)
    assert table.region_form(2) == F_ASSIGNED | F_VALIDATED | F_LINEAR
    assert entry(table, 2 * R + 77) == (F_ASSIGNED | F_VALIDATED, 3, 0x200 + 77, False)
    assert table.perms(2 * R + 77) == (1, 0, 4) and table.perms(3 * R) == (0, 0, 0)
    table.drop_perms(2 * R, R)
    assert table.perms(2 * R + 77) == (0, 0, 0)
    table.set_perms(0, (0, 0, 0))
    assert table.nbytes == RmpTable(REGIONS * R).nbytes   # no masks kept, no slots used


def test_a_4k_write_into_a_2m_entry_smashes_it_first(table):
    table.set_range(0, R, 0, 0, 0x400, linear=False, size2m=True)
    table.set_range(3, 1, F_ASSIGNED, 2, 0x3, linear=True, size2m=False)
    assert not table.region_form(0) & F_2M
    assert entry(table, 3) == (F_ASSIGNED, 2, 3, False)
    assert entry(table, 4) == (0, 0, 0x404, False)       # consecutive from the 2M entry's GFN


# ------------------------------------------------------------------ the split, read with ast
INSTRUCTION_WORDS = ("rmpupdate", "psmash", "pvalidate", "rmpadjust", "rmpread", "fail", "rules",
                     "ledger", "npf", "nestedpagefault", "in_use")


def test_storage_exposes_no_instruction_semantics():
    names = [n for n in vars(rmptable) if not n.startswith("__")]
    names += [n for n, _ in inspect.getmembers(RmpTable) if not n.startswith("__")]
    names += list(vars(RmpTable(R)))
    assert not [n for n in names if any(w in n.lower() for w in INSTRUCTION_WORDS)]
    tree = ast.parse((HOST_DIR / "rmptable.py").read_text())
    imported = {(n.level, n.module) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {(0, a.name) for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert imported <= {(0, "__future__"), (0, "numpy"), (2, "units"), (1, "ranges")}


STORAGE_PRIVATE = {"_pool", "_didx", "didx", "_gfn_lo", "_gfn_hi", "_perms", "meta", "gfn_lo", "gfn_hi"}
REGION_ARRAYS = {"flags", "asid"}


def test_instructions_never_index_the_storage_arrays():
    tree = ast.parse((HOST_DIR / "rmp.py").read_text())
    rmp_class = next(c for c in tree.body if isinstance(c, ast.ClassDef) and c.name == "Rmp")
    in_rmp = {id(n) for n in ast.walk(rmp_class)}
    compat = {id(n) for f in ast.walk(rmp_class) if isinstance(f, ast.FunctionDef) and f.name in REGION_ARRAYS
              for n in ast.walk(f)}
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in STORAGE_PRIVATE:
            bad.append(f"line {node.lineno}: .{node.attr}")
        if (isinstance(node, ast.Attribute) and node.attr in REGION_ARRAYS and id(node) in in_rmp
                and id(node) not in compat):
            bad.append(f"line {node.lineno}: .{node.attr} outside its read-only property")
        if isinstance(node, ast.Subscript):
            chain = [n.attr for n in ast.walk(node.value) if isinstance(n, ast.Attribute)]
            if "table" in chain or REGION_ARRAYS & set(chain):
                bad.append(f"line {node.lineno}: subscript of the table")
    assert not bad, bad
    # every method the instructions call on the table is part of its public API
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Attribute) and n.value.attr == "table"}
    assert used and not [u for u in used if u.startswith("_") or not hasattr(RmpTable(R), u)]


def test_old_names_stay_importable_from_kit_host_rmp():
    for name in ("F_2M", "F_ASSIGNED", "F_DETAIL", "F_IMMUTABLE", "F_LINEAR", "F_VALIDATED", "F_VMSA",
                 "M_ASID", "MAX_ASID", "MAX_GFN", "RMPUPDATE_FAIL_INPUT", "RMPUPDATE_FAIL_PERMISSION",
                 "RMPUPDATE_FAIL_INUSE", "RMPUPDATE_FAIL_OVERLAP", "PSMASH_FAIL_INPUT",
                 "PSMASH_FAIL_PERMISSION", "PSMASH_FAIL_INUSE", "PSMASH_FAIL_BADADDR",
                 "PVALIDATE_FAIL_INPUT", "PVALIDATE_FAIL_PERMISSION", "PVALIDATE_FAIL_SIZEMISMATCH",
                 "PVALIDATE_FAIL_NOUPDATE", "RMPADJUST_FAIL_INPUT", "RMPADJUST_FAIL_PERMISSION",
                 "RMPADJUST_FAIL_SIZEMISMATCH", "VMPL_R", "VMPL_W", "VMPL_XU", "VMPL_XS", "VMPL_SSS",
                 "VMPL_ALL", "Rmp", "RmpEntry", "RmpRules"):
        assert hasattr(rmp_module, name), name
    assert rmp_module.F_ASSIGNED is rmptable.F_ASSIGNED and rmp_module.MAX_GFN == (1 << 39) - 1
