"""End-to-end tests of emberd's jailed VMM pool (--vmm-pool N without --no-jail,
vmm/emberd/vmm_pool.h): each slot is jailed ahead (its own uid, cgroup, jail root and
namespaces) apart from the VMs' (STATE/jail/_pool, <parent>/_pool); a Create or Restore claims
one, whose jail then becomes the VM's under the VM's names, and what a dead or unclaimed slot
leaves is removed, also by the next emberd after a kill -9. Needs root and /dev/kvm."""
import glob
import os
import signal
import time
import unittest

import ember_unittest
import ember_client as ec
from ember_client import api
from emberd_test import VmChecks
from vmm_pool_test import PoolChecks
from emberd_default_jail_test import DEFAULT_ID_BASE, children_of, limits_of, status_of

POOL = 1  # of each kind: boots and restores
SNAPSHOT_GID = DEFAULT_ID_BASE


def gone(pid):
    return not os.path.exists(f"/proc/{pid}")


def wait_for(predicate, timeout=15):
    deadline = time.time() + timeout
    while not predicate() and time.time() < deadline:
        time.sleep(0.05)
    return predicate()


def uids_in_use():
    uids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                uids.add(int(status_of(entry)["Uid"].split()[0]))
            except (OSError, KeyError):
                pass
    return uids


