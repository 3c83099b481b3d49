"""What emberd's API lets a client reach (issue 21, item 3), through the real gRPC API with
fake_vmm.py as the VMM (the refusals happen in emberd, before any VMM): host paths only under
--allow-dir, and emberd's records read only from its own state directory."""
import json
import os
import shutil
import tempfile
import unittest

import grpc
from google.protobuf import json_format

import ember_unittest
import ember_client as ec
from ember_client import api

FAKE_VMM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_vmm.py")


def code_of(call, request):
    try:
        call(request, timeout=30)
    except grpc.RpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


def planted_snapshot(stub, allowed):
    """Snapshots a new paused VM "src" into <allowed>/snap and copies its files into
    <allowed>/planted, where emberd has no record of them; returns the copy's state path."""
    stub.Create(api.CreateRequest(vm_id="src", config=ec.config()), timeout=30)
    stub.Start(api.VmRequest(vm_id="src"), timeout=30)
    stub.Pause(api.VmRequest(vm_id="src"), timeout=30)
    snapshot = stub.CreateSnapshot(api.CreateSnapshotRequest(
        vm_id="src", snapshot_dir=os.path.join(allowed, "snap")), timeout=30)
    planted = os.path.join(allowed, "planted")
    os.makedirs(planted)
    shutil.copy(snapshot.memory_path, os.path.join(planted, "memory"))
    return shutil.copy(snapshot.state_path, os.path.join(planted, "state"))


class AllowedDirsTest(unittest.TestCase):
    def setUp(self):
        self.scratch = tempfile.mkdtemp(prefix="ember-e2e-api-")
        self.addCleanup(shutil.rmtree, self.scratch, True)
        self.allowed = os.path.join(self.scratch, "allowed")
        os.makedirs(self.allowed)
        # A root-only file outside the allowed directory (as /etc/shadow is).
        self.secret = os.path.join(self.scratch, "secret")
        with open(self.secret, "w") as f:
            f.write("root only\n")
        os.chmod(self.secret, 0o600)
        self.emberd = ec.Emberd(extra_args=["--no-jail", "--vmm", FAKE_VMM], allow_dirs=[self.allowed])
        self.addCleanup(self.emberd.close)
        self.stub = self.emberd.stub

    def assert_refused(self, call, request, field):
        code, details = code_of(call, request)
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, details)
        self.assertIn(field, details)
        self.assertIn("--allow-dir: " + self.allowed, details)
        with open(self.secret) as f:
            self.assertEqual(f.read(), "root only\n")

    def test_a_drive_on_a_root_only_file_outside_the_allowed_dirs_is_refused(self):
        config = ec.config()
        config.drives.add(drive_id="root", path_on_host=self.secret)
        self.assert_refused(self.stub.Create, api.CreateRequest(vm_id="x", config=config),
                            "config.drives[0].path_on_host")
        self.assertEqual(code_of(self.stub.Get, api.VmRequest(vm_id="x"))[0],
                         grpc.StatusCode.NOT_FOUND)

    def test_a_symlink_in_an_allowed_dir_to_a_file_outside_is_refused(self):
        link = os.path.join(self.allowed, "disk.img")
        os.symlink(os.path.relpath(self.secret, self.allowed), link)
        config = ec.config()
        config.drives.add(drive_id="root", path_on_host=link)
        self.assert_refused(self.stub.Create, api.CreateRequest(vm_id="x", config=config),
                            "config.drives[0].path_on_host")

    def test_a_drive_inside_the_allowed_dir_is_accepted(self):
        image = os.path.join(self.allowed, "disk.img")
        with open(image, "wb") as f:
            f.truncate(1 << 20)
        config = ec.config()
        config.drives.add(drive_id="root", path_on_host=image)
        vm = self.stub.Create(api.CreateRequest(vm_id="ok", config=config), timeout=30)
        self.assertEqual(vm.state, api.Vm.CREATED)

    def test_log_metrics_and_vsock_paths_outside_are_refused(self):
        for field, setter in (
                ("config.logger.log_path", lambda c: setattr(c.logger, "log_path", self.secret)),
                ("config.metrics.metrics_path",
                 lambda c: setattr(c.metrics, "metrics_path", self.secret)),
                # A vsock the config rules accept, so that only its path is at fault.
                ("config.vsock.uds_path", lambda c: c.vsock.MergeFrom(
                    ec.cfg.Vsock(vsock_id="v", guest_cid=3, uds_path=self.secret))),
                ("config.boot-source.kernel_image_path",
                 lambda c: setattr(c.boot_source, "kernel_image_path", self.secret))):
            config = ec.config()
            setter(config)
            self.assert_refused(self.stub.Create, api.CreateRequest(vm_id="x", config=config),
                                field)

    def test_snapshot_dir_and_restore_paths_outside_are_refused(self):
        self.stub.Create(api.CreateRequest(vm_id="src", config=ec.config()), timeout=30)
        self.stub.Start(api.VmRequest(vm_id="src"), timeout=30)
        self.stub.Pause(api.VmRequest(vm_id="src"), timeout=30)
        self.assert_refused(self.stub.CreateSnapshot, api.CreateSnapshotRequest(
            vm_id="src", snapshot_dir=os.path.join(self.scratch, "snap")), "snapshot_dir")
        self.assertFalse(os.path.exists(os.path.join(self.scratch, "snap")))
        self.assert_refused(self.stub.Restore, api.RestoreRequest(
            state_path=self.secret, vm_id_prefix="c"), "state_path")
        inside = os.path.join(self.allowed, "state")
        self.assert_refused(self.stub.Restore, api.RestoreRequest(
            state_path=inside, memory_path=self.secret, vm_id_prefix="c"), "memory_path")
        snapshot = self.stub.CreateSnapshot(api.CreateSnapshotRequest(
            vm_id="src", snapshot_dir=os.path.join(self.allowed, "snap")), timeout=30)
        overrides = api.RestoreOverrides()
        overrides.drive_path_on_host["root"] = self.secret
        self.assert_refused(self.stub.Restore, api.RestoreRequest(
            snapshot_id=snapshot.snapshot_id, vm_id_prefix="c", overrides=[overrides]),
            "overrides[0].drive_path_on_host[root]")
        overrides = api.RestoreOverrides(vsock_uds_path=os.path.join(self.scratch, "v.sock"))
        self.assert_refused(self.stub.Restore, api.RestoreRequest(
            snapshot_id=snapshot.snapshot_id, vm_id_prefix="c", overrides=[overrides]),
            "overrides[0].vsock_uds_path")


    def test_restore_by_state_path_ignores_records_planted_beside_the_state_file(self):
        state = planted_snapshot(self.stub, self.allowed)
        planted = os.path.dirname(state)
        # What emberd keeps in its own record directory, written by a caller instead: a
        # configuration whose drive is a root-only file outside the allowed directories.
        lure = ec.config()
        lure.drives.add(drive_id="root", path_on_host=self.secret)
        with open(os.path.join(planted, "vm_config.json"), "w") as f:
            f.write(json_format.MessageToJson(lure))
        with open(os.path.join(planted, "jail-bases"), "w") as f:
            f.write("base.mem " + self.secret + "\n")
        clone = self.stub.Restore(api.RestoreRequest(state_path=state, vm_id_prefix="c"),
                                  timeout=30).vms[0]
        self.assertEqual(clone.state, api.Vm.PAUSED)
        self.assertEqual(list(clone.config.drives), [])
        self.assertEqual(list(self.stub.Get(api.VmRequest(vm_id="c-0"), timeout=30)
                              .config.drives), [])


