"""End-to-end tests of emberd's Functions API (deploy once, invoke from snapshots, warm pools)
through an independent Python gRPC client, with the test guest's `agent` scenario playing the
function (its handler returns the payload reversed; "spin:N" first keeps it busy ~N ms). Real
emberd, real restores, real vsock, every VMM jailed (emberd's default) unless a class says
otherwise. One emberd serves the tests of a class. Guest-side work is emulated here
(DESIGN.md), so the tests check what is answered, never how fast."""
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import ember_unittest
import ember_client as ec
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "rootfs"))
import rootfs_support as rs  # noqa: E402  (OCI archives made with Python's tarfile)
from ember_client import api, api_grpc, grpc


EMBERCTL = os.path.join(ec.BUILD_DIR, "bin", "emberctl")


def reversed_bytes(payload):
    return bytes(reversed(payload))


def code_of(call, request, timeout=60):
    try:
        call(request, timeout=timeout)
    except grpc.RpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


class FunctionsFixture:
    """Helpers over self.emberd / self.fn (a FunctionsStub)."""

    EMBERD_ARGS = ()
    ALLOW_DIRS = ec.Emberd.TEST_ALLOW_DIRS
    IMAGE_DIR = None  # None: the emberd's scratch directory

    @classmethod
    def start_emberd(cls, binary=None):
        cls.emberd = ec.Emberd(binary=binary, extra_args=list(cls.EMBERD_ARGS),
                               allow_dirs=cls.ALLOW_DIRS)
        cls.fn = api_grpc.FunctionsStub(cls.emberd.channel)
        cls.image = os.path.join(cls.IMAGE_DIR or cls.emberd.dir,
                                 f"root-{os.getpid()}.ext4")
        with open(cls.image, "wb") as f:
            f.write(b"an ext4 image the test guest never reads")
            f.truncate(1 << 20)

    def deploy(self, name, network=False, **pool):
        return self.fn.DeployFunction(api.DeployFunctionRequest(
            name=name, root_image_path=self.image, mem_size_mib=32, network=network,
            warmup_payloads=[b"warm up"], pool=api.FunctionPool(**pool)), timeout=300)

    def invoke(self, name, payload, timeout_ms=0):
        return self.fn.Invoke(api.FunctionInvokeRequest(name=name, payload=payload,
                                                        timeout_ms=timeout_ms), timeout=120)

    def function(self, name):
        found = self.fn.ListFunctions(api.ListFunctionsRequest(name=name), timeout=30).functions
        return found[0] if found else None

    def wait_function(self, name, predicate, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            f = self.function(name)
            if predicate(f):
                return f
            time.sleep(0.05)
        self.fail(f"function {name} never got there: {self.function(name)}")

    def vms_of(self, name):
        """The live VMs emberd runs for function `name`."""
        pattern = re.compile(rf"^fn-{re.escape(name)}-(\d+-0|deploy)$")
        return [v for v in self.emberd.stub.List(api.ListRequest(), timeout=30).vms
                if pattern.match(v.vm_id) and v.state != api.Vm.STOPPED]

    def delete(self, name, force=False):
        self.fn.DeleteFunction(api.DeleteFunctionRequest(name=name, force=force), timeout=300)

    def kill_emberd_mid_burst(self, name, clients):
        """Starts `clients` slow invocations of `name`, kills emberd (SIGKILL) while at least
        two run, checks that every one failed cleanly, and starts emberd again. Returns the
        VM processes there were at the kill."""
        outcomes = []

        def client(i):
            try:
                outcomes.append(self.invoke(name, b"spin:3000:%d" % i))
            except grpc.RpcError as error:
                outcomes.append(error.code())

        burst = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in burst:
            t.start()
        self.wait_function(name, lambda f: f.busy_clones >= 2)
        before = self.vmm_pids()
        self.assertGreaterEqual(len(before), 2)
        # SIGKILL with the clients' channel left open: they see the server go.
        self.emberd.proc.send_signal(signal.SIGKILL)
        self.emberd.proc.wait()
        for t in burst:
            t.join(120)
        # Every invocation in flight failed cleanly (the connection went), none hung.
        self.assertEqual(len(outcomes), clients)
        self.assertTrue(all(o == grpc.StatusCode.UNAVAILABLE for o in outcomes), outcomes)
        self.emberd.channel.close()
        self.emberd.log.close()
        self.emberd.start()
        self.fn = api_grpc.FunctionsStub(self.emberd.channel)
        return before

    def vmm_pids(self):
        """The processes of this emberd's VMs (found by the state dir in their command line):
        an unjailed ember-vmm; a jailed VM's ember-jailer and what runs under it (ember-vmm,
        chrooted in its pid namespace)."""
        state = self.emberd.state_dir.encode()
        pids = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            program = cmdline.split(b"\0")[0]
            if state not in cmdline or not program.endswith((b"ember-vmm", b"ember-jailer")):
                continue
            pids.append(int(pid))
            if program.endswith(b"ember-jailer"):
                pids += self.descendants(int(pid))
        return sorted(set(pids))

    @staticmethod
    def descendants(pid):
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            return []
        return children + [d for c in children for d in FunctionsFixture.descendants(c)]


    def assert_cold_clones_record_then_prefetch(self, name):
        """Cold invocations of a new function `name`: the first clone, restored through
        userfaultfd, records its working set as it ends (jailed: into its jail, from which
        emberd takes it); the next cold clone prefetches it."""
        f = self.deploy(name)  # no pool, no keep-warm: every invocation restores a clone
        memory = [s.memory_path for s in self.emberd.stub.ListSnapshots(
            api.ListSnapshotsRequest(), timeout=30).snapshots
            if s.snapshot_id == f.snapshot_id][0]
        self.assertFalse(os.path.exists(memory + ".ws"))
        first = self.invoke(name, b"first")
        self.assertEqual(first.output, b"tsrif")
        self.assertFalse(first.timings.pool_hit)
        deadline = time.time() + 60
        while not os.path.exists(memory + ".ws") and time.time() < deadline:
            time.sleep(0.05)
        self.assertTrue(os.path.exists(memory + ".ws"), "no working set was recorded")
        # The next cold clone prefetches it (kept warm here, to be looked at).
        self.fn.UpdateFunction(api.UpdateFunctionRequest(
            name=name, pool=api.FunctionPool(keep_warm_ms=60000)), timeout=30)
        second = self.invoke(name, b"second")
        self.assertEqual(second.output, b"dnoces")
        self.assertFalse(second.timings.pool_hit)
        vm = self.emberd.stub.Get(api.VmRequest(vm_id=second.vm_id), timeout=30)
        # Its ember-vmm's arguments (jailed: its ember-jailer's, which end with them).
        with open(f"/proc/{vm.pid}/cmdline", "rb") as cmdline:
            args = cmdline.read().split(b"\0")
        self.assertIn(b"--prefetch-working-set", args)
        self.assertIn(b"uffd", args)
        metrics = json.loads(self.emberd.stub.GetMetrics(
            api.GetMetricsRequest(vm_id=second.vm_id), timeout=30).json)
        self.assertGreater(metrics.get("uffd", {}).get("prefetched_pages", 0), 0, metrics)
        self.delete(name)
        self.assertFalse(os.path.exists(memory + ".ws"))


class SharedEmberd(FunctionsFixture):
    """One emberd for all the tests of a class."""

    @classmethod
    def setUpClass(cls):
        cls.start_emberd()

    @classmethod
    def tearDownClass(cls):
        cls.emberd.close()


class FunctionsTest(SharedEmberd, unittest.TestCase):
    def test_deploy_returns_a_ready_function_with_its_snapshot_and_timings(self):
        f = self.deploy("ready")
        self.assertEqual(f.state, api.Function.READY)
        self.assertTrue(f.snapshot_id)
        self.assertEqual(len(f.image_sha256), 64)
        self.assertGreater(f.deploy.boot_to_ready_us, 0)
        self.assertGreater(f.deploy.snapshot_us, 0)
        self.assertGreaterEqual(f.deploy.total_us, f.deploy.boot_to_ready_us)
        snapshots = self.emberd.stub.ListSnapshots(api.ListSnapshotsRequest(), timeout=30)
        self.assertIn(f.snapshot_id, [s.snapshot_id for s in snapshots.snapshots])
        self.assertEqual(self.vms_of("ready"), [], "the deploy VM should be gone")
        self.delete("ready")

    def test_hundred_invocations_across_pool_hits_and_misses_each_get_their_result(self):
        self.deploy("hundred", min_warm=2)
        hits = misses = 0
        for i in range(100):
            if i == 50:
                # The second half also reuses clones kept warm after an invocation.
                self.fn.UpdateFunction(api.UpdateFunctionRequest(
                    name="hundred", pool=api.FunctionPool(min_warm=2, keep_warm_ms=10000)),
                    timeout=30)
            payload = b"payload %d " % i + bytes(range(i % 7))
            result = self.invoke("hundred", payload)
            self.assertEqual(result.output, reversed_bytes(payload), f"invocation {i}")
            self.assertGreater(result.timings.total_us, 0)
            self.assertGreaterEqual(result.timings.total_us, result.timings.handler_us)
            if result.timings.pool_hit:
                hits += 1
                self.assertEqual(result.timings.restore_us, 0)
            else:
                misses += 1
                self.assertGreater(result.timings.restore_us, 0)
                self.assertGreater(result.timings.resume_to_ready_us, 0)
        self.assertGreater(hits, 0)
        self.assertGreater(misses, 0)
        f = self.function("hundred")
        self.assertEqual(f.counters.invocations, 100)
        self.assertEqual(f.counters.pool_hits, hits)
        self.assertEqual(f.counters.failures, 0)
        self.assertGreater(f.counters.latency_p99_us, 0)
        self.assertGreaterEqual(f.counters.latency_p99_us, f.counters.latency_p50_us)
        self.delete("hundred")

    def test_sixteen_concurrent_clients_each_get_a_clone_of_their_own(self):
        self.deploy("sixteen", max_concurrency=16)
        results = [None] * 16
        start = threading.Barrier(16)

        def client(i):
            start.wait()
            try:
                results[i] = self.invoke("sixteen", b"client %02d" % i)
            except grpc.RpcError as error:
                results[i] = error

        threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        for i, result in enumerate(results):
            self.assertIsInstance(result, api.FunctionInvokeResponse, f"client {i}: {result}")
            self.assertEqual(result.output, reversed_bytes(b"client %02d" % i))
        self.assertEqual(len({r.vm_id for r in results}), 16, "a clone served two at once")
        self.delete("sixteen")

    def test_invocations_beyond_max_concurrency_are_resource_exhausted_while_one_runs(self):
        self.deploy("one-at-a-time", max_concurrency=1)
        first = []
        busy = threading.Thread(
            target=lambda: first.append(self.invoke("one-at-a-time", b"spin:4000:slow")))
        busy.start()
        self.wait_function("one-at-a-time", lambda f: f.busy_clones == 1)
        code, details = code_of(self.fn.Invoke, api.FunctionInvokeRequest(
            name="one-at-a-time", payload=b"second"))
        self.assertTrue(busy.is_alive(), "the refusal should not wait for the first")
        self.assertEqual(code, grpc.StatusCode.RESOURCE_EXHAUSTED, details)
        self.assertIn("max_concurrency", details)
        busy.join(120)
        self.assertEqual(first[0].output, reversed_bytes(b"spin:4000:slow"))
        self.assertEqual(self.function("one-at-a-time").counters.rejected, 1)
        self.delete("one-at-a-time")

    def test_handler_past_its_timeout_is_deadline_exceeded_and_its_clone_discarded(self):
        self.deploy("slow", keep_warm_ms=60000)
        code, details = code_of(self.fn.Invoke, api.FunctionInvokeRequest(
            name="slow", payload=b"spin:20000:", timeout_ms=300))
        self.assertEqual(code, grpc.StatusCode.DEADLINE_EXCEEDED, details)
        self.assertIn("300 ms", details)
        f = self.wait_function("slow", lambda f: f.busy_clones == 0)
        self.assertEqual((f.counters.timeouts, f.counters.failures), (1, 1))
        self.assertEqual(f.warm_clones, 0, "a timed-out clone must not be kept warm")
        deadline = time.time() + 30
        while self.vms_of("slow") and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.vms_of("slow"), [])
        # The function serves on, from a fresh clone.
        self.assertEqual(self.invoke("slow", b"after").output, b"retfa")
        self.delete("slow")

    def test_delete_while_idle_removes_clones_snapshot_image_and_record(self):
        f = self.deploy("gone", min_warm=2)
        self.wait_function("gone", lambda f: f.paused_clones == 2)
        self.assertEqual(len(self.vms_of("gone")), 2)
        self.delete("gone")
        self.assertIsNone(self.function("gone"))
        self.assertEqual(self.vms_of("gone"), [])
        snapshots = self.emberd.stub.ListSnapshots(api.ListSnapshotsRequest(), timeout=30)
        self.assertNotIn(f.snapshot_id, [s.snapshot_id for s in snapshots.snapshots])
        self.assertFalse(os.path.exists(os.path.join(self.emberd.state_dir, "fn", "gone")))
        image = os.path.join(self.emberd.state_dir, "fn-images", f.image_sha256 + ".ext4")
        others = [x for x in self.fn.ListFunctions(api.ListFunctionsRequest()).functions
                  if x.image_sha256 == f.image_sha256]
        self.assertEqual(os.path.exists(image), bool(others))
        code, details = code_of(self.fn.Invoke, api.FunctionInvokeRequest(name="gone"))
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND, details)

    def test_delete_is_refused_while_an_invocation_runs_unless_forced(self):
        self.deploy("busy")
        outcome = []

        def slow():
            try:
                outcome.append(self.invoke("busy", b"spin:30000:"))
            except grpc.RpcError as error:
                outcome.append(error.code())

        runner = threading.Thread(target=slow)
        runner.start()
        self.wait_function("busy", lambda f: f.busy_clones == 1)
        code, details = code_of(self.fn.DeleteFunction, api.DeleteFunctionRequest(name="busy"))
        self.assertEqual(code, grpc.StatusCode.FAILED_PRECONDITION, details)
        self.assertIn("force", details)
        self.delete("busy", force=True)
        runner.join(60)
        self.assertFalse(runner.is_alive())
        self.assertNotIsInstance(outcome[0], api.FunctionInvokeResponse)
        self.assertIsNone(self.function("busy"))
        self.assertEqual(self.vms_of("busy"), [])

    def test_jailed_cold_invocations_record_a_working_set_in_the_jail_then_prefetch_it(self):
        self.assert_cold_clones_record_then_prefetch("jailws")

    def test_a_working_set_the_vmm_refuses_is_dropped_and_recorded_anew(self):
        f = self.deploy("badws")
        memory = [s.memory_path for s in self.emberd.stub.ListSnapshots(
            api.ListSnapshotsRequest(), timeout=30).snapshots
            if s.snapshot_id == f.snapshot_id][0]
        self.assertEqual(self.invoke("badws", b"one").output, b"eno")
        deadline = time.time() + 60
        while not os.path.exists(memory + ".ws") and time.time() < deadline:
            time.sleep(0.05)
        # A set that passes emberd's checks but not the VMM's (its CRC): a compromised clone's.
        with open(memory + ".ws", "rb") as ws:
            corrupted = bytearray(ws.read())
        corrupted[-1] ^= 0xff
        with open(memory + ".ws", "wb") as ws:
            ws.write(corrupted)
        # Restored again without it, and recording a new one.
        self.assertEqual(self.invoke("badws", b"two").output, b"owt")

        def recorded():
            try:
                with open(memory + ".ws", "rb") as ws:
                    return ws.read()
            except FileNotFoundError:
                return None  # dropped, the new one not there yet

        deadline = time.time() + 60
        while recorded() in (None, bytes(corrupted)) and time.time() < deadline:
            time.sleep(0.05)
        self.assertNotIn(recorded(), (None, bytes(corrupted)))
        self.delete("badws")

    def test_deploy_from_an_oci_archive_builds_its_image_once_by_content(self):
        archive = os.path.join(self.emberd.dir, "image.oci.tar")
        layout = os.path.join(self.emberd.dir, "layout")
        rs.write_layout(layout, [rs.add_image(
            layout, [[rs.entry("bin/handler", data=b"#!/bin/sh\n", mode=0o755)]],
            {"Entrypoint": ["/bin/handler"]})])
        rs.write_oci_archive(archive, layout)
        with open(archive, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()

        def deploy(name):
            return self.fn.DeployFunction(api.DeployFunctionRequest(
                name=name, oci_archive_path=archive, mem_size_mib=32), timeout=300)

        first = deploy("oci")
        self.assertEqual(first.state, api.Function.READY)
        self.assertEqual(first.image_sha256, digest)
        # Kept apart from a raw image of the same bytes.
        image = os.path.join(self.emberd.state_dir, "fn-images", "oci-" + digest + ".ext4")
        # ember-rootfs built an ext4 image of it, with the archive's entrypoint recorded.
        self.assertEqual(rs.image_config(image)["entrypoint"], ["/bin/handler"])
        built = os.stat(image)
        self.assertEqual(self.invoke("oci", b"oci").output, b"ico")
        # The same archive again: the same image, not built again.
        self.assertEqual(deploy("oci-again").image_sha256, digest)
        self.assertEqual(os.stat(image).st_ino, built.st_ino)
        self.delete("oci")
        self.assertTrue(os.path.exists(image), "oci-again still uses it")
        self.delete("oci-again")
        self.assertFalse(os.path.exists(image))
        # What ember-rootfs refuses is INVALID_ARGUMENT naming the field; nothing is left.
        with open(archive, "wb") as f:
            f.write(b"not a tar archive at all" * 100)
        code, details = code_of(self.fn.DeployFunction, api.DeployFunctionRequest(
            name="oci-bad", oci_archive_path=archive, mem_size_mib=32), timeout=300)
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, details)
        self.assertIn("oci_archive_path", details)
        self.assertIsNone(self.function("oci-bad"))
        self.assertEqual([n for n in os.listdir(os.path.join(self.emberd.state_dir, "fn-images"))
                          if n.endswith(".ext4")], [])

    def test_deleting_a_function_keeps_the_image_a_deploy_in_flight_shares_with_it(self):
        image_path = os.path.join(self.emberd.dir, "shared-image.ext4")
        with open(image_path, "wb") as f:
            f.write(b"an image only this test's two functions use")
            f.truncate(1 << 20)

        def request(name, warmup):
            return api.DeployFunctionRequest(name=name, root_image_path=image_path,
                                             mem_size_mib=32, warmup_payloads=[warmup])

        self.fn.DeployFunction(request("holder", b"warm up"), timeout=300)
        outcome = []

        def deploy_in_flight():
            try:
                # Its warm-up keeps it deploying well after its VM exists.
                outcome.append(self.fn.DeployFunction(request("inflight", b"spin:5000:"),
                                                      timeout=300))
            except grpc.RpcError as error:
                outcome.append(error)

        deployer = threading.Thread(target=deploy_in_flight)
        deployer.start()
        # Its deploy VM is made once its image is in the cache.
        deadline = time.time() + 120
        while not self.vms_of("inflight") and time.time() < deadline:
            time.sleep(0.02)
        self.assertTrue(self.vms_of("inflight"), "inflight's deploy VM never appeared")
        self.delete("holder")
        deployer.join(300)
        self.assertIsInstance(outcome[0], api.Function, outcome)
        image = os.path.join(self.emberd.state_dir, "fn-images",
                             outcome[0].image_sha256 + ".ext4")
        self.assertTrue(os.path.exists(image), "deleting holder removed inflight's image")
        self.assertEqual(self.invoke("inflight", b"abc").output, b"cba")
        self.delete("inflight")
        self.assertFalse(os.path.exists(image))

    def test_bad_requests_get_clear_codes_naming_the_field(self):
        self.deploy("target")
        cases = [
            (self.fn.Invoke, api.FunctionInvokeRequest(name="nope", payload=b"x"),
             grpc.StatusCode.NOT_FOUND, "nope"),
            (self.fn.Invoke, api.FunctionInvokeRequest(name="target", payload=b"x" * 2000000),
             grpc.StatusCode.INVALID_ARGUMENT, "payload"),
            (self.fn.DeployFunction, api.DeployFunctionRequest(
                name="nomem", root_image_path=self.image),
             grpc.StatusCode.INVALID_ARGUMENT, "mem_size_mib"),
            (self.fn.DeployFunction, api.DeployFunctionRequest(
                name="noimage", root_image_path=self.image + ".missing", mem_size_mib=32),
             grpc.StatusCode.INVALID_ARGUMENT, "root_image_path"),
            (self.fn.DeployFunction, api.DeployFunctionRequest(name="noimage", mem_size_mib=32),
             grpc.StatusCode.INVALID_ARGUMENT, "root_image_path"),
            (self.fn.DeployFunction, api.DeployFunctionRequest(
                name="Bad_Name", root_image_path=self.image, mem_size_mib=32),
             grpc.StatusCode.INVALID_ARGUMENT, "name"),
            (self.fn.DeployFunction, api.DeployFunctionRequest(
                name="target", root_image_path=self.image, mem_size_mib=32),
             grpc.StatusCode.ALREADY_EXISTS, "target"),
            (self.fn.DeployFunction, api.DeployFunctionRequest(
                name="outside", root_image_path="/etc/passwd", mem_size_mib=32),
             grpc.StatusCode.INVALID_ARGUMENT, "root_image_path"),
            (self.fn.UpdateFunction, api.UpdateFunctionRequest(
                name="target", pool=api.FunctionPool(max_concurrency=100000)),
             grpc.StatusCode.INVALID_ARGUMENT, "pool.max_concurrency"),
            (self.fn.DeleteFunction, api.DeleteFunctionRequest(name="nope"),
             grpc.StatusCode.NOT_FOUND, "nope"),
        ]
        for call, request, want, mention in cases:
            code, details = code_of(call, request)
            self.assertEqual(code, want, f"{request}: {details}")
            self.assertIn(mention, details)
        # Nothing of the refused deploys is left.
        self.assertEqual(sorted(os.listdir(os.path.join(self.emberd.state_dir, "fn"))),
                         ["target"])
        self.assertEqual(self.invoke("target", b"still").output, b"llits")
        self.delete("target")

    def test_the_ember_api_takes_no_function_vm_id_and_changes_no_function_vm(self):
        f = self.deploy("owned", min_warm=1)
        self.wait_function("owned", lambda f: f.paused_clones == 1)
        # A client's VM under a function's id would make its deploy fail, and be taken for the
        # function's leftover and removed at emberd's next start.
        stub = self.emberd.stub
        for call, request, field in [
                (stub.Create, api.CreateRequest(vm_id="fn-x-deploy", config=ec.config()),
                 "vm_id"),
                (stub.Restore, api.RestoreRequest(snapshot_id=f.snapshot_id,
                                                  vm_id_prefix="fn-owned-99"), "vm_id_prefix")]:
            code, details = code_of(call, request)
            self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, f"{request}: {details}")
            self.assertIn(field, details)
            self.assertIn('"fn-"', details)
        # The function's clone is the Functions service's: the Ember API shows it, changes nothing.
        [clone] = self.vms_of("owned")
        self.assertEqual(stub.Get(api.VmRequest(vm_id=clone.vm_id), timeout=30).vm_id,
                         clone.vm_id)
        for call, request in [
                (stub.Delete, api.DeleteRequest(vm_id=clone.vm_id, force=True)),
                (stub.Stop, api.StopRequest(vm_id=clone.vm_id)),
                (stub.Resume, api.VmRequest(vm_id=clone.vm_id)),
                (stub.CreateSnapshot, api.CreateSnapshotRequest(vm_id=clone.vm_id)),
                (stub.DeleteSnapshot, api.DeleteSnapshotRequest(snapshot_id=f.snapshot_id)),
                # A client's own VM restored from the function's snapshot would hold its deployed
                # memory and pin the snapshot against DeleteFunction.
                (stub.Restore, api.RestoreRequest(snapshot_id=f.snapshot_id, vm_id_prefix="mine")),
                (stub.TrustSnapshot, api.TrustSnapshotRequest(snapshot_id=f.snapshot_id))]:
            code, details = code_of(call, request)
            self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED, f"{request}: {details}")
            self.assertIn("Functions service", details)
        self.assertEqual([v.vm_id for v in self.vms_of("owned")], [clone.vm_id])
        result = self.invoke("owned", b"mine")
        self.assertEqual((result.output, result.timings.pool_hit, result.vm_id),
                         (b"enim", True, clone.vm_id))
        self.delete("owned")
        code, details = code_of(stub.Create, api.CreateRequest(vm_id="fnx", config=ec.config()))
        self.assertEqual(code, grpc.StatusCode.OK, details)  # only "fn-" is reserved
        stub.Delete(api.DeleteRequest(vm_id="fnx", force=True), timeout=60)


