"""containerd drives ember-runtime as its runc (`ctr run --runc-binary`): a real containerd of
the test's own, the runc v2 shim, ember-runtime, an Ember microVM per container and the agent
protocol over virtio-vsock. The container's process is the test guest's agent (builtins echo,
cat, exit N): no Linux guest runs on these machines. After each case nothing is left: no
process, mount, network link, cgroup or image lease of the test's."""

import os
import shlex
import shutil
import subprocess
import tempfile
import time
import unittest

import oci_runtime_support as oci
import ember_unittest


class ContainerdTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        reason = oci.missing_prerequisite("containerd", "ctr", "runc")
        if reason:
            raise unittest.SkipTest(reason)
        oci.lo_up()
        cls.base = tempfile.mkdtemp(prefix="ember-containerd-test-")
        cls.caller_cgroups = oci.CallerCgroups(oci.Containerd.NAMESPACE)
        cls.runtime_config = oci.write_runtime_config(os.path.join(cls.base, "runtime.json"),
                                                      cls.base)
        cls.containerd = oci.Containerd(cls.base, cls.runtime_config)
        archive = oci.write_busybox_archive(os.path.join(cls.base, "busybox.tar"))
        cls.containerd.ctr("image", "import", archive, check=True)
        cls.serial = 0

    @classmethod
    def tearDownClass(cls):
        if hasattr(cls, "containerd"):
            cls.containerd.stop()
        if hasattr(cls, "base"):
            # containerd is gone; a mount left under the test's directory (already reported
            # as a leak by the case) must not take the removal onto the snapshots beneath it.
            subprocess.run(["umount", "-R", "--lazy", cls.base], stderr=subprocess.DEVNULL)
            shutil.rmtree(cls.base, ignore_errors=True)
            cls.caller_cgroups.remove_new()

    def setUp(self):
        ContainerdTest.serial += 1
        self.id = f"ember-ctr-{os.getpid()}-{ContainerdTest.serial}"
        self.leaks = oci.LeakCheck(self.base, [self.id, self.base])

    def tearDown(self):
        self.assertEqual({}, self.leaks.leaks(), f"left behind by {self.id}")

    def ember_run(self, *command, annotations=(), **kwargs):
        return oci.run(self.containerd.run_args(oci.RUNTIME, self.id, *command,
                                                annotations=annotations), **kwargs)

    def assert_no_container(self):
        tasks = self.containerd.ctr("task", "ls", check=True).stdout
        containers = self.containerd.ctr("containers", "ls", "-q", check=True).stdout
        self.assertNotIn(self.id, tasks)
        self.assertNotIn(self.id, containers)

    def test_harness_runs_the_image_with_runc(self):
        # The image, containerd and the leak accounting, proven with the runtime they were
        # made for: a failure here is the harness's, not ember-runtime's.
        result = oci.run(self.containerd.run_args("runc", self.id, "echo", "hello"))
        self.assertEqual((result.returncode, result.stdout), (0, "hello\n"), result.stderr)

    def test_echo_prints_hello(self):
        result = self.ember_run("echo", "hello")
        self.assertEqual(0, result.returncode, result.stderr + self.containerd.read_log())
        self.assertEqual("hello\n", result.stdout)
        self.assert_no_container()

    def test_exit_status_is_the_workloads(self):
        result = self.ember_run("exit", "7")
        self.assertEqual(7, result.returncode, result.stdout + result.stderr)
        self.assert_no_container()

    def test_terminal_run_prints_through_the_console_socket(self):
        # ctr run --tty needs a terminal of its own: script(1) gives it one. The shim passes
        # --console-socket and reads create's output until it closes.
        args = self.containerd.run_args(oci.RUNTIME, self.id, "echo", "over", "a", "tty",
                                        extra=["--tty"])
        result = oci.run(["script", "--quiet", "--return", "--command", shlex.join(args),
                          "/dev/null"], stdin=subprocess.PIPE)
        self.assertEqual(0, result.returncode, result.stdout + result.stderr)
        self.assertIn("over a tty", result.stdout)
        self.assert_no_container()

    def test_second_container_of_an_image_reuses_its_image(self):
        for _ in range(2):
            self.assertEqual(0, self.ember_run("echo", "again").returncode)
        images = os.listdir(os.path.join(self.base, "image-cache", "images"))
        self.assertEqual(1, len([name for name in images if name.endswith(".ext4")]), images)

    def start_running(self, *command):
        """`ctr run` of `command` in the background, once its task is RUNNING."""
        client = subprocess.Popen(self.containerd.run_args(oci.RUNTIME, self.id, *command),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self.addCleanup(self.end_client, client)
        deadline = time.monotonic() + oci.COMMAND_TIMEOUT
        while "RUNNING" not in self.task_status():
            if client.poll() is not None:
                self.fail("ctr run ended before it ran: " + client.communicate()[1])
            self.assertLess(time.monotonic(), deadline, "the container never ran")
            time.sleep(0.2)
        return client

    @staticmethod
    def end_client(client):
        if client.poll() is None:
            client.kill()
        client.communicate()

    def test_task_kill_ends_a_running_container(self):
        # The test guest's `sleep infinity` runs until a signal reaches it through the agent.
        client = self.start_running("sleep", "infinity")
        self.containerd.ctr("task", "kill", self.id, check=True)  # SIGTERM
        out, err = client.communicate(timeout=oci.COMMAND_TIMEOUT)
        self.assertEqual(128 + 15, client.returncode, err)
        self.assert_no_container()

    def test_task_kill_with_sigkill_ends_the_vm(self):
        client = self.start_running("sleep", "infinity")
        self.containerd.ctr("task", "kill", "--signal", "SIGKILL", self.id, check=True)
        out, err = client.communicate(timeout=oci.COMMAND_TIMEOUT)
        self.assertEqual(128 + 9, client.returncode, err)
        self.assert_no_container()

    def test_task_exec_runs_a_process_in_a_running_container(self):
        # `cat` with an open stdin runs until its input ends: a container that keeps running.
        client = self.start_running("cat")
        result = self.containerd.ctr("task", "exec", "--exec-id", "probe", self.id,
                                     "echo", "from", "exec")
        self.assertEqual((result.returncode, result.stdout), (0, "from exec\n"), result.stderr)
        client.stdin.write("through the VM\n")
        out, err = client.communicate(timeout=oci.COMMAND_TIMEOUT)  # closes stdin: cat ends
        self.assertEqual((client.returncode, out), (0, "through the VM\n"), err)
        self.assert_no_container()

    def test_task_ls_and_container_rm_clean_up_a_detached_one(self):
        args = self.containerd.run_args(oci.RUNTIME, self.id, "exit", "3")
        args.remove("--rm")
        args.insert(args.index("run") + 1, "--detach")
        oci.run(args, check=True)
        deadline = time.monotonic() + oci.COMMAND_TIMEOUT
        while "STOPPED" not in self.task_status():
            self.assertLess(time.monotonic(), deadline, "the task never stopped")
            time.sleep(0.2)
        self.containerd.ctr("task", "rm", self.id, check=True)
        self.containerd.ctr("containers", "rm", self.id, check=True)
        self.assert_no_container()

    def test_bad_annotation_fails_the_run_naming_it(self):
        result = self.ember_run("echo", "hello", annotations=["io.ember.memory=512MB"])
        self.assertNotEqual(0, result.returncode)
        self.assertIn("unknown memory unit", result.stderr)
        self.containerd.ctr("containers", "rm", self.id)  # --rm does not when create fails
        self.assert_no_container()

    def task_status(self):
        for line in self.containerd.ctr("task", "ls").stdout.splitlines():
            if line.startswith(self.id + " "):
                return line
        return ""


if __name__ == "__main__":
    oci.enter_private_namespaces()
    ember_unittest.main()
