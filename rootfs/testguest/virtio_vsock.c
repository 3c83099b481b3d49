#include "virtio_vsock.h"

#include "lib.h"

static void post_rx(struct virtio_vsock *vs, struct vsock_packet *buf) {
  struct virtq_buf b = {buf, sizeof(*buf), 1};
  int head = virtq_add(&vs->rx, &b, 1);
  if (head >= 0) vs->rx_by_head[head] = buf;
}

static void post_event(struct virtio_vsock *vs) {
  struct virtq_buf b = {&vs->event, sizeof(vs->event), 1};
  (void)virtq_add(&vs->ev, &b, 1);
}

int virtio_vsock_init(struct virtio_vsock *vs, const char *cmdline, const char **reason) {
  if (!virtio_vsock_open(vs, cmdline, reason)) return 0;
  for (int i = 0; i < VSOCK_RX_BUFFERS; i++) post_rx(vs, &vs->rx_bufs[i]);
  post_event(vs);
  virtio_mmio_notify(&vs->dev, VSOCK_RX_QUEUE);
  virtio_mmio_notify(&vs->dev, VSOCK_EVENT_QUEUE);
  return 1;
}

int virtio_vsock_open(struct virtio_vsock *vs, const char *cmdline, const char **reason) {
  if (!virtio_mmio_find(cmdline, VIRTIO_ID_VSOCK, &vs->dev, reason)) return 0;
  if (!virtio_mmio_negotiate(&vs->dev, 0, 0, reason)) return 0;
  if (!virtio_mmio_setup_queue(&vs->dev, VSOCK_RX_QUEUE, &vs->rx, reason) ||
      !virtio_mmio_setup_queue(&vs->dev, VSOCK_TX_QUEUE, &vs->tx, reason) ||
      !virtio_mmio_setup_queue(&vs->dev, VSOCK_EVENT_QUEUE, &vs->ev, reason)) {
    return 0;
  }
  if (!virtio_mmio_driver_ok(&vs->dev, reason)) return 0;
  uint64_t high = virtio_mmio_config32(&vs->dev, 4);
  vs->cid = high << 32 | virtio_mmio_config32(&vs->dev, 0);
  return 1;
}

struct vsock_hdr virtio_vsock_hdr(const struct virtio_vsock *vs, uint32_t src_port,
                                  uint32_t dst_port, uint16_t op, uint32_t len,
                                  uint32_t buf_alloc) {
  return (struct vsock_hdr){.src_cid = vs->cid,
                            .dst_cid = VSOCK_HOST_CID,
                            .src_port = src_port,
                            .dst_port = dst_port,
                            .len = len,
                            .type = VSOCK_TYPE_STREAM,
                            .op = op,
                            .buf_alloc = buf_alloc};
}

int virtio_vsock_send_bufs(struct virtio_vsock *vs, const struct virtq_buf *bufs, int n,
                           const char **reason) {
  if (virtq_add(&vs->tx, bufs, n) < 0) {
    *reason = "vsock TX queue full";
    return 0;
  }
  virtio_mmio_notify(&vs->dev, VSOCK_TX_QUEUE);
  if (!virtio_mmio_wait_used(&vs->dev, &vs->tx, reason)) return 0;
  uint32_t used_len;
  (void)virtq_get_used(&vs->tx, &used_len);
  return 1;
}

int virtio_vsock_send(struct virtio_vsock *vs, uint32_t src_port, uint32_t dst_port, uint16_t op,
                      uint32_t flags, uint32_t fwd_cnt, const void *payload, uint32_t len,
                      const char **reason) {
  if (len > VSOCK_MAX_PAYLOAD) {
    *reason = "vsock packet payload too large for the driver";
    return 0;
  }
  struct vsock_packet *p = &vs->tx_buf;
  p->hdr = virtio_vsock_hdr(vs, src_port, dst_port, op, len, VSOCK_BUF_ALLOC);
  p->hdr.flags = flags;
  p->hdr.fwd_cnt = fwd_cnt;
  if (len) memcpy(p->payload, payload, len);
  struct virtq_buf b = {p, (uint32_t)(sizeof(p->hdr) + len), 0};
  return virtio_vsock_send_bufs(vs, &b, 1, reason);
}

/* The buffer handed out by the last poll, given back at the next one. */
static struct vsock_packet *lent;

const struct vsock_packet *virtio_vsock_poll(struct virtio_vsock *vs) {
  if (lent) {
    post_rx(vs, lent);
    lent = 0;
    virtio_mmio_notify(&vs->dev, VSOCK_RX_QUEUE);
  }
  if (!virtq_has_used(&vs->rx)) return 0;
  uint32_t len;
  int head = virtq_get_used(&vs->rx, &len);
  if (head < 0) return 0;
  lent = vs->rx_by_head[head];
  return lent;
}

int virtio_vsock_poll_event(struct virtio_vsock *vs, uint32_t *id) {
  if (!virtq_has_used(&vs->ev)) return 0;
  uint32_t len;
  (void)virtq_get_used(&vs->ev, &len);
  *id = *(volatile uint32_t *)&vs->event;
  post_event(vs);
  virtio_mmio_notify(&vs->dev, VSOCK_EVENT_QUEUE);
  return 1;
}
