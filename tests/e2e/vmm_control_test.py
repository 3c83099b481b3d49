"""ember-vmm's control channel without emberd: this test plays the controller over the
listening socket it passes as --control-fd, including malformed frames, which must get an
error (and, for a broken length, a closed connection) but never hurt the VM."""
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import unittest

import ember_client as ec
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

    def send(self, request):
        request.id = self.next_id
        self.next_id += 1
        payload = request.SerializeToString()
        self.send_raw(struct.pack("<I", len(payload)) + payload)
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


class VmmControlTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ember-ctl-")
        self.path = os.path.join(self.dir, "control.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        listener.listen(4)
        config = os.path.join(self.dir, "vm.json")
        with open(config, "w") as f:
            f.write('{"boot-source": {"boot_args": "console=ttyS0 ember.test=idle"},'
                    ' "machine-config": {"mem_size_mib": 32}}')
        self.vmm = subprocess.Popen(
            [VMM, "--config", config, "--control-fd", str(listener.fileno()),
             "--serial-out", os.path.join(self.dir, "console")],
            pass_fds=[listener.fileno()], stderr=subprocess.PIPE)
        listener.close()

    def tearDown(self):
        if self.vmm.poll() is None:
            self.vmm.kill()
        self.vmm.wait()
        self.vmm.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def hello(self):
        controller = Controller(self.path)
        message = controller.recv()
        self.assertEqual(message.event.kind, ctl.ControlEvent.HELLO)
        return controller, message.event.status

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

    def test_snapshot_answers_unimplemented_for_now(self):
        controller, _ = self.hello()
        request = ctl.ControlRequest()
        request.create_snapshot.state_path = "/tmp/x"
        controller.send(request)
        self.assertEqual(controller.response().response.code, 12)  # UNIMPLEMENTED


if __name__ == "__main__":
    ec.require_kvm()
    unittest.main(verbosity=2)
