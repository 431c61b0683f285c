"""ASIDs, mirrors and moves (arch/x86/kvm/svm/sev.c: sev_asid_new, sev_vm_copy_enc_context_from,
sev_vm_move_enc_context_from; thread "[RFC] KVM: x86: Support KVM VMs sharing SEV context", 2021)."""
import errno

import pytest

from tests.kvm.conformance.helpers import errno_of
from kit.kvm import uapi as U

COPY, MOVE = U.KVM_CAP_VM_COPY_ENC_CONTEXT_FROM, U.KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM


def err(fn, *a, **kw) -> int:
    """The errno of a call that must fail (a success fails the test)."""
    code = errno_of(fn, *a, **kw)
    assert code, f"{getattr(fn, '__name__', fn)} succeeded; it must fail"
    return code


@pytest.fixture
def new_kvm(make_kvm):
    def build(min_asid=4, max_asid=6):
        return make_kvm("2GiB", 8, min_sev_asid=min_asid, max_sev_asid=max_asid)
    return build


def test_asid_ranges_exhaustion_and_recycling(new_kvm):
    k = new_kvm()
    sev = [k.create_vm(U.KVM_X86_SEV_VM) for _ in range(4)]
    assert [v.sev_init() or v.asid for v in sev[:3]] == [4, 5, 6]
    assert err(sev[3].sev_init) == errno.EBUSY and k.asids.recycles == 0   # nothing to reclaim
    snp = [k.create_vm(U.KVM_X86_SNP_VM) for _ in range(3)]
    assert [v.sev_init() or v.asid for v in snp] == [1, 2, 3]              # ES/SNP: [1, min-1]
    sev[0].destroy()                                                        # only marked for reclaim
    assert 4 in k.asids.reclaim
    assert sev[3].sev_init() == 0 and sev[3].asid == 4 and k.asids.recycles == 1
    assert k.host.ledger.totals["wbinvd"] == 8 and k.host.ledger.totals["df_flush"] == 1


def test_no_es_asids_when_min_is_1(new_kvm):
    k = new_kvm(min_asid=1, max_asid=6)
    assert err(k.create_vm(U.KVM_X86_SNP_VM).sev_init) == errno.ENOTTY


def test_sev_init_rules(new_kvm):
    k = new_kvm()
    assert err(k.create_vm().sev_init) == errno.EINVAL
    vm = k.create_vm(U.KVM_X86_SEV_VM)
    vm.create_vcpu(0)
    assert err(vm.sev_init) == errno.EINVAL
    vm = k.create_vm(U.KVM_X86_SEV_VM)
    vm.sev_init()
    assert err(vm.sev_init) == errno.EINVAL


def test_mirror_errors_in_order(new_kvm, make_kvm):
    k = new_kvm()
    src = k.create_vm(U.KVM_X86_SEV_VM)
    src.sev_init()
    dst = k.create_vm(U.KVM_X86_SEV_VM)
    assert err(dst.enable_cap, COPY, k) == errno.EBADF                       # not a VM fd
    assert err(src.enable_cap, COPY, src) == errno.EINVAL                     # same VM
    src.migration_in_progress = True
    assert err(dst.enable_cap, COPY, src) == errno.EBUSY
    src.migration_in_progress = False
    plain = k.create_vm(U.KVM_X86_SEV_VM)
    assert err(dst.enable_cap, COPY, plain) == errno.EINVAL                   # source not SEV
    withcpu = k.create_vm(U.KVM_X86_SEV_VM)
    withcpu.create_vcpu(0)
    assert err(withcpu.enable_cap, COPY, src) == errno.EINVAL                 # dst has vCPUs
    assert dst.enable_cap(COPY, src) == 0 and dst.asid == src.asid and dst.mirror_of is src
    assert err(k.create_vm(U.KVM_X86_SEV_VM).enable_cap, COPY, dst) == errno.EINVAL  # mirror of mirror
    assert err(dst.enable_cap, COPY, src) == errno.EINVAL                     # dst already SEV
    snp = k.create_vm(U.KVM_X86_SNP_VM)
    snp.sev_init()
    assert err(k.create_vm(U.KVM_X86_SNP_VM).enable_cap, COPY, snp) == errno.EINVAL
    k2 = make_kvm("2GiB", 8, min_sev_asid=4, max_sev_asid=6, block_snp_mirror=False)
    s2 = k2.create_vm(U.KVM_X86_SNP_VM)
    s2.sev_init()
    assert k2.create_vm(U.KVM_X86_SNP_VM).enable_cap(COPY, s2) == 0


def test_mirror_keeps_the_asid_until_it_goes(new_kvm):
    k = new_kvm()
    src, m = k.create_vm(U.KVM_X86_SEV_VM), k.create_vm(U.KVM_X86_SEV_VM)
    src.sev_init()
    m.enable_cap(COPY, src)
    src.destroy()
    assert src.asid not in k.asids.reclaim             # the mirror's reference keeps it
    m.destroy()
    assert src.asid in k.asids.reclaim


def test_move_rules(new_kvm):
    k = new_kvm()
    src = k.create_vm(U.KVM_X86_SEV_ES_VM)
    src.sev_init()
    assert err(k.create_vm(U.KVM_X86_SEV_VM).enable_cap, MOVE, src) == errno.EINVAL   # types differ
    src.create_vcpu(0)
    dst = k.create_vm(U.KVM_X86_SEV_ES_VM)
    assert err(dst.enable_cap, MOVE, src) == errno.EINVAL           # vCPU counts differ
    dst.create_vcpu(0)
    assert err(dst.enable_cap, MOVE, src) == errno.EINVAL           # VMSA not protected
    src.vcpus[0].vmsa_protected = True
    asid = src.asid
    assert dst.enable_cap(MOVE, src) == 0 and dst.asid == asid and src.dead
    assert err(src.set_memory_attributes, 0, 4096, 0) == errno.EIO
