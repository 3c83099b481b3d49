"""emberd driving a stand-in VMM (fake_vmm.py: the control protocol only, no KVM): what emberd
does when a snapshot takes long, when the VMM binary is a script with no --help, and when a
second emberd is started on the same state directory."""
import concurrent.futures
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import unittest

import grpc

import ember_unittest
import ember_client as ec
from ember_client import api

FAKE_VMM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_vmm.py")
EMBERD = os.path.join(ec.BUILD_DIR, "bin", "emberd")


class FakeVmmTest(unittest.TestCase):
    def setUp(self):
        self.emberd = None
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)

    def tearDown(self):
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.emberd:
            self.emberd.close()

    def start_emberd(self, **fake_env):
        env = dict(os.environ, **{k: str(v) for k, v in fake_env.items()})
        self.emberd = ec.Emberd(extra_args=["--no-jail", "--vmm", FAKE_VMM], env=env)
        self.stub = self.emberd.stub

    def paused_vm(self, vm_id, config=None):
        self.stub.Create(api.CreateRequest(vm_id=vm_id, config=config or ec.config()), timeout=30)
        self.stub.Start(api.VmRequest(vm_id=vm_id), timeout=30)
        self.stub.Pause(api.VmRequest(vm_id=vm_id), timeout=30)

    def test_snapshot_longer_than_the_request_timeout_succeeds_and_keeps_its_files(self):
        # emberd's quick calls give up after 10 s; a snapshot of a big guest takes longer.
        self.start_emberd(FAKE_VMM_SNAPSHOT_SECONDS=12)
        self.paused_vm("big")
        snapshot = self.stub.CreateSnapshot(api.CreateSnapshotRequest(vm_id="big"), timeout=60)
        self.assertGreater(snapshot.create_duration_us, 12_000_000)
        self.assertEqual(os.path.getsize(snapshot.memory_path), 4096)
        self.assertTrue(os.path.exists(snapshot.state_path))
        restored = self.stub.Restore(api.RestoreRequest(
            snapshot_id=snapshot.snapshot_id, vm_id_prefix="clone"), timeout=30)
        self.assertEqual(restored.vms[0].state, api.Vm.PAUSED)

    def test_client_deadline_before_a_slow_snapshot_ends_keeps_and_records_it(self):
        done = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"fake-vmm-done-{os.getpid()}")
        self.addCleanup(lambda: os.path.exists(done) and os.unlink(done))
        self.start_emberd(FAKE_VMM_SNAPSHOT_SECONDS=2, FAKE_VMM_SNAPSHOT_DONE=done)
        self.paused_vm("slow")
        with self.assertRaises(grpc.RpcError) as raised:
            self.stub.CreateSnapshot(api.CreateSnapshotRequest(vm_id="slow"), timeout=0.5)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        deadline = time.time() + 20
        while not os.path.exists(done):
            self.assertLess(time.time(), deadline, "the fake VMM never finished its snapshot")
            time.sleep(0.05)
        # The VMM finished writing: emberd keeps the files and records the snapshot, so it
        # restores under the id emberd gave it (the VM's one snapshot directory).
        while not self.stub.ListSnapshots(api.ListSnapshotsRequest(), timeout=5).snapshots:
            self.assertLess(time.time(), deadline, "emberd never recorded the snapshot")
            time.sleep(0.05)
        snapshots = os.listdir(os.path.join(self.emberd.state_dir, "snapshots"))
        self.assertEqual(len(snapshots), 1)
        record = os.path.join(self.emberd.state_dir, "snapshots", snapshots[0])
        self.assertEqual(sorted(os.listdir(record)),
                         ["memory", "snapshot.json", "snapshot.mac", "state", "vm_config.json"])
        restored = self.stub.Restore(api.RestoreRequest(
            snapshot_id=snapshots[0], vm_id_prefix="clone"), timeout=30)
        self.assertEqual(restored.vms[0].state, api.Vm.PAUSED)

    def test_stop_ends_a_vm_whose_snapshot_never_finishes(self):
        self.start_emberd(FAKE_VMM_SNAPSHOT_SECONDS=3600)
        self.paused_vm("stuck")
        mine = os.path.join(self.emberd.dir, "mine")
        snapshot = self.pool.submit(
            self.stub.CreateSnapshot,
            api.CreateSnapshotRequest(vm_id="stuck", snapshot_dir=mine), timeout=60)
        # Stop only once the VMM is writing: its state file is there.
        deadline = time.time() + 20
        while not os.path.exists(os.path.join(mine, "state")):
            self.assertLess(time.time(), deadline, "the fake VMM never started its snapshot")
            time.sleep(0.05)
        stopped = self.stub.Stop(api.StopRequest(vm_id="stuck", timeout_ms=500), timeout=30)
        self.assertEqual(stopped.state, api.Vm.STOPPED)
        with self.assertRaises(grpc.RpcError) as raised:
            snapshot.result(timeout=30)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.UNAVAILABLE)
        # The VMM is gone, so nothing writes the half-made files any more: they are removed,
        # its unfinished temporary memory file too, and the directory emberd made for them.
        self.assertEqual(os.listdir(os.path.join(self.emberd.state_dir, "snapshots")), [])
        self.assertFalse(os.path.exists(mine))

    def test_stop_of_a_vmm_that_never_answers_takes_its_timeout_not_the_request_timeout(self):
        # The request timeout is 10 s; a function clone's discard stops with 2 s, on the one
        # discard thread every function shares.
        self.start_emberd(FAKE_VMM_IGNORE_STOP=1)
        self.paused_vm("deaf")
        started = time.monotonic()
        stopped = self.stub.Stop(api.StopRequest(vm_id="deaf", timeout_ms=2000), timeout=30)
        took = time.monotonic() - started
        self.assertEqual(stopped.state, api.Vm.STOPPED)
        self.assertLess(took, 8, "the stop waited out the request timeout")

    def wait_for(self, path, what):
        deadline = time.time() + 20
        while not os.path.exists(path):
            self.assertLess(time.time(), deadline, what)
            time.sleep(0.05)

    def test_snapshot_finished_after_emberd_was_killed_is_recorded_on_restart(self):
        self.start_emberd(FAKE_VMM_SNAPSHOT_SECONDS=2)
        self.paused_vm("src")
        mine = os.path.join(self.emberd.dir, "mine")
        self.pool.submit(self.stub.CreateSnapshot,
                         api.CreateSnapshotRequest(vm_id="src", snapshot_dir=mine), timeout=60)
        self.wait_for(os.path.join(mine, "state"), "the fake VMM never started its snapshot")
        self.emberd.kill9()
        # The VMM finishes writing with nobody to tell.
        self.wait_for(os.path.join(mine, "memory"), "the fake VMM never finished its snapshot")
        self.emberd.start()
        self.stub = self.emberd.stub
        snapshots = self.stub.ListSnapshots(api.ListSnapshotsRequest(), timeout=5).snapshots
        self.assertEqual([s.state_path for s in snapshots], [os.path.join(mine, "state")])
        self.stub.DeleteSnapshot(api.DeleteSnapshotRequest(
            snapshot_id=snapshots[0].snapshot_id), timeout=5)
        self.assertFalse(os.path.exists(mine))

    def test_snapshot_cut_short_with_emberd_and_its_vmm_is_removed_on_restart(self):
        self.start_emberd(FAKE_VMM_SNAPSHOT_SECONDS=3600)
        self.paused_vm("src")
        vmm_pid = self.stub.Get(api.VmRequest(vm_id="src"), timeout=5).pid
        mine = os.path.join(self.emberd.dir, "mine")
        self.pool.submit(self.stub.CreateSnapshot,
                         api.CreateSnapshotRequest(vm_id="src", snapshot_dir=mine), timeout=60)
        self.wait_for(os.path.join(mine, "state"), "the fake VMM never started its snapshot")
        self.emberd.kill9()
        os.kill(vmm_pid, signal.SIGKILL)
        self.assertTrue(any(".tmp-" in name for name in os.listdir(mine)), os.listdir(mine))
        self.emberd.start()
        self.stub = self.emberd.stub
        self.assertEqual(list(self.stub.ListSnapshots(api.ListSnapshotsRequest(),
                                                      timeout=5).snapshots), [])
        # Its files, the temporary memory file and both directories are gone: nothing is left
        # that emberd does not know of.
        self.assertFalse(os.path.exists(mine))
        self.assertEqual(os.listdir(os.path.join(self.emberd.state_dir, "snapshots")), [])

    def test_restore_and_overrides_need_no_help_text_from_the_vmm(self):
        argv_log = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"fake-vmm-argv-{os.getpid()}")
        self.addCleanup(lambda: os.path.exists(argv_log) and os.unlink(argv_log))
        self.start_emberd(FAKE_VMM_ARGV_LOG=argv_log)
        config = ec.config()
        net = config.network_interfaces.add()
        net.iface_id = "eth0"
        net.host_dev_name = "tap-src"
        config.vsock.vsock_id = "vsock0"
        config.vsock.guest_cid = 3
        config.vsock.uds_path = "/tmp/src.vsock"
        self.paused_vm("src", config)
        snapshot = self.stub.CreateSnapshot(api.CreateSnapshotRequest(vm_id="src"), timeout=30)
        overrides = api.RestoreOverrides()
        overrides.iface_host_dev_name["eth0"] = "tap-clone"
        overrides.vsock_uds_path = "/tmp/clone.vsock"
        restored = self.stub.Restore(api.RestoreRequest(
            snapshot_id=snapshot.snapshot_id, vm_id_prefix="clone", overrides=[overrides]),
            timeout=30)
        self.assertEqual(restored.vms[0].state, api.Vm.PAUSED)
        with open(argv_log) as f:
            clone_argv = [json.loads(line) for line in f][-1]
        # The state file emberd opened and checked, as an inherited fd.
        self.assertTrue(clone_argv[clone_argv.index("--restore-from") + 1]
                        .startswith("/proc/self/fd/"))
        # The overrides travel as one binary message, which the VMM reads as it is, except that
        # the vsock socket is named inside the directory emberd checked (an fd it inherits).
        sent = ec.cfg.RestoreOverrides()
        with open(clone_argv[clone_argv.index("--restore-overrides") + 1], "rb") as f:
            sent.ParseFromString(f.read())
        self.assertRegex(sent.vsock_uds_path, r"^/proc/self/fd/[0-9]+/clone\.vsock$")
        sent.vsock_uds_path = overrides.vsock_uds_path
        self.assertEqual(sent, overrides)

    def test_restore_hands_the_vmm_the_state_file_emberd_verified_not_what_its_name_leads_to(self):
        snapshot_dir = tempfile.mkdtemp(prefix="fake-vmm-swap-")
        self.addCleanup(shutil.rmtree, snapshot_dir, True)
        read = os.path.join(snapshot_dir, "read")
        # The clone's fake VMM replaces the snapshot's state file after emberd checked it (its
        # MAC too) and before it opens what it was given.
        self.start_emberd(FAKE_VMM_RESTORE_READ=read,
                          FAKE_VMM_RESTORE_SWAP=os.path.join(snapshot_dir, "snap", "state"))
        self.paused_vm("src")
        snapshot = self.stub.CreateSnapshot(api.CreateSnapshotRequest(
            vm_id="src", snapshot_dir=os.path.join(snapshot_dir, "snap")), timeout=30)
        restored = self.stub.Restore(api.RestoreRequest(
            snapshot_id=snapshot.snapshot_id, vm_id_prefix="clone"), timeout=30)
        self.assertEqual(restored.vms[0].state, api.Vm.PAUSED)
        with open(read, "rb") as f:
            self.assertEqual(f.read(), b"fake state")

    def snapshot_in(self, snapshot_dir, vm_id="src", diff=False):
        return self.stub.CreateSnapshot(api.CreateSnapshotRequest(
            vm_id=vm_id, snapshot_dir=snapshot_dir,
            type=api.CreateSnapshotRequest.DIFF if diff else api.CreateSnapshotRequest.FULL),
            timeout=30)

    def test_restore_hands_the_vmm_the_memory_file_and_bases_emberd_opened_not_their_names(self):
        top = tempfile.mkdtemp(prefix="fake-vmm-links-")
        self.addCleanup(shutil.rmtree, top, True)
        read = os.path.join(top, "read.json")
        full, diff = os.path.join(top, "full"), os.path.join(top, "diff")
        # The clone's fake VMM replaces the memory file and the diff's base by symlinks to a
        # root-only file after emberd opened them, before it reads what it was given.
        self.start_emberd(FAKE_VMM_RESTORE_FILES=read, FAKE_VMM_RESTORE_LINKS=os.pathsep.join(
            [os.path.join(diff, "memory"), os.path.join(full, "memory")]))
        config = ec.config()
        config.machine_config.track_dirty_pages = True
        self.paused_vm("src", config)
        self.snapshot_in(full)
        snapshot = self.snapshot_in(diff, diff=True)
        restored = self.stub.Restore(api.RestoreRequest(
            snapshot_id=snapshot.snapshot_id, vm_id_prefix="clone"), timeout=30)
        self.assertEqual(restored.vms[0].state, api.Vm.PAUSED)
        with open(read) as f:
            # The fake VMM's memory files, 4096 zero bytes; never /etc/shadow.
            self.assertEqual(json.load(f), {
                "--restore-mem": "\0" * 4096,
                "--base-memory-file " + os.path.join(full, "memory"): "\0" * 4096})

    def test_uffd_restore_prefetches_the_working_set_emberd_opened_not_its_name(self):
        top = tempfile.mkdtemp(prefix="fake-vmm-ws-")
        self.addCleanup(shutil.rmtree, top, True)
        read = os.path.join(top, "read.json")
        snap = os.path.join(top, "snap")
        self.start_emberd(FAKE_VMM_RESTORE_FILES=read,
                          FAKE_VMM_RESTORE_LINKS=os.path.join(snap, "memory.ws"))
        self.paused_vm("src")
        snapshot = self.snapshot_in(snap)
        with open(os.path.join(snap, "memory.ws"), "wb") as f:
            f.write(b"the working set")
        self.stub.Restore(api.RestoreRequest(
            snapshot_id=snapshot.snapshot_id, vm_id_prefix="clone",
            memory_backend=api.RestoreRequest.UFFD, prefetch_working_set=True), timeout=30)
        with open(read) as f:
            self.assertEqual(json.load(f)["--working-set"], "the working set")

    def test_a_snapshot_dir_swapped_for_a_symlink_after_the_request_is_not_written_through(self):
        top = tempfile.mkdtemp(prefix="fake-vmm-dir-")
        self.addCleanup(shutil.rmtree, top, True)
        snap, checked, outside = (os.path.join(top, n) for n in ("snap", "checked", "outside"))
        os.mkdir(outside)
        self.start_emberd(FAKE_VMM_SNAPSHOT_SECONDS=2)
        self.paused_vm("src")
        pending = self.pool.submit(self.snapshot_in, snap)
        # The state file is written, the memory file under way: the name now leads elsewhere.
        deadline = time.monotonic() + 20
        while not os.path.exists(os.path.join(snap, "state")):
            self.assertLess(time.monotonic(), deadline, "the fake VMM never wrote its state file")
            time.sleep(0.05)
        os.rename(snap, checked)
        os.symlink(outside, snap)
        try:
            pending.result(timeout=30)
        except grpc.RpcError:
            pass  # emberd may find the snapshot's name leading elsewhere afterwards
        self.assertEqual(os.listdir(outside), [])
        self.assertIn("memory", os.listdir(checked))

    def swapped_snapshot(self, swap_to):
        """A snapshot whose fake VMM, once it has written it, makes its snapshot_dir a symlink
        to `swap_to` (before it answers)."""
        top = tempfile.mkdtemp(prefix="fake-vmm-swap-dir-")
        self.addCleanup(shutil.rmtree, top, True)
        self.start_emberd(FAKE_VMM_SNAPSHOT_DIR_SWAP=swap_to)
        self.paused_vm("src")
        return self.snapshot_in(os.path.join(top, "snap"))

    def test_a_snapshot_dir_swapped_for_a_crafted_pair_before_the_reply_is_not_sealed(self):
        crafted = tempfile.mkdtemp(prefix="fake-vmm-crafted-")
        self.addCleanup(shutil.rmtree, crafted, True)
        with open(os.path.join(crafted, "state"), "wb") as f:
            f.write(b"crafted state")
        with open(os.path.join(crafted, "memory"), "wb") as f:
            f.write(b"\0" * 4096)
        try:
            snapshot = self.swapped_snapshot(crafted)
        except grpc.RpcError:
            return  # refused at once: nothing sealed
        # Sealed were the files the VMM wrote, so the crafted pair its name leads to now is no
        # snapshot of emberd's.
        with self.assertRaises(grpc.RpcError) as refused:
            self.stub.Restore(api.RestoreRequest(
                snapshot_id=snapshot.snapshot_id, vm_id_prefix="clone"), timeout=30)
        self.assertIn(refused.exception.code(), (grpc.StatusCode.FAILED_PRECONDITION,
                                                 grpc.StatusCode.INVALID_ARGUMENT))

    def test_delete_of_a_snapshot_whose_dir_became_a_symlink_removes_nothing_it_leads_to(self):
        canary = tempfile.mkdtemp(prefix="fake-vmm-canary-")
        self.addCleanup(shutil.rmtree, canary, True)
        for name in ("state", "memory", "memory.ws"):
            with open(os.path.join(canary, name), "w") as f:
                f.write("canary")
        snapshot = self.swapped_snapshot(canary)
        self.stub.DeleteSnapshot(api.DeleteSnapshotRequest(snapshot_id=snapshot.snapshot_id),
                                 timeout=30)
        self.assertEqual(sorted(os.listdir(canary)), ["memory", "memory.ws", "state"])


