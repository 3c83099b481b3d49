"""emberd --jailer: each ember-vmm runs through ember-jailer (chroot, uid/gid), driven through
emberd's gRPC API like any VM. Needs root (the jailer chroots and changes identity) and
/dev/kvm."""
import errno
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
import time
import unittest

import ember_unittest
import ember_client as ec
from ember_client import api, grpc
from emberd_test import EventReader, VmChecks, code_of

# Each VM runs as uid = gid = one of ID_BASE + 1 ... ID_BASE + ID_COUNT; ID_BASE is the group
# of the snapshot files emberd keeps.
ID_BASE = 23456
ID_COUNT = 64
SNAPSHOT_GID = ID_BASE
JAIL_UID = ID_BASE + 1  # the first VM's
JAIL_GID = JAIL_UID


class EmberdJailedTest(VmChecks, unittest.TestCase):
    def setUp(self):
        self.base = tempfile.mkdtemp(prefix="ember-e2e-jail-")
        self.emberd = self.start_emberd(ID_COUNT)

    def start_emberd(self, id_count):
        emberd = ec.Emberd(extra_args=[
            "--jailer", os.path.join(ec.BUILD_DIR, "bin", "ember-jailer"),
            "--jailer-id-base", str(ID_BASE), "--jailer-id-count", str(id_count),
            "--chroot-base", self.base, "--log-level", "Debug"])
        self.stub = emberd.stub
        return emberd

    def tearDown(self):
        self.emberd.close()
        shutil.rmtree(self.base, ignore_errors=True)

    def test_jailed_vm_create_start_console_stop(self):
        events = EventReader(self.stub)
        vm = self.stub.Create(api.CreateRequest(vm_id="jailed-1", config=ec.config("idle")),
                              timeout=30)
        self.assertEqual(vm.state, api.Vm.CREATED)
        self.assertGreater(vm.pid, 0)
        jail_root = os.path.join(self.base, "ember-vmm", "jailed-1", "root")

        # The process emberd supervises is the jailer's stand-in; its one child, pid 1 of a new
        # pid namespace, is ember-vmm, chrooted and with the jail's ids.
        # The jailer pivot_roots in its own mount namespace, so /proc/<pid>/root reads "/" from
        # outside; it is the jail's directory (same inode) holding only what the jail put there.
        self.assertEqual(os.path.basename(os.readlink(f"/proc/{vm.pid}/exe")), "ember-jailer")
        with open(f"/proc/{vm.pid}/task/{vm.pid}/children") as f:
            vm.pid = int(f.read().split()[0])
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

    def jail_root(self, vm_id):
        return os.path.join(self.base, "ember-vmm", vm_id, "root")

    def assert_jailed(self, pid, vm_id, clone=False):
        """`pid` runs chrooted in `vm_id`'s jail as a uid and gid of the range, the same
        number (a clone with the snapshot group besides); returns the uid."""
        self.assertTrue(os.path.samestat(os.stat(f"/proc/{pid}/root"),
                                         os.stat(self.jail_root(vm_id))))
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        uid = int(status["Uid"].split()[0])
        self.assertIn(uid, range(ID_BASE + 1, ID_BASE + ID_COUNT + 1))
        self.assertEqual(status["Uid"].split(), [str(uid)] * 4)
        self.assertEqual(status["Gid"].split(), [str(uid)] * 4)
        self.assertEqual(status["Groups"].split(), [str(SNAPSHOT_GID)] if clone else [])
        return uid

    def assert_snapshot_groups_file(self, path):
        """No VM can change `path`; clones read it through the snapshot group."""
        st = os.stat(path)
        self.assertEqual((st.st_uid, st.st_gid), (0, SNAPSHOT_GID), path)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o440, path)

    def vmm_of(self, pid):
        """The ember-vmm under the jailer's stand-in `pid` (pid 1 of its namespace)."""
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return int(f.read().split()[0])

    def test_jailed_snapshot_lands_where_recorded_and_two_jailed_clones_continue(self):
        before = self.counting_vm("jsnap")
        snapshot = self.stub.CreateSnapshot(api.CreateSnapshotRequest(vm_id="jsnap"), timeout=60)

        # Where an unjailed snapshot goes, recorded the same way; the jail's files, moved out.
        record = os.path.join(self.emberd.state_dir, "snapshots", snapshot.snapshot_id)
        self.assertEqual(snapshot.state_path, os.path.join(record, "state"))
        self.assertEqual(snapshot.memory_path, os.path.join(record, "memory"))
        self.assertTrue(os.path.exists(os.path.join(record, "snapshot.json")))
        self.assertGreater(os.path.getsize(snapshot.state_path), 0)
        self.assertEqual(os.path.getsize(snapshot.memory_path), (32 << 20) + 48)  # + its trailer
        self.assert_snapshot_groups_file(snapshot.state_path)
        self.assert_snapshot_groups_file(snapshot.memory_path)
        self.assertEqual([f for f in os.listdir(self.jail_root("jsnap"))
                          if f.endswith((".state", ".mem")) or ".tmp" in f], [])
        self.assertEqual(self.stub.Get(api.VmRequest(vm_id="jsnap")).state, api.Vm.PAUSED)
        source_uid = self.assert_jailed(self.vmm_of(self.stub.Get(
            api.VmRequest(vm_id="jsnap")).pid), "jsnap")

        restored = self.stub.Restore(api.RestoreRequest(
            snapshot_id=snapshot.snapshot_id, vm_id_prefix="jclone", count=2, resume=True),
            timeout=60)
        self.assertEqual([vm.vm_id for vm in restored.vms], ["jclone-0", "jclone-1"])
        self.assertEqual(len({vm.pid for vm in restored.vms}), 2)
        uids = {source_uid}
        for vm in restored.vms:
            self.assertEqual(vm.state, api.Vm.RUNNING)
            self.assertEqual(vm.restored_from, snapshot.snapshot_id)
            # Each clone its own uid, reading the source's snapshot through the group.
            uids.add(self.assert_jailed(self.vmm_of(vm.pid), vm.vm_id, clone=True))
            # Both clones map the one memory file, hard-linked into each jail.
            linked = os.path.join(self.jail_root(vm.vm_id), snapshot.snapshot_id + ".mem")
            self.assertTrue(os.path.samestat(os.stat(linked), os.stat(snapshot.memory_path)))
        self.assertEqual(len(uids), 3, uids)
        self.assertGreaterEqual(os.stat(snapshot.memory_path).st_nlink, 3)
        for vm in restored.vms:
            self.assert_counts_on(vm.vm_id, before)
            self.assert_jailed(vm.pid, vm.vm_id)
        # The source is untouched by its clones: resumed, it counts on too.
        self.stub.Resume(api.VmRequest(vm_id="jsnap"), timeout=30)
        self.wait_console("jsnap", rb"PASS counter\n")

        self.stop_and_delete("jclone-0", "jclone-1", "jsnap")
        # Deleting the clones' jails leaves the snapshot whole.
        self.assertEqual(os.stat(snapshot.memory_path).st_nlink, 1)
        self.assertEqual(os.path.getsize(snapshot.memory_path), (32 << 20) + 48)  # + its trailer

    def test_jailed_diff_snapshot_restores_onto_its_base_in_a_new_jail(self):
        config = ec.config("counter,idle")
        config.machine_config.track_dirty_pages = True
        self.counting_vm("jdiff", config)
        full = self.stub.CreateSnapshot(api.CreateSnapshotRequest(vm_id="jdiff"), timeout=60)
        self.stub.Resume(api.VmRequest(vm_id="jdiff"), timeout=30)
        counted = [int(n) for n in re.findall(rb"count (\d+)\n", self.console_of("jdiff"))]
        self.wait_console("jdiff", rb"count %d\n" % (counted[-1] + 2))
        self.stub.Pause(api.VmRequest(vm_id="jdiff"), timeout=30)
        before = self.console_of("jdiff")
        self.assertNotIn(b"PASS counter", before, "the counter ended before the pause")
        diff = self.stub.CreateSnapshot(api.CreateSnapshotRequest(
            vm_id="jdiff", type=api.CreateSnapshotRequest.DIFF), timeout=60)
        self.assert_snapshot_groups_file(diff.memory_path)
        # Only the pages written since the full snapshot: far less than the VM's 32 MiB.
        self.assertLess(os.stat(diff.memory_path).st_blocks * 512, 8 << 20)

        vm = self.stub.Restore(api.RestoreRequest(
            snapshot_id=diff.snapshot_id, vm_id_prefix="jdclone", resume=True), timeout=60).vms[0]
        self.assert_jailed(self.vmm_of(vm.pid), vm.vm_id, clone=True)
        root = self.jail_root(vm.vm_id)
        # The restored diff where emberd names it; its base where its state file names it,
        # in the output directory the jailed VM wrote it to.
        for linked, snapshot in ((os.path.join(root, "out", full.snapshot_id + ".mem"), full),
                                 (os.path.join(root, diff.snapshot_id + ".mem"), diff)):
            self.assertTrue(os.path.samestat(os.stat(linked), os.stat(snapshot.memory_path)))
        self.assert_counts_on(vm.vm_id, before)

    def test_jailed_snapshot_in_another_filesystem_is_copied_sparse_and_restores(self):
        other = tempfile.mkdtemp(prefix="ember-e2e-jail-", dir="/dev/shm")
        self.addCleanup(shutil.rmtree, other, True)
        if os.stat(other).st_dev == os.stat(self.base).st_dev:
            self.skipTest("/dev/shm is on the same filesystem as " + self.base)
        before = self.counting_vm("jxdev")
        snapshot = self.stub.CreateSnapshot(api.CreateSnapshotRequest(
            vm_id="jxdev", snapshot_dir=os.path.join(other, "snap")), timeout=60)
        self.assertEqual(snapshot.memory_path, os.path.join(other, "snap", "memory"))
        self.assert_snapshot_groups_file(snapshot.state_path)
        self.assert_snapshot_groups_file(snapshot.memory_path)
        st = os.stat(snapshot.memory_path)
        self.assertEqual(st.st_size, (32 << 20) + 48)  # + its trailer
        self.assertLess(st.st_blocks * 512, 16 << 20, "the copy filled the memory file's holes")
        self.assertEqual([f for f in os.listdir(self.jail_root("jxdev"))
                          if f.endswith((".state", ".mem"))], [])

        vm = self.stub.Restore(api.RestoreRequest(
            snapshot_id=snapshot.snapshot_id, vm_id_prefix="jxclone", resume=True),
            timeout=60).vms[0]
        uid = self.assert_jailed(self.vmm_of(vm.pid), vm.vm_id, clone=True)
        # Across filesystems the clone's jail holds a private copy: root's, the clone's gid
        # may read it.
        copy = os.stat(os.path.join(self.jail_root(vm.vm_id), snapshot.snapshot_id + ".mem"))
        self.assertEqual((copy.st_uid, copy.st_gid), (0, uid))
        self.assertEqual(stat.S_IMODE(copy.st_mode), 0o440)
        self.assert_counts_on(vm.vm_id, before)

    def test_snapshot_of_a_stopped_jailed_vm_is_failed_precondition(self):
        self.stub.Create(api.CreateRequest(vm_id="jstop", config=ec.config("idle")), timeout=30)
        self.stub.Start(api.VmRequest(vm_id="jstop"), timeout=30)
        self.stub.Stop(api.StopRequest(vm_id="jstop"), timeout=30)
        code, details = code_of(self.stub.CreateSnapshot,
                                api.CreateSnapshotRequest(vm_id="jstop"))
        self.assertEqual(code, grpc.StatusCode.FAILED_PRECONDITION, details)
        self.assertIn("STOPPED", details)
        self.assertEqual(os.listdir(os.path.join(self.emberd.state_dir, "snapshots")), [])

    def jailed_snapshot_copy(self, vm_id):
        """A snapshot of a jailed VM, copied to a directory of its own: (state, memory)."""
        self.counting_vm(vm_id)
        snapshot = self.stub.CreateSnapshot(api.CreateSnapshotRequest(vm_id=vm_id), timeout=60)
        mine = os.path.join(self.emberd.dir, "mine")
        os.makedirs(mine)
        state = shutil.copy(snapshot.state_path, os.path.join(mine, "state"))
        memory = shutil.copy(snapshot.memory_path, os.path.join(mine, "memory"))
        return state, memory

    def test_jailed_restore_with_a_missing_memory_file_is_not_found(self):
        state, memory = self.jailed_snapshot_copy("jmiss")
        os.unlink(memory)
        code, details = code_of(self.stub.Restore, api.RestoreRequest(
            state_path=state, vm_id_prefix="jmclone"))
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND, details)
        self.assertIn(memory, details)
        self.assertEqual(code_of(self.stub.Get, api.VmRequest(vm_id="jmclone-0"))[0],
                         grpc.StatusCode.NOT_FOUND)
        self.assertFalse(os.path.exists(os.path.join(self.base, "ember-vmm", "jmclone-0")))

    def test_jailed_restore_of_memory_the_jail_cannot_read_is_refused_naming_the_rule(self):
        # As a snapshot taken with --no-jail leaves it: root's, 0600.
        state, memory = self.jailed_snapshot_copy("jroot")
        os.chown(memory, 0, 0)
        os.chmod(memory, 0o600)
        code, details = code_of(self.stub.Restore, api.RestoreRequest(
            state_path=state, vm_id_prefix="jrclone"))
        self.assertEqual(code, grpc.StatusCode.FAILED_PRECONDITION, details)
        self.assertIn("memory_path", details)
        self.assertIn(f"not readable by the snapshot group {SNAPSHOT_GID}", details)
        self.assertIn(f"chown :{SNAPSHOT_GID}, chmod g+r", details)
        # Given to the group, the same files restore.
        os.chown(memory, 0, SNAPSHOT_GID)
        os.chmod(memory, 0o440)
        vm = self.stub.Restore(api.RestoreRequest(state_path=state, vm_id_prefix="jrclone"),
                               timeout=60).vms[0]
        self.assertEqual(vm.state, api.Vm.PAUSED)
        self.assert_jailed(vm.pid, vm.vm_id)

    def test_jailed_restore_refuses_a_host_vsock_socket(self):
        self.counting_vm("jvsock")
        snapshot = self.stub.CreateSnapshot(api.CreateSnapshotRequest(vm_id="jvsock"), timeout=60)
        overrides = api.RestoreOverrides(vsock_uds_path="/tmp/v.sock")
        code, details = code_of(self.stub.Restore, api.RestoreRequest(
            snapshot_id=snapshot.snapshot_id, vm_id_prefix="jvclone", overrides=[overrides]))
        self.assertEqual(code, grpc.StatusCode.FAILED_PRECONDITION, details)
        self.assertIn("overrides[0].vsock_uds_path", details)

    def test_a_console_the_jail_turned_into_a_symlink_is_refused(self):
        secret = os.path.join(self.base, "root-only")
        with open(secret, "w") as f:
            f.write("ROOT-ONLY-SECRET\n")
        os.chmod(secret, 0o600)
        self.stub.Create(api.CreateRequest(vm_id="jsym", config=ec.config("idle")), timeout=30)
        # What a compromised VMM can do in the jail's output directory, which is its own: swap
        # its console for a symlink to a file only root may read.
        console = os.path.join(self.base, "ember-vmm", "jsym", "root", "out", "console.log")
        os.unlink(console)
        os.symlink(secret, console)
        code, details = code_of(
            lambda r, timeout: b"".join(c.data for c in self.stub.StreamConsole(r, timeout=timeout)),
            api.StreamConsoleRequest(vm_id="jsym"))
        self.assertEqual(code, grpc.StatusCode.FAILED_PRECONDITION, details)
        self.assertIn("console.log", details)
        self.assertNotIn("ROOT-ONLY-SECRET", details)

    def test_the_jail_root_is_roots_and_the_jail_uid_writes_only_in_its_output_dir(self):
        self.stub.Create(api.CreateRequest(vm_id="jroot", config=ec.config("idle")), timeout=30)
        root = self.jail_root("jroot")
        st = os.stat(root)
        self.assertEqual((st.st_uid, st.st_gid), (0, 0))
        self.assertEqual(st.st_mode & 0o022, 0, oct(st.st_mode))
        for name in os.listdir(root):
            if name != "out":
                self.assertEqual(os.lstat(os.path.join(root, name)).st_uid, 0, name)
        out = os.stat(os.path.join(root, "out"))
        self.assertEqual((out.st_uid, stat.S_IMODE(out.st_mode)), (JAIL_UID, 0o700))
        self.assertIn("console.log", os.listdir(os.path.join(root, "out")))
        # As the jail's uid, as a compromised VMM would be: nothing new at the root.
        self.assertEqual(self.create_as(JAIL_UID, JAIL_GID, root, "planted"), "EACCES")
        self.assertEqual(self.create_as(JAIL_UID, JAIL_GID, root, "out/x"), "ok")

    def create_as(self, uid, gid, root, path):
        """Whether a process of uid:gid whose root and cwd are `root` (as a jailed VMM's are)
        can create `path`: "ok" or the errno's name."""
        read, write = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(read)
            try:
                os.chroot(root)
                os.chdir("/")
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                os.unlink(path)
                result = "ok"
            except OSError as e:
                result = errno.errorcode.get(e.errno, str(e.errno))
            os.write(write, result.encode())
            os._exit(0)
        os.close(write)
        result = os.read(read, 64).decode()
        os.close(read)
        os.waitpid(child, 0)
        return result

    def test_jailed_vms_have_uids_of_their_own_until_the_range_runs_out(self):
        self.emberd.close()
        self.emberd = self.start_emberd(2)
        uids = set()
        for vm_id in ("jid-1", "jid-2"):
            vm = self.stub.Create(api.CreateRequest(vm_id=vm_id, config=ec.config("idle")),
                                  timeout=30)
            uids.add(self.assert_jailed(vm.pid, vm_id))
        self.assertEqual(uids, {ID_BASE + 1, ID_BASE + 2})
        code, details = code_of(self.stub.Create,
                                api.CreateRequest(vm_id="jid-3", config=ec.config("idle")))
        self.assertEqual(code, grpc.StatusCode.RESOURCE_EXHAUSTED, details)
        self.assertIn("--jailer-id-count", details)
        self.assertFalse(os.path.exists(self.jail_root("jid-3")))
        # A stopped VM keeps its uid; a deleted one gives it back.
        self.stub.Stop(api.StopRequest(vm_id="jid-1"), timeout=30)
        self.assertEqual(code_of(self.stub.Create, api.CreateRequest(
            vm_id="jid-3", config=ec.config("idle")))[0], grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.stub.Delete(api.DeleteRequest(vm_id="jid-1"), timeout=30)
        vm = self.stub.Create(api.CreateRequest(vm_id="jid-3", config=ec.config("idle")),
                              timeout=30)
        self.assertEqual(self.assert_jailed(vm.pid, "jid-3"), ID_BASE + 1)

    def test_a_restarted_emberd_gives_no_new_vm_the_uid_of_one_still_running(self):
        self.emberd.close()
        self.emberd = self.start_emberd(2)
        vm = self.stub.Create(api.CreateRequest(vm_id="jkeep", config=ec.config("idle")),
                              timeout=30)
        kept = self.assert_jailed(vm.pid, "jkeep")
        self.emberd.kill9()
        self.emberd.start()
        self.stub = self.emberd.stub
        self.assertEqual(self.stub.Get(api.VmRequest(vm_id="jkeep")).state, api.Vm.CREATED)
        vm = self.stub.Create(api.CreateRequest(vm_id="jnew", config=ec.config("idle")),
                              timeout=30)
        self.assertNotEqual(self.assert_jailed(vm.pid, "jnew"), kept)
        code, details = code_of(self.stub.Create,
                                api.CreateRequest(vm_id="jmore", config=ec.config("idle")))
        self.assertEqual(code, grpc.StatusCode.RESOURCE_EXHAUSTED, details)

    def test_a_jailed_vm_has_a_cgroup_of_its_own_limiting_memory_tasks_and_cpu(self):
        config = ec.config("idle")
        config.machine_config.vcpu_count = 2
        vm = self.stub.Create(api.CreateRequest(vm_id="jcg", config=config), timeout=30)
        vmm = self.vmm_of(vm.pid)
        # "N:controller:/path" for v1 hierarchies; this host's v2 carries none of them.
        with open(f"/proc/{vmm}/cgroup") as f:
            paths = {c: p for _, cs, p in (line.strip().split(":", 2) for line in f)
                     for c in cs.split(",")}
        mounts = {}
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                dash = fields.index("-")
                if fields[dash + 1] == "cgroup":
                    for c in fields[dash + 3].split(","):
                        mounts[c] = fields[4]
        if not all(c in mounts for c in ("memory", "pids", "cpu")):
            self.skipTest("this host has no cgroup v1 memory, pids and cpu hierarchies")
        expected = {"memory": ("memory.limit_in_bytes", (32 + 128) << 20),
                    "pids": ("pids.max", 2 + 64),
                    "cpu": ("cpu.shares", 2 * 1024)}
        dirs = []
        for controller, (name, value) in expected.items():
            self.assertTrue(paths[controller].endswith("/jcg"), paths[controller])
            directory = mounts[controller] + paths[controller]
            with open(os.path.join(directory, name)) as f:
                self.assertEqual(int(f.read()), value, name)
            dirs.append(directory)
        # Gone once the VM ends, before it is deleted.
        self.stub.Stop(api.StopRequest(vm_id="jcg"), timeout=30)
        deadline = time.time() + 10
        while any(os.path.exists(d) for d in dirs) and time.time() < deadline:
            time.sleep(0.05)
        for directory in dirs:
            self.assertFalse(os.path.exists(directory), directory)
        self.stub.Delete(api.DeleteRequest(vm_id="jcg"), timeout=30)

    def test_jailed_vms_made_and_deleted_at_once_all_start_and_leave_no_cgroup(self):
        """Jails made while other VMs' cgroups go (their parent emptied and refilled, a STOPPED
        event of an id handled after that id was made again): every Create succeeds, and once
        every VM is deleted no VM's cgroup is left in any hierarchy."""
        mounts = set()
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                dash = fields.index("-")
                if fields[dash + 1] == "cgroup" and {"memory", "pids", "cpu"} & set(
                        fields[dash + 3].split(",")):
                    mounts.add(fields[4])
        if not mounts:
            self.skipTest("this host has no cgroup v1 memory, pids or cpu hierarchy")
        parent = f"ember-e2e-churn-{os.getpid()}"
        self.emberd.close()
        self.emberd = ec.Emberd(extra_args=[
            "--jailer", os.path.join(ec.BUILD_DIR, "bin", "ember-jailer"),
            "--jailer-id-base", str(ID_BASE), "--jailer-id-count", str(ID_COUNT),
            "--chroot-base", self.base, "--cgroup-parent", parent])
        self.stub = self.emberd.stub
        self.addCleanup(lambda: [os.path.isdir(os.path.join(m, parent)) and
                                 os.rmdir(os.path.join(m, parent)) for m in mounts])
        failures = []

        def churn(worker):
            for round_ in range(6):
                # The same id again and again: its last STOPPED may still be on its way.
                vm_id = f"churn-{worker}"
                try:
                    self.stub.Create(api.CreateRequest(vm_id=vm_id, config=ec.config("idle")),
                                     timeout=60)
                    self.stub.Stop(api.StopRequest(vm_id=vm_id), timeout=60)
                    self.stub.Delete(api.DeleteRequest(vm_id=vm_id), timeout=60)
                except grpc.RpcError as error:
                    failures.append(f"{vm_id} round {round_}: {error.code()} {error.details()}")
                    return

        threads = [threading.Thread(target=churn, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(failures, [])
        left = [os.path.join(m, parent, d) for m in mounts if os.path.isdir(os.path.join(m, parent))
                for d in os.listdir(os.path.join(m, parent))
                if os.path.isdir(os.path.join(m, parent, d))]
        self.assertEqual(left, [])

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
    ember_unittest.main()
