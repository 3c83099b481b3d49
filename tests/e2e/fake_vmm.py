#!/usr/bin/python3
"""A stand-in for ember-vmm that speaks its control protocol (proto/ember/v1/vmm_control.proto)
and nothing else: no KVM, no guest. emberd's tests run it as `emberd --vmm` to give it a VMM
whose timing and answers they choose. Like ember-vmm it has no --help that names its flags.

Environment (inherited through emberd and its fork server):
  FAKE_VMM_ARGV_LOG          append each start's argv to this file, one JSON list a line
  FAKE_VMM_SNAPSHOT_SECONDS  CreateSnapshot writes the state file, waits this long, then writes
                             the memory file and answers (default 0)
  FAKE_VMM_SNAPSHOT_DONE     after answering a CreateSnapshot, create this file
  FAKE_VMM_RESTORE_SWAP      a restore first replaces the file at this path with other bytes
                             (a writer racing emberd between its checks and the VMM's open)
  FAKE_VMM_RESTORE_READ      a restore writes the bytes its --restore-from held to this file
  FAKE_VMM_RESTORE_LINKS     a restore first replaces each of these paths (os.pathsep between
                             them) with a symlink to /etc/shadow
  FAKE_VMM_RESTORE_FILES     a restore writes to this file, as JSON, what it read through each
                             file it was given: {"--restore-mem": ..., "--working-set": ...,
                             "--base-memory-file NAME": ...} (Latin-1 text)
  FAKE_VMM_LITTER            write this many small files beside its console (in the VM's
                             directory), so that removing the directory takes a while
  FAKE_VMM_DRIVE_LOG         append the path of each drive swap (UpdateDrive) to this file, one
                             a line, in the order the swaps arrive
  FAKE_VMM_FAIL_AFTER        before its HELLO, wait until this file exists, then exit 1 (a VMM
                             that could not build its VM)
  FAKE_VMM_IGNORE_STOP       a stop gets no answer and ends nothing (a VMM that hangs)
"""
import json
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("EMBER_BUILD_DIR", ""), "python"))
from ember.v1 import vmm_control_pb2 as ctl  # noqa: E402


def flag(argv, name):
    return argv[argv.index(name) + 1] if name in argv else None


def read_frame(conn):
    """The next request and the fds that came with it (SCM_RIGHTS, as ember-vmm takes them)."""
    header = b""
    fds = []
    while len(header) < 4:
        chunk, got, _, _ = socket.recv_fds(conn, 4 - len(header), 4)
        fds += got
        if not chunk:
            return None, fds
        header += chunk
    (length,) = struct.unpack("<I", header)
    payload = b""
    while len(payload) < length:
        chunk = conn.recv(length - len(payload))
        if not chunk:
            return None, fds
        payload += chunk
    request = ctl.ControlRequest()
    request.ParseFromString(payload)
    return request, fds


def read_given(path):
    with open(path, "rb") as f:
        return f.read().decode("latin-1")


def restore_files(argv):
    """What the restore reads through each memory-side file it was given."""
    read = {}
    for i, arg in enumerate(argv[:-1]):
        if arg in ("--restore-mem", "--working-set") and os.path.isfile(argv[i + 1]):
            read[arg] = read_given(argv[i + 1])
        elif arg == "--base-memory-file":
            name, _, given = argv[i + 1].partition("=")
            read["--base-memory-file " + name] = read_given(given)
    return read


def send(conn, message):
    payload = message.SerializeToString()
    conn.sendall(struct.pack("<I", len(payload)) + payload)


def status(state):
    return ctl.VmmStatus(pid=os.getpid(), state=state, protocol_version=1)


