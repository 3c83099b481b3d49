/* What the `agent` scenario and its host side agree on (tests/integration/agent_guest_test.cc
 * and perf/agent_bench.cc include this file too). The agent ports are agent.proto's. */
#pragma once

/* AGENT_PORT_DEFAULT: one connection per request, agent.proto frames. */
#define AGENT_GUEST_PORT 1024
/* AGENT_PORT_READY_EVENT on the host: the guest sends its ready event there once listening,
 * and again after a transport reset (a restored clone is listening anew). */
#define AGENT_READY_HOST_PORT 1025
/* Beside the agent, the guest echoes every byte a connection to this port carries: the bare
 * vsock round trip the agent's is compared with. */
#define AGENT_BYTE_ECHO_PORT 1234
