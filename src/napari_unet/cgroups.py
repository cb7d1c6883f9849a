"""What the control groups of this process allow it: memory and CPUs.

On a cluster node (a SLURM job) or in a container (Docker, Kubernetes, a JupyterHub), the
kernel holds the process to its control group's limits, whatever the machine has: past its
memory limit the process is killed, however much memory the node has free; past its CPU
quota it is stopped for the rest of each period, so that PyTorch running one thread per core
of a 64-core node on a quota of 2 CPUs is many times slower than with 2 threads. Both
cgroup v2 and v1 are read; the tightest group along the hierarchy counts. Elsewhere
(macOS, Windows, no limit set) every function here returns None.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

#: A cgroup v1 limit at least this large is no limit (the kernel's "unlimited" is 2**63
#: rounded down to a page).
_NO_LIMIT = 2**60


def memory_headroom(proc: str = "/proc/self/cgroup",
                    root: str = "/sys/fs/cgroup") -> int | None:
    """The bytes this process's control groups let it allocate still: the least, over its
    group and every group above it, of the group's memory limit less what the group uses
    (the page cache it can drop not counted), as cgroup v2 (``memory.max``) or v1's memory
    controller (``memory.limit_in_bytes``) say; None where no group sets a limit."""
    rooms = [_room(group, *files) for group, files in _groups(
        proc, root, "memory",
        ("memory.max", "memory.current", "inactive_file"),
        ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"))]
    rooms = [r for r in rooms if r is not None]
    return min(rooms) if rooms else None


def cpu_quota(proc: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> int | None:
    """The CPUs this process's control groups give it (their CPU quota over its period,
    rounded up; the least along the hierarchy), as cgroup v2 (``cpu.max``) or v1
    (``cpu.cfs_quota_us``) say; None where no group sets a quota."""
    quotas = []
    for group, files in _groups(proc, root, "cpu", ("cpu.max",),
                                ("cpu.cfs_quota_us", "cpu.cfs_period_us")):
        try:
            if len(files) == 1:
                quota, period = (group / files[0]).read_text().split()[:2]
            else:
                quota, period = ((group / f).read_text().strip() for f in files)
            if quota not in ("max", "-1") and int(period) > 0:
                quotas.append(max(math.ceil(int(quota) / int(period)), 1))
        except (OSError, ValueError):
            continue
    return min(quotas) if quotas else None


def usable_cpus() -> int:
    """The CPUs this process may use: those it may run on (a cluster job's CPU set), no
    more than its control groups' quota gives (:func:`cpu_quota`)."""
    import os

    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        cpus = os.cpu_count() or 1
    quota = cpu_quota()
    return max(min(cpus, quota or cpus), 1)


def _groups(proc: str, root: str, controller: str, v2_files: tuple,
            v1_files: tuple) -> Iterator[tuple[Path, tuple]]:
    """``(folder, files)`` of this process's group of ``controller`` and of every group
    above it: under ``root`` with ``v2_files`` for cgroup v2 (one hierarchy for every
    controller), under the controller's own hierarchy with ``v1_files`` for v1. In a
    container, whose own group is mounted as the root, the group's path may not exist
    there: then the root alone."""
    try:
        lines = Path(proc).read_text().splitlines()
    except OSError:
        return
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            base, files = Path(root), v2_files
        elif controller in controllers.split(","):
            base, files = Path(root) / controllers, v1_files
            if not base.is_dir():  # mounted under the controller's name alone
                base = Path(root) / controller
        else:
            continue
        group = base / path.strip("/")
        if not group.is_dir():
            group = base
        while True:
            yield group, files
            if group == base or base not in group.parents:
                break
            group = group.parent


def _room(group: Path, limit_file: str, usage_file: str, cache: str) -> int | None:
    """A group's memory limit less its use, None where it sets none or cannot be read."""
    try:
        limit = (group / limit_file).read_text().strip()
        if limit == "max" or int(limit) >= _NO_LIMIT:
            return None
        used = int((group / usage_file).read_text())
    except (OSError, ValueError):
        return None
    try:
        stat = dict(line.split() for line in (group / "memory.stat").read_text().splitlines()
                    if line.count(" ") == 1)
        used -= int(stat.get(cache, 0))
    except (OSError, ValueError):
        pass
    return max(int(limit) - used, 0)
