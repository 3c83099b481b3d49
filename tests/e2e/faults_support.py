"""What the fault tests and the soak (perf/soak.py) look for once emberd has been hit: the
ember-vmm processes of one emberd, each VM's cgroup and its processes, and what is left on
disk. Reads /proc and the cgroup hierarchies only."""
import os
import signal


def cgroup_mounts():
    """The mount points of the cgroup hierarchies (v1 and v2)."""
    with open("/proc/self/mountinfo") as f:
        return sorted({line.split()[4] for line in f
                       if " - cgroup " in line or " - cgroup2 " in line})


def vmm_processes(path, cgroup_parent):
    """Pids of the ember-vmm and ember-jailer processes whose argv names `path` (an emberd's
    scratch directory) or that run in a cgroup under `cgroup_parent` (a jailed ember-vmm's
    argv names only paths in its jail)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{pid}/cgroup") as f:
                in_cgroup = f"/{cgroup_parent}/" in f.read()
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) in (b"ember-vmm", b"ember-jailer") and (
                in_cgroup or any(path.encode() in a for a in argv)):
            found.append(int(pid))
    return sorted(found)


def vm_cgroups(cgroup_parent):
    """The VM ids that have a cgroup under `cgroup_parent` in any hierarchy."""
    ids = set()
    for mount in cgroup_mounts():
        parent = os.path.join(mount, cgroup_parent)
        if os.path.isdir(parent):
            ids.update(d for d in os.listdir(parent) if os.path.isdir(os.path.join(parent, d)))
    return ids


def vm_pids(cgroup_parent, vm_id):
    """The processes in VM `vm_id`'s cgroup: its ember-vmm (and the jailer standing in for it)."""
    pids = set()
    for mount in cgroup_mounts():
        procs = os.path.join(mount, cgroup_parent, vm_id, "cgroup.procs")
        try:
            with open(procs) as f:
                pids.update(int(line) for line in f if line.strip())
        except OSError:
            continue
    return sorted(pids)


def signal_vm(cgroup_parent, vm_id, sig):
    """Sends `sig` to every process of the VM; returns their pids (none: the VM has none)."""
    pids = vm_pids(cgroup_parent, vm_id)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return pids


def kill_vm(cgroup_parent, vm_id):
    return signal_vm(cgroup_parent, vm_id, signal.SIGKILL)


def files_under(path):
    """Every file and directory below `path`, relative to it."""
    found = []
    for root, dirs, files in os.walk(path):
        found += [os.path.relpath(os.path.join(root, n), path) for n in dirs + files]
    return sorted(found)
