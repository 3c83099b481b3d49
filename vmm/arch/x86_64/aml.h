#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

// The few ACPI Machine Language (AML) encodings the DSDT needs to describe fixed platform
// devices to a guest: named objects inside Device and Scope blocks, integer and string
// constants, and resource templates (ACPI 6.5, chapter 20 for AML, section 6.4 for resource
// descriptors). Every function returns the encoded bytes of one term, so callers nest them
// the way ASL nests blocks. The inputs are the VMM's own constants and placements, so a
// malformed name or id is a bug: it aborts rather than returning an error.
namespace ember::arch::aml {

using Bytes = std::vector<std::uint8_t>;

// The PkgLength that precedes a package body of `body_size` bytes (20.2.4). The encoded
// length counts its own bytes, so one byte covers packages up to 63 bytes, two up to
// 4095, three up to 1 MiB - 1 and four up to 256 MiB - 1; larger bodies abort.
[[nodiscard]] Bytes PkgLength(std::size_t body_size);

// A NameString (20.2.2): an optional root prefix '\', then 4-character name segments
// separated by '.', each padded with '_' as ASL does ("_SB" is "_SB_"). Segments start
// with A-Z or '_' and continue with A-Z, 0-9 or '_'.
[[nodiscard]] Bytes NameString(std::string_view path);

// The smallest integer encoding of `value` (20.2.3): ZeroOp, OneOp, or a Byte-, Word-,
// DWord- or QWordConst.
[[nodiscard]] Bytes Integer(std::uint64_t value);

// A String constant: printable ASCII without NUL, as AML requires.
[[nodiscard]] Bytes String(std::string_view text);

// The 32-bit compressed EISA id of a 7-character PNP id such as "PNP0501" (three capital
// letters, four hex digits), in the byte order ASL's EISAID() macro produces: the letters
// packed 5 bits each into the first two bytes, big-endian, then the digits.
[[nodiscard]] std::uint32_t CompressEisaId(std::string_view pnp_id);
// CompressEisaId as a DWordConst, the form a _HID takes.
[[nodiscard]] Bytes EisaId(std::string_view pnp_id);

// Name(path, object): binds a data object to a name in the enclosing scope.
[[nodiscard]] Bytes Name(std::string_view path, const Bytes& object);

// Device(path) { terms... } and Scope(path) { terms... }.
[[nodiscard]] Bytes Device(std::string_view path, const std::vector<Bytes>& terms);
[[nodiscard]] Bytes Scope(std::string_view path, const std::vector<Bytes>& terms);

// ResourceTemplate() { descriptors... }: a Buffer holding the descriptors and the End Tag
// (6.4.2.9), whose checksum byte is 0, meaning "treat the checksum as valid".
[[nodiscard]] Bytes ResourceTemplate(const std::vector<Bytes>& descriptors);

// Resource descriptors (6.4).
enum class Trigger : std::uint8_t { kLevel, kEdge };
enum class Polarity : std::uint8_t { kActiveHigh, kActiveLow };
enum class Sharing : std::uint8_t { kExclusive, kShared };

// IO(Decode16, min, max, alignment, length): an I/O port range with 16-bit decoding.
[[nodiscard]] Bytes Io(std::uint16_t min, std::uint16_t max, std::uint8_t alignment,
                       std::uint8_t length);
// FixedIO(base, length): an I/O range decoded on 10 address bits; base must be below 0x400.
[[nodiscard]] Bytes FixedIo(std::uint16_t base, std::uint8_t length);
// IRQ(trigger, polarity, sharing) {irq}: one ISA interrupt, irq 0-15.
[[nodiscard]] Bytes Irq(std::uint8_t irq, Trigger trigger, Polarity polarity, Sharing sharing);
// Interrupt(ResourceConsumer, trigger, polarity, sharing) {gsi}: the Extended Interrupt
// descriptor, which names a GSI of any size.
[[nodiscard]] Bytes ExtendedInterrupt(std::uint32_t gsi, Trigger trigger, Polarity polarity,
                                      Sharing sharing);
// Memory32Fixed(ReadWrite or ReadOnly, base, length).
[[nodiscard]] Bytes Memory32Fixed(bool read_write, std::uint32_t base, std::uint32_t length);

}  // namespace ember::arch::aml
