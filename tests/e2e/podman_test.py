"""podman drives ember-runtime (`podman --runtime`): podman and conmon as a user runs them, with
storage, run and temporary directories of the test's own, ember-runtime, a microVM per
container and the test guest's agent as the container's process. Nothing is left after a case.

podman's defaults ask for rlimits above this sandbox's hard limits (RLIMIT_NOFILE 20000 hard,
RLIMIT_NPROC its own), which runc and ember-runtime alike must refuse to raise: the test's
containers.conf asks for less."""

import os
import shutil
import subprocess
import tempfile
import unittest

import oci_runtime_support as oci
import ember_unittest


class PodmanTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        reason = oci.missing_prerequisite("podman", "runc")
        if reason:
            raise unittest.SkipTest(reason)
        oci.lo_up()
        cls.base = tempfile.mkdtemp(prefix="ember-podman-test-")
        cls.runtime_config = oci.write_runtime_config(os.path.join(cls.base, "runtime.json"),
                                                      cls.base)
        conf = os.path.join(cls.base, "containers.conf")
        with open(conf, "w") as f:
            f.write('[containers]\n'
                    'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
                    '[engine]\n'
                    'cgroup_manager = "cgroupfs"\n'
                    'events_logger = "file"\n'
                    f'tmp_dir = "{cls.base}/tmp"\n')
        cls.env = dict(os.environ, CONTAINERS_CONF=conf)
        cls.podman_args = ["podman", "--root", os.path.join(cls.base, "storage"),
                           "--runroot", os.path.join(cls.base, "run"),
                           "--storage-driver", "overlay"]
        cls.caller_cgroups = oci.CallerCgroups("libpod_parent")
        archive = oci.write_busybox_archive(os.path.join(cls.base, "busybox.tar"))
        cls.podman("load", "--input", archive, check=True)
        cls.serial = 0

    @classmethod
    def tearDownClass(cls):
        if hasattr(cls, "base"):
            cls.podman("system", "reset", "--force")
            cls.caller_cgroups.remove_new()
            subprocess.run(["umount", "-R", "--lazy", cls.base], stderr=subprocess.DEVNULL)
            shutil.rmtree(cls.base, ignore_errors=True)

    @classmethod
    def podman(cls, *args, **kwargs):
        return oci.run(cls.podman_args + list(args), env=cls.env, **kwargs)

    def setUp(self):
        PodmanTest.serial += 1
        self.name = f"ember-podman-{os.getpid()}-{PodmanTest.serial}"
        self.leaks = oci.LeakCheck(self.base, [self.name, self.base])

    def tearDown(self):
        self.assertEqual({}, self.leaks.leaks(), f"left behind by {self.name}")

    def ember_args(self):
        """podman's flags for ember-runtime. podman passes on none of its environment to the
        runtime, so the runtime's config goes as its global --config flag (which podman gives
        every command but `delete`: the image lease's id names its cache)."""
        return ["--runtime", oci.RUNTIME, "--runtime-flag", "config=" + self.runtime_config]

    def run_container(self, runtime, *command):
        runtime_args = self.ember_args() if runtime == oci.RUNTIME else ["--runtime", runtime]
        return self.podman(*runtime_args, "run", "--rm", "--name", self.name,
                           "--network", "none", oci.IMAGE_NAME, *command)

    def assert_no_container(self):
        listed = self.podman("ps", "--all", "--format", "{{.Names}}", check=True).stdout
        self.assertNotIn(self.name, listed)

    def test_harness_runs_the_image_with_runc(self):
        result = self.run_container("runc", "echo", "hello")
        self.assertEqual((result.returncode, result.stdout), (0, "hello\n"), result.stderr)

    def test_echo_prints_hello(self):
        result = self.run_container(oci.RUNTIME, "echo", "hello")
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual("hello\n", result.stdout)
        self.assert_no_container()
        # The runtime read the test's config (through conmon's environment): its image is in
        # the test's cache.
        images = os.listdir(os.path.join(self.base, "image-cache", "images"))
        self.assertTrue([name for name in images if name.endswith(".ext4")], images)

    def test_exit_status_is_the_workloads(self):
        result = self.run_container(oci.RUNTIME, "exit", "7")
        self.assertEqual(7, result.returncode, result.stdout + result.stderr)
        self.assert_no_container()

    def test_exec_and_stop_a_detached_container(self):
        started = self.podman(*self.ember_args(), "run", "--detach", "--name", self.name,
                              "--network", "none", oci.IMAGE_NAME, "sleep", "infinity")
        self.assertEqual(0, started.returncode, started.stderr)
        self.addCleanup(self.podman, "rm", "--force", self.name)
        executed = self.podman("exec", self.name, "echo", "from", "exec")
        self.assertEqual((executed.returncode, executed.stdout), (0, "from exec\n"),
                         executed.stderr)
        # SIGTERM through the agent ends the test guest's `sleep infinity`.
        self.podman("stop", "--time", "60", self.name, check=True)
        code = self.podman("inspect", "--format", "{{.State.ExitCode}}", self.name, check=True)
        self.assertEqual("143", code.stdout.strip())
        self.podman("rm", self.name, check=True)
        self.assert_no_container()


if __name__ == "__main__":
    oci.enter_private_namespaces()
    ember_unittest.main()
