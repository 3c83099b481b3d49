// The launch emberd's VMM pool sends a pooled ember-vmm (control/pool_launch.h): its
// arguments come back as sent, through the same framing as the control channel, and nothing
// else passes for a launch.
#include <gtest/gtest.h>

#include "vmm/control/frame.h"
#include "vmm/control/pool_launch.h"

namespace ember::control {
namespace {

TEST(PoolLaunch, ArgumentsComeBackThroughTheFramingAsSent) {
  const std::vector<std::string> args = {"--config-proto", "/state/vms/a/config.pb", "",
                                         "--serial-out", "/proc/self/fd/4"};
  absl::StatusOr<std::string> frame = EncodePoolLaunch({args, 201326592});
  ASSERT_TRUE(frame.ok()) << frame.status();
  FrameReader reader;
  reader.Feed(*frame);
  std::string payload;
  ASSERT_TRUE(*reader.Next(&payload));
  absl::StatusOr<PoolLaunch> decoded = DecodePoolLaunch(payload);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->args, args);
  EXPECT_EQ(decoded->file_size_limit, 201326592u);
}

TEST(PoolLaunch, NoArgumentsIsALaunchWithNone) {
  absl::StatusOr<std::string> frame = EncodePoolLaunch({});
  ASSERT_TRUE(frame.ok());
  absl::StatusOr<PoolLaunch> decoded =
      DecodePoolLaunch(std::string_view(*frame).substr(kFrameHeaderBytes));
  ASSERT_TRUE(decoded.ok());
  EXPECT_TRUE(decoded->args.empty());
  EXPECT_EQ(decoded->file_size_limit, 0u);
}

TEST(PoolLaunch, AnArgumentWithANulIsRefused) {
  EXPECT_EQ(EncodePoolLaunch({{std::string("a\0b", 3)}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(PoolLaunch, APayloadWithoutTheTagOrItsLastNulIsNoLaunch) {
  EXPECT_FALSE(DecodePoolLaunch("--config-proto\0x\0").ok());
  const std::string tagged = std::string(kPoolLaunchTag, sizeof(kPoolLaunchTag)) + "--flag";
  EXPECT_FALSE(DecodePoolLaunch(tagged).ok());
  // The file size bound comes first, as a number.
  const std::string tag(kPoolLaunchTag, sizeof(kPoolLaunchTag));
  EXPECT_FALSE(DecodePoolLaunch(tag + std::string("--flag\0", 7)).ok());
  EXPECT_FALSE(DecodePoolLaunch(tag + std::string("\0", 1)).ok());
  EXPECT_FALSE(DecodePoolLaunch("").ok());
}

}  // namespace
}  // namespace ember::control
