// ember-fc-api: Firecracker's REST API on a Unix socket, in front of ember-vmm. ember-vmm execs
// it for --api-sock (vmm/fcapi/firecracker_flags.h), so this process keeps the pid the caller
// started; it starts the real ember-vmm as its child at InstanceStart (or a snapshot load) and
// ends with it, with its exit code.
//
// Why a process of its own and not a thread in ember-vmm: the HTTP parser and protobuf's JSON
// parser (the full protobuf runtime, ~1.5 MiB more RSS: proto/CMakeLists.txt) would otherwise
// be linked into every ember-vmm, and ember-vmm without --api-sock must keep its start-up and
// memory. Here they cost nothing unless the API is used, and the VMM this front starts is the
// same ember-vmm, with the same per-thread seccomp filters, that emberd drives over the same
// control channel.
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <list>
#include <optional>
#include <string>
#include <string_view>

#include "vmm/base/logging.h"
#include "vmm/base/sibling_executable.h"
#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"
#include "vmm/config_tool/vm_config_json.h"
#include "vmm/control/frame.h"
#include "vmm/exit_code.h"
#include "vmm/fcapi/api.h"
#include "vmm/fcapi/firecracker_names.h"
#include "vmm/fcapi/front_seccomp.h"
#include "vmm/fcapi/http_connection.h"
#include "vmm/fcapi/launcher.h"

