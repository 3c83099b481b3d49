"""ember-vmm's control channel without emberd: this test plays the controller over the
listening socket it passes as --control-fd, including malformed frames, which must get an
error (and, for a broken length, a closed connection) but never hurt the VM."""
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import unittest

import ember_unittest
import ember_client as ec
from ember.v1 import snapshot_pb2 as snap
from ember.v1 import vmm_control_pb2 as ctl

VMM = os.path.join(ec.BUILD_DIR, "bin", "ember-vmm")


class Controller:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.buf = b""
        self.next_id = 1

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, request, fds=()):
        """Sends one frame; `fds` go with it (SCM_RIGHTS), in the same sendmsg."""
        request.id = self.next_id
        self.next_id += 1
        payload = request.SerializeToString()
        frame = struct.pack("<I", len(payload)) + payload
        if fds:
            sent = socket.send_fds(self.sock, [frame], list(fds))
            self.send_raw(frame[sent:])
        else:
            self.send_raw(frame)
        return request.id

    def recv(self):
        """The next VmmMessage, or None once ember-vmm closed the connection."""
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack("<I", self.buf[:4])
                if len(self.buf) >= 4 + n:
                    message = ctl.VmmMessage()
                    message.ParseFromString(self.buf[4:4 + n])
                    self.buf = self.buf[4 + n:]
                    return message
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk

    def response(self):
        while True:
            message = self.recv()
            if message is None or message.HasField("response"):
                return message


