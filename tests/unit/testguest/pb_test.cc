// rootfs/testguest/pb.c on the host: what it writes parses with libprotobuf, what libprotobuf
// writes it reads, and malformed input is an error, never a read past the buffer.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "ember/v1/agent.pb.h"

extern "C" {
#include "rootfs/testguest/pb.h"
}

namespace ember::testing {
namespace {

pb_reader ReaderOf(const std::string& bytes) {
  return pb_reader_of(bytes.data(), static_cast<std::uint32_t>(bytes.size()));
}

// Reads every field of `bytes` as pb.c's callers do; false once the reader reports an error.
bool SkipAll(const std::string& bytes) {
  pb_reader r = ReaderOf(bytes);
  std::uint32_t field = 0, type = 0;
  while (pb_next(&r, &field, &type)) {
    if (!pb_skip(&r, type)) break;
  }
  return r.error == 0;
}

TEST(TestGuestPb, WrittenMessageParsesWithProtobuf) {
  std::vector<std::uint8_t> buf(256);
  pb_writer w = pb_writer_of(buf.data(), static_cast<std::uint32_t>(buf.size()));
  pb_put_varint(&w, 1, 1'765'000'000'123'456'789ull);
  pb_put_varint(&w, 2, 25);
  pb_put_varint(&w, 3, UINT64_MAX);
  pb_put_varint(&w, 4, 0);
  ASSERT_EQ(w.overflow, 0);

  v1::PostRestoreResult result;
  ASSERT_TRUE(result.ParseFromArray(buf.data(), static_cast<int>(w.len)));
  EXPECT_EQ(result.wall_clock_ns(), 1'765'000'000'123'456'789ull);
  EXPECT_EQ(result.entropy_bytes(), 25u);
  EXPECT_EQ(result.entropy_fnv1a(), UINT64_MAX);
}

TEST(TestGuestPb, NegativeInt32IsWrittenAsProtobufDoes) {
  v1::ExitStatus exit;
  exit.set_exit_code(-3);
  std::vector<std::uint8_t> buf(32);
  pb_writer w = pb_writer_of(buf.data(), static_cast<std::uint32_t>(buf.size()));
  pb_put_varint(&w, 1, static_cast<std::uint64_t>(std::int64_t{-3}));
  EXPECT_EQ(std::string(buf.begin(), buf.begin() + w.len), exit.SerializeAsString());
}

TEST(TestGuestPb, ReadsWhatProtobufWrote) {
  v1::ExecRequest request;
  request.add_argv("echo");
  request.add_argv(std::string(300, 'a'));  // a two-byte length
  request.set_stdin(std::string("\0in", 3));
  request.set_uid(4'000'000'000u);
  const std::string bytes = request.SerializeAsString();

  pb_reader r = ReaderOf(bytes);
  std::uint32_t field = 0, type = 0;
  std::vector<std::string> argv;
  std::string in;
  std::uint64_t uid = 0;
  while (pb_next(&r, &field, &type)) {
    const std::uint8_t* data = nullptr;
    std::uint32_t len = 0;
    if (field == 1 && type == PB_LEN && pb_read_len(&r, &data, &len)) {
      argv.emplace_back(reinterpret_cast<const char*>(data), len);  // bytes, as char for compare
    } else if (field == 6 && type == PB_LEN && pb_read_len(&r, &data, &len)) {
      in.assign(reinterpret_cast<const char*>(data), len);
    } else if (field == 4 && type == PB_VARINT) {
      ASSERT_TRUE(pb_read_varint(&r, &uid));
    }
  }
  EXPECT_EQ(r.error, 0);
  EXPECT_EQ(argv, (std::vector<std::string>{"echo", std::string(300, 'a')}));
  EXPECT_EQ(in, std::string("\0in", 3));
  EXPECT_EQ(uid, 4'000'000'000u);
}

TEST(TestGuestPb, EveryWireTypeButGroupsIsSkipped) {
  // Field 1 as varint, fixed64, bytes and fixed32.
  EXPECT_TRUE(
      SkipAll("\x08\x96\x01\x09"
              "12345678\x0a\x02xy\x0d"
              "1234"));
}

TEST(TestGuestPb, VarintThatNeverEndsIsAnError) { EXPECT_FALSE(SkipAll("\x08\xff\xff")); }

TEST(TestGuestPb, VarintOverSixtyFourBitsIsAnError) {
  EXPECT_FALSE(SkipAll("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02"));      // bit 64 set
  EXPECT_FALSE(SkipAll("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x81\x00"));  // 11 bytes
  EXPECT_TRUE(SkipAll("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"));       // UINT64_MAX
}

TEST(TestGuestPb, LengthPastTheEndIsAnError) {
  EXPECT_FALSE(
      SkipAll("\x0a\x05"
              "abc"));
  EXPECT_FALSE(SkipAll("\x0a\xff\xff\xff\xff\x0f"));  // 4 GiB
  EXPECT_FALSE(
      SkipAll(std::string("\x09"
                          "1234567",
                          8)));  // fixed64 short by a byte
  EXPECT_FALSE(
      SkipAll(std::string("\x0d"
                          "123",
                          4)));  // fixed32 short by a byte
}

TEST(TestGuestPb, GroupsAndFieldZeroAreErrors) {
  EXPECT_FALSE(SkipAll("\x0b"));                      // start group
  EXPECT_FALSE(SkipAll("\x0c"));                      // end group
  EXPECT_FALSE(SkipAll(std::string("\x00\x01", 2)));  // field 0
  EXPECT_FALSE(SkipAll("\x0e\x01"));                  // wire type 6
}

TEST(TestGuestPb, WriterNeverWritesPastItsCapacity) {
  std::vector<std::uint8_t> buf(16, 0xee);
  pb_writer w = pb_writer_of(buf.data(), 8);
  const std::string data(20, 'x');
  pb_put_bytes(&w, 1, data.data(), static_cast<std::uint32_t>(data.size()));
  EXPECT_NE(w.overflow, 0);
  for (std::size_t i = 8; i < buf.size(); ++i) EXPECT_EQ(buf[i], 0xee) << "byte " << i;

  pb_writer v = pb_writer_of(buf.data(), 3);
  pb_put_varint(&v, 1, UINT64_MAX);
  EXPECT_NE(v.overflow, 0);
  EXPECT_LE(v.len, 3u);
}

}  // namespace
}  // namespace ember::testing
