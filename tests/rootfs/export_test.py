"""ember-rootfs from a container export tarball (podman/docker export: one flat tar, plain or
gzip), made here with Python's tarfile: owners, modes, links and times reach the image though
the tool runs unprivileged, and every hostile or broken archive is refused whole."""

import os
import signal
import subprocess
import time
import unittest

import ember_unittest
from rootfs_support import (ENV, RootfsTestCase, as_nobody, cat, debugfs, entry, image_config,
                            names, runnable_tool, stat, write_tar, xattr)


def rootfs_entries():
    return [
        entry("./", "dir", mode=0o755),
        entry("./etc/", "dir", mode=0o755),
        entry("./etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n"),
        entry("./etc/shadow", data=b"root:*:1::::::\n", mode=0o000),
        entry("./home/", "dir", mode=0o755),
        entry("./home/user/", "dir", mode=0o700, uid=1000, gid=1000),
        entry("./home/user/notes", data=b"mine\n", mode=0o640, uid=1000, gid=1000,
              mtime=1_600_000_000),
        entry("./usr/", "dir"),
        entry("./usr/bin/", "dir", mode=0o555),
        entry("./usr/bin/su", data=b"su binary", mode=0o4755),
        entry("./usr/bin/su-link", "hardlink", target="./usr/bin/su"),
        entry("./usr/bin/sh", "symlink", target="/usr/bin/su", mode=0o777),
        entry("./tmp/", "dir", mode=0o1777),
        entry("./run/pipe", "fifo", mode=0o600, uid=100000, gid=100001),
    ]


