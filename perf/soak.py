"""Soak of emberd (issue 19): --cycles create/start/stop/delete cycles, then --snapshot-cycles
snapshot/restore/delete cycles, by --clients concurrent clients, through one emberd on a scratch
state directory, booting Ember's test guest (jailed: emberd's default). Prints emberd's fd
count, thread count and RSS at the start, the middle (between the two phases) and the end,
and fails (exit 1) when:
  - a VM's exit is not accounted for: every VM created ends with exactly one EXITED event
    (exit code 0 from its Stop) and one DELETED event;
  - anything is left once every VM is deleted: an ember-vmm or ember-jailer process, a file
    in the VMs' or the snapshots' directories or the jails, a VM's cgroup, or a tap still held
    (each client's VMs use a tap of its own, made here; root only, else no taps);
  - emberd's fd or thread count at the end exceeds the start's by more than --slack.
The figures are the soak's result; nothing about speed is asserted.
  EMBER_BUILD_DIR=build /usr/bin/python3 perf/soak.py [--cycles 5000] [--snapshot-cycles 1000]
      [--clients 8]
"""
import argparse
import collections
import fcntl
import os
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import ember_client as ec  # noqa: E402
import faults_support as fs  # noqa: E402
from ember_client import api, grpc  # noqa: E402

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def figures(pid):
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    return {"fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": int(status["Threads"]),
            "rss_kib": int(status["VmRSS"].split()[0])}


