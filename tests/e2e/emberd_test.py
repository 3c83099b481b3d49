"""End-to-end tests of emberd through its gRPC API with an independent Python client
(Debian's python3-grpcio, stubs from grpc_python_plugin), and of emberctl. Boots Ember's test
guest; needs /dev/kvm."""
import json
import os
import queue
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import ember_unittest
import ember_client as ec
from ember_client import api, grpc

EMBERCTL = os.path.join(ec.BUILD_DIR, "bin", "emberctl")


def code_of(call, *args, **kwargs):
    try:
        call(*args, timeout=30, **kwargs)
    except grpc.RpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


class EventReader:
    """Collects a WatchEvents stream on a thread."""

    def __init__(self, stub, vm_id=""):
        self.events = queue.Queue()
        self.call = stub.WatchEvents(api.WatchEventsRequest(vm_id=vm_id))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for event in self.call:
                self.events.put(event)
        except grpc.RpcError:
            pass

    def wait_for(self, predicate, timeout=20):
        deadline = time.time() + timeout
        seen = []
        while time.time() < deadline:
            try:
                event = self.events.get(timeout=max(0.01, deadline - time.time()))
            except queue.Empty:
                break
            seen.append(event)
            if predicate(event):
                return event
        raise AssertionError(f"event not seen; got {seen}")

    def close(self):
        self.call.cancel()


class VmChecks:
    """Checks of VMs for a TestCase whose self.stub talks to emberd."""

    def console_of(self, vm_id):
        return b"".join(c.data for c in self.stub.StreamConsole(
            api.StreamConsoleRequest(vm_id=vm_id), timeout=10))

    def wait_console(self, vm_id, pattern, timeout=30):
        """The VM's console once it matches the regex `pattern` (bytes)."""
        deadline = time.time() + timeout
        text = b""
        while time.time() < deadline:
            text = self.console_of(vm_id)
            if re.search(pattern, text):
                return text
            time.sleep(0.05)
        self.fail(f"{vm_id}: {pattern!r} not on its console: {text[-400:]!r}")

    def assert_counts_on(self, vm_id, before):
        """A clone of a VM paused mid-count (`counter` scenario; `before`: the VM's console at
        the snapshot) goes on counting from the snapshot, with no new boot, and finds the
        memory region it filled before the snapshot intact."""
        text = self.wait_console(vm_id, rb"PASS counter\n")
        self.assertNotIn(b"Ember test guest", text)
        self.assertIn(b"checksum ok", text)
        joined = before + text  # a line cut by the pause continues in the clone
        self.assertEqual([int(n) for n in re.findall(rb"count (\d+)\n", joined)],
                         list(range(1, 41)))
        counted = [int(n) for n in re.findall(rb"count (\d+)\n", before)]
        self.assertLessEqual(min(int(n) for n in re.findall(rb"count (\d+)\n", text)),
                             counted[-1] + 2)


    def counting_vm(self, vm_id, config=None):
        """A VM counting (`counter` scenario), paused mid-count; its console so far."""
        self.stub.Create(api.CreateRequest(vm_id=vm_id, config=config or ec.config("counter,idle")),
                         timeout=30)
        self.stub.Start(api.VmRequest(vm_id=vm_id), timeout=30)
        self.wait_console(vm_id, rb"count 2\n")
        self.stub.Pause(api.VmRequest(vm_id=vm_id), timeout=30)
        before = self.console_of(vm_id)
        self.assertNotIn(b"PASS counter", before, "the counter ended before the pause")
        return before

    def stop_and_delete(self, *vm_ids):
        """Each VM stops cleanly (exit code 0) through the API and is deleted."""
        for vm_id in vm_ids:
            stopped = self.stub.Stop(api.StopRequest(vm_id=vm_id), timeout=30)
            self.assertEqual((stopped.state, stopped.exit.exit_code), (api.Vm.STOPPED, 0))
            self.stub.Delete(api.DeleteRequest(vm_id=vm_id), timeout=30)