namespace ember::fcapi {
namespace {

// Firecracker's default for --http-api-max-payload-size.
constexpr std::size_t kDefaultMaxPayload = 51200;
constexpr int kWriteTimeoutMs = 5000;
// Connections served at once; more wait in the listen backlog. Firecracker's users hold one or
// two: the cap keeps a flood of idle clients from taking every fd the front may open.
constexpr std::size_t kMaxClients = 64;
// After accept4 fails for want of fds or memory, the listener (still readable) is left out of
// poll for this long, or until a client closes, instead of being retried in a busy loop.
constexpr int kAcceptPauseMs = 100;

constexpr char kUsage[] =
    "usage: ember-vmm --api-sock PATH [options]    (or: firecracker [options])\n"
    "\n"
    "Serves Firecracker's REST API (HTTP/1.1 over the Unix socket PATH) for one microVM, and\n"
    "runs it with ember-vmm from InstanceStart or PUT /snapshot/load on.\n"
    "\n"
    "  --api-sock PATH        the socket (Firecracker's default: /run/firecracker.socket);\n"
    "                         it must not exist yet\n"
    "  --config-file FILE     boot at once from Firecracker's config file, then serve the API\n"
    "  --id ID                the instance id GET / reports (letters, digits, '-')\n"
    "  --level LEVEL          log level (Error, Warning, Info, Debug, Trace)\n"
    "  --log-path FILE        the log (this front's and the VMM's)\n"
    "  --metrics-path FILE    the metrics file (wins over PUT /metrics)\n"
    "  --http-api-max-payload-size N   largest request body, bytes (default 51200)\n"
    "  --no-seccomp           run the VMM without its seccomp filters\n"
    "  --start-time-us N      CLOCK_MONOTONIC µs the caller started us; the boot timer counts\n"
    "                         from it\n"
    "  --boot-timer, --show-level, --show-log-origin, --start-time-cpu-us N,\n"
    "  --parent-cpu-time-us N  taken (Ember's boot timer device and log decorations are on)\n"
    "  --serial-out FILE, --seccomp MODE   ember-vmm's own, passed to it\n"
    "  --allow-dir DIR        ember-vmm's own, passed to it for PUT /snapshot/load: drive and\n"
    "                         vsock paths a snapshot names must lie under one\n"
    "\n"
    "Refused, with the reason: --seccomp-filter, --metadata, --mmds-size-limit, --enable-pci,\n"
    "--module, --snapshot-version, --describe-snapshot.\n"
    "Exit code: the VMM's once it ran (0 guest reset or SIGTERM); 1 error, 2 bad input.\n";

[[noreturn]] void Fail(int code, const std::string& message) {
  std::fprintf(stderr, "ember-fc-api: error: %s\n", message.c_str());
  std::exit(code);
}

struct Flags {
  std::string api_sock;
  std::string config_file;
  std::size_t max_payload = kDefaultMaxPayload;
  ApiOptions api;
  std::string log_path;
  // The front's own filter: enforce unless --no-seccomp or --seccomp off/log (which ember-vmm
  // gets too, for its own).
  std::optional<jailer::SeccompMode> seccomp = jailer::SeccompMode::kEnforce;
};

std::uint64_t NumberOrFail(std::string_view flag, const std::string& text) {
  std::uint64_t number = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
  if (ec != std::errc() || end != text.data() + text.size()) {
    Fail(vmm::kExitBadInput, std::string(flag) + ": \"" + text + "\" is not a whole number");
  }
  return number;
}

Flags ParseFlags(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Fail(vmm::kExitBadInput, std::string(arg) + " needs a value");
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(vmm::kExitOk);
    }
    if (auto refused = RefusedFlagReason(arg); !refused.empty()) {
      Fail(vmm::kExitBadInput, std::string(arg) + ": " + refused);
    }
    if (arg == "--api-sock") {
      flags.api_sock = value();
    } else if (arg == "--config-file") {
      flags.config_file = value();
    } else if (arg == "--id") {
      flags.api.id = value();
      if (auto error = CheckInstanceId(flags.api.id); !error.empty()) {
        Fail(vmm::kExitBadInput, "--id: " + error);
      }
    } else if (arg == "--level") {
      std::string level = value();
      base::LogLevel parsed;
      if (auto status = base::ParseLogLevel(level, &parsed); !status.ok()) {
        Fail(vmm::kExitBadInput, "--level: " + std::string(status.message()));
      }
      base::SetLogLevel(parsed);
      flags.api.vmm_args.insert(flags.api.vmm_args.end(), {"--log-level", level});
    } else if (arg == "--log-path") {
      flags.log_path = value();
      flags.api.vmm_args.insert(flags.api.vmm_args.end(), {"--log-path", flags.log_path});
    } else if (arg == "--metrics-path") {
      flags.api.metrics_path = value();
    } else if (arg == "--http-api-max-payload-size") {
      flags.max_payload = NumberOrFail(arg, value());
    } else if (arg == "--no-seccomp") {
      flags.seccomp = std::nullopt;
      flags.api.vmm_args.insert(flags.api.vmm_args.end(), {"--seccomp", "off"});
    } else if (arg == "--seccomp" || arg == "--serial-out" || arg == "--start-time-us") {
      std::string text = value();
      if (arg == "--start-time-us") NumberOrFail(arg, text);
      if (arg == "--seccomp" && text == "off") flags.seccomp = std::nullopt;
      if (arg == "--seccomp" && text != "off") {
        auto mode = jailer::ParseSeccompMode(text);
        if (!mode.ok()) Fail(vmm::kExitBadInput, "--seccomp: " + std::string(mode.status().message()));
        flags.seccomp = *mode;
      }
      flags.api.vmm_args.insert(flags.api.vmm_args.end(), {std::string(arg), text});
    } else if (arg == "--allow-dir") {
      flags.api.restore_args.insert(flags.api.restore_args.end(), {"--allow-dir", value()});
    } else if (arg == "--start-time-cpu-us" || arg == "--parent-cpu-time-us") {
      NumberOrFail(arg, value());  // Firecracker reports these in its metrics; Ember does not
    } else if (arg == "--boot-timer" || arg == "--show-level" || arg == "--show-log-origin") {
      // Ember's boot timer device is always there; its log lines show level and origin.
    } else {
      Fail(vmm::kExitBadInput, "unknown flag \"" + std::string(arg) + "\" (see --help)");
    }
  }
  if (flags.api_sock.empty()) flags.api_sock = kDefaultApiSock;
  return flags;
}