class VmmFixture(unittest.TestCase):
    """One ember-vmm under control of the test; spawn() starts more."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ember-ctl-")
        self.procs = []
        config = os.path.join(self.dir, "vm.json")
        with open(config, "w") as f:
            f.write('{"boot-source": {"boot_args": "console=ttyS0 ember.test=' +
                    self.scenarios() + '"},'
                    ' "machine-config": {"mem_size_mib": 32}' + self.extra_config() + '}')
        self.path, self.vmm = self.spawn("control.sock", ["--config", config])

    def scenarios(self):
        return "idle"

    def extra_config(self):
        return ""

    def spawn(self, socket_name, args, pass_fds=()):
        """Starts an ember-vmm serving a new control socket; returns (socket path, process)."""
        path = os.path.join(self.dir, socket_name)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(4)
        proc = subprocess.Popen(
            [VMM] + args + ["--control-fd", str(listener.fileno()),
                            "--serial-out", path + ".console"],
            pass_fds=[listener.fileno()] + list(pass_fds), stderr=subprocess.PIPE)
        listener.close()
        self.procs.append(proc)
        return path, proc

    def tearDown(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def hello(self, path=None):
        controller = Controller(path or self.path)
        message = controller.recv()
        self.assertEqual(message.event.kind, ctl.ControlEvent.HELLO)
        return controller, message.event.status

    def wait_console(self, text, timeout=120):
        deadline = time.monotonic() + timeout
        console = self.path + ".console"
        while time.monotonic() < deadline:
            if os.path.exists(console):
                with open(console) as f:
                    out = f.read()
                if text in out:
                    return out
            self.assertIsNone(self.vmm.poll(), "ember-vmm ended")
            time.sleep(0.1)
        self.fail(f"no {text!r} on the console")

    def snapshot(self, controller, name):
        self.assertEqual(self.call(controller, lambda r: r.pause.SetInParent()).code, 0)
        state = os.path.join(self.dir, name)
        def create(r):
            r.create_snapshot.state_path = state
            r.create_snapshot.memory_path = state + ".mem"
        response = self.call(controller, create)
        self.assertEqual(response.code, 0, response.message)
        self.assertEqual(self.call(controller, lambda r: r.resume.SetInParent()).code, 0)
        return read_state(state)

    def snapshot_named(self, controller, directory, fds=()):
        """Asks for a snapshot to <directory>/state and <directory>/memory; its response."""
        def create(r):
            r.create_snapshot.state_path = os.path.join(directory, "state")
            r.create_snapshot.memory_path = os.path.join(directory, "memory")
        return self.call(controller, create, fds)

    def call(self, controller, fill, fds=()):
        """Sends one request built by fill(request); returns its response (events skipped)."""
        request = ctl.ControlRequest()
        fill(request)
        sent = controller.send(request, fds)
        response = controller.response().response
        self.assertEqual(response.id, sent)
        return response


class VmmControlTest(VmmFixture):
    def test_vcpus_wait_for_start_and_stop_ends_the_process(self):
        controller, status = self.hello()
        self.assertEqual(status.state, ctl.VmmStatus.CREATED)
        self.assertEqual(status.pid, self.vmm.pid)
        request = ctl.ControlRequest()
        request.start.SetInParent()
        sent = controller.send(request)
        response = controller.response()
        self.assertEqual((response.response.id, response.response.code), (sent, 0))
        self.assertEqual(response.response.status.state, ctl.VmmStatus.RUNNING)
        kinds = []
        while ctl.ControlEvent.BOOTED not in kinds:
            kinds.append(controller.recv().event.kind)
        request = ctl.ControlRequest()
        request.stop.reason = "test"
        controller.send(request)
        self.assertEqual(controller.response().response.code, 0)
        exited = controller.recv()
        self.assertEqual(exited.event.kind, ctl.ControlEvent.EXITED)
        self.assertEqual(exited.event.reason, "test")
        self.assertEqual(self.vmm.wait(timeout=10), 0)

    def test_unparsable_request_gets_invalid_argument_and_the_vm_lives_on(self):
        controller, _ = self.hello()
        controller.send_raw(struct.pack("<I", 3) + b"\xff\xff\xff")
        self.assertEqual(controller.response().response.code, 3)  # INVALID_ARGUMENT
        request = ctl.ControlRequest()  # no operation
        controller.send(request)
        self.assertEqual(controller.response().response.code, 3)
        request = ctl.ControlRequest()
        request.describe.SetInParent()
        controller.send(request)
        self.assertEqual(controller.response().response.status.state, ctl.VmmStatus.CREATED)

    def test_oversized_frame_closes_the_connection_and_a_new_controller_takes_over(self):
        controller, _ = self.hello()
        controller.send_raw(struct.pack("<I", 0xFFFFFFFF) + b"x" * 16)
        response = controller.response()
        self.assertEqual(response.response.code, 3)
        self.assertIsNone(controller.recv())  # closed
        self.assertIsNone(self.vmm.poll())
        controller, status = self.hello()
        self.assertEqual(status.state, ctl.VmmStatus.CREATED)

    def test_second_controller_replaces_the_first(self):
        first, _ = self.hello()
        second, _ = self.hello()
        self.assertIsNone(first.recv())
        request = ctl.ControlRequest()
        request.describe.SetInParent()
        second.send(request)
        self.assertEqual(second.response().response.code, 0)

    def test_snapshot_of_a_vm_that_is_not_paused_is_failed_precondition(self):
        controller, _ = self.hello()
        response = self.snapshot_named(controller, self.dir)
        self.assertEqual(response.code, 9, response.message)  # FAILED_PRECONDITION
        self.assertIn("paused", response.message)

    def test_diff_snapshot_without_dirty_tracking_is_failed_precondition(self):
        controller, _ = self.hello()
        self.assertEqual(self.call(controller, lambda r: r.start.SetInParent()).code, 0)
        self.assertEqual(self.call(controller, lambda r: r.pause.SetInParent()).code, 0)
        def diff(r):
            r.create_snapshot.diff = True
            r.create_snapshot.state_path = os.path.join(self.dir, "state")
            r.create_snapshot.memory_path = os.path.join(self.dir, "memory")
        response = self.call(controller, diff)
        self.assertEqual(response.code, 9, response.message)  # FAILED_PRECONDITION
        self.assertIn("track_dirty_pages", response.message)

    def test_snapshot_then_a_controlled_restore_waits_paused_until_resume(self):
        controller, _ = self.hello()
        self.assertEqual(self.call(controller, lambda r: r.start.SetInParent()).code, 0)
        while controller.recv().event.kind != ctl.ControlEvent.BOOTED:
            pass
        self.assertEqual(self.call(controller, lambda r: r.pause.SetInParent()).code, 0)
        state, memory = os.path.join(self.dir, "state"), os.path.join(self.dir, "memory")
        def snapshot(r):
            r.create_snapshot.state_path = state
            r.create_snapshot.memory_path = memory
        response = self.call(controller, snapshot)
        self.assertEqual(response.code, 0, response.message)
        self.assertEqual((response.snapshot.state_path, response.snapshot.memory_path),
                         (state, memory))
        self.assertGreater(response.snapshot.duration_us, 0)
        self.assertTrue(os.path.getsize(state) > 0 and os.path.getsize(memory) > 0)

        path, clone = self.spawn("clone.sock", ["--restore-from", state, "--restore-mem", memory])
        clone_controller, status = self.hello(path)
        self.assertEqual(status.state, ctl.VmmStatus.PAUSED)
        self.assertEqual(status.pid, clone.pid)
        started = self.call(clone_controller, lambda r: r.start.SetInParent())
        self.assertEqual(started.code, 9, started.message)  # a restored VM is resumed
        self.assertIn("resume", started.message)
        resumed = self.call(clone_controller, lambda r: r.resume.SetInParent())
        self.assertEqual((resumed.code, resumed.status.state), (0, ctl.VmmStatus.RUNNING))
        # Paused and resumed again like any running VM, then stopped cleanly.
        self.assertEqual(self.call(clone_controller, lambda r: r.pause.SetInParent()).code, 0)
        self.assertEqual(self.call(clone_controller, lambda r: r.resume.SetInParent()).code, 0)
        self.assertEqual(self.call(clone_controller, lambda r: r.stop.SetInParent()).code, 0)
        self.assertEqual(clone.wait(timeout=10), 0)

    def test_rate_limits_of_an_unknown_drive_are_not_found_and_change_nothing(self):
        controller, _ = self.hello()
        def limits(r):
            r.update_rate_limits.drives.add(drive_id="nope").rate_limiter.ops.size = 1
        response = self.call(controller, limits)
        self.assertEqual(response.code, 5, response.message)  # NOT_FOUND
        self.assertIn("nope", response.message)
        def iface(r):
            r.update_rate_limits.interfaces.add(iface_id="eth9")
        response = self.call(controller, iface)
        self.assertEqual(response.code, 5, response.message)
        self.assertIn("eth9", response.message)


class VmmBuildFailureTest(unittest.TestCase):
    """A VM ember-vmm cannot build: the controller already waiting (as emberd does, connected
    before the spawn) is told why, and so is the exit record; no log is read."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ember-ctl-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_a_missing_kernel_is_reported_as_a_structured_build_failure(self):
        config = os.path.join(self.dir, "vm.json")
        with open(config, "w") as f:
            f.write('{"boot-source": {"kernel_image_path": "/nonexistent/vmlinux"},'
                    ' "machine-config": {"mem_size_mib": 32}}')
        path = os.path.join(self.dir, "control.sock")
        record = os.path.join(self.dir, "exit")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(4)
        controller = Controller(path)
        proc = subprocess.run(
            [VMM, "--config", config, "--control-fd", str(listener.fileno()),
             "--exit-record", record],
            pass_fds=[listener.fileno()], capture_output=True, timeout=60)
        listener.close()
        self.assertEqual(proc.returncode, 2, proc.stderr)
        message = controller.recv()
        self.assertIsNotNone(message, "ember-vmm said nothing before it exited")
        self.assertEqual(message.event.kind, ctl.ControlEvent.BUILD_FAILED)
        failure = message.event.build_failure
        self.assertEqual(failure.code, 3)  # INVALID_ARGUMENT
        self.assertEqual(failure.exit_code, 2)
        self.assertIn("kernel_image_path", failure.message)
        self.assertIsNone(controller.recv())  # the only message of the connection
        with open(record) as f:
            self.assertEqual(f.read(), "2 " + failure.message + "\n")