def main():
    argv = sys.argv[1:]
    if os.environ.get("FAKE_VMM_ARGV_LOG"):
        with open(os.environ["FAKE_VMM_ARGV_LOG"], "a") as f:
            f.write(json.dumps(argv) + "\n")
    restore = flag(argv, "--restore-from")
    if restore is not None:
        swap = os.environ.get("FAKE_VMM_RESTORE_SWAP")
        if swap:
            with open(swap + ".swap", "wb") as f:
                f.write(b"swapped in after emberd's checks")
            os.rename(swap + ".swap", swap)
        for path in filter(None, os.environ.get("FAKE_VMM_RESTORE_LINKS", "").split(os.pathsep)):
            os.unlink(path)
            os.symlink("/etc/shadow", path)
        for path in (restore, flag(argv, "--restore-mem")):
            open(path, "rb").close()  # like ember-vmm: a snapshot it cannot read is fatal
        if os.environ.get("FAKE_VMM_RESTORE_FILES"):
            with open(os.environ["FAKE_VMM_RESTORE_FILES"], "w") as out:
                json.dump(restore_files(argv), out)
        if os.environ.get("FAKE_VMM_RESTORE_READ"):
            with open(restore, "rb") as f, open(os.environ["FAKE_VMM_RESTORE_READ"], "wb") as out:
                out.write(f.read())
    litter = int(os.environ.get("FAKE_VMM_LITTER", "0"))
    if litter and flag(argv, "--serial-out"):
        litter_dir = os.path.join(os.path.dirname(flag(argv, "--serial-out")), "litter")
        os.makedirs(litter_dir, exist_ok=True)
        for n in range(litter):
            open(os.path.join(litter_dir, str(n)), "w").close()
    fail_after = os.environ.get("FAKE_VMM_FAIL_AFTER")
    if fail_after:
        while not os.path.exists(fail_after):
            time.sleep(0.01)
        return 1
    state = ctl.VmmStatus.PAUSED if restore is not None else ctl.VmmStatus.CREATED
    listener = socket.socket(fileno=int(flag(argv, "--control-fd")))
    delay = float(os.environ.get("FAKE_VMM_SNAPSHOT_SECONDS", "0"))
    while True:
        conn, _ = listener.accept()
        send(conn, ctl.VmmMessage(event=ctl.ControlEvent(kind=ctl.ControlEvent.HELLO,
                                                         status=status(state))))
        while True:
            request, fds = read_frame(conn)
            if request is None:
                break  # the controller went away; wait for the next one
            response = ctl.ControlResponse(id=request.id)
            op = request.WhichOneof("op")
            if op == "stop" and os.environ.get("FAKE_VMM_IGNORE_STOP"):
                continue
            if op in ("start", "resume"):
                state = ctl.VmmStatus.RUNNING
            elif op == "pause":
                state = ctl.VmmStatus.PAUSED
            elif op == "get_metrics":
                response.metrics_json = "{}"
            elif op == "update_drive" and os.environ.get("FAKE_VMM_DRIVE_LOG"):
                with open(os.environ["FAKE_VMM_DRIVE_LOG"], "a") as f:
                    f.write(request.update_drive.path + "\n")
            elif op == "create_snapshot":
                started = time.monotonic()
                snap = request.create_snapshot
                # Like ember-vmm: with a directory attached, the files are made in it.
                def target(path):
                    if not fds:
                        return path
                    return f"/proc/self/fd/{fds[0]}/{os.path.basename(path)}"
                with open(target(snap.state_path), "wb") as f:
                    f.write(b"fake state")
                # Like base::AtomicFile: a file of its own, renamed over the target when done.
                temp = target(f"{snap.memory_path}.tmp-{os.getpid()}-0-0")
                with open(temp, "wb") as f:
                    f.write(b"\0" * 4096)
                    f.flush()
                    time.sleep(delay)
                os.rename(temp, target(snap.memory_path))
                swap = os.environ.get("FAKE_VMM_SNAPSHOT_DIR_SWAP")
                if swap:
                    # Once written, the snapshot's directory is renamed away and its name
                    # made a symlink to the directory FAKE_VMM_SNAPSHOT_DIR_SWAP names.
                    snap_dir = os.path.dirname(snap.state_path)
                    os.rename(snap_dir, snap_dir + ".written")
                    os.symlink(swap, snap_dir)
                response.snapshot.state_path = snap.state_path
                response.snapshot.memory_path = snap.memory_path
                response.snapshot.duration_us = int((time.monotonic() - started) * 1e6) + 1
            if op != "get_metrics" and op != "create_snapshot":
                response.status.CopyFrom(status(state))
            for fd in fds:
                os.close(fd)
            send(conn, ctl.VmmMessage(response=response))
            if op == "create_snapshot" and os.environ.get("FAKE_VMM_SNAPSHOT_DONE"):
                open(os.environ["FAKE_VMM_SNAPSHOT_DONE"], "w").close()
            if op == "stop":
                send(conn, ctl.VmmMessage(event=ctl.ControlEvent(
                    kind=ctl.ControlEvent.EXITED, exit_code=0, reason=request.stop.reason)))
                return 0


if __name__ == "__main__":
    sys.exit(main())
