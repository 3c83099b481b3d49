"""Shared pieces of ember-runtime's containerd and podman tests (and perf/oci_bench.py).

- Each test script runs in private mount and network namespaces of its own (re-executed under
  unshare(1)), so every mount containerd, podman and ember-runtime make, and every tap or link,
  is the test's alone and can be counted exactly before and after each case.
- An OCI image archive is made here from busybox-static (two layers, diff_ids filled in as
  containerd's unpacker checks them) and imported by `ctr image import` / `podman load`.
- No Linux guest runs on these machines (DESIGN.md): the container's "process" is the built-in
  test guest's agent scenario (builtins echo, cat, exit N), which ember-runtime boots when no
  kernel is configured.
"""

import glob
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

BUILD_DIR = os.path.abspath(os.environ.get(
    "EMBER_BUILD_DIR", os.path.join(os.path.dirname(__file__), "../../build")))
RUNTIME = os.path.join(BUILD_DIR, "bin", "ember-runtime")
IMAGE_NAME = "docker.io/ember/busybox:test"
NAMESPACE_FLAG = "EMBER_OCI_TEST_PRIVATE_NS"
COMMAND_TIMEOUT = 180  # a VM boot on the emulating KVM of these machines, under load

# Programs whose leftovers count as leaks, by executable name.
WATCHED_PROGRAMS = {"ember-vmm", "ember-runtime", "ember-jailer", "containerd-shim-runc-v2",
                    "conmon", "runc"}


def enter_private_namespaces():
    """Re-executes this script in new mount (private propagation) and network namespaces, with
    loopback up. Call first thing in __main__; returns in the re-executed process."""
    if os.environ.get(NAMESPACE_FLAG) == "1" or os.getuid() != 0 or not shutil.which("unshare"):
        return
    env = dict(os.environ, **{NAMESPACE_FLAG: "1"})
    os.execvpe("unshare", ["unshare", "--mount", "--net", "--propagation", "private",
                           sys.executable] + sys.argv, env)


def lo_up():
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False)


def missing_prerequisite(*programs):
    """Why the tests cannot run here, or None."""
    if os.getuid() != 0:
        return "needs root (containerd, podman and ember-runtime's VMs)"
    if not os.path.exists("/dev/kvm"):
        return "needs /dev/kvm"
    if not os.access(RUNTIME, os.X_OK):
        return f"no {RUNTIME} (build the ember-runtime target)"
    for program in programs:
        if not shutil.which(program):
            return f"no {program} (tests/setup.sh installs it)"
    return None


def run(args, timeout=COMMAND_TIMEOUT, check=False, **kwargs):
    """Runs a command, its output captured as text."""
    result = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}{result.stderr}")
    return result


# --- The image ------------------------------------------------------------------------------

