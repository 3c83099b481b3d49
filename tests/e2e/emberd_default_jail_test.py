"""emberd's default jail: with no jail flags at all, each ember-vmm runs through ember-jailer
(another uid and gid, no capabilities, NoNewPrivs, its own seccomp filter, new mount, pid, ipc,
uts and network namespaces, only the device nodes it uses, bounded file sizes). --no-jail runs
it unjailed and says so; even then a VMM gets none of the fds emberd's parent left open.
Needs root and /dev/kvm."""
import os
import shutil
import subprocess
import tempfile
import time
import unittest

import ember_unittest
import ember_client as ec
from ember_client import api
from emberd_test import VmChecks

# The default range: each VM one of 830001 ... 830000 + 65536; 830000 is the snapshot group.
DEFAULT_ID_BASE = 830000
DEFAULT_JAIL_ID = str(DEFAULT_ID_BASE + 1)  # a fresh emberd's first VM's


def status_of(pid):
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, v in (line.split(":", 1) for line in f if ":" in line)}


def limits_of(pid):
    with open(f"/proc/{pid}/limits") as f:
        return {line[:26].strip(): line[26:].split()[0] for line in f.readlines()[1:]}


def children_of(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


class EmberdDefaultJailTest(VmChecks, unittest.TestCase):
    def setUp(self):
        self.emberd = None

    def tearDown(self):
        if self.emberd:
            self.emberd.close()

    def start_vm(self, vm_id, config=None):
        stub = self.emberd.stub
        vm = stub.Create(api.CreateRequest(vm_id=vm_id, config=config or ec.config("idle")),
                         timeout=30)
        self.assertEqual(stub.Start(api.VmRequest(vm_id=vm_id), timeout=30).state,
                         api.Vm.RUNNING)
        return vm

    def jailed_vmm(self, supervised_pid):
        """The ember-vmm under the jailer's stand-in (pid 1 of its own pid namespace), once
        it has installed its seccomp filter (after Start)."""
        deadline = time.time() + 30
        while True:
            children = children_of(supervised_pid)
            if children and status_of(children[0]).get("Seccomp") == "2":
                return children[0]
            self.assertLess(time.time(), deadline, f"no filtered ember-vmm under {supervised_pid}")
            time.sleep(0.05)

    def test_a_vmm_of_an_emberd_with_no_jail_flags_has_another_uid_and_no_capabilities(self):
        self.emberd = ec.Emberd()
        vm = self.start_vm("plain-1")
        pid = self.jailed_vmm(vm.pid)
        self.assertEqual(os.path.basename(os.readlink(f"/proc/{pid}/exe")), "ember-vmm")
        status = status_of(pid)
        self.assertEqual(status["Uid"].split(), [DEFAULT_JAIL_ID] * 4)
        self.assertEqual(status["Gid"].split(), [DEFAULT_JAIL_ID] * 4)
        self.assertEqual(status["Groups"], "")
        for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            self.assertEqual(int(status[caps], 16), 0, caps)
        self.assertEqual(status["NoNewPrivs"], "1")
        self.assertEqual(status["Seccomp"], "2")
        # The stand-in emberd supervises holds nothing either.
        stand_in = status_of(vm.pid)
        self.assertEqual(stand_in["Uid"].split(), [DEFAULT_JAIL_ID] * 4)
        self.assertEqual(int(stand_in["CapEff"], 16), 0)

    def test_two_vmms_of_an_emberd_with_no_jail_flags_have_uids_and_gids_of_their_own(self):
        self.emberd = ec.Emberd()
        ids = []
        for vm_id in ("own-1", "own-2"):
            status = status_of(self.jailed_vmm(self.start_vm(vm_id).pid))
            uid = status["Uid"].split()[0]
            self.assertEqual(status["Uid"].split(), [uid] * 4)
            self.assertEqual(status["Gid"].split(), [uid] * 4)
            self.assertEqual(status["Groups"], "")
            ids.append(int(uid))
        self.assertNotEqual(ids[0], ids[1])
        for uid in ids:
            self.assertIn(uid, range(DEFAULT_ID_BASE + 1, DEFAULT_ID_BASE + 65537))

    def test_a_vmm_of_an_emberd_with_no_jail_flags_has_its_own_namespaces(self):
        self.emberd = ec.Emberd()
        vm = self.start_vm("plain-2")
        pid = self.jailed_vmm(vm.pid)
        emberd = self.emberd.proc.pid
        for ns in ("mnt", "pid", "ipc", "uts", "net"):
            self.assertNotEqual(os.readlink(f"/proc/{pid}/ns/{ns}"),
                                os.readlink(f"/proc/{emberd}/ns/{ns}"), ns)
        # pid 1 of its namespace; its network namespace has no interface of the host's.
        self.assertEqual(status_of(pid)["NSpid"].split()[-1], "1")
        with open(f"/proc/{pid}/net/dev") as f:
            interfaces = [line.split(":")[0].strip() for line in f.readlines()[2:]]
        self.assertEqual(interfaces, ["lo"])

    def test_the_jail_has_only_the_device_nodes_the_vm_uses_and_bounded_files(self):
        self.emberd = ec.Emberd()
        vm = self.start_vm("plain-3")
        pid = self.jailed_vmm(vm.pid)
        root = f"/proc/{pid}/root"
        self.assertEqual(sorted(os.listdir(f"{root}/dev")), ["kvm", "net"])
        self.assertEqual(os.listdir(f"{root}/dev/net"), [])  # no tun without a net device
        limits = limits_of(pid)
        self.assertEqual(limits["Max file size"], str((32 + 64) * 1024 * 1024))
        self.assertEqual(limits["Max open files"], "2048")

    def test_no_jail_is_loud_at_start_up_and_in_each_vms_record(self):
        self.emberd = ec.Emberd(extra_args=["--no-jail"])
        self.assertRegex(self.emberd.read_log(), r"WARN.*--no-jail.*UNJAILED")
        vm = self.start_vm("loose-1")
        self.assertEqual(status_of(vm.pid)["Uid"].split()[0], "0")  # as it says: unjailed
        unjailed = os.path.join(self.emberd.state_dir, "vms", "loose-1", "UNJAILED")
        with open(unjailed) as f:
            self.assertIn("--no-jail", f.read())
        self.assertRegex(self.emberd.read_log(), r"WARN.*\"loose-1\" runs UNJAILED")

    def test_an_unjailed_vmm_gets_none_of_the_fds_emberds_parent_left_open(self):
        scratch = tempfile.mkdtemp(prefix="ember-e2e-fds-")
        self.addCleanup(shutil.rmtree, scratch, ignore_errors=True)
        marker = os.path.join(scratch, "emberds-parent-fd")
        opened = os.open(marker, os.O_RDWR | os.O_CREAT, 0o600)
        # Far above the fds a VMM is given (3 is its control socket, which would replace it).
        fd = os.dup2(opened, 50, inheritable=False)  # not close-on-exec once passed
        os.close(opened)
        self.addCleanup(os.close, fd)
        self.emberd = ec.Emberd(extra_args=["--no-jail"], pass_fds=(fd,))
        emberd_fds = [os.readlink(f"/proc/{self.emberd.proc.pid}/fd/{n}")
                      for n in os.listdir(f"/proc/{self.emberd.proc.pid}/fd")]
        self.assertIn(marker, emberd_fds)  # emberd itself did inherit it
        vm = self.start_vm("loose-2")
        vmm_fds = {}
        for n in os.listdir(f"/proc/{vm.pid}/fd"):
            try:
                vmm_fds[int(n)] = os.readlink(f"/proc/{vm.pid}/fd/{n}")
            except FileNotFoundError:
                pass
        self.assertNotIn(marker, vmm_fds.values())



class JailIdRangeStartUpTest(unittest.TestCase):
    def start(self, *flags):
        scratch = tempfile.mkdtemp(prefix="ember-e2e-jail-ids-")
        self.addCleanup(shutil.rmtree, scratch, True)
        return subprocess.run(
            [os.path.join(ec.BUILD_DIR, "bin", "emberd"),
             "--socket", os.path.join(scratch, "emberd.sock"),
             "--state-dir", os.path.join(scratch, "state"), *flags],
            capture_output=True, text=True, timeout=30)

    def test_an_id_range_ending_past_the_largest_uid_is_refused_at_start_up(self):
        # 4294967295 is (uid_t)-1, "no change" to setresuid: no jailed VM may get it.
        for base, count in ((4294967000, 1000), (4294967295, 4294967295), (4294901760, 65535)):
            result = self.start("--jailer-id-base", str(base), "--jailer-id-count", str(count))
            self.assertEqual(result.returncode, 2, result.stderr)
            self.assertIn("--jailer-id-base + --jailer-id-count: ids end at "
                          f"{base + count}, past the largest uid 4294967294", result.stderr)

if __name__ == "__main__":
    ec.require_kvm()
    if os.geteuid() != 0:
        print("SKIPPED: the default jail needs root")
        raise SystemExit(ec.SKIP)
    ember_unittest.main()