class FunctionsCtlTest(SharedEmberd, unittest.TestCase):
    def ctl(self, *args, stdin=b"", check=0):
        result = subprocess.run([EMBERCTL, "--socket", self.emberd.socket, *args], input=stdin,
                                capture_output=True, timeout=600)
        self.assertEqual(result.returncode, check, result.stderr.decode(errors="replace"))
        return result

    def test_emberctl_deploys_invokes_lists_updates_and_deletes(self):
        out = self.ctl("fn", "deploy", "ctl", "--image", self.image, "--mem", "32",
                       "--keep-warm-ms", "60000").stdout
        self.assertIn(b"ctl READY", out)
        # Payload from stdin, result on stdout as it is.
        payload = bytes(range(256)) * 3
        self.assertEqual(self.ctl("fn", "invoke", "ctl", stdin=payload).stdout,
                         reversed_bytes(payload))
        path = os.path.join(self.emberd.dir, "payload.bin")
        with open(path, "wb") as f:
            f.write(b"from a file")
        self.assertEqual(self.ctl("fn", "invoke", "ctl", "--payload-file", path).stdout,
                         b"elif a morf")
        self.assertEqual(self.ctl("fn", "invoke", "ctl", "--stream", stdin=b"streamed").stdout,
                         b"demaerts")
        timed = json.loads(self.ctl("--json", "fn", "invoke", "ctl", stdin=b"json").stdout)
        self.assertTrue(timed["timings"]["pool_hit"], timed)
        self.assertGreater(int(timed["timings"]["total_us"]), 0)
        self.assertTrue(timed["vm_id"].startswith("fn-ctl-"))
        listed = json.loads(self.ctl("--json", "fn", "list").stdout)["functions"]
        self.assertEqual([f["name"] for f in listed], ["ctl"])
        self.assertEqual(int(listed[0]["counters"]["invocations"]), 4)
        self.assertIn(b"min_warm", self.ctl("--json", "fn", "update", "ctl", "--min-warm",
                                            "1").stdout)
        self.assertEqual(self.function("ctl").spec.pool.keep_warm_ms, 60000, "update kept it")
        self.ctl("fn", "delete", "ctl")
        self.assertEqual(self.ctl("fn", "list").stdout, b"")
        error = self.ctl("fn", "invoke", "ctl", stdin=b"x", check=1).stderr
        self.assertIn(b"NOT_FOUND", error)
        self.assertIn(b"needs --mem", self.ctl("fn", "deploy", "x", "--image", self.image,
                                               check=2).stderr)


