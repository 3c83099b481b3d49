// The API front's handle on its ember-vmm, against a stand-in VMM (a Python script started
// through the real Launcher) that says HELLO and then breaks the control protocol.
#include <poll.h>
#include <signal.h>

#include <chrono>
#include <iomanip>
#include <optional>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "ember/v1/vmm_control.pb.h"
#include "tests/support/files.h"
#include "vmm/control/frame.h"
#include "vmm/fcapi/launcher.h"
#include "vmm/fcapi/vmm_process.h"

namespace ember::fcapi {
namespace {

// Accepts the front's connection on the --control-fd listener, sends argv[1] (hex), then a
// frame header far over the limit and bytes after it for as long as the front reads them.
constexpr char kBadFrameVmm[] = R"(
import socket, sys
listener = socket.socket(fileno=int(sys.argv[-1]))
conn, _ = listener.accept()
conn.sendall(bytes.fromhex(sys.argv[1]) + b"\xff\xff\xff\xff")
while True:
    conn.sendall(b"x" * 65536)
)";

std::string Hex(const std::string& bytes) {
  std::ostringstream out;
  for (unsigned char c : bytes) out << std::hex << std::setw(2) << std::setfill('0') << int{c};
  return out.str();
}

TEST(VmmProcess, ABadFrameFromTheVmmIsItsEndItIsKilledAndReaped) {
  testing::ScopedTempDir scratch("ember-vmm-process");
  auto launcher = Launcher::Start("/usr/bin/python3", "--control-fd");
  ASSERT_TRUE(launcher.ok()) << launcher.status();
  v1::VmmMessage hello;
  hello.mutable_event()->set_kind(v1::ControlEvent::HELLO);
  std::string hello_frame;
  ASSERT_TRUE(control::AppendFrame(hello, &hello_frame).ok());

  auto vmm = VmmProcess::Start({"-c", kBadFrameVmm, Hex(hello_frame)}, nullptr, scratch.path(),
                               *launcher);
  ASSERT_TRUE(vmm.ok()) << vmm.status();
  std::optional<int> code;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!code.has_value() && std::chrono::steady_clock::now() < deadline) {
    pollfd pfd{(*vmm)->fd(), POLLIN, 0};
    ASSERT_GE(::poll(&pfd, 1, 1000), 0);
    code = (*vmm)->Drain();
  }
  ASSERT_TRUE(code.has_value()) << "the front kept reading a VMM whose stream is broken";
  EXPECT_EQ(*code, 128 + SIGKILL);
}

}  // namespace
}  // namespace ember::fcapi
