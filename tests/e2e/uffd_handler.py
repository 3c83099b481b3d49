"""A page-fault handler as Firecracker's Uffd memory backend expects one, for the tests:
    uffd_handler.py SOCKET MEMORY_FILE MODE
listens on SOCKET, takes the uffd and the JSON region mappings the VMM sends with it
(SCM_RIGHTS), maps MEMORY_FILE and serves each fault with UFFDIO_COPY from it; pages a
UFFD_EVENT_REMOVE took away come back as zero pages (UFFDIO_ZEROPAGE). MODE:
  serve   as above, until killed
  close   closes the connection at once, without taking anything, and exits
  silent  takes the uffd and the mappings, then never answers a fault (until killed)
It prints "listening", then "mappings <json>", then "served <n>" after its first fault and
every 64th, so a test can see how far it got."""
import array
import ctypes
import fcntl
import json
import mmap
import os
import select
import signal
import socket
import struct
import sys

UFFD_EVENT_PAGEFAULT = 0x12
UFFD_EVENT_REMOVE = 0x15
# _IOWR(0xAA, nr, size) of <linux/userfaultfd.h>: struct uffdio_copy is 40 bytes,
# struct uffdio_zeropage 32.
UFFDIO_COPY = 0xC028AA03
UFFDIO_ZEROPAGE = 0xC020AA04
PAGE = 4096
MSG_SIZE = 32  # struct uffd_msg


def receive(conn):
    fds = array.array("i")
    data, ancillary, _, _ = conn.recvmsg(1 << 16, socket.CMSG_SPACE(4 * fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    if len(fds) != 1:
        sys.exit(f"expected one fd with the mappings, got {len(fds)}")
    while True:  # the JSON may follow the fd in more than one read
        try:
            return fds[0], json.loads(data)
        except ValueError:
            more = conn.recv(1 << 16)
            if not more:
                sys.exit("the VMM closed the socket inside the mappings")
            data += more


def ioctl(fd, request, fmt, *values):
    buf = bytearray(struct.pack(fmt, *values))
    try:
        fcntl.ioctl(fd, request, buf, True)
    except OSError as error:
        if error.errno != 17:  # EEXIST: another fault got the page there first
            raise


def serve(uffd, mappings, memory_path):
    with open(memory_path, "rb") as f:
        memory = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    source = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    removed = set()
    served = 0
    poller = select.poll()
    poller.register(uffd, select.POLLIN)
    while True:
        poller.poll()
        try:
            data = os.read(uffd, MSG_SIZE * 16)
        except BlockingIOError:
            continue
        for at in range(0, len(data), MSG_SIZE):
            event = data[at]
            first, second = struct.unpack_from("QQ", data, at + 8)
            if event == UFFD_EVENT_REMOVE:
                removed.update(range(first, second, PAGE))
                continue
            if event != UFFD_EVENT_PAGEFAULT:
                continue
            page = second & ~(PAGE - 1)  # pagefault: flags, then the address
            region = next(m for m in mappings
                          if m["base_host_virt_addr"] <= page
                          < m["base_host_virt_addr"] + m["size"])
            if page in removed:
                removed.discard(page)
                ioctl(uffd, UFFDIO_ZEROPAGE, "QQQq", page, PAGE, 0, 0)
            else:
                offset = region["offset"] + page - region["base_host_virt_addr"]
                ioctl(uffd, UFFDIO_COPY, "QQQQq", page, source + offset, PAGE, 0, 0)
            served += 1
            if served % 64 == 1:
                print("served", served, flush=True)


def main():
    socket_path, memory_path, mode = sys.argv[1:4]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(1)
    print("listening", flush=True)
    conn, _ = listener.accept()
    if mode == "close":
        conn.close()
        return
    uffd, mappings = receive(conn)
    print("mappings", json.dumps(mappings), flush=True)
    if mode == "silent":
        while True:
            signal.pause()
    serve(uffd, mappings, memory_path)


if __name__ == "__main__":
    main()
