#include "vmm/control/pool_launch.h"

#include <charconv>
#include <cstdint>

#include "vmm/control/frame.h"

namespace ember::control {

absl::StatusOr<std::string> EncodePoolLaunch(const PoolLaunch& launch) {
  std::string payload(kPoolLaunchTag, sizeof(kPoolLaunchTag));  // with its NUL
  payload += std::to_string(launch.file_size_limit);
  payload += '\0';
  for (const std::string& arg : launch.args) {
    if (arg.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError("an ember-vmm argument contains a NUL byte");
    }
    payload += arg;
    payload += '\0';
  }
  if (payload.size() > kMaxFramePayloadBytes) {
    return absl::InvalidArgumentError("ember-vmm's arguments are " +
                                      std::to_string(payload.size()) + " bytes, more than a frame");
  }
  std::string frame(kFrameHeaderBytes, '\0');
  const auto size = static_cast<std::uint32_t>(payload.size());
  for (std::size_t i = 0; i < kFrameHeaderBytes; ++i) {
    frame[i] = static_cast<char>((size >> (8 * i)) & 0xff);  // little-endian, as AppendFrame
  }
  return frame + payload;
}

absl::StatusOr<PoolLaunch> DecodePoolLaunch(std::string_view payload) {
  const std::string_view tag(kPoolLaunchTag, sizeof(kPoolLaunchTag));
  if (!payload.starts_with(tag) || !payload.ends_with('\0')) {
    return absl::InvalidArgumentError("not a pool launch");
  }
  payload.remove_prefix(tag.size());
  const std::size_t limit_end = payload.find('\0');
  PoolLaunch launch;
  auto [end, ec] = std::from_chars(payload.data(), payload.data() + limit_end,
                                   launch.file_size_limit);
  if (ec != std::errc() || end != payload.data() + limit_end || limit_end == 0) {
    return absl::InvalidArgumentError("a pool launch without its file size bound");
  }
  payload.remove_prefix(limit_end + 1);
  while (!payload.empty()) {
    const std::size_t arg_end = payload.find('\0');
    launch.args.emplace_back(payload.substr(0, arg_end));
    payload.remove_prefix(arg_end + 1);
  }
  return launch;
}

}  // namespace ember::control
