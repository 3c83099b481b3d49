"""Shared helpers of ember-rootfs's tests: run the tool (as an unprivileged user when the tests
run as root, so every test proves that no root is needed), and read the image back with
e2fsprogs' own tools (e2fsck -fn, debugfs), never by mounting it."""

import atexit
import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

BUILD_DIR = os.environ.get("EMBER_BUILD_DIR", os.path.join(os.path.dirname(__file__), "../../build"))
TOOL = os.path.join(BUILD_DIR, "bin", "ember-rootfs")
NOBODY = 65534
ENV = dict(os.environ, PATH=os.environ.get("PATH", "") + ":/usr/sbin:/sbin", DEBUGFS_PAGER="__none__",
           PAGER="__none__")


_runnable_tool = None


def runnable_tool():
    """The ember-rootfs to run. As root, a copy (with the ember-init and ember-agent built
    beside it) in a world-readable directory: the unprivileged run cannot reach the build tree
    when it lies under a private directory (a CI checkout in /root)."""
    global _runnable_tool
    if os.getuid() != 0:
        return TOOL
    if _runnable_tool is None:
        bin_dir = tempfile.mkdtemp(prefix="ember-rootfs-bin-")
        atexit.register(shutil.rmtree, bin_dir, ignore_errors=True)
        os.chmod(bin_dir, 0o755)
        for name in ("ember-rootfs", "ember-init", "ember-agent"):
            built = os.path.join(os.path.dirname(TOOL), name)
            if os.path.exists(built):
                shutil.copy(built, os.path.join(bin_dir, name))
                os.chmod(os.path.join(bin_dir, name), 0o755)
        _runnable_tool = os.path.join(bin_dir, "ember-rootfs")
    return _runnable_tool


def as_nobody(args):
    """`args` run as nobody when we are root, so every test proves that no root is needed."""
    if os.getuid() == 0:
        return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] + args
    return args


