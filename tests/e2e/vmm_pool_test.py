"""End-to-end tests of emberd's VMM pool (--vmm-pool N, vmm/emberd/vmm_pool.h): ember-vmm
processes started ahead and handed each to one Create or Restore, refilled in the background.
Boots Ember's test guest; needs /dev/kvm."""
import os
import signal
import time
import unittest

import ember_unittest
import ember_client as ec
from ember_client import api
from emberd_test import EventReader, VmChecks

POOL = 2


def gone(pid):
    return not os.path.exists(f"/proc/{pid}")


class PoolChecks:
    """Checks of a pool for a TestCase whose self.emberd keeps one of self.slots slots."""

    def idle_slots(self, count=None, timeout=30, exclude=()):
        """The pool's idle slots (ember-vmm --pool-slot children of emberd) once there are
        `count` (default self.slots) of them, none in `exclude` nor any VM's."""
        count = self.slots if count is None else count
        deadline = time.time() + timeout
        while True:
            vms = {vm.pid for vm in self.stub.List(api.ListRequest(), timeout=10).vms}
            slots = [p for p in ec.pool_slots(self.emberd.proc.pid)
                     if p not in exclude and p not in vms]
            if len(slots) == count or time.time() > deadline:
                self.assertEqual(len(slots), count, f"pool slots: {slots}")
                return slots
            time.sleep(0.05)


class VmmPoolTest(PoolChecks, VmChecks, unittest.TestCase):
    slots = POOL

    def setUp(self):
        self.emberd = ec.Emberd(extra_args=["--no-jail", "--vmm-pool", str(POOL)])
        self.stub = self.emberd.stub

    def tearDown(self):
        self.emberd.close()

    def boot(self, vm_id, scenario="idle"):
        self.stub.Create(api.CreateRequest(vm_id=vm_id, config=ec.config(scenario)), timeout=30)
        return self.stub.Start(api.VmRequest(vm_id=vm_id), timeout=30)

    def test_create_takes_an_idle_slot_boots_and_the_pool_refills(self):
        slots = self.idle_slots()
        vm = self.boot("vm")
        self.assertIn(vm.pid, slots, "the VM's ember-vmm is not one the pool started")
        self.wait_console("vm", rb"\nidle\n")
        # The taken slot is not counted any more; a new one replaces it.
        refilled = self.idle_slots(exclude=(vm.pid,))
        self.assertNotIn(vm.pid, refilled)
        self.stop_and_delete("vm")

    def test_a_slot_serves_one_vm_once_and_exits_with_it(self):
        slots = self.idle_slots()
        vm = self.boot("once")
        self.assertIn(vm.pid, slots)
        self.stop_and_delete("once")
        deadline = time.time() + 10
        while not gone(vm.pid) and time.time() < deadline:
            time.sleep(0.05)
        self.assertTrue(gone(vm.pid), "the VM's ember-vmm outlived its VM")
        self.assertNotIn(vm.pid, self.idle_slots())
        again = self.boot("twice")
        self.assertNotEqual(again.pid, vm.pid)
        self.stop_and_delete("twice")

    def test_an_idle_slot_killed_is_reaped_and_replaced(self):
        victim = self.idle_slots()[0]
        os.kill(victim, signal.SIGKILL)
        slots = self.idle_slots(exclude=(victim,))
        self.assertNotIn(victim, slots)
        deadline = time.time() + 10
        while not gone(victim) and time.time() < deadline:
            time.sleep(0.05)
        self.assertTrue(gone(victim), "the killed slot was left a zombie")
        vm = self.boot("after-kill")
        self.assertIn(vm.pid, slots)
        self.wait_console("after-kill", rb"\nidle\n")
        self.stop_and_delete("after-kill")

    def test_a_restarted_emberd_keeps_a_pooled_vm_and_its_old_idle_slots_end(self):
        vm = self.boot("kept")
        self.wait_console("kept", rb"\nidle\n")
        old_idle = self.idle_slots()
        self.emberd.kill9()
        self.emberd.start()
        self.stub = self.emberd.stub
        again = self.stub.Get(api.VmRequest(vm_id="kept"), timeout=30)
        self.assertEqual((again.state, again.pid), (api.Vm.RUNNING, vm.pid))
        deadline = time.time() + 10
        while not all(gone(p) for p in old_idle) and time.time() < deadline:
            time.sleep(0.05)
        self.assertTrue(all(gone(p) for p in old_idle), f"old idle slots left: {old_idle}")
        self.assertEqual(len(self.idle_slots()), POOL)
        self.stop_and_delete("kept")

    def test_an_idle_slot_holds_no_file_of_any_vm(self):
        self.boot("neighbour")
        self.wait_console("neighbour", rb"\nidle\n")
        vms_dir = os.path.join(self.emberd.state_dir, "vms")
        for slot in self.idle_slots():
            for fd in os.listdir(f"/proc/{slot}/fd"):
                try:
                    target = os.readlink(f"/proc/{slot}/fd/{fd}")
                except OSError:
                    continue
                self.assertFalse(target.startswith(vms_dir),
                                 f"idle slot {slot} holds {target} on fd {fd}")
        self.stop_and_delete("neighbour")

    def test_restore_through_the_pool_counts_on_as_without_it(self):
        before = self.counting_vm("src")
        snapshot = self.stub.CreateSnapshot(api.CreateSnapshotRequest(vm_id="src"), timeout=60)
        slots = self.idle_slots()
        restored = self.stub.Restore(api.RestoreRequest(
            snapshot_id=snapshot.snapshot_id, vm_id_prefix="clone", count=3, resume=True),
            timeout=60)
        pids = [vm.pid for vm in restored.vms]
        self.assertEqual(len(set(pids)), 3)
        # A burst larger than the pool: what it has, then exec'd VMMs.
        self.assertGreaterEqual(len(set(pids) & set(slots)), 1)
        for vm in restored.vms:
            self.assertEqual(vm.state, api.Vm.RUNNING)
            self.assert_counts_on(vm.vm_id, before)
        self.stop_and_delete("clone-0", "clone-1", "clone-2", "src")

    def test_a_vm_that_fails_to_build_in_a_slot_fails_as_an_exec_d_one_does(self):
        config = ec.config()
        config.boot_source.kernel_image_path = "/nonexistent/vmlinux"
        results = []
        for name, args in (("pooled", ["--no-jail", "--vmm-pool", "1"]), ("exec'd", ["--no-jail"])):
            emberd = ec.Emberd(extra_args=args)
            try:
                try:
                    emberd.stub.Create(api.CreateRequest(vm_id="bad", config=config), timeout=30)
                    results.append((name, "OK", ""))
                except ec.grpc.RpcError as error:
                    results.append((name, error.code(), error.details()))
            finally:
                emberd.close()
        self.assertEqual(results[0][1:], results[1][1:], results)


if __name__ == "__main__":
    ec.require_kvm()
    ember_unittest.main()
