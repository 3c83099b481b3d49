"""An independent client of ember-agent's protocol (proto/ember/v1/agent.proto), written from
the .proto alone: frames are a 4-byte little-endian length and the serialized message. It
shares no code with the C++ client (vmm/agent_client), so the tests that use it check the
agent against the documented wire format, and can send what no well-behaved client would."""
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

BUILD_DIR = os.environ.get("EMBER_BUILD_DIR", "")
sys.path.insert(0, os.path.join(BUILD_DIR, "python"))

from ember.v1 import agent_pb2 as pb  # noqa: E402

MAX_FRAME = 1 << 20
FINAL = {"ready", "exit", "ack", "error", "post_restore_result"}


def frame(message_bytes):
    return struct.pack("<I", len(message_bytes)) + message_bytes


class Connection:
    """One connection to the agent; reads whole frames."""

    def __init__(self, path, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buffer = b""

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, request):
        self.send_raw(frame(request.SerializeToString()))

    def receive(self):
        """The next AgentResponse, or None once the agent closed the connection."""
        while True:
            if len(self.buffer) >= 4:
                (length,) = struct.unpack("<I", self.buffer[:4])
                if length > MAX_FRAME:
                    raise ValueError(f"agent sent a {length}-byte frame")
                if len(self.buffer) >= 4 + length:
                    payload, self.buffer = self.buffer[4:4 + length], self.buffer[4 + length:]
                    response = pb.AgentResponse()
                    response.ParseFromString(payload)
                    return response
            data = self.sock.recv(1 << 16)
            if not data:
                return None
            self.buffer += data

    def until_final(self):
        """Every response up to and including the final one."""
        responses = []
        while True:
            response = self.receive()
            if response is None:
                return responses
            responses.append(response)
            kind = response.WhichOneof("kind")
            if kind in FINAL or (kind == "invoke_result" and response.invoke_result.last):
                return responses

    def closed_by_agent(self):
        """True when the agent has closed its side (reads EOF)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


class Agent:
    """The real ember-agent binary on a Unix socket in a scratch directory."""

    def __init__(self, extra_args=(), wrapper=()):
        self.scratch = tempfile.mkdtemp(prefix="ember-agent-py-")
        self.path = os.path.join(self.scratch, "agent.sock")
        binary = os.path.join(BUILD_DIR, "bin", "ember-agent")
        self.process = subprocess.Popen(
            list(wrapper) + [binary, "--unix", self.path, "--no-set-clock",
                             "--image-config", os.path.join(self.scratch, "none.pb")]
            + list(extra_args),
            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.path):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ember-agent did not start: " + self.process.stderr.read().decode())
            time.sleep(0.02)

    def connect(self):
        return Connection(self.path)

    def call(self, request, *more):
        conn = self.connect()
        try:
            conn.send(request)
            for extra in more:
                conn.send(extra)
            return conn.until_final()
        finally:
            conn.close()

    def children(self):
        """(pid, state) of the agent's children, from /proc."""
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            if int(fields[1]) == self.process.pid:
                found.append((int(name), fields[0]))
        return found

    def wait_no_children(self, timeout=10):
        deadline = time.monotonic() + timeout
        while self.children():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self):
        # What the agent runs leads its own process group: killed with it.
        for pid, _ in self.children():
            try:
                os.killpg(pid, 9)
            except OSError:
                pass
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.process.stderr.close()
        subprocess.run(["rm", "-rf", self.scratch], check=False)


def ready():
    request = pb.AgentRequest()
    request.ready.SetInParent()
    return request


def exec_of(*argv, **fields):
    request = pb.AgentRequest()
    request.exec.argv.extend(argv)
    request.exec.uid = os.getuid()
    request.exec.gid = os.getgid()
    for name, value in fields.items():
        setattr(request.exec, name, value)
    return request
