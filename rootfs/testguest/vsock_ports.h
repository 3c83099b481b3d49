/* What the `vsock` scenarios and their host test agree on (tests/integration/
 * virtio_vsock_test.cc includes this file too). */
#pragma once

#define VSOCK_GUEST_CID 3
/* The guest listens here and echoes what it receives. */
#define VSOCK_ECHO_PORT 1234
/* The guest connects to host port VSOCK_HOST_PORT (the listener at <uds_path>_5678) and sends
 * VSOCK_MARKER. */
#define VSOCK_HOST_PORT 5678
#define VSOCK_MARKER "ember-guest-marker\n"
