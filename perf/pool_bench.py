"""emberd's VMM pool (issue 18), driven by perf/run: Create+Start and Restore through emberd with
ember-vmm processes started ahead (--vmm-pool) beside the same without a pool, in the same run;
the pool's idle cost per slot. Prints perf/run's result lines:
  api_create_start_to_boot_ms_unjailed_pool  Create + Start to BOOTED with a pool (each run
                               waits until the pool has refilled: the VMM was ready before it
                               was asked for), beside --no-jail without one
  api_restore_ms_128mib_unjailed_pool  one Restore of one clone (resumed) of a 128 MiB
                               snapshot, client time, with a pool beside none
  clones_per_s_emberd_unjailed_pool  one Restore of --clones clones (resumed) of a 128 MiB
                               snapshot, clones per second of the call, with a pool of
                               --clones slots beside none
  api_create_start_to_boot_ms_jailed_pool, api_restore_ms_128mib_jailed_pool,
  clones_per_s_emberd_jailed_pool
                               the same three through a jailed emberd (the default; as root),
                               its pool's slots jailed ahead, beside a jailed emberd without one
  vmm_pool_slot_rss_kib, vmm_pool_slot_fds, vmm_pool_slot_cpu_ms
                               one idle slot's RSS, open fds, and the CPU it used to get ready
  vmm_pool_jailed_slot_rss_kib, _fds, _cpu_ms
                               the same of one idle jailed slot: its ember-vmm and the jailer's
                               stand-in together; with its uid and cgroup (it holds both)
Medians of --runs; the machine's load is printed. Nothing is asserted."""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
import ember_client as ec  # noqa: E402
from ember_client import api  # noqa: E402


def idle_slots(emberd):
    """The pool's idle slots: its slots that are no VM's ember-vmm."""
    vms = {vm.pid for vm in emberd.stub.List(api.ListRequest(), timeout=10).vms}
    return [p for p in ec.pool_slots(emberd.proc.pid) if p not in vms]


