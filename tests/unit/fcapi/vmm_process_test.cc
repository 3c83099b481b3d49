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

// Accepts the front's connection, sends argv[1] (hex, a HELLO frame) and then argv[2] (a STATE
// event frame) every 100 ms for 10 s without ever answering a request, then closes.
constexpr char kChattyVmm[] = R"(
import socket, sys, time
listener = socket.socket(fileno=int(sys.argv[-1]))
conn, _ = listener.accept()
conn.sendall(bytes.fromhex(sys.argv[1]))
for _ in range(100):
    conn.sendall(bytes.fromhex(sys.argv[2]))
    time.sleep(0.1)
)";

std::string EventFrame(v1::ControlEvent::Kind kind) {
  v1::VmmMessage message;
  message.mutable_event()->set_kind(kind);
  std::string frame;
  EXPECT_TRUE(control::AppendFrame(message, &frame).ok());
  return frame;
}

TEST(VmmProcess, ACallEndsAtItsDeadlineThoughTheVmmKeepsSendingEvents) {
  testing::ScopedTempDir scratch("ember-vmm-process");
  auto launcher = Launcher::Start("/usr/bin/python3", "--control-fd");
  ASSERT_TRUE(launcher.ok()) << launcher.status();
  auto vmm = VmmProcess::Start({"-c", kChattyVmm, Hex(EventFrame(v1::ControlEvent::HELLO)),
                                Hex(EventFrame(v1::ControlEvent::STATE))},
                               nullptr, scratch.path(), *launcher);
  ASSERT_TRUE(vmm.ok()) << vmm.status();
  v1::ControlRequest request;
  request.mutable_describe();
  // Before: each event restarted the wait, so the call lasted as long as the events did and
  // ended only when the stand-in closed (UNAVAILABLE).
  auto response = (*vmm)->Call(request, 500);
  EXPECT_EQ(response.status().code(), absl::StatusCode::kDeadlineExceeded) << response.status();
}

TEST(Launcher, RefusesAnArgumentHoldingANul) {
  auto launcher = Launcher::Start("/usr/bin/python3", "--control-fd");
  ASSERT_TRUE(launcher.ok()) << launcher.status();
  // The helper splits its request at NULs: "x\0--seccomp\0off" would be three arguments.
  auto pid = launcher->Spawn({"-c", std::string("x\0--seccomp\0off", 16)}, 0);
  EXPECT_EQ(pid.status().code(), absl::StatusCode::kInvalidArgument) << pid.status();
}

}  // namespace
}  // namespace ember::fcapi
