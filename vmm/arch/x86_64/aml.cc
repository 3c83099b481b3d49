#include "vmm/arch/x86_64/aml.h"

#include <cstdlib>
#include <string>

#include "vmm/base/logging.h"

namespace ember::arch::aml {
namespace {

// AML opcodes and prefixes (ACPI 6.5, 20.2).
constexpr std::uint8_t kZeroOp = 0x00;
constexpr std::uint8_t kOneOp = 0x01;
constexpr std::uint8_t kNameOp = 0x08;
constexpr std::uint8_t kBytePrefix = 0x0a;
constexpr std::uint8_t kWordPrefix = 0x0b;
constexpr std::uint8_t kDWordPrefix = 0x0c;
constexpr std::uint8_t kStringPrefix = 0x0d;
constexpr std::uint8_t kQWordPrefix = 0x0e;
constexpr std::uint8_t kScopeOp = 0x10;
constexpr std::uint8_t kBufferOp = 0x11;
constexpr std::uint8_t kExtOpPrefix = 0x5b;
constexpr std::uint8_t kDeviceOp = 0x82;  // after kExtOpPrefix
constexpr std::uint8_t kDualNamePrefix = 0x2e;
constexpr std::uint8_t kMultiNamePrefix = 0x2f;
constexpr std::uint8_t kRootChar = '\\';
constexpr std::uint8_t kNullName = 0x00;
constexpr std::size_t kNameSegSize = 4;
constexpr std::size_t kMaxMultiNameSegs = 255;  // SegCount is a byte

// Resource descriptor item names (6.4.2 small, 6.4.3 large).
constexpr std::uint8_t kSmallIrq = 0x04;
constexpr std::uint8_t kSmallIo = 0x08;
constexpr std::uint8_t kSmallFixedIo = 0x09;
constexpr std::uint8_t kSmallEndTag = 0x0f;
constexpr std::uint8_t kLargeMemory32Fixed = 0x06;
constexpr std::uint8_t kLargeExtendedInterrupt = 0x09;
constexpr std::uint8_t kLargeItem = 0x80;

// The VMM composes these terms from its own constants; bad input is a bug in this program.
[[noreturn]] void Broken(const std::string& what) {
  EMBER_LOG(kError) << "AML encoder: " << what;
  std::abort();
}

std::uint8_t SmallHeader(std::uint8_t item, std::uint8_t length) {
  return static_cast<std::uint8_t>(item << 3 | length);
}

void AppendLarge(Bytes& out, std::uint8_t item, std::uint16_t length) {
  out.push_back(static_cast<std::uint8_t>(kLargeItem | item));
  out.push_back(static_cast<std::uint8_t>(length));
  out.push_back(static_cast<std::uint8_t>(length >> 8));
}

template <typename T>
void AppendLe(Bytes& out, T value) {
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    out.push_back(static_cast<std::uint8_t>(static_cast<std::uint64_t>(value) >> (8 * i)));
  }
}

void AppendAll(Bytes& out, const std::vector<Bytes>& parts) {
  for (const Bytes& part : parts) out.insert(out.end(), part.begin(), part.end());
}

// Op PkgLength <body>, the shape of every block term.
Bytes Package(std::initializer_list<std::uint8_t> op, const Bytes& body) {
  Bytes out(op);
  Bytes length = PkgLength(body.size());
  out.insert(out.end(), length.begin(), length.end());
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

bool IsLeadNameChar(char c) { return (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsNameChar(char c) { return IsLeadNameChar(c) || (c >= '0' && c <= '9'); }

void AppendNameSeg(Bytes& out, std::string_view seg, std::string_view path) {
  if (seg.empty() || seg.size() > kNameSegSize || !IsLeadNameChar(seg[0])) {
    Broken("bad name segment in \"" + std::string(path) + "\"");
  }
  for (char c : seg) {
    if (!IsNameChar(c)) Broken("bad character in name \"" + std::string(path) + "\"");
    out.push_back(static_cast<std::uint8_t>(c));
  }
  out.insert(out.end(), kNameSegSize - seg.size(), '_');
}

}  // namespace

Bytes PkgLength(std::size_t body_size) {
  // One byte holds 6 bits of length; each further byte adds 8 bits above the 4 the lead
  // byte then keeps, and bits 6-7 of the lead byte count the further bytes.
  constexpr std::size_t kOneByteMax = 0x3f;
  for (std::size_t extra = 0; extra <= 3; ++extra) {
    const std::size_t total = body_size + 1 + extra;
    const std::size_t max = extra == 0 ? kOneByteMax : (std::size_t{1} << (4 + 8 * extra)) - 1;
    if (total > max) continue;
    if (extra == 0) return {static_cast<std::uint8_t>(total)};
    Bytes out{static_cast<std::uint8_t>(extra << 6 | (total & 0xf))};
    for (std::size_t i = 0; i < extra; ++i) {
      out.push_back(static_cast<std::uint8_t>(total >> (4 + 8 * i)));
    }
    return out;
  }
  Broken("package of " + std::to_string(body_size) + " bytes exceeds PkgLength's 28 bits");
}

Bytes NameString(std::string_view path) {
  Bytes out;
  const std::string_view full = path;
  if (!path.empty() && path[0] == '\\') {
    out.push_back(kRootChar);
    path.remove_prefix(1);
  }
  std::vector<std::string_view> segs;
  while (!path.empty()) {
    const std::size_t dot = path.find('.');
    segs.push_back(path.substr(0, dot));
    path = dot == std::string_view::npos ? std::string_view() : path.substr(dot + 1);
    if (dot != std::string_view::npos && path.empty()) {
      Broken("trailing '.' in \"" + std::string(full) + "\"");
    }
  }
  if (segs.empty()) {
    out.push_back(kNullName);
  } else if (segs.size() == 2) {
    out.push_back(kDualNamePrefix);
  } else if (segs.size() > 2) {
    if (segs.size() > kMaxMultiNameSegs) Broken("too many segments in a name");
    out.push_back(kMultiNamePrefix);
    out.push_back(static_cast<std::uint8_t>(segs.size()));
  }
  for (std::string_view seg : segs) AppendNameSeg(out, seg, full);
  return out;
}

Bytes Integer(std::uint64_t value) {
  Bytes out;
  if (value == 0) {
    out.push_back(kZeroOp);
  } else if (value == 1) {
    out.push_back(kOneOp);
  } else if (value <= UINT8_MAX) {
    out.push_back(kBytePrefix);
    AppendLe(out, static_cast<std::uint8_t>(value));
  } else if (value <= UINT16_MAX) {
    out.push_back(kWordPrefix);
    AppendLe(out, static_cast<std::uint16_t>(value));
  } else if (value <= UINT32_MAX) {
    out.push_back(kDWordPrefix);
    AppendLe(out, static_cast<std::uint32_t>(value));
  } else {
    out.push_back(kQWordPrefix);
    AppendLe(out, value);
  }
  return out;
}

Bytes String(std::string_view text) {
  Bytes out{kStringPrefix};
  for (char c : text) {
    // AsciiCharList: 0x01-0x7f; NUL would end the string early.
    if (c <= 0) Broken("string \"" + std::string(text) + "\" is not plain ASCII");
    out.push_back(static_cast<std::uint8_t>(c));
  }
  out.push_back(0);
  return out;
}

std::uint32_t CompressEisaId(std::string_view pnp_id) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  const bool valid = pnp_id.size() == 7 && pnp_id[0] >= 'A' && pnp_id[0] <= 'Z' &&
                     pnp_id[1] >= 'A' && pnp_id[1] <= 'Z' && pnp_id[2] >= 'A' && pnp_id[2] <= 'Z' &&
                     hex(pnp_id[3]) >= 0 && hex(pnp_id[4]) >= 0 && hex(pnp_id[5]) >= 0 &&
                     hex(pnp_id[6]) >= 0;
  if (!valid) Broken("\"" + std::string(pnp_id) + "\" is not a PNP id like PNP0501");
  // 'A' is 1 in the 5-bit letter code.
  const auto vendor = static_cast<std::uint16_t>((pnp_id[0] - '@') << 10 | (pnp_id[1] - '@') << 5 |
                                                 (pnp_id[2] - '@'));
  const auto product = static_cast<std::uint16_t>(hex(pnp_id[3]) << 12 | hex(pnp_id[4]) << 8 |
                                                  hex(pnp_id[5]) << 4 | hex(pnp_id[6]));
  // Memory order: vendor high byte, vendor low byte, product high byte, product low byte.
  return static_cast<std::uint32_t>(vendor >> 8) | static_cast<std::uint32_t>(vendor & 0xff) << 8 |
         static_cast<std::uint32_t>(product >> 8) << 16 |
         static_cast<std::uint32_t>(product & 0xff) << 24;
}

Bytes EisaId(std::string_view pnp_id) {
  Bytes out{kDWordPrefix};
  AppendLe(out, CompressEisaId(pnp_id));
  return out;
}

Bytes Name(std::string_view path, const Bytes& object) {
  Bytes out{kNameOp};
  Bytes name = NameString(path);
  out.insert(out.end(), name.begin(), name.end());
  out.insert(out.end(), object.begin(), object.end());
  return out;
}

Bytes Device(std::string_view path, const std::vector<Bytes>& terms) {
  Bytes body = NameString(path);
  AppendAll(body, terms);
  return Package({kExtOpPrefix, kDeviceOp}, body);
}

Bytes Scope(std::string_view path, const std::vector<Bytes>& terms) {
  Bytes body = NameString(path);
  AppendAll(body, terms);
  return Package({kScopeOp}, body);
}

Bytes ResourceTemplate(const std::vector<Bytes>& descriptors) {
  Bytes data;
  AppendAll(data, descriptors);
  data.push_back(SmallHeader(kSmallEndTag, 1));
  data.push_back(0);                  // checksum: 0 means valid, as ASL compilers emit it
  Bytes body = Integer(data.size());  // BufferSize
  body.insert(body.end(), data.begin(), data.end());
  return Package({kBufferOp}, body);
}

Bytes Io(std::uint16_t min, std::uint16_t max, std::uint8_t alignment, std::uint8_t length) {
  constexpr std::uint8_t kDecode16 = 1;
  Bytes out{SmallHeader(kSmallIo, 7), kDecode16};
  AppendLe(out, min);
  AppendLe(out, max);
  out.push_back(alignment);
  out.push_back(length);
  return out;
}

Bytes FixedIo(std::uint16_t base, std::uint8_t length) {
  if (base >= 0x400) Broken("FixedIO base " + std::to_string(base) + " needs more than 10 bits");
  Bytes out{SmallHeader(kSmallFixedIo, 3)};
  AppendLe(out, base);
  out.push_back(length);
  return out;
}

Bytes Irq(std::uint8_t irq, Trigger trigger, Polarity polarity, Sharing sharing) {
  if (irq > 15) Broken("IRQ descriptor for IRQ " + std::to_string(irq) + " beyond 15");
  // Flags byte (6.4.2.1): bit 0 edge, bit 3 active low, bit 4 shared.
  const auto flags = static_cast<std::uint8_t>((trigger == Trigger::kEdge ? 1 : 0) |
                                               (polarity == Polarity::kActiveLow ? 1 << 3 : 0) |
                                               (sharing == Sharing::kShared ? 1 << 4 : 0));
  Bytes out{SmallHeader(kSmallIrq, 3)};
  AppendLe(out, static_cast<std::uint16_t>(1u << irq));
  out.push_back(flags);
  return out;
}

Bytes ExtendedInterrupt(std::uint32_t gsi, Trigger trigger, Polarity polarity, Sharing sharing) {
  // Flags byte (6.4.3.6): bit 0 consumer, bit 1 edge, bit 2 active low, bit 3 shared.
  const auto flags = static_cast<std::uint8_t>(1 | (trigger == Trigger::kEdge ? 1 << 1 : 0) |
                                               (polarity == Polarity::kActiveLow ? 1 << 2 : 0) |
                                               (sharing == Sharing::kShared ? 1 << 3 : 0));
  constexpr std::uint8_t kOneInterrupt = 1;
  Bytes out;
  // Flags, table length and one 32-bit interrupt number; no resource source.
  AppendLarge(out, kLargeExtendedInterrupt, 2 + sizeof(std::uint32_t));
  out.push_back(flags);
  out.push_back(kOneInterrupt);
  AppendLe(out, gsi);
  return out;
}

Bytes Memory32Fixed(bool read_write, std::uint32_t base, std::uint32_t length) {
  Bytes out;
  AppendLarge(out, kLargeMemory32Fixed, 1 + 2 * sizeof(std::uint32_t));
  out.push_back(read_write ? 1 : 0);
  AppendLe(out, base);
  AppendLe(out, length);
  return out;
}

}  // namespace ember::arch::aml
