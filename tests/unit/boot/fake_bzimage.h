#pragma once

#include <asm/bootparam.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace ember::testing {

// A synthetic bzImage: one setup sector, then a protected-mode part that holds `payload`
// followed by the 4-byte uncompressed size, as the kernel's build lays it out. Tests edit
// header() and call Commit() to write it back.
struct FakeBzImage {
  static constexpr std::size_t kSetupSects = 1;
  static constexpr std::size_t kProtectedModeOffset = (kSetupSects + 1) * 512;
  static constexpr std::size_t kPayloadOffset = 0x40;  // within the protected-mode part

  std::vector<std::uint8_t> bytes;
  setup_header hdr{};

  FakeBzImage(const std::vector<std::uint8_t>& payload, std::uint32_t uncompressed_size) {
    std::size_t pm_size = kPayloadOffset + payload.size() + 4 + 0x40;
    bytes.assign(kProtectedModeOffset + pm_size, 0);
    std::memcpy(bytes.data() + kProtectedModeOffset + kPayloadOffset, payload.data(),
                payload.size());
    std::memcpy(bytes.data() + kProtectedModeOffset + kPayloadOffset + payload.size(),
                &uncompressed_size, 4);
    hdr.setup_sects = kSetupSects;
    hdr.boot_flag = 0xaa55;
    hdr.jump = 0x6aeb;  // "jmp short 0x6a": the header ends at 0x202 + 0x6a, past init_size
    hdr.header = 0x53726448;
    hdr.version = 0x020f;
    hdr.relocatable_kernel = 1;
    hdr.xloadflags = XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G;
    hdr.kernel_alignment = 0x200000;
    hdr.pref_address = 0x1000000;
    hdr.init_size = 0x100000;
    hdr.cmdline_size = 2047;
    hdr.initrd_addr_max = 0x7fffffff;
    hdr.payload_offset = kPayloadOffset;
    hdr.payload_length = static_cast<std::uint32_t>(payload.size() + 4);
    Commit();
  }

  setup_header& header() { return hdr; }
  void Commit() { std::memcpy(bytes.data() + 0x1f1, &hdr, sizeof(hdr)); }
};

}  // namespace ember::testing
