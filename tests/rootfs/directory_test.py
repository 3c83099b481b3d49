"""ember-rootfs from a directory tree: what mke2fs -d copies, what ember-rootfs adds, and the
directory sources it refuses."""

import os
import stat as stat_module
import unittest

import ember_unittest
from rootfs_support import TOOL, RootfsTestCase, cat, free_bytes, image_config, names, stat


class DirectorySource(RootfsTestCase):
    def make_tree(self):
        tree = os.path.join(self.work, "tree")
        self.write_file("tree/etc/hostname", b"guest\n")
        self.write_file("tree/usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o4755)
        os.link(os.path.join(tree, "usr/bin/tool"), os.path.join(tree, "usr/bin/tool-link"))
        os.symlink("/usr/bin/tool", os.path.join(tree, "usr/bin/abs-link"))
        os.symlink("../bin/tool", os.path.join(tree, "usr/bin/rel-link"))
        os.makedirs(os.path.join(tree, "tmp"))
        os.chmod(os.path.join(tree, "tmp"), 0o1777)
        for dirpath, dirnames, _ in os.walk(tree):
            os.chmod(dirpath, os.stat(dirpath).st_mode | 0o755)
        if os.getuid() == 0:
            os.chown(os.path.join(tree, "etc/hostname"), 1234, 5678)
        return tree

    def test_files_modes_owners_symlinks_and_hard_links_are_copied(self):
        tree = self.make_tree()
        image = self.build(tree)
        self.assertEqual(cat(image, "/etc/hostname"), b"guest\n")
        hostname = stat(image, "/etc/hostname")
        source = os.stat(os.path.join(tree, "etc/hostname"))
        self.assertEqual((hostname["uid"], hostname["gid"]), (source.st_uid, source.st_gid))
        tool = stat(image, "/usr/bin/tool")
        self.assertEqual(tool["mode"], 0o4755)
        self.assertEqual(tool["links"], 2)
        self.assertEqual(stat(image, "/usr/bin/tool-link")["inode"], tool["inode"])
        self.assertEqual(stat(image, "/usr/bin/abs-link")["target"], "/usr/bin/tool")
        self.assertEqual(stat(image, "/usr/bin/rel-link")["target"], "../bin/tool")
        self.assertEqual(stat(image, "/tmp")["mode"], 0o1777)

    def test_guest_programs_and_an_empty_image_config_are_installed_owned_by_root(self):
        image = self.build(self.make_tree())
        for path, source in (("/sbin/ember-init", self.init), ("/sbin/ember-agent", self.agent)):
            info = stat(image, path)
            self.assertEqual((info["type"], info["mode"], info["uid"], info["gid"]),
                             ("regular", 0o755, 0, 0), path)
            with open(source, "rb") as f:
                self.assertEqual(cat(image, path), f.read())
        self.assertEqual(image_config(image),
                         {"entrypoint": [], "cmd": [], "env": [], "working_dir": "", "user": ""})
        self.assertEqual(stat(image, "/etc/ember/image-config.pb")["mode"], 0o644)

    def test_guest_programs_default_to_the_ones_beside_ember_rootfs(self):
        bin_dir = os.path.dirname(TOOL)
        programs = {name: os.path.join(bin_dir, name) for name in ("ember-init", "ember-agent")}
        for path in programs.values():
            self.assertTrue(os.path.isfile(path), f"{path} is not built (build ember-init and "
                            "ember-agent, or the whole tree)")
        image = self.image_path()
        result = self.run_tool(self.make_tree(), image, guest_programs=False)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assert_clean(image)
        for name, path in programs.items():
            with open(path, "rb") as f:
                self.assertEqual(cat(image, "/sbin/" + name), f.read(), name)

    def test_guest_programs_follow_a_merged_usr_sbin_symlink(self):
        tree = self.make_tree()
        os.makedirs(os.path.join(tree, "usr/sbin"))
        os.symlink("usr/sbin", os.path.join(tree, "sbin"))
        image = self.build(tree)
        self.assertEqual(stat(image, "/sbin")["type"], "symlink")
        self.assertEqual(names(image, "/usr/sbin"), {"ember-init", "ember-agent"})

    def test_guest_programs_replace_files_of_the_same_name(self):
        tree = self.make_tree()
        self.write_file("tree/sbin/ember-init", b"old init\n", 0o755)
        os.chmod(os.path.join(tree, "sbin"), 0o755)
        image = self.build(tree)
        with open(self.init, "rb") as f:
            self.assertEqual(cat(image, "/sbin/ember-init"), f.read())

    def test_missing_mount_points_are_made_empty_and_owned_by_root(self):
        tree = os.path.join(self.work, "tree")
        self.write_file("tree/etc/hostname", b"guest\n")
        for dirpath, dirnames, _ in os.walk(tree):
            os.chmod(dirpath, 0o755)
        image = self.build(tree)
        for path, mode in (("/proc", 0o555), ("/sys", 0o555), ("/dev", 0o755), ("/run", 0o755),
                           ("/tmp", 0o1777)):
            info = stat(image, path)
            self.assertIsNotNone(info, path)
            self.assertEqual((info["type"], info["mode"], info["uid"], info["gid"]),
                             ("directory", mode, 0, 0), path)
            self.assertEqual(names(image, path), set(), path)

    def test_mount_points_the_tree_has_are_kept(self):
        tree = self.make_tree()  # its /tmp is 1777
        os.makedirs(os.path.join(tree, "dev"))
        os.chmod(os.path.join(tree, "dev"), 0o775)
        self.write_file("tree/dev/keep", b"kept\n")
        os.symlink("tmp", os.path.join(tree, "run"))
        image = self.build(tree)
        self.assertEqual(stat(image, "/dev")["mode"], 0o775)
        self.assertEqual(names(image, "/dev"), {"keep"})
        self.assertEqual(stat(image, "/run")["type"], "symlink")
        self.assertEqual(stat(image, "/run")["target"], "tmp")
        self.assertEqual(stat(image, "/tmp")["mode"], 0o1777)
        self.assertEqual(stat(image, "/proc")["mode"], 0o555)

    def test_automatic_size_leaves_headroom(self):
        tree = self.make_tree()
        self.write_file("tree/data", os.urandom(8 << 20))
        image = self.build(tree)
        self.assertGreaterEqual(free_bytes(image), 64 << 20)
        # Sparse: the file holds about what was written, not its whole size.
        self.assertLess(os.stat(image).st_blocks * 512, os.stat(image).st_size)

    def test_size_flag_sets_the_image_size(self):
        image = self.build(self.make_tree(), "--size", "96M")
        self.assertEqual(os.stat(image).st_size, 96 << 20)

    def test_size_too_small_for_the_tree_is_refused(self):
        tree = self.make_tree()
        self.write_file("tree/data", os.urandom(12 << 20))
        self.assert_refused(tree, "--size", "--size", "10M")

    def test_missing_directory_is_refused(self):
        self.assert_refused(os.path.join(self.work, "nothing-here"), "nothing-here")

    def test_image_path_with_a_newline_is_refused(self):
        result = self.run_tool(self.make_tree(), os.path.join(self.out_dir, "a\nb.ext4"))
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn("newline", result.stderr)
        self.assertEqual(os.listdir(self.out_dir), [])

    def test_missing_guest_program_is_refused(self):
        result = self.run_tool(self.make_tree(), self.image_path(), "--init",
                               os.path.join(self.work, "no-init"), "--agent", self.agent,
                               guest_programs=False)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn("--init", result.stderr)
        self.assertEqual(os.listdir(self.out_dir), [])

    def test_image_inside_the_source_is_refused(self):
        tree = self.make_tree()
        os.chmod(tree, 0o777)
        result = self.run_tool(tree, os.path.join(tree, "root.ext4"))
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn("inside the source", result.stderr)

    def test_work_dir_inside_the_source_is_refused(self):
        tree = self.make_tree()
        os.chmod(os.path.join(tree, "tmp"), 0o777)
        self.assert_refused(tree, "--work-dir", "--work-dir", os.path.join(tree, "tmp"))

    def test_failed_build_keeps_an_existing_image(self):
        image = self.image_path()
        with open(image, "wb") as f:
            f.write(b"previous image")
        os.chmod(image, 0o666)
        result = self.run_tool(os.path.join(self.work, "nothing-here"), image)
        self.assertEqual(result.returncode, 2)
        with open(image, "rb") as f:
            self.assertEqual(f.read(), b"previous image")
        self.assertEqual(os.listdir(self.out_dir), ["root.ext4"])

    @unittest.skipUnless(os.getuid() == 0, "making a device node needs root")
    def test_device_node_is_refused(self):
        tree = self.make_tree()
        os.makedirs(os.path.join(tree, "dev"), exist_ok=True)
        os.mknod(os.path.join(tree, "dev/null"), 0o666 | stat_module.S_IFCHR, os.makedev(1, 3))
        self.assert_refused(tree, "device node")


if __name__ == "__main__":
    ember_unittest.main()
