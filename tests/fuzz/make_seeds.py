#!/usr/bin/env python3
"""Writes the hand-made seeds of tests/fuzz/corpus/ from protobuf text (protoc --encode), so
that they can be read and regenerated: control-channel and agent frames, a snapshot state
with one device of each kind, and Firecracker configs from tests/data/firecracker. The
device fuzzers' seeds are not made here: they are inputs the fuzzers found themselves, kept
after `-merge=1` (see tests/fuzz/CMakeLists.txt). Usage: tests/fuzz/make_seeds.py (from the
repository root)."""
import shutil
import struct
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests/fuzz/corpus"


def encode(message, proto, text):
    return subprocess.run(
        ["protoc", f"--encode=ember.v1.{message}", "-I", str(ROOT / "proto"),
         str(ROOT / "proto/ember/v1" / proto)],
        input=text.encode(), capture_output=True, check=True).stdout


def frame(payload):
    return struct.pack("<I", len(payload)) + payload


def write(target, name, data):
    (CORPUS / target).mkdir(parents=True, exist_ok=True)
    (CORPUS / target / name).write_bytes(data)


def control_seeds():
    requests = {
        "start": "id: 1 start { start_time_us: 5 }",
        "rate_limits": "id: 2 update_rate_limits { drives { drive_id: \"root\" rate_limiter {"
                       " bandwidth { size: 1000 refill_time: 100 } } } interfaces { iface_id:"
                       " \"eth0\" rx_rate_limiter { ops { size: 10 one_time_burst: 5"
                       " refill_time: 1000 } } } }",
        "snapshot": "id: 3 create_snapshot { diff: true state_path: \"/s\" memory_path: \"/m\" }",
        "update_drive": "id: 4 update_drive { drive_id: \"root\" path: \"/d\" }",
    }
    stream = b""
    for name, text in requests.items():
        one = frame(encode("ControlRequest", "vmm_control.proto", text))
        write("control_frame_fuzzer", name, one)
        stream += one
    write("control_frame_fuzzer", "all_in_one_stream", stream)


def agent_seeds():
    responses = {
        "ready": (0, "ready { agent_version: \"ember-testguest\" boot_id: 7 }"),
        "exec": (1, "exec_started { exec_id: \"e1\" pid: 3 }",
                 "output { stream: STDOUT data: \"hi\\n\" }", "exit { exit_code: 0 }"),
        "invoke": (2, "invoke_result { output: \"part\" }",
                   "invoke_result { output: \"end\" last: true handler_us: 9 }"),
        "post_restore": (3, "post_restore_result { wall_clock_ns: 1 entropy_bytes: 32"
                            " boot_id: 8 }"),
        "error": (4, "error { code: 5 message: \"no such handler\" }"),
        "ack": (5, "ack { }"),
        "stream_exec": (6, "exec_started { exec_id: \"e2\" pid: 4 }",
                        "output { stream: STDERR data: \"x\" }",
                        "exit { signal: 9 exit_code: 137 }"),
    }
    for name, (call, *texts) in responses.items():
        body = b"".join(frame(encode("AgentResponse", "agent.proto", t)) for t in texts)
        write("agent_client_fuzzer", name, bytes([call]) + body)
        # The same through the vsock backend's handshake line.
        write("agent_client_fuzzer", name + "_vsock", bytes([call | 0x80]) + b"OK 1025\n" + body)
    requests = {
        "ready": "ready { }",
        "exec": "exec { argv: \"echo\" argv: \"hi\" env: \"A=b\" cwd: \"/\" }",
        "invoke": "invoke { payload: \"x\" timeout_ms: 10 }",
        "post_restore": "post_restore { wall_clock_ns: 5 entropy: \"abcd\" hostname: \"h\" }",
    }
    for name, text in requests.items():
        write("agent_connection_fuzzer", name, frame(encode("AgentRequest", "agent.proto", text)))


def snapshot_seeds():
    queue = ("queues {{ size: 64 ready: true desc_addr: {d} driver_addr: {a} device_addr: {u}"
             " next_avail: 3 next_used: 3 }}")
    queues = [queue.format(d=0x1000 + i * 0x4000, a=0x1400 + i * 0x4000, u=0x1500 + i * 0x4000)
              for i in range(3)]
    devices = [("block_rootfs", 2, 1, "block { }"), ("net_eth0", 1, 2, "net { }"),
               ("vsock_v", 19, 3, "vsock { }")]
    text = ("config { machine_config { vcpu_count: 1 mem_size_mib: 16 } }\n"
            "memory { guest_start: 0 size: 16777216 file_offset: 0 }\n"
            "memory_file_size: 16777216 vcpus { } snapshot_id: \"0123456789abcdef\"\n")
    for name, kind, count, own in devices:
        text += (f"virtio {{ id: \"{name}\" device_type: {kind} transport {{ status: 15"
                 f" driver_features: 4294967296 {' '.join(queues[:count])} }} {own} }}\n")
    # Byte 0 even: the rest is the payload, framed with a correct CRC by the fuzzer.
    write("snapshot_state_fuzzer", "three_devices",
          b"\0" + encode("SnapshotState", "snapshot.proto", text))


def config_seeds():
    for path in sorted((ROOT / "tests/data/firecracker").glob("*.json")):
        (CORPUS / "firecracker_config_fuzzer").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, CORPUS / "firecracker_config_fuzzer" / path.name)


if __name__ == "__main__":
    control_seeds()
    agent_seeds()
    snapshot_seeds()
    config_seeds()
