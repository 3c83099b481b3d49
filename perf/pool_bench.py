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
  clones_per_s_emberd_jailed   the same through a jailed emberd (the default; no pool: a jail
                               is its VM's own)
  vmm_pool_slot_rss_kib, vmm_pool_slot_fds, vmm_pool_slot_cpu_ms
                               one idle slot's RSS, open fds, and the CPU it used to get ready
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


def create_latency(args, pool):
    flags = ["--no-jail"] + (["--vmm-pool", "2"] if pool else [])
    emberd = ec.Emberd(extra_args=flags)
    samples, hits = [], 0
    try:
        for i in range(args.runs):
            slots = set()
            if pool:
                wait_pool(emberd, 2)
                slots = set(idle_slots(emberd))
            ms, pid = create_start_boot(emberd.stub, f"lat-{i}")
            hits += pid in slots
            samples.append(ms)
            emberd.stub.Stop(api.StopRequest(vm_id=f"lat-{i}"), timeout=60)
            emberd.stub.Delete(api.DeleteRequest(vm_id=f"lat-{i}"), timeout=60)
            if args.verbose:
                print(f"# create_start_to_boot pool={pool} {ms:.2f} ms", file=sys.stderr)
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
    samples = []
    try:
        stub = emberd.stub
        snapshot = snapshot_of(stub)
        for run in range(args.runs):
            if pool:
                wait_pool(emberd, count, timeout=30)
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


def restore_ms(args, pool):
    return statistics.median(restore_seconds(args, ["--no-jail"], pool, 1)) * 1000


def clones_per_s(args, flags, pool):
    return statistics.median(args.clones / s for s in restore_seconds(args, flags, pool,
                                                                       args.clones))


def slot_cost():
    emberd = ec.Emberd(extra_args=["--no-jail", "--vmm-pool", "1"])
    try:
        wait_pool(emberd, 1, timeout=30)
        time.sleep(0.5)  # settled
        pid = idle_slots(emberd)[0]
        rss = ec.proc_rss_kib(pid)
        fds = ec.proc_fds(pid)
        with open(f"/proc/{pid}/schedstat") as f:  # ns on a CPU, then wait, then slices
            cpu_ms = int(f.read().split()[0]) / 1e6
        return rss, fds, cpu_ms
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
    plain, _ = create_latency(args, pool=False)
    pooled, hits = create_latency(args, pool=True)
    print(f"api_create_start_to_boot_ms_unjailed_pool {pooled:.2f} ms | "
          f"api_create_start_to_boot_ms_unjailed {plain:.2f} ms | ratio {pooled / plain:.3g}")
    print(f"# {hits} of {args.runs} pooled Creates took a slot (the rest spawned)")
    plain = restore_ms(args, pool=False)
    pooled = restore_ms(args, pool=True)
    print(f"api_restore_ms_128mib_unjailed_pool {pooled:.2f} ms | "
          f"api_restore_ms_128mib_unjailed {plain:.2f} ms | ratio {pooled / plain:.3g}")
    plain = clones_per_s(args, ["--no-jail"], pool=False)
    pooled = clones_per_s(args, ["--no-jail"], pool=True)
    print(f"clones_per_s_emberd_unjailed_pool {pooled:.1f} clones/s | "
          f"clones_per_s_emberd_unjailed {plain:.1f} clones/s | ratio {pooled / plain:.3g}")
    if os.geteuid() == 0:
        jailed = clones_per_s(args, [], pool=False)
        print(f"clones_per_s_emberd_jailed {jailed:.1f} clones/s")
    rss, fds, cpu_ms = slot_cost()
    print(f"vmm_pool_slot_rss_kib {rss} KiB")
    print(f"vmm_pool_slot_fds {fds} fds")
    print(f"vmm_pool_slot_cpu_ms {cpu_ms:.1f} ms")
    print("# an idle slot also holds a KVM VM (irqchip, PIT and its kvm-pit kernel thread), "
          "whose kernel memory is not in its RSS")


if __name__ == "__main__":
    main()
