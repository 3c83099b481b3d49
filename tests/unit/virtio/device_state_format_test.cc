// A state file of the format before typed device state (version 2: device state as opaque
// bytes, devices by position), crafted byte by byte since its messages are gone.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "snapshot/file_codec.h"
#include "snapshot/snapshot_id.h"
#include "snapshot/state_file.h"
#include "virtio/mmio/state_proto.h"

namespace ember::virtio {
namespace {

const std::string kSnapshotId(snapshot::kSnapshotIdSize, 'i');

std::string LengthDelimited(std::uint8_t field, const std::string& bytes) {
  EXPECT_LT(bytes.size(), 128u);  // one-byte lengths keep the crafting simple
  return std::string{static_cast<char>(field << 3 | 2), static_cast<char>(bytes.size())} + bytes;
}

// A SnapshotState payload holding one previous-format VirtioDeviceState (field 7): device_id
// 2 (field 1, a varint), name "block_rootfs" (2), status DRIVER_OK and the rest (3), and the
// rate limiter's levels as device_specific bytes (11); then the snapshot id (field 11).
std::string PreviousFormatPayload() {
  std::string device = std::string{0x08, 0x02} + LengthDelimited(2, "block_rootfs") +
                       std::string{0x18, 0x0f} + LengthDelimited(11, std::string(66, '\0'));
  return LengthDelimited(7, device) + LengthDelimited(11, kSnapshotId);
}

std::string Frame(const std::string& payload, std::uint32_t version) {
  std::string out(snapshot::kMagic, sizeof(snapshot::kMagic));
  snapshot::PutLittleEndian<std::uint32_t>(out, version);
  snapshot::PutLittleEndian<std::uint32_t>(out, 0);
  snapshot::PutLittleEndian<std::uint64_t>(out, payload.size());
  out += payload;
  snapshot::PutLittleEndian<std::uint64_t>(out, snapshot::Crc64(out, out.size()));
  return out;
}

TEST(PreviousStateFormat, AFileOfThePreviousVersionIsRefusedNamingItsVersion) {
  const std::uint32_t previous = snapshot::kFormatVersion - 1;

  auto state = snapshot::DecodeState(Frame(PreviousFormatPayload(), previous));

  ASSERT_TRUE(absl::IsInvalidArgument(state.status())) << state.status();
  EXPECT_NE(state.status().message().find("format version " + std::to_string(previous) +
                                         " is not supported"),
            std::string::npos)
      << state.status();
  EXPECT_NE(state.status().message().find("written by an older Ember: take it again"),
            std::string::npos)
      << state.status();
}

// A previous-format payload under the current version number (a file relabelled by hand)
// holds no device the configured ones can match: refused before any device sees it.
TEST(PreviousStateFormat, ItsDevicesUnderTheCurrentVersionMatchNoConfiguredDevice) {
  auto state = snapshot::DecodeState(Frame(PreviousFormatPayload(), snapshot::kFormatVersion));
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_EQ(state->virtio_size(), 1);

  auto match = MatchDeviceStates({"block_rootfs"}, state->virtio());

  ASSERT_TRUE(absl::IsInvalidArgument(match.status())) << match.status();
  EXPECT_NE(match.status().message().find("are not the configured ones (block_rootfs)"),
            std::string::npos)
      << match.status();
  EXPECT_EQ(FromProto(state->virtio(0)).device, DeviceState());  // and no block state
}

// The check above is the version's, not an accident of this payload: the current format's
// own device state, framed the same way, reads and matches.
TEST(PreviousStateFormat, TheCurrentFormatFramedTheSameWayReads) {
  v1::SnapshotState current;
  current.set_snapshot_id(kSnapshotId);
  VirtioDeviceSnapshot device;
  device.name = "block_rootfs";
  device.device = block::BlockState{};
  *current.add_virtio() = ToProto(device);

  auto state = snapshot::DecodeState(Frame(current.SerializeAsString(), snapshot::kFormatVersion));

  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_EQ(state->virtio_size(), 1);
  EXPECT_EQ(FromProto(state->virtio(0)).device, DeviceState(block::BlockState{}));
  EXPECT_TRUE(MatchDeviceStates({"block_rootfs"}, state->virtio()).ok());
}

}  // namespace
}  // namespace ember::virtio
