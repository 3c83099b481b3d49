"""emberd driving a stand-in VMM (fake_vmm.py: the control protocol only, no KVM): what emberd
does when the VMM binary is a script with no --help."""
import json
import os
import unittest

import ember_client as ec
from ember_client import api

FAKE_VMM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_vmm.py")


class FakeVmmTest(unittest.TestCase):
    def setUp(self):
        self.emberd = None

    def tearDown(self):
        if self.emberd:
            self.emberd.close()

    def start_emberd(self, **fake_env):
        env = dict(os.environ, **{k: str(v) for k, v in fake_env.items()})
        self.emberd = ec.Emberd(extra_args=["--vmm", FAKE_VMM], env=env)
        self.stub = self.emberd.stub

    def paused_vm(self, vm_id, config=None):
        self.stub.Create(api.CreateRequest(vm_id=vm_id, config=config or ec.config()), timeout=30)
        self.stub.Start(api.VmRequest(vm_id=vm_id), timeout=30)
        self.stub.Pause(api.VmRequest(vm_id=vm_id), timeout=30)

    def test_restore_and_overrides_need_no_help_text_from_the_vmm(self):
        argv_log = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"fake-vmm-argv-{os.getpid()}")
        self.addCleanup(lambda: os.path.exists(argv_log) and os.unlink(argv_log))
        self.start_emberd(FAKE_VMM_ARGV_LOG=argv_log)
        config = ec.config()
        net = config.network_interfaces.add()
        net.iface_id = "eth0"
        net.host_dev_name = "tap-src"
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
        for flag, value in (("--restore-from", snapshot.state_path),
                            ("--net-override", "eth0=tap-clone"),
                            ("--vsock-override", "/tmp/clone.vsock")):
            self.assertEqual(clone_argv[clone_argv.index(flag) + 1], value)


if __name__ == "__main__":
    unittest.main()
