#include "tests/integration/hostile_vmm.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "rootfs/testguest/blk_pattern.h"
#include "rootfs/testguest/vsock_ports.h"
#include "tests/support/files.h"

namespace ember::testing {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

sockaddr_un Address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), std::min(path.size(), sizeof(addr.sun_path) - 1));
  return addr;
}

milliseconds Left(Clock::time_point deadline) {
  return std::max(milliseconds(0),
                  std::chrono::duration_cast<milliseconds>(deadline - Clock::now()));
}

}  // namespace

ControlledVmm::ControlledVmm(const std::string& dir, const std::string& config_json,
                             const std::vector<std::string>& extra_args,
                             const std::vector<std::string>& wrapper)
    : console_path_(dir + "/console.log"), log_path_(dir + "/vmm.log") {
  const std::string config = dir + "/vm.json";
  std::ofstream(config) << config_json;
  const std::string socket_path = dir + "/control.sock";
  base::UniqueFd listener = ListenUnix(socket_path, 4, /*inheritable=*/true);
  if (!listener) {
    error_ = "control socket " + socket_path + ": " + std::strerror(errno);
    return;
  }
  std::vector<std::string> argv = {BinPath("ember-vmm"),
                                   "--config",
                                   config,
                                   "--control-fd",
                                   std::to_string(listener.Get()),
                                   "--serial-out",
                                   console_path_,
                                   "--log-path",
                                   log_path_};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  argv.insert(argv.begin(), wrapper.begin(), wrapper.end());
  process_ = std::make_unique<Process>(argv);
  listener = base::UniqueFd();

  conn_ = base::UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr = Address(socket_path);
  // sockaddr_un is what connect() takes through its generic pointer.
  if (::connect(conn_.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    error_ = std::string("connect to the control socket: ") + std::strerror(errno);
    return;
  }
  v1::VmmMessage hello;
  if (!Receive(&hello, milliseconds(30'000)) || hello.event().kind() != v1::ControlEvent::HELLO) {
    const ProcessResult ended = process_->Wait(milliseconds(1000));
    error_ = "no HELLO from ember-vmm: " + ended.err + ReadFile(log_path_);
    return;
  }
  v1::ControlRequest start;
  start.mutable_start();
  v1::ControlResponse started = Call(start, milliseconds(30'000));
  if (started.code() != 0) error_ = "Start: " + started.message() + " " + ReadFile(log_path_);
}

ControlledVmm::~ControlledVmm() = default;  // Process kills a child still running

bool ControlledVmm::Receive(v1::VmmMessage* message, milliseconds timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  for (;;) {
    std::string payload;
    absl::StatusOr<bool> next = reader_.Next(&payload);
    if (!next.ok()) return false;
    if (*next) return message->ParseFromString(payload);
    pollfd p{conn_.Get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(Left(deadline).count())) != 1) return false;
    char buf[4096];
    const ssize_t n = ::read(conn_.Get(), buf, sizeof(buf));
    if (n <= 0) return false;
    reader_.Feed(std::string_view(buf, static_cast<std::size_t>(n)));
  }
}

v1::ControlResponse ControlledVmm::Call(v1::ControlRequest request, milliseconds timeout,
                                        milliseconds* took) {
  request.set_id(next_id_++);
  std::string frame;
  v1::ControlResponse none;
  none.set_code(-1);
  if (!control::AppendFrame(request, &frame).ok() ||
      !control::WriteAll(conn_.Get(), frame, 10'000).ok()) {
    none.set_message("the request could not be sent");
    return none;
  }
  const Clock::time_point sent = Clock::now();
  const Clock::time_point deadline = sent + timeout;
  v1::VmmMessage message;
  while (Receive(&message, Left(deadline))) {
    if (message.has_response() && message.response().id() == request.id()) {
      if (took) *took = std::chrono::duration_cast<milliseconds>(Clock::now() - sent);
      return message.response();
    }
  }
  if (took) *took = std::chrono::duration_cast<milliseconds>(Clock::now() - sent);
  none.set_message("no response");
  return none;
}

bool ControlledVmm::WaitForConsole(const std::string& text, milliseconds timeout) const {
  const Clock::time_point deadline = Clock::now() + timeout;
  while (Console().find(text) == std::string::npos) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return true;
}

std::string ControlledVmm::Console() const { return ReadFile(console_path_); }

IdleVm RunUntilIdle(const std::string& dir, const std::string& config_json) {
  ControlledVmm vmm(dir, config_json);
  EXPECT_TRUE(vmm.ok()) << vmm.error();
  if (!vmm.ok()) return {};
  EXPECT_TRUE(vmm.WaitForConsole("\nidle\n", milliseconds(120'000))) << vmm.Console();
  return {AnonRssKib(vmm.pid()), vmm.Console()};
}

::testing::AssertionResult OwnMemoryWithinMargin(const IdleVm& hostile, const IdleVm& control,
                                                 std::uint64_t margin_kib) {
  if (hostile.own_kib <= control.own_kib + margin_kib) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "the VMM holds " << hostile.own_kib << " KiB of its own memory after the hostile "
         << "guest, " << control.own_kib << " KiB after the control run (margin " << margin_kib
         << " KiB)\n"
         << hostile.console;
}

base::UniqueFd ListenUnix(const std::string& path, int backlog, bool inheritable) {
  base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | (inheritable ? 0 : SOCK_CLOEXEC), 0));
  sockaddr_un addr = Address(path);
  // sockaddr_un is what bind() takes through its generic pointer.
  if (!fd || ::bind(fd.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(fd.Get(), backlog) != 0) {
    return base::UniqueFd();
  }
  return fd;
}

std::uint64_t AnonRssKib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("RssAnon:", 0) == 0) return std::stoull(line.substr(8));
  }
  return 0;
}

std::chrono::milliseconds ThreadCpuTime(pid_t pid, pid_t tid) {
  const std::string stat =
      ReadFile("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/stat");
  // Fields after the command name, which is in parentheses and may hold spaces: state is
  // field 3, utime and stime fields 14 and 15 (proc(5)).
  const std::size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return milliseconds(0);
  std::istringstream fields(stat.substr(paren + 2));
  std::string field;
  std::uint64_t ticks = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i >= 14) ticks += std::stoull(field);
  }
  return milliseconds(ticks * 1000 / static_cast<std::uint64_t>(::sysconf(_SC_CLK_TCK)));
}

std::uint64_t FileSize(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
}

std::uint64_t GuestCount(const std::string& console, const std::string& prefix) {
  const std::size_t at = console.find(prefix);
  if (at == std::string::npos) return 0;
  std::uint64_t n = 0;
  for (std::size_t i = at + prefix.size();
       i < console.size() && console[i] >= '0' && console[i] <= '9'; ++i) {
    n = n * 10 + static_cast<std::uint64_t>(console[i] - '0');
  }
  return n;
}

std::string DriveMember(const std::string& dir, const std::string& image) {
  const std::string path = dir + "/disk.img";
  std::ofstream(path, std::ios::binary) << image;
  return R"("drives": [{"drive_id": ")" BLK_DRIVE_ID R"(", "path_on_host": ")" + path +
         R"(", "is_root_device": false, "is_read_only": false, "io_engine": "Async"}])";
}

std::string VsockMember(const std::string& uds) {
  return R"("vsock": {"vsock_id": "vsock0", "guest_cid": )" + std::to_string(VSOCK_GUEST_CID) +
         R"(, "uds_path": ")" + uds + R"("})";
}

std::string BlkPatternImage() {
  std::string image;
  for (std::uint32_t s = 0; s < BLK_DISK_SECTORS; ++s) {
    for (std::uint32_t i = 0; i < BLK_SECTOR_SIZE; ++i) {
      image.push_back(static_cast<char>(blk_initial(s, i)));
    }
  }
  return image;
}

ProcessResult Ip(std::vector<std::string> args) {
  for (const char* path : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (::access(path, X_OK) == 0) {
      args.insert(args.begin(), path);
      return RunProcess(args, milliseconds(10'000));
    }
  }
  ProcessResult missing;
  missing.err = "no ip(8)";
  return missing;
}

std::string GuestConfig(const std::string& scenarios, const std::string& devices) {
  return R"({"boot-source": {"boot_args": "console=ttyS0 ember.test=)" + scenarios + R"("})" +
         (devices.empty() ? "" : ", " + devices) + "}";
}

}  // namespace ember::testing
