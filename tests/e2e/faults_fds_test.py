"""emberd out of file descriptors (issue 19, faults): clients hold more connections to its API
socket than its fd limit lets it accept. emberd stays up, neither spins nor floods its log on
the connections it cannot accept yet, and serves again once clients let go. fake_vmm.py as the
VMM; no KVM or root."""
import os
import resource
import socket
import time
import unittest

import ember_unittest
import ember_client as ec
from ember_client import api

FAKE_VMM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_vmm.py")
FD_LIMIT = 64


def limit_fds():
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


class FdExhaustionTest(unittest.TestCase):
    def test_emberd_out_of_fds_stays_up_quietly_and_serves_once_they_free_up(self):
        emberd = ec.Emberd(extra_args=["--no-jail", "--vmm", FAKE_VMM], preexec_fn=limit_fds)
        self.addCleanup(emberd.close)
        clients = []
        for _ in range(2 * FD_LIMIT):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(emberd.socket)  # waits in the backlog once emberd cannot accept
            clients.append(client)
        time.sleep(1)
        complaints = emberd.read_log().count("accept on the API socket")
        time.sleep(2)
        self.assertIsNone(emberd.proc.poll(), emberd.read_log()[-2000:])
        self.assertGreaterEqual(complaints, 1, "emberd never ran out of fds: raise the count")
        # Said once, not once per turn of a spinning loop.
        self.assertEqual(emberd.read_log().count("accept on the API socket"), complaints)
        self.assertLessEqual(complaints, 2)
        for client in clients:
            client.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                emberd.stub.List(api.ListRequest(), timeout=5)
                break
            except ec.grpc.RpcError:
                if time.monotonic() > deadline:
                    raise


if __name__ == "__main__":
    ember_unittest.main()
