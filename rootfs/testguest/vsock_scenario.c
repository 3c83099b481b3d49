/* The `vsock` scenarios, against the host side in tests/integration/virtio_vsock_test.cc:
 * - `vsock`: connects out to host port VSOCK_HOST_PORT and sends VSOCK_MARKER, and accepts one
 *   connection on VSOCK_ECHO_PORT whose data it echoes until the host shuts it down.
 * - `vsock-reset`: connects out and sends the marker, then waits for the device's
 *   TRANSPORT_RESET event, which a snapshot restore must deliver. */
#include "lib.h"
#include "scenario.h"
#include "serial.h"
#include "tsc.h"
#include "virtio_vsock.h"
#include "vsock_ports.h"

/* The guest's port for its own connection. */
#define GUEST_PORT 49152
/* Time limits, in TSC cycles (about 20-40 s at 2-3 GHz). */
#define ECHO_CYCLES 60000000000ull
#define RESET_CYCLES 120000000000ull

static struct virtio_vsock vs;

static int init(const struct boot_info *boot, const char **reason) {
  if (!virtio_vsock_init(&vs, boot->cmdline, reason)) return 0;
  serial_puts("vsock: guest cid ");
  serial_put_dec(vs.cid);
  serial_putc('\n');
  if (vs.cid != VSOCK_GUEST_CID) {
    *reason = "guest_cid is not the configured one";
    return 0;
  }
  return virtio_vsock_send(&vs, GUEST_PORT, VSOCK_HOST_PORT, VSOCK_OP_REQUEST, 0, 0, 0, 0,
                           reason);
}

static int send_marker(const char **reason) {
  if (!virtio_vsock_send(&vs, GUEST_PORT, VSOCK_HOST_PORT, VSOCK_OP_RW, 0, 0, VSOCK_MARKER,
                         (uint32_t)strlen(VSOCK_MARKER), reason)) {
    return 0;
  }
  serial_puts("vsock: marker sent\n");
  return 1;
}

/* A packet for the guest's own connection: 1 when the marker went out, -1 on failure. */
static int handle_own(const struct vsock_hdr *h, int shut_down_after, const char **reason) {
  if (h->op == VSOCK_OP_RST) {
    *reason = "the host refused the guest's connection";
    return -1;
  }
  if (h->op != VSOCK_OP_RESPONSE) return 0;
  if (!send_marker(reason)) return -1;
  if (shut_down_after &&
      !virtio_vsock_send(&vs, GUEST_PORT, VSOCK_HOST_PORT, VSOCK_OP_SHUTDOWN,
                         VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND, 0, 0, 0, reason)) {
    return -1;
  }
  return 1;
}

int vsock_scenario(const struct boot_info *boot, const char **reason) {
  if (!init(boot, reason)) return 0;
  serial_puts("vsock: ready\n");
  int marker_sent = 0, echo_done = 0;
  uint32_t peer = 0, fwd_cnt = 0;
  uint64_t deadline = rdtsc() + ECHO_CYCLES;
  while (!(marker_sent && echo_done)) {
    if (rdtsc() > deadline) {
      *reason = marker_sent ? "no echo connection ended in time" : "no RESPONSE from the host";
      return 0;
    }
    const struct vsock_packet *p = virtio_vsock_poll(&vs);
    if (!p) continue;
    const struct vsock_hdr h = p->hdr;
    if (h.dst_port == GUEST_PORT) {
      if (marker_sent) continue; /* the device's RST that completes our shutdown */
      int r = handle_own(&h, 1, reason);
      if (r < 0) return 0;
      if (r > 0) marker_sent = 1;
      continue;
    }
    if (h.dst_port != VSOCK_ECHO_PORT || (peer && h.src_port != peer && h.op != VSOCK_OP_REQUEST)) {
      if (h.op != VSOCK_OP_RST &&
          !virtio_vsock_send(&vs, h.dst_port, h.src_port, VSOCK_OP_RST, 0, 0, 0, 0, reason)) {
        return 0;
      }
      continue;
    }
    switch (h.op) {
      case VSOCK_OP_REQUEST:
        peer = h.src_port;
        fwd_cnt = 0;
        if (!virtio_vsock_send(&vs, VSOCK_ECHO_PORT, peer, VSOCK_OP_RESPONSE, 0, 0, 0, 0, reason))
          return 0;
        serial_puts("vsock: accepted\n");
        break;
      case VSOCK_OP_RW:
        if (h.len > VSOCK_MAX_PAYLOAD) {
          *reason = "RW packet longer than the buffer";
          return 0;
        }
        fwd_cnt += h.len;
        if (!virtio_vsock_send(&vs, VSOCK_ECHO_PORT, peer, VSOCK_OP_RW, 0, fwd_cnt, p->payload,
                               h.len, reason))
          return 0;
        break;
      case VSOCK_OP_CREDIT_REQUEST:
        if (!virtio_vsock_send(&vs, VSOCK_ECHO_PORT, peer, VSOCK_OP_CREDIT_UPDATE, 0, fwd_cnt, 0,
                               0, reason))
          return 0;
        break;
      case VSOCK_OP_SHUTDOWN:
        if (!virtio_vsock_send(&vs, VSOCK_ECHO_PORT, peer, VSOCK_OP_RST, 0, fwd_cnt, 0, 0, reason))
          return 0;
        echo_done = 1;
        break;
      case VSOCK_OP_RST:
        echo_done = 1;
        break;
      default:
        break;
    }
  }
  serial_puts("vsock: echoed ");
  serial_put_dec(fwd_cnt);
  serial_puts(" bytes\n");
  return 1;
}

int vsock_reset_scenario(const struct boot_info *boot, const char **reason) {
  if (!init(boot, reason)) return 0;
  int connected = 0;
  uint64_t deadline = rdtsc() + RESET_CYCLES;
  for (;;) {
    if (rdtsc() > deadline) {
      *reason = connected ? "no TRANSPORT_RESET event" : "no RESPONSE from the host";
      return 0;
    }
    uint32_t id;
    if (virtio_vsock_poll_event(&vs, &id)) {
      if (id != VSOCK_EVENT_TRANSPORT_RESET) {
        *reason = "unknown vsock event";
        return 0;
      }
      serial_puts("vsock: transport reset\n");
      return 1;
    }
    const struct vsock_packet *p = virtio_vsock_poll(&vs);
    if (!p || p->hdr.dst_port != GUEST_PORT || connected) continue;
    const struct vsock_hdr h = p->hdr;
    int r = handle_own(&h, 0, reason);
    if (r < 0) return 0;
    if (r > 0) {
      connected = 1;
      serial_puts("vsock: connected\n");
    }
  }
}