// The API socket appears at `path` only once it listens: clients (Firecracker's SDKs, scripts)
// connect as soon as the file exists. It is bound under a temporary name beside `path` and
// renamed into place; an existing `path` is refused, as Firecracker refuses it.
base::UniqueFd Listen(const std::string& path) {
  std::string temporary = path + ".ember-" + std::to_string(::getpid());
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (temporary.size() >= sizeof address.sun_path) {
    Fail(vmm::kExitBadInput, "--api-sock: \"" + path + "\" is too long for a socket path");
  }
  struct stat existing {};
  if (::lstat(path.c_str(), &existing) == 0) {
    Fail(vmm::kExitError, "the API socket \"" + path + "\" already exists (remove it first)");
  }
  std::memcpy(address.sun_path, temporary.c_str(), temporary.size() + 1);
  base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) Fail(vmm::kExitError, "socket: " + std::string(std::strerror(errno)));
  if (::bind(fd.Get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    Fail(vmm::kExitError, "cannot bind the API socket \"" + temporary + "\": " +
                              std::strerror(errno));
  }
  if (::listen(fd.Get(), 16) != 0 || ::rename(temporary.c_str(), path.c_str()) != 0) {
    int error = errno;
    ::unlink(temporary.c_str());
    Fail(vmm::kExitError, "cannot serve the API socket \"" + path + "\": " + std::strerror(error));
  }
  return fd;
}

