#pragma once

#include <string>

#include "vmm/base/unique_fd.h"

namespace ember::fuzz {

// Host resources a fuzzer's devices use, made once per process and removed at its exit.

// A 64 KiB disk image (inputs write into it; that is fine).
[[nodiscard]] const std::string& FuzzDiskPath();

// The vsock device's Unix-socket side: its listener path ("DIR/v.sock", free between inputs:
// each device removes it) and a host service listening for guest connections to port 1024
// ("DIR/v.sock_1024"), non-blocking.
struct VsockHost {
  std::string uds_path;
  base::UniqueFd service;
};
[[nodiscard]] const VsockHost& FuzzVsockHost();

}  // namespace ember::fuzz
