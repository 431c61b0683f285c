"""The arch-ops table (kit.kvm.x86_ops, the analogue of struct kvm_x86_ops): chosen by VM type in
Kvm.create_vm, replaceable per type or per VM, and called where the kernel calls its members."""
import errno

import pytest

from kit.errors import KvmError
from kit.kvm import snp
from kit.kvm import uapi as U
from kit.kvm.injection import FaultInjection
from kit.kvm.sev import SevInfo, SevX86Ops
from kit.kvm.snp import SnpX86Ops
from kit.kvm.x86_ops import GENERIC_X86_OPS, KvmX86InitOps, KvmX86Ops
from kit.units import PAGE_2M, PAGE_4K

GPA, MiB = 1 << 32, 1 << 20
P = U.KVM_MEMORY_ATTRIBUTE_PRIVATE


def snp_guest(kvm, size=4 * MiB):
    vm = kvm.create_vm(U.KVM_X86_SNP_VM)
    vm.sev_init()
    f = vm.create_guest_memfd(size)
    vm.set_user_memory_region2(1, U.KVM_MEM_GUEST_MEMFD, GPA, size, 0, 0, f)
    vm.set_memory_attributes(GPA, size, P)
    return vm, f, vm.create_vcpu(0)


@pytest.mark.parametrize("vm_type,table", [
    (U.KVM_X86_DEFAULT_VM, KvmX86Ops), (U.KVM_X86_SW_PROTECTED_VM, KvmX86Ops),
    (U.KVM_X86_SEV_VM, SevX86Ops), (U.KVM_X86_SEV_ES_VM, SevX86Ops), (U.KVM_X86_SNP_VM, SnpX86Ops)])
def test_create_vm_picks_the_table_of_the_vm_type(kvm, vm_type, table):
    vm = kvm.create_vm(vm_type)
    assert type(vm.x86_ops) is table and vm.x86_ops is kvm.x86_ops[vm_type]
    assert (vm.sev is None) == (table is KvmX86Ops)
    assert isinstance(vm.sev, SevInfo) or vm.sev is None


def test_vm_init_sets_what_svm_vm_init_sets(kvm):
    flags = {t: (kvm.create_vm(t).has_private_mem, kvm.create_vm(t).has_protected_state)
             for t in U.VM_TYPE_NAMES}
    assert flags == {U.KVM_X86_DEFAULT_VM: (False, False), U.KVM_X86_SW_PROTECTED_VM: (True, False),
                     U.KVM_X86_SEV_VM: (False, False), U.KVM_X86_SEV_ES_VM: (False, True),
                     U.KVM_X86_SNP_VM: (True, True)}


class Cap4K(SnpX86Ops):
    """An experiment: SNP with private mappings never above 4K."""

    def __init__(self):
        self.calls = []

    def private_max_mapping_level(self, vm, pfn):
        self.calls.append(pfn)
        return PAGE_4K


def test_a_user_private_max_mapping_level_changes_the_mapping_level(make_kvm):
    vm, f, cpu = snp_guest(make_kvm(gmem_hugepages=True))
    assert cpu.fault_in(GPA, private=True) is None and vm.faults_in[-1][1] == PAGE_2M
    ops = Cap4K()
    vm, f, cpu = snp_guest(make_kvm(gmem_hugepages=True, x86_ops={U.KVM_X86_SNP_VM: ops}))
    assert vm.x86_ops is ops
    assert cpu.fault_in(GPA, private=True) is None and vm.faults_in[-1] == (GPA >> 12, PAGE_4K, True)
    assert ops.calls == [f.folios[0]]
    assert vm.kvm.host.rmp.rmpread(f.folios[0]).pagesize == PAGE_2M   # prepare is still SNP's


class Recorder(KvmX86Ops):
    """The generic table, recording which members the generic code calls."""

    def __init__(self, prepare_rc=0):
        self.calls, self.prepare_rc = [], prepare_rc

    def vm_init(self, vm):
        self.calls.append("vm_init")

    def vm_destroy(self, vm):
        self.calls.append("vm_destroy")

    def vcpu_create(self, vcpu):
        self.calls.append(("vcpu_create", vcpu.id))

    def vcpu_free(self, vcpu):
        self.calls.append(("vcpu_free", vcpu.id))

    def gmem_prepare(self, vm, pfn, gfn, order):
        self.calls.append(("gmem_prepare", gfn, order))
        return self.prepare_rc


