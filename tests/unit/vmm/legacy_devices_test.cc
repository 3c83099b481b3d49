#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <string>
#include <vector>

#include "vmm/base/unique_fd.h"
#include "vmm/bus.h"
#include "vmm/devices/legacy/i8042.h"
#include "vmm/devices/legacy/serial.h"

namespace ember::devices {
namespace {

std::uint8_t ReadReg(base::BusDevice& device, std::uint64_t offset) {
  std::array<std::uint8_t, 1> value{};
  device.Read(offset, value);
  return value[0];
}

void WriteReg(base::BusDevice& device, std::uint64_t offset, std::uint8_t value) {
  device.Write(offset, std::array<std::uint8_t, 1>{value});
}

class SerialTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    read_end_.Reset(fds[0]);
    write_end_.Reset(fds[1]);
    auto irq = base::EventFd::Create();
    ASSERT_TRUE(irq.ok());
    irq_.emplace(std::move(*irq));
    serial_ = std::make_unique<Serial>(write_end_.Get(), &*irq_, nullptr);
  }

  base::UniqueFd read_end_, write_end_;
  std::optional<base::EventFd> irq_;
  std::unique_ptr<Serial> serial_;
};

TEST_F(SerialTest, TransmittedByteReachesTheOutputFd) {
  WriteReg(*serial_, 0, 'A');
  char c = 0;
  ASSERT_EQ(::read(read_end_.Get(), &c, 1), 1);
  EXPECT_EQ(c, 'A');
}

TEST(SerialCap, OutputPastTheCapIsDroppedAndCounted) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_NONBLOCK), 0);
  base::UniqueFd read_end(fds[0]), write_end(fds[1]);
  Serial serial(write_end.Get(), nullptr, nullptr, /*max_output_bytes=*/4);
  base::Metric* over_cap = base::MetricsRegistry::Global().Get("uart", "bytes_over_cap");
  const std::uint64_t before = over_cap->Get();

  for (char c : std::string("abcdef")) WriteReg(serial, 0, static_cast<std::uint8_t>(c));

  std::array<char, 16> out{};
  EXPECT_EQ(::read(read_end.Get(), out.data(), out.size()), 4);
  EXPECT_EQ(std::string(out.data(), 4), "abcd");
  EXPECT_EQ(over_cap->Get() - before, 2u);
  // The guest is not held up: its transmitter still reads empty.
  EXPECT_EQ(ReadReg(serial, 5) & 0x60, 0x60);
}

TEST_F(SerialTest, TransmitterAlwaysReadsAsEmpty) {
  EXPECT_EQ(ReadReg(*serial_, 5) & 0x60, 0x60);
}

TEST_F(SerialTest, InputIsReadInOrderAndSetsDataReady) {
  const std::uint8_t input[] = {'h', 'i'};
  EXPECT_EQ(serial_->EnqueueInput(input), 2u);
  EXPECT_EQ(ReadReg(*serial_, 5) & 0x01, 0x01);
  EXPECT_EQ(ReadReg(*serial_, 0), 'h');
  EXPECT_EQ(ReadReg(*serial_, 0), 'i');
  EXPECT_EQ(ReadReg(*serial_, 5) & 0x01, 0x00);
}

TEST_F(SerialTest, InputBeyondTheFifoIsNotAccepted) {
  std::vector<std::uint8_t> input(Serial::kFifoSize + 10, 'x');
  EXPECT_EQ(serial_->EnqueueInput(input), Serial::kFifoSize);
}

TEST_F(SerialTest, LoopbackModeMirrorsModemControlInStatus) {
  // Linux's 8250 probe: loopback with OUT2|OUT1|RTS|DTR set must read back in MSR's top bits.
  WriteReg(*serial_, 4, 0x10 | 0x0f);
  EXPECT_EQ(ReadReg(*serial_, 6) & 0xf0, 0xf0);
}

TEST_F(SerialTest, ScratchRegisterHoldsItsValue) {
  WriteReg(*serial_, 7, 0x5a);
  EXPECT_EQ(ReadReg(*serial_, 7), 0x5a);
}

TEST_F(SerialTest, RxInterruptIsRaisedWhenEnabled) {
  WriteReg(*serial_, 1, 0x01);  // IER: receive data available
  irq_->Consume();
  const std::uint8_t input[] = {'x'};
  serial_->EnqueueInput(input);
  EXPECT_EQ(irq_->Consume(), 1u);
  EXPECT_EQ(ReadReg(*serial_, 2) & 0x0f, 0x04);  // IIR: receive data available
}

TEST(I8042, ResetCommandSignalsTheResetEvent) {
  auto reset = base::EventFd::Create();
  ASSERT_TRUE(reset.ok());
  I8042 i8042(&*reset);
  WriteReg(i8042, 4, 0xfe);
  EXPECT_EQ(reset->Consume(), 1u);
}

