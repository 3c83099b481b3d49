"""emberd --jailer: each ember-vmm runs through ember-jailer (chroot, uid/gid), driven through
emberd's gRPC API like any VM. Needs root (the jailer chroots and changes identity) and
/dev/kvm."""
import os
import shutil
import sys
import tempfile
import time
import unittest

import ember_client as ec
from ember_client import api, grpc
from emberd_test import EventReader, code_of

JAIL_UID = 23456
JAIL_GID = 23457


class EmberdJailedTest(unittest.TestCase):
    def setUp(self):
        self.base = tempfile.mkdtemp(prefix="ember-e2e-jail-")
        self.emberd = ec.Emberd(extra_args=[
            "--jailer", os.path.join(ec.BUILD_DIR, "bin", "ember-jailer"),
            "--jailer-uid", str(JAIL_UID), "--jailer-gid", str(JAIL_GID),
            "--chroot-base", self.base, "--log-level", "Debug"])
        self.stub = self.emberd.stub

    def tearDown(self):
        self.emberd.close()
        shutil.rmtree(self.base, ignore_errors=True)

    def console_of(self, vm_id):
        return b"".join(c.data for c in self.stub.StreamConsole(
            api.StreamConsoleRequest(vm_id=vm_id), timeout=10))

    def test_jailed_vm_create_start_console_stop(self):
        events = EventReader(self.stub)
        vm = self.stub.Create(api.CreateRequest(vm_id="jailed-1", config=ec.config("idle")),
                              timeout=30)
        self.assertEqual(vm.state, api.Vm.CREATED)
        self.assertGreater(vm.pid, 0)
        jail_root = os.path.join(self.base, "ember-vmm", "jailed-1", "root")

        # The process emberd supervises is ember-vmm itself, chrooted and with the jail's ids.
        # The jailer pivot_roots in its own mount namespace, so /proc/<pid>/root reads "/" from
        # outside; it is the jail's directory (same inode) holding only what the jail put there.
        self.assertEqual(os.readlink(f"/proc/{vm.pid}/root"), "/")
        self.assertTrue(os.path.samestat(os.stat(f"/proc/{vm.pid}/root"), os.stat(jail_root)))
        self.assertEqual(sorted(os.listdir(f"/proc/{vm.pid}/root")),
                         sorted(os.listdir(jail_root)))
        self.assertIn("config.pb", os.listdir(f"/proc/{vm.pid}/root"))
        self.assertNotIn("proc", os.listdir(f"/proc/{vm.pid}/root"))
        with open(f"/proc/{vm.pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        self.assertEqual(status["Uid"].split(), [str(JAIL_UID)] * 4)
        self.assertEqual(status["Gid"].split(), [str(JAIL_GID)] * 4)
        self.assertEqual(os.path.basename(os.readlink(f"/proc/{vm.pid}/exe")), "ember-vmm")
        self.assertTrue(os.path.exists(os.path.join(jail_root, "config.pb")))

        self.assertEqual(self.stub.Start(api.VmRequest(vm_id="jailed-1"), timeout=30).state,
                         api.Vm.RUNNING)
        booted = events.wait_for(lambda e: e.kind == api.Event.BOOTED)
        self.assertGreater(booted.boot_time_us, 0)
        deadline = time.time() + 30
        text = b""
        while time.time() < deadline:
            text = self.console_of("jailed-1")
            if b"idle\n" in text:
                break
            time.sleep(0.1)
        self.assertIn(b"idle\n", text)

        # Snapshots would be written outside the jail: refused, naming why.
        self.stub.Pause(api.VmRequest(vm_id="jailed-1"), timeout=30)
        code, details = code_of(self.stub.CreateSnapshot,
                                api.CreateSnapshotRequest(vm_id="jailed-1"))
        self.assertEqual(code, grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("--jailer", details)
        self.stub.Resume(api.VmRequest(vm_id="jailed-1"), timeout=30)

        vm = self.stub.Stop(api.StopRequest(vm_id="jailed-1"), timeout=30)
        self.assertEqual(vm.state, api.Vm.STOPPED)
        self.assertEqual(vm.exit.exit_code, 0, vm.exit.reason)
        exited = events.wait_for(lambda e: e.kind == api.Event.EXITED)
        self.assertEqual(exited.exit.exit_code, 0)

        self.stub.Delete(api.DeleteRequest(vm_id="jailed-1"), timeout=30)
        self.assertFalse(os.path.exists(os.path.dirname(jail_root)))
        events.close()

    def test_jailed_guest_exit_is_seen_and_console_shows_pass_hello(self):
        events = EventReader(self.stub)
        self.stub.Create(api.CreateRequest(vm_id="jailed-2", config=ec.config("hello")),
                         timeout=30)
        self.stub.Start(api.VmRequest(vm_id="jailed-2"), timeout=30)
        exited = events.wait_for(lambda e: e.kind == api.Event.EXITED)
        self.assertEqual(exited.exit.exit_code, 0, exited.exit.reason)
        self.assertIn(b"PASS hello", self.console_of("jailed-2"))
        self.assertEqual(self.stub.Get(api.VmRequest(vm_id="jailed-2")).state, api.Vm.STOPPED)
        events.close()

    def test_underscore_ids_are_refused(self):
        code, details = code_of(self.stub.Create,
                                api.CreateRequest(vm_id="a_b", config=ec.config("idle")))
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("underscore", details)


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("SKIPPED: emberd --jailer needs root")
        sys.exit(ec.SKIP)
    ec.require_kvm()
    unittest.main(verbosity=2)
