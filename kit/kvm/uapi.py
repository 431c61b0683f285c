"""KVM uAPI constants with the kernel's names and values.

Sources: include/uapi/linux/kvm.h, arch/x86/include/uapi/asm/kvm.h, include/uapi/linux/
kvm_para.h (hypercall numbers and KVM_E* codes), include/uapi/linux/falloc.h; values as listed
in the kit's reference notes (kvm-uapi.md) and checked against stored copies of kvm.h.
"""

# VM types (arch/x86/include/uapi/asm/kvm.h)
KVM_X86_DEFAULT_VM = 0
KVM_X86_SW_PROTECTED_VM = 1
KVM_X86_SEV_VM = 2
KVM_X86_SEV_ES_VM = 3
KVM_X86_SNP_VM = 4
VM_TYPE_NAMES = {0: "KVM_X86_DEFAULT_VM", 1: "KVM_X86_SW_PROTECTED_VM", 2: "KVM_X86_SEV_VM",
                 3: "KVM_X86_SEV_ES_VM", 4: "KVM_X86_SNP_VM"}

# memslot flags
KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1
KVM_MEM_GUEST_MEMFD = 1 << 2

# memory attributes
KVM_MEMORY_ATTRIBUTE_PRIVATE = 1 << 3

# guest_memfd flags
GUEST_MEMFD_FLAG_MMAP = 1 << 0
GUEST_MEMFD_FLAG_INIT_SHARED = 1 << 1

# fallocate modes (include/uapi/linux/falloc.h)
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02

# capabilities
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_VM_COPY_ENC_CONTEXT_FROM = 197
KVM_CAP_EXIT_HYPERCALL = 201
KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM = 206
KVM_CAP_USER_MEMORY2 = 231
KVM_CAP_MEMORY_FAULT_INFO = 232
KVM_CAP_MEMORY_ATTRIBUTES = 233
KVM_CAP_GUEST_MEMFD = 234
KVM_CAP_VM_TYPES = 235
KVM_CAP_GUEST_MEMFD_FLAGS = 244

# exits
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_MMIO = 6
KVM_EXIT_MEMORY_FAULT = 39
KVM_MEMORY_EXIT_FLAG_PRIVATE = 1 << 3
KVM_EXIT_HYPERCALL_LONG_MODE = 1 << 0

# hypercalls and their guest-visible errors (include/uapi/linux/kvm_para.h)
KVM_HC_MAP_GPA_RANGE = 12
KVM_ENOSYS = 1000
KVM_EFAULT = 14
KVM_EINVAL = 22
KVM_EPERM = 1
KVM_EOPNOTSUPP = 95

# limits (include/linux/kvm_host.h, x86)
KVM_MEM_SLOTS_NUM = 32767                 # SHRT_MAX
KVM_INTERNAL_MEM_SLOTS = 3
KVM_USER_MEM_SLOTS = KVM_MEM_SLOTS_NUM - KVM_INTERNAL_MEM_SLOTS
KVM_MEM_MAX_NR_PAGES = (1 << 31) - 1
