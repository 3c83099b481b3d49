#include "virtio/vsock/state_proto.h"

namespace ember::virtio::vsock {

v1::VsockState ToProto(const VsockState&) { return {}; }

VsockState FromProto(const v1::VsockState&) { return {}; }

}  // namespace ember::virtio::vsock