def tap_is_free(name):
    """Whether no process holds the tap: attaching to it succeeds (a second attach of a
    single-queue tap is EBUSY)."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


class Events:
    """Every EXITED and DELETED event emberd publishes, counted per VM."""

    def __init__(self, stub):
        self.exited = collections.Counter()
        self.bad_exits = []
        self.deleted = collections.Counter()
        self.lock = threading.Lock()
        self.call = stub.WatchEvents(api.WatchEventsRequest())
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            for event in self.call:
                with self.lock:
                    if event.kind == api.Event.EXITED:
                        self.exited[event.vm_id] += 1
                        if event.exit.exit_code != 0:
                            self.bad_exits.append((event.vm_id, event.exit.reason))
                    elif event.kind == api.Event.DELETED:
                        self.deleted[event.vm_id] += 1
        except grpc.RpcError:
            pass


class Soak:
    def __init__(self, args):
        self.args = args
        self.cgroup_parent = f"ember-soak-{os.getpid()}"
        extra = [] if args.no_jail else ["--cgroup-parent", self.cgroup_parent]
        if args.no_jail:
            extra.append("--no-jail")
        self.emberd = ec.Emberd(max_vms=4 * args.clients + 8, extra_args=extra)
        self.stub = self.emberd.stub
        self.events = Events(self.stub)
        self.vm_ids = []
        self.ids_lock = threading.Lock()
        self.errors = []
        # Each client's VMs use a tap of its own. Jailed, ember-jailer makes it in the VM's own
        # network namespace, which ends with the VM; unjailed, it is made here, on the host, and
        # must be free again once its VMs are gone.
        self.taps = []
        self.host_taps = os.geteuid() == 0 and args.no_jail and not args.no_taps
        for c in range(args.clients if not args.no_taps else 0):
            name = f"esoak{os.getpid() % 10000}c{c}"
            if self.host_taps:
                subprocess.run(["ip", "tuntap", "add", "dev", name, "mode", "tap"], check=True)
            self.taps.append(name)

    def config(self, client):
        config = ec.config("idle")
        if self.taps:
            config.network_interfaces.add(iface_id="eth0", host_dev_name=self.taps[client],
                                          guest_mac=f"06:00:00:00:00:{client:02x}")
        return config

    def created(self, vm_id):
        with self.ids_lock:
            self.vm_ids.append(vm_id)

    def stop_and_delete(self, vm_id):
        stopped = self.stub.Stop(api.StopRequest(vm_id=vm_id), timeout=120)
        if stopped.state != api.Vm.STOPPED or stopped.exit.exit_code != 0:
            raise RuntimeError(f"{vm_id}: Stop left it {stopped.state} ({stopped.exit.reason})")
        self.stub.Delete(api.DeleteRequest(vm_id=vm_id), timeout=120)

    def lifecycle(self, client, cycles):
        for n in range(cycles):
            vm_id = f"c{client}-{n}"
            self.stub.Create(api.CreateRequest(vm_id=vm_id, config=self.config(client)),
                             timeout=120)
            self.created(vm_id)
            self.stub.Start(api.VmRequest(vm_id=vm_id), timeout=120)
            self.stop_and_delete(vm_id)
            self.progress()

    def snapshots(self, client, cycles):
        base = f"s{client}"
        self.stub.Create(api.CreateRequest(vm_id=base, config=ec.config("idle")), timeout=120)
        self.created(base)
        self.stub.Start(api.VmRequest(vm_id=base), timeout=120)
        self.stub.Pause(api.VmRequest(vm_id=base), timeout=120)
        for n in range(cycles):
            snapshot = self.stub.CreateSnapshot(api.CreateSnapshotRequest(vm_id=base),
                                                timeout=300)
            prefix = f"r{client}-{n}"
            clones = self.stub.Restore(api.RestoreRequest(
                snapshot_id=snapshot.snapshot_id, vm_id_prefix=prefix, count=1, resume=True),
                timeout=300)
            for clone in clones.vms:
                self.created(clone.vm_id)
                self.stop_and_delete(clone.vm_id)
            self.stub.DeleteSnapshot(api.DeleteSnapshotRequest(snapshot_id=snapshot.snapshot_id),
                                     timeout=120)
            self.progress()
        self.stop_and_delete(base)

    done = 0
    done_lock = threading.Lock()

    def progress(self):
        with self.done_lock:
            self.done += 1
            if self.done % 250 == 0:
                f = figures(self.emberd.proc.pid)
                print(f"  {self.done} cycles, {time.monotonic() - self.t0:.0f} s: "
                      f"fds {f['fds']} threads {f['threads']} rss {f['rss_kib']} KiB",
                      flush=True)

    def phase(self, name, work, total):
        shares = [total // self.args.clients + (1 if c < total % self.args.clients else 0)
                  for c in range(self.args.clients)]

        def run(client):
            try:
                work(client, shares[client])
            except Exception as error:  # noqa: BLE001 (reported and counted)
                self.errors.append(f"{name} client {client}: {error}")

        threads = [threading.Thread(target=run, args=(c,)) for c in range(self.args.clients)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - start
        print(f"{name}: {total} cycles by {self.args.clients} clients in {took:.0f} s "
              f"({total / took:.1f}/s)", flush=True)

    def leftovers(self):
        left = []
        state = self.emberd.state_dir
        for sub in ("vms", "snapshots"):
            entries = os.listdir(os.path.join(state, sub))
            if entries:
                left.append(f"{sub}/: {sorted(entries)[:5]} ({len(entries)})")
        for root, dirs, files in os.walk(state):
            if "ember-vmm" in root.split(os.sep) and (dirs or files) and root.endswith("ember-vmm"):
                left.append(f"jails: {root}: {sorted(dirs + files)[:5]}")
        procs = fs.vmm_processes(self.emberd.dir, self.cgroup_parent)
        if procs:
            left.append(f"processes: {procs}")
        cgroups = fs.vm_cgroups(self.cgroup_parent)
        if cgroups:
            left.append(f"cgroups under {self.cgroup_parent}: {sorted(cgroups)[:5]} "
                        f"({len(cgroups)})")
        for tap in self.taps if self.host_taps else []:
            if not tap_is_free(tap):
                left.append(f"tap {tap} still held")
        return left

    def accounting(self):
        time.sleep(1)  # the last events on their way
        with self.events.lock:
            wrong = [v for v in self.vm_ids
                     if self.events.exited[v] != 1 or self.events.deleted[v] != 1]
            return wrong, list(self.events.bad_exits)

    def run(self):
        pid = self.emberd.proc.pid
        rows = [("start", figures(pid))]
        self.t0 = time.monotonic()
        self.phase("create/start/stop/delete", self.lifecycle, self.args.cycles)
        rows.append(("middle", figures(pid)))
        self.phase("snapshot/restore/delete", self.snapshots, self.args.snapshot_cycles)
        rows.append(("end", figures(pid)))
        elapsed = time.monotonic() - self.t0
        print(f"\nemberd (pid {pid}) over {elapsed:.0f} s, {len(self.vm_ids)} VMs:")
        print(f"  {'':8} {'fds':>6} {'threads':>8} {'rss KiB':>9}")
        for name, f in rows:
            print(f"  {name:8} {f['fds']:>6} {f['threads']:>8} {f['rss_kib']:>9}")
        failures = list(self.errors)
        wrong, bad_exits = self.accounting()
        if wrong:
            failures.append(f"{len(wrong)} VMs without exactly one EXITED and one DELETED event: "
                            f"{wrong[:5]}")
        if bad_exits:
            failures.append(f"{len(bad_exits)} VMs exited with a non-zero code: {bad_exits[:3]}")
        failures += self.leftovers()
        start, end = rows[0][1], rows[-1][1]
        for key in ("fds", "threads"):
            if end[key] > start[key] + self.args.slack:
                failures.append(f"emberd's {key} grew from {start[key]} to {end[key]}")
        return failures

    def close(self):
        self.events.call.cancel()
        self.emberd.close()
        for tap in self.taps if self.host_taps else []:
            subprocess.run(["ip", "link", "del", tap], check=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=5000)
    parser.add_argument("--snapshot-cycles", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--slack", type=int, default=8,
                        help="fds or threads emberd may hold at the end beyond the start's")
    parser.add_argument("--no-jail", action="store_true", help="emberd --no-jail")
    parser.add_argument("--no-taps", action="store_true", help="VMs without a network device")
    args = parser.parse_args()
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("SKIPPED: /dev/kvm is missing or not usable")
        return ec.SKIP
    soak = Soak(args)
    try:
        failures = soak.run()
    finally:
        soak.close()
    for failure in failures:
        print("FAIL: " + failure)
    print("soak: " + ("FAILED" if failures else "passed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