class FunctionsRestartTest(FunctionsFixture, unittest.TestCase):
    def setUp(self):
        self.start_emberd()

    def tearDown(self):
        self.emberd.close()

    def test_emberd_killed_mid_burst_restarts_with_its_functions_and_no_orphans(self):
        self.deploy("survivor", min_warm=2, keep_warm_ms=30000)
        self.wait_function("survivor", lambda f: f.paused_clones == 2)
        before = self.kill_emberd_mid_burst("survivor", 6)
        f = self.function("survivor")
        self.assertEqual(f.state, api.Function.READY)
        # The old clones (busy, warm or paused at the kill) are gone; the pool refills anew.
        after = set(self.vmm_pids())
        self.assertFalse(after & set(before), f"orphaned VMMs: {after & set(before)}")
        self.wait_function("survivor", lambda f: f.paused_clones == 2)
        result = self.invoke("survivor", b"after the restart")
        self.assertEqual(result.output, reversed_bytes(b"after the restart"))
        self.assertTrue(result.timings.pool_hit)
        self.delete("survivor")
        self.assertEqual(self.vmm_pids(), [])


class ArchiveLimitTest(SharedEmberd, unittest.TestCase):
    """An emberd that takes OCI archives of at most 1 MiB (--fn-max-archive-mib)."""
    EMBERD_ARGS = ("--fn-max-archive-mib", "1")

    def test_an_archive_past_the_limit_is_refused_leaving_nothing(self):
        archive = os.path.join(self.emberd.dir, "large.oci.tar")
        layout = os.path.join(self.emberd.dir, "large-layout")
        rs.write_layout(layout, [rs.add_image(
            layout, [[rs.entry("bin/handler", data=b"#!/bin/sh\n", mode=0o755),
                      rs.entry("data", data=os.urandom(3 << 19))]],  # 1.5 MiB, incompressible
            {"Entrypoint": ["/bin/handler"]})])
        rs.write_oci_archive(archive, layout)
        self.assertGreater(os.path.getsize(archive), 1 << 20)
        code, details = code_of(self.fn.DeployFunction, api.DeployFunctionRequest(
            name="large", oci_archive_path=archive, mem_size_mib=32), timeout=300)
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, details)
        self.assertIn("oci_archive_path", details)
        self.assertIn("--fn-max-archive-mib", details)
        self.assertIsNone(self.function("large"))
        # Nothing of it kept: no copy, no image, no build directory.
        self.assertEqual(os.listdir(os.path.join(self.emberd.state_dir, "fn-images")), [])