def test_one_vm_can_get_its_own_table_and_each_hook_is_called(kvm):
    ops = Recorder()
    vm = kvm.create_vm(U.KVM_X86_SW_PROTECTED_VM, x86_ops=ops)
    assert kvm.create_vm(U.KVM_X86_SW_PROTECTED_VM).x86_ops is GENERIC_X86_OPS
    f = vm.create_guest_memfd(2 * MiB)
    vm.set_user_memory_region2(0, U.KVM_MEM_GUEST_MEMFD, GPA, 2 * MiB, 0, 0, f)
    vm.set_memory_attributes(GPA, PAGE_4K, P)
    cpu = vm.create_vcpu(3)
    assert cpu.access(GPA) is None
    vm.destroy()
    assert ops.calls == ["vm_init", ("vcpu_create", 3), ("gmem_prepare", GPA >> 12, 0),
                         ("vcpu_free", 3), "vm_destroy"]


def test_a_failing_gmem_prepare_fails_the_fault_with_einval(kvm):
    vm = kvm.create_vm(U.KVM_X86_SW_PROTECTED_VM, x86_ops=Recorder(prepare_rc=-errno.EINVAL))
    f = vm.create_guest_memfd(2 * MiB)
    vm.set_user_memory_region2(0, U.KVM_MEM_GUEST_MEMFD, GPA, 2 * MiB, 0, 0, f)
    vm.set_memory_attributes(GPA, PAGE_4K, P)
    with pytest.raises(KvmError) as ei:
        vm.create_vcpu(0).access(GPA)
    assert ei.value.errno == errno.EINVAL and vm.faults_in == []