class VmmPoolJailedTest(PoolChecks, VmChecks, unittest.TestCase):
    slots = 2 * POOL  # of both kinds

    def setUp(self):
        self.emberd = ec.Emberd(extra_args=["--vmm-pool", str(POOL)])
        self.stub = self.emberd.stub

    def tearDown(self):
        self.emberd.close()

    def pool_jails(self):
        """The slots' jail directories (STATE/jail/_pool/ember-vmm/<slot>)."""
        return sorted(glob.glob(os.path.join(self.emberd.state_dir, "jail", "_pool", "ember-vmm",
                                             "*")))

    def pool_cgroups(self):
        """The slots' cgroups, in every hierarchy (<mount>/<parent>/_pool/<slot>); the parent
        is emberd's default, ember-<FNV-1a of the state directory>."""
        digest = 0xcbf29ce484222325
        for c in self.emberd.state_dir.encode():
            digest = ((digest ^ c) * 0x100000001b3) & 0xffffffffffffffff
        parent = "ember-%016x" % digest
        return sorted(d for d in glob.glob(f"/sys/fs/cgroup/*/{parent}/_pool/*") +
                      glob.glob(f"/sys/fs/cgroup/{parent}/_pool/*") if os.path.isdir(d))

    def vmm_of(self, stand_in):
        """The jailed ember-vmm under a slot's stand-in (pid 1 of its pid namespace)."""
        self.assertTrue(wait_for(lambda: children_of(stand_in)), f"no VMM under {stand_in}")
        return children_of(stand_in)[0]

    def boot(self, vm_id, scenario="idle"):
        self.stub.Create(api.CreateRequest(vm_id=vm_id, config=ec.config(scenario)), timeout=30)
        return self.stub.Start(api.VmRequest(vm_id=vm_id), timeout=30)

    def test_a_jailed_create_claims_a_slot_whose_jail_becomes_the_vms(self):
        slots = self.idle_slots()
        vm = self.boot("vm")
        self.assertIn(vm.pid, slots, "the VM's ember-vmm is not one the pool started")
        self.wait_console("vm", rb"\nidle\n")
        vmm = self.vmm_of(vm.pid)
        status = status_of(vmm)
        uid = status["Uid"].split()[0]
        # As jailed as a spawned VMM: its own uid and gid, no group, no capabilities.
        self.assertEqual(status["Uid"].split(), [uid] * 4)
        self.assertEqual(status["Gid"].split(), [uid] * 4)
        self.assertEqual(status["Groups"], "")
        for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            self.assertEqual(int(status[caps], 16), 0, caps)
        self.assertEqual(status["NoNewPrivs"], "1")
        self.assertEqual(status["Seccomp"], "2")
        for ns in ("mnt", "pid", "ipc", "uts", "net"):
            self.assertNotEqual(os.readlink(f"/proc/{vmm}/ns/{ns}"),
                                os.readlink(f"/proc/{self.emberd.proc.pid}/ns/{ns}"), ns)
        # Its file size bound is its VM's (32 MiB + 64 MiB), set before its guest ran.
        self.assertEqual(limits_of(vmm)["Max file size"], str((32 + 64) << 20))
        # The VM's names: its record's uid, its jail and its cgroup.
        with open(os.path.join(self.emberd.state_dir, "vms", "vm", "jail-id")) as f:
            self.assertEqual(f.read().strip(), uid)
        root = os.path.join(self.emberd.state_dir, "jail", "ember-vmm", "vm", "root")
        self.assertEqual(os.stat(f"/proc/{vmm}/root").st_ino, os.stat(root).st_ino)
        with open(f"/proc/{vmm}/cgroup") as f:
            groups = f.read()
        self.assertIn("/vm\n", groups)
        self.assertNotIn("_pool", groups)
        # Only the device nodes it uses: no tun, no userfaultfd.
        self.assertEqual(sorted(os.listdir(os.path.join(root, "dev"))), ["kvm", "net"])
        self.assertEqual(os.listdir(os.path.join(root, "dev", "net")), [])
        # The pool refills; the claimed slot's own jail and cgroup are gone.
        refilled = self.idle_slots(exclude=(vm.pid,))
        self.assertNotIn(vm.pid, refilled)
        self.assertEqual(len(self.pool_jails()), self.slots)
        self.stop_and_delete("vm")
        self.assertFalse(os.path.exists(os.path.dirname(root)), "the VM's jail outlived it")

    def test_a_jailed_restore_claims_a_slot_with_the_snapshot_group(self):
        before = self.counting_vm("src")
        snapshot = self.stub.CreateSnapshot(api.CreateSnapshotRequest(vm_id="src"), timeout=60)
        slots = self.idle_slots()
        restored = self.stub.Restore(api.RestoreRequest(
            snapshot_id=snapshot.snapshot_id, vm_id_prefix="clone", count=1, resume=True),
            timeout=60)
        clone = restored.vms[0]
        self.assertIn(clone.pid, slots)
        self.assert_counts_on(clone.vm_id, before)
        status = status_of(self.vmm_of(clone.pid))
        self.assertEqual(status["Groups"].split(), [str(SNAPSHOT_GID)])
        self.assertNotEqual(status["Uid"].split()[0],
                            status_of(self.vmm_of(self.stub.Get(api.VmRequest(vm_id="src"),
                                                                timeout=10).pid))["Uid"].split()[0])
        self.stop_and_delete(clone.vm_id, "src")

    def test_an_idle_jailed_slot_killed_leaves_no_jail_cgroup_or_process(self):
        slots = self.idle_slots()
        jails, cgroups = self.pool_jails(), self.pool_cgroups()
        self.assertEqual(len(jails), self.slots)
        self.assertTrue(cgroups, "the slots have no cgroups")
        victim = slots[0]
        uid = int(status_of(self.vmm_of(victim))["Uid"].split()[0])
        os.kill(victim, signal.SIGKILL)
        self.idle_slots(exclude=(victim,))
        old = [j for j in jails if os.path.exists(j)]
        self.assertTrue(wait_for(lambda: len([j for j in jails if os.path.exists(j)]) == 1),
                        f"jails left: {old}")
        self.assertTrue(wait_for(lambda: len([c for c in cgroups if os.path.exists(c)]) ==
                                 len(cgroups) // 2))
        self.assertTrue(wait_for(lambda: uid not in uids_in_use()), "the slot's VMM lives on")

    def test_emberd_killed_with_idle_jailed_slots_leaves_nothing_after_a_restart(self):
        vm = self.boot("kept")
        self.wait_console("kept", rb"\nidle\n")
        slots = self.idle_slots()
        uids = {int(status_of(self.vmm_of(p))["Uid"].split()[0]) for p in slots}
        jails, cgroups = self.pool_jails(), self.pool_cgroups()
        self.assertEqual(len(jails), self.slots)
        self.assertTrue(cgroups)
        self.emberd.kill9()
        # Restarted without a pool: nothing of the old slots may stay.
        self.emberd.extra_args = [a for a in self.emberd.extra_args
                                  if a not in ("--vmm-pool", str(POOL))]
        self.emberd.start()
        self.stub = self.emberd.stub
        again = self.stub.Get(api.VmRequest(vm_id="kept"), timeout=30)
        self.assertEqual((again.state, again.pid), (api.Vm.RUNNING, vm.pid))
        self.assertTrue(wait_for(lambda: all(gone(p) for p in slots)), "old slots live on")
        self.assertEqual([j for j in jails if os.path.exists(j)], [])
        self.assertEqual([c for c in cgroups if os.path.exists(c)], [])
        self.assertEqual(uids & uids_in_use(), set())
        # A new VM may get an old slot's uid, never the kept VM's.
        kept_uid = status_of(self.vmm_of(vm.pid))["Uid"].split()[0]
        other = self.boot("after")
        self.assertNotEqual(status_of(self.vmm_of(other.pid))["Uid"].split()[0], kept_uid)
        self.stop_and_delete("kept", "after")


if __name__ == "__main__":
    ec.require_kvm()
    if os.geteuid() != 0:
        print("SKIPPED: the jailed pool needs root")
        raise SystemExit(ec.SKIP)
    ember_unittest.main()