class VmmControlDriveTest(VmmFixture):
    """The same VMM with a drive, whose rate limiter the controller changes."""

    def extra_config(self):
        image = os.path.join(self.dir, "disk.img")
        with open(image, "wb") as f:
            f.write(bytes(32768))
        return f', "drives": [{{"drive_id": "disk", "path_on_host": "{image}"}}]'

    def test_rate_limits_of_a_drive_are_replaced_and_counted(self):
        controller, _ = self.hello()
        self.assertEqual(self.call(controller, lambda r: r.start.SetInParent()).code, 0)
        def limits(r):
            limiter = r.update_rate_limits.drives.add(drive_id="disk").rate_limiter
            limiter.ops.size = 1
            limiter.ops.refill_time = 100
            limiter.bandwidth.size = 4096
            limiter.bandwidth.refill_time = 100
        response = self.call(controller, limits)
        self.assertEqual(response.code, 0, response.message)
        def bad(r):
            r.update_rate_limits.drives.add(drive_id="disk").rate_limiter.ops.size = 1
        response = self.call(controller, bad)
        self.assertEqual(response.code, 3, response.message)  # no refill_time
        self.assertIn("refill_time", response.message)
        def overflowing(r):
            bucket = r.update_rate_limits.drives.add(drive_id="disk").rate_limiter.bandwidth
            bucket.size = 4096
            bucket.refill_time = 288230376151711744  # 2^58 ms: 0 ns in 64 bits
        response = self.call(controller, overflowing)
        self.assertEqual(response.code, 3, response.message)  # INVALID_ARGUMENT
        self.assertIn("drives[0].rate_limiter.bandwidth.refill_time", response.message)
        metrics = self.call(controller, lambda r: r.get_metrics.SetInParent())
        self.assertEqual(json.loads(metrics.metrics_json)["control"]["rate_limit_updates"], 1)