class RootfsTestCase(unittest.TestCase):
    """A scratch directory per test, stand-ins for ember-init and ember-agent, and helpers."""

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="ember-rootfs-test-")
        self.addCleanup(shutil.rmtree, self.work, ignore_errors=True)
        os.chmod(self.work, 0o777)  # the unprivileged run writes its image here
        self.out_dir = os.path.join(self.work, "out")
        os.mkdir(self.out_dir)
        os.chmod(self.out_dir, 0o777)
        # Stand-ins until ember-init and ember-agent exist: any bytes prove the copy.
        self.init = self.write_file("stand-ins/init", b"\x7fELF stand-in for ember-init\n", 0o755)
        self.agent = self.write_file("stand-ins/agent", b"\x7fELF stand-in for ember-agent\n", 0o755)
        os.chmod(os.path.join(self.work, "stand-ins"), 0o755)

    def write_file(self, relative, data, mode=0o644):
        path = os.path.join(self.work, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        return path

    def image_path(self, name="root.ext4"):
        return os.path.join(self.out_dir, name)

    def run_tool(self, source, image, *flags, guest_programs=True):
        """ember-rootfs SOURCE IMAGE, as nobody when we are root."""
        args = [runnable_tool()]
        if guest_programs:
            args += ["--init", self.init, "--agent", self.agent]
        args += list(flags) + [source, image]
        return subprocess.run(as_nobody(args), capture_output=True, text=True, env=ENV, timeout=300)

    def build(self, source, *flags):
        image = self.image_path()
        result = self.run_tool(source, image, *flags)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assert_clean(image)
        return image

    def assert_clean(self, image):
        fsck = subprocess.run(["e2fsck", "-fn", image], capture_output=True, text=True, env=ENV)
        self.assertEqual(fsck.returncode, 0, fsck.stdout + fsck.stderr)

    def assert_refused(self, source, expected, *flags):
        """Exit 2 with one line naming `expected`, and nothing left in the output directory."""
        result = self.run_tool(source, self.image_path(), *flags)
        self.assertEqual(result.returncode, 2, result.stderr)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertIn(expected, lines[0])
        self.assertEqual(os.listdir(self.out_dir), [])
        return lines[0]


def debugfs(image, command):
    result = subprocess.run(["debugfs", "-R", command, image], capture_output=True, text=True,
                            env=ENV)
    errors = [l for l in result.stderr.splitlines() if l and not l.startswith("debugfs ")]
    return result.stdout, errors


def stat(image, path):
    """The inode at `path` (symlinks not followed) as a dict: type, mode (permission bits),
    uid, gid, links, inode, size, target (symlinks); None when there is nothing there."""
    out, errors = debugfs(image, f'stat "{path}"')
    if errors:
        return None
    info = {}
    m = re.search(r"Inode: (\d+)\s+Type: (\S+)\s+Mode:\s+(\d+)", out)
    info["inode"], info["type"], info["mode"] = int(m.group(1)), m.group(2), int(m.group(3), 8)
    m = re.search(r"User:\s+(\d+)\s+Group:\s+(\d+)", out)
    info["uid"], info["gid"] = int(m.group(1)), int(m.group(2))
    info["links"] = int(re.search(r"Links: (\d+)", out).group(1))
    info["size"] = int(re.search(r"Size: (\d+)", out).group(1))
    m = re.search(r'Fast link dest: "(.*)"', out)
    if m:
        info["target"] = m.group(1)
    elif info["type"] == "symlink":
        info["target"] = cat(image, path).decode()
    return info


def cat(image, path):
    result = subprocess.run(["debugfs", "-R", f'cat "{path}"', image], capture_output=True,
                            env=ENV)
    return result.stdout


def xattr(image, path, name, scratch):
    """The value of xattr `name` of `path`, or None."""
    out = os.path.join(scratch, "xattr-value")
    if os.path.exists(out):
        os.unlink(out)
    _, errors = debugfs(image, f'ea_get -f {out} "{path}" {name}')
    if errors or not os.path.exists(out):
        return None
    with open(out, "rb") as f:
        return f.read()


def names(image, path):
    """The names in directory `path`, without . and .."""
    out, errors = debugfs(image, f'ls -p "{path}"')
    if errors:
        return None
    found = set()
    for line in out.splitlines():
        fields = line.strip("/").split("/")
        if len(fields) >= 5 and fields[4] not in (".", ".."):
            found.add(fields[4])
    return found


SOURCE_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../.."))


def image_config(image):
    """/etc/ember/image-config.pb (agent.proto's ImageConfig) as a dict of its fields, decoded
    by protoc from the .proto itself, so the test shares no code with the writer."""
    raw = cat(image, "/etc/ember/image-config.pb")
    text = subprocess.run(["protoc", "--decode=ember.v1.ImageConfig",
                           "-I", os.path.join(SOURCE_DIR, "proto"),
                           os.path.join(SOURCE_DIR, "proto/ember/v1/agent.proto")],
                          input=raw, capture_output=True, check=True).stdout.decode()
    config = {"entrypoint": [], "cmd": [], "env": [], "working_dir": "", "user": ""}
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        value = json.loads(value)  # protoc's text format quotes strings as JSON does for ASCII
        if isinstance(config[key], list):
            config[key].append(value)
        else:
            config[key] = value
    return config


def free_bytes(image):
    out = subprocess.run(["dumpe2fs", "-h", image], capture_output=True, text=True, env=ENV).stdout
    free = int(re.search(r"Free blocks:\s+(\d+)", out).group(1))
    block = int(re.search(r"Block size:\s+(\d+)", out).group(1))
    return free * block


# --- Archives made with Python's tarfile (independent of libarchive, which the tool reads with)

def entry(name, kind="file", data=b"", mode=None, uid=0, gid=0, mtime=1_700_000_000,
          target=None, major=0, minor=0, xattrs=None):
    """One tar member: kind is file, dir, symlink, hardlink, fifo, chr or blk; xattrs a dict
    of name to bytes, as pax SCHILY.xattr records (GNU tar's and podman's spelling)."""
    import tarfile
    types = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
             "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE,
             "blk": tarfile.BLKTYPE}
    info = tarfile.TarInfo(name)
    info.type = types[kind]
    info.mode = mode if mode is not None else (0o755 if kind == "dir" else 0o644)
    info.uid, info.gid, info.mtime = uid, gid, mtime
    info.uname = info.gname = ""
    if target is not None:
        info.linkname = target
    info.devmajor, info.devminor = major, minor
    if kind == "file":
        info.size = len(data)
    for key, value in (xattrs or {}).items():
        info.pax_headers["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
    return info, (data if kind == "file" else None)


def write_tar(path, entries, compression=""):
    """A tar archive of `entries` (from entry()); compression "" or "gz"."""
    import io
    import tarfile
    with tarfile.open(path, "w:" + compression, format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


# --- OCI image layouts (image-spec's image-layout.md), made by hand -------------------------

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"


def add_blob(layout, data):
    """Stores `data` under blobs/sha256 and returns its descriptor fields."""
    import hashlib
    digest = hashlib.sha256(data).hexdigest()
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def add_image(layout, layers, config, gzip_layers=()):
    """Adds an image (layers: lists of entry(); config: the config's "config" object) and
    returns its manifest's descriptor. Layers whose index is in `gzip_layers` are gzipped."""
    import gzip
    import tempfile as tf
    layer_descriptors = []
    for i, entries in enumerate(layers):
        with tf.NamedTemporaryFile() as tmp:
            write_tar(tmp.name, entries)
            with open(tmp.name, "rb") as f:
                data = f.read()
        media = "application/vnd.oci.image.layer.v1.tar"
        if i in gzip_layers:
            data, media = gzip.compress(data), media + "+gzip"
        layer_descriptors.append(dict(mediaType=media, **add_blob(layout, data)))
    config_blob = json.dumps({"architecture": "amd64", "os": "linux", "config": config,
                              "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                "config": dict(mediaType="application/vnd.oci.image.config.v1+json",
                               **add_blob(layout, config_blob)),
                "layers": layer_descriptors}
    return dict(mediaType=MANIFEST_TYPE, **add_blob(layout, json.dumps(manifest).encode()))


def write_layout(layout, manifests):
    """index.json naming `manifests` (descriptors, maybe with a platform) and oci-layout."""
    os.makedirs(layout, exist_ok=True)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": manifests}, f)
    for dirpath, _, filenames in os.walk(layout):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)
    return layout


def write_oci_archive(path, layout):
    """The layout as podman save --format oci-archive writes it: a tar of its contents."""
    import tarfile
    with tarfile.open(path, "w") as tar:
        for name in sorted(os.listdir(layout)):
            tar.add(os.path.join(layout, name), arcname=name)
    return path
