"""A Windows job object through ctypes: the launched server's processes die when pytest's handle closes (no pytest
here).

The job is made with JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE: Windows ends every process in it when the last handle to
it closes, which happens when pytest exits in any way, a crash or a kill from Task Manager included. Its handle
is not inheritable, so the server never holds it open itself. Processes the server starts join the job with it.

The calls go through a `kernel32` object (ctypes' WinDLL on Windows); tests hand in a fake one and check the calls
made, on any platform.
"""

from __future__ import annotations

import ctypes
from typing import Any

#: subprocess.CREATE_NEW_PROCESS_GROUP (defined here: subprocess has it on Windows only).
CREATE_NEW_PROCESS_GROUP = 0x00000200
#: signal.CTRL_BREAK_EVENT: the console event a process group receives as Ctrl+Break.
CTRL_BREAK_EVENT = 1
JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x00002000
JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS = 9  # JobObjectExtendedLimitInformation
PROCESS_TERMINATE = 0x0001
PROCESS_SET_QUOTA = 0x0100
#: The exit code of processes ended by terminate().
KILLED_EXIT_CODE = 1


class JOBOBJECT_BASIC_LIMIT_INFORMATION(ctypes.Structure):
    """winnt.h's JOBOBJECT_BASIC_LIMIT_INFORMATION."""

    _fields_ = [
        ("PerProcessUserTimeLimit", ctypes.c_int64),
        ("PerJobUserTimeLimit", ctypes.c_int64),
        ("LimitFlags", ctypes.c_uint32),
        ("MinimumWorkingSetSize", ctypes.c_size_t),
        ("MaximumWorkingSetSize", ctypes.c_size_t),
        ("ActiveProcessLimit", ctypes.c_uint32),
        ("Affinity", ctypes.c_size_t),
        ("PriorityClass", ctypes.c_uint32),
        ("SchedulingClass", ctypes.c_uint32),
    ]


class IO_COUNTERS(ctypes.Structure):
    """winnt.h's IO_COUNTERS."""

    _fields_ = [(name, ctypes.c_uint64) for name in (
        "ReadOperationCount", "WriteOperationCount", "OtherOperationCount",
        "ReadTransferCount", "WriteTransferCount", "OtherTransferCount")]


class JOBOBJECT_EXTENDED_LIMIT_INFORMATION(ctypes.Structure):
    """winnt.h's JOBOBJECT_EXTENDED_LIMIT_INFORMATION."""

    _fields_ = [
        ("BasicLimitInformation", JOBOBJECT_BASIC_LIMIT_INFORMATION),
        ("IoInfo", IO_COUNTERS),
        ("ProcessMemoryLimit", ctypes.c_size_t),
        ("JobMemoryLimit", ctypes.c_size_t),
        ("PeakProcessMemoryUsed", ctypes.c_size_t),
        ("PeakJobMemoryUsed", ctypes.c_size_t),
    ]


class JobError(OSError):
    """A kernel32 call that failed, with its name and GetLastError code."""

    def __init__(self, call: str, code: int) -> None:
        super().__init__(f"{call} failed (Windows error {code})")
        self.call, self.code = call, code


def kernel32() -> Any:
    """The real kernel32 (Windows only), with argument and result types set for the calls made here."""
    lib = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
    handle, dword, bool_ = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int
    for name, res, args in (
            ("CreateJobObjectW", handle, [ctypes.c_void_p, ctypes.c_wchar_p]),
            ("SetInformationJobObject", bool_, [handle, ctypes.c_int, ctypes.c_void_p, dword]),
            ("OpenProcess", handle, [dword, bool_, dword]),
            ("AssignProcessToJobObject", bool_, [handle, handle]),
            ("TerminateJobObject", bool_, [handle, ctypes.c_uint]),
            ("CloseHandle", bool_, [handle]),
            ("GenerateConsoleCtrlEvent", bool_, [dword, dword])):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


def _last_error() -> int:
    get = getattr(ctypes, "get_last_error", None)
    return int(get()) if get is not None else 0


def _check(ok: Any, call: str) -> Any:
    if not ok:
        raise JobError(call, _last_error())
    return ok


class JobObject:
    """A job object that kills its processes when closed; `assign` a process, `terminate` them all, `close`."""

    def __init__(self, api: Any = None) -> None:
        self._api = api if api is not None else kernel32()
        self.handle = _check(self._api.CreateJobObjectW(None, None), "CreateJobObjectW")
        info = JOBOBJECT_EXTENDED_LIMIT_INFORMATION()
        info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        try:
            _check(self._api.SetInformationJobObject(self.handle, JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS,
                                                     ctypes.byref(info), ctypes.sizeof(info)),
                   "SetInformationJobObject")
        except OSError:
            self.close()
            raise

    def assign(self, pid: int) -> None:
        """Put the process with this PID in the job (its later children join it too)."""
        process = _check(self._api.OpenProcess(PROCESS_SET_QUOTA | PROCESS_TERMINATE, False, pid), "OpenProcess")
        try:
            _check(self._api.AssignProcessToJobObject(self.handle, process), "AssignProcessToJobObject")
        finally:
            self._api.CloseHandle(process)

    def terminate(self, exit_code: int = KILLED_EXIT_CODE) -> None:
        """End every process in the job now."""
        if self.handle:
            _check(self._api.TerminateJobObject(self.handle, exit_code), "TerminateJobObject")

    def close(self) -> None:
        """Close pytest's handle: the processes still in the job end with it; safe to call twice."""
        if self.handle:
            handle, self.handle = self.handle, None
            self._api.CloseHandle(handle)


def ctrl_break(group: int, api: Any = None) -> bool:
    """Send Ctrl+Break to a console process group (a process started with CREATE_NEW_PROCESS_GROUP and its
    children); False where it cannot be sent (no console shared with it)."""
    api = api if api is not None else kernel32()
    return bool(api.GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, group))
