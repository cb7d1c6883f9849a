"""The memory and CPUs a control group (a cluster job, a container) gives the process,
read from control groups made in a folder."""

from napari_unet import cgroups, memory


def _group(folder, files: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def test_a_cluster_jobs_memory_limit_is_the_memory_free(tmp_path, monkeypatch):
    """On a cluster node (or in a container) the job's control group, not the machine,
    says how much the process may take: beyond it the kernel kills it however much the
    node has free. The tightest group along the hierarchy counts, less what it uses (the
    page cache it can drop left out); v2 and v1 alike; no limit, no group: the machine's."""
    gb = 2**30
    proc = tmp_path / "cgroup"
    v2 = tmp_path / "v2"
    # cgroup v2, a SLURM job limited to 16 GB, using 5 GB of which 1 GB droppable cache;
    # its step and task groups below set no limit of their own
    proc.write_text("0::/system.slice/slurmstepd.scope/job_7/step_0/task_0\n")
    job = v2 / "system.slice" / "slurmstepd.scope" / "job_7"
    _group(job, {"memory.max": f"{16 * gb}\n", "memory.current": f"{5 * gb}\n",
                 "memory.stat": f"anon {4 * gb}\ninactive_file {gb}\n"})
    _group(job / "step_0" / "task_0", {"memory.max": "max\n", "memory.current": "0\n"})
    assert cgroups.memory_headroom(str(proc), str(v2)) == 12 * gb
    # a tighter limit below wins
    _group(job / "step_0", {"memory.max": f"{8 * gb}", "memory.current": f"{5 * gb}"})
    assert cgroups.memory_headroom(str(proc), str(v2)) == 3 * gb
    # no limit anywhere
    for folder in (job, job / "step_0"):
        (folder / "memory.max").write_text("max\n")
    assert cgroups.memory_headroom(str(proc), str(v2)) is None
    # cgroup v1's memory controller (a Docker container: its own group mounted as the root)
    proc.write_text("4:memory:/docker/0123abc\n1:cpu,cpuacct:/docker/0123abc\n")
    _group(tmp_path / "v1" / "memory", {
        "memory.limit_in_bytes": f"{4 * gb}", "memory.usage_in_bytes": f"{3 * gb}",
        "memory.stat": f"cache {gb}\ntotal_inactive_file {gb // 2}\n"})
    assert cgroups.memory_headroom(str(proc), str(tmp_path / "v1")) == gb + gb // 2
    assert cgroups.memory_headroom(str(tmp_path / "none"), str(v2)) is None  # no cgroups
    # the memory free is the smaller of the machine's and the group's
    monkeypatch.setattr(cgroups, "memory_headroom", lambda: gb)
    assert memory.free_memory() == gb
    monkeypatch.setattr(cgroups, "memory_headroom", lambda: None)
    machine = memory.free_memory()
    monkeypatch.setattr(cgroups, "memory_headroom", lambda: 10**6 * gb)
    assert abs(memory.free_memory() - machine) < gb  # the machine's, as it is now


def test_pytorch_runs_as_many_threads_as_the_cpu_quota_gives(tmp_path, monkeypatch):
    """In a container or a job limited to 2 CPUs of a large node, PyTorch started a thread
    for every core of the node and the kernel stopped them for most of each period: the
    quota is read (v2 and v1, the tightest along the hierarchy) and the threads fitted."""
    import torch

    from napari_unet import device

    proc, v2 = tmp_path / "cgroup", tmp_path / "v2"
    proc.write_text("0::/kubepods/pod1/box\n")
    _group(v2 / "kubepods" / "pod1", {"cpu.max": "150000 100000\n"})
    _group(v2 / "kubepods" / "pod1" / "box", {"cpu.max": "max 100000\n"})
    assert cgroups.cpu_quota(str(proc), str(v2)) == 2  # 1.5 CPUs: 2 threads
    proc.write_text("3:cpu,cpuacct:/slurm/uid_1/job_2\n")
    _group(tmp_path / "v1" / "cpu,cpuacct" / "slurm" / "uid_1" / "job_2",
           {"cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"})
    _group(tmp_path / "v1" / "cpu,cpuacct" / "slurm", {"cpu.cfs_quota_us": "400000",
                                                       "cpu.cfs_period_us": "100000"})
    assert cgroups.cpu_quota(str(proc), str(tmp_path / "v1")) == 4
    assert cgroups.cpu_quota(str(tmp_path / "none"), str(v2)) is None

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        torch.set_num_threads(2)
        monkeypatch.setattr(cgroups, "cpu_quota", lambda: 1)
        device.resolve_device("cpu")
        assert torch.get_num_threads() == 1
        assert device.describe_device(torch.device("cpu")) == "CPU (1 thread)"
        torch.set_num_threads(2)
        monkeypatch.setattr(cgroups, "cpu_quota", lambda: None)  # no quota: as they were
        device.resolve_device("cpu")
        assert torch.get_num_threads() == 2
        monkeypatch.setattr(cgroups, "cpu_quota", lambda: 1)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice stands
        device.resolve_device("cpu")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_worker_processes_follow_the_cpus_the_job_may_use(monkeypatch):
    """A GPU job given 4 CPUs of a 128-core node started 6 loader processes beside its
    training loop: the CPUs it may run on and its quota bound them."""
    import os
    from types import SimpleNamespace

    from napari_unet.loader import default_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    monkeypatch.setattr(cgroups, "cpu_quota", lambda: None)
    gpu, cpu = SimpleNamespace(type="cuda"), SimpleNamespace(type="cpu")
    assert cgroups.usable_cpus() == 4 and default_workers(gpu) == 3
    monkeypatch.setattr(cgroups, "cpu_quota", lambda: 2)
    assert cgroups.usable_cpus() == 2 and default_workers(gpu) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(128)), raising=False)
    monkeypatch.setattr(cgroups, "cpu_quota", lambda: None)
    assert default_workers(gpu) == 6 and default_workers(cpu) == 0
