"""ember-rootfs from OCI images (an image layout directory as skopeo writes it, or an OCI
archive as podman save --format oci-archive writes it), made here by hand: index.json ->
manifest -> config and layers applied in order, whiteouts honoured, the config recorded for
ember-agent; every blob checked against its digest, and hostile layers refused."""

import json
import os
import unittest

import ember_unittest
from rootfs_support import (INDEX_TYPE, RootfsTestCase, add_blob, add_image, cat, entry,
                            image_config, names, stat, write_layout, write_oci_archive,
                            write_tar)

CONFIG = {"Entrypoint": ["/usr/bin/app", "--serve"], "Cmd": ["--port", "8080"],
          "Env": ["PATH=/usr/bin:/bin", "MODE=prod"], "WorkingDir": "/srv", "User": "1000:1000"}

BASE = [
    entry("etc/", "dir"),
    entry("etc/a", data=b"a from base"),
    entry("etc/b", data=b"b from base"),
    entry("opt/", "dir"),
    entry("opt/dir/", "dir"),
    entry("opt/dir/x", data=b"x"),
    entry("opt/dir/sub/", "dir"),
    entry("opt/dir/sub/y", data=b"y"),
    entry("keep/", "dir"),
    entry("keep/k", data=b"k"),
]
UPPER = [
    entry("etc/.wh.a"),
    entry("etc/b", data=b"b from upper"),
    entry("opt/dir/z", data=b"z"),  # before the marker: the layer's own entries stay
    entry("opt/dir/.wh..wh..opq"),
    entry("keep/.wh.nothing-there"),
]
TOP = [
    entry("srv/", "dir", uid=1000, gid=1000, mode=0o750),
    entry("srv/app.conf", data=b"port=8080\n", uid=1000, gid=1000, mode=0o640),
    entry("usr/bin/app", data=b"app", mode=0o755),
]


class OciSource(RootfsTestCase):
    def layout(self, layers=(BASE, UPPER, TOP), config=CONFIG, gzip_layers=(2,)):
        path = os.path.join(self.work, "layout")
        manifest = add_image(path, list(layers), config, gzip_layers)
        return write_layout(path, [manifest])

    def check_image(self, image):
        self.assertIsNone(stat(image, "/etc/a"))
        self.assertEqual(cat(image, "/etc/b"), b"b from upper")
        self.assertEqual(names(image, "/opt/dir"), {"z"})
        self.assertEqual(names(image, "/keep"), {"k"})
        srv = stat(image, "/srv/app.conf")
        self.assertEqual((srv["uid"], srv["gid"], srv["mode"]), (1000, 1000, 0o640))
        self.assertEqual(stat(image, "/srv")["mode"], 0o750)
        self.assertEqual(stat(image, "/etc")["uid"], 0)
        self.assertEqual(image_config(image), {
            "entrypoint": CONFIG["Entrypoint"], "cmd": CONFIG["Cmd"], "env": CONFIG["Env"],
            "working_dir": "/srv", "user": "1000:1000"})

    def test_layout_directory_layers_apply_in_order_with_whiteouts(self):
        self.check_image(self.build(self.layout()))

    def test_oci_archive_gives_the_same_image(self):
        archive = write_oci_archive(os.path.join(self.work, "image.oci.tar"), self.layout())
        self.check_image(self.build(archive))

    def test_guest_programs_are_added_to_an_oci_image(self):
        image = self.build(self.layout())
        self.assertEqual(names(image, "/sbin"), {"ember-init", "ember-agent"})

    def test_config_without_a_config_object_gives_an_empty_image_config(self):
        image = self.build(self.layout(config=None))
        self.assertEqual(image_config(image)["entrypoint"], [])

    def test_multi_platform_index_picks_this_hosts_image(self):
        path = os.path.join(self.work, "layout")
        amd64 = add_image(path, [BASE, UPPER, TOP], CONFIG)
        arm64 = add_image(path, [[entry("arm-only", data=b"arm")]], {})
        nested = {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": [
            dict(arm64, platform={"architecture": "arm64", "os": "linux"}),
            dict(amd64, platform={"architecture": "amd64", "os": "linux"}),
        ]}
        index_blob = dict(mediaType=INDEX_TYPE, **add_blob(path, json.dumps(nested).encode()))
        image = self.build(write_layout(path, [index_blob]))
        self.check_image(image)
        self.assertIsNone(stat(image, "/arm-only"))


