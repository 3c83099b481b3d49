"""Shared fixture of the e2e tests: runs emberd in a scratch directory and talks to it over
gRPC with stubs generated at build time (build/python). An independent client: nothing here
uses Ember's C++ code."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BUILD_DIR = os.environ.get("EMBER_BUILD_DIR", "")
sys.path.insert(0, os.path.join(BUILD_DIR, "python"))

import grpc  # noqa: E402  (Debian's python3-grpcio)
from ember.v1 import api_pb2 as api  # noqa: E402
from ember.v1 import api_pb2_grpc as api_grpc  # noqa: E402
from ember.v1 import vm_config_pb2 as cfg  # noqa: E402

SKIP = 77  # CTest SKIP_RETURN_CODE


def require_kvm():
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("SKIPPED: /dev/kvm is missing or not usable")
        sys.exit(SKIP)


def config(scenario="idle", mem=32):
    c = cfg.VmConfig()
    c.boot_source.boot_args = f"console=ttyS0 ember.test={scenario}"
    c.machine_config.mem_size_mib = mem
    return c


def proc_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pool_slots(emberd_pid):
    """Live ember-vmm --pool-slot children of emberd (its VMM pool's slots, idle or taken:
    a taken one keeps its command line)."""
    slots = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if int(fields[1]) == emberd_pid and fields[0] != "Z" and b"\0--pool-slot\0" in cmdline:
            slots.append(int(entry))
    return sorted(slots)


class Emberd:
    """One emberd process over a scratch state directory; restartable."""

    # Where the tests keep the files they name in requests (their scratch directories under
    # the temporary directory, and /dev/shm for another filesystem): emberd --allow-dir.
    TEST_ALLOW_DIRS = (tempfile.gettempdir(), "/dev/shm")

    def __init__(self, max_vms=None, binary=None, extra_args=(), allow_dirs=TEST_ALLOW_DIRS,
                 **popen_args):
        """binary: another emberd build (e.g. emberd-test-hooks); extra_args: more flags;
        allow_dirs: emberd's --allow-dir list; popen_args: passed on to subprocess.Popen (env,
        pass_fds)."""
        self.dir = tempfile.mkdtemp(prefix="ember-e2e-")
        self.socket = os.path.join(self.dir, "emberd.sock")
        self.state_dir = os.path.join(self.dir, "state")
        self.max_vms = max_vms
        self.binary = binary or os.path.join(BUILD_DIR, "bin", "emberd")
        self.extra_args = [a for d in allow_dirs for a in ("--allow-dir", d)] + list(extra_args)
        self.popen_args = popen_args
        self.proc = None
        self.log = None
        self.start()

    def start(self, timeout=10):
        """timeout: seconds until emberd listens (its recovery of VMs comes first)."""
        args = [self.binary, "--socket", self.socket, "--state-dir", self.state_dir]
        if self.max_vms:
            args += ["--max-vms", str(self.max_vms)]
        args += self.extra_args
        self.log = open(os.path.join(self.dir, "emberd.log"), "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log, **self.popen_args)
        deadline = time.time() + timeout
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("emberd did not start: " + self.read_log())
            time.sleep(0.02)
        self.channel = grpc.insecure_channel("unix://" + self.socket)
        grpc.channel_ready_future(self.channel).result(timeout=timeout)
        self.stub = api_grpc.EmberStub(self.channel)

    def read_log(self):
        with open(os.path.join(self.dir, "emberd.log"), errors="replace") as f:
            return f.read()

    def kill9(self):
        self.channel.close()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def close(self):
        # Stop every VM still running so none outlives the test.
        try:
            for vm in self.stub.List(api.ListRequest(), timeout=10).vms:
                if vm.state != api.Vm.STOPPED:
                    self.stub.Stop(api.StopRequest(vm_id=vm.vm_id), timeout=20)
        except grpc.RpcError:
            pass
        self.channel.close()
        self.proc.terminate()
        self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
