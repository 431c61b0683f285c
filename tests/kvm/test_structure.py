"""kit.kvm's shape, read from its source with ast/tokenize: generic code never imports SEV or SNP
code, no import circle, no function-local imports, one folio-order rule, one spelling per
constant, and the old names still importable."""
import ast
import io
import pathlib
import tokenize

import pytest

import kit.kvm

KVM = pathlib.Path(kit.kvm.__file__).parent
GENERIC = ("vm", "memslot", "gmem", "mmu", "x86_ops", "uapi", "content", "injection", "vmm", "probe", "ghcb",
           "limits")
ARCH = ("sev", "snp", "svm", "tdx")


def tree(name: str) -> ast.Module:
    return ast.parse((KVM / f"{name}.py").read_text())


def kvm_imports(name: str) -> set[str]:
    """The kit.kvm modules that module ``name`` imports (relative or absolute, any depth)."""
    out = set()
    for node in ast.walk(tree(name)):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                mods = [node.module] if node.module else [a.name for a in node.names]
            elif node.level == 0 and (node.module or "").startswith("kit.kvm."):
                mods = [node.module.split(".")[2]]
            else:
                continue
            out.update(m.split(".")[0] for m in mods)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[2] for a in node.names if a.name.startswith("kit.kvm."))
    return out


def modules() -> list[str]:
    return sorted(p.stem for p in KVM.glob("*.py") if p.stem != "__init__")


def test_every_module_is_classified():
    assert set(modules()) == set(GENERIC) | set(ARCH) | {"attributes", "probe"}


@pytest.mark.parametrize("name", GENERIC)
def test_generic_modules_do_not_import_sev_or_snp(name):
    assert not kvm_imports(name) & set(ARCH), f"kit.kvm.{name} imports {kvm_imports(name) & set(ARCH)}"


def test_no_import_cycle_in_kit_kvm():
    graph = {m: kvm_imports(m) & set(modules()) for m in modules()}
    done, stack = set(), []

    def visit(m):
        assert m not in stack, " -> ".join(stack[stack.index(m):] + [m])
        if m in done:
            return
        stack.append(m)
        for n in graph[m]:
            visit(n)
        stack.pop()
        done.add(m)
    for m in graph:
        visit(m)


@pytest.mark.parametrize("name", modules())
def test_no_function_local_imports_except_repr_html(name):
    for fn in ast.walk(tree(name)):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and not fn.name.startswith("_repr_"):
            local = [n for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))]
            assert not local, f"{name}.{fn.name} imports at line {local[0].lineno}"


def test_one_folio_order_rule():
    """Only kit.kvm.gmem.folio_order reads Kvm.gmem_hugepages (the 2M-folio series switch)."""
    readers = {(name, fn.name) for name in modules() for fn in ast.walk(tree(name))
               if isinstance(fn, ast.FunctionDef)
               for n in ast.walk(fn) if isinstance(n, ast.Attribute) and n.attr == "gmem_hugepages"
               and isinstance(n.ctx, ast.Load)}
    assert readers == {("gmem", "folio_order")}


@pytest.mark.parametrize("name", modules())
def test_no_literal_page_shift_pages_per_2m_or_errno(name):
    """One spelling per constant (kit.units.PAGE_SHIFT, PAGES_PER_2M; errno by name)."""
    toks = [t for t in tokenize.generate_tokens(io.StringIO((KVM / f"{name}.py").read_text()).readline)
            if t.type not in (tokenize.COMMENT, tokenize.STRING, tokenize.NL, tokenize.NEWLINE)]
    for a, b, c in zip(toks, toks[1:], toks[2:]):
        assert not (a.string in (">>", "<<") and b.string == "12"), f"{name}:{a.start[0]} shifts by 12"
        assert b.string != "512", f"{name}:{b.start[0]} literal 512"
        errno_number = a.string in ("KvmError", "errno") and b.string in ("(", "=") and c.type == tokenize.NUMBER
        assert not errno_number, f"{name}:{a.start[0]} errno number"


def test_old_names_stay_importable():
    from kit.kvm import gmem, memslot, mmu, snp, uapi, vm
    assert (mmu.Exit, mmu.Hypercall, mmu.MemoryFault) == (uapi.Exit, uapi.Hypercall, uapi.MemoryFault)
    assert mmu.KVM_MAP_GPA_RANGE_ENCRYPTED == uapi.KVM_MAP_GPA_RANGE_ENCRYPTED
    assert (vm.GuestMemfd, vm.Memslot, vm.Stat) == (gmem.GuestMemfd, memslot.Memslot, gmem.Stat)
    assert (vm.MADV_COLLAPSE, vm.MPOL_BIND, vm.PAGE_SHIFT) == (gmem.MADV_COLLAPSE, gmem.MPOL_BIND, 12)
    assert callable(snp.gmem_pfn) and callable(snp.gmem_allocate) and callable(snp.gmem_free_range)
    assert vm.UserMemory is kit.kvm.content.UserMemory
