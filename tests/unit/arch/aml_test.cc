#include "vmm/arch/x86_64/aml.h"

#include <gtest/gtest.h>

namespace ember::arch::aml {
namespace {

// Expected bytes are read off ACPI 6.5 (20.2 for AML, 6.4 for resource descriptors) and
// checked against what iasl 20200925 emits for the same ASL, not derived from the encoder.

TEST(AmlPkgLength, SixtyThreeBytesFitOneByte) {
  // 62 bytes of body plus the one length byte: 63, the largest one-byte PkgLength.
  EXPECT_EQ(PkgLength(62), (Bytes{0x3f}));
}

TEST(AmlPkgLength, SixtyFourBytesTakeTwoBytesWithTheLowNibbleFirst) {
  // 63 + 2 = 65 = 0x41: lead byte 0x40 (one more byte) | 0x1, then 0x41 >> 4.
  EXPECT_EQ(PkgLength(63), (Bytes{0x41, 0x04}));
}

TEST(AmlPkgLength, FourThousandNinetyFiveBytesFitTwoBytes) {
  EXPECT_EQ(PkgLength(4093), (Bytes{0x4f, 0xff}));  // 4093 + 2 = 0xfff
}

TEST(AmlPkgLength, FourThousandNinetySixBytesTakeThreeBytes) {
  // 4094 + 3 = 4097 = 0x1001: lead byte 0x80 (two more bytes) | 0x1, then 0x00, 0x01.
  EXPECT_EQ(PkgLength(4094), (Bytes{0x81, 0x00, 0x01}));
}

TEST(AmlPkgLength, OneMebibyteTakesFourBytes) {
  // 0xffffd + 3 = 0x100000 does not fit 20 bits: 0x100001 in four bytes.
  EXPECT_EQ(PkgLength(0xffffd), (Bytes{0xc1, 0x00, 0x00, 0x01}));
}

TEST(AmlEisaId, Pnp0501CompressesToTheValueAslsEisaIdGives) {
  EXPECT_EQ(CompressEisaId("PNP0501"), 0x0105D041u);
  EXPECT_EQ(CompressEisaId("PNP0303"), 0x0303D041u);
}

TEST(AmlEisaId, IsEncodedAsADWordConst) {
  EXPECT_EQ(EisaId("PNP0501"), (Bytes{0x0c, 0x41, 0xd0, 0x05, 0x01}));
}

TEST(AmlInteger, UsesZeroAndOneOpsThenTheSmallestPrefix) {
  EXPECT_EQ(Integer(0), (Bytes{0x00}));
  EXPECT_EQ(Integer(1), (Bytes{0x01}));
  EXPECT_EQ(Integer(2), (Bytes{0x0a, 0x02}));
  EXPECT_EQ(Integer(0xff), (Bytes{0x0a, 0xff}));
  EXPECT_EQ(Integer(0x100), (Bytes{0x0b, 0x00, 0x01}));
  EXPECT_EQ(Integer(0xffff), (Bytes{0x0b, 0xff, 0xff}));
  EXPECT_EQ(Integer(0x10000), (Bytes{0x0c, 0x00, 0x00, 0x01, 0x00}));
  EXPECT_EQ(Integer(0xd0001000), (Bytes{0x0c, 0x00, 0x10, 0x00, 0xd0}));
  EXPECT_EQ(Integer(0x100000000), (Bytes{0x0e, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00}));
}

TEST(AmlString, IsPrefixedAndNulTerminated) {
  EXPECT_EQ(String("LNRO0005"), (Bytes{0x0d, 'L', 'N', 'R', 'O', '0', '0', '0', '5', 0x00}));
}

TEST(AmlNameString, PadsShortSegmentsAndEncodesRootAndMultiSegmentPaths) {
  EXPECT_EQ(NameString("_HID"), (Bytes{'_', 'H', 'I', 'D'}));
  EXPECT_EQ(NameString("\\_SB"), (Bytes{'\\', '_', 'S', 'B', '_'}));
  EXPECT_EQ(NameString("_SB_.COM1"), (Bytes{0x2e, '_', 'S', 'B', '_', 'C', 'O', 'M', '1'}));
  EXPECT_EQ(NameString("\\_SB_.PCI0.ISA_"),
            (Bytes{'\\', 0x2f, 3, '_', 'S', 'B', '_', 'P', 'C', 'I', '0', 'I', 'S', 'A', '_'}));
}

TEST(AmlNameString, AbortsOnAMalformedSegment) {
  EXPECT_DEATH((void)NameString("0ABC"), "bad name segment");
  EXPECT_DEATH((void)NameString("ABCDE"), "bad name segment");
  EXPECT_DEATH((void)NameString("Ab"), "bad character");
}

TEST(AmlName, IsNameOpThenNameThenObject) {
  EXPECT_EQ(Name("_UID", Integer(1)), (Bytes{0x08, '_', 'U', 'I', 'D', 0x01}));
}

TEST(AmlDevice, IsExtOpDeviceOpWithPkgLengthCoveringNameAndTerms) {
  // Device (COM1) { Name (_UID, One) }
  EXPECT_EQ(Device("COM1", {Name("_UID", Integer(1))}),
            (Bytes{0x5b, 0x82, 0x0b, 'C', 'O', 'M', '1', 0x08, '_', 'U', 'I', 'D', 0x01}));
}

TEST(AmlDevice, ABodyOfSixtyFourBytesGetsATwoBytePkgLength) {
  // Name + 10 Name(_UID, One) terms of 6 bytes = 64 bytes of body.
  std::vector<Bytes> terms(10, Name("_UID", Integer(1)));
  Bytes device = Device("DEV0", terms);
  ASSERT_EQ(device.size(), 2 + 2 + 64u);
  EXPECT_EQ(device[2], 0x40 | (66 & 0xf));
  EXPECT_EQ(device[3], 66 >> 4);
  EXPECT_EQ(device[4], 'D');
}

TEST(AmlScope, IsScopeOpWithPkgLengthAndName) {
  EXPECT_EQ(Scope("\\_SB_", {}), (Bytes{0x10, 0x06, '\\', '_', 'S', 'B', '_'}));
}

TEST(AmlResourceTemplate, EmptyHoldsOnlyTheEndTagWithChecksumZero) {
  // Buffer (0x02) { 0x79, 0x00 }
  EXPECT_EQ(ResourceTemplate({}), (Bytes{0x11, 0x05, 0x0a, 0x02, 0x79, 0x00}));
}

TEST(AmlResourceTemplate, BufferSizeCountsDescriptorsAndEndTag) {
  Bytes t = ResourceTemplate({FixedIo(0x60, 1)});
  // FixedIO is 4 bytes, the End Tag 2: buffer size 6.
  EXPECT_EQ(t, (Bytes{0x11, 0x09, 0x0a, 0x06, 0x4b, 0x60, 0x00, 0x01, 0x79, 0x00}));
}

TEST(AmlResource, IoDecode16) {
  EXPECT_EQ(Io(0x3f8, 0x3f8, 1, 8), (Bytes{0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08}));
}

TEST(AmlResource, IrqWithFlagsSetsTheMaskBitAndEdgeHighExclusive) {
  EXPECT_EQ(Irq(4, Trigger::kEdge, Polarity::kActiveHigh, Sharing::kExclusive),
            (Bytes{0x23, 0x10, 0x00, 0x01}));
  EXPECT_EQ(Irq(9, Trigger::kLevel, Polarity::kActiveLow, Sharing::kShared),
            (Bytes{0x23, 0x00, 0x02, 0x18}));
}

TEST(AmlResource, ExtendedInterruptIsAConsumerWithOneGsi) {
  EXPECT_EQ(ExtendedInterrupt(5, Trigger::kEdge, Polarity::kActiveHigh, Sharing::kExclusive),
            (Bytes{0x89, 0x06, 0x00, 0x03, 0x01, 0x05, 0x00, 0x00, 0x00}));
  EXPECT_EQ(ExtendedInterrupt(20, Trigger::kLevel, Polarity::kActiveLow, Sharing::kShared),
            (Bytes{0x89, 0x06, 0x00, 0x0d, 0x01, 0x14, 0x00, 0x00, 0x00}));
}

TEST(AmlResource, Memory32FixedReadWrite) {
  EXPECT_EQ(Memory32Fixed(true, 0xd0001000, 0x1000),
            (Bytes{0x86, 0x09, 0x00, 0x01, 0x00, 0x10, 0x00, 0xd0, 0x00, 0x10, 0x00, 0x00}));
}

TEST(AmlResource, FixedIoAbortsAboveTenBits) { EXPECT_DEATH((void)FixedIo(0x400, 1), "10 bits"); }

}  // namespace
}  // namespace ember::arch::aml