def _layer(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _member(name, kind=tarfile.REGTYPE, data=None, mode=0o755, target=None):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, 1_700_000_000
    if data is not None:
        info.size = len(data)
    if target is not None:
        info.linkname = target
    return info, data


def _blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def write_busybox_archive(path, name=IMAGE_NAME):
    """An OCI archive (image-layout tar) of one image named `name`: busybox-static with its
    applets the tests and runc use as symlinks, and a second layer with /etc."""
    with open("/bin/busybox", "rb") as f:
        busybox = f.read()
    applets = ["sh", "echo", "cat", "sleep", "true", "false"]
    layers = [
        _layer([_member("bin", tarfile.DIRTYPE), _member("bin/busybox", data=busybox)] +
               [_member("bin/" + a, tarfile.SYMTYPE, target="busybox") for a in applets]),
        _layer([_member("etc", tarfile.DIRTYPE),
                _member("etc/hostname", data=b"busybox\n", mode=0o644)]),
    ]
    with tempfile.TemporaryDirectory(prefix="ember-oci-layout-") as layout:
        config = {"architecture": "amd64", "os": "linux",
                  "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
                  "rootfs": {"type": "layers",
                             "diff_ids": ["sha256:" + hashlib.sha256(l).hexdigest()
                                          for l in layers]}}
        manifest = {
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": dict(mediaType="application/vnd.oci.image.config.v1+json",
                           **_blob(layout, json.dumps(config).encode())),
            "layers": [dict(mediaType="application/vnd.oci.image.layer.v1.tar", **_blob(layout, l))
                       for l in layers]}
        descriptor = dict(mediaType="application/vnd.oci.image.manifest.v1+json",
                          **_blob(layout, json.dumps(manifest).encode()),
                          annotations={"org.opencontainers.image.ref.name": name,
                                       "io.containerd.image.name": name})
        with open(os.path.join(layout, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        with open(os.path.join(layout, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": [descriptor]}, f)
        with tarfile.open(path, "w") as tar:
            for entry in sorted(os.listdir(layout)):
                tar.add(os.path.join(layout, entry), arcname=entry)
    return path


# --- ember-runtime's own configuration ------------------------------------------------------

def write_runtime_config(path, state_dir):
    """ember-runtime's config for the tests: its image cache inside the test's directory, the
    built-in test guest (no kernel) as every container's VM."""
    with open(path, "w") as f:
        json.dump({"image_cache_dir": os.path.join(state_dir, "image-cache")}, f)
    return path


def leases_held(state_dir):
    """The image leases ember-runtime holds in the test's cache (none once every container of
    the test is deleted)."""
    leases = os.path.join(state_dir, "image-cache", "leases")
    held = []
    for dirpath, dirnames, _ in os.walk(leases):
        if os.path.dirname(dirpath) == leases:
            held += [os.path.join(dirpath, d) for d in dirnames]
    return held


# --- containerd -----------------------------------------------------------------------------

class Containerd:
    """A containerd of the test's own: root, state, sockets under `base`, the CRI plugin off.
    ember-runtime's config reaches it through the environment containerd passes to its shims
    and they to the runtime."""

    NAMESPACE = "ember-test"

    def __init__(self, base, runtime_config):
        self.base = base
        self.socket = os.path.join(base, "containerd.sock")
        self.namespace = self.NAMESPACE
        self.runc_root = os.path.join(base, "runc-root")
        config = os.path.join(base, "containerd.toml")
        with open(config, "w") as f:
            f.write(f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n'
                    'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                    f'[grpc]\n  address = "{self.socket}"\n'
                    f'[ttrpc]\n  address = "{self.socket}.ttrpc"\n')
        self.log = open(os.path.join(base, "containerd.log"), "w")
        env = dict(os.environ, EMBER_RUNTIME_CONFIG=runtime_config)
        self.process = subprocess.Popen(["containerd", "--config", config], stdout=self.log,
                                        stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while run(self.ctr_args("version"), timeout=30).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("containerd did not start: " + self.read_log())
            time.sleep(0.2)

    def ctr_args(self, *args):
        return ["ctr", "--address", self.socket, "--namespace", self.namespace] + list(args)

    def ctr(self, *args, **kwargs):
        return run(self.ctr_args(*args), **kwargs)

    def run_args(self, runtime, container_id, *command, annotations=(), extra=()):
        """`ctr run` of the test image with `runtime` as the runc binary."""
        args = ["run", "--rm", "--runc-binary", runtime, "--runc-root", self.runc_root]
        for annotation in annotations:
            args += ["--annotation", annotation]
        return self.ctr_args(*args, *extra, IMAGE_NAME, container_id, *command)

    def read_log(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()[-4000:]

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def jails_held(state_dir):
    """The jails (and their uid leases) ember-runtime keeps in the test's cache: none once every
    container of the test is deleted."""
    jails = os.path.join(state_dir, "image-cache", "jails")
    held = glob.glob(os.path.join(jails, "ember-vmm", "*"))
    held += [p for p in glob.glob(os.path.join(jails, "uids", "*")) if p[-1].isdigit()]
    return held

# --- Cgroups the callers leave ---------------------------------------------------------------

class CallerCgroups:
    """Parent cgroups that containerd's runc shim (one per containerd namespace) and podman (its
    conmon's) make and leave, whatever the runtime: removed at the end of a test that made
    them, kept when they were there before."""

    def __init__(self, name):
        self.pattern = f"/sys/fs/cgroup/*/{name}"
        self.before = set(glob.glob(self.pattern))

    def remove_new(self):
        for made in set(glob.glob(self.pattern)) - self.before:
            for path in glob.glob(made + "/*/") + [made]:
                try:
                    os.rmdir(path)
                except OSError:
                    pass  # in use by another containerd or podman on the machine


# --- Leak accounting ------------------------------------------------------------------------

def _watched_processes(tokens):
    """Watched programs of this test: in its network namespace (other tests on the machine run
    VMMs too, in theirs) or naming one of `tokens` on their command line."""
    own_net = os.readlink("/proc/self/ns/net")
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
            if exe not in WATCHED_PROGRAMS:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
            net = os.readlink(f"/proc/{pid}/ns/net")
        except OSError:
            continue  # gone meanwhile
        if net == own_net or any(token in command for token in tokens):
            found.add((int(pid), exe, command))
    return found


def _mounts():
    with open("/proc/self/mountinfo") as f:
        return {" ".join(line.split()[3:5]) for line in f}


def _links():
    return set(os.listdir("/sys/class/net"))


def _cgroups(tokens):
    found = set()
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        for d in dirs:
            path = os.path.join(root, d)
            if any(token in path for token in tokens):
                found.add(path)
    return found


class LeakCheck:
    """What a case may leave behind, counted before it and after it: watched processes (the
    VMM, the runtime and its supervisor, shims, conmon), mounts and network links (in the
    test's private namespaces, so all of them), cgroups whose path names one of `tokens` (the
    test's containers and namespace; other users of the machine make cgroups too: a jailed
    VMM's are named after its container), and image leases and jails in the test's cache."""

    def __init__(self, state_dir, tokens):
        self.state_dir = state_dir
        self.tokens = list(tokens)
        self.before = self._snapshot()

    def _snapshot(self):
        return {"processes": {(pid, exe) for pid, exe, _ in _watched_processes(self.tokens)},
                "mounts": _mounts(), "links": _links(), "cgroups": _cgroups(self.tokens),
                "leases": set(leases_held(self.state_dir)),
                "jails": set(jails_held(self.state_dir))}

    def leaks(self, settle=15.0):
        """What is here now and was not before; waits up to `settle` seconds for it to go
        (a shim or a VMM ends a moment after the command that ended it returned)."""
        deadline = time.monotonic() + settle
        while True:
            now = self._snapshot()
            extra = {kind: sorted(now[kind] - self.before[kind]) for kind in now}
            extra = {kind: items for kind, items in extra.items() if items}
            if not extra or time.monotonic() > deadline:
                if "processes" in extra:
                    commands = {pid: cmd for pid, _, cmd in _watched_processes(self.tokens)}
                    extra["processes"] = [(pid, exe, commands.get(pid, "?"))
                                          for pid, exe in extra["processes"]]
                return extra
            time.sleep(0.25)
