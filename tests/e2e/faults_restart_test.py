"""emberd SIGKILLed in the middle of an operation (issue 19, faults): during a Create, during a
Restore of many clones, during a DeleteSnapshot; then restarted. After the restart every VM is
known and running (or paused) or reported stopped, no ember-vmm runs that emberd does not know,
and nothing on disk refers to missing files (or is referred to by nothing). Real, jailed VMMs
booting Ember's test guest; needs root and KVM."""
import os
import sys
import threading
import time
import unittest

import ember_unittest
import ember_client as ec
import faults_support as fs
from ember_client import api, grpc
from faults_test import call, wait_for


class RestartTest(unittest.TestCase):
    def setUp(self):
        self.cgroup_parent = f"ember-faults-{os.getpid()}-{self.id().rsplit('.', 1)[-1][:20]}"
        self.emberd = ec.Emberd(extra_args=["--cgroup-parent", self.cgroup_parent])
        self.addCleanup(self.emberd.close)
        self.stub = self.emberd.stub
        self.state_dir = self.emberd.state_dir

    def in_thread(self, method, request, timeout=120):
        result = {}
        thread = threading.Thread(target=lambda: result.update(
            zip(("ok", "error"), call(method, request, timeout))))
        thread.start()
        return thread, result

    def kill_and_restart(self, thread):
        self.emberd.kill9()
        thread.join(60)
        self.emberd.start()
        self.stub = self.emberd.stub

    def assert_consistent(self):
        vms = {vm.vm_id: vm for vm in self.stub.List(api.ListRequest(), timeout=30).vms}
        # Every VM directory is a known VM's, with its record.
        vms_dir = os.path.join(self.state_dir, "vms")
        self.assertEqual(sorted(os.listdir(vms_dir)), sorted(vms))
        jails = os.path.join(self.state_dir, "jail", "ember-vmm")
        for jail in os.listdir(jails) if os.path.isdir(jails) else []:
            self.assertIn(jail, vms, f"the jail of VM {jail}, which emberd does not know")
        # A known VM that is not STOPPED runs; a VMM that runs is a known VM's that is not.
        for vm_id, vm in vms.items():
            if vm.state != api.Vm.STOPPED:
                self.assertTrue(fs.vm_pids(self.cgroup_parent, vm_id),
                                f"{vm_id} is {api.Vm.State.Name(vm.state)} with no VMM")
        live = {v for v, vm in vms.items() if vm.state != api.Vm.STOPPED}
        running = {v for v in fs.vm_cgroups(self.cgroup_parent)
                   if fs.vm_pids(self.cgroup_parent, v)}
        self.assertLessEqual(running, live, "an ember-vmm runs that emberd does not know")
        self.assertEqual(len(fs.vmm_processes(self.emberd.dir, self.cgroup_parent)) > 0,
                         bool(live))
        # Every snapshot record is listed and its files are there; every record is one.
        listed = {s.snapshot_id: s for s in
                  self.stub.ListSnapshots(api.ListSnapshotsRequest(), timeout=30).snapshots}
        records = os.path.join(self.state_dir, "snapshots")
        self.assertEqual(sorted(os.listdir(records)), sorted(listed))
        for snapshot in listed.values():
            for path in (snapshot.state_path, snapshot.memory_path):
                self.assertTrue(os.path.exists(path), f"{snapshot.snapshot_id}: {path} is gone")
        return vms, listed

    def test_emberd_killed_during_create_leaves_every_vm_known_or_gone(self):
        vms_dir = os.path.join(self.state_dir, "vms")
        # Killed at once, and a little later, after emberd has made the VM's directory.
        for n, delay in enumerate((0, 0.005, 0.02, 0.08)):
            vm_id = f"made{n}"
            thread, _ = self.in_thread(self.stub.Create,
                                       api.CreateRequest(vm_id=vm_id, config=ec.config()))
            wait_for(lambda: os.path.isdir(os.path.join(vms_dir, vm_id)) or not thread.is_alive(),
                     what=f"{vm_id}'s directory")
            time.sleep(delay)
            self.kill_and_restart(thread)
            vms, _ = self.assert_consistent()
            if vm_id in vms:
                self.assertIn(vms[vm_id].state, (api.Vm.CREATED, api.Vm.STOPPED))
                self.stub.Delete(api.DeleteRequest(vm_id=vm_id, force=True), timeout=60)
            # The id is free again and makes a whole VM.
            self.stub.Create(api.CreateRequest(vm_id=vm_id, config=ec.config()), timeout=60)
            self.stub.Start(api.VmRequest(vm_id=vm_id), timeout=60)
        self.assert_consistent()

    def test_emberd_killed_during_a_restore_of_many_clones_leaves_every_clone_known_or_gone(self):
        self.stub.Create(api.CreateRequest(vm_id="origin", config=ec.config()), timeout=60)
        self.stub.Start(api.VmRequest(vm_id="origin"), timeout=60)
        self.stub.Pause(api.VmRequest(vm_id="origin"), timeout=60)
        snapshot = self.stub.CreateSnapshot(api.CreateSnapshotRequest(vm_id="origin"),
                                            timeout=120)
        vms_dir = os.path.join(self.state_dir, "vms")
        thread, result = self.in_thread(self.stub.Restore, api.RestoreRequest(
            snapshot_id=snapshot.snapshot_id, vm_id_prefix="many", count=6))
        wait_for(lambda: os.path.isdir(os.path.join(vms_dir, "many-2")) or not thread.is_alive(),
                 what="the third clone's directory")
        self.kill_and_restart(thread)
        self.assertIsNone(result.get("ok"), "the restore finished before emberd was killed")
        vms, listed = self.assert_consistent()
        clones = [v for v in vms if v.startswith("many-")]
        self.assertTrue(clones, "no clone was made before the kill")
        for clone in clones:
            self.assertIn(vms[clone].state, (api.Vm.PAUSED, api.Vm.STOPPED))
        self.assertIn(snapshot.snapshot_id, listed)
        # The snapshot still restores, and goes once its clones do.
        self.stub.Restore(api.RestoreRequest(snapshot_id=snapshot.snapshot_id,
                                             vm_id_prefix="again"), timeout=120)
        for vm_id in clones + ["again-0"]:
            self.stub.Delete(api.DeleteRequest(vm_id=vm_id, force=True), timeout=60)
        self.stub.DeleteSnapshot(api.DeleteSnapshotRequest(snapshot_id=snapshot.snapshot_id),
                                 timeout=60)
        self.assert_consistent()

    def test_emberd_killed_during_delete_snapshot_leaves_it_whole_or_gone(self):
        self.stub.Create(api.CreateRequest(vm_id="origin", config=ec.config()), timeout=60)
        self.stub.Start(api.VmRequest(vm_id="origin"), timeout=60)
        self.stub.Pause(api.VmRequest(vm_id="origin"), timeout=60)
        snapshots = [self.stub.CreateSnapshot(api.CreateSnapshotRequest(vm_id="origin"),
                                              timeout=120).snapshot_id for _ in range(4)]
        # Each one's deletion cut short after another delay: before it began, in the middle,
        # after it ended.
        for snapshot_id, delay in zip(snapshots, (0, 0.001, 0.003, 0.01)):
            thread, _ = self.in_thread(self.stub.DeleteSnapshot,
                                       api.DeleteSnapshotRequest(snapshot_id=snapshot_id))
            time.sleep(delay)
            self.kill_and_restart(thread)
            _, listed = self.assert_consistent()
            if snapshot_id in listed:
                self.stub.DeleteSnapshot(api.DeleteSnapshotRequest(snapshot_id=snapshot_id),
                                         timeout=60)
        self.assertEqual(self.assert_consistent()[1], {})


if __name__ == "__main__":
    ec.require_kvm()
    if os.geteuid() != 0:
        print("SKIPPED: needs root (jailed VMMs, their cgroups)")
        sys.exit(ec.SKIP)
    ember_unittest.main()
