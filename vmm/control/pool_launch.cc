#include "vmm/control/pool_launch.h"

#include <cstdint>

#include "vmm/control/frame.h"

namespace ember::control {

absl::StatusOr<std::string> EncodePoolLaunch(const std::vector<std::string>& args) {
  std::string payload(kPoolLaunchTag, sizeof(kPoolLaunchTag));  // with its NUL
  for (const std::string& arg : args) {
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

absl::StatusOr<std::vector<std::string>> DecodePoolLaunch(std::string_view payload) {
  const std::string_view tag(kPoolLaunchTag, sizeof(kPoolLaunchTag));
  if (!payload.starts_with(tag) || !payload.ends_with('\0')) {
    return absl::InvalidArgumentError("not a pool launch");
  }
  payload.remove_prefix(tag.size());
  std::vector<std::string> args;
  while (!payload.empty()) {
    const std::size_t end = payload.find('\0');
    args.emplace_back(payload.substr(0, end));
    payload.remove_prefix(end + 1);
  }
  return args;
}

}  // namespace ember::control
