/* `vsock-no-credit` (hostile.h): a vsock peer that never grants credit, against
 * tests/integration/hostile_vsock_test.cc. The device must hold the host's data back (spec
 * 5.10.6.3: the device sends no more than the driver's buf_alloc - (tx_cnt - fwd_cnt)),
 * neither sending it nor buffering it without bound, and deliver once credit comes. */
#include "hostile.h"
#include "scenario.h"
#include "serial.h"
#include "tsc.h"
#include "virtio_vsock.h"
#include "vsock_ports.h"

#define GUEST_PORT 49201
#define CONNECT_CYCLES (20 * TSC_PER_SECOND)
/* How long the guest withholds credit while the host writes. */
#define HOLD_CYCLES (3 * TSC_PER_SECOND)
#define DELIVERY_CYCLES (5 * TSC_PER_SECOND)

static struct virtio_vsock vs;

/* Sends a control packet to the host port with the guest's credit as given. */
static int send_control(uint16_t op, uint32_t buf_alloc, const char **reason) {
  vs.tx_buf.hdr = virtio_vsock_hdr(&vs, GUEST_PORT, VSOCK_HOST_PORT, op, 0, buf_alloc);
  struct virtq_buf b = {&vs.tx_buf.hdr, sizeof(vs.tx_buf.hdr), 0};
  return virtio_vsock_send_bufs(&vs, &b, 1, reason);
}

/* The next packet for GUEST_PORT before `deadline`, or 0. */
static const struct vsock_packet *next_packet(uint64_t deadline) {
  for (;;) {
    const struct vsock_packet *p = virtio_vsock_poll(&vs);
    if (p && p->hdr.dst_port == GUEST_PORT) return p;
    if (rdtsc() > deadline) return 0;
  }
}

int vsock_no_credit_scenario(const struct boot_info *boot, const char **reason) {
  if (!virtio_vsock_init(&vs, boot->cmdline, reason) ||
      !send_control(VSOCK_OP_REQUEST, 0, reason)) {
    return 0;
  }
  const struct vsock_packet *p = next_packet(rdtsc() + CONNECT_CYCLES);
  if (!p || p->hdr.op != VSOCK_OP_RESPONSE) {
    *reason = "no RESPONSE to the REQUEST";
    return 0;
  }
  serial_puts(NO_CREDIT_MARKER);
  uint64_t hold_until = rdtsc() + HOLD_CYCLES, credit_requests = 0;
  while ((p = next_packet(hold_until))) {
    if (p->hdr.op == VSOCK_OP_RW && p->hdr.len > 0) {
      *reason = "the device sent data the guest gave no credit for";
      return 0;
    }
    if (p->hdr.op == VSOCK_OP_CREDIT_REQUEST) credit_requests++;
  }
  serial_puts("vsock-no-credit: credit requests ");
  serial_put_dec(credit_requests);
  serial_putc('\n');

  if (!send_control(VSOCK_OP_CREDIT_UPDATE, NO_CREDIT_GRANT_BYTES, reason)) return 0;
  serial_puts(NO_CREDIT_GRANT_MARKER);
  uint64_t got = 0, deadline = rdtsc() + DELIVERY_CYCLES;
  while ((p = next_packet(deadline))) {
    if (p->hdr.op == VSOCK_OP_RW) got += p->hdr.len;
    /* Once data flows, a short wait shows whether more than the credit follows. */
    if (got > 0) deadline = rdtsc() + TSC_PER_SECOND;
  }
  serial_puts("vsock-no-credit: received ");
  serial_put_dec(got);
  serial_putc('\n');
  if (got == 0) {
    *reason = "no data arrived once credit was granted";
    return 0;
  }
  if (got > NO_CREDIT_GRANT_BYTES) {
    *reason = "the device sent more data than the credit granted";
    return 0;
  }
  return 1;
}