def wait_pool(emberd, size, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len(idle_slots(emberd)) >= size:
            return True
        time.sleep(0.01)
    return False


def create_start_boot(stub, vm_id):
    events = stub.WatchEvents(api.WatchEventsRequest())
    t0 = time.monotonic()
    stub.Create(api.CreateRequest(vm_id=vm_id, config=ec.config()), timeout=60)
    vm = stub.Start(api.VmRequest(vm_id=vm_id), timeout=60)
    for event in events:
        if event.vm_id == vm_id and event.kind == api.Event.BOOTED:
            events.cancel()
            return (time.monotonic() - t0) * 1000, vm.pid
    raise RuntimeError(f"{vm_id}: no BOOTED event")


def jail_flags(jailed):
    return [] if jailed else ["--no-jail"]


def pool_size(jailed, per_kind):
    """The slots a pool of `per_kind` keeps: jailed, that many of each kind (boots, and
    restores with the snapshot group)."""
    return 2 * per_kind if jailed else per_kind


def create_latency(args, jailed, pool):
    flags = jail_flags(jailed) + (["--vmm-pool", "2"] if pool else [])
    emberd = ec.Emberd(extra_args=flags)
    samples, hits = [], 0
    try:
        for i in range(args.runs):
            slots = set()
            if pool:
                wait_pool(emberd, pool_size(jailed, 2), timeout=30)
                slots = set(idle_slots(emberd))
            ms, pid = create_start_boot(emberd.stub, f"lat-{i}")
            hits += pid in slots
            samples.append(ms)
            emberd.stub.Stop(api.StopRequest(vm_id=f"lat-{i}"), timeout=60)
            emberd.stub.Delete(api.DeleteRequest(vm_id=f"lat-{i}"), timeout=60)
            if args.verbose:
                print(f"# create_start_to_boot jailed={jailed} pool={pool} {ms:.2f} ms",
                      file=sys.stderr)
    finally:
        emberd.close()
    return statistics.median(samples), hits


def snapshot_of(stub):
    stub.Create(api.CreateRequest(vm_id="src", config=ec.config("idle", mem=128)), timeout=60)
    stub.Start(api.VmRequest(vm_id="src"), timeout=60)
    while not stub.Get(api.VmRequest(vm_id="src"), timeout=30).boot_time_us:
        time.sleep(0.01)
    stub.Pause(api.VmRequest(vm_id="src"), timeout=60)
    return stub.CreateSnapshot(api.CreateSnapshotRequest(vm_id="src"), timeout=120).snapshot_id


def restore_seconds(args, flags, pool, count):
    """Seconds of each of --runs Restores of `count` clones (resumed) of a 128 MiB snapshot,
    through an emberd with `flags` and, with `pool`, a pool of `count` slots refilled before
    each Restore."""
    emberd = ec.Emberd(extra_args=flags + (["--vmm-pool", str(count)] if pool else []))
    jailed = "--no-jail" not in flags
    samples = []
    try:
        stub = emberd.stub
        snapshot = snapshot_of(stub)
        for run in range(args.runs):
            if pool:
                wait_pool(emberd, pool_size(jailed, count), timeout=60)
            t0 = time.monotonic()
            restored = stub.Restore(api.RestoreRequest(
                snapshot_id=snapshot, vm_id_prefix=f"c{run}", count=count, resume=True),
                timeout=300)
            samples.append(time.monotonic() - t0)
            for vm in restored.vms:
                stub.Stop(api.StopRequest(vm_id=vm.vm_id), timeout=60)
                stub.Delete(api.DeleteRequest(vm_id=vm.vm_id), timeout=60)
            if args.verbose:
                print(f"# restore of {count} {flags} pool={pool} {samples[-1] * 1000:.1f} ms",
                      file=sys.stderr)
    finally:
        emberd.close()
    return samples


def restore_ms(args, jailed, pool):
    return statistics.median(restore_seconds(args, jail_flags(jailed), pool, 1)) * 1000


def clones_per_s(args, flags, pool):
    return statistics.median(args.clones / s for s in restore_seconds(args, flags, pool,
                                                                       args.clones))


def slot_cost(jailed):
    """One idle slot's RSS (KiB), fds and CPU ms; jailed, its ember-vmm's and its stand-in's
    together, and the ember-vmm's uid and cgroups."""
    emberd = ec.Emberd(extra_args=jail_flags(jailed) + ["--vmm-pool", "1"])
    try:
        wait_pool(emberd, pool_size(jailed, 1), timeout=30)
        time.sleep(0.5)  # settled
        pid = idle_slots(emberd)[0]
        pids = [pid]
        if jailed:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                pids += [int(p) for p in f.read().split()]
        rss = sum(ec.proc_rss_kib(p) for p in pids)
        fds = sum(ec.proc_fds(p) for p in pids)
        cpu_ms = 0.0
        for p in pids:
            with open(f"/proc/{p}/schedstat") as f:  # ns on a CPU, then wait, then slices
                cpu_ms += int(f.read().split()[0]) / 1e6
        uid, cgroups = None, []
        if jailed:
            with open(f"/proc/{pids[-1]}/status") as f:
                uid = next(line.split()[1] for line in f if line.startswith("Uid:"))
            with open(f"/proc/{pids[-1]}/cgroup") as f:
                cgroups = sorted({line.strip().split(":", 2)[2] for line in f
                                  if "_pool" in line})
        return rss, fds, cpu_ms, uid, cgroups
    finally:
        emberd.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--clones", type=int, default=8)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--rss-runs", type=int)  # perf/run passes it to every harness
    parser.add_argument("--rss-breakdown", action="store_true")
    args = parser.parse_args()
    with open("/proc/loadavg") as f:
        print(f"# load average at start: {' '.join(f.read().split()[:3])} on {os.cpu_count()} CPUs")
    for jailed in (False, True):
        if jailed and os.geteuid() != 0:
            print("# not root: no jailed figures (emberd's default jail needs root)")
            break
        kind = "jailed" if jailed else "unjailed"
        plain, _ = create_latency(args, jailed, pool=False)
        pooled, hits = create_latency(args, jailed, pool=True)
        print(f"api_create_start_to_boot_ms_{kind}_pool {pooled:.2f} ms | "
              f"api_create_start_to_boot_ms_{kind} {plain:.2f} ms | ratio {pooled / plain:.3g}")
        print(f"# {hits} of {args.runs} pooled {kind} Creates took a slot (the rest spawned)")
        plain = restore_ms(args, jailed, pool=False)
        pooled = restore_ms(args, jailed, pool=True)
        print(f"api_restore_ms_128mib_{kind}_pool {pooled:.2f} ms | "
              f"api_restore_ms_128mib_{kind} {plain:.2f} ms | ratio {pooled / plain:.3g}")
        plain = clones_per_s(args, jail_flags(jailed), pool=False)
        pooled = clones_per_s(args, jail_flags(jailed), pool=True)
        print(f"clones_per_s_emberd_{kind}_pool {pooled:.1f} clones/s | "
              f"clones_per_s_emberd_{kind} {plain:.1f} clones/s | ratio {pooled / plain:.3g}")
        rss, fds, cpu_ms, uid, cgroups = slot_cost(jailed)
        name = "vmm_pool_jailed_slot" if jailed else "vmm_pool_slot"
        print(f"{name}_rss_kib {rss} KiB")
        print(f"{name}_fds {fds} fds")
        print(f"{name}_cpu_ms {cpu_ms:.1f} ms")
        if jailed:
            print(f"# an idle jailed slot (ember-vmm and the jailer's stand-in) holds uid {uid} of "
                  f"the jail range and the cgroups {', '.join(cgroups)}")
    print("# an idle slot also holds a KVM VM (irqchip, PIT and its kvm-pit kernel thread), "
          "whose kernel memory is not in its RSS")


if __name__ == "__main__":
    main()