class FunctionsLimitsTest(SharedEmberd, unittest.TestCase):
    """emberd's host-wide caps on what clients' functions take: the size an OCI archive's image
    may expand to while it is built (--fn-max-image-mib) and the clones kept ready across all
    functions' pools (--fn-max-pooled)."""
    EMBERD_ARGS = ("--fn-max-image-mib", "1", "--fn-max-pooled", "2")

    def test_an_archive_expanding_past_the_cap_is_refused_leaving_nothing(self):
        archive = os.path.join(self.emberd.dir, "zeros.oci.tar")
        layout = os.path.join(self.emberd.dir, "zeros-layout")
        # 4 MiB of zeros gzip to a few KiB: a small archive, a large image.
        rs.write_layout(layout, [rs.add_image(
            layout, [[rs.entry("zeros", data=bytes(4 << 20))]], {}, gzip_layers=(0,))])
        rs.write_oci_archive(archive, layout)
        self.assertLess(os.path.getsize(archive), 1 << 20)

        code, details = code_of(self.fn.DeployFunction, api.DeployFunctionRequest(
            name="zeros", oci_archive_path=archive, mem_size_mib=32), timeout=300)

        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, details)
        self.assertIn("oci_archive_path", details)
        self.assertIn("--max-bytes 1048576", details)
        self.assertIsNone(self.function("zeros"))
        # No work directory, staged tree, archive copy or image of it.
        self.assertEqual([n for n in os.listdir(os.path.join(self.emberd.state_dir, "fn-images"))
                          if not re.fullmatch(r"[0-9a-f]{64}\.ext4", n)], [])

    def test_paused_clones_of_all_functions_stay_within_the_cap(self):
        for name in ("pooled-a", "pooled-b"):
            self.deploy(name, min_warm=2)

        def paused():
            return sum(self.function(name).paused_clones for name in ("pooled-a", "pooled-b"))

        deadline = time.time() + 60
        while paused() < 2 and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(paused(), 2)
        # Many of the pools' refill rounds (every 50 ms) later, none went past the cap.
        for _ in range(40):
            self.assertLessEqual(paused(), 2)
            time.sleep(0.05)
        # A pool hit frees a place, which a refill takes again.
        holder = "pooled-a" if self.function("pooled-a").paused_clones else "pooled-b"
        self.assertTrue(self.invoke(holder, b"hit").timings.pool_hit)
        self.wait_function(holder, lambda f: paused() == 2)
        self.assertEqual(paused(), 2)
        for name in ("pooled-a", "pooled-b"):
            self.delete(name)


