// libFuzzer target: the control channel's frames (vmm/control/frame.h) as either end reads
// them: a byte stream cut into chunks of the input's choosing, split by FrameReader, each
// payload parsed as ember-vmm parses a ControlRequest (rate limits checked by the rules it
// applies them with) and as emberd and ember-fc-api parse a VmmMessage from a VMM they must
// assume compromised. Bad frames must be errors, never a crash or an unbounded buffer.

#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "ember/v1/vmm_control.pb.h"
#include "vmm/control/frame.h"
#include "vmm/rules/vm_config_rules.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ember;
  FuzzedDataProvider input(data, size);
  control::FrameReader reader;
  while (input.remaining_bytes() > 0) {
    reader.Feed(input.ConsumeRandomLengthString(4096));
    std::string payload;
    while (true) {
      absl::StatusOr<bool> next = reader.Next(&payload);
      if (!next.ok()) return 0;  // the stream cannot be resynchronised: the connection closes
      if (!*next) break;
      if (payload.size() > control::kMaxFramePayloadBytes) std::abort();
      v1::ControlRequest request;
      if (request.ParseFromString(payload) && request.has_update_rate_limits()) {
        for (const v1::DriveRateLimit& drive : request.update_rate_limits().drives()) {
          (void)rules::CheckRateLimiter(drive.rate_limiter(), "drive");
        }
        for (const v1::InterfaceRateLimit& iface : request.update_rate_limits().interfaces()) {
          (void)rules::CheckRateLimiter(iface.rx_rate_limiter(), "rx");
          (void)rules::CheckRateLimiter(iface.tx_rate_limiter(), "tx");
        }
      }
      v1::VmmMessage message;
      (void)message.ParseFromString(payload);
    }
    // What a reader holds waiting for a frame's end is bounded by the frame limit.
    if (reader.buffered() > control::kFrameHeaderBytes + control::kMaxFramePayloadBytes + 4096) {
      std::abort();
    }
  }
  return 0;
}
