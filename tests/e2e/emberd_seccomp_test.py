"""emberd's own seccomp filter (jailer/emberd_seccomp.cc) on a live emberd: every thread is
filtered, ember-vmm is spawned outside it (the fork server), a forbidden call ends emberd with
SIGSYS, log mode lets it live, and off installs nothing. The forbidden call comes from
emberd-test-hooks, an emberd built with a test-only hook (tests/e2e/CMakeLists.txt). Needs
/dev/kvm for the VM it boots."""
import os
import signal
import time
import unittest

import ember_unittest
import ember_client as ec
from ember_client import api

HOOKS = os.path.join(ec.BUILD_DIR, "tests", "emberd-test-hooks")
VMM = os.path.join(ec.BUILD_DIR, "bin", "ember-vmm")


def status_fields(path):
    fields = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def thread_seccomp(pid):
    """{tid: (Seccomp mode, number of filters)} of every thread of pid."""
    result = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        fields = status_fields(f"/proc/{pid}/task/{tid}/status")
        result[int(tid)] = (int(fields["Seccomp"]), int(fields["Seccomp_filters"]))
    return result


def children_of(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(status_fields(f"/proc/{entry}/status")["PPid"]) == pid:
                    found.append(int(entry))
            except (FileNotFoundError, KeyError, ProcessLookupError):
                pass
    return found


def wait_for_log(emberd, text, timeout=10):
    deadline = time.time() + timeout
    while text not in emberd.read_log():
        if time.time() > deadline:
            raise AssertionError(f"{text!r} not in emberd's log:\n{emberd.read_log()}")
        time.sleep(0.02)


class EmberdSeccompTest(unittest.TestCase):
    def setUp(self):
        self.emberd = None

    def tearDown(self):
        if self.emberd:
            self.emberd.close()

    def start_hooked(self, mode):
        """emberd-test-hooks in `mode`; returns the pipe end that triggers the forbidden call."""
        read_end, write_end = os.pipe()
        env = dict(os.environ, EMBERD_TEST_HOOK_FD=str(read_end))
        self.emberd = ec.Emberd(binary=HOOKS, extra_args=["--no-jail", "--vmm", VMM, "--seccomp", mode],
                                env=env, pass_fds=[read_end])
        os.close(read_end)
        return write_end

    def boot_vm(self, vm_id):
        stub = self.emberd.stub
        vm = stub.Create(api.CreateRequest(vm_id=vm_id, config=ec.config("idle")), timeout=30)
        stub.Start(api.VmRequest(vm_id=vm_id), timeout=30)
        return vm.pid

    def test_every_emberd_thread_is_filtered_after_serving_a_vm(self):
        self.emberd = ec.Emberd()
        self.boot_vm("filtered")
        threads = thread_seccomp(self.emberd.proc.pid)
        self.assertGreater(len(threads), 2)  # main, supervisor, gRPC's
        for tid, (mode, filters) in threads.items():
            self.assertEqual((mode, filters), (2, 1), f"emberd thread {tid}")
        self.assertIn('seccomp filter "emberd"', self.emberd.read_log())

    def test_ember_vmm_is_emberds_child_but_outside_its_filter(self):
        # Unjailed, so that emberd's child is ember-vmm itself, not the jailer's stand-in.
        self.emberd = ec.Emberd(extra_args=["--no-jail"])
        emberd_pid = self.emberd.proc.pid
        vmm_pid = self.boot_vm("outside")
        # The fork server's middle process exits and emberd (a subreaper) adopts ember-vmm.
        self.assertEqual(int(status_fields(f"/proc/{vmm_pid}/status")["PPid"]), emberd_pid)
        # The helpers forked before the filter: the fork server, the Functions' rootfs builder
        # and (root) their clone network server; none has emberd's filter.
        helpers = [p for p in children_of(emberd_pid) if p != vmm_pid]
        rootfs_builder = os.access(os.path.join(ec.BUILD_DIR, "bin", "ember-rootfs"), os.X_OK)
        self.assertEqual(len(helpers), 1 + rootfs_builder + (os.geteuid() == 0), helpers)
        for helper in helpers:
            self.assertEqual(thread_seccomp(helper), {helper: (0, 0)})
        # ember-vmm's VMM thread runs its own filter only; inheriting emberd's would make two.
        self.assertEqual(thread_seccomp(vmm_pid)[vmm_pid], (2, 1))

    def test_forbidden_syscall_kills_emberd_with_sigsys(self):
        trigger = self.start_hooked("enforce")
        vmm_pid = self.boot_vm("victim")  # the filter has been in force while serving
        # A dead emberd cannot stop its VM; the VM has its own session and would outlive us.
        self.addCleanup(os.kill, vmm_pid, signal.SIGKILL)
        os.write(trigger, b"x")
        os.close(trigger)
        self.assertEqual(self.emberd.proc.wait(timeout=10), -signal.SIGSYS)

    def test_log_mode_lets_the_forbidden_syscall_run_and_emberd_serve_on(self):
        trigger = self.start_hooked("log")
        self.assertIn("LOG mode", self.emberd.read_log())
        os.write(trigger, b"x")
        os.close(trigger)
        wait_for_log(self.emberd, "socket(AF_NETLINK) returned")
        self.assertIsNone(self.emberd.proc.poll())
        self.boot_vm("survivor")
        names = [vm.vm_id for vm in self.emberd.stub.List(api.ListRequest(), timeout=10).vms]
        self.assertEqual(names, ["survivor"])

    def test_off_installs_no_filter_and_says_so(self):
        self.emberd = ec.Emberd(extra_args=["--seccomp", "off"])
        for tid, (mode, _) in thread_seccomp(self.emberd.proc.pid).items():
            self.assertEqual(mode, 0, f"emberd thread {tid}")
        self.assertIn("seccomp filter is OFF", self.emberd.read_log())


if __name__ == "__main__":
    ec.require_kvm()
    ember_unittest.main()
