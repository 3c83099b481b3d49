#pragma once

#include <cstdint>
#include <span>
#include <vector>

// Byte helpers shared by the firmware tables the VMM writes (MP table, ACPI tables).
namespace ember::arch {

// The byte that makes `bytes` sum to zero modulo 256, as both specifications require.
inline std::uint8_t Checksum(std::span<const std::uint8_t> bytes) {
  std::uint8_t sum = 0;
  for (std::uint8_t b : bytes) sum = static_cast<std::uint8_t>(sum + b);
  return static_cast<std::uint8_t>(0x100 - sum);
}

template <typename T>
std::span<const std::uint8_t> BytesOf(const T& value) {
  return {reinterpret_cast<const std::uint8_t*>(&value), sizeof(T)};  // packed POD: its bytes
}

template <typename T>
void Append(std::vector<std::uint8_t>& out, const T& value) {
  std::span<const std::uint8_t> bytes = BytesOf(value);
  out.insert(out.end(), bytes.begin(), bytes.end());
}

}  // namespace ember::arch