class ExportSource(RootfsTestCase):
    def export(self, entries, compression="", name="export.tar"):
        return write_tar(os.path.join(self.work, name), entries, compression)

    def test_owners_modes_links_and_times_reach_the_image(self):
        image = self.build(self.export(rootfs_entries()))
        self.assertEqual(cat(image, "/etc/passwd"), b"root:x:0:0::/root:/bin/sh\n")
        expected = {  # path: (type, mode, uid, gid)
            "/": ("directory", 0o755, 0, 0),
            "/etc/passwd": ("regular", 0o644, 0, 0),
            "/etc/shadow": ("regular", 0o000, 0, 0),
            "/home/user": ("directory", 0o700, 1000, 1000),
            "/home/user/notes": ("regular", 0o640, 1000, 1000),
            "/usr/bin": ("directory", 0o555, 0, 0),
            "/usr/bin/su": ("regular", 0o4755, 0, 0),
            "/tmp": ("directory", 0o1777, 0, 0),
            "/run/pipe": ("FIFO", 0o600, 100000, 100001),
        }
        for path, want in expected.items():
            info = stat(image, path)
            self.assertEqual((info["type"], info["mode"], info["uid"], info["gid"]), want, path)
        su = stat(image, "/usr/bin/su")
        self.assertEqual(su["links"], 2)
        self.assertEqual(stat(image, "/usr/bin/su-link")["inode"], su["inode"])
        self.assertEqual(stat(image, "/usr/bin/sh")["target"], "/usr/bin/su")
        self.assertIn("ember-init", names(image, "/sbin"))

    def test_entry_times_are_kept(self):
        image = self.build(self.export(rootfs_entries()))
        out, _ = debugfs(image, "stat /home/user/notes")
        self.assertIn("mtime: 0x5f5e1000", out)  # 1_600_000_000

    def test_extended_attributes_reach_the_image(self):
        # A file capability (cap_net_raw, VFS_CAP_REVISION_2) as podman exports ping's.
        capability = bytes.fromhex("0100000200200000000000000000000000000000")
        image = self.build(self.export([
            entry("bin/ping", data=b"ping", mode=0o755,
                  xattrs={"security.capability": capability, "user.origin": b"test"}),
            entry("bin/ping6", "hardlink", target="bin/ping"),
        ]))
        self.assertEqual(xattr(image, "/bin/ping", "security.capability", self.work), capability)
        self.assertEqual(xattr(image, "/bin/ping6", "user.origin", self.work), b"test")
        self.assertIsNone(xattr(image, "/bin", "user.origin", self.work))

    def test_gzip_export_is_read(self):
        image = self.build(self.export(rootfs_entries(), "gz", "export.tar.gz"))
        self.assertEqual(stat(image, "/usr/bin/su")["mode"], 0o4755)

    def test_missing_parent_directories_are_made_root_owned(self):
        image = self.build(self.export([entry("opt/app/run.sh", data=b"#!/bin/sh\n",
                                              mode=0o755, uid=5, gid=6)]))
        self.assertEqual((stat(image, "/opt/app")["uid"], stat(image, "/opt/app")["mode"]),
                         (0, 0o755))
        self.assertEqual(stat(image, "/opt/app/run.sh")["uid"], 5)

    def test_a_later_entry_replaces_an_earlier_one(self):
        image = self.build(self.export([
            entry("a/x", data=b"old"),
            entry("a", data=b"now a file"),
            entry("b", "symlink", target="/x"),
            entry("b/", "dir", mode=0o750),
        ]))
        self.assertEqual(cat(image, "/a"), b"now a file")
        self.assertEqual((stat(image, "/b")["type"], stat(image, "/b")["mode"]),
                         ("directory", 0o750))

    def test_work_dir_flag_stages_there_and_leaves_nothing(self):
        staging = os.path.join(self.work, "staging")
        os.mkdir(staging)
        os.chmod(staging, 0o777)
        image = self.build(self.export(rootfs_entries()), "--work-dir", staging)
        self.assertEqual(stat(image, "/usr/bin/su")["mode"], 0o4755)
        self.assertEqual(os.listdir(staging), [])
        self.assertEqual(os.listdir(self.out_dir), ["root.ext4"])

    def test_size_flag_with_many_small_files_still_has_inodes_for_them(self):
        # 2500 files: more than the 2048 inodes mke2fs gives an 8 MiB image by itself.
        files = [entry(f"many/d{i % 5}/f{i}") for i in range(2500)]
        image = self.build(self.export(files), "--size", "8M")
        self.assertEqual(sum(len(names(image, f"/many/d{d}")) for d in range(5)), 2500)

    def test_sigterm_mid_build_leaves_nothing(self):
        # The archive comes through a FIFO that the test keeps open half-written, so the tool
        # is mid-build, blocked on its read, when the signal arrives.
        full = self.export([entry(f"f{i}", data=os.urandom(4096)) for i in range(8)])
        with open(full, "rb") as f:
            half = f.read()[:16 * 1024]
        feed = os.path.join(self.work, "feed.tar")
        os.mkfifo(feed, 0o666)
        os.chmod(feed, 0o666)
        args = [runnable_tool(), "--init", self.init, "--agent", self.agent, "--format", "export",
                feed, self.image_path()]
        tool = subprocess.Popen(as_nobody(args), stderr=subprocess.PIPE, text=True, env=ENV)
        with open(feed, "wb") as writer:
            writer.write(half)
            writer.flush()
            deadline = time.monotonic() + 30
            while not any(".ember-rootfs-" in n for n in os.listdir(self.out_dir)):
                self.assertLess(time.monotonic(), deadline, "no work directory appeared")
                time.sleep(0.05)
            time.sleep(0.2)  # into the blocked read
            tool.send_signal(signal.SIGTERM)
            _, stderr = tool.communicate(timeout=60)
        self.assertEqual(tool.returncode, 128 + signal.SIGTERM, stderr)
        self.assertEqual(stderr.strip().splitlines(), ["ember-rootfs: interrupted by TERM; nothing written"])
        self.assertEqual(os.listdir(self.out_dir), [])

    def test_empty_image_config_without_an_oci_config(self):
        image = self.build(self.export(rootfs_entries()))
        self.assertEqual(image_config(image)["entrypoint"], [])