TEST(I8042, SelfTestAnswersPassed) {
  auto reset = base::EventFd::Create();
  ASSERT_TRUE(reset.ok());
  I8042 i8042(&*reset);
  WriteReg(i8042, 4, 0xaa);
  EXPECT_EQ(ReadReg(i8042, 4) & 0x01, 0x01);  // output buffer full
  EXPECT_EQ(ReadReg(i8042, 0), 0x55);
  EXPECT_EQ(reset->Consume(), 0u);
}

// Reads the data port while the status port says the output buffer is full.
std::vector<std::uint8_t> DrainOutput(I8042& i8042) {
  std::vector<std::uint8_t> bytes;
  for (int i = 0; i < 64 && (ReadReg(i8042, 4) & 0x01) != 0; ++i) {
    bytes.push_back(ReadReg(i8042, 0));
  }
  return bytes;
}

TEST(I8042, CtrlAltDelQueuesItsSet2ScancodesAndRaisesIrq1PerByte) {
  auto reset = base::EventFd::Create();
  auto irq = base::EventFd::Create();
  ASSERT_TRUE(reset.ok() && irq.ok());
  I8042 i8042(&*reset, &*irq);
  EXPECT_EQ(ReadReg(i8042, 4) & 0x01, 0x00);

  ASSERT_TRUE(i8042.SendCtrlAltDel().ok());

  EXPECT_EQ(irq->Consume(), 1u);
  EXPECT_EQ(ReadReg(i8042, 4) & 0x01, 0x01);  // OBF
  EXPECT_EQ(ReadReg(i8042, 0), 0x14);          // left Ctrl pressed
  EXPECT_EQ(irq->Consume(), 1u);               // raised again for the next byte
  const std::vector<std::uint8_t> rest = DrainOutput(i8042);
  EXPECT_EQ(rest, (std::vector<std::uint8_t>{0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11,
                                             0xf0, 0x14}));
  EXPECT_EQ(ReadReg(i8042, 4) & 0x01, 0x00);
  EXPECT_EQ(irq->Consume(), 9u);  // once per byte read while more waited
  EXPECT_EQ(reset->Consume(), 0u);
}

TEST(I8042, CtrlAltDelRaisesNoIrqWhenTheGuestMaskedTheKeyboardInterrupt) {
  auto reset = base::EventFd::Create();
  auto irq = base::EventFd::Create();
  ASSERT_TRUE(reset.ok() && irq.ok());
  I8042 i8042(&*reset, &*irq);
  WriteReg(i8042, 4, 0x60);  // write the control byte:
  WriteReg(i8042, 0, 0x00);  // keyboard interrupt off

  ASSERT_TRUE(i8042.SendCtrlAltDel().ok());

  EXPECT_EQ(irq->Consume(), 0u);
  EXPECT_EQ(DrainOutput(i8042).size(), 11u);  // the bytes still wait for a polling guest
}

TEST(I8042, CtrlAltDelIsRefusedWhileTheGuestLeavesTheBufferUnread) {
  auto reset = base::EventFd::Create();
  ASSERT_TRUE(reset.ok());
  I8042 i8042(&*reset);
  ASSERT_TRUE(i8042.SendCtrlAltDel().ok());

  absl::Status second = i8042.SendCtrlAltDel();

  EXPECT_EQ(second.code(), absl::StatusCode::kResourceExhausted) << second;
  EXPECT_EQ(DrainOutput(i8042).size(), 11u);
  EXPECT_TRUE(i8042.SendCtrlAltDel().ok());  // room again once read
}

TEST(Bus, OverlappingRangesAreRejected) {
  auto reset = base::EventFd::Create();
  ASSERT_TRUE(reset.ok());
  I8042 a(&*reset), b(&*reset);
  vmm::Bus bus("test_bus");
  ASSERT_TRUE(bus.Insert(0x60, 5, &a).ok());
  EXPECT_FALSE(bus.Insert(0x64, 1, &b).ok());
  EXPECT_FALSE(bus.Insert(0x5f, 2, &b).ok());
  EXPECT_TRUE(bus.Insert(0x65, 1, &b).ok());
}

TEST(Bus, UnclaimedReadReturnsAllOnes) {
  vmm::Bus bus("test_bus");
  std::array<std::uint8_t, 2> data{};
  EXPECT_FALSE(bus.Read(0x1234, data));
  EXPECT_EQ(data[0], 0xff);
  EXPECT_EQ(data[1], 0xff);
}

TEST(Bus, AccessDispatchesWithOffsetFromBase) {
  auto reset = base::EventFd::Create();
  ASSERT_TRUE(reset.ok());
  I8042 i8042(&*reset);
  vmm::Bus bus("test_bus");
  ASSERT_TRUE(bus.Insert(0x60, 5, &i8042).ok());
  std::array<std::uint8_t, 1> reset_command{0xfe};
  EXPECT_TRUE(bus.Write(0x64, reset_command));
  EXPECT_EQ(reset->Consume(), 1u);
}

}  // namespace
}  // namespace ember::devices
