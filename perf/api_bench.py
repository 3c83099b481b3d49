"""Control-plane benchmarks, driven by perf/run: emberd on a scratch state directory, Ember's
test guest, Debian's python3-grpcio as the client. Prints perf/run's result lines:
  api_create_start_to_boot_ms  Create + Start requests to the guest's boot-timer event (BOOTED
                               on WatchEvents), median of --runs, next to ember-vmm's own
                               start-to-boot-timer figure from the same runs; jailed
                               (emberd's default), and with _unjailed (--no-jail) the same
  api_vms_per_s                --vms VMs created and booted concurrently through emberd
  emberd_rss_per_vm            emberd's RSS growth per live VM with --vms VMs running
Nothing is asserted."""
import argparse
import concurrent.futures
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
import ember_client as ec  # noqa: E402
from ember_client import api  # noqa: E402


def create_start_boot(stub, vm_id):
    """Returns (client-side ms from Create to BOOTED, emberd's boot_time_us from Start)."""
    events = stub.WatchEvents(api.WatchEventsRequest())
    t0 = time.monotonic()
    stub.Create(api.CreateRequest(vm_id=vm_id, config=ec.config()), timeout=60)
    stub.Start(api.VmRequest(vm_id=vm_id), timeout=60)
    for event in events:
        if event.vm_id == vm_id and event.kind == api.Event.BOOTED:
            ms = (time.monotonic() - t0) * 1000
            events.cancel()
            return ms, event.boot_time_us
    raise RuntimeError(f"{vm_id}: no BOOTED event")


def wait_booted(stub, vm_id):
    stub.Create(api.CreateRequest(vm_id=vm_id, config=ec.config()), timeout=120)
    stub.Start(api.VmRequest(vm_id=vm_id), timeout=120)
    while not stub.Get(api.VmRequest(vm_id=vm_id), timeout=30).boot_time_us:
        time.sleep(0.005)


def create_start_latency(stub, args, name):
    """Medians of --runs: client ms from Create to BOOTED, ember-vmm's start-to-boot ms."""
    api_ms, vmm_us = [], []
    for i in range(args.runs):
        ms, us = create_start_boot(stub, f"lat-{i}")
        api_ms.append(ms)
        vmm_us.append(us)
        stub.Stop(api.StopRequest(vm_id=f"lat-{i}"), timeout=60)
        stub.Delete(api.DeleteRequest(vm_id=f"lat-{i}"), timeout=60)
        if args.verbose:
            print(f"# {name} create_start_to_boot {ms:.2f} ms (start to boot {us} us)",
                  file=sys.stderr)
    return statistics.median(api_ms), statistics.median(vmm_us) / 1000


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--vms", type=int, default=50)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    # Create + Start, jailed (emberd's default) and unjailed (--no-jail), in the same run.
    for name, flags in (("unjailed", ["--no-jail"]), ("jailed", [])):
        emberd = ec.Emberd(extra_args=flags)
        try:
            api_med, start_med = create_start_latency(emberd.stub, args, name)
        finally:
            emberd.close()
        suffix = "" if name == "jailed" else "_unjailed"
        print(f"api_create_start_to_boot_ms{suffix} {api_med:.2f} ms | api_start_to_boot_ms"
              f"{suffix} {start_med:.2f} ms | ratio {api_med / start_med:.2f}")
    emberd = ec.Emberd()
    try:
        stub = emberd.stub
        pid = emberd.proc.pid
        base_rss = ec.proc_rss_kib(pid)
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(args.vms) as pool:
            list(pool.map(lambda i: wait_booted(stub, f"load-{i}"), range(args.vms)))
        elapsed = time.monotonic() - t0
        rss = ec.proc_rss_kib(pid)
        print(f"api_vms_per_s {args.vms / elapsed:.1f} VMs/s")
        print(f"emberd_rss_per_vm {(rss - base_rss) / args.vms:.0f} KiB")
        print(f"# emberd RSS {base_rss} KiB idle, {rss} KiB with {args.vms} live VMs",
              file=sys.stderr)
    finally:
        emberd.close()


if __name__ == "__main__":
    main()