class StateDirLockTest(unittest.TestCase):
    def setUp(self):
        self.emberd = ec.Emberd(extra_args=["--no-jail", "--vmm", FAKE_VMM])

    def tearDown(self):
        self.emberd.close()

    def second_emberd(self, socket):
        return subprocess.run(
            [EMBERD, "--socket", socket, "--state-dir", self.emberd.state_dir,
             "--vmm", FAKE_VMM], capture_output=True, text=True, timeout=30)

    def test_second_emberd_on_the_same_state_dir_and_socket_exits_and_leaves_the_socket(self):
        second = self.second_emberd(self.emberd.socket)
        self.assertNotEqual(second.returncode, 0)
        self.assertIn(self.emberd.state_dir, second.stderr)
        self.assertIn("another emberd", second.stderr)
        # The first emberd still serves on its socket.
        self.assertTrue(os.path.exists(self.emberd.socket))
        self.assertEqual(list(self.emberd.stub.List(api.ListRequest(), timeout=5).vms), [])

    def test_second_emberd_on_the_same_state_dir_with_its_own_socket_exits(self):
        other = os.path.join(self.emberd.dir, "other.sock")
        second = self.second_emberd(other)
        self.assertNotEqual(second.returncode, 0)
        self.assertIn("another emberd", second.stderr)
        self.assertFalse(os.path.exists(other))

    def test_second_emberd_on_the_same_socket_with_its_own_state_dir_exits(self):
        state_dir = os.path.join(self.emberd.dir, "other-state")
        second = subprocess.run(
            [EMBERD, "--socket", self.emberd.socket, "--state-dir", state_dir,
             "--vmm", FAKE_VMM], capture_output=True, text=True, timeout=30)
        self.assertNotEqual(second.returncode, 0)
        self.assertIn(self.emberd.socket, second.stderr)
        self.assertEqual(list(self.emberd.stub.List(api.ListRequest(), timeout=5).vms), [])

    def test_the_lock_ends_with_emberd_not_with_its_vms(self):
        self.emberd.stub.Create(api.CreateRequest(vm_id="live", config=ec.config()), timeout=30)
        pid = self.emberd.stub.Get(api.VmRequest(vm_id="live")).pid
        self.emberd.kill9()
        os.kill(pid, 0)  # the VM outlives emberd
        self.emberd.start()
        self.assertEqual(self.emberd.stub.Get(api.VmRequest(vm_id="live"), timeout=5).state,
                         api.Vm.CREATED)