class FunctionsUnjailedTest(SharedEmberd, unittest.TestCase):
    """--no-jail, with the state directory outside every --allow-dir: the VMMs' vsock sockets
    lie in the functions' directories, which emberd's rules for its VMMs admit."""
    EMBERD_ARGS = ("--no-jail",)
    ALLOW_DIRS = ("/dev/shm",)
    IMAGE_DIR = "/dev/shm"

    @classmethod
    def tearDownClass(cls):
        os.unlink(cls.image)
        super().tearDownClass()

    def test_an_unjailed_emberd_serves_functions_from_its_own_state_directory(self):
        self.deploy("unjailed", min_warm=1)
        self.wait_function("unjailed", lambda f: f.paused_clones == 1)
        for payload in (b"pooled", b"restored"):
            self.assertEqual(self.invoke("unjailed", payload).output, reversed_bytes(payload))
        self.delete("unjailed")
        self.assertEqual(self.vmm_pids(), [])


    def test_cold_invocations_restore_through_userfaultfd_and_prefetch_the_recorded_set(self):
        self.assert_cold_clones_record_then_prefetch("coldws")


def run(argv):
    return subprocess.run(argv, check=True, capture_output=True, timeout=60).stdout.decode()


class NetworkedFunctionsTest(FunctionsFixture, unittest.TestCase):
    """Functions with network on, from an emberd --fn-egress that runs in a network namespace of
    the test's own (IPv4 forwarding on there, as egress needs), so that the links and nftables
    tables it leaves are told apart from the host's and other tests'."""
    EMBERD_ARGS = ("--fn-egress",)
    # The clone network server keeps one network of each shape made ahead (network_server.h):
    # every function here has the same shape, so that one stays until emberd stops.
    SPARES = 1

    def setUp(self):
        self.netns = f"ember-fn-{os.getpid()}"
        run(["ip", "netns", "add", self.netns])
        self.addCleanup(run, ["ip", "netns", "del", self.netns])
        self.in_netns(["ip", "link", "set", "lo", "up"])
        self.in_netns(["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
        # emberd itself runs in that namespace: a wrapper enters it and execs emberd.
        self.wrapper = os.path.join(tempfile.mkdtemp(prefix="ember-fn-net-"), "emberd")
        with open(self.wrapper, "w") as f:
            f.write(f"#!/bin/sh\nexec nsenter --net=/run/netns/{self.netns} "
                    f"{os.path.join(ec.BUILD_DIR, 'bin', 'emberd')} \"$@\"\n")
        os.chmod(self.wrapper, 0o755)
        self.addCleanup(shutil.rmtree, os.path.dirname(self.wrapper), True)
        self.start_emberd(binary=self.wrapper)
        self.addCleanup(self.close_emberd)

    def close_emberd(self):
        if self.emberd.proc.poll() is None:
            self.emberd.close()

    def in_netns(self, argv):
        return run(["ip", "netns", "exec", self.netns] + argv)

    def leftovers(self):
        """What clone networks hold now: links in emberd's namespace (veth host ends), its
        nftables tables, the namespaces mounted in emberd's state dir and the VMMs."""
        links = [line.split(":")[1].strip().split("@")[0]
                 for line in self.in_netns(["ip", "-o", "link"]).splitlines()]
        tables = [line for line in self.in_netns(["nft", "list", "tables"]).splitlines()
                  if line.strip()]
        netns_dir = os.path.join(self.emberd.state_dir, "netns") + "/"
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f if line.split()[4].startswith(netns_dir)]
        return {"links": sorted(link for link in links if link != "lo"),
                "tables": tables, "netns": mounts, "vmms": self.vmm_pids()}

    def assert_only_spares_left(self):
        left = self.leftovers()
        self.assertEqual(left["vmms"], [])
        self.assertEqual(len(left["netns"]), self.SPARES, left)
        self.assertEqual(len(left["links"]), self.SPARES, left)  # the spare's veth host end
        self.assertEqual(len(left["tables"]), self.SPARES, left)

    def assert_nothing_left_once_emberd_stops(self):
        self.emberd.close()
        deadline = time.time() + 30
        while any(self.leftovers().values()) and time.time() < deadline:
            time.sleep(0.1)
        self.assertEqual(self.leftovers(), {"links": [], "tables": [], "netns": [], "vmms": []})

    @staticmethod
    def program(pid):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0]

    def netns_of(self, pid):
        return os.readlink(f"/proc/{pid}/ns/net")

    def test_each_clone_runs_in_a_namespace_of_its_own_with_the_deploy_vms_tap(self):
        self.deploy("net", network=True, min_warm=1, keep_warm_ms=60000)
        self.wait_function("net", lambda f: f.paused_clones == 1)
        results = []
        clients = [threading.Thread(target=lambda i=i: results.append(
            self.invoke("net", b"spin:300:%d" % i))) for i in range(2)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(120)
        self.assertEqual(sorted(r.output for r in results),
                         sorted(reversed_bytes(b"spin:300:%d" % i) for i in range(2)))
        self.assertEqual(len({r.vm_id for r in results}), 2)
        # Two clones kept warm and the refilled one: each VMM in a namespace of its own, none
        # in emberd's, each holding the tap the deploy VM had and its egress veth end.
        self.wait_function("net", lambda f: f.warm_clones == 2 and f.paused_clones == 1)
        pids = [pid for pid in self.vmm_pids() if self.program(pid).endswith(b"ember-vmm")]
        self.assertEqual(len(pids), 3, pids)
        namespaces = {self.netns_of(pid) for pid in pids}
        self.assertEqual(len(namespaces), 3)
        self.assertNotIn(self.netns_of(self.emberd.proc.pid), namespaces)
        for pid in pids:
            links = run(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-o", "link"])
            self.assertIn(": tap0:", links)
            self.assertIn(": egress0@", links)
        self.assertEqual(len(self.leftovers()["netns"]), 3 + self.SPARES)
        # Served again from the warm clones, in their namespaces.
        self.assertEqual(self.invoke("net", b"again").output, b"niaga")
        self.delete("net")
        self.assert_only_spares_left()
        self.assert_nothing_left_once_emberd_stops()

    def test_emberd_killed_with_networked_clones_leaves_nothing_once_restarted(self):
        self.deploy("netkill", network=True, min_warm=2, keep_warm_ms=30000)
        self.wait_function("netkill", lambda f: f.paused_clones == 2)
        before = set(self.kill_emberd_mid_burst("netkill", 4))
        self.assertEqual(self.function("netkill").state, api.Function.READY)
        self.assertFalse(set(self.vmm_pids()) & before, "orphaned VMMs")
        self.wait_function("netkill", lambda f: f.paused_clones == 2)
        # The old clones' networks went with them: only the new pool's and the spare are held.
        self.assertEqual(len(self.leftovers()["netns"]), 2 + self.SPARES)
        result = self.invoke("netkill", b"after")
        self.assertEqual(result.output, b"retfa")
        self.delete("netkill")
        self.assert_only_spares_left()
        self.assert_nothing_left_once_emberd_stops()


if __name__ == "__main__":
    ec.require_kvm()
    if os.geteuid() != 0:
        print("SKIPPED: jailed VMMs and clone networks need root")
        sys.exit(ec.SKIP)
    ember_unittest.main()