class HostileExport(RootfsTestCase):
    """Each archive is refused: exit 2, one line, nothing in the output directory, and nothing
    written outside the staging tree (the `victim` directory beside it stays empty)."""

    def setUp(self):
        super().setUp()
        self.victim = os.path.join(self.work, "victim")
        os.mkdir(self.victim)
        os.chmod(self.victim, 0o777)

    def refuse(self, entries, expected, compression=""):
        archive = write_tar(os.path.join(self.work, "hostile.tar"), entries, compression)
        self.assert_refused(archive, expected)
        self.assertEqual(os.listdir(self.victim), [])

    def test_dot_dot_path_is_refused(self):
        self.refuse([entry("etc/../../victim/x", data=b"owned")], "escapes the root")

    def test_absolute_dot_dot_path_is_refused(self):
        self.refuse([entry("/../victim/x", data=b"owned")], "escapes the root")

    def test_write_through_an_absolute_symlink_is_refused(self):
        self.refuse([entry("etc", "symlink", target=self.victim),
                     entry("etc/passwd", data=b"owned")], "through the symlink /etc")

    def test_write_through_a_relative_symlink_is_refused(self):
        self.refuse([entry("up", "symlink", target="../../../../../../../../" + self.victim),
                     entry("up/x", data=b"owned")], "through the symlink /up")

    def test_hard_link_to_outside_is_refused(self):
        self.refuse([entry("link", "hardlink", target="../victim-file")], "escapes the root")

    def test_hard_link_through_a_symlink_is_refused(self):
        secret = self.write_file("secret", b"host secret")
        self.refuse([entry("d", "symlink", target=os.path.dirname(secret)),
                     entry("link", "hardlink", target="d/secret")], "through the symlink /d")

    def test_hard_link_to_a_missing_file_is_refused(self):
        self.refuse([entry("link", "hardlink", target="nothing")], "does not hold")

    def test_whiteout_through_a_symlink_is_refused(self):
        self.write_file("victim/keep", b"keep")
        self.assert_refused(write_tar(os.path.join(self.work, "hostile.tar"), [
            entry("v", "symlink", target=self.victim), entry("v/.wh.keep")]),
            "through the symlink /v")
        self.assertEqual(os.listdir(self.victim), ["keep"])

    def test_character_device_is_refused(self):
        self.refuse([entry("dev/null", "chr", mode=0o666, major=1, minor=3)], "device node")

    def test_block_device_is_refused(self):
        self.refuse([entry("dev/sda", "blk", mode=0o660, major=8, minor=0)], "device node")

    def test_truncated_tarball_is_refused(self):
        archive = write_tar(os.path.join(self.work, "full.tar"),
                            [entry("big", data=os.urandom(64 * 1024))])
        with open(archive, "rb") as f:
            data = f.read()
        with open(archive, "wb") as f:
            f.write(data[:20 * 1024])
        self.assert_refused(archive, "corrupt or truncated")

    def test_truncated_gzip_is_refused(self):
        archive = write_tar(os.path.join(self.work, "full.tar.gz"),
                            [entry("big", data=os.urandom(64 * 1024))], "gz")
        with open(archive, "rb") as f:
            data = f.read()
        with open(archive, "wb") as f:
            f.write(data[:len(data) // 2])
        self.assert_refused(archive, "corrupt or truncated")

    def test_corrupt_header_is_refused(self):
        archive = write_tar(os.path.join(self.work, "bad.tar"),
                            [entry("a", data=b"x" * 600), entry("b", data=b"y")])
        with open(archive, "r+b") as f:
            f.seek(0)
            f.write(b"\xff" * 100)  # the first header's name and mode: its checksum fails
        self.assert_refused(archive, "corrupt or truncated")

    def test_not_a_tarball_is_refused(self):
        self.assert_refused(self.write_file("notes.txt", b"just some text\n" * 100),
                            "corrupt or truncated")


if __name__ == "__main__":
    ember_unittest.main()