class StateFileDirsTest(unittest.TestCase):
    """The host files a restore by state_path may reach are the client's own: the VMM that
    restores a state file a client names accepts the drive and vsock paths in it only under the
    client's --allow-dir, never under emberd's own directories: its function images
    (STATE/fn-images), which every clone of a function attaches (a crafted state file could
    name one as a writable drive), or its functions' directory (STATE/fn)."""

    def setUp(self):
        self.scratch = tempfile.mkdtemp(prefix="ember-e2e-api-")
        self.addCleanup(shutil.rmtree, self.scratch, True)
        self.allowed = os.path.join(self.scratch, "allowed")
        os.makedirs(self.allowed)
        self.argv_log = os.path.join(self.scratch, "argv")
        self.emberd = ec.Emberd(extra_args=["--no-jail", "--vmm", FAKE_VMM],
                                allow_dirs=[self.allowed],
                                env=dict(os.environ, FAKE_VMM_ARGV_LOG=self.argv_log))
        self.addCleanup(self.emberd.close)
        self.stub = self.emberd.stub

    def last_argv(self):
        with open(self.argv_log) as f:
            return [json.loads(line) for line in f][-1]

    def test_a_restore_by_state_path_lets_the_vmm_accept_paths_only_under_the_clients_dirs(self):
        # A copy emberd has no record of: what its state file names decides the clone's files.
        state = planted_snapshot(self.stub, self.allowed)
        self.stub.Restore(api.RestoreRequest(state_path=state, vm_id_prefix="c"), timeout=30)
        argv = self.last_argv()
        allowed = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--allow-dir"]
        self.assertEqual(allowed, [self.allowed])
        self.assertTrue(os.path.isdir(os.path.join(self.emberd.state_dir, "fn-images")))


if __name__ == "__main__":
    ember_unittest.main()
