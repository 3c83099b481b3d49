"""Firecracker's REST API on `ember-vmm --api-sock`, driven as Firecracker's users drive it:
curl --unix-socket replaying Firecracker's getting-started sequence, an independent Python
HTTP client over AF_UNIX (configure, start, pause, snapshot, load into a second ember-vmm,
resume), and hostile or mistaken requests, each answered Firecracker's way
({"fault_message": ...}, 400/413) while the VM runs on. The guest is Ember's test guest."""
import http.client
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import ember_unittest
import ember_client as ec

BIN = os.path.join(ec.BUILD_DIR, "bin")
VMM = os.path.join(BIN, "ember-vmm")


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.unix_path)


class Api:
    """A Firecracker API client: one keep-alive connection, JSON in and out."""

    def __init__(self, path):
        self.conn = UnixHTTPConnection(path)

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body)
        headers = {} if body is None else {"Content-Type": "application/json"}
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        raw = response.read()
        return response.status, (json.loads(raw) if raw else None)


def raw_exchange(path, data):
    """Sends raw bytes on a new connection; returns everything received until it closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(data)
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return received
            received += chunk


class FcApiFixture(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ember-fcapi-")
        self.procs = []

    def tearDown(self):
        for proc, out in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            out.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self, name, program=VMM, extra=(), preexec_fn=None):
        """Starts `program --api-sock DIR/name.sock`; returns (process, socket path)."""
        path = os.path.join(self.dir, name + ".sock")
        out = open(os.path.join(self.dir, name + ".out"), "wb")
        proc = subprocess.Popen([program, "--api-sock", path, *extra], stdout=out,
                                stderr=subprocess.STDOUT, preexec_fn=preexec_fn)
        self.procs.append((proc, out))
        deadline = time.monotonic() + 10
        while not os.path.exists(path):
            self.assertIsNone(proc.poll(), "the API front ended: " + self.output(name))
            self.assertLess(time.monotonic(), deadline, "no API socket after 10 s")
            time.sleep(0.01)
        return proc, path

    def output(self, name):
        with open(os.path.join(self.dir, name + ".out"), "rb") as f:
            return f.read().decode(errors="replace")

    def wait_output(self, name, text, timeout=30):
        deadline = time.monotonic() + timeout
        while text not in self.output(name):
            self.assertLess(time.monotonic(), deadline,
                            f"no {text!r} in {name}'s output: " + self.output(name)[-2000:])
            time.sleep(0.05)

    def configure(self, api, scenario, mem=32):
        self.assertEqual(api.call("PUT", "/boot-source",
                                  {"boot_args": f"console=ttyS0 ember.test={scenario}"})[0], 204)
        self.assertEqual(api.call("PUT", "/machine-config",
                                  {"vcpu_count": 1, "mem_size_mib": mem})[0], 204)

    def assert_fault(self, result, status=400, contains=""):
        code, body = result
        self.assertEqual(code, status, body)
        self.assertIsInstance(body, dict)
        self.assertEqual(list(body), ["fault_message"])
        self.assertIn(contains, body["fault_message"])


class GettingStartedTest(FcApiFixture):
    def test_firecracker_getting_started_sequence_with_curl(self):
        """Firecracker's getting-started guide, step by step with curl: logger, boot source,
        rootfs drive, (network with root only), InstanceStart; the guest boots."""
        proc, sock = self.start("vm")
        log = os.path.join(self.dir, "firecracker.log")
        open(log, "w").close()
        rootfs = os.path.join(self.dir, "rootfs.ext4")
        with open(rootfs, "wb") as f:
            f.truncate(1 << 20)

        def curl(method, path, body=None):
            args = ["curl", "-s", "-i", "--unix-socket", sock, "-X", method,
                    "http://localhost" + path, "-H", "Accept: application/json"]
            if body is not None:
                args += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
            head = subprocess.run(args, capture_output=True, check=True).stdout.decode()
            return int(head.split()[1]), head

        steps = [
            ("PUT", "/logger", {"log_path": log, "level": "Debug", "show_level": True,
                                "show_log_origin": True}),
            ("PUT", "/boot-source", {"kernel_image_path": "",
                                     "boot_args": "console=ttyS0 reboot=k panic=1 ember.test=idle"}),
            ("PUT", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": rootfs,
                                       "is_root_device": True, "is_read_only": False}),
            ("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 32}),
        ]
        if os.geteuid() == 0:
            tap = "fcapitap0"
            subprocess.run(["ip", "link", "del", tap], capture_output=True)  # a crashed run's
            subprocess.run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"], check=True)
            self.addCleanup(subprocess.run, ["ip", "link", "del", tap])
            steps.append(("PUT", "/network-interfaces/net1",
                          {"iface_id": "net1", "guest_mac": "06:00:AC:10:00:02",
                           "host_dev_name": tap}))
        else:
            print("note: not root, the network-interfaces step (a tap device) is left out")
        steps.append(("PUT", "/actions", {"action_type": "InstanceStart"}))
        for method, path, body in steps:
            status, head = curl(method, path, body)
            self.assertEqual(status, 204, f"{method} {path}: {head}")
        status, head = curl("GET", "/")
        self.assertEqual(status, 200, head)
        self.assertIn('"state":"Running"', head)
        self.wait_output("vm", "Ember test guest")
        deadline = time.monotonic() + 30
        while "Guest-boot-time" not in open(log).read():
            self.assertLess(time.monotonic(), deadline, "no boot time in the PUT /logger file")
            time.sleep(0.05)
        self.assertIsNone(proc.poll())

    def test_expect_100_continue_is_answered(self):
        """A client that sends Expect: 100-continue (curl did for bodies over 1 KiB before
        7.76, later ones past 1 MiB) waits for the interim answer before the body."""
        _, sock = self.start("vm")
        body = json.dumps({"boot_args": "console=ttyS0 ember.test=idle " + "x" * 1500})
        result = subprocess.run(["curl", "-s", "-v", "--unix-socket", sock, "-X", "PUT",
                                 "http://localhost/boot-source", "-d", body,
                                 "-H", "Expect: 100-continue"],
                                capture_output=True, check=True)
        self.assertIn(b"Expect: 100-continue", result.stderr)
        self.assertIn(b"< HTTP/1.1 100 Continue", result.stderr)
        self.assertIn(b"< HTTP/1.1 204 No Content", result.stderr)
        self.assertEqual(len(Api(sock).call("GET", "/vm/config")[1]["boot-source"]["boot_args"]),
                         len(json.loads(body)["boot_args"]))

    def test_vmm_exit_ends_the_api_process_with_its_code(self):
        proc, sock = self.start("vm")
        api = Api(sock)
        self.configure(api, "hello")  # the guest resets the machine once booted
        self.assertEqual(api.call("PUT", "/actions", {"action_type": "InstanceStart"})[0], 204)
        self.assertEqual(proc.wait(timeout=30), 0)
        self.assertFalse(os.path.exists(sock), "the API socket outlived the VM")


class GoSdkTest(FcApiFixture):
    """The calls firecracker-go-sdk (and firectl, which is built on it) makes, in its order and
    with its bodies: Go's encoding/json leaves out empty optional fields and orders keys by
    name, and its typed models read the answers back, so the answers must have Firecracker's
    shape too (huge_pages an enum value, no empty cpu_template)."""

    MACHINE_KEYS = {"vcpu_count", "mem_size_mib", "smt", "track_dirty_pages", "huge_pages"}

    def call(self, api, method, path, body=None, expect=204):
        status, answer = api.call(method, path, body)
        self.assertEqual(status, expect, f"{method} {path}: {answer}")
        return answer

    def test_the_sdks_start_snapshot_shutdown_and_stop_sequence(self):
        vm_id = "3fa85f64-5717-4562-b3fc-2c963f66afa6"  # the SDK's default id is a UUID
        proc, sock = self.start("vm", extra=["--id", vm_id])
        api = Api(sock)
        # waitForSocket: GET /machine-config until it answers, before anything is configured.
        machine = self.call(api, "GET", "/machine-config", expect=200)
        self.assertEqual(set(machine), self.MACHINE_KEYS, machine)
        self.assertEqual(machine["huge_pages"], "None")
        log = os.path.join(self.dir, "fc.log")
        metrics = os.path.join(self.dir, "fc.metrics")
        for path in (log, metrics):  # CreateLogFilesHandler makes them (or FIFOs) first
            open(path, "w").close()
        self.call(api, "PUT", "/logger", {"level": "Debug", "log_path": log, "show_level": True,
                                          "show_log_origin": False})
        self.call(api, "PUT", "/metrics", {"metrics_path": metrics})
        self.call(api, "PUT", "/machine-config", {"mem_size_mib": 32, "smt": False,
                                                  "track_dirty_pages": False, "vcpu_count": 1})
        machine = self.call(api, "GET", "/machine-config", expect=200)  # refreshMachineConfiguration
        self.assertEqual(set(machine), self.MACHINE_KEYS, machine)
        self.assertEqual((machine["mem_size_mib"], machine["vcpu_count"]), (32, 1))
        self.call(api, "PUT", "/boot-source",
                  {"boot_args": "console=ttyS0 reboot=k panic=1 pci=off ember.test=idle",
                   "kernel_image_path": ""})
        rootfs = os.path.join(self.dir, "rootfs.ext4")
        with open(rootfs, "wb") as f:
            f.truncate(1 << 20)
        self.call(api, "PUT", "/drives/1", {"drive_id": "1", "is_read_only": False,
                                            "is_root_device": True, "path_on_host": rootfs})
        self.call(api, "PUT", "/vsock", {"guest_cid": 3, "uds_path":
                                         os.path.join(self.dir, "v.sock"), "vsock_id": "1"})
        self.call(api, "PUT", "/actions", {"action_type": "InstanceStart"})
        self.wait_output("vm", "Ember test guest")
        info = self.call(api, "GET", "/", expect=200)
        self.assertEqual((info["id"], info["state"]), (vm_id, "Running"))
        # PauseVM, CreateSnapshot, ResumeVM.
        self.call(api, "PATCH", "/vm", {"state": "Paused"})
        state, mem = os.path.join(self.dir, "vm.state"), os.path.join(self.dir, "vm.mem")
        self.call(api, "PUT", "/snapshot/create", {"mem_file_path": mem, "snapshot_path": state,
                                                   "snapshot_type": "Full"})
        self.call(api, "PATCH", "/vm", {"state": "Resumed"})
        shown = self.call(api, "GET", "/vm/config", expect=200)["machine-config"]
        self.assertEqual(set(shown), self.MACHINE_KEYS, shown)
        self.assertEqual(shown["huge_pages"], "None")
        # Shutdown sends Ctrl+Alt+Del; StopVMM sends SIGTERM, which ends the VMM too.
        self.call(api, "PUT", "/actions", {"action_type": "SendCtrlAltDel"})
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            children = [int(p) for p in f.read().split()]
        self.assertTrue(children, "no ember-vmm under the API process")
        proc.terminate()
        self.assertEqual(proc.wait(timeout=10), 0)
        for child in children:
            deadline = time.monotonic() + 10
            while os.path.exists(f"/proc/{child}") and \
                    open(f"/proc/{child}/stat").read().split()[2] != "Z":
                self.assertLess(time.monotonic(), deadline, "ember-vmm outlived SIGTERM")
                time.sleep(0.01)

    def test_a_cpu_template_that_was_set_is_shown(self):
        _, sock = self.start("vm")
        api = Api(sock)
        self.call(api, "PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 32,
                                                  "cpu_template": "baseline"})
        machine = self.call(api, "GET", "/machine-config", expect=200)
        self.assertEqual(machine["cpu_template"], "baseline")
        self.call(api, "PATCH", "/machine-config", {"cpu_template": "None"})
        self.assertNotIn("cpu_template", self.call(api, "GET", "/machine-config", expect=200))


class SnapshotFlowTest(FcApiFixture):
    def test_configure_start_pause_snapshot_load_into_second_vmm_resume(self):
        _, sock_a = self.start("a")
        a = Api(sock_a)
        self.configure(a, "counter,idle")
        self.assertEqual(a.call("GET", "/")[1]["state"], "Not started")
        self.assertEqual(a.call("PUT", "/actions", {"action_type": "InstanceStart"})[0], 204)
        self.wait_output("a", "count 3\n")
        self.assertEqual(a.call("PATCH", "/vm", {"state": "Paused"})[0], 204)
        self.assertEqual(a.call("GET", "/")[1]["state"], "Paused")
        before = self.output("a")
        self.assertNotIn("PASS counter", before, "the counter ended before the pause")
        state = os.path.join(self.dir, "vm.state")
        mem = os.path.join(self.dir, "vm.mem")
        self.assertEqual(a.call("PUT", "/snapshot/create",
                                {"snapshot_type": "Full", "snapshot_path": state,
                                 "mem_file_path": mem})[0], 204)
        self.assertTrue(os.path.getsize(mem) > 0)

        _, sock_b = self.start("b")
        b = Api(sock_b)
        self.assertEqual(b.call("PUT", "/snapshot/load",
                                {"snapshot_path": state,
                                 "mem_backend": {"backend_type": "File", "backend_path": mem},
                                 "resume_vm": False})[0], 204)
        self.assertEqual(b.call("GET", "/")[1]["state"], "Paused")
        self.assertEqual(b.call("PATCH", "/vm", {"state": "Resumed"})[0], 204)
        self.assertEqual(b.call("GET", "/")[1]["state"], "Running")
        self.wait_output("b", "PASS counter\n")
        clone = self.output("b")
        self.assertNotIn("Ember test guest", clone, "the clone rebooted instead of resuming")
        self.assertIn("checksum ok", clone)
        # The original is still paused where it was, and resumes too.
        self.assertNotIn("PASS counter", self.output("a"))
        self.assertEqual(a.call("PATCH", "/vm", {"state": "Resumed"})[0], 204)
        self.wait_output("a", "PASS counter\n")

    def test_snapshot_drive_paths_load_only_under_allow_dir(self):
        _, sock_a = self.start("a")
        a = Api(sock_a)
        disk = os.path.join(self.dir, "disk.img")
        with open(disk, "wb") as f:
            f.truncate(1 << 20)
        self.configure(a, "idle")
        self.assertEqual(a.call("PUT", "/drives/disk",
                                {"drive_id": "disk", "path_on_host": disk,
                                 "is_root_device": False, "is_read_only": True})[0], 204)
        a.call("PUT", "/actions", {"action_type": "InstanceStart"})
        a.call("PATCH", "/vm", {"state": "Paused"})
        state, mem = os.path.join(self.dir, "d.state"), os.path.join(self.dir, "d.mem")
        self.assertEqual(a.call("PUT", "/snapshot/create",
                                {"snapshot_path": state, "mem_file_path": mem})[0], 204)
        load = {"snapshot_path": state, "mem_file_path": mem, "resume_vm": True}
        _, sock_b = self.start("b")
        self.assert_fault(Api(sock_b).call("PUT", "/snapshot/load", load), contains=disk)
        self.assertEqual(Api(sock_b).call("GET", "/")[1]["state"], "Not started")
        _, sock_c = self.start("c", extra=["--allow-dir", self.dir])
        self.assertEqual(Api(sock_c).call("PUT", "/snapshot/load", load)[0], 204)
        self.assertEqual(Api(sock_c).call("GET", "/")[1]["state"], "Running")

    def test_uffd_backend_loads_and_resumes(self):
        _, sock_a = self.start("a")
        a = Api(sock_a)
        self.configure(a, "counter,idle")
        a.call("PUT", "/actions", {"action_type": "InstanceStart"})
        self.wait_output("a", "count 2\n")
        a.call("PATCH", "/vm", {"state": "Paused"})
        self.assertEqual(a.call("PUT", "/snapshot/create",
                                {"snapshot_path": "u.state", "mem_file_path": "u.mem"})[0], 204,
                         "relative paths are the front's working directory's")
        # The front runs in the test's working directory: relative paths land there.
        state, mem = os.path.abspath("u.state"), os.path.abspath("u.mem")
        self.addCleanup(lambda: [os.unlink(p) for p in (state, mem, mem + ".ws")
                                 if os.path.exists(p)])
        _, sock_b = self.start("b")
        b = Api(sock_b)
        self.assertEqual(b.call("PUT", "/snapshot/load",
                                {"snapshot_path": state,
                                 "mem_backend": {"backend_type": "Uffd", "backend_path": mem},
                                 "resume_vm": True})[0], 204)
        self.assertEqual(b.call("GET", "/")[1]["state"], "Running")
        self.wait_output("b", "PASS counter\n")


HANDLER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "uffd_handler.py")


class UffdHandlerTest(FcApiFixture):
    """PUT /snapshot/load with {"backend_type": "Uffd", "backend_path": SOCKET}: the VMM hands
    its userfaultfd and the region mappings to a page-fault handler process (uffd_handler.py,
    written like Firecracker's example handlers), which serves the restored guest's memory."""

    def snapshot(self):
        _, sock_a = self.start("a")
        a = Api(sock_a)
        self.configure(a, "counter,idle")
        a.call("PUT", "/actions", {"action_type": "InstanceStart"})
        self.wait_output("a", "count 2\n")
        self.assertEqual(a.call("PATCH", "/vm", {"state": "Paused"})[0], 204)
        state, mem = os.path.join(self.dir, "u.state"), os.path.join(self.dir, "u.mem")
        self.assertEqual(a.call("PUT", "/snapshot/create",
                                {"snapshot_path": state, "mem_file_path": mem})[0], 204)
        return state, mem

    def handler(self, mode, mem=""):
        sock = os.path.join(self.dir, "handler-" + mode + ".sock")
        out = open(os.path.join(self.dir, "handler.out"), "wb")
        proc = subprocess.Popen([sys.executable, HANDLER, sock, mem, mode], stdout=out,
                                stderr=subprocess.STDOUT)
        self.procs.append((proc, out))
        self.wait_output("handler", "listening\n", timeout=10)
        return proc, sock

    def load(self, api, state, sock, resume=True):
        return api.call("PUT", "/snapshot/load",
                        {"snapshot_path": state,
                         "mem_backend": {"backend_type": "Uffd", "backend_path": sock},
                         "resume_vm": resume})

    def test_handler_gets_the_uffd_and_mappings_and_serves_the_restored_guest(self):
        state, mem = self.snapshot()
        _, sock = self.handler("serve", mem)
        _, sock_b = self.start("b")
        b = Api(sock_b)
        self.assertEqual(self.load(b, state, sock)[0], 204)
        self.assertEqual(b.call("GET", "/")[1]["state"], "Running")
        self.wait_output("b", "PASS counter\n")
        clone = self.output("b")
        self.assertNotIn("Ember test guest", clone, "the clone rebooted instead of resuming")
        self.assertIn("checksum ok", clone)
        line = next(l for l in self.output("handler").splitlines() if l.startswith("mappings "))
        mappings = json.loads(line.split(" ", 1)[1])
        self.assertEqual(sum(m["size"] for m in mappings), 32 << 20)
        self.assertEqual([m["offset"] for m in mappings], [0])
        self.assertEqual(mappings[0]["page_size"], 4096)
        self.assertEqual(mappings[0]["page_size_kib"], 4096, "Firecracker sends bytes here too")
        self.assertIn("served 1\n", self.output("handler"))

    def test_no_handler_at_the_socket_path_is_400_naming_it(self):
        state, _ = self.snapshot()
        missing = os.path.join(self.dir, "nobody.sock")
        _, sock_b = self.start("b")
        b = Api(sock_b)
        self.assert_fault(self.load(b, state, missing), contains=missing)
        self.assertIn("cannot connect", self.load(b, state, missing)[1]["fault_message"])
        self.assertEqual(b.call("GET", "/")[1]["state"], "Not started")

    def test_a_handler_that_closes_at_once_is_400(self):
        state, _ = self.snapshot()
        handler, sock = self.handler("close")
        _, sock_b = self.start("b")
        b = Api(sock_b)
        self.assert_fault(self.load(b, state, sock),
                          contains="closed the connection without taking the uffd")
        self.assertEqual(handler.wait(timeout=10), 0)
        self.assertEqual(b.call("GET", "/")[1]["state"], "Not started")

    def test_a_silent_handler_stalls_only_the_guest_and_its_exit_ends_the_vm(self):
        state, mem = self.snapshot()
        handler, sock = self.handler("silent", mem)
        front, sock_b = self.start("b")
        b = Api(sock_b)
        self.assertEqual(self.load(b, state, sock)[0], 204)
        # The vCPU waits on a fault nobody serves; the VMM thread and the front go on.
        time.sleep(1)
        self.assertEqual(b.call("GET", "/")[1]["state"], "Running")
        self.assertNotIn("PASS counter", self.output("b"))
        handler.kill()
        handler.wait()
        self.assertEqual(front.wait(timeout=30), 1)
        self.assertIn("page-fault handler (pid %d)" % handler.pid, self.output("b"))
        self.assertIn("exited: guest memory can no longer be served", self.output("b"))


class ErrorTest(FcApiFixture):
    """Every mistake gets a Firecracker-shaped answer and the running VM is unharmed."""

    def setUp(self):
        super().setUp()
        self.proc, self.sock = self.start("vm")
        self.api = Api(self.sock)

    def assert_still_running(self):
        self.assertIsNone(self.proc.poll(), "the API process ended")
        self.assertEqual(Api(self.sock).call("GET", "/"), (200, {
            "id": "anonymous-instance", "state": "Running", "vmm_version": "1.13.0",
            "app_name": "Ember"}))

    def boot(self):
        self.configure(self.api, "idle")
        self.assertEqual(self.api.call("PUT", "/actions", {"action_type": "InstanceStart"})[0], 204)

    def test_malformed_http_is_400_and_closes_only_that_connection(self):
        self.boot()
        reply = raw_exchange(self.sock, b"PUT /actions HTTP/1.1\r\nContent-Length: x\r\n\r\n")
        self.assertTrue(reply.startswith(b"HTTP/1.1 400 "), reply)
        body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
        self.assertIn("malformed HTTP request", body["fault_message"])
        reply = raw_exchange(self.sock, b"\x00\x01garbage\r\n\r\n")
        self.assertTrue(reply.startswith(b"HTTP/1.1 400 "), reply)
        self.assert_still_running()

    def test_oversized_body_is_413_before_it_is_read(self):
        self.boot()
        reply = raw_exchange(self.sock, b"PUT /boot-source HTTP/1.1\r\n"
                                        b"Content-Length: 1000000\r\n\r\n{")
        self.assertTrue(reply.startswith(b"HTTP/1.1 413 "), reply)
        self.assertIn(b"fault_message", reply)
        chunked = (b"PUT /boot-source HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" +
                   b"".join(b"8000\r\n" + b" " * 0x8000 + b"\r\n" for _ in range(3)))
        reply = raw_exchange(self.sock, chunked)
        self.assertTrue(reply.startswith(b"HTTP/1.1 413 "), reply)
        self.assert_still_running()

    def test_bad_json_and_unknown_fields_are_400(self):
        self.assert_fault(self.api.call("PUT", "/machine-config", "not an object"))
        self.assert_fault(self.api.call("PUT", "/boot-source", {"kernel_image_path": 7}))
        self.assert_fault(self.api.call("PUT", "/drives/d1", {"drive_id": "d1", "bogus": 1}),
                          contains="bogus")
        self.assert_fault(self.api.call("PUT", "/actions", {"action_type": "Reboot"}),
                          contains="InstanceStart")
        code, _ = self.api.call("GET", "/machine-config")
        self.assertEqual(code, 200)
        self.boot()
        self.assert_fault(self.api.call("PATCH", "/vm", {"state": "Frozen"}), contains="Paused")
        self.assert_still_running()

    def test_a_nul_in_any_string_is_400_naming_the_field(self):
        """JSON's \\u0000 parses into a NUL; passed on to ember-vmm's arguments it would split one
        into several of the client's choosing ("--seccomp off")."""
        injected = "/tmp/x\u0000--seccomp\u0000off"
        for path, body, field in [
                ("/serial", {"serial_out_path": injected}, "serial_out_path"),
                ("/boot-source", {"boot_args": "console=ttyS0\u0000x"}, "boot_args"),
                ("/drives/d1", {"drive_id": "d1", "path_on_host": injected,
                                "is_root_device": False, "is_read_only": True}, "path_on_host"),
                ("/snapshot/load", {"snapshot_path": "/tmp/s", "mem_backend": {
                    "backend_type": "File", "backend_path": injected}},
                 "mem_backend.backend_path")]:
            self.assert_fault(self.api.call("PUT", path, body), contains=field + " holds a NUL")
        self.boot()
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
            vmms = [p for p in f.read().split()
                    if b"--control-fd" in open(f"/proc/{p}/cmdline", "rb").read()]
        self.assertEqual(len(vmms), 1)
        self.assertEqual(seccomp_mode(vmms[0]), 2, "ember-vmm runs without its filter")
        self.assert_still_running()

    def test_wrong_methods_and_paths_are_400(self):
        self.boot()
        for method, path in [("DELETE", "/"), ("POST", "/actions"), ("GET", "/nothing"),
                             ("PUT", "/machine-config/x"), ("PATCH", "/boot-source")]:
            body = None if method in ("GET", "DELETE") else {"a": 1}
            self.assert_fault(self.api.call(method, path, body))
        self.assert_fault(self.api.call("PUT", "/actions"), contains="no body")
        self.assert_still_running()

    def test_calls_in_the_wrong_state_are_refused(self):
        for path, body in [("/vm", {"state": "Paused"}),
                           ("/drives/d1", {"drive_id": "d1", "rate_limiter": {}})]:
            self.assert_fault(self.api.call("PATCH", path, body), contains="needs a started")
        self.assert_fault(self.api.call("PUT", "/snapshot/create",
                                        {"snapshot_path": "/x", "mem_file_path": "/y"}),
                          contains="needs a started")
        self.boot()
        self.assert_fault(self.api.call("PUT", "/actions", {"action_type": "InstanceStart"}),
                          contains="already started")
        for path, body in [("/boot-source", {"boot_args": "x"}),
                           ("/machine-config", {"vcpu_count": 1, "mem_size_mib": 64}),
                           ("/drives/d1", {"drive_id": "d1", "path_on_host": "/x"}),
                           ("/logger", {"level": "Info"}),
                           ("/snapshot/load", {"snapshot_path": "/x", "mem_file_path": "/y"})]:
            self.assert_fault(self.api.call("PUT", path, body))
        self.assert_fault(self.api.call("PUT", "/snapshot/create",
                                        {"snapshot_path": os.path.join(self.dir, "s"),
                                         "mem_file_path": os.path.join(self.dir, "m")}),
                          contains="paused")
        self.assert_still_running()

    def test_features_ember_lacks_say_so(self):
        for method, path, body in [("PUT", "/balloon", {"amount_mib": 1}),
                                   ("GET", "/balloon", None),
                                   ("PUT", "/entropy", {}),
                                   ("PUT", "/mmds", {"a": 1}),
                                   ("PUT", "/mmds/config", {"network_interfaces": ["eth0"]}),
                                   ("PUT", "/pmem/p0", {"id": "p0"}),
                                   ("PUT", "/hotplug/memory", {"total_size_mib": 1})]:
            self.assert_fault(self.api.call(method, path, body), contains="not supported by Ember")
        self.assert_fault(self.api.call("PUT", "/cpu-config", {"cpuid_modifiers": []}),
                          contains="not supported by Ember")

    def test_send_ctrl_alt_del_reaches_the_i8042(self):
        self.metrics = os.path.join(self.dir, "metrics.json")
        self.assertEqual(self.api.call("PUT", "/metrics", {"metrics_path": self.metrics})[0], 204)
        self.boot()
        self.assertEqual(self.api.call("PUT", "/actions", {"action_type": "SendCtrlAltDel"})[0],
                         204)
        self.assertEqual(self.api.call("PUT", "/actions", {"action_type": "FlushMetrics"})[0], 204)
        with open(self.metrics) as f:
            self.assertEqual(json.load(f)["i8042"]["ctrl_alt_del_count"], 1)
        self.assert_still_running()

    def test_a_bad_value_is_refused_at_its_call_and_changes_nothing(self):
        self.configure(self.api, "idle")
        self.assert_fault(self.api.call("PATCH", "/machine-config", {"mem_size_mib": 1}),
                          contains="mem_size_mib")
        self.assert_fault(self.api.call("PUT", "/drives/d1",
                                        {"drive_id": "d1", "path_on_host": "/x",
                                         "io_engine": "Fast"}), contains="io_engine")
        self.assertEqual(self.api.call("GET", "/machine-config")[1]["mem_size_mib"], 32)
        self.assertEqual(self.api.call("GET", "/vm/config")[1]["drives"], [])

    def test_a_vm_that_cannot_be_built_is_400_and_can_be_fixed(self):
        missing = os.path.join(self.dir, "no-such-vmlinux")
        self.configure(self.api, "idle")
        self.assertEqual(self.api.call("PUT", "/boot-source",
                                       {"kernel_image_path": missing,
                                        "boot_args": "console=ttyS0 ember.test=idle"})[0], 204)
        self.assert_fault(self.api.call("PUT", "/actions", {"action_type": "InstanceStart"}),
                          contains=missing)
        self.assertEqual(self.api.call("GET", "/")[1]["state"], "Not started")
        self.assertEqual(self.api.call("PUT", "/boot-source",
                                       {"boot_args": "console=ttyS0 ember.test=idle"})[0], 204)
        self.assertEqual(self.api.call("PUT", "/actions", {"action_type": "InstanceStart"})[0], 204)
        self.assert_still_running()

    def test_rate_limits_patch_after_boot(self):
        disk = os.path.join(self.dir, "disk.img")
        with open(disk, "wb") as f:
            f.truncate(1 << 20)
        self.assertEqual(self.api.call("PUT", "/drives/disk",
                                       {"drive_id": "disk", "path_on_host": disk,
                                        "is_root_device": False, "is_read_only": True})[0], 204)
        self.metrics = os.path.join(self.dir, "metrics.json")
        self.assert_fault(self.api.call("PUT", "/actions", {"action_type": "FlushMetrics"}),
                          contains="no metrics file")
        self.assertEqual(self.api.call("PUT", "/metrics", {"metrics_path": self.metrics})[0], 204)
        self.boot()
        limiter = {"bandwidth": {"size": 4096, "refill_time": 100}}
        self.assertEqual(self.api.call("PATCH", "/drives/disk",
                                       {"drive_id": "disk", "rate_limiter": limiter})[0], 204)
        self.assert_fault(self.api.call("PATCH", "/drives/nope",
                                        {"drive_id": "nope", "rate_limiter": limiter}),
                          contains="nope")
        self.assert_fault(self.api.call("PATCH", "/drives/disk",
                                        {"drive_id": "disk", "rate_limiter": {"ops": {"size": 1}}}),
                          contains="refill_time")
        self.assertEqual(self.api.call("PUT", "/actions", {"action_type": "FlushMetrics"})[0], 204)
        with open(self.metrics) as f:
            self.assertEqual(json.load(f)["control"]["rate_limit_updates"], 1)
        self.assert_still_running()

    def test_path_on_host_patch_swaps_the_drive_after_boot(self):
        disk, bigger = os.path.join(self.dir, "disk.img"), os.path.join(self.dir, "bigger.img")
        for path, size in [(disk, 1 << 20), (bigger, 2 << 20)]:
            with open(path, "wb") as f:
                f.truncate(size)
        self.assertEqual(self.api.call("PUT", "/drives/disk",
                                       {"drive_id": "disk", "path_on_host": disk,
                                        "is_root_device": False, "is_read_only": False})[0], 204)
        self.metrics = os.path.join(self.dir, "metrics.json")
        self.assertEqual(self.api.call("PUT", "/metrics", {"metrics_path": self.metrics})[0], 204)
        self.boot()
        missing = os.path.join(self.dir, "missing.img")
        self.assert_fault(self.api.call("PATCH", "/drives/disk",
                                        {"drive_id": "disk", "path_on_host": missing}),
                          contains=missing)
        self.assert_fault(self.api.call("PATCH", "/drives/nope",
                                        {"drive_id": "nope", "path_on_host": bigger}),
                          contains="nope")
        self.assertEqual(self.api.call("PATCH", "/drives/disk",
                                       {"drive_id": "disk", "path_on_host": bigger})[0], 204)
        self.assertEqual(self.api.call("GET", "/vm/config")[1]["drives"][0]["path_on_host"],
                         bigger)
        self.assertEqual(self.api.call("PUT", "/actions", {"action_type": "FlushMetrics"})[0], 204)
        with open(self.metrics) as f:
            metrics = json.load(f)
        self.assertEqual(metrics["block_disk"]["file_swaps"], 1)
        self.assertEqual(metrics["control"]["drive_updates"], 1)
        self.assert_still_running()


def seccomp_mode(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Seccomp:"):
                return int(line.split()[1])
    return None


class ProcessTest(FcApiFixture):
    def booted_vmm(self, extra=()):
        proc, sock = self.start("vm", extra=extra)
        api = Api(sock)
        self.configure(api, "idle")
        self.assertEqual(api.call("PUT", "/actions", {"action_type": "InstanceStart"})[0], 204)
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            vmms = [int(p) for p in f.read().split()
                    if b"--control-fd" in open(f"/proc/{p}/cmdline", "rb").read()]
        self.assertEqual(len(vmms), 1, "the VMM is not the API process's child")
        return proc, vmms[0]

    def test_api_front_and_its_vmm_run_under_seccomp_filters(self):
        proc, vmm = self.booted_vmm()
        self.assertEqual(seccomp_mode(proc.pid), 2, "the API front has no seccomp filter")
        self.assertEqual(seccomp_mode(vmm), 2, "ember-vmm has no seccomp filter")

    def test_no_seccomp_leaves_both_unfiltered(self):
        proc, vmm = self.booted_vmm(extra=["--no-seccomp"])
        self.assertEqual(seccomp_mode(proc.pid), 0)
        self.assertEqual(seccomp_mode(vmm), 0)

    def test_vmm_dies_with_a_killed_api_process(self):
        proc, vmm = self.booted_vmm()
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{vmm}") and open(f"/proc/{vmm}/stat").read().split()[2] != "Z":
            self.assertLess(time.monotonic(), deadline, "ember-vmm outlived its API process")
            time.sleep(0.01)


class FlagsTest(FcApiFixture):
    def firecracker(self):
        link = os.path.join(self.dir, "firecracker")
        os.symlink(VMM, link)
        return link

    def config_file(self, scenario):
        path = os.path.join(self.dir, "vm.json")
        with open(path, "w") as f:
            json.dump({"boot-source": {"boot_args": f"console=ttyS0 ember.test={scenario}"},
                       "machine-config": {"vcpu_count": 1, "mem_size_mib": 32}}, f)
        return path

    def test_firecracker_symlink_runs_a_config_file_without_api(self):
        result = subprocess.run([self.firecracker(), "--no-api", "--config-file",
                                 self.config_file("hello"), "--id", "vm-1", "--boot-timer",
                                 "--level", "Info"], capture_output=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        self.assertIn(b"Guest-boot-time", result.stderr)

    def test_firecracker_symlink_serves_the_api_with_config_file_booted(self):
        proc, sock = self.start("vm", program=self.firecracker(),
                                extra=["--config-file", self.config_file("idle"), "--id", "vm-2"])
        self.assertEqual(Api(sock).call("GET", "/")[1]["id"], "vm-2")
        self.assertEqual(Api(sock).call("GET", "/")[1]["state"], "Running")
        proc.terminate()
        self.assertEqual(proc.wait(timeout=30), 0)

    def test_an_existing_api_socket_path_is_refused_and_kept(self):
        path = os.path.join(self.dir, "taken.sock")
        with open(path, "w") as f:
            f.write("not ours")
        result = subprocess.run([VMM, "--api-sock", path], capture_output=True, timeout=30)
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"already exists", result.stderr)
        self.assertEqual(open(path).read(), "not ours")

    def test_flags_for_missing_features_are_refused_with_exit_code_2(self):
        for args, reason in [(["--seccomp-filter", "f.bpf"], b"seccomp"),
                             (["--metadata", "m.json"], b"MMDS"),
                             (["--enable-pci"], b"PCI"),
                             ([], b"--no-api needs --config-file")]:
            result = subprocess.run([self.firecracker(), "--no-api", *args],
                                    capture_output=True, timeout=30)
            self.assertEqual(result.returncode, 2, args)
            self.assertIn(reason, result.stderr)
            os.unlink(os.path.join(self.dir, "firecracker"))


def cpu_seconds(pid):
    """The process's user + system CPU time so far, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def idle_clients(path, count):
    """Up to `count` connections to `path` that send nothing. A connect the full backlog
    refuses (EAGAIN) is retried for a second, for the front to accept; then no more are made."""
    clients = []
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        deadline = time.monotonic() + 1
        while (error := sock.connect_ex(path)) != 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        if error != 0:
            sock.close()
            break
        clients.append(sock)
    return clients


class ClientLimitTest(FcApiFixture):
    def idle(self, sock, count):
        """`count` idle clients, given half a second for the front to accept what it will."""
        clients = idle_clients(sock, count)
        self.addCleanup(lambda: [client.close() for client in clients])
        self.assertEqual(len(clients), count)
        time.sleep(0.5)
        return clients

    def assert_serves_once_closed(self, sock, clients):
        for client in clients:
            client.close()
        self.assertEqual(Api(sock).call("GET", "/")[0], 200)

    def test_out_of_fds_the_front_waits_instead_of_spinning(self):
        limit = 24
        proc, sock = self.start("api", preexec_fn=lambda: resource.setrlimit(
            resource.RLIMIT_NOFILE, (limit, limit)))
        clients = self.idle(sock, limit + 10)
        self.assertEqual(open_fds(proc.pid), limit, "the front did not run out of fds")
        # A front retrying the still-readable listener spins a core; waiting, it uses next to
        # nothing. Generous: a shared, loaded machine.
        before = cpu_seconds(proc.pid)
        time.sleep(2)
        self.assertLess(cpu_seconds(proc.pid) - before, 0.2)
        self.assert_serves_once_closed(sock, clients)

    def test_idle_clients_past_the_cap_wait_in_the_backlog(self):
        proc, sock = self.start("api")
        baseline = open_fds(proc.pid)
        clients = self.idle(sock, 80)
        self.assertLessEqual(open_fds(proc.pid) - baseline, 64)
        self.assert_serves_once_closed(sock, clients)

if __name__ == "__main__":
    ec.require_kvm()
    ember_unittest.main()
