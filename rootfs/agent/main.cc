// ember-agent: serves agent.proto inside a guest (vsock) or, for host tests, on a Unix
// socket. See proto/ember/v1/agent.proto and DESIGN.md ("The serverless layer").
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <string_view>
#include <thread>

#include "ember/v1/agent.pb.h"
#include "rootfs/agent/agent.h"
#include "rootfs/agent/connection.h"
#include "rootfs/agent/listener.h"

namespace {

using ember::agent::Agent;
using ember::agent::AgentOptions;

// More connections at once than any host needs; past it a connection is refused with an
// error, so a flood cannot exhaust the guest's threads.
constexpr int kMaxConnections = 128;

constexpr const char* kUsage =
    "usage: ember-agent [--port N | --unix PATH] [--ready-unix PATH] [--image-config PATH]\n"
    "                   [--no-set-clock]\n"
    "  --port N             vsock port to listen on (default 1024, AGENT_PORT_DEFAULT)\n"
    "  --unix PATH          listen on a Unix socket instead (host tests); no ready event\n"
    "                       unless --ready-unix names where to send it\n"
    "  --ready-unix PATH    send the ready event to this Unix socket\n"
    "  --image-config PATH  the image's config (default /etc/ember/image-config.pb)\n"
    "  --no-set-clock       PostRestore leaves the wall clock alone (tests on a shared host)\n";

[[noreturn]] void UsageError(const std::string& message) {
  std::cerr << "ember-agent: error: " << message << "\n" << kUsage;
  std::exit(2);
}

struct Flags {
  std::uint32_t port = ember::v1::AGENT_PORT_DEFAULT;
  std::string unix_path;
  std::string ready_unix;
  AgentOptions options;
};

Flags ParseFlags(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) UsageError(std::string(arg) + " needs a value");
      return argv[++i];
    };
    if (arg == "--port") {
      std::string text = value();
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), flags.port);
      if (ec != std::errc() || end != text.data() + text.size()) {
        UsageError("--port " + text + " is not a port number");
      }
    } else if (arg == "--unix") {
      flags.unix_path = value();
    } else if (arg == "--ready-unix") {
      flags.ready_unix = value();
    } else if (arg == "--image-config") {
      flags.options.image_config_path = value();
    } else if (arg == "--no-set-clock") {
      flags.options.set_clock = false;
    } else if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      std::exit(0);
    } else {
      UsageError("unknown argument " + std::string(arg));
    }
  }
  return flags;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags = ParseFlags(argc, argv);
  // Sends use MSG_NOSIGNAL; writes to a process's stdin get EPIPE instead of a signal. A
  // child gets the default back (Spawn). SIGCHLD stays default: the agent reaps its own.
  ::signal(SIGPIPE, SIG_IGN);
  ::signal(SIGCHLD, SIG_DFL);

  absl::StatusOr<ember::base::UniqueFd> listener =
      flags.unix_path.empty() ? ember::agent::ListenVsock(flags.port)
                              : ember::agent::ListenUnix(flags.unix_path);
  if (!listener.ok()) {
    std::cerr << "ember-agent: error: " << listener.status().message() << "\n";
    return 1;
  }
  static Agent agent(flags.options);
  std::cerr << "ember-agent: listening on "
            << (flags.unix_path.empty() ? "vsock port " + std::to_string(flags.port)
                                        : flags.unix_path)
            << "\n";

  if (flags.unix_path.empty() || !flags.ready_unix.empty()) {
    std::thread([ready_unix = flags.ready_unix] {
      absl::StatusOr<ember::v1::ReadyInfo> info = agent.Info();
      absl::Status sent = info.ok() ? ember::agent::SendReadyEvent(*info, ready_unix)
                                    : info.status();
      if (!sent.ok()) std::cerr << "ember-agent: no ready event: " << sent.message() << "\n";
    }).detach();
  }

  static std::atomic<int> active{0};
  while (true) {
    int fd = ::accept4(listener->Get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EINTR && errno != ECONNABORTED) {
        std::cerr << "ember-agent: accept4: " << std::strerror(errno) << "\n";
        ::usleep(10'000);  // EMFILE and the like: let connections end before trying again
      }
      continue;
    }
    ember::base::UniqueFd conn(fd);
    if (active.load() >= kMaxConnections) {
      ember::agent::Connection(std::move(conn))
          .SendError(absl::ResourceExhaustedError("the agent serves " +
                                                  std::to_string(kMaxConnections) +
                                                  " connections already"));
      continue;
    }
    ++active;
    std::thread([conn = std::move(conn)]() mutable {
      agent.Serve(std::move(conn));
      --active;
    }).detach();
  }
}
