/* The `blk-attacks`, `net-attacks` and `vsock-attacks` scenarios: attack.c's attacks on the
 * first device of each kind, through the guest's usual drivers. The attacked queue is the one
 * the driver fills: blk's request queue, net's and vsock's TX queues. */
#include "attack.h"
#include "hostile.h"
#include "lib.h"
#include "scenario.h"
#include "tsc.h"
#include "virtio_blk.h"
#include "virtio_net.h"
#include "virtio_vsock.h"

/* Where oversized requests point for their big buffer: the guest's own image, RAM that the
 * device may read. */
#define BIG_BUFFER_ADDR 0x200000ull
#define BIG_BUFFER_BYTES 70000u
#define REPLY_CYCLES (3 * TSC_PER_SECOND)

/* --- blk ---------------------------------------------------------------------------------- */

static struct virtio_blk blk;
static uint8_t blk_id[VIRTIO_BLK_ID_BYTES];
static uint8_t blk_data[64 * 1024] __attribute__((aligned(512)));

static int blk_up(const char *cmdline, const char **reason) {
  return virtio_blk_init(&blk, cmdline, reason);
}

static int blk_add_valid(void) {
  struct virtio_blk_seg seg = {blk_id, sizeof(blk_id)};
  return virtio_blk_queue(&blk, VIRTIO_BLK_T_GET_ID, 0, &seg, 1);
}

static int blk_use(const char **reason) {
  struct virtio_blk_seg seg = {blk_id, sizeof(blk_id)};
  int status = virtio_blk_request(&blk, VIRTIO_BLK_T_GET_ID, 0, &seg, 1, reason);
  if (status != VIRTIO_BLK_S_OK) {
    if (status >= 0) *reason = "GET_ID failed";
    return 0;
  }
  return 1;
}

/* A read running past the disk's last sector: IOERR for that request alone (spec 5.2.6.1). */
static int blk_oversized(const char **reason) {
  struct virtio_blk_seg seg = {blk_data, sizeof(blk_data)};
  int status = virtio_blk_request(&blk, VIRTIO_BLK_T_IN, blk.capacity - 1, &seg, 1, reason);
  if (status != VIRTIO_BLK_S_IOERR) {
    if (status >= 0) *reason = "a read past the disk's end did not fail with IOERR";
    return 0;
  }
  return 1;
}

static const struct attack_target kBlk = {"blk",   &blk.dev, &blk.vq,       0,
                                          blk_up,  blk_use,  blk_add_valid, blk_oversized};

int blk_attacks_scenario(const struct boot_info *boot, const char **reason) {
  return run_attacks(boot, &kBlk, reason);
}

/* --- net ---------------------------------------------------------------------------------- */

#define NET_TX_QUEUE 1
#define ETH_MIN_FRAME 60

static struct virtio_net net;
static const uint8_t kNetMac[6] = {0x06, 0x00, 0x0a, 0x00, 0x00, 0x03};

static int net_up(const char *cmdline, const char **reason) {
  return virtio_net_init(&net, cmdline, kNetMac, reason);
}

/* A minimum-size broadcast frame of the local experimental ethertype 0x88b5. */
static void fill_frame(uint8_t *frame) {
  memset(frame, 0, ETH_MIN_FRAME);
  memset(frame, 0xff, 6);
  memcpy(frame + 6, net.mac, 6);
  frame[12] = 0x88;
  frame[13] = 0xb5;
}

/* The header and the frame in buffers of their own, as a driver without ANY_LAYOUT habits
 * lays them out (net_use sends both in one). */
static int net_add_valid(void) {
  memset(net.tx_buf, 0, VIRTIO_NET_HDR_BYTES);
  fill_frame(net.tx_buf + VIRTIO_NET_HDR_BYTES);
  struct virtq_buf b[2] = {{net.tx_buf, VIRTIO_NET_HDR_BYTES, 0},
                           {net.tx_buf + VIRTIO_NET_HDR_BYTES, ETH_MIN_FRAME, 0}};
  return virtq_add(&net.tx, b, 2);
}