class HostileOci(RootfsTestCase):
    def layout(self, layers, path=None):
        path = path or os.path.join(self.work, "layout")
        return write_layout(path, [add_image(path, layers, CONFIG)])

    def manifest(self, layout):
        """The layout's one manifest: its descriptor and its body."""
        with open(os.path.join(layout, "index.json")) as f:
            descriptor = json.load(f)["manifests"][0]
        with open(self.blob_path(layout, descriptor)) as f:
            return descriptor, json.load(f)

    def blob_path(self, layout, descriptor):
        return os.path.join(layout, "blobs", "sha256", descriptor["digest"].split(":")[1])

    def test_layer_not_matching_its_digest_is_refused(self):
        layout = self.layout([BASE, TOP])
        manifest, body = self.manifest(layout)
        blob = self.blob_path(layout, body["layers"][1])
        with open(blob, "rb") as f:
            data = bytearray(f.read())
        data[data.index(b"port=8080")] ^= 0x01  # a file's data: still a readable tar
        with open(blob, "wb") as f:
            f.write(bytes(data))
        self.assert_refused(layout, "does not match its digest")

    def test_blob_of_the_wrong_size_is_refused(self):
        layout = self.layout([BASE])
        manifest, body = self.manifest(layout)
        blob = self.blob_path(layout, body["layers"][0])
        os.truncate(blob, os.path.getsize(blob) // 2)
        self.assert_refused(layout, "its descriptor says")

    def test_missing_blob_is_refused(self):
        layout = self.layout([BASE])
        manifest, _ = self.manifest(layout)
        os.unlink(self.blob_path(layout, manifest))
        self.assert_refused(layout, manifest["digest"])

    def test_blob_symlinked_out_of_the_layout_is_refused(self):
        layout = self.layout([BASE])
        manifest, _ = self.manifest(layout)
        blob = self.blob_path(layout, manifest)
        with open(blob, "rb") as f:
            outside = self.write_file("outside-manifest", f.read())
        os.unlink(blob)
        os.symlink(outside, blob)
        self.assert_refused(layout, manifest["digest"])

    def test_layer_escaping_with_dot_dot_is_refused(self):
        self.assert_refused(self.layout([BASE, [entry("../../escaped", data=b"x")]]),
                            "escapes the root")

    def test_later_layer_writing_through_an_absolute_symlink_is_refused(self):
        victim = os.path.join(self.work, "victim")
        os.mkdir(victim)
        os.chmod(victim, 0o777)
        self.assert_refused(self.layout([[entry("lib", "symlink", target=victim)],
                                         [entry("lib/evil.so", data=b"x")]]),
                            "through the symlink /lib")
        self.assertEqual(os.listdir(victim), [])

    def test_whiteout_escaping_the_root_is_refused(self):
        self.assert_refused(self.layout([BASE, [entry("../.wh.etc")]]), "escapes the root")

    def test_device_node_in_a_layer_is_refused(self):
        self.assert_refused(self.layout([BASE, [entry("dev/kmsg", "chr", major=1, minor=11)]]),
                            "device node")

    def test_index_without_an_image_for_this_host_is_refused(self):
        path = os.path.join(self.work, "layout")
        arm64 = add_image(path, [BASE], CONFIG)
        layout = write_layout(path, [dict(arm64, platform={"architecture": "arm64",
                                                            "os": "linux"})])
        self.assert_refused(layout, "no image for linux/amd64")

    def test_digest_that_is_not_sha256_hex_is_refused(self):
        path = os.path.join(self.work, "layout")
        manifest = add_image(path, [BASE], CONFIG)
        manifest["digest"] = "sha256:../../../etc/passwd"
        self.assert_refused(write_layout(path, [manifest]), "not sha256:<64 hex digits>")

    def test_docker_archive_is_refused_with_a_hint(self):
        # podman save's default format: manifest.json, repositories, configs and layer tars.
        archive = write_tar(os.path.join(self.work, "image.docker.tar"), [
            entry("manifest.json", data=b'[{"Config": "c.json", "Layers": ["l/layer.tar"]}]'),
            entry("repositories", data=b"{}"),
            entry("c.json", data=b"{}"),
            entry("l/layer.tar", data=b"\0" * 1024),
        ])
        self.assert_refused(archive, "--format oci-archive")

    def test_truncated_oci_archive_is_refused(self):
        archive = write_oci_archive(os.path.join(self.work, "image.oci.tar"),
                                    self.layout([BASE, TOP]))
        os.truncate(archive, os.path.getsize(archive) * 6 // 10)
        result = self.run_tool(archive, self.image_path(), "--format", "oci")
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
        self.assertEqual(os.listdir(self.out_dir), [])

    def test_layer_expanding_past_max_bytes_is_refused_leaving_nothing(self):
        # 4 MiB of zeros gzip to ~4 KiB: the archive is small, what it expands to is not.
        zeros = [entry("big/", "dir"), entry("big/zeros", data=bytes(4 << 20))]
        path = os.path.join(self.work, "layout")
        layout = write_layout(path, [add_image(path, [BASE, zeros], CONFIG, gzip_layers=(1,))])
        archive = write_oci_archive(os.path.join(self.work, "image.oci.tar"), layout)
        self.assertLess(os.path.getsize(archive), 1 << 20)
        line = self.assert_refused(archive, "--max-bytes 1048576", "--max-bytes", "1M")
        self.assertIn("/big/zeros", line)

    def test_many_empty_entries_count_against_max_bytes(self):
        empties = [entry("many/", "dir")] + [entry(f"many/{i}") for i in range(2100)]
        self.assert_refused(self.layout([empties]), "--max-bytes 1048576", "--max-bytes", "1M")

    def test_an_image_within_max_bytes_builds(self):
        zeros = [entry("big/", "dir"), entry("big/zeros", data=bytes(4 << 20))]
        self.build(self.layout([BASE, zeros]), "--max-bytes", "8M")


if __name__ == "__main__":
    ember_unittest.main()
