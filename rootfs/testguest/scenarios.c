#include "scenario.h"

#include "io.h"
#include "serial.h"

/* The guest is linked here (linker.ld); hello checks the e820 map covers it. */
#define GUEST_LOAD_ADDR 0x200000ull

/* Proves the boot protocol reached us: a command line, and an e820 map with RAM that
 * holds our own image. */
static int hello(const struct boot_info *boot, const char **reason) {
  if (boot->e820_count == 0) {
    *reason = "empty e820 map";
    return 0;
  }
  for (uint32_t i = 0; i < boot->e820_count; i++) {
    const struct e820_entry *e = &boot->e820[i];
    if (e->type == E820_RAM && e->addr <= GUEST_LOAD_ADDR && GUEST_LOAD_ADDR < e->addr + e->size) {
      return 1;
    }
  }
  *reason = "no e820 RAM entry covers the guest image";
  return 0;
}

/* Stops here with interrupts off: the vCPU sleeps in the kernel until the VMM is stopped.
 * For benchmarks that measure an idle VM. */
static int idle(const struct boot_info *boot, const char **reason) {
  (void)boot;
  (void)reason;
  serial_puts("idle\n");
  halt_forever();
  return 0;
}

/* Reads an address no page table maps. With no IDT, the page fault escalates to a double
 * and then a triple fault, which KVM reports as a shutdown. */
static int triple_fault(const struct boot_info *boot, const char **reason) {
  (void)boot;
  volatile uint64_t *unmapped = (volatile uint64_t *)0x0000010000000000ull; /* 1 TiB */
  (void)*unmapped;
  *reason = "read of an unmapped address did not fault";
  return 0;
}

const struct scenario kScenarios[] = {
    {"hello", hello},
    {"idle", idle},
    {"triple-fault", triple_fault},
    {"blk", blk_scenario},
    {"blk-ro", blk_ro_scenario},
    {"blk-reset", blk_reset_scenario},
    {"counter", counter_scenario},
    {"vsock", vsock_scenario},
    {"vsock-reset", vsock_reset_scenario},
    {"agent", agent_scenario},
    {"net", net_scenario},
    {"touch", touch_scenario},
    {"blk-flood", blk_flood_scenario},
    {"vsock-tiny-rx", vsock_tiny_rx_scenario},
    {"vsock-req-churn", vsock_req_churn_scenario},
    {"features-retry", features_retry_scenario},
    {"serial-flood", serial_flood_scenario},
    {"status-order", status_order_scenario},
    {"blk-attacks", blk_attacks_scenario},
    {"net-attacks", net_attacks_scenario},
    {"vsock-attacks", vsock_attacks_scenario},
    {"vsock-no-credit", vsock_no_credit_scenario},
    {0, 0},
};