def test_gmem_invalidate_runs_on_every_folio_a_punch_frees(make_kvm):
    seen = []

    class Watch(SnpX86Ops):
        def gmem_invalidate(self, host, start, end):
            seen.append((start, end))
            super().gmem_invalidate(host, start, end)

    vm, f, cpu = snp_guest(make_kvm(gmem_hugepages=True, x86_ops={U.KVM_X86_SNP_VM: Watch()}))
    assert cpu.fault_in(GPA, private=True) is None
    pfn = f.folios[0]
    f.fallocate(U.FALLOC_FL_KEEP_SIZE | U.FALLOC_FL_PUNCH_HOLE, 0, PAGE_2M)
    assert seen == [(pfn, pfn + PAGE_2M // PAGE_4K)] and not vm.kvm.host.rmp.rmpread(pfn).assigned


def test_the_rmp_fault_hook_is_reached_through_the_table(make_kvm):
    seen = []

    class Watch(SnpX86Ops):
        def handle_rmp_fault(self, vcpu, gpa, error_code):
            seen.append((vcpu.id, gpa))
            super().handle_rmp_fault(vcpu, gpa, error_code)

    vm, f, cpu = snp_guest(make_kvm(gmem_hugepages=True, x86_ops={U.KVM_X86_SNP_VM: Watch()}))
    assert cpu.fault_in(GPA, private=True) is None
    assert snp.guest_pvalidate(cpu, GPA + PAGE_4K, PAGE_4K, True) == 0
    assert seen == [(0, GPA + PAGE_4K)]


def test_a_vendor_without_sev_tables_cannot_back_sev_types(make_kvm):
    generic = KvmX86InitOps({U.KVM_X86_DEFAULT_VM: GENERIC_X86_OPS})
    with pytest.raises(ValueError, match="no arch ops"):
        make_kvm(init_ops=generic)
    k = make_kvm(init_ops=generic, vm_types=(U.KVM_X86_DEFAULT_VM,))
    assert k.asids is None and k.create_vm().x86_ops is GENERIC_X86_OPS
    with pytest.raises(ValueError, match="x86_ops"):
        make_kvm(x86_ops={7: GENERIC_X86_OPS})


def test_sev_ioctls_on_a_vm_without_sev_keep_their_errors(kvm):
    vm = kvm.create_vm()
    for fn, args, want in ((vm.sev_init, (), errno.EINVAL),
                           (vm.memory_encrypt_reg_region, (0x1000, 0x1000), errno.ENOTTY),
                           (vm.memory_encrypt_unreg_region, (0x1000, 0x1000), errno.ENOTTY),
                           (kvm.create_vm(U.KVM_X86_SEV_VM).enable_cap,
                            (U.KVM_CAP_VM_COPY_ENC_CONTEXT_FROM, vm), errno.EINVAL)):
        with pytest.raises(KvmError) as ei:
            fn(*args)
        assert ei.value.errno == want


def test_a_default_vm_becomes_an_sev_mirror_and_its_destroy_unlinks(kvm):
    """sev_vm_copy_enc_context_from does not check the destination's type (the kernel's
    sev_migrate_tests.c mirrors into default VMs): the mirror gets SEV state and the SEV table."""
    src = kvm.create_vm(U.KVM_X86_SEV_VM)
    src.sev_init()
    mirror = kvm.create_vm()
    assert mirror.enable_cap(U.KVM_CAP_VM_COPY_ENC_CONTEXT_FROM, src) == 0
    assert mirror.x86_ops is kvm.x86_ops[U.KVM_X86_SEV_VM] and mirror.sev.active
    assert (mirror.asid, mirror.mirror_of, src.mirrors) == (src.asid, src, [mirror])
    mirror.destroy()
    assert src.mirrors == [] and src.asid not in kvm.asids.reclaim


def test_sev_state_is_one_object_with_the_old_attribute_names(kvm):
    a, b = kvm.create_vm(U.KVM_X86_SEV_VM), kvm.create_vm(U.KVM_X86_SEV_VM)
    a.sev_init()
    a.memory_encrypt_reg_region(0x1000, 0x2000)
    b.enable_cap(U.KVM_CAP_VM_COPY_ENC_CONTEXT_FROM, a)
    assert (a.sev.asid, a.sev.active, a.sev.regions_list, a.sev.mirror_vms) == \
        (a.asid, a.sev_active, a.enc_regions, a.mirrors) == (a.asid, True, [(0x1000, 0x2000)], [b])
    assert b.sev.enc_context_owner is b.mirror_of is a
    a.migration_in_progress = True
    assert a.sev.migration_in_progress
    plain = kvm.create_vm()
    assert (plain.asid, plain.sev_active, plain.mirror_of, plain.mirrors) == (0, False, None, [])
    with pytest.raises(AttributeError):
        plain.migration_in_progress = True


def test_fault_injection_is_one_dataclass_with_the_old_knob_names(make_kvm):
    k = make_kvm()
    vm = k.create_vm(U.KVM_X86_SW_PROTECTED_VM)
    vm.xa_reserve_fails = True
    assert vm.fault_injection == FaultInjection(xa_reserve_fails=True)
    k.snp_decommission_fails, k.page_reclaim_fails = True, True
    assert k.fault_injection == FaultInjection(snp_decommission_fails=True, page_reclaim_fails=True)
    vm.launch_fw_errors[5] = 0x16
    assert vm.fault_injection.launch_fw_errors == {5: 0x16}
    # a knob on the Kvm applies to all its VMs
    k2 = make_kvm(fault_injection=FaultInjection(xa_reserve_fails=True))
    with pytest.raises(KvmError) as ei:
        k2.create_vm(U.KVM_X86_SW_PROTECTED_VM).set_memory_attributes(0, PAGE_4K, P)
    assert ei.value.errno == errno.ENOMEM


def test_decommission_failure_from_the_kvm_knob_leaks_the_asid(make_kvm):
    k = make_kvm(min_sev_asid=4, max_sev_asid=6)
    vm = k.create_vm(U.KVM_X86_SNP_VM)
    vm.sev_init()
    k.fault_injection.snp_decommission_fails = True
    vm.destroy()
    assert k.leaked_asids == {vm.asid} == k.asids.leaked and vm.asid not in k.asids.reclaim
