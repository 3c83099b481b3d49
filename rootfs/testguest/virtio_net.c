#include "virtio_net.h"

#include "lib.h"

#define RX_QUEUE 0
#define TX_QUEUE 1

static void post_rx(struct virtio_net *net, uint8_t *buf) {
  struct virtq_buf b = {buf, VIRTIO_NET_BUF_BYTES, 1};
  int head = virtq_add(&net->rx, &b, 1);
  if (head >= 0) net->rx_by_head[head] = buf;
}

int virtio_net_init(struct virtio_net *net, const char *cmdline, const uint8_t default_mac[6],
                    const char **reason) {
  if (!virtio_mmio_find(cmdline, VIRTIO_ID_NET, &net->dev, reason)) return 0;
  if (!virtio_mmio_negotiate(&net->dev, 0, 1ull << VIRTIO_NET_F_MAC, reason)) return 0;
  if (!virtio_mmio_setup_queue(&net->dev, RX_QUEUE, &net->rx, reason) ||
      !virtio_mmio_setup_queue(&net->dev, TX_QUEUE, &net->tx, reason)) {
    return 0;
  }
  if (!virtio_mmio_driver_ok(&net->dev, reason)) return 0;
  if (net->dev.features & (1ull << VIRTIO_NET_F_MAC)) {
    /* The config space's first field; registers are read 32 bits at a time. */
    uint32_t lo = virtio_mmio_config32(&net->dev, 0);
    uint32_t hi = virtio_mmio_config32(&net->dev, 4);
    for (int i = 0; i < 4; i++) net->mac[i] = (uint8_t)(lo >> (8 * i));
    net->mac[4] = (uint8_t)hi;
    net->mac[5] = (uint8_t)(hi >> 8);
  } else {
    memcpy(net->mac, default_mac, 6);
  }
  for (int i = 0; i < VIRTIO_NET_RX_BUFFERS; i++) post_rx(net, net->rx_bufs[i]);
  virtio_mmio_notify(&net->dev, RX_QUEUE);
  return 1;
}

int virtio_net_send(struct virtio_net *net, const uint8_t *frame, uint32_t len,
                    const char **reason) {
  if (len > VIRTIO_NET_BUF_BYTES - VIRTIO_NET_HDR_BYTES) {
    *reason = "frame too large for the driver";
    return 0;
  }
  memset(net->tx_buf, 0, VIRTIO_NET_HDR_BYTES);
  memcpy(net->tx_buf + VIRTIO_NET_HDR_BYTES, frame, len);
  struct virtq_buf b = {net->tx_buf, VIRTIO_NET_HDR_BYTES + len, 0};
  if (virtq_add(&net->tx, &b, 1) < 0) {
    *reason = "net TX queue full";
    return 0;
  }
  virtio_mmio_notify(&net->dev, TX_QUEUE);
  if (!virtio_mmio_wait_used(&net->dev, &net->tx, reason)) return 0;
  uint32_t used_len;
  (void)virtq_get_used(&net->tx, &used_len);
  return 1;
}

uint8_t *virtio_net_poll(struct virtio_net *net, uint32_t *len) {
  if (net->lent) {
    post_rx(net, net->lent);
    net->lent = 0;
    virtio_mmio_notify(&net->dev, RX_QUEUE);
  }
  if (!virtq_has_used(&net->rx)) return 0;
  uint32_t used;
  int head = virtq_get_used(&net->rx, &used);
  if (head < 0 || used < VIRTIO_NET_HDR_BYTES) return 0;
  net->lent = net->rx_by_head[head];
  *len = used - VIRTIO_NET_HDR_BYTES;
  return net->lent + VIRTIO_NET_HDR_BYTES;
}
