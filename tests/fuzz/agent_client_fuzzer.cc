// libFuzzer target: the host's agent client (vmm/agent_client) against a hostile agent. The
// agent runs in the guest, so every byte it answers is untrusted: the input is what a fake
// agent sends back on the request's connection (after the vsock backend's "OK <port>\n"
// line, or in its place), for one of the client's calls; then it closes. The client must
// return a status, never crash, hang or gather without bound.

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include "vmm/agent_client/agent_client.h"
#include "vmm/base/unique_fd.h"
#include "vmm/base/unix_address.h"

namespace {

using namespace ember;

// The fake agent's listener, one per process; the client connects to it either as to an
// agent's own Unix socket or as to ember-vmm's vsock backend (then it first says CONNECT).
// Never freed: the exit handler that removes its directory runs after static destructors.
struct Listener {
  std::string dir;
  std::string path;
  base::UniqueFd fd;
};

const Listener& FakeAgentListener() {
  static const Listener* listener = [] {
    char dir[] = "/tmp/ember_agent_fuzz_XXXXXX";
    if (::mkdtemp(dir) == nullptr) std::abort();
    auto* l = new Listener{dir, std::string(dir) + "/agent.sock", {}};
    l->fd = base::UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const sockaddr_un addr = base::UnixAddress(l->path).value();
    // sockaddr_un is what bind takes for a Unix socket.
    if (::bind(l->fd.Get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(l->fd.Get(), 16) != 0) {
      std::abort();
    }
    std::atexit([] { std::filesystem::remove_all(FakeAgentListener().dir); });
    return l;
  }();
  return *listener;
}

// Accepts one connection, sends `reply`, reads what the client sent, closes.
void ServeOnce(int listener, const std::string& reply) {
  pollfd pfd{listener, POLLIN, 0};
  if (::poll(&pfd, 1, 5000) != 1) return;  // the client never connected
  base::UniqueFd conn(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
  if (conn.Get() < 0) return;
  std::size_t sent = 0;
  while (sent < reply.size()) {
    const ssize_t n = ::send(conn.Get(), reply.data() + sent, reply.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<std::size_t>(n);
  }
  ::shutdown(conn.Get(), SHUT_WR);
  char sink[4096];
  while (::read(conn.Get(), sink, sizeof(sink)) > 0) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const Listener& listener = FakeAgentListener();
  const std::string& path = listener.path;
  const std::uint8_t choice = data[0];
  // The fake agent's bytes; reinterpret_cast: libFuzzer's bytes as the chars a socket sends.
  const std::string reply(reinterpret_cast<const char*>(data) + 1, size - 1);
  const agent_client::Endpoint endpoint = (choice & 0x80) != 0 ? agent_client::Endpoint::Vsock(path)
                                                               : agent_client::Endpoint::Unix(path);
  agent_client::Options options;
  options.connect_timeout_ms = 2000;
  options.reply_timeout_ms = 2000;
  options.max_invoke_output_bytes = 1 << 16;
  agent_client::AgentClient client(endpoint, options);
  std::thread agent(ServeOnce, listener.fd.Get(), reply);
  switch (choice & 0x7) {
    case 0:
      (void)client.Ready();
      break;
    case 1: {
      v1::ExecRequest request;
      request.add_argv("echo");
      (void)client.Exec(request, [](v1::Output::Stream, std::string_view) {});
      break;
    }
    case 2:
      (void)client.Invoke("payload", 1000);
      break;
    case 3:
      (void)client.PostRestore(v1::PostRestoreRequest());
      break;
    case 4:
      (void)client.StartHandler(v1::StartHandlerRequest());
      break;
    case 5:
      (void)client.Signal("e1", 15);
      break;
    case 6: {
      v1::ExecRequest request;
      request.add_argv("cat");
      auto call = client.StartExec(request);
      if (call.ok()) {
        (void)(*call)->SendStdin("in", true);
        (void)(*call)->Wait([](v1::Output::Stream, std::string_view) {});
      }
      break;
    }
    default:
      (void)client.Shutdown();
  }
  agent.join();
  return 0;
}
