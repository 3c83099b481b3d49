#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "rootfs/init/guest_config.h"

// The changes ember-init makes to the system it starts, each on its own so that one failure
// (a read-only root without /run, a missing eth0) leaves the others done. Called by PID 1 only.
namespace ember::init {

// Mounts proc on /proc, sysfs on /sys, devtmpfs on /dev, devpts on /dev/pts, tmpfs on
// /dev/shm, /run and /tmp, creating missing mount points; a path that is already a mount
// point (the kernel's CONFIG_DEVTMPFS_MOUNT /dev) is left as it is. Returns one line per
// mount that failed, naming it and the errno.
[[nodiscard]] std::vector<std::string> MountFilesystems();

[[nodiscard]] absl::Status SetHostname(const std::string& hostname);

// Brings lo up (the kernel gives it 127.0.0.1/8 as it goes up).
[[nodiscard]] absl::Status BringUpLoopback();

// Gives `net.device` its address and prefix, brings it up and adds the default route through
// the gateway if there is one (an existing identical route is fine).
[[nodiscard]] absl::Status ConfigureInterface(const NetSettings& net);

// Mixes `seed` into the kernel's entropy pool and credits it (RNDADDENTROPY on /dev/urandom).
[[nodiscard]] absl::Status AddEntropy(std::span<const std::uint8_t> seed);

}  // namespace ember::init