std::string Directory(const std::string& path) {
  std::size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// Bytes of a broken request read and dropped after its error answer, so that closing does not
// reset the connection (and lose the answer) while the client is still sending.
constexpr std::size_t kDrainLimit = std::size_t{1} << 20;

struct Client {
  base::UniqueFd fd;
  HttpConnection http;
  bool draining = false;  // answered an error; reading to the client's end before closing
  std::size_t drained = 0;
  Client(base::UniqueFd socket, std::size_t max_body) : fd(std::move(socket)), http(max_body) {}
};

// Reads what the client sent and answers every complete request. Returns false when the
// connection is to be closed.
bool ServeClient(Client& client, FirecrackerApi& api) {
  char chunk[16 * 1024];
  ssize_t n = ::read(client.fd.Get(), chunk, sizeof chunk);
  if (n == 0) return false;
  if (n < 0) return errno == EAGAIN || errno == EINTR;
  if (client.draining) {
    client.drained += static_cast<std::size_t>(n);
    return client.drained < kDrainLimit;
  }
  bool healthy = client.http.Feed(std::string_view(chunk, static_cast<std::size_t>(n)));
  HttpRequest request;
  while (client.http.Next(&request)) {
    HttpResponse response = api.Handle(request);
    EMBER_LOG(kInfo) << "API: " << request.method << " " << request.path << " -> "
                     << response.status;
    bool close = client.http.close_requested();
    if (!control::WriteAll(client.fd.Get(), FormatResponse(response, close), kWriteTimeoutMs)
             .ok() ||
        close) {
      return false;
    }
  }
  if (healthy && client.http.TakeContinue()) {
    constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    if (!control::WriteAll(client.fd.Get(), kContinue, kWriteTimeoutMs).ok()) return false;
  }
  if (!healthy) {
    const HttpResponse& error = client.http.error_response();
    EMBER_LOG(kWarn) << "API: bad request (" << error.status << "): " << error.body;
    if (!control::WriteAll(client.fd.Get(), FormatResponse(error, true), kWriteTimeoutMs).ok()) {
      return false;
    }
    ::shutdown(client.fd.Get(), SHUT_WR);
    client.draining = true;
  }
  return true;
}

int Main(int argc, char** argv) {
  // Stop signals come through a signalfd; a client closing early must not kill the front.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  ::sigprocmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  base::UniqueFd signal_fd(::signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC));

  Flags flags = ParseFlags(argc, argv);
  if (!flags.log_path.empty()) {
    if (auto status = base::SetLogFile(flags.log_path); !status.ok()) {
      Fail(vmm::kExitBadInput, std::string(status.message()));
    }
  }
  // Forked now, while nothing else exists in the process and before its filter.
  auto launcher = Launcher::Start(base::SiblingExecutable("ember-vmm"), "--control-fd");
  if (!launcher.ok()) Fail(vmm::kExitError, std::string(launcher.status().message()));
  flags.api.launcher = &*launcher;
  flags.api.private_parent = Directory(flags.api_sock);
  FirecrackerApi api(flags.api);

  base::UniqueFd listener = Listen(flags.api_sock);
  std::string socket_path = flags.api_sock;
  if (auto status = InstallFrontFilter(flags.seccomp); !status.ok()) {
    ::unlink(socket_path.c_str());
    Fail(vmm::kExitError, "seccomp: " + std::string(status.message()));
  }
  auto finish = [&](int code) {
    ::unlink(socket_path.c_str());
    return code;
  };
  if (!flags.config_file.empty()) {
    auto config = config_tool::LoadVmConfigJsonFile(flags.config_file);
    if (!config.ok()) {
      ::unlink(socket_path.c_str());
      Fail(vmm::kExitBadInput, std::string(config.status().message()));
    }
    if (auto status = api.BootFromConfig(std::move(*config)); !status.ok()) {
      ::unlink(socket_path.c_str());
      Fail(vmm::kExitBadInput, std::string(status.message()));
    }
  }
  EMBER_LOG(kInfo) << "API server listening on " << socket_path;

  using Clock = std::chrono::steady_clock;
  std::list<Client> clients;
  std::optional<Clock::time_point> accept_paused_until;
  bool accept_warned = false;
  while (true) {
    int timeout_ms = -1;
    if (accept_paused_until.has_value()) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(*accept_paused_until - Clock::now());
      if (left.count() <= 0) {
        accept_paused_until.reset();
      } else {
        timeout_ms = static_cast<int>(left.count());
      }
    }
    // A negative fd is skipped by poll: the listener waits while at the cap or paused.
    const bool accepting = clients.size() < kMaxClients && !accept_paused_until.has_value();
    std::vector<pollfd> fds = {{accepting ? listener.Get() : -1, POLLIN, 0},
                               {signal_fd.Get(), POLLIN, 0}};
    VmmProcess* vmm = api.vmm();
    fds.push_back({vmm != nullptr ? vmm->fd() : -1, POLLIN, 0});
    for (Client& client : clients) fds.push_back({client.fd.Get(), POLLIN, 0});
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0) {
      if (errno == EINTR) continue;
      EMBER_LOG(kError) << "poll: " << std::strerror(errno);
      return finish(vmm::kExitError);
    }
    if (fds[1].revents != 0) {
      signalfd_siginfo info{};
      (void)::read(signal_fd.Get(), &info, sizeof info);
      EMBER_LOG(kInfo) << "signal " << info.ssi_signo << ": stopping";
      int code = vmm != nullptr ? vmm->Terminate(SIGTERM) : vmm::kExitOk;
      return finish(code);
    }
    if (vmm != nullptr && fds[2].revents != 0) {
      if (auto code = vmm->Drain(); code.has_value()) {
        EMBER_LOG(kInfo) << "the VMM ended with exit code " << *code;
        return finish(*code);
      }
    }
    std::size_t index = 3;
    for (auto it = clients.begin(); it != clients.end(); ++index) {
      if (fds[index].revents != 0 && !ServeClient(*it, api)) {
        it = clients.erase(it);
        accept_paused_until.reset();  // its fd is free again
      } else {
        ++it;
      }
    }
    if (fds[0].revents != 0) {
      base::UniqueFd conn(::accept4(listener.Get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (conn) {
        clients.emplace_back(std::move(conn), flags.max_payload);
        accept_warned = false;
      } else if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        if (!accept_warned) {  // once per shortage, not every pause
          EMBER_LOG(kWarn) << "accept4: " << std::strerror(errno) << "; new clients wait";
          accept_warned = true;
        }
        accept_paused_until = Clock::now() + std::chrono::milliseconds(kAcceptPauseMs);
      }
    }
  }
}

}  // namespace
}  // namespace ember::fcapi

int main(int argc, char** argv) { return ember::fcapi::Main(argc, argv); }
