/* Hostile vsock drivers, against tests/integration/hostile_vsock_test.cc:
 * - `vsock-tiny-rx`: connects out to host port VSOCK_HOST_PORT with a single 44-byte RX
 *   buffer posted (a header and no room for data), puts it back at the head of the ring and
 *   lets the host send data. After a while it posts full buffers behind it: the host's data
 *   must arrive there, or the device must refuse the tiny buffer (NEEDS_RESET); a device that
 *   keeps trying to fill it never delivers and spins its VMM thread.
 * - `vsock-req-churn`: posts no RX buffer at all and sends REQUEST after REQUEST for the same
 *   port pair to an accepting host port, a ring's worth per avail.idx store, for a few
 *   seconds: each second REQUEST resets the connection the first one opened. Whatever the
 *   device keeps per removed connection grows with every cycle. */
#include "flood_ring.h"
#include "hostile.h"
#include "lib.h"
#include "scenario.h"
#include "serial.h"
#include "tsc.h"
#include "virtio_vsock.h"
#include "vsock_ports.h"

/* The guest's port for its connections. */
#define GUEST_PORT 49153
#define CONNECT_CYCLES (20 * TSC_PER_SECOND)
/* How long the tiny buffer alone stays at the head of the ring with the host's data waiting,
 * and then how long the full buffers behind it may take to receive that data. */
#define TINY_HOLD_CYCLES (2 * TSC_PER_SECOND)
#define DELIVERY_CYCLES (5 * TSC_PER_SECOND)
#define CHURN_CYCLES (6 * TSC_PER_SECOND)
#define STALL_CYCLES (2 * TSC_PER_SECOND)
#define FULL_BUFFERS 4

static struct virtio_vsock vs;

