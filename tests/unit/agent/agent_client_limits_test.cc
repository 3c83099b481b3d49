// The host client against a fake agent that misbehaves the way an untrusted guest can
// (endless output), and against a listener whose backlog is full.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ember/v1/agent.pb.h"
#include "tests/support/files.h"
#include "vmm/agent_client/agent_client.h"
#include "vmm/base/unique_fd.h"
#include "vmm/control/frame.h"

namespace ember::testing {
namespace {

sockaddr_un Address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  return addr;
}

// A blocking listener at `path` with `backlog`.
base::UniqueFd Listen(const std::string& path, int backlog) {
  base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr = Address(path);
  const auto* raw = reinterpret_cast<const sockaddr*>(&addr);  // AF_UNIX's own sockaddr
  if (::bind(fd.Get(), raw, sizeof(addr)) != 0 || ::listen(fd.Get(), backlog) != 0) return {};
  return fd;
}

// Connects non-blocking sockets to `path` until the kernel says its backlog is full (EAGAIN);
// they are returned so they stay queued.
std::vector<base::UniqueFd> FillBacklog(const std::string& path) {
  std::vector<base::UniqueFd> queued;
  sockaddr_un addr = Address(path);
  for (int i = 0; i < 64; ++i) {
    base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (::connect(fd.Get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
      EXPECT_EQ(errno, EAGAIN) << std::strerror(errno);
      return queued;
    }
    queued.push_back(std::move(fd));
  }
  ADD_FAILURE() << "the backlog never filled";
  return queued;
}

// The next connection on `listener`, or none after 10 s (so a broken client fails the test
// instead of hanging it).
base::UniqueFd Accept(int listener) {
  pollfd pfd{listener, POLLIN, 0};
  if (::poll(&pfd, 1, 10'000) != 1) return {};
  return base::UniqueFd(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
}

bool SendFrame(int fd, const v1::AgentResponse& response) {
  std::string bytes;
  if (!control::AppendFrame(response, &bytes).ok()) return false;
  for (std::size_t done = 0; done < bytes.size();) {
    ssize_t n = ::send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// Reads one request frame (blocking), so closing the connection later drops no unread bytes
// (which a Unix socket reports to its peer as ECONNRESET).
bool ReadRequest(int fd) {
  unsigned char header[control::kFrameHeaderBytes];
  if (::recv(fd, header, sizeof(header), MSG_WAITALL) != sizeof(header)) return false;
  std::size_t length = header[0] | header[1] << 8 | header[2] << 16 | std::size_t{header[3]} << 24;
  std::string payload(length, '\0');
  return length == 0 || ::recv(fd, payload.data(), length, MSG_WAITALL) ==
                            static_cast<ssize_t>(length);
}

TEST(AgentClientLimits, InvokeOutputPastTheCapIsResourceExhaustedAndClosesTheConnection) {
  ScopedTempDir scratch("ember-agent-client");
  const std::string path = scratch.path() + "/agent.sock";
  base::UniqueFd listener = Listen(path, 4);
  ASSERT_TRUE(listener.Valid());

  constexpr std::size_t kPiece = 64 << 10;
  constexpr int kPieces = 256;  // 16 MiB, far past the 1 MiB cap below
  int pieces_sent = 0;
  std::thread agent([&] {
    base::UniqueFd conn = Accept(listener.Get());
    if (!ReadRequest(conn.Get())) return;
    v1::AgentResponse more;
    more.mutable_invoke_result()->set_output(std::string(kPiece, 'x'));
    more.mutable_invoke_result()->set_last(false);
    while (pieces_sent < kPieces && SendFrame(conn.Get(), more)) ++pieces_sent;
    if (pieces_sent < kPieces) return;  // the client hung up, as it should
    v1::AgentResponse last;
    last.mutable_invoke_result()->set_last(true);
    (void)SendFrame(conn.Get(), last);
  });

  agent_client::Options options;
  options.max_invoke_output_bytes = std::size_t{1} << 20;
  agent_client::AgentClient client(agent_client::Endpoint::Unix(path), options);
  absl::StatusOr<agent_client::InvokeOutcome> outcome = client.Invoke("payload", 0);
  agent.join();
  ASSERT_FALSE(outcome.ok()) << "gathered " << outcome->output.size() << " bytes";
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kResourceExhausted) << outcome.status();
  EXPECT_LT(pieces_sent, kPieces) << "the client kept reading past its cap";
}

// A listener (backlog 0) nobody has accepted from yet, its backlog filled.
class FullBacklog : public ::testing::Test {
 protected:
  void SetUp() override {
    listener = Listen(path, 0);
    ASSERT_TRUE(listener.Valid());
    queued = FillBacklog(path);
  }
  ScopedTempDir scratch{"ember-agent-client"};
  const std::string path = scratch.path() + "/agent.sock";
  base::UniqueFd listener;
  std::vector<base::UniqueFd> queued;
};

TEST_F(FullBacklog, ConnectThatNobodyAcceptsIsUnavailable) {

  agent_client::Options options;
  options.connect_timeout_ms = 300;
  agent_client::AgentClient client(agent_client::Endpoint::Unix(path), options);
  absl::StatusOr<v1::ReadyInfo> ready = client.Ready();
  ASSERT_FALSE(ready.ok());
  EXPECT_EQ(ready.status().code(), absl::StatusCode::kUnavailable) << ready.status();
}

TEST_F(FullBacklog, ConnectSucceedsOnceTheListenerAccepts) {

  std::thread agent([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    // The fillers were queued first; the client's connection comes after them.
    for (std::size_t i = 0; i < queued.size(); ++i) {
      base::UniqueFd filler = Accept(listener.Get());
    }
    base::UniqueFd conn = Accept(listener.Get());
    if (!ReadRequest(conn.Get())) return;
    v1::AgentResponse response;
    response.mutable_ready();
    (void)SendFrame(conn.Get(), response);
  });

  agent_client::Options options;
  options.connect_timeout_ms = 10'000;
  agent_client::AgentClient client(agent_client::Endpoint::Unix(path), options);
  absl::StatusOr<v1::ReadyInfo> ready = client.Ready();
  agent.join();
  EXPECT_TRUE(ready.ok()) << ready.status();
}

}  // namespace
}  // namespace ember::testing
