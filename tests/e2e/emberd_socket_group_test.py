"""emberd's Unix socket delegated to a group (issue 21, item 3): with --socket-group it is 0660
root:GROUP and emberd admits a connection only when its peer (SO_PEERCRED) is root or in
GROUP, even where the file mode would let another user in; without it the socket is 0600
root, and the peer check admits root (and emberd's own uid) only. Clients run as other users
(needs root); fake_vmm.py as the VMM."""
import os
import stat
import subprocess
import sys
import unittest

import ember_unittest
import ember_client as ec
from ember_client import api

FAKE_VMM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_vmm.py")
GROUP = 23470      # the operator's group for the socket
MEMBER = 23471     # a user in it (by a supplementary group)
STRANGER = 23472   # a user who is not

# A gRPC client run as another user: prints the status code of one List call.
CLIENT = """
import sys
sys.path.insert(0, sys.argv[2])
import grpc
from ember.v1 import api_pb2, api_pb2_grpc
with grpc.insecure_channel("unix://" + sys.argv[1]) as channel:
    try:
        api_pb2_grpc.EmberStub(channel).List(api_pb2.ListRequest(), timeout=5)
        print("OK")
    except grpc.RpcError as error:
        print(error.code().name)
"""


def list_as(socket_path, uid, gid, groups=()):
    result = subprocess.run(
        ["/usr/bin/python3", "-c", CLIENT, socket_path, os.path.join(ec.BUILD_DIR, "python")],
        user=uid, group=gid, extra_groups=list(groups), capture_output=True, text=True,
        timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"})
    return result.stdout.strip() or result.stderr


class SocketGroupTest(unittest.TestCase):
    def setUp(self):
        self.emberd = ec.Emberd(extra_args=["--no-jail", "--vmm", FAKE_VMM, "--socket-group", str(GROUP)])
        self.addCleanup(self.emberd.close)
        os.chmod(self.emberd.dir, 0o755)  # the scratch dir is 0700: let the clients reach in

    def test_the_socket_is_0660_root_and_the_group(self):
        st = os.stat(self.emberd.socket)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o660)
        self.assertEqual((st.st_uid, st.st_gid), (0, GROUP))

    def test_a_member_of_the_group_may_call(self):
        self.assertEqual(list_as(self.emberd.socket, MEMBER, MEMBER, [GROUP]), "OK")

    def test_a_stranger_cannot_connect(self):
        self.assertEqual(list_as(self.emberd.socket, STRANGER, STRANGER), "UNAVAILABLE")

    def test_a_stranger_is_refused_by_the_peer_check_even_through_an_open_file_mode(self):
        os.chmod(self.emberd.socket, 0o666)
        self.assertEqual(list_as(self.emberd.socket, STRANGER, STRANGER), "UNAVAILABLE")
        self.assertIn(f"(uid {STRANGER}, gid {STRANGER}) refused", self.emberd.read_log())
        # Root and members still get in on the same socket.
        self.assertEqual(list_as(self.emberd.socket, MEMBER, GROUP), "OK")
        self.emberd.stub.List(api.ListRequest(), timeout=10)


class DefaultSocketTest(unittest.TestCase):
    def test_without_a_group_the_socket_is_0600_root_and_a_stranger_cannot_call(self):
        emberd = ec.Emberd(extra_args=["--no-jail", "--vmm", FAKE_VMM])
        self.addCleanup(emberd.close)
        os.chmod(emberd.dir, 0o755)
        st = os.stat(emberd.socket)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        self.assertEqual(st.st_uid, 0)
        self.assertEqual(list_as(emberd.socket, STRANGER, STRANGER, [GROUP]), "UNAVAILABLE")

    def test_without_a_group_a_stranger_is_refused_by_the_peer_check_through_an_open_mode(self):
        emberd = ec.Emberd(extra_args=["--no-jail", "--vmm", FAKE_VMM])
        self.addCleanup(emberd.close)
        os.chmod(emberd.dir, 0o755)
        os.chmod(emberd.socket, 0o666)
        self.assertEqual(list_as(emberd.socket, STRANGER, STRANGER, [GROUP]), "UNAVAILABLE")
        self.assertIn(f"(uid {STRANGER}, gid {STRANGER}) refused", emberd.read_log())
        emberd.stub.List(api.ListRequest(), timeout=10)  # root still gets in


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("SKIPPED: needs root (clients run as other users)")
        sys.exit(ec.SKIP)
    ember_unittest.main()