def blk_image(sectors):
    """The test guest's `blk` pattern (rootfs/testguest/blk_pattern.h's blk_initial)."""
    return bytes((s * 0x9d + i + (i >> 8) * 0x3b + 0x11) & 0xff
                 for s in range(sectors) for i in range(512))


def read_state(path):
    """The SnapshotState of a state file (snapshot/state_file.h: 24-byte header, payload, CRC)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"EMBERSNP", data[:8]
    (length,) = struct.unpack("<Q", data[16:24])
    state = snap.SnapshotState()
    state.ParseFromString(data[24:24 + length])
    return state


class VmmHandedFilesTest(VmmFixture):
    """Files a controller hands over (as emberd does, having resolved them by its path rules):
    the VMM uses those very files and directories, whatever their names lead to by then. The
    snapshots are written through <dir>/na=med, a symlink the test points elsewhere."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ember-ctl-")
        self.procs = []
        config = os.path.join(self.dir, "vm.json")
        with open(config, "w") as f:
            f.write('{"boot-source": {"boot_args": "console=ttyS0 ember.test=idle"},'
                    ' "machine-config": {"mem_size_mib": 32, "track_dirty_pages": true}}')
        # As emberd starts it: its VMM thread's filter opens no directory by name.
        self.path, self.vmm = self.spawn("control.sock", ["--config", config, "--dirs-by-fd"])
        self.real = os.path.join(self.dir, "real")
        self.outside = os.path.join(self.dir, "outside")
        # With an '=' (a snapshot_dir may hold one): --base-memory-file NAME=FILE splits at
        # the last.
        self.named = os.path.join(self.dir, "na=med")
        os.mkdir(self.real)
        os.mkdir(self.outside)
        os.symlink(self.outside, self.named)

    def paused(self, controller):
        self.assertEqual(self.call(controller, lambda r: r.pause.SetInParent()).code, 0)

    def snapshot_in_real(self, controller, name, diff=False):
        """A snapshot named <named>/<name>{,.mem}, with the real directory's fd attached."""
        def create(r):
            r.create_snapshot.state_path = os.path.join(self.named, name)
            r.create_snapshot.memory_path = os.path.join(self.named, name + ".mem")
            r.create_snapshot.diff = diff
        fd = os.open(self.real, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return self.call(controller, create, fds=[fd])
        finally:
            os.close(fd)

    def test_a_snapshot_is_written_in_the_directory_handed_over_not_where_its_path_leads(self):
        controller, _ = self.hello()
        self.assertEqual(self.call(controller, lambda r: r.start.SetInParent()).code, 0)
        self.paused(controller)
        response = self.snapshot_in_real(controller, "full")
        self.assertEqual(response.code, 0, response.message)
        self.assertEqual(sorted(os.listdir(self.real)), ["full", "full.mem"])
        self.assertEqual(os.listdir(self.outside), [])

    def test_with_dirs_by_fd_a_synced_snapshot_by_name_is_refused_and_the_vm_lives_on(self):
        controller, _ = self.hello()
        self.assertEqual(self.call(controller, lambda r: r.start.SetInParent()).code, 0)
        self.paused(controller)
        refused = self.snapshot_named(controller, self.real)
        self.assertEqual(refused.code, 9, refused.message)  # FAILED_PRECONDITION
        self.assertIn("--dirs-by-fd", refused.message)
        self.assertEqual(os.listdir(self.real), [])
        # Its filter would have killed it had it opened the directory: it lives on.
        self.assertEqual(self.snapshot_in_real(controller, "full").code, 0)
        self.assertIsNone(self.vmm.poll())

    def test_a_diff_restores_from_the_files_handed_over_never_the_names_its_state_file_gives(self):
        controller, _ = self.hello()
        self.assertEqual(self.call(controller, lambda r: r.start.SetInParent()).code, 0)
        self.paused(controller)
        self.assertEqual(self.snapshot_in_real(controller, "full").code, 0)
        self.assertEqual(self.call(controller, lambda r: r.resume.SetInParent()).code, 0)
        self.paused(controller)
        response = self.snapshot_in_real(controller, "diff", diff=True)
        self.assertEqual(response.code, 0, response.message)
        diff = read_state(os.path.join(self.real, "diff"))
        self.assertEqual(list(diff.base_memory_files), [os.path.join(self.named, "full.mem")])
        # By those names, the bases are now a symlink to a root-only file.
        os.symlink("/etc/shadow", os.path.join(self.outside, "full.mem"))
        memory = os.open(os.path.join(self.real, "diff.mem"), os.O_RDONLY)
        base = os.open(os.path.join(self.real, "full.mem"), os.O_RDONLY)
        path, clone = self.spawn(
            "clone.sock",
            ["--restore-from", os.path.join(self.real, "diff"),
             "--restore-mem", f"/proc/self/fd/{memory}",
             "--restore-mem-name", os.path.join(self.named, "diff.mem"),
             "--base-memory-file", f"{self.named}/full.mem=/proc/self/fd/{base}"],
            pass_fds=[memory, base])
        os.close(memory)
        os.close(base)
        clone_controller, status = self.hello(path)
        self.assertEqual(status.state, ctl.VmmStatus.PAUSED)
        # Its own next diff names its bases as it was told, not as /proc/self/fd/N.
        self.assertEqual(self.call(clone_controller, lambda r: r.resume.SetInParent()).code, 0)
        self.paused(clone_controller)
        response = self.snapshot_in_real(clone_controller, "clone-diff", diff=True)
        self.assertEqual(response.code, 0, response.message)
        self.assertEqual(list(read_state(os.path.join(self.real, "clone-diff")).base_memory_files),
                         [os.path.join(self.named, n) for n in ("full.mem", "diff.mem")])


class VmmControlDriveSwapTest(VmmFixture):
    """A drive swapped under a running guest whose driver is up: the `blk` scenario brings the
    device up and checks the pattern, then `idle` keeps the VM running."""

    def scenarios(self):
        return "blk,idle"

    def extra_config(self):
        image = os.path.join(self.dir, "disk.img")
        with open(image, "wb") as f:
            f.write(blk_image(64))
        return f', "drives": [{{"drive_id": "scratch", "path_on_host": "{image}"}}]'

    def update(self, controller, drive_id, path, flags=os.O_RDWR):
        """UpdateDrive with `path` opened with `flags` attached, or no fd for flags None."""
        def fill(r):
            r.update_drive.drive_id = drive_id
            r.update_drive.path = path
        if flags is None:
            return self.call(controller, fill)
        fd = os.open(path, flags | os.O_CLOEXEC)
        try:
            return self.call(controller, fill, [fd])
        finally:
            os.close(fd)

    @staticmethod
    def transport(state):
        return next(d.transport for d in state.virtio if d.id == "block_scratch")

    def test_a_swapped_file_raises_the_config_change_and_a_snapshot_records_it(self):
        controller, _ = self.hello()
        self.assertEqual(self.call(controller, lambda r: r.start.SetInParent()).code, 0)
        self.assertIn("PASS blk\n", self.wait_console("idle\n"))
        before = self.snapshot(controller, "before")
        self.assertEqual(self.transport(before).interrupt_status & 2, 0)
        bigger = os.path.join(self.dir, "bigger.img")
        with open(bigger, "wb") as f:
            f.write(bytes(128 * 512))

        response = self.update(controller, "scratch", bigger)

        self.assertEqual(response.code, 0, response.message)
        metrics = json.loads(self.call(controller, lambda r: r.get_metrics.SetInParent())
                             .metrics_json)
        self.assertEqual(metrics["block_scratch"]["file_swaps"], 1)
        self.assertEqual(metrics["control"]["drive_updates"], 1)
        after = self.snapshot(controller, "after")
        self.assertEqual(after.config.drives[0].path_on_host, bigger)
        # The driver was told: ConfigGeneration moved and InterruptStatus has the
        # configuration-change bit (VIRTIO_MMIO_INT_CONFIG).
        self.assertEqual(self.transport(after).config_generation,
                         self.transport(before).config_generation + 1)
        self.assertEqual(self.transport(after).interrupt_status & 2, 2)

    def test_an_unknown_drive_is_not_found_and_a_file_without_its_fd_or_read_only_is_refused(self):
        controller, _ = self.hello()
        self.assertEqual(self.call(controller, lambda r: r.start.SetInParent()).code, 0)
        self.wait_console("idle\n")
        image = os.path.join(self.dir, "disk.img")
        other = os.path.join(self.dir, "other.img")
        with open(other, "wb") as f:
            f.write(bytes(128 * 512))

        unknown = self.update(controller, "nope", image)
        no_fd = self.update(controller, "scratch", other, flags=None)
        read_only = self.update(controller, "scratch", other, flags=os.O_RDONLY)

        self.assertEqual(unknown.code, 5, unknown.message)  # NOT_FOUND
        self.assertIn("nope", unknown.message)
        # ember-vmm opens nothing by name: the file must come with the request.
        self.assertEqual(no_fd.code, 3, no_fd.message)  # INVALID_ARGUMENT
        self.assertIn("attach the new file's fd", no_fd.message)
        self.assertEqual(read_only.code, 3, read_only.message)
        self.assertIn("reading and writing", read_only.message)
        state = self.snapshot(controller, "state")
        self.assertEqual(state.config.drives[0].path_on_host, image)
        self.assertEqual(self.transport(state).interrupt_status & 2, 0)
        self.assertIsNone(self.vmm.poll())



def irr_bit(chip, offset, bit):
    """Bit `bit` of the 8-bit interrupt request register at `offset` in a struct kvm_irqchip."""
    return (chip[offset] >> bit) & 1


class VmmControlKeyboardTest(VmmFixture):
    """SendCtrlAltDel: the i8042's keys for a guest that never reads them. IRQ 1 cannot be
    delivered into a guest on this host (DESIGN.md), and the test guest leaves it masked, so
    the proof is the request register of KVM's PIC in a snapshot (struct kvm_pic_state.irr,
    offset 9 of kvm_irqchip), which latches the edge whether or not the guest set the PIC up.
    KVM's IOAPIC keeps no request for an edge on a masked pin, and the LAPIC's IRR sees only
    what an unmasked IOAPIC pin sends, so neither can show it here."""

    def test_ctrl_alt_del_raises_irq_1_and_a_second_waits_for_the_guest_to_read(self):
        controller, _ = self.hello()
        refused = self.call(controller, lambda r: r.send_ctrl_alt_del.SetInParent())
        self.assertEqual(refused.code, 9, refused.message)  # FAILED_PRECONDITION: not started
        self.assertEqual(self.call(controller, lambda r: r.start.SetInParent()).code, 0)
        self.wait_console("idle\n")
        before = self.snapshot(controller, "before")
        self.assertEqual(irr_bit(before.vm.pic_master, 9, 1), 0)

        response = self.call(controller, lambda r: r.send_ctrl_alt_del.SetInParent())

        self.assertEqual(response.code, 0, response.message)
        # KVM injects an irqfd's signal from a kernel work item: look again until it landed.
        for attempt in range(50):
            after = self.snapshot(controller, f"after{attempt}")
            if irr_bit(after.vm.pic_master, 9, 1):
                break
            time.sleep(0.1)
        self.assertEqual(irr_bit(after.vm.pic_master, 9, 1), 1)
        # The guest read none of the 11 bytes: no room for another 11 in the 16-byte buffer.
        again = self.call(controller, lambda r: r.send_ctrl_alt_del.SetInParent())
        self.assertEqual(again.code, 8, again.message)  # RESOURCE_EXHAUSTED
        metrics = json.loads(self.call(controller, lambda r: r.get_metrics.SetInParent())
                             .metrics_json)
        self.assertEqual(metrics["i8042"]["ctrl_alt_del_count"], 1)
        self.assertIsNone(self.vmm.poll())


if __name__ == "__main__":
    ec.require_kvm()
    ember_unittest.main()