static int net_use(const char **reason) {
  static uint8_t frame[ETH_MIN_FRAME];
  fill_frame(frame);
  return virtio_net_send(&net, frame, sizeof(frame), reason);
}

/* A TX frame past any MTU (and past 64 KiB plus the header): dropped, its chain returned. */
static int net_oversized(const char **reason) {
  memset(net.tx_buf, 0, VIRTIO_NET_HDR_BYTES);
  struct virtq_buf b[2] = {{net.tx_buf, VIRTIO_NET_HDR_BYTES, 0},
                           {(const void *)BIG_BUFFER_ADDR, BIG_BUFFER_BYTES, 0}};
  if (virtq_add(&net.tx, b, 2) < 0) {
    *reason = "net TX queue full";
    return 0;
  }
  virtio_mmio_notify(&net.dev, NET_TX_QUEUE);
  return virtio_mmio_wait_used(&net.dev, &net.tx, reason);
}

static const struct attack_target kNet = {"net",  &net.dev, &net.tx,       NET_TX_QUEUE,
                                          net_up, net_use,  net_add_valid, net_oversized};

int net_attacks_scenario(const struct boot_info *boot, const char **reason) {
  return run_attacks(boot, &kNet, reason);
}

/* --- vsock -------------------------------------------------------------------------------- */

static struct virtio_vsock vs;

static int vsock_up(const char *cmdline, const char **reason) {
  return virtio_vsock_init(&vs, cmdline, reason);
}

static void vsock_header(uint16_t op, uint32_t len) {
  vs.tx_buf.hdr = virtio_vsock_hdr(&vs, ATTACK_VSOCK_GUEST_PORT, ATTACK_VSOCK_CLOSED_PORT, op,
                                   len, VSOCK_BUF_ALLOC);
}

/* A REQUEST to a host port nobody listens on. */
static int vsock_add_valid(void) {
  vsock_header(VSOCK_OP_REQUEST, 0);
  struct virtq_buf b = {&vs.tx_buf.hdr, sizeof(vs.tx_buf.hdr), 0};
  return virtq_add(&vs.tx, &b, 1);
}

/* The device's answer to the port pair of vsock_header: an RST, through the RX queue. */
static int await_rst(const char **reason) {
  uint64_t deadline = rdtsc() + REPLY_CYCLES;
  for (;;) {
    const struct vsock_packet *p = virtio_vsock_poll(&vs);
    if (p && p->hdr.dst_port == ATTACK_VSOCK_GUEST_PORT && p->hdr.op == VSOCK_OP_RST) return 1;
    if (rdtsc() > deadline) {
      *reason = "no RST came back";
      return 0;
    }
  }
}

/* A REQUEST to a closed port is served when it is taken and answered with an RST. */
static int vsock_use(const char **reason) {
  return virtio_vsock_send(&vs, ATTACK_VSOCK_GUEST_PORT, ATTACK_VSOCK_CLOSED_PORT,
                           VSOCK_OP_REQUEST, 0, 0, 0, 0, reason) &&
         await_rst(reason);
}

/* An RW packet whose length passes the 64 KiB maximum (with the buffer to back it): taken,
 * counted as malformed and answered with an RST. */
static int vsock_oversized(const char **reason) {
  vsock_header(VSOCK_OP_RW, BIG_BUFFER_BYTES);
  struct virtq_buf b[2] = {{&vs.tx_buf.hdr, sizeof(vs.tx_buf.hdr), 0},
                           {(const void *)BIG_BUFFER_ADDR, BIG_BUFFER_BYTES, 0}};
  return virtio_vsock_send_bufs(&vs, b, 2, reason) && await_rst(reason);
}

static const struct attack_target kVsock = {"vsock",  &vs.dev,  &vs.tx,          VSOCK_TX_QUEUE,
                                            vsock_up, vsock_use, vsock_add_valid, vsock_oversized};

int vsock_attacks_scenario(const struct boot_info *boot, const char **reason) {
  return run_attacks(boot, &kVsock, reason);
}
