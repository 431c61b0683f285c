"""Shared by the conformance tests."""
from kit.errors import KvmError


def errno_of(fn, *args, **kwargs) -> int:
    """Call ``fn``; the kernel errno it failed with, or 0 when it succeeded."""
    try:
        fn(*args, **kwargs)
    except KvmError as e:
        return e.errno
    return 0
