/* Hostile drivers of the virtio-mmio transport itself, on the first virtio-blk device,
 * against tests/integration/hostile_transport_test.cc:
 * - `features-retry`: writes a feature set the device must refuse (no VIRTIO_F_VERSION_1)
 *   and FEATURES_OK, over and over for a few seconds, then the right set; the device must
 *   then work. Each refusal is something the host may log: the host test bounds the log.
 * - `status-order`: DRIVER_OK written after FAILED, and DRIVER_OK in the same write as a
 *   FEATURES_OK the device refuses; then, without a reset, the driver fixes its features and
 *   goes on as a driver does, setting the bits it lacks. The device must never show
 *   DRIVER_OK for either write, must end activated and serving, and must let the host take a
 *   snapshot while the guest waits after STATUS_ORDER_MARKER. */
#include "hostile.h"
#include "scenario.h"
#include "serial.h"
#include "tsc.h"
#include "virtio_blk.h"

#define RETRY_CYCLES (2 * TSC_PER_SECOND)
/* The wait after STATUS_ORDER_MARKER, for the host's snapshot. */
#define SNAPSHOT_WAIT_CYCLES (4 * TSC_PER_SECOND)

#define ACK VIRTIO_STATUS_ACKNOWLEDGE
#define DRIVER VIRTIO_STATUS_DRIVER
#define FEATURES_OK VIRTIO_STATUS_FEATURES_OK
#define DRIVER_OK VIRTIO_STATUS_DRIVER_OK
#define FAILED VIRTIO_STATUS_FAILED

static struct virtio_blk blk;

static uint32_t status(void) { return virtio_mmio_read(&blk.dev, VIRTIO_MMIO_STATUS); }
static void set_status(uint32_t value) { virtio_mmio_write(&blk.dev, VIRTIO_MMIO_STATUS, value); }

/* Writes the driver's feature set, both halves. */
static void set_features(uint64_t features) {
  virtio_mmio_write(&blk.dev, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
  virtio_mmio_write(&blk.dev, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)features);
  virtio_mmio_write(&blk.dev, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
  virtio_mmio_write(&blk.dev, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(features >> 32));
  blk.dev.features = features;
}

/* Reset, ACKNOWLEDGE, DRIVER. */
static void restart(void) {
  set_status(0);
  set_status(ACK);
  set_status(ACK | DRIVER);
}

/* The device, now past FEATURES_OK, set up and brought to DRIVER_OK, answers a request. */
static int start_and_use(const char **reason) {
  if (!virtio_blk_start(&blk, reason)) return 0;
  static uint8_t id[VIRTIO_BLK_ID_BYTES];
  struct virtio_blk_seg seg = {id, sizeof(id)};
  int answer = virtio_blk_request(&blk, VIRTIO_BLK_T_GET_ID, 0, &seg, 1, reason);
  if (answer < 0) return 0;
  if (answer != VIRTIO_BLK_S_OK) {
    *reason = "GET_ID failed";
    return 0;
  }
  return 1;
}

int features_retry_scenario(const struct boot_info *boot, const char **reason) {
  if (!virtio_mmio_find(boot->cmdline, VIRTIO_ID_BLOCK, &blk.dev, reason)) return 0;
  restart();
  uint64_t refused = 0;
  uint64_t deadline = rdtsc() + RETRY_CYCLES;
  do {
    /* Two register writes per attempt: the (high) half without VIRTIO_F_VERSION_1, and the
     * status that asks for FEATURES_OK. */
    virtio_mmio_write(&blk.dev, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    virtio_mmio_write(&blk.dev, VIRTIO_MMIO_DRIVER_FEATURES, 0);
    set_status(ACK | DRIVER | FEATURES_OK);
    refused++;
    if ((refused & 0xff) == 0 && (status() & FEATURES_OK)) {
      *reason = "the device took a feature set without VIRTIO_F_VERSION_1";
      return 0;
    }
  } while (rdtsc() < deadline);
  serial_puts("features-retry: ");
  serial_put_dec(refused);
  serial_puts(" feature sets refused\n");

  set_features(1ull << VIRTIO_F_VERSION_1);
  set_status(ACK | DRIVER | FEATURES_OK);
  if (!(status() & FEATURES_OK)) {
    *reason = "the device refused VIRTIO_F_VERSION_1 after the retries";
    return 0;
  }
  return start_and_use(reason);
}

/* The first thing status-order found wrong; the scenario goes on to the snapshot wait
 * anyway, so that the host sees the state the device is left in. */
static const char *wrong;

static void note(const char *what) {
  serial_puts("status-order: ");
  serial_puts(what);
  serial_putc('\n');
  if (!wrong) wrong = what;
}

/* A driver that gives up after setting the device up, and then writes DRIVER_OK anyway. */
static int driver_ok_after_failed(const char **reason) {
  restart();
  set_features(1ull << VIRTIO_F_VERSION_1);
  set_status(ACK | DRIVER | FEATURES_OK);
  if (!(status() & FEATURES_OK)) {
    *reason = "the device refused VIRTIO_F_VERSION_1";
    return 0;
  }
  if (!virtio_mmio_setup_queue(&blk.dev, 0, &blk.vq, reason)) return 0;
  set_status(ACK | DRIVER | FEATURES_OK | FAILED);
  set_status(ACK | DRIVER | FEATURES_OK | FAILED | DRIVER_OK);
  if (status() & DRIVER_OK) note("DRIVER_OK was granted after FAILED");
  return 1;
}

/* DRIVER_OK with a FEATURES_OK the device refuses, then the fix, without a reset. */
static int driver_ok_with_refused_features(const char **reason) {
  restart();
  set_features(0); /* no VIRTIO_F_VERSION_1 */
  set_status(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
  uint32_t s = status();
  if (s & FEATURES_OK) {
    *reason = "the device took a feature set without VIRTIO_F_VERSION_1";
    return 0;
  }
  if (s & DRIVER_OK) note("DRIVER_OK was granted with a refused FEATURES_OK");
  if (s & VIRTIO_STATUS_NEEDS_RESET) {
    restart(); /* a device that wants a reset gets one */
    s = status();
  }
  /* The fix: the right features, and FEATURES_OK added to what the device shows. */
  set_features(1ull << VIRTIO_F_VERSION_1);
  set_status(s | FEATURES_OK);
  s = status();
  if (!(s & FEATURES_OK)) {
    *reason = "the device refused VIRTIO_F_VERSION_1 after a refused set";
    return 0;
  }
  if (s & DRIVER_OK) {
    /* Its queue can no longer be set up: the device shows running but serves nothing. */
    note("the device shows DRIVER_OK but was never set up");
    return 1;
  }
  return start_and_use(reason);
}

int status_order_scenario(const struct boot_info *boot, const char **reason) {
  wrong = 0;
  if (!virtio_mmio_find(boot->cmdline, VIRTIO_ID_BLOCK, &blk.dev, reason) ||
      !driver_ok_after_failed(reason) || !driver_ok_with_refused_features(reason)) {
    return 0;
  }
  serial_puts(STATUS_ORDER_MARKER);
  uint64_t until = rdtsc() + SNAPSHOT_WAIT_CYCLES;
  while (rdtsc() < until) {
  }
  if (wrong) {
    *reason = wrong;
    return 0;
  }
  return 1;
}