class EmberdTest(VmChecks, unittest.TestCase):
    def setUp(self):
        self.emberd = ec.Emberd()
        self.stub = self.emberd.stub

    def tearDown(self):
        self.emberd.close()

    def unjailed(self):
        """Replaces the fixture's emberd by one with --no-jail, for a test about something a
        jailed VMM does not do (a working set written beside the snapshot; a drive the test
        makes as root)."""
        self.emberd.close()
        self.emberd = ec.Emberd(extra_args=["--no-jail"])
        self.stub = self.emberd.stub

    def create(self, vm_id, scenario="idle"):
        return self.stub.Create(api.CreateRequest(vm_id=vm_id, config=ec.config(scenario)),
                                timeout=30)

    def test_lifecycle_create_start_boot_pause_resume_stop_delete(self):
        events = EventReader(self.stub)
        vm = self.create("life")
        self.assertEqual(vm.state, api.Vm.CREATED)
        self.assertGreater(vm.pid, 0)
        events.wait_for(lambda e: e.vm_id == "life" and e.state == api.Vm.CREATED)

        vm = self.stub.Start(api.VmRequest(vm_id="life"), timeout=30)
        self.assertEqual(vm.state, api.Vm.RUNNING)
        booted = events.wait_for(lambda e: e.kind == api.Event.BOOTED)
        self.assertGreater(booted.boot_time_us, 0)
        print(f"boot time through the API: {booted.boot_time_us} us", file=sys.stderr)

        self.assertEqual(self.stub.Pause(api.VmRequest(vm_id="life"), timeout=30).state,
                         api.Vm.PAUSED)
        events.wait_for(lambda e: e.state == api.Vm.PAUSED)
        self.assertEqual(self.stub.Resume(api.VmRequest(vm_id="life"), timeout=30).state,
                         api.Vm.RUNNING)
        events.wait_for(lambda e: e.state == api.Vm.RUNNING)

        metrics = json.loads(self.stub.GetMetrics(api.GetMetricsRequest(vm_id="life")).json)
        self.assertIn("boot", metrics)

        vm = self.stub.Stop(api.StopRequest(vm_id="life"), timeout=30)
        self.assertEqual(vm.state, api.Vm.STOPPED)
        self.assertEqual(vm.exit.exit_code, 0)
        self.assertIn("stopped", vm.exit.reason)
        exited = events.wait_for(lambda e: e.kind == api.Event.EXITED)
        self.assertEqual(exited.exit.exit_code, 0)
        events.wait_for(lambda e: e.state == api.Vm.STOPPED)

        self.stub.Delete(api.DeleteRequest(vm_id="life"), timeout=30)
        events.wait_for(lambda e: e.kind == api.Event.DELETED)
        self.assertEqual(code_of(self.stub.Get, api.VmRequest(vm_id="life"))[0],
                         grpc.StatusCode.NOT_FOUND)
        self.assertFalse(os.path.exists(vm.state_dir))
        events.close()

    def test_guest_exit_is_streamed_with_its_reason(self):
        events = EventReader(self.stub)
        self.create("hello", scenario="hello")
        self.stub.Start(api.VmRequest(vm_id="hello"), timeout=30)
        exited = events.wait_for(lambda e: e.kind == api.Event.EXITED)
        self.assertEqual(exited.exit.exit_code, 0)
        self.assertIn("reset", exited.exit.reason)
        console = b"".join(c.data for c in self.stub.StreamConsole(
            api.StreamConsoleRequest(vm_id="hello")))
        self.assertIn(b"PASS hello", console)
        events.close()

    def test_crash_of_ember_vmm_is_a_stop_with_the_signal(self):
        events = EventReader(self.stub)
        vm = self.create("crash")
        self.stub.Start(api.VmRequest(vm_id="crash"), timeout=30)
        os.kill(vm.pid, signal.SIGKILL)
        exited = events.wait_for(lambda e: e.kind == api.Event.EXITED)
        self.assertEqual(exited.exit.signal, signal.SIGKILL)
        self.assertIn("killed", exited.exit.reason)
        self.assertEqual(self.stub.Get(api.VmRequest(vm_id="crash")).state, api.Vm.STOPPED)
        events.close()

    def test_snapshot_and_restore_two_clones(self):
        events = EventReader(self.stub)
        self.create("snap", scenario="counter,idle")
        self.stub.Start(api.VmRequest(vm_id="snap"), timeout=30)
        events.wait_for(lambda e: e.vm_id == "snap" and e.kind == api.Event.BOOTED)
        self.wait_console("snap", rb"count 2\n")
        self.stub.Pause(api.VmRequest(vm_id="snap"), timeout=30)
        before = self.console_of("snap")
        self.assertNotIn(b"PASS counter", before, "the counter ended before the pause")

        snapshot = self.stub.CreateSnapshot(api.CreateSnapshotRequest(vm_id="snap"), timeout=60)
        self.assertEqual(snapshot.vm_id, "snap")
        self.assertTrue(os.path.getsize(snapshot.state_path) > 0)
        self.assertEqual(os.path.getsize(snapshot.memory_path), (32 << 20) + 48)  # + its trailer
        self.assertGreater(snapshot.create_duration_us, 0)
        print(f"snapshot of a 32 MiB VM through the API: {snapshot.create_duration_us} us",
              file=sys.stderr)
        self.assertEqual(self.stub.Get(api.VmRequest(vm_id="snap")).state, api.Vm.PAUSED)

        restored = self.stub.Restore(api.RestoreRequest(
            snapshot_id=snapshot.snapshot_id, vm_id_prefix="clone", count=2, resume=True),
            timeout=60)
        self.assertEqual([vm.vm_id for vm in restored.vms], ["clone-0", "clone-1"])
        pids = {vm.pid for vm in restored.vms}
        self.assertEqual(len(pids), 2)
        for vm in restored.vms:
            self.assertEqual(vm.state, api.Vm.RUNNING)
            self.assertEqual(vm.restored_from, snapshot.snapshot_id)
            self.assertEqual(vm.config.boot_source.boot_args, "console=ttyS0 ember.test=counter,idle")
            events.wait_for(lambda e, i=vm.vm_id: e.vm_id == i and e.state == api.Vm.RUNNING)

        for vm in restored.vms:
            self.assert_counts_on(vm.vm_id, before)
        # The source is untouched by its clones: resumed, it counts on too.
        self.stub.Resume(api.VmRequest(vm_id="snap"), timeout=30)
        self.wait_console("snap", rb"PASS counter\n")

        self.stop_and_delete("clone-0", "clone-1", "snap")
        self.assertEqual(list(self.stub.List(api.ListRequest()).vms), [])
        # The snapshot outlives its VM and can still be restored.
        again = self.stub.Restore(api.RestoreRequest(
            snapshot_id=snapshot.snapshot_id, vm_id_prefix="late"), timeout=60)
        self.assertEqual(again.vms[0].state, api.Vm.PAUSED)
        events.close()

    def test_restore_from_a_state_path_with_a_bad_memory_file_is_invalid(self):
        self.create("src")
        self.stub.Start(api.VmRequest(vm_id="src"), timeout=30)
        self.stub.Pause(api.VmRequest(vm_id="src"), timeout=30)
        snapshot = self.stub.CreateSnapshot(api.CreateSnapshotRequest(
            vm_id="src", snapshot_dir=os.path.join(self.emberd.dir, "mine")), timeout=60)
        self.assertEqual(snapshot.state_path, os.path.join(self.emberd.dir, "mine", "state"))
        short = os.path.join(self.emberd.dir, "short.mem")
        with open(short, "wb") as f:
            f.write(b"\0" * 4096)
        code, details = code_of(self.stub.Restore, api.RestoreRequest(
            state_path=snapshot.state_path, memory_path=short, vm_id_prefix="bad"))
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, details)
        self.assertIn("snapshot", details)
        self.assertEqual(code_of(self.stub.Get, api.VmRequest(vm_id="bad-0"))[0],
                         grpc.StatusCode.NOT_FOUND)
        # The right memory file (found next to the state file) restores.
        vm = self.stub.Restore(api.RestoreRequest(state_path=snapshot.state_path,
                                                  vm_id_prefix="good", resume=True), timeout=60)
        self.assertEqual(vm.vms[0].state, api.Vm.RUNNING)

    def test_restore_of_a_snapshot_changed_after_emberd_wrote_it_is_refused(self):
        self.create("src")
        self.stub.Start(api.VmRequest(vm_id="src"), timeout=30)
        self.stub.Pause(api.VmRequest(vm_id="src"), timeout=30)
        snapshot = self.stub.CreateSnapshot(api.CreateSnapshotRequest(vm_id="src"), timeout=60)

        def flip(path, offset_from_end):
            with open(path, "r+b") as f:
                f.seek(os.path.getsize(path) - offset_from_end)
                byte = f.read(1)[0]
                f.seek(-1, os.SEEK_CUR)
                f.write(bytes([byte ^ 1]))

        # One byte of the state file, restored by id and by its path.
        flip(snapshot.state_path, os.path.getsize(snapshot.state_path) // 2)
        for request in (api.RestoreRequest(snapshot_id=snapshot.snapshot_id, vm_id_prefix="bad"),
                        api.RestoreRequest(state_path=snapshot.state_path, vm_id_prefix="bad")):
            code, details = code_of(self.stub.Restore, request)
            self.assertEqual(code, grpc.StatusCode.FAILED_PRECONDITION, details)
            self.assertIn("state file " + snapshot.state_path, details)
            self.assertEqual(code_of(self.stub.Get, api.VmRequest(vm_id="bad-0"))[0],
                             grpc.StatusCode.NOT_FOUND)
        flip(snapshot.state_path, os.path.getsize(snapshot.state_path) // 2)
        # One byte of the snapshot id in the memory file's trailer (its last 48 bytes).
        flip(snapshot.memory_path, 20)
        code, details = code_of(self.stub.Restore, api.RestoreRequest(
            snapshot_id=snapshot.snapshot_id, vm_id_prefix="bad"))
        self.assertEqual(code, grpc.StatusCode.FAILED_PRECONDITION, details)
        self.assertIn("memory file " + snapshot.memory_path, details)
        flip(snapshot.memory_path, 20)
        # As emberd wrote it, the snapshot restores.
        vm = self.stub.Restore(api.RestoreRequest(
            snapshot_id=snapshot.snapshot_id, vm_id_prefix="good", resume=True), timeout=60)
        self.assertEqual(vm.vms[0].state, api.Vm.RUNNING)
        self.stop_and_delete("good-0", "src")

    def test_snapshot_into_a_directory_holding_one_is_refused_and_keeps_it(self):
        self.create("src")
        self.stub.Start(api.VmRequest(vm_id="src"), timeout=30)
        self.stub.Pause(api.VmRequest(vm_id="src"), timeout=30)
        mine_dir = os.path.join(self.emberd.dir, "mine")
        first = self.stub.CreateSnapshot(api.CreateSnapshotRequest(
            vm_id="src", snapshot_dir=mine_dir), timeout=60)
        with open(first.memory_path, "rb") as f:
            memory = f.read()
        code, details = code_of(self.stub.CreateSnapshot, api.CreateSnapshotRequest(
            vm_id="src", snapshot_dir=mine_dir))
        self.assertEqual(code, grpc.StatusCode.ALREADY_EXISTS, details)
        self.assertIn("snapshot_dir", details)
        with open(first.memory_path, "rb") as f:
            self.assertEqual(f.read(), memory)
        self.assertEqual([s.snapshot_id for s in self.stub.ListSnapshots(
            api.ListSnapshotsRequest(vm_id="src"), timeout=30).snapshots], [first.snapshot_id])
        vm = self.stub.Restore(api.RestoreRequest(snapshot_id=first.snapshot_id,
                                                  vm_id_prefix="again", resume=True), timeout=60)
        self.assertEqual(vm.vms[0].state, api.Vm.RUNNING)

    def uffd_metric(self, vm_id, name):
        return json.loads(self.stub.GetMetrics(
            api.GetMetricsRequest(vm_id=vm_id), timeout=30).json).get("uffd", {}).get(name, 0)

    def test_uffd_restore_records_a_working_set_that_a_later_restore_prefetches(self):
        self.unjailed()
        before = self.counting_vm("src")
        snapshot = self.stub.CreateSnapshot(api.CreateSnapshotRequest(vm_id="src"), timeout=60)
        working_set = snapshot.memory_path + ".ws"
        # Nothing recorded yet: a prefetching restore is refused before any VMM starts.
        code, details = code_of(self.stub.Restore, api.RestoreRequest(
            snapshot_id=snapshot.snapshot_id, vm_id_prefix="early",
            memory_backend=api.RestoreRequest.UFFD, prefetch_working_set=True))
        self.assertEqual(code, grpc.StatusCode.FAILED_PRECONDITION, details)
        self.assertIn("prefetch_working_set", details)
        self.assertEqual(code_of(self.stub.Get, api.VmRequest(vm_id="early-0"))[0],
                         grpc.StatusCode.NOT_FOUND)

        vm = self.stub.Restore(api.RestoreRequest(
            snapshot_id=snapshot.snapshot_id, vm_id_prefix="uffd",
            memory_backend=api.RestoreRequest.UFFD, resume=True), timeout=60).vms[0]
        self.assertEqual(vm.state, api.Vm.RUNNING)
        self.assert_counts_on("uffd-0", before)
        self.assertGreater(self.uffd_metric("uffd-0", "page_faults_served"), 0)
        self.assertFalse(os.path.exists(working_set))
        self.stop_and_delete("uffd-0")
        self.assertGreater(os.path.getsize(working_set), 0)  # recorded when the VM ended

        vm = self.stub.Restore(api.RestoreRequest(
            snapshot_id=snapshot.snapshot_id, vm_id_prefix="pre",
            memory_backend=api.RestoreRequest.UFFD, prefetch_working_set=True, resume=True),
            timeout=60).vms[0]
        self.assertEqual(vm.state, api.Vm.RUNNING)
        self.assert_counts_on("pre-0", before)
        self.assertGreater(self.uffd_metric("pre-0", "prefetched_pages"), 0)
        self.stop_and_delete("pre-0")

    def test_list_and_delete_snapshots(self):
        self.create("src")
        self.stub.Start(api.VmRequest(vm_id="src"), timeout=30)
        self.stub.Pause(api.VmRequest(vm_id="src"), timeout=30)
        kept = self.stub.CreateSnapshot(api.CreateSnapshotRequest(vm_id="src"), timeout=60)
        mine_dir = os.path.join(self.emberd.dir, "mine")
        mine = self.stub.CreateSnapshot(api.CreateSnapshotRequest(
            vm_id="src", snapshot_dir=mine_dir), timeout=60)
        listed = self.stub.ListSnapshots(api.ListSnapshotsRequest(), timeout=30).snapshots
        self.assertEqual([s.snapshot_id for s in listed],
                         sorted([kept.snapshot_id, mine.snapshot_id]))
        self.assertEqual({s.snapshot_id: s for s in listed}[mine.snapshot_id], mine)
        self.assertEqual(len(self.stub.ListSnapshots(
            api.ListSnapshotsRequest(vm_id="src"), timeout=30).snapshots), 2)
        self.assertEqual(list(self.stub.ListSnapshots(
            api.ListSnapshotsRequest(vm_id="other"), timeout=30).snapshots), [])

        self.stub.DeleteSnapshot(api.DeleteSnapshotRequest(snapshot_id=mine.snapshot_id),
                                 timeout=30)
        self.assertFalse(os.path.exists(mine.memory_path))
        self.assertFalse(os.path.exists(mine_dir))  # emptied, so removed
        record_dir = os.path.join(self.emberd.state_dir, "snapshots", mine.snapshot_id)
        self.assertFalse(os.path.exists(record_dir))
        self.assertEqual([s.snapshot_id for s in self.stub.ListSnapshots(
            api.ListSnapshotsRequest(), timeout=30).snapshots], [kept.snapshot_id])
        code, details = code_of(self.stub.Restore, api.RestoreRequest(
            snapshot_id=mine.snapshot_id, vm_id_prefix="c"))
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND, details)
        code, details = code_of(self.stub.DeleteSnapshot,
                                api.DeleteSnapshotRequest(snapshot_id=mine.snapshot_id))
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND, details)
        self.assertIn(mine.snapshot_id, details)

        # A restarted emberd has forgotten it too, and still knows the other.
        self.emberd.kill9()
        self.emberd.start()
        self.stub = self.emberd.stub
        self.assertEqual([s.snapshot_id for s in self.stub.ListSnapshots(
            api.ListSnapshotsRequest(), timeout=30).snapshots], [kept.snapshot_id])

    def test_delete_snapshot_is_refused_while_a_clone_or_a_diff_needs_it(self):
        config = ec.config("counter,idle")
        config.machine_config.track_dirty_pages = True
        self.counting_vm("src", config)
        full = self.stub.CreateSnapshot(api.CreateSnapshotRequest(vm_id="src"), timeout=60)
        diff = self.stub.CreateSnapshot(api.CreateSnapshotRequest(
            vm_id="src", type=api.CreateSnapshotRequest.DIFF), timeout=60)
        self.assertEqual(full.base_snapshot_id, "")
        self.assertEqual(diff.base_snapshot_id, full.snapshot_id)
        self.stub.Restore(api.RestoreRequest(snapshot_id=full.snapshot_id, vm_id_prefix="clone"),
                          timeout=60)

        def refused(snapshot, *mentions):
            code, details = code_of(self.stub.DeleteSnapshot,
                                    api.DeleteSnapshotRequest(snapshot_id=snapshot.snapshot_id))
            self.assertEqual(code, grpc.StatusCode.FAILED_PRECONDITION, details)
            for text in mentions:
                self.assertIn(text, details)
            self.assertTrue(os.path.exists(snapshot.memory_path))

        refused(full, diff.snapshot_id)  # the diff applies onto it
        refused(diff, "src", "next DIFF")  # src's next diff would apply onto it
        # What emberd knows of the chain survives its restart.
        self.emberd.kill9()
        self.emberd.start()
        self.stub = self.emberd.stub
        self.assertEqual({s.snapshot_id: s.base_snapshot_id for s in self.stub.ListSnapshots(
            api.ListSnapshotsRequest(), timeout=30).snapshots}[diff.snapshot_id],
            full.snapshot_id)
        refused(diff, "src", "next DIFF")
        self.stub.Stop(api.StopRequest(vm_id="src"), timeout=30)
        self.stub.DeleteSnapshot(api.DeleteSnapshotRequest(snapshot_id=diff.snapshot_id),
                                 timeout=30)
        self.assertFalse(os.path.exists(diff.memory_path))
        refused(full, "clone-0", "restored from")  # the clone still reads its memory file
        self.stub.Stop(api.StopRequest(vm_id="clone-0"), timeout=30)
        self.stub.DeleteSnapshot(api.DeleteSnapshotRequest(snapshot_id=full.snapshot_id),
                                 timeout=30)
        self.assertFalse(os.path.exists(full.memory_path))
        self.assertEqual(list(self.stub.ListSnapshots(api.ListSnapshotsRequest(),
                                                      timeout=30).snapshots), [])

    def test_update_rate_limits_throttles_a_running_vms_drive(self):
        self.unjailed()
        image = os.path.join(self.emberd.dir, "scratch.img")
        with open(image, "wb") as f:  # rootfs/testguest/blk_pattern.h's initial pattern
            f.write(bytes((s * 0x9d + i + (i >> 8) * 0x3b + 0x11) & 0xff
                          for s in range(64) for i in range(512)))
        config = ec.config("counter,blk,idle")
        config.drives.add(drive_id="scratch", path_on_host=image)
        self.stub.Create(api.CreateRequest(vm_id="rl", config=config), timeout=30)
        self.stub.Start(api.VmRequest(vm_id="rl"), timeout=30)
        # While the guest counts (before its first block request): one request per 100 ms.
        self.stub.UpdateRateLimits(api.UpdateRateLimitsRequest(vm_id="rl", drives=[
            api.DriveRateLimit(drive_id="scratch", rate_limiter=ec.cfg.RateLimiter(
                ops=ec.cfg.TokenBucket(size=1, refill_time=100)))]), timeout=30)
        self.assertNotIn(b"PASS counter", self.console_of("rl"), "the update came too late")
        text = self.wait_console("rl", rb"(PASS|FAIL) blk")
        self.assertIn(b"PASS blk", text)
        metrics = json.loads(self.stub.GetMetrics(api.GetMetricsRequest(vm_id="rl")).json)
        self.assertGreater(metrics["block_scratch"]["rate_limiter_throttled"], 0)
        self.assertEqual(metrics["control"]["rate_limit_updates"], 1)

    def image(self, name, sectors, mode=0o666):
        """A drive image in emberd's (allowed) directory; 0666 so that a jailed VM's own uid
        may open it, as a Create's drive must be."""
        path = os.path.join(self.emberd.dir, name)
        with open(path, "wb") as f:  # rootfs/testguest/blk_pattern.h's initial pattern
            f.write(bytes((s * 0x9d + i + (i >> 8) * 0x3b + 0x11) & 0xff
                          for s in range(sectors) for i in range(512)))
        os.chmod(path, mode)
        return path

    def swap(self, vm_id, drive_id, path):
        return self.stub.UpdateDrive(api.UpdateDriveRequest(
            vm_id=vm_id, drive_id=drive_id, path_on_host=path), timeout=30)

    def test_update_drive_swaps_a_jailed_vms_file_and_its_record_keeps_the_path(self):
        first, bigger = self.image("first.img", 64), self.image("bigger.img", 128)
        config = ec.config("blk,idle")
        config.drives.add(drive_id="scratch", path_on_host=first)
        self.stub.Create(api.CreateRequest(vm_id="sw", config=config), timeout=30)
        self.stub.Start(api.VmRequest(vm_id="sw"), timeout=30)
        self.wait_console("sw", rb"PASS blk")

        vm = self.swap("sw", "scratch", bigger)

        self.assertEqual(vm.config.drives[0].path_on_host, bigger)
        metrics = json.loads(self.stub.GetMetrics(api.GetMetricsRequest(vm_id="sw")).json)
        self.assertEqual(metrics["block_scratch"]["file_swaps"], 1)
        # The record carries the new path across a restart of emberd, and into snapshots.
        self.emberd.kill9()
        self.emberd.start()
        self.stub = self.emberd.stub
        self.assertEqual(self.stub.Get(api.VmRequest(vm_id="sw")).config.drives[0].path_on_host,
                         bigger)
        self.stub.Pause(api.VmRequest(vm_id="sw"), timeout=30)
        snapshot = self.stub.CreateSnapshot(api.CreateSnapshotRequest(vm_id="sw"), timeout=60)
        clone = self.stub.Restore(api.RestoreRequest(
            snapshot_id=snapshot.snapshot_id, vm_id_prefix="swc"), timeout=60).vms[0]
        self.assertEqual(clone.config.drives[0].path_on_host, bigger)
        self.stop_and_delete("swc-0", "sw")

    def test_update_drive_refuses_what_a_create_would_refuse_and_keeps_the_old_file(self):
        first, other = self.image("first.img", 64), self.image("other.img", 64)
        private = self.image("private.img", 64, mode=0o600)  # root's: not the jail uid's
        read_only = self.image("read-only.img", 64, mode=0o644)
        escape = os.path.join(self.emberd.dir, "escape.img")
        os.symlink("/etc/passwd", escape)
        config = ec.config("blk,idle")
        config.drives.add(drive_id="scratch", path_on_host=first)
        self.stub.Create(api.CreateRequest(vm_id="sw", config=config), timeout=30)
        self.stub.Start(api.VmRequest(vm_id="sw"), timeout=30)
        self.wait_console("sw", rb"PASS blk")
        s = self.stub
        cases = [
            ("unknown drive", "nope", other, grpc.StatusCode.NOT_FOUND, "nope"),
            ("outside --allow-dir", "scratch", "/etc/passwd", grpc.StatusCode.INVALID_ARGUMENT,
             "path_on_host"),
            ("symlink out", "scratch", escape, grpc.StatusCode.INVALID_ARGUMENT, "path_on_host"),
            ("missing", "scratch", other + ".missing", grpc.StatusCode.INVALID_ARGUMENT,
             "path_on_host"),
            ("not the jail uid's", "scratch", private, grpc.StatusCode.INVALID_ARGUMENT,
             "may not open this file to read and write"),
            ("read-only for the jail uid", "scratch", read_only,
             grpc.StatusCode.INVALID_ARGUMENT, "may not open this file to read and write"),
            ("no path", "scratch", "", grpc.StatusCode.INVALID_ARGUMENT, "path_on_host"),
        ]
        for name, drive_id, path, code, mention in cases:
            with self.subTest(name):
                with self.assertRaises(grpc.RpcError) as raised:
                    self.swap("sw", drive_id, path)
                self.assertEqual(raised.exception.code(), code, raised.exception.details())
                self.assertIn(mention, raised.exception.details())
        self.assertEqual(s.Get(api.VmRequest(vm_id="sw")).config.drives[0].path_on_host, first)
        metrics = json.loads(s.GetMetrics(api.GetMetricsRequest(vm_id="sw")).json)
        self.assertEqual(metrics["block_scratch"].get("file_swaps", 0), 0)
        self.stop_and_delete("sw")
        with self.assertRaises(grpc.RpcError) as stopped:
            self.swap("sw", "scratch", other)
        self.assertEqual(stopped.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_update_drive_cannot_reach_the_function_images_only_emberds_vmms_may_use(self):
        """STATE/fn-images is in the VMMs' rules (a function's clones attach its image) but never
        the API's: a swap onto a function's image would let one VM write what its clones share."""
        self.emberd.close()
        allowed = tempfile.mkdtemp(prefix="ember-allowed-")  # beside the state dir, not above
        self.addCleanup(shutil.rmtree, allowed, True)
        self.emberd = ec.Emberd(allow_dirs=(allowed,))
        self.stub = self.emberd.stub
        first = os.path.join(allowed, "first.img")
        shutil.copyfile(self.image("first.img", 64), first)
        os.chmod(first, 0o666)
        function_image = os.path.join(self.emberd.state_dir, "fn-images", "0" * 64 + ".ext4")
        shutil.copyfile(first, function_image)
        os.chmod(function_image, 0o666)
        config = ec.config("blk,idle")
        config.drives.add(drive_id="scratch", path_on_host=first)
        self.stub.Create(api.CreateRequest(vm_id="fi", config=config), timeout=30)
        self.stub.Start(api.VmRequest(vm_id="fi"), timeout=30)
        self.wait_console("fi", rb"PASS blk")
        with self.assertRaises(grpc.RpcError) as raised:
            self.swap("fi", "scratch", function_image)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT,
                         raised.exception.details())
        self.assertIn("path_on_host", raised.exception.details())
        self.assertEqual(self.stub.Get(api.VmRequest(vm_id="fi")).config.drives[0].path_on_host,
                         first)
        self.stop_and_delete("fi")

    def test_an_unjailed_vms_log_metrics_and_vsock_stay_in_the_directory_emberd_checked(self):
        """An unjailed VMM makes its log, metrics file and vsock socket by name long after emberd
        checked the path: once the directory's name leads out of --allow-dir, what the VMM
        writes still lands in the directory that passed."""
        self.unjailed()
        run = os.path.join(self.emberd.dir, "run")
        outside = os.path.join(self.emberd.dir, "outside")
        os.mkdir(run)
        os.mkdir(outside)
        config = ec.config()
        config.logger.log_path = os.path.join(run, "vm.log")
        config.logger.level = "Debug"
        config.metrics.metrics_path = os.path.join(run, "metrics.json")
        config.vsock.MergeFrom(ec.cfg.Vsock(vsock_id="v", guest_cid=3,
                                            uds_path=os.path.join(run, "v.sock")))
        self.stub.Create(api.CreateRequest(vm_id="made", config=config), timeout=30)
        checked = os.path.join(self.emberd.dir, "checked")
        os.rename(run, checked)
        os.symlink(outside, run)
        self.assertTrue(stat.S_ISSOCK(os.lstat(os.path.join(checked, "v.sock")).st_mode))
        self.stub.Start(api.VmRequest(vm_id="made"), timeout=30)
        self.stop_and_delete("made")  # ember-vmm writes its metrics as it ends
        with open(os.path.join(checked, "metrics.json")) as f:
            self.assertIn("vsock_v", json.load(f))
        self.assertGreater(os.path.getsize(os.path.join(checked, "vm.log")), 0)
        self.assertFalse(os.path.exists(os.path.join(checked, "v.sock")))  # removed at its end
        self.assertEqual(os.listdir(outside), [])

    def test_bad_requests_get_the_right_code_naming_the_field(self):
        self.create("busy")
        self.stub.Start(api.VmRequest(vm_id="busy"), timeout=30)
        self.create("fresh")
        self.create("gone")
        self.stub.Stop(api.StopRequest(vm_id="gone"), timeout=30)
        bad_mem = ec.config()
        bad_mem.machine_config.mem_size_mib = 4
        bad_cpus = ec.config()
        bad_cpus.machine_config.vcpu_count = 64
        rel_kernel = ec.config()
        rel_kernel.boot_source.kernel_image_path = "vmlinux"
        missing_kernel = ec.config()
        missing_kernel.boot_source.kernel_image_path = "/nonexistent/vmlinux"
        dup_drive = ec.config()
        for _ in range(2):
            d = dup_drive.drives.add()
            d.drive_id = "root"
            d.path_on_host = "/dev/null"
        # 2^58 ms: 0 ns once multiplied out in 64 bits (ember-vmm used to die of SIGFPE).
        overflowing_bucket = ec.cfg.TokenBucket(size=4096, refill_time=288230376151711744)
        overflowing_drive = ec.config()
        d = overflowing_drive.drives.add(drive_id="root", path_on_host="/dev/null")
        d.rate_limiter.bandwidth.CopyFrom(overflowing_bucket)
        I, N, E, F, R = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                         grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION,
                         grpc.StatusCode.RESOURCE_EXHAUSTED)
        s = self.stub
        cases = [
            ("create without config", s.Create, api.CreateRequest(vm_id="x"), I, "config"),
            ("create bad id", s.Create, api.CreateRequest(vm_id="a/b", config=ec.config()), I,
             "vm_id"),
            ("create long id", s.Create, api.CreateRequest(vm_id="a" * 65, config=ec.config()),
             I, "vm_id"),
            ("create mem 4", s.Create, api.CreateRequest(vm_id="x", config=bad_mem), I,
             "mem_size_mib"),
            ("create 64 vcpus", s.Create, api.CreateRequest(vm_id="x", config=bad_cpus), I,
             "vcpu_count"),
            ("relative kernel", s.Create, api.CreateRequest(vm_id="x", config=rel_kernel), I,
             "kernel_image_path"),
            ("missing kernel", s.Create, api.CreateRequest(vm_id="x", config=missing_kernel),
             I, "kernel_image_path"),
            ("duplicate drive", s.Create, api.CreateRequest(vm_id="x", config=dup_drive), I,
             "drive_id"),
            ("create overflowing refill", s.Create,
             api.CreateRequest(vm_id="x", config=overflowing_drive), I,
             "config.drives[0].rate_limiter.bandwidth.refill_time"),
            ("create taken id", s.Create, api.CreateRequest(vm_id="busy", config=ec.config()),
             E, "busy"),
            ("start empty id", s.Start, api.VmRequest(), I, "vm_id"),
            ("start unknown", s.Start, api.VmRequest(vm_id="nope"), N, "nope"),
            ("pause unknown", s.Pause, api.VmRequest(vm_id="nope"), N, "nope"),
            ("resume unknown", s.Resume, api.VmRequest(vm_id="nope"), N, "nope"),
            ("stop unknown", s.Stop, api.StopRequest(vm_id="nope"), N, "nope"),
            ("delete unknown", s.Delete, api.DeleteRequest(vm_id="nope"), N, "nope"),
            ("get unknown", s.Get, api.VmRequest(vm_id="nope"), N, "nope"),
            ("metrics unknown", s.GetMetrics, api.GetMetricsRequest(vm_id="nope"), N, "nope"),
            ("watch unknown", lambda r, timeout: list(s.WatchEvents(r, timeout=timeout)),
             api.WatchEventsRequest(vm_id="nope"), N, "nope"),
            ("double start", s.Start, api.VmRequest(vm_id="busy"), F, "RUNNING"),
            ("pause created", s.Pause, api.VmRequest(vm_id="fresh"), F, "CREATED"),
            ("resume running", s.Resume, api.VmRequest(vm_id="busy"), F, "RUNNING"),
            ("start stopped", s.Start, api.VmRequest(vm_id="gone"), F, "STOPPED"),
            ("delete running", s.Delete, api.DeleteRequest(vm_id="busy"), F, "stop it first"),
            ("stop timeout", s.Stop, api.StopRequest(vm_id="busy", timeout_ms=999999), I,
             "timeout_ms"),
            ("snapshot running", s.CreateSnapshot, api.CreateSnapshotRequest(vm_id="busy"), F,
             "PAUSED"),
            ("snapshot stopped", s.CreateSnapshot, api.CreateSnapshotRequest(vm_id="gone"), F,
             "STOPPED"),
            ("snapshot relative dir", s.CreateSnapshot,
             api.CreateSnapshotRequest(vm_id="busy", snapshot_dir="rel"), I, "snapshot_dir"),
            ("restore nothing", s.Restore, api.RestoreRequest(vm_id_prefix="c"), I,
             "snapshot_id"),
            ("restore unknown snapshot", s.Restore,
             api.RestoreRequest(snapshot_id="nope", vm_id_prefix="c"), N, "snapshot_id"),
            ("restore no prefix", s.Restore, api.RestoreRequest(snapshot_id="x"), I,
             "vm_id_prefix"),
            ("restore 65 clones", s.Restore,
             api.RestoreRequest(snapshot_id="x", vm_id_prefix="c", count=65), R, "count"),
            ("restore prefetch without uffd", s.Restore,
             api.RestoreRequest(snapshot_id="x", vm_id_prefix="c", prefetch_working_set=True),
             I, "prefetch_working_set"),
            ("restore unknown memory backend", s.Restore,
             api.RestoreRequest(snapshot_id="x", vm_id_prefix="c", memory_backend=7), I,
             "memory_backend"),
            ("delete snapshot without id", s.DeleteSnapshot, api.DeleteSnapshotRequest(), I,
             "snapshot_id"),
            ("delete snapshot bad id", s.DeleteSnapshot,
             api.DeleteSnapshotRequest(snapshot_id="../vms"), I, "snapshot_id"),
            ("delete unknown snapshot", s.DeleteSnapshot,
             api.DeleteSnapshotRequest(snapshot_id="nope"), N, "nope"),
            ("list snapshots bad vm id", s.ListSnapshots,
             api.ListSnapshotsRequest(vm_id="a/b"), I, "vm_id"),
            ("rate limits nothing", s.UpdateRateLimits, api.UpdateRateLimitsRequest(vm_id="busy"),
             I, "drives"),
            ("rate limit unknown drive", s.UpdateRateLimits, api.UpdateRateLimitsRequest(
                vm_id="busy", drives=[api.DriveRateLimit(drive_id="nope")]), N, "drive_id"),
            ("rate limit bad refill", s.UpdateRateLimits, api.UpdateRateLimitsRequest(
                vm_id="busy", drives=[api.DriveRateLimit(
                    drive_id="d", rate_limiter=ec.cfg.RateLimiter(
                        bandwidth=ec.cfg.TokenBucket(size=1000)))]), I, "refill_time"),
            ("rate limit overflowing refill", s.UpdateRateLimits, api.UpdateRateLimitsRequest(
                vm_id="busy", interfaces=[api.InterfaceRateLimit(
                    iface_id="eth0", tx_rate_limiter=ec.cfg.RateLimiter(
                        ops=overflowing_bucket))]), I,
             "interfaces[0].tx_rate_limiter.ops.refill_time"),
            ("console unknown", lambda r, timeout: list(s.StreamConsole(r, timeout=timeout)),
             api.StreamConsoleRequest(vm_id="nope"), N, "nope"),
        ]
        failures = []
        for name, call, request, want_code, want_text in cases:
            code, details = code_of(call, request)
            if code != want_code or want_text not in details:
                failures.append(f"{name}: got {code} \"{details}\", want {want_code} "
                                f"mentioning \"{want_text}\"")
        self.assertEqual(failures, [])
        # A failed Create leaves nothing behind.
        self.assertEqual(sorted(v.vm_id for v in s.List(api.ListRequest()).vms),
                         ["busy", "fresh", "gone"])

    def test_vm_limit_is_resource_exhausted(self):
        self.emberd.close()
        self.emberd = ec.Emberd(max_vms=1)
        self.stub = self.emberd.stub
        self.create("one")
        code, details = code_of(self.stub.Create,
                                api.CreateRequest(vm_id="two", config=ec.config()))
        self.assertEqual(code, grpc.StatusCode.RESOURCE_EXHAUSTED, details)

    def test_emberd_sigkill_and_restart_loses_nothing(self):
        self.create("run1")
        self.stub.Start(api.VmRequest(vm_id="run1"), timeout=30)
        self.create("run2")
        self.stub.Start(api.VmRequest(vm_id="run2"), timeout=30)
        self.stub.Pause(api.VmRequest(vm_id="run2"), timeout=30)
        self.create("made")
        self.create("ended")
        self.stub.Stop(api.StopRequest(vm_id="ended"), timeout=30)
        before = {v.vm_id: v for v in self.stub.List(api.ListRequest()).vms}

        self.emberd.kill9()
        self.emberd.start()
        self.stub = self.emberd.stub

        after = {v.vm_id: v for v in self.stub.List(api.ListRequest()).vms}
        self.assertEqual(sorted(after), sorted(before))
        for vm_id, vm in before.items():
            self.assertEqual(after[vm_id].state, vm.state, vm_id)
            self.assertEqual(after[vm_id].pid, vm.pid, vm_id)
        self.assertEqual(after["run1"].boot_time_us, before["run1"].boot_time_us)
        # Still controllable, and events still flow.
        events = EventReader(self.stub)
        self.assertEqual(self.stub.Pause(api.VmRequest(vm_id="run1"), timeout=30).state,
                         api.Vm.PAUSED)
        self.assertEqual(self.stub.Resume(api.VmRequest(vm_id="run2"), timeout=30).state,
                         api.Vm.RUNNING)
        self.stub.Start(api.VmRequest(vm_id="made"), timeout=30)
        events.wait_for(lambda e: e.vm_id == "made" and e.kind == api.Event.BOOTED)
        for vm_id in ("run1", "run2", "made"):
            vm = self.stub.Stop(api.StopRequest(vm_id=vm_id), timeout=30)
            self.assertEqual(vm.state, api.Vm.STOPPED)
            self.assertIn("stopped", vm.exit.reason)
        events.close()

    def test_fork_server_death_ends_emberd_and_a_restart_recovers(self):
        vm = self.create("kept")
        self.stub.Start(api.VmRequest(vm_id="kept"), timeout=30)
        emberd_pid = self.emberd.proc.pid
        with open(f"/proc/{emberd_pid}/task/{emberd_pid}/children") as f:
            children = [int(pid) for pid in f.read().split()]
        # The fork server is a fork of emberd (same executable and name); the VMs are
        # ember-vmm, the Functions' helpers are forks that name themselves emberd-*.
        def comm(pid):
            with open(f"/proc/{pid}/comm") as f:
                return f.read().strip()

        fork_servers = [pid for pid in children
                        if os.readlink(f"/proc/{pid}/exe") == os.readlink(f"/proc/{emberd_pid}/exe")
                        and comm(pid) == comm(emberd_pid)]
        self.assertEqual(len(fork_servers), 1, children)
        os.kill(fork_servers[0], signal.SIGKILL)

        self.assertEqual(self.emberd.proc.wait(timeout=10), 1)
        self.assertIn(f"the fork server (pid {fork_servers[0]}) exited", self.emberd.read_log())
        self.emberd.channel.close()
        self.emberd.log.close()
        self.emberd.start()
        self.stub = self.emberd.stub
        after = self.stub.Get(api.VmRequest(vm_id="kept"), timeout=30)
        self.assertEqual(after.state, api.Vm.RUNNING)
        self.assertEqual(after.pid, vm.pid)
        self.create("new")  # the new emberd has a fork server again

    def test_exit_of_a_vm_while_emberd_is_down_is_read_from_its_record(self):
        vm = self.create("ended-alone")
        self.stub.Start(api.VmRequest(vm_id="ended-alone"), timeout=30)
        self.emberd.kill9()
        os.kill(vm.pid, signal.SIGTERM)  # a clean stop, exit code 0, nobody watching
        deadline = time.time() + 10
        while os.path.exists(f"/proc/{vm.pid}") and time.time() < deadline:
            with open(f"/proc/{vm.pid}/stat") as f:
                if f.read().split(") ")[1].startswith("Z"):
                    break  # a zombie of the dead emberd's subreaper chain: it has ended
            time.sleep(0.02)
        self.emberd.start()
        self.stub = self.emberd.stub
        vm = self.stub.Get(api.VmRequest(vm_id="ended-alone"))
        self.assertEqual(vm.state, api.Vm.STOPPED)
        self.assertEqual(vm.exit.exit_code, 0)
        self.assertIn("stopped by", vm.exit.reason)
        self.assertIn("while emberd was not running", vm.exit.reason)

    def test_vm_that_ends_while_emberd_is_down_is_stopped_after_restart(self):
        vm = self.create("lost")
        self.stub.Start(api.VmRequest(vm_id="lost"), timeout=30)
        self.emberd.kill9()
        os.kill(vm.pid, signal.SIGKILL)
        time.sleep(0.2)
        self.emberd.start()
        self.stub = self.emberd.stub
        vm = self.stub.Get(api.VmRequest(vm_id="lost"))
        self.assertEqual(vm.state, api.Vm.STOPPED)
        self.assertIn("while emberd was not running", vm.exit.reason)


