#pragma once

namespace ember::virtio::vsock {

// What a virtio-vsock device saves beyond its queues (ember.v1.VsockState): nothing. Host
// sockets cannot be saved, so a device restored with this state resets the guest's transport
// (VIRTIO_VSOCK_EVENT_TRANSPORT_RESET) as ResetAllConnections does.
struct VsockState {
  friend bool operator==(const VsockState&, const VsockState&) = default;
};

}  // namespace ember::virtio::vsock
