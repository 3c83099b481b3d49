"""Faults in the middle of an operation (issue 19), on a real emberd with real, jailed VMMs
booting Ember's test guest: a snapshot onto a filesystem that fills up, emberd's own state
directory full, and ember-vmm SIGKILLed during a snapshot, a restore and a drive swap. After
each: a clear error, emberd up, its records and the disk agreeing, and nothing left behind (no
process, file, jail or cgroup). Needs root (tmpfs mounts, signals to jailed VMMs) and KVM."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import ember_unittest
import ember_client as ec
import faults_support as fs
from ember_client import api, grpc


def call(method, request, timeout=60):
    try:
        return method(request, timeout=timeout), None
    except grpc.RpcError as error:
        return None, error


def wait_for(predicate, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.002)
    raise AssertionError(f"timed out waiting for {what}")


class Tmpfs:
    """A tmpfs of `size` at a new directory under the temporary directory (an allowed dir)."""

    def __init__(self, size):
        self.path = tempfile.mkdtemp(prefix="ember-faults-tmpfs-")
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                        self.path], check=True)

    def fill(self, leave=0):
        """Fills it up to `leave` bytes free."""
        st = os.statvfs(self.path)
        free = st.f_bavail * st.f_frsize - leave
        with open(os.path.join(self.path, "filler"), "wb") as f:
            while free > 0:
                chunk = min(free, 1 << 20)
                try:
                    f.write(b"\xff" * chunk)
                    f.flush()
                except OSError:
                    break
                free -= chunk

    def unfill(self):
        os.unlink(os.path.join(self.path, "filler"))

    def close(self):
        subprocess.run(["umount", "-l", self.path], check=False)
        os.rmdir(self.path)


class FaultsTest(unittest.TestCase):
    def start_emberd(self, state_dir=None):
        self.cgroup_parent = f"ember-faults-{os.getpid()}-{self.id().rsplit('.', 1)[-1][:20]}"
        extra = ["--cgroup-parent", self.cgroup_parent]
        if state_dir:
            extra += ["--state-dir", state_dir]  # the later --state-dir wins
        self.emberd = ec.Emberd(extra_args=extra)
        self.addCleanup(self.emberd.close)
        self.state_dir = state_dir or self.emberd.state_dir
        self.stub = self.emberd.stub

    def paused_vm(self, vm_id, config=None):
        self.stub.Create(api.CreateRequest(vm_id=vm_id, config=config or ec.config()),
                         timeout=60)
        self.stub.Start(api.VmRequest(vm_id=vm_id), timeout=60)
        self.stub.Pause(api.VmRequest(vm_id=vm_id), timeout=60)

    def assert_nothing_left_of(self, *vm_ids):
        """No process, directory, jail or cgroup of these VMs (all deleted or never made)."""
        vms = os.listdir(os.path.join(self.state_dir, "vms"))
        jails = os.path.join(self.state_dir, "jail", "ember-vmm")
        jails = os.listdir(jails) if os.path.isdir(jails) else []
        for vm_id in vm_ids:
            self.assertNotIn(vm_id, vms, f"{vm_id}'s directory is left")
            self.assertNotIn(vm_id, jails, f"{vm_id}'s jail is left")
        wait_for(lambda: not set(vm_ids) & fs.vm_cgroups(self.cgroup_parent), 10,
                 f"the cgroups of {vm_ids} to go")
        for vm_id in vm_ids:
            self.assertEqual(fs.vm_pids(self.cgroup_parent, vm_id), [])

    def assert_no_snapshot_files_but(self, *snapshot_ids):
        records = sorted(os.listdir(os.path.join(self.state_dir, "snapshots")))
        self.assertEqual(records, sorted(snapshot_ids))
        listed = sorted(s.snapshot_id for s in
                        self.stub.ListSnapshots(api.ListSnapshotsRequest(), timeout=30).snapshots)
        self.assertEqual(listed, sorted(snapshot_ids))

    def assert_emberd_up(self):
        self.assertIsNone(self.emberd.proc.poll(), "emberd ended: " + self.emberd.read_log()[-2000:])
        self.stub.List(api.ListRequest(), timeout=30)

    # --- a snapshot onto a filesystem that fills up -------------------------------------------

    def test_snapshot_onto_a_full_filesystem_fails_cleanly_and_keeps_the_earlier_one(self):
        self.start_emberd()
        small = Tmpfs("48m")
        self.addCleanup(small.close)
        self.paused_vm("full")
        first = self.stub.CreateSnapshot(api.CreateSnapshotRequest(
            vm_id="full", snapshot_dir=os.path.join(small.path, "first")), timeout=120)
        before = {n: open(os.path.join(small.path, "first", n), "rb").read()
                  for n in ("state", "memory")}
        small.fill(leave=16 << 10)

        _, error = call(self.stub.CreateSnapshot, api.CreateSnapshotRequest(
            vm_id="full", snapshot_dir=os.path.join(small.path, "second")), timeout=120)
        self.assertIsNotNone(error, "a snapshot onto a full filesystem succeeded")
        self.assertIn("No space left on device", error.details())
        # Nothing of the failed one, and the earlier one as it was.
        self.assertEqual(sorted(os.listdir(small.path)), ["filler", "first"])
        self.assertEqual(sorted(os.listdir(os.path.join(small.path, "first"))),
                         ["memory", "state"])
        for name, data in before.items():
            with open(os.path.join(small.path, "first", name), "rb") as f:
                self.assertEqual(f.read(), data, name)
        self.assert_no_snapshot_files_but(first.snapshot_id)
        # The VM goes on.
        self.assertEqual(self.stub.Get(api.VmRequest(vm_id="full"), timeout=30).state,
                         api.Vm.PAUSED)
        self.assertEqual(self.stub.Resume(api.VmRequest(vm_id="full"), timeout=60).state,
                         api.Vm.RUNNING)
        # The earlier snapshot restores (its MAC checks its files), and with room again a new
        # snapshot goes where the failed one would have.
        small.unfill()
        clones = self.stub.Restore(api.RestoreRequest(
            snapshot_id=first.snapshot_id, vm_id_prefix="from-first"), timeout=120)
        self.assertEqual(clones.vms[0].state, api.Vm.PAUSED)
        self.stub.Pause(api.VmRequest(vm_id="full"), timeout=60)
        self.stub.CreateSnapshot(api.CreateSnapshotRequest(
            vm_id="full", snapshot_dir=os.path.join(small.path, "second")), timeout=120)

    # --- emberd's own state directory full ----------------------------------------------------

    def test_a_full_state_directory_fails_requests_cleanly_and_emberd_stays_up(self):
        state = Tmpfs("256m")
        self.addCleanup(state.close)
        self.start_emberd(state_dir=os.path.join(state.path, "state"))
        self.paused_vm("before")
        state.fill()

        _, error = call(self.stub.Create, api.CreateRequest(vm_id="during", config=ec.config()))
        self.assertIsNotNone(error, "a VM was created with no room for its record")
        self.assertIn("No space left on device", error.details())
        _, error = call(self.stub.CreateSnapshot, api.CreateSnapshotRequest(vm_id="before"),
                        timeout=120)
        self.assertIsNotNone(error, "a snapshot was taken with no room for it")
        self.assert_emberd_up()
        self.assert_no_snapshot_files_but()
        self.assert_nothing_left_of("during")
        self.assertEqual(fs.vm_pids(self.cgroup_parent, "during"), [])
        # The VM that was there goes on; once there is room again, everything works.
        self.assertEqual(self.stub.Resume(api.VmRequest(vm_id="before"), timeout=60).state,
                         api.Vm.RUNNING)
        state.unfill()
        self.paused_vm("during")
        self.stub.CreateSnapshot(api.CreateSnapshotRequest(vm_id="during"), timeout=120)
        # A restarted emberd finds what the records say.
        self.emberd.kill9()
        self.emberd.start()
        self.stub = self.emberd.stub
        states = {vm.vm_id: vm.state for vm in self.stub.List(api.ListRequest(), timeout=30).vms}
        self.assertEqual(states, {"before": api.Vm.RUNNING, "during": api.Vm.PAUSED})

    # --- ember-vmm killed in the middle -------------------------------------------------------

    def test_vmm_killed_during_a_snapshot_is_reported_and_leaves_no_snapshot(self):
        self.start_emberd()
        target = tempfile.mkdtemp(prefix="ember-faults-snap-")
        self.addCleanup(shutil.rmtree, target, True)
        self.paused_vm("snapped")
        # Stopped, ember-vmm takes the request and cannot answer it: killed in the middle.
        self.assertTrue(fs.signal_vm(self.cgroup_parent, "snapped", signal.SIGSTOP))
        result = {}
        thread = threading.Thread(target=lambda: result.update(zip(("ok", "error"), call(
            self.stub.CreateSnapshot, api.CreateSnapshotRequest(
                vm_id="snapped", snapshot_dir=os.path.join(target, "s")), timeout=120))))
        thread.start()
        records = os.path.join(self.state_dir, "snapshots")
        wait_for(lambda: any(os.path.exists(os.path.join(records, d, "pending.json"))
                             for d in os.listdir(records)), what="the pending snapshot")
        fs.kill_vm(self.cgroup_parent, "snapped")
        thread.join(120)
        self.assertIsNone(result["ok"])
        self.assertEqual(result["error"].code(), grpc.StatusCode.UNAVAILABLE,
                         result["error"].details())
        vm = self.stub.Get(api.VmRequest(vm_id="snapped"), timeout=30)
        self.assertEqual((vm.state, vm.exit.signal), (api.Vm.STOPPED, signal.SIGKILL))
        self.assert_no_snapshot_files_but()
        self.assertEqual(os.listdir(target), [])
        self.stub.Delete(api.DeleteRequest(vm_id="snapped"), timeout=60)
        self.assert_nothing_left_of("snapped")

    def test_vmm_killed_during_a_restore_fails_it_and_leaves_no_clone(self):
        self.start_emberd()
        self.paused_vm("origin")
        snapshot = self.stub.CreateSnapshot(api.CreateSnapshotRequest(vm_id="origin"),
                                            timeout=120)
        vms = os.path.join(self.state_dir, "vms")
        for attempt in range(5):
            prefix = f"clone{attempt}"
            result = {}
            thread = threading.Thread(target=lambda: result.update(zip(("ok", "error"), call(
                self.stub.Restore, api.RestoreRequest(
                    snapshot_id=snapshot.snapshot_id, vm_id_prefix=prefix, count=3),
                timeout=120))))
            thread.start()
            # The second clone's VMM, as soon as emberd has recorded it (before its HELLO).
            victim = f"{prefix}-1"
            wait_for(lambda: os.path.exists(os.path.join(vms, victim, "vm.json")) or
                     not thread.is_alive(), what=f"{victim}'s launch")
            killed = wait_for(lambda: fs.kill_vm(self.cgroup_parent, victim) or
                              not thread.is_alive(), what=f"{victim}'s VMM")
            thread.join(120)
            if result["ok"] is not None:
                # The clone was done before the kill: not a kill mid-restore. Again.
                for vm in result["ok"].vms:
                    self.stub.Delete(api.DeleteRequest(vm_id=vm.vm_id, force=True), timeout=60)
                continue
            self.assertTrue(killed)
            self.assertIn(result["error"].code(),
                          (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE),
                          result["error"].details())
            self.assertNotIn(prefix, " ".join(
                vm.vm_id for vm in self.stub.List(api.ListRequest(), timeout=30).vms))
            self.assert_nothing_left_of(*(f"{prefix}-{i}" for i in range(3)))
            # The snapshot is intact and restores.
            self.assert_no_snapshot_files_but(snapshot.snapshot_id)
            clones = self.stub.Restore(api.RestoreRequest(
                snapshot_id=snapshot.snapshot_id, vm_id_prefix="again"), timeout=120)
            self.assertEqual(clones.vms[0].state, api.Vm.PAUSED)
            return
        self.fail("no restore was caught in the middle in 5 attempts")

    def test_vmm_killed_during_a_drive_swap_keeps_the_old_drive_in_the_record(self):
        self.start_emberd()
        scratch = tempfile.mkdtemp(prefix="ember-faults-drive-")
        self.addCleanup(shutil.rmtree, scratch, True)
        old, new = (os.path.join(scratch, n) for n in ("old", "new"))
        for path in (old, new):
            with open(path, "wb") as f:
                f.truncate(1 << 20)
            os.chmod(path, 0o666)  # the jailed VMM's uid opens it
        config = ec.config()
        config.drives.add(drive_id="data", path_on_host=old)
        self.stub.Create(api.CreateRequest(vm_id="swapped", config=config), timeout=60)
        self.stub.Start(api.VmRequest(vm_id="swapped"), timeout=60)
        self.assertTrue(fs.signal_vm(self.cgroup_parent, "swapped", signal.SIGSTOP))
        result = {}
        thread = threading.Thread(target=lambda: result.update(zip(("ok", "error"), call(
            self.stub.UpdateDrive, api.UpdateDriveRequest(
                vm_id="swapped", drive_id="data", path_on_host=new)))))
        thread.start()
        time.sleep(0.5)  # the request is on its way to the stopped VMM
        fs.kill_vm(self.cgroup_parent, "swapped")
        thread.join(60)
        self.assertIsNone(result["ok"])
        self.assertEqual(result["error"].code(), grpc.StatusCode.UNAVAILABLE,
                         result["error"].details())
        vm = self.stub.Get(api.VmRequest(vm_id="swapped"), timeout=30)
        self.assertEqual(vm.state, api.Vm.STOPPED)
        self.assertEqual(vm.config.drives[0].path_on_host, old)
        self.emberd.kill9()
        self.emberd.start()
        self.stub = self.emberd.stub
        vm = self.stub.Get(api.VmRequest(vm_id="swapped"), timeout=30)
        self.assertEqual((vm.state, vm.config.drives[0].path_on_host), (api.Vm.STOPPED, old))
        self.stub.Delete(api.DeleteRequest(vm_id="swapped"), timeout=60)
        self.assert_nothing_left_of("swapped")


if __name__ == "__main__":
    ec.require_kvm()
    if os.geteuid() != 0:
        print("SKIPPED: needs root (tmpfs mounts, signals to jailed VMMs)")
        sys.exit(ec.SKIP)
    ember_unittest.main()