class EmberctlTest(unittest.TestCase):
    def setUp(self):
        self.emberd = ec.Emberd()

    def tearDown(self):
        self.emberd.close()

    def ctl(self, *args, check=None):
        result = subprocess.run([EMBERCTL, "--socket", self.emberd.socket, *args],
                                capture_output=True, text=True, timeout=60)
        if check is not None:
            self.assertEqual(result.returncode, check, result.stderr)
        return result

    def test_run_streams_the_console_and_exits_with_the_vm(self):
        result = self.ctl("run", "--id", "r1", "--mem", "32", "--boot-args",
                          "console=ttyS0 ember.test=hello", check=0)
        self.assertIn("PASS hello", result.stdout)
        self.assertIn("ended", result.stderr)

    def test_lifecycle_through_emberctl(self):
        self.ctl("create", "--id", "c1", "--mem", "32", "--boot-args",
                 "console=ttyS0 ember.test=idle", check=0)
        vm = json.loads(self.ctl("--json", "start", "c1", check=0).stdout)
        self.assertEqual(vm["state"], "RUNNING")
        self.assertEqual(json.loads(self.ctl("--json", "pause", "c1", check=0).stdout)["state"],
                         "PAUSED")
        self.assertEqual(json.loads(self.ctl("--json", "resume", "c1", check=0).stdout)["state"],
                         "RUNNING")
        listed = json.loads(self.ctl("list", "--json", check=0).stdout)
        self.assertEqual([v["vm_id"] for v in listed["vms"]], ["c1"])
        self.assertIn("boot", json.loads(self.ctl("metrics", "c1", check=0).stdout))
        self.assertEqual(json.loads(self.ctl("--json", "stop", "c1", check=0).stdout)["state"],
                         "STOPPED")
        self.ctl("delete", "c1", check=0)
        self.assertEqual(json.loads(self.ctl("list", "--json", check=0).stdout).get("vms", []), [])

    def test_config_file_in_firecracker_format(self):
        path = os.path.join(self.emberd.dir, "vm.json")
        with open(path, "w") as f:
            json.dump({"boot-source": {"boot_args": "console=ttyS0 ember.test=idle"},
                       "machine-config": {"vcpu_count": 1, "mem_size_mib": 32}}, f)
        vm = json.loads(self.ctl("--json", "create", "--id", "f1", "--config", path,
                                 check=0).stdout)
        self.assertEqual(vm["config"]["machine_config"]["mem_size_mib"], 32)

    def test_snapshots_listed_restored_with_uffd_and_deleted_through_emberctl(self):
        self.ctl("create", "--id", "s1", "--mem", "32", "--boot-args",
                 "console=ttyS0 ember.test=idle", check=0)
        self.ctl("start", "s1", check=0)
        self.ctl("pause", "s1", check=0)
        snapshot_id = json.loads(self.ctl("snapshot", "s1", check=0).stdout)["snapshot_id"]
        listed = json.loads(self.ctl("--json", "snapshots", check=0).stdout)
        self.assertEqual([s["snapshot_id"] for s in listed["snapshots"]], [snapshot_id])
        self.assertIn(snapshot_id, self.ctl("snapshots", "s1", check=0).stdout)
        result = self.ctl("restore", "--snapshot", snapshot_id, "--prefix", "c",
                          "--prefetch-working-set", check=1)
        self.assertIn("INVALID_ARGUMENT", result.stderr)
        self.assertIn("prefetch_working_set", result.stderr)
        self.assertIn("not file or uffd", self.ctl("restore", "--snapshot", snapshot_id,
                                                   "--prefix", "c", "--mem-backend", "mmap",
                                                   check=2).stderr)
        clone = json.loads(self.ctl("--json", "restore", "--snapshot", snapshot_id, "--prefix",
                                    "u", "--mem-backend", "uffd", "--resume", check=0).stdout)
        self.assertEqual(clone["vms"][0]["state"], "RUNNING")
        result = self.ctl("delete-snapshot", snapshot_id, check=1)
        self.assertIn("FAILED_PRECONDITION", result.stderr)
        self.assertIn("u-0", result.stderr)
        self.ctl("stop", "u-0", check=0)
        self.ctl("delete-snapshot", snapshot_id, check=0)
        self.assertEqual(json.loads(self.ctl("--json", "snapshots", check=0).stdout)
                         .get("snapshots", []), [])
        self.assertIn("NOT_FOUND", self.ctl("delete-snapshot", snapshot_id, check=1).stderr)

    def test_a_snapshot_without_a_mac_restores_only_once_the_operator_trusts_it(self):
        self.ctl("create", "--id", "t1", "--mem", "32", "--boot-args",
                 "console=ttyS0 ember.test=idle", check=0)
        self.ctl("start", "t1", check=0)
        self.ctl("pause", "t1", check=0)
        snapshot = json.loads(self.ctl("snapshot", "t1", check=0).stdout)
        snapshot_id = snapshot["snapshot_id"]
        # As an emberd without snapshot MACs left it, or one that recorded it from its pending
        # record after a crash.
        os.unlink(os.path.join(self.emberd.state_dir, "snapshots", snapshot_id, "snapshot.mac"))
        result = self.ctl("restore", "--snapshot", snapshot_id, "--prefix", "early", check=1)
        self.assertIn("FAILED_PRECONDITION", result.stderr)
        self.assertIn("has no MAC recorded", result.stderr)
        self.assertIn("emberctl trust-snapshot " + snapshot_id, result.stderr)
        self.assertIn("sealed", self.ctl("trust-snapshot", snapshot_id, check=0).stdout)
        clone = json.loads(self.ctl("--json", "restore", "--snapshot", snapshot_id, "--prefix",
                                    "late", "--resume", check=0).stdout)
        self.assertEqual(clone["vms"][0]["state"], "RUNNING")
        self.ctl("stop", "late-0", check=0)
        # A snapshot changed after it was sealed is never sealed anew.
        with open(snapshot["state_path"], "r+b") as f:
            f.seek(100)
            byte = f.read(1)[0]
            f.seek(100)
            f.write(bytes([byte ^ 1]))
        result = self.ctl("trust-snapshot", snapshot_id, check=1)
        self.assertIn("FAILED_PRECONDITION", result.stderr)
        self.assertIn("seals only a snapshot that has no MAC", result.stderr)
        self.assertIn("NOT_FOUND", self.ctl("trust-snapshot", "nope-1", check=1).stderr)

    def test_errors_are_readable_with_exit_codes(self):
        result = self.ctl("start", "nope", check=1)
        self.assertIn("NOT_FOUND", result.stderr)
        self.assertIn("nope", result.stderr)
        result = self.ctl("create", "--mem", "4", check=1)
        self.assertIn("INVALID_ARGUMENT", result.stderr)
        self.assertIn("mem_size_mib", result.stderr)
        self.assertIn("unknown command", self.ctl("frobnicate", check=2).stderr)
        self.assertIn("not a whole number", self.ctl("create", "--mem", "lots", check=2).stderr)
        result = subprocess.run([EMBERCTL, "--socket", "/nonexistent.sock", "list"],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 3, result.stderr)
        self.assertIn("cannot reach emberd", result.stderr)


if __name__ == "__main__":
    ec.require_kvm()
    ember_unittest.main()