static int needs_reset(void) {
  return (virtio_mmio_read(&vs.dev, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET) != 0;
}

/* --- vsock-tiny-rx ------------------------------------------------------------------------ */

static struct vsock_hdr tiny;
static struct vsock_packet full[FULL_BUFFERS];
static const void *rx_buffer[VIRTQ_MAX_SIZE]; /* by head */

static void post(const void *buf, uint32_t len) {
  struct virtq_buf b = {buf, len, 1};
  int head = virtq_add(&vs.rx, &b, 1);
  if (head >= 0) rx_buffer[head] = buf;
  virtio_mmio_notify(&vs.dev, VSOCK_RX_QUEUE);
}

/* The next packet the device returned before `deadline` (its buffer is not re-posted), or 0. */
static const struct vsock_packet *next_rx(uint64_t deadline) {
  while (!virtq_has_used(&vs.rx)) {
    if (rdtsc() > deadline) return 0;
  }
  uint32_t len;
  int head = virtq_get_used(&vs.rx, &len);
  return head < 0 ? 0 : rx_buffer[head];
}

static int connect_through_tiny(const char **reason) {
  post(&tiny, sizeof(tiny));
  if (!virtio_vsock_send(&vs, GUEST_PORT, VSOCK_HOST_PORT, VSOCK_OP_REQUEST, 0, 0, 0, 0, reason))
    return 0;
  const struct vsock_packet *p = next_rx(rdtsc() + CONNECT_CYCLES);
  if (!p) {
    *reason = "no answer to the REQUEST";
    return 0;
  }
  if (p->hdr.op != VSOCK_OP_RESPONSE) {
    *reason = p->hdr.op == VSOCK_OP_RST ? "the host refused the guest's connection"
                                        : "the answer to the REQUEST is not a RESPONSE";
    return 0;
  }
  return 1;
}

int vsock_tiny_rx_scenario(const struct boot_info *boot, const char **reason) {
  if (!virtio_vsock_open(&vs, boot->cmdline, reason) || !connect_through_tiny(reason)) return 0;
  post(&tiny, sizeof(tiny));
  serial_puts(VSOCK_TINY_RX_MARKER);
  /* The tiny buffer alone: a control packet may come back in it, data cannot. */
  uint64_t hold_until = rdtsc() + TINY_HOLD_CYCLES;
  const struct vsock_packet *p;
  while ((p = next_rx(hold_until))) {
    if (p->hdr.op == VSOCK_OP_RW && p->hdr.len > 0) {
      *reason = "the device put data in a buffer with no room for it";
      return 0;
    }
    post(&tiny, sizeof(tiny));
  }
  for (int i = 0; i < FULL_BUFFERS; i++) post(&full[i], sizeof(full[i]));
  uint64_t want = strlen(VSOCK_TINY_RX_DATA), got = 0;
  uint64_t deadline = rdtsc() + DELIVERY_CYCLES;
  while (got < want) {
    if (needs_reset()) {
      serial_puts("vsock-tiny-rx: the device refused the header-only buffer\n");
      return 1;
    }
    p = next_rx(deadline);
    if (!p) {
      *reason = "the host's data never arrived";
      return 0;
    }
    if (p->hdr.op != VSOCK_OP_RW) continue;
    if (p->hdr.len > want - got || (const void *)p == &tiny ||
        memcmp(p->payload, VSOCK_TINY_RX_DATA + got, p->hdr.len) != 0) {
      *reason = "the data that arrived is not what the host sent";
      return 0;
    }
    got += p->hdr.len;
  }
  serial_puts("vsock-tiny-rx: the host's data arrived\n");
  return 1;
}

/* --- vsock-req-churn ---------------------------------------------------------------------- */

static struct flood_ring tx;
static struct vsock_hdr request;

/* RX and event queues as usual but left empty; TX a flood ring whose every entry is the
 * same REQUEST. */
static int open_for_churn(const char *cmdline, const char **reason) {
  if (!virtio_mmio_find(cmdline, VIRTIO_ID_VSOCK, &vs.dev, reason) ||
      !virtio_mmio_negotiate(&vs.dev, 0, 0, reason) ||
      !virtio_mmio_setup_queue(&vs.dev, VSOCK_RX_QUEUE, &vs.rx, reason) ||
      !flood_ring_setup(&vs.dev, VSOCK_TX_QUEUE, &tx, reason) ||
      !virtio_mmio_setup_queue(&vs.dev, VSOCK_EVENT_QUEUE, &vs.ev, reason) ||
      !virtio_mmio_driver_ok(&vs.dev, reason)) {
    return 0;
  }
  uint64_t cid = virtio_mmio_config32(&vs.dev, 0) | (uint64_t)virtio_mmio_config32(&vs.dev, 4) << 32;
  request = (struct vsock_hdr){.src_cid = cid,
                               .dst_cid = VSOCK_HOST_CID,
                               .src_port = GUEST_PORT,
                               .dst_port = VSOCK_CHURN_PORT,
                               .type = VSOCK_TYPE_STREAM,
                               .op = VSOCK_OP_REQUEST,
                               .buf_alloc = VSOCK_BUF_ALLOC};
  tx.desc[0] = (struct virtq_desc){(uint64_t)&request, sizeof(request), 0, 0};
  return 1;
}

/* Waits until at most `pending` published entries are left for the device to take. */
static int wait_taken(uint16_t pending) {
  uint64_t deadline = rdtsc() + STALL_CYCLES;
  uint32_t polls = 0;
  while ((uint16_t)(tx.avail.idx - flood_ring_used_idx(&tx)) > pending) {
    if (((++polls & 0xfff) == 0 && needs_reset()) || rdtsc() > deadline) return 0;
  }
  return 1;
}

int vsock_req_churn_scenario(const struct boot_info *boot, const char **reason) {
  if (!open_for_churn(boot->cmdline, reason)) return 0;
  uint16_t half = tx.size / 2;
  uint64_t sent = 0;
  serial_puts(VSOCK_CHURN_MARKER);
  uint64_t deadline = rdtsc() + CHURN_CYCLES;
  /* Half a ring at a time, once the device has taken the half before: never more than the
   * ring size ahead of it. */
  while (rdtsc() < deadline && wait_taken(half)) {
    flood_ring_publish(&tx, half);
    flood_ring_kick(&vs.dev, VSOCK_TX_QUEUE, &tx);
    sent += half;
  }
  if (!wait_taken(0)) {
    *reason = needs_reset() ? "device needs reset" : "the device stopped taking packets";
    return 0;
  }
  serial_puts("vsock-req-churn: sent ");
  serial_put_dec(sent);
  serial_puts(" REQUESTs\n");
  return 1;
}
