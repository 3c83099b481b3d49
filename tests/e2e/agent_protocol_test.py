"""ember-agent against an independent client of its wire format (agent_wire.py): the
documented framing, and every kind of bad input the protocol names — malformed frames,
oversized payloads, an empty request, requests out of place, a host that leaves mid-stream.
After each, the agent must still serve: a Ready on a new connection succeeds, and no child
of the agent is left behind (zombies included)."""
import os
import socket
import struct
import unittest

import ember_unittest
from agent_wire import Agent, exec_of, frame, pb, ready

INVALID_ARGUMENT = 3
UNIMPLEMENTED = 12
FAILED_PRECONDITION = 9


class AgentProtocolTest(unittest.TestCase):
    def setUp(self):
        self.agent = Agent()
        self.addCleanup(self.agent.close)

    def assert_still_serving(self):
        responses = self.agent.call(ready())
        self.assertEqual([r.WhichOneof("kind") for r in responses], ["ready"])
        self.assertTrue(self.agent.wait_no_children(), self.agent.children())

    def test_ready_and_exec_in_the_documented_framing(self):
        info = self.agent.call(ready())[0].ready
        self.assertEqual(info.protocol_version, pb.AGENT_PROTOCOL_VERSION_1)
        responses = self.agent.call(exec_of("sh", "-c", "printf abc; exit 3"))
        kinds = [r.WhichOneof("kind") for r in responses]
        self.assertEqual(kinds, ["exec_started", "output", "exit"])
        self.assertEqual(responses[1].output.data, b"abc")
        self.assertEqual(responses[1].output.stream, pb.Output.STDOUT)
        self.assertEqual(responses[2].exit.exit_code, 3)

    def test_bytes_that_are_no_request_get_an_error_and_the_connection_closes(self):
        conn = self.agent.connect()
        conn.send_raw(frame(b"\xff\xff\xff\xff"))
        responses = conn.until_final()
        self.assertEqual(responses[-1].error.code, INVALID_ARGUMENT)
        self.assertTrue(conn.closed_by_agent())
        conn.close()
        self.assert_still_serving()

    def test_a_frame_over_one_mib_is_refused_without_reading_it(self):
        conn = self.agent.connect()
        conn.send_raw(struct.pack("<I", (1 << 20) + 1) + b"x" * 1024)
        responses = conn.until_final()
        self.assertEqual(responses[-1].error.code, INVALID_ARGUMENT)
        self.assertIn("limit", responses[-1].error.message)
        conn.close()
        self.assert_still_serving()

    def test_an_empty_request_is_unimplemented(self):
        conn = self.agent.connect()
        conn.send_raw(frame(b""))
        responses = conn.until_final()
        self.assertEqual(responses[-1].error.code, UNIMPLEMENTED)
        conn.close()
        self.assert_still_serving()

    def test_a_request_of_a_kind_from_the_future_is_unimplemented(self):
        # Field 99, a length-delimited field no AgentRequest of this version has.
        conn = self.agent.connect()
        conn.send_raw(frame(b"\x9a\x06\x00"))
        self.assertEqual(conn.until_final()[-1].error.code, UNIMPLEMENTED)
        conn.close()
        self.assert_still_serving()

    def test_a_frame_cut_short_by_the_host_leaving(self):
        conn = self.agent.connect()
        conn.send_raw(struct.pack("<I", 100) + b"\x0a")
        conn.sock.shutdown(socket.SHUT_WR)
        responses = conn.until_final()
        self.assertEqual(responses[-1].error.code, INVALID_ARGUMENT)
        conn.close()
        self.assert_still_serving()

    def test_stdin_data_without_an_exec_is_refused(self):
        request = pb.AgentRequest()
        request.stdin_data.data = b"stray"
        responses = self.agent.call(request)
        self.assertEqual(responses[-1].error.code, INVALID_ARGUMENT)
        self.assert_still_serving()

    def test_stdin_data_to_an_exec_without_a_stdin_stream_ends_it(self):
        stray = pb.AgentRequest()
        stray.stdin_data.data = b"stray"
        responses = self.agent.call(exec_of("sleep", "60"), stray)
        kinds = [r.WhichOneof("kind") for r in responses]
        self.assertEqual(kinds, ["exec_started", "error"])
        self.assertEqual(responses[-1].error.code, FAILED_PRECONDITION)
        self.assert_still_serving()

    def test_another_request_on_an_execs_connection_ends_it(self):
        responses = self.agent.call(exec_of("sleep", "60"), ready())
        self.assertEqual(responses[-1].error.code, INVALID_ARGUMENT)
        self.assert_still_serving()

    def test_a_host_that_leaves_mid_stream_leaves_nothing_running(self):
        conn = self.agent.connect()
        conn.send(exec_of("sh", "-c", "yes hello; sleep 60"))
        self.assertEqual(conn.receive().WhichOneof("kind"), "exec_started")
        self.assertEqual(conn.receive().WhichOneof("kind"), "output")
        conn.close()
        self.assert_still_serving()

    def test_an_invoke_result_comes_in_pieces_of_at_most_64_kib_the_last_marked(self):
        handler = os.path.join(self.agent.scratch, "handler.py")
        with open(handler, "w") as f:
            f.write("import struct, sys\n"
                    "r, w = sys.stdin.buffer, sys.stdout.buffer\n"
                    "while True:\n"
                    "    h = r.read(4)\n"
                    "    if len(h) < 4: break\n"
                    "    r.read(struct.unpack('<I', h)[0])\n"
                    "    w.write(struct.pack('<I', 200000) + b'y' * 200000); w.flush()\n")
        start = pb.AgentRequest()
        start.start_handler.argv.extend(["/usr/bin/python3", handler])
        start.start_handler.uid = os.getuid()
        start.start_handler.gid = os.getgid()
        self.assertEqual(self.agent.call(start)[-1].WhichOneof("kind"), "ack")
        invoke = pb.AgentRequest()
        invoke.invoke.payload = b"go"
        pieces = [r.invoke_result for r in self.agent.call(invoke)]
        self.assertGreater(len(pieces), 1)
        self.assertTrue(all(len(p.output) <= 64 * 1024 for p in pieces))
        self.assertEqual([p.last for p in pieces], [False] * (len(pieces) - 1) + [True])
        self.assertEqual(b"".join(p.output for p in pieces), b"y" * 200000)

    def test_a_host_that_connects_and_leaves_at_once(self):
        for _ in range(20):
            self.agent.connect().close()
        self.assert_still_serving()

    def test_many_connections_at_once_are_all_served(self):
        conns = [self.agent.connect() for _ in range(32)]
        for conn in conns:
            conn.send(exec_of("sh", "-c", "sleep 0.2; echo done"))
        for conn in conns:
            responses = conn.until_final()
            self.assertEqual(responses[-1].exit.exit_code, 0)
            conn.close()
        self.assert_still_serving()


if __name__ == "__main__":
    ember_unittest.main()