class SnapshotKeyTest(unittest.TestCase):
    """emberd's snapshot key (<state dir>/snapshot.key): made private at first start, and a
    start refused while anyone else could read it."""

    def setUp(self):
        self.emberd = ec.Emberd(extra_args=["--vmm", FAKE_VMM])
        self.key = os.path.join(self.emberd.state_dir, "snapshot.key")

    def tearDown(self):
        if self.emberd.proc.poll() is None:
            self.emberd.close()
        shutil.rmtree(self.emberd.dir, ignore_errors=True)

    def restart(self):
        """emberd started again on its state dir: its exit code and stderr."""
        self.emberd.kill9()  # keeps the state dir
        try:
            again = subprocess.run(
                [EMBERD, "--socket", self.emberd.socket, "--state-dir", self.emberd.state_dir,
                 "--vmm", FAKE_VMM], capture_output=True, text=True, timeout=10)
        except subprocess.TimeoutExpired:
            self.fail("emberd started with a snapshot key it should refuse")
        return again.returncode, again.stderr

    def test_key_is_made_at_first_start_readable_by_emberd_alone(self):
        st = os.stat(self.key)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        self.assertEqual(st.st_size, 32)
        self.assertTrue(stat.S_ISREG(st.st_mode))

    def test_start_with_a_key_readable_by_others_is_refused(self):
        os.chmod(self.key, 0o644)
        code, stderr = self.restart()
        self.assertNotEqual(code, 0)
        self.assertIn(self.key, stderr)
        self.assertIn("mode 0644", stderr)

    def test_start_with_a_key_that_is_no_regular_file_is_refused(self):
        os.unlink(self.key)
        os.mkdir(self.key, 0o700)
        code, stderr = self.restart()
        self.assertNotEqual(code, 0)
        self.assertIn(self.key + " is not a regular file", stderr)


if __name__ == "__main__":
    ember_unittest.main()
