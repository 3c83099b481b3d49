/* What the hostile-guest scenarios (blk_flood_scenario.c, vsock_hostile_scenarios.c,
 * transport_scenarios.c, serial_flood_scenario.c) and their host tests
 * (tests/integration/hostile_*_test.cc) agree on. Plain C, included by both. */
#pragma once

/* Printed when the guest starts to flood or churn, and when it is ready for a snapshot: the
 * host measures from there. */
#define BLK_FLOOD_MARKER "blk-flood: flooding\n"
#define VSOCK_TINY_RX_MARKER "vsock-tiny-rx: header-only buffer at the head of the ring\n"
#define VSOCK_CHURN_MARKER "vsock-req-churn: churning\n"
#define STATUS_ORDER_MARKER "status-order: ready for a snapshot\n"

/* blk-flood reads the start of its drive, up to this much at once: the drive must hold at
 * least this much. */
#define BLK_FLOOD_DISK_BYTES (1024u * 1024u)

/* What the host sends to vsock-tiny-rx's connection once the guest printed its marker. */
#define VSOCK_TINY_RX_DATA "data for a guest with a header-only buffer\n"

/* The host port vsock-req-churn connects to, over and over (the listener is
 * <uds_path>_VSOCK_CHURN_PORT). vsock-tiny-rx connects to VSOCK_HOST_PORT (vsock_ports.h). */
#define VSOCK_CHURN_PORT 6001

/* How many bytes serial-flood writes to COM1: a VM exit each, some 20-50 us here, so a few
 * seconds' worth. A multiple of 4096. */
#define SERIAL_FLOOD_BYTES (64u * 1024u)

/* vsock-attacks' port pair: the guest's, and a host port nobody listens on (an RST answers
 * every REQUEST to it). */
#define ATTACK_VSOCK_GUEST_PORT 49200
#define ATTACK_VSOCK_CLOSED_PORT 6002

/* vsock-no-credit: connected to VSOCK_HOST_PORT with no credit granted (buf_alloc 0), the
 * guest prints NO_CREDIT_MARKER and the host writes as much as its socket takes; the guest
 * must receive no data until it grants NO_CREDIT_GRANT_BYTES (NO_CREDIT_GRANT_MARKER), and
 * then no more than that. */
#define NO_CREDIT_GRANT_BYTES 4096u
#define NO_CREDIT_MARKER "vsock-no-credit: connected, no credit granted\n"
#define NO_CREDIT_GRANT_MARKER "vsock-no-credit: credit granted\n"

/* attack.h's outcomes: what the device did about an attack, as the guest prints it. */
#define OUTCOME_NEEDS_RESET "needs-reset" /* DEVICE_NEEDS_RESET set (spec 2.1.2) */
#define OUTCOME_IGNORED "ignored"         /* the write changed nothing; the device serves on */
#define OUTCOME_REFUSED "refused"         /* FEATURES_OK left clear (spec 3.1.1 step 6) */
#define OUTCOME_DROPPED "dropped"         /* request returned unserved or failed; no reset */
#define OUTCOME_SURVIVED "survived"       /* the device serves on */

/* How many notifications notify-storm writes: ~10 us each here. */
#define ATTACK_NOTIFY_STORM 10000u
