// The client's path through ember-vmm's vsock Unix-socket backend (Firecracker's
// "CONNECT <port>\n" / "OK <host port>\n" handshake), against a stand-in backend that
// answers the handshake the way the VMM does and then relays bytes to a real ember-agent.
// The real backend with a guest behind it is the test guest's scenario (kvm).
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "tests/unit/agent/agent_harness.h"
#include "vmm/base/unique_fd.h"

namespace ember::testing {
namespace {

base::UniqueFd UnixSocket(const std::string& path, bool listen) {
  base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  const auto* raw = reinterpret_cast<const sockaddr*>(&addr);  // AF_UNIX's own sockaddr
  if (listen) {
    if (::bind(fd.Get(), raw, sizeof(addr)) != 0 || ::listen(fd.Get(), 4) != 0) return {};
  } else if (::connect(fd.Get(), raw, sizeof(addr)) != 0) {
    return {};
  }
  return fd;
}

// Serves one connection at `uds_path` the way ember-vmm's backend does: a "CONNECT <port>\n"
// line; for `open_port`, `answer` and then a relay to `agent_path`; otherwise the
// connection is closed (a refused port).
class FakeVsockBackend {
 public:
  FakeVsockBackend(const std::string& uds_path, std::uint32_t open_port, std::string agent_path,
                   std::string answer = "OK 1073741824\n")
      : listener_(UnixSocket(uds_path, true)) {
    thread_ = std::thread([this, open_port, agent_path, answer] {
      base::UniqueFd host(::accept4(listener_.Get(), nullptr, nullptr, SOCK_CLOEXEC));
      std::string line;
      char c;
      while (::read(host.Get(), &c, 1) == 1 && c != '\n') line.push_back(c);
      line_ = line;
      if (line != "CONNECT " + std::to_string(open_port)) return;
      (void)!::write(host.Get(), answer.data(), answer.size());
      base::UniqueFd guest = UnixSocket(agent_path, false);
      Relay(host.Get(), guest.Get());
    });
  }
  ~FakeVsockBackend() {
    ::shutdown(listener_.Get(), SHUT_RDWR);
    thread_.join();
  }
  // The handshake line the client sent, without its newline.
  [[nodiscard]] const std::string& line() const { return line_; }

 private:
  static void Relay(int a, int b) {
    char buffer[65536];
    while (true) {
      pollfd fds[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
      if (::poll(fds, 2, 30'000) <= 0) return;
      for (int i = 0; i < 2; ++i) {
        if (fds[i].revents == 0) continue;
        ssize_t n = ::read(fds[i].fd, buffer, sizeof(buffer));
        if (n <= 0) return;
        if (::write(fds[1 - i].fd, buffer, static_cast<std::size_t>(n)) != n) return;
      }
    }
  }

  base::UniqueFd listener_;
  std::thread thread_;
  std::string line_;
};

TEST(AgentClientVsock, ReachesTheAgentThroughTheConnectHandshake) {
  AgentUnderTest agent;
  const std::string uds = agent.scratch() + "/v.sock";
  FakeVsockBackend backend(uds, v1::AGENT_PORT_DEFAULT, agent.socket_path());
  agent_client::AgentClient client(agent_client::Endpoint::Vsock(uds));

  absl::StatusOr<v1::ReadyInfo> ready = client.Ready();

  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_EQ(ready->boot_id(), agent.ready_event()->boot_id());
}

TEST(AgentClientVsock, AnExecStreamsThroughTheBackend) {
  AgentUnderTest agent;
  const std::string uds = agent.scratch() + "/v.sock";
  FakeVsockBackend backend(uds, v1::AGENT_PORT_DEFAULT, agent.socket_path());
  agent_client::AgentClient client(agent_client::Endpoint::Vsock(uds));
  Collected output;

  absl::StatusOr<agent_client::ExecResult> result =
      client.Exec(ExecOf({"seq", "1", "20000"}), output.Callback());

  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit.exit_code(), 0);
  EXPECT_TRUE(output.out.ends_with("\n19999\n20000\n"));
}

TEST(AgentClientVsock, APortNobodyListensOnIsUnavailable) {
  ScopedTempDir dir("ember-agent-vsock");
  const std::string uds = dir.path() + "/v.sock";
  FakeVsockBackend backend(uds, v1::AGENT_PORT_DEFAULT, "");
  agent_client::AgentClient client(agent_client::Endpoint::Vsock(uds, 5555));

  absl::Status status = client.Ready().status();

  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_NE(status.message().find("refused"), std::string_view::npos) << status;
  EXPECT_NE(status.message().find("CONNECT 5555"), std::string_view::npos) << status;
}

TEST(AgentClientVsock, AnAnswerOtherThanOkIsUnavailable) {
  ScopedTempDir dir("ember-agent-vsock");
  const std::string uds = dir.path() + "/v.sock";
  FakeVsockBackend backend(uds, v1::AGENT_PORT_DEFAULT, "", "NOPE\n");
  agent_client::AgentClient client(agent_client::Endpoint::Vsock(uds));

  absl::Status status = client.Ready().status();

  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_NE(status.message().find("NOPE"), std::string_view::npos) << status;
}

TEST(AgentClientVsock, NoBackendSocketIsUnavailable) {
  ScopedTempDir dir("ember-agent-vsock");
  agent_client::AgentClient client(agent_client::Endpoint::Vsock(dir.path() + "/none.sock"));

  EXPECT_EQ(client.Ready().status().code(), absl::StatusCode::kUnavailable);
}

TEST(AgentClientVsock, TheReadyListenerSitsWhereTheBackendDeliversPort1025) {
  ScopedTempDir dir("ember-agent-vsock");

  absl::StatusOr<agent_client::ReadyListener> listener =
      agent_client::ReadyListener::ForVsock(dir.path() + "/v.sock");

  ASSERT_TRUE(listener.ok()) << listener.status();
  EXPECT_EQ(listener->path(), dir.path() + "/v.sock_1025");
  EXPECT_EQ(listener->Accept(50).status().code(), absl::StatusCode::kDeadlineExceeded);
}

}  // namespace
}  // namespace ember::testing
