#pragma once

#include <string>

#include "vmm/base/metrics.h"

namespace ember::virtio::vsock {

// The counters of one vsock device, group "vsock_<id>". The device owns them; its muxer
// counts connection events in them. Each pointer is owned by the registry.
struct VsockMetrics {
  VsockMetrics(base::MetricsRegistry& registry, const std::string& group)
      : rx_queue_events(registry.Get(group, "rx_queue_events")),
        tx_queue_events(registry.Get(group, "tx_queue_events")),
        event_queue_events(registry.Get(group, "event_queue_events")),
        rx_packets(registry.Get(group, "rx_packets")),
        rx_bytes(registry.Get(group, "rx_bytes")),
        tx_packets(registry.Get(group, "tx_packets")),
        tx_bytes(registry.Get(group, "tx_bytes")),
        conns_added(registry.Get(group, "conns_added")),
        conns_removed(registry.Get(group, "conns_removed")),
        conns_reset(registry.Get(group, "conns_reset")),
        malformed_packets(registry.Get(group, "malformed_packets")),
        credit_violations(registry.Get(group, "credit_violations")),
        host_connect_fails(registry.Get(group, "host_connect_fails")),
        handshake_fails(registry.Get(group, "handshake_fails")),
        rx_rst_dropped(registry.Get(group, "rx_rst_dropped")),
        invalid_chains(registry.Get(group, "invalid_chains")),
        rx_short_buffers(registry.Get(group, "rx_short_buffers")),
        transport_resets(registry.Get(group, "transport_resets")) {}

  base::Metric* rx_queue_events;
  base::Metric* tx_queue_events;
  base::Metric* event_queue_events;
  base::Metric* rx_packets;
  base::Metric* rx_bytes;
  base::Metric* tx_packets;
  base::Metric* tx_bytes;
  base::Metric* conns_added;
  base::Metric* conns_removed;
  base::Metric* conns_reset;         // RST sent to the guest for a live connection
  base::Metric* malformed_packets;
  base::Metric* credit_violations;   // the guest sent more than the credit it had
  base::Metric* host_connect_fails;  // nobody listening at <uds_path>_<port>
  base::Metric* handshake_fails;     // a host peer that did not send "CONNECT <port>\n"
  base::Metric* rx_rst_dropped;      // orphan RSTs beyond the bounded backlog
  base::Metric* invalid_chains;      // the driver broke the virtqueue: NEEDS_RESET
  base::Metric* rx_short_buffers;    // header-only RX buffers data met (a CREDIT_UPDATE instead)
  base::Metric* transport_resets;
};

}  // namespace ember::virtio::vsock
