"""Calls on one VM id racing each other in emberd (issue 19, faults): threads hammer Create and
Delete of one id, and drive swaps of one VM. Whatever the interleaving, emberd's records, the
VMs' directories and the VMMs that run agree. fake_vmm.py as the VMM (the control protocol
only), so no KVM or root is needed and the hammering is quick."""
import concurrent.futures
import os
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import ember_unittest
import ember_client as ec
from ember_client import api, grpc

FAKE_VMM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_vmm.py")


def fake_vmm_pids(state_dir):
    """Pids of the fake VMMs whose control socket lies in `state_dir` (their argv names it)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        # Run through its #! line: python3 FAKE_VMM ... (emberd's own argv names it after --vmm).
        if FAKE_VMM.encode() in argv[:2] and any(state_dir.encode() in a for a in argv):
            pids.append(int(pid))
    return pids


# A VMM that holds its control socket but never answers, as a wedged ember-vmm would: the
# process started listens, forks the holder, says the holder's pid in argv[2] once a connection
# came, and exits when its stdin closes; the holder keeps the socket and every connection.
WEDGED_LISTENER = (
    "import os, socket, sys\n"
    "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8)\n"
    "if os.fork() == 0:\n"
    "    sys.stdin.close()\n"
    "    held = []\n"
    "    while True:\n"
    "        held.append(s.accept()[0])\n"
    "        with open(sys.argv[2] + '.tmp', 'w') as f: f.write(str(os.getpid()))\n"
    "        os.rename(sys.argv[2] + '.tmp', sys.argv[2])\n"
    "sys.stdin.read()\n")


def spawn_with_pid(pid):
    """A process (sleep) whose pid is `pid`, made free by the caller, or None when other
    processes keep taking it first (ns_last_pid: needs root)."""
    for _ in range(200):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        process = subprocess.Popen(["sleep", "600"])
        if process.pid == pid:
            return process
        process.kill()
        process.wait()
    return None


class RacesTest(unittest.TestCase):
    def setUp(self):
        self.scratch = tempfile.mkdtemp(prefix="ember-races-")
        self.drive_log = os.path.join(self.scratch, "swaps")
        # Litter: each VM's directory takes a while to remove, as a real one with a big console.
        env = dict(os.environ, FAKE_VMM_DRIVE_LOG=self.drive_log, FAKE_VMM_LITTER="300")
        self.emberd = ec.Emberd(extra_args=["--no-jail", "--vmm", FAKE_VMM], env=env)
        self.addCleanup(self.emberd.close)
        self.stub = self.emberd.stub
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)
        self.addCleanup(self.pool.shutdown)

    def kill_holder(self, holder_file):
        """Ends WEDGED_LISTENER's holder, which emberd does not know (its socket's peer is the
        process that listened)."""
        if os.path.exists(holder_file):
            with open(holder_file) as f:
                os.kill(int(f.read()), signal.SIGKILL)

    def assert_removed_in_the_background(self, vm_dir):
        """emberd removes a leftover VM directory after it serves (its VMM ended first)."""
        deadline = time.time() + 120
        while os.path.exists(vm_dir) and time.time() < deadline:
            time.sleep(0.05)
        self.assertFalse(os.path.exists(vm_dir))

    def call(self, method, request):
        try:
            return method(request, timeout=60), None
        except grpc.RpcError as error:
            return None, error

    def assert_records_match_disk_and_processes(self):
        vms = {vm.vm_id: vm for vm in self.stub.List(api.ListRequest(), timeout=30).vms}
        vms_dir = os.path.join(self.emberd.state_dir, "vms")
        self.assertEqual(sorted(os.listdir(vms_dir)), sorted(vms),
                         "a VM directory without a VM, or a VM without its directory")
        for vm_id, vm in vms.items():
            self.assertTrue(os.path.exists(os.path.join(vms_dir, vm_id, "vm.json")), vm_id)
            self.assertTrue(os.path.exists(os.path.join(vms_dir, vm_id, "config.pb")), vm_id)
        live = sorted(vm.pid for vm in vms.values() if vm.state != api.Vm.STOPPED)
        self.assertEqual(sorted(fake_vmm_pids(self.emberd.state_dir)), live,
                         "a VMM that emberd does not know, or a known one that is gone")

    def test_creates_and_deletes_of_one_id_at_once_leave_records_files_and_vmms_agreeing(self):
        deadline = time.monotonic() + 8
        created = []

        def create():
            while time.monotonic() < deadline:
                vm, error = self.call(self.stub.Create,
                                      api.CreateRequest(vm_id="one", config=ec.config()))
                if error is None:
                    created.append(vm.pid)
                else:
                    # The VM exists, or is still being deleted: never a half-made one.
                    self.assertEqual(error.code(), grpc.StatusCode.ALREADY_EXISTS,
                                     error.details())

        def delete():
            while time.monotonic() < deadline:
                _, error = self.call(self.stub.Delete, api.DeleteRequest(vm_id="one", force=True))
                if error is not None:
                    self.assertIn(error.code(), (grpc.StatusCode.NOT_FOUND,
                                                 grpc.StatusCode.FAILED_PRECONDITION),
                                  error.details())

        for future in [self.pool.submit(f) for f in (create, create, create, delete, delete)]:
            future.result()
        self.assertGreater(len(created), 1)
        self.assert_records_match_disk_and_processes()
        # The id is usable again, its VM as whole as any.
        self.call(self.stub.Delete, api.DeleteRequest(vm_id="one", force=True))
        vm, error = self.call(self.stub.Create, api.CreateRequest(vm_id="one", config=ec.config()))
        self.assertIsNone(error)
        self.stub.Start(api.VmRequest(vm_id="one"), timeout=30)
        self.assert_records_match_disk_and_processes()

    def test_drive_swaps_at_once_leave_the_record_naming_the_file_the_vmm_got_last(self):
        paths = []
        for n in range(8):
            path = os.path.join(self.scratch, f"disk{n}")
            with open(path, "wb") as f:
                f.truncate(1 << 20)
            paths.append(path)
        config = ec.config()
        config.drives.add(drive_id="data", path_on_host=paths[0])
        self.stub.Create(api.CreateRequest(vm_id="swapped", config=config), timeout=30)
        self.stub.Start(api.VmRequest(vm_id="swapped"), timeout=30)

        def swap(path):
            _, error = self.call(self.stub.UpdateDrive, api.UpdateDriveRequest(
                vm_id="swapped", drive_id="data", path_on_host=path))
            self.assertIsNone(error, error and error.details())

        for round_ in range(30):
            futures = [self.pool.submit(swap, path) for path in random.sample(paths, 8)]
            for future in futures:
                future.result()
            with open(self.drive_log) as f:
                last = f.read().splitlines()[-1]
            recorded = self.stub.Get(api.VmRequest(vm_id="swapped"), timeout=30)
            self.assertEqual(recorded.config.drives[0].path_on_host, last,
                             f"round {round_}: the record names another file than the VMM's")

    def test_an_unrecorded_vmm_that_never_answers_stop_is_killed_at_restart(self):
        # A VM directory without vm.json (emberd died before recording it) whose VMM holds the
        # control socket but reads nothing, as a wedged ember-vmm would.
        self.emberd.kill9()
        vm_dir = os.path.join(self.emberd.state_dir, "vms", "unrecorded")
        os.makedirs(vm_dir)
        control = os.path.join(vm_dir, "control.sock")
        wedged = subprocess.Popen([sys.executable, "-c", (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8)\n"
            "held = []\n"
            "while True: held.append(s.accept()[0])\n"), control])
        self.addCleanup(lambda: wedged.poll() is None and wedged.kill())
        while not os.path.exists(control):
            time.sleep(0.01)
        # Killed once the stop has gone unanswered for the request timeout (10 s).
        self.emberd.start()
        self.stub = self.emberd.stub
        self.assertEqual(wedged.wait(timeout=30), -signal.SIGKILL,
                         "the VMM was left running, unknown to emberd")
        self.assert_removed_in_the_background(vm_dir)

    def wedged_leftover(self):
        """emberd killed, and a VM directory it left without a record whose control socket a
        WEDGED_LISTENER holds: (the directory, the listening process, its holder's pid file)."""
        self.emberd.kill9()
        vm_dir = os.path.join(self.emberd.state_dir, "vms", "unrecorded")
        os.makedirs(vm_dir)
        control = os.path.join(vm_dir, "control.sock")
        holder_file = os.path.join(self.scratch, "holder")
        listener = subprocess.Popen([sys.executable, "-c", WEDGED_LISTENER, control, holder_file],
                                    stdin=subprocess.PIPE)
        self.addCleanup(lambda: listener.poll() is None and listener.kill())
        self.addCleanup(self.kill_holder, holder_file)
        while not os.path.exists(control):
            time.sleep(0.01)
        return vm_dir, listener, holder_file

    def test_a_restart_serves_while_an_unrecorded_vmm_that_never_answers_is_ended(self):
        vm_dir, wedged, _ = self.wedged_leftover()
        self.emberd.start()
        self.stub = self.emberd.stub
        # Served while the VMM still runs, its id taken until its files are gone.
        _, error = self.call(self.stub.Create, api.CreateRequest(vm_id="unrecorded",
                                                                 config=ec.config()))
        self.assertIsNone(wedged.poll(), "emberd served only once it had ended the VMM")
        self.assertEqual(error and error.code(), grpc.StatusCode.ALREADY_EXISTS,
                         error and error.details())
        self.assertEqual(wedged.wait(timeout=60), -signal.SIGKILL)
        self.assert_removed_in_the_background(vm_dir)
        self.stub.Create(api.CreateRequest(vm_id="unrecorded", config=ec.config()), timeout=30)

    def test_an_unrecorded_vmm_is_killed_through_the_pidfd_opened_at_connect_not_its_pid(self):
        # The socket's peer (the process that listened) has exited after emberd connected, and
        # its pid went to another process before the stop timed out: that one must live.
        if os.geteuid() != 0:
            self.skipTest("making a pid be reused (ns_last_pid) needs root")
        vm_dir, listener, holder_file = self.wedged_leftover()
        reused = {}

        def reuse_the_listeners_pid():
            deadline = time.time() + 120
            while not os.path.exists(holder_file) and time.time() < deadline:
                time.sleep(0.01)
            listener.stdin.close()
            listener.wait()
            reused["process"] = spawn_with_pid(listener.pid)

        thread = threading.Thread(target=reuse_the_listeners_pid)
        thread.start()
        self.emberd.start(timeout=120)
        self.stub = self.emberd.stub
        thread.join(timeout=120)
        innocent = reused.get("process")
        if innocent is None:
            self.skipTest(f"pid {listener.pid} was taken by another process first")
        self.addCleanup(lambda: innocent.poll() is None and innocent.kill())
        # emberd is done with the leftover once its directory is gone.
        self.assert_removed_in_the_background(vm_dir)
        self.assertIsNone(innocent.poll(),
                          "emberd killed the process that took the unanswering VMM's pid")

    def test_a_delete_that_cannot_remove_every_file_keeps_the_id_until_a_retry_finishes(self):
        self.stub.Create(api.CreateRequest(vm_id="stuck", config=ec.config()), timeout=30)
        vm_dir = os.path.join(self.emberd.state_dir, "vms", "stuck")
        pinned = os.path.join(vm_dir, "pinned")
        open(pinned, "w").close()
        # Immutable: not even root removes it, as a file on a failing disk.
        subprocess.run(["chattr", "+i", pinned], check=True)
        self.addCleanup(subprocess.run, ["chattr", "-i", pinned], check=False)
        _, error = self.call(self.stub.Delete, api.DeleteRequest(vm_id="stuck", force=True))
        self.assertIsNotNone(error, "a Delete that left files behind said OK")
        # The id is not free while its directory is there: a Create would take it as its own.
        _, error = self.call(self.stub.Create, api.CreateRequest(vm_id="stuck",
                                                                 config=ec.config()))
        self.assertEqual(error and error.code(), grpc.StatusCode.ALREADY_EXISTS,
                         error and error.details())
        self.assertTrue(os.path.exists(pinned))
        subprocess.run(["chattr", "-i", pinned], check=True)
        _, error = self.call(self.stub.Delete, api.DeleteRequest(vm_id="stuck", force=True))
        self.assertIsNone(error, error and error.details())
        self.assertFalse(os.path.exists(vm_dir))
        self.assert_records_match_disk_and_processes()

    def test_a_failed_create_that_cannot_remove_every_file_keeps_the_id_until_a_delete(self):
        fail_now = os.path.join(self.scratch, "fail-now")
        failing = ec.Emberd(extra_args=["--no-jail", "--vmm", FAKE_VMM],
                            env=dict(os.environ, FAKE_VMM_FAIL_AFTER=fail_now))
        self.addCleanup(failing.close)
        create = self.pool.submit(self.call, failing.stub.Create,
                                  api.CreateRequest(vm_id="doomed", config=ec.config()))
        # Recorded and launched: its VMM waits for fail_now before it fails.
        vm_dir = os.path.join(failing.state_dir, "vms", "doomed")
        while not os.path.exists(os.path.join(vm_dir, "vm.json")):
            self.assertFalse(create.done(), create.done() and create.result())
            time.sleep(0.01)
        pinned = os.path.join(vm_dir, "pinned")
        open(pinned, "w").close()
        subprocess.run(["chattr", "+i", pinned], check=True)
        self.addCleanup(subprocess.run, ["chattr", "-i", pinned], check=False)
        open(fail_now, "w").close()
        _, error = create.result(timeout=60)
        self.assertIsNotNone(error, "a Create whose VMM failed said OK")
        self.assertIn("Delete", error.details())
        _, error = self.call(failing.stub.Create, api.CreateRequest(vm_id="doomed",
                                                                    config=ec.config()))
        self.assertEqual(error and error.code(), grpc.StatusCode.ALREADY_EXISTS,
                         error and error.details())
        subprocess.run(["chattr", "-i", pinned], check=True)
        _, error = self.call(failing.stub.Delete, api.DeleteRequest(vm_id="doomed"))
        self.assertIsNone(error, error and error.details())
        self.assertFalse(os.path.exists(vm_dir))

    def test_deleted_goes_out_when_the_delete_has_removed_every_file(self):
        self.stub.Create(api.CreateRequest(vm_id="stuck", config=ec.config()), timeout=30)
        pinned = os.path.join(self.emberd.state_dir, "vms", "stuck", "pinned")
        open(pinned, "w").close()
        subprocess.run(["chattr", "+i", pinned], check=True)
        self.addCleanup(subprocess.run, ["chattr", "-i", pinned], check=False)
        events = queue.Queue()
        watch = self.stub.WatchEvents(api.WatchEventsRequest(initial_state=True))
        self.addCleanup(watch.cancel)
        self.pool.submit(lambda: [events.put(event) for event in watch])
        # The initial state: the watch is in place before the Delete.
        self.assertEqual(events.get(timeout=30).vm_id, "stuck")
        _, error = self.call(self.stub.Delete, api.DeleteRequest(vm_id="stuck", force=True))
        self.assertIsNotNone(error, "a Delete that left files behind said OK")
        # A mark in the stream between the failed Delete and the one that finishes.
        self.stub.Create(api.CreateRequest(vm_id="mark", config=ec.config()), timeout=30)
        subprocess.run(["chattr", "-i", pinned], check=True)
        _, error = self.call(self.stub.Delete, api.DeleteRequest(vm_id="stuck", force=True))
        self.assertIsNone(error, error and error.details())
        seen = []
        while not seen or seen[-1] != ("stuck", api.Event.DELETED):
            event = events.get(timeout=30)
            seen.append((event.vm_id, event.kind))
        self.assertIn(("mark", api.Event.STATE), seen,
                      "DELETED went out before the Delete that removed the files")
        self.assertEqual(seen.count(("stuck", api.Event.DELETED)), 1, seen)

    def test_a_drive_swap_that_cannot_be_recorded_fails_saying_the_vmm_swapped(self):
        old, new = (os.path.join(self.scratch, name) for name in ("old", "new"))
        for path in (old, new):
            with open(path, "wb") as f:
                f.truncate(1 << 20)
        config = ec.config()
        config.drives.add(drive_id="data", path_on_host=old)
        self.stub.Create(api.CreateRequest(vm_id="unrecorded-swap", config=config), timeout=30)
        self.stub.Start(api.VmRequest(vm_id="unrecorded-swap"), timeout=30)
        # vm.json cannot be replaced, as on a full disk.
        vm_dir = os.path.join(self.emberd.state_dir, "vms", "unrecorded-swap")
        subprocess.run(["chattr", "+i", vm_dir], check=True)
        self.addCleanup(subprocess.run, ["chattr", "-i", vm_dir], check=False)
        _, error = self.call(self.stub.UpdateDrive, api.UpdateDriveRequest(
            vm_id="unrecorded-swap", drive_id="data", path_on_host=new))
        subprocess.run(["chattr", "-i", vm_dir], check=True)
        self.assertIsNotNone(error, "a swap emberd could not record said OK")
        self.assertIn("could not record the swap", error.details())
        with open(self.drive_log) as f:
            self.assertEqual(f.read().splitlines()[-1], new)


if __name__ == "__main__":
    ember_unittest.main()
