"""FakeKernel32: the kernel32 calls of pytest_wan22.winjob, recorded and acted out on any platform.

A job object is a number; processes assigned to it are remembered by PID and, when the job is terminated or its
last handle closes with JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE set, killed with their descendants through psutil, as
Windows would (not waited for: the launcher reaps its own child). Ctrl+Break to a process group terminates that
process tree when `console` is true (a server that stops on it) and does nothing when `console` is "ignored" (a
server that does not); with `console` false there is no console to send it through and the call fails, as it does
for a pytest started without one. A name in `fail` makes that call fail (return 0).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Any

import psutil

from pytest_wan22 import winjob


@dataclass
class FakeKernel32:
    """Records each call as (name, args...) in `calls`."""

    console: bool | str = True
    fail: set[str] = field(default_factory=set)
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)
    handles: dict[int, int] = field(default_factory=dict)  # process handle -> pid
    _next: int = 100

    def _handle(self) -> int:
        self._next += 1
        return self._next

    def names(self) -> list[str]:
        """The calls' names, in order."""
        return [c[0] for c in self.calls]

    def CreateJobObjectW(self, attributes: Any, name: Any) -> int:
        self.calls.append(("CreateJobObjectW", attributes, name))
        if "CreateJobObjectW" in self.fail:
            return 0
        job = self._handle()
        self.jobs[job] = {"flags": 0, "pids": [], "open": True, "size": None}
        return job

    def SetInformationJobObject(self, job: int, info_class: int, info: Any, size: int) -> int:
        limits = ctypes.cast(info, ctypes.POINTER(winjob.JOBOBJECT_EXTENDED_LIMIT_INFORMATION)).contents
        flags = limits.BasicLimitInformation.LimitFlags
        self.calls.append(("SetInformationJobObject", job, info_class, flags, size))
        if "SetInformationJobObject" in self.fail:
            return 0
        self.jobs[job].update(flags=flags, size=size)
        return 1

    def OpenProcess(self, access: int, inherit: bool, pid: int) -> int:
        self.calls.append(("OpenProcess", access, inherit, pid))
        if "OpenProcess" in self.fail:
            return 0
        handle = self._handle()
        self.handles[handle] = pid
        return handle

    def AssignProcessToJobObject(self, job: int, process: int) -> int:
        self.calls.append(("AssignProcessToJobObject", job, process))
        if "AssignProcessToJobObject" in self.fail:
            return 0
        self.jobs[job]["pids"].append(self.handles[process])
        return 1

    def TerminateJobObject(self, job: int, code: int) -> int:
        self.calls.append(("TerminateJobObject", job, code))
        if "TerminateJobObject" in self.fail:
            return 0
        self._kill(self.jobs[job]["pids"])
        return 1

    def CloseHandle(self, handle: int) -> int:
        self.calls.append(("CloseHandle", handle))
        job = self.jobs.get(handle)
        if job is not None:
            job["open"] = False
            if job["flags"] & winjob.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE:
                self._kill(job["pids"])
        self.handles.pop(handle, None)
        return 1

    def GenerateConsoleCtrlEvent(self, event: int, group: int) -> int:
        self.calls.append(("GenerateConsoleCtrlEvent", event, group))
        if not self.console or "GenerateConsoleCtrlEvent" in self.fail:
            return 0
        if self.console is True:
            self._kill([group], gently=True)
        return 1

    @staticmethod
    def _kill(pids: list[int], gently: bool = False) -> None:
        procs: list[psutil.Process] = []
        for pid in pids:
            try:
                root = psutil.Process(pid)
                procs += [*root.children(recursive=True), root]
            except psutil.Error:
                continue
        for p in procs:
            try:
                p.terminate() if gently else p.kill()
            except psutil.Error:
                continue
