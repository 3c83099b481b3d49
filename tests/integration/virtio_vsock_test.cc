// The test guest's vsock driver against ember-vmm's vsock device on real KVM, through the
// Unix-socket backend exactly as a Firecracker user drives it: the host connects to uds_path
// and says "CONNECT <port>\n"; the guest's connections to host port P reach <uds_path>_P.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "rootfs/testguest/vsock_ports.h"
#include "tests/support/files.h"
#include "tests/support/kvm_available.h"
#include "tests/support/process.h"
#include "vmm/base/unique_fd.h"

namespace ember::testing {
namespace {

using std::chrono::seconds;

// A short scratch directory (socket paths must fit sockaddr_un), removed at scope exit.
struct ScratchDir {
  std::string path;
  ScratchDir() {
    char dir[] = "/tmp/ember-vsock-XXXXXX";
    EXPECT_NE(::mkdtemp(dir), nullptr) << std::strerror(errno);
    path = dir;
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir() { std::filesystem::remove_all(path); }
  operator const std::string&() const { return path; }
};

using ::ember::testing::ReadFile;

sockaddr_un Address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), std::min(path.size(), sizeof(addr.sun_path) - 1));
  return addr;
}

int Listen(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr = Address(path);
  // sockaddr_un is what bind() takes through its generic pointer.
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << std::strerror(errno);
  EXPECT_EQ(::listen(fd, 4), 0);
  return fd;
}

bool Readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1;
}

// Reads until `until` appears (or EOF when empty), for at most `timeout_ms` per read.
std::string ReadUntil(int fd, const std::string& until, int timeout_ms = 60'000) {
  std::string got;
  while (until.empty() || got.find(until) == std::string::npos) {
    if (!Readable(fd, timeout_ms)) break;
    char buf[512];
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  return got;
}

// Connects to the device's host-side socket once the VMM has bound it.
int ConnectHost(const std::string& uds_path) {
  sockaddr_un addr = Address(uds_path);
  for (int i = 0; i < 400; ++i) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) return fd;
    ::close(fd);
    usleep(50'000);
  }
  return -1;
}

std::string VsockConfig(const std::string& scenario, const std::string& uds_path,
                        int guest_cid = VSOCK_GUEST_CID) {
  return WriteTempFile("vm.json",
                       R"({"boot-source": {"boot_args": "console=ttyS0 ember.test=)" + scenario +
                           R"("}, "vsock": {"vsock_id": "vsock0", "guest_cid": )" +
                           std::to_string(guest_cid) + R"(, "uds_path": ")" + uds_path + R"("}})");
}

class VsockGuest : public ::testing::Test {
 protected:
  void SetUp() override { EMBER_REQUIRE_KVM(); }
};

TEST_F(VsockGuest, GuestEchoesAHostConnectionAndReachesAHostListener) {
  const ScratchDir scratch;
  const std::string& dir = scratch.path;
  const std::string uds = dir + "/v.sock";
  base::UniqueFd host_listener(Listen(uds + "_" + std::to_string(VSOCK_HOST_PORT)));
  Process vmm({BinPath("ember-vmm"), "--config", VsockConfig("vsock", uds)});

  // Guest to host: the guest's connection to port VSOCK_HOST_PORT reaches our listener.
  ASSERT_TRUE(Readable(host_listener.Get(), 60'000)) << "the guest never connected";
  base::UniqueFd from_guest(::accept4(host_listener.Get(), nullptr, nullptr, SOCK_CLOEXEC));
  EXPECT_EQ(ReadUntil(from_guest.Get(), ""), VSOCK_MARKER);

  // Host to guest: CONNECT, OK, then an echo of everything we send.
  base::UniqueFd to_guest(ConnectHost(uds));
  ASSERT_GE(to_guest.Get(), 0) << "cannot connect to " << uds;
  const std::string connect = "CONNECT " + std::to_string(VSOCK_ECHO_PORT) + "\n";
  ASSERT_EQ(::write(to_guest.Get(), connect.data(), connect.size()),
            static_cast<ssize_t>(connect.size()));
  const std::string ok = ReadUntil(to_guest.Get(), "\n");
  EXPECT_EQ(ok.rfind("OK ", 0), 0u) << ok;
  std::string sent;
  for (int i = 0; i < 3; ++i) {
    const std::string line = "echo line " + std::to_string(i) + "\n";
    ASSERT_EQ(::write(to_guest.Get(), line.data(), line.size()), static_cast<ssize_t>(line.size()));
    sent += line;
    EXPECT_EQ(ReadUntil(to_guest.Get(), line), line);
  }
  ::shutdown(to_guest.Get(), SHUT_WR);  // the guest resets the connection and ends

  ProcessResult result = vmm.Wait(seconds(60));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("vsock: echoed " + std::to_string(sent.size()) + " bytes\nPASS vsock\n"),
            std::string::npos)
      << result.out << result.err;
  // The device removes its socket when the VMM ends.
  struct stat st {};
  EXPECT_NE(::lstat(uds.c_str(), &st), 0) << uds << " was left behind";
}

TEST_F(VsockGuest, ConnectionToAPortNobodyListensOnIsRefused) {
  const ScratchDir scratch;
  const std::string& dir = scratch.path;
  Process vmm({BinPath("ember-vmm"), "--config", VsockConfig("vsock", dir + "/v.sock")});

  ProcessResult result = vmm.Wait(seconds(60));

  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("FAIL vsock the host refused the guest's connection\n"),
            std::string::npos)
      << result.out;
}

// Config errors: one line on stderr naming the field, exit code 2, nothing left behind.
ProcessResult RunConfig(const std::string& config_path) {
  return RunProcess({BinPath("ember-vmm"), "--config", config_path}, seconds(30));
}

TEST(VsockConfigErrors, ReservedCidIsRefused) {
  const std::string config = VsockConfig("hello", ScratchDir().path + "/v.sock", 2);
  ProcessResult result = RunConfig(config);
  EXPECT_EQ(result.exit_code, 2);
  // ember-config applies the host-free rules and names the file it read.
  EXPECT_EQ(result.err, "ember-vmm: error: config file \"" + config +
                            "\": vsock.guest_cid: 2 is outside [3, 4294967294]\n");
}

TEST(VsockConfigErrors, ExistingSocketPathIsRefused) {
  const ScratchDir scratch;
  const std::string path = scratch.path + "/taken";
  std::ofstream(path) << "someone else's";
  ProcessResult result = RunConfig(VsockConfig("hello", path));
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_EQ(result.err.rfind("ember-vmm: error: vsock.uds_path: ", 0), 0u) << result.err;
  EXPECT_NE(result.err.find("already exists"), std::string::npos) << result.err;
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
  EXPECT_EQ(ReadFile(path), "someone else's");
}

TEST(VsockConfigErrors, SocketInMissingDirectoryIsRefused) {
  ProcessResult result = RunConfig(VsockConfig("hello", "/nonexistent-dir/v.sock"));
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_EQ(result.err.rfind("ember-vmm: error: vsock.uds_path: ", 0), 0u) << result.err;
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
}

// A restored guest finds its vsock connections reset: the device sends
// VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, as Firecracker does, since host sockets cannot be saved.
TEST_F(VsockGuest, RestoredGuestSeesTransportReset) {
  const ScratchDir scratch;
  const std::string& dir = scratch.path;
  const std::string uds = dir + "/v.sock";
  const std::string log = dir + "/vmm.log";
  base::UniqueFd host_listener(Listen(uds + "_" + std::to_string(VSOCK_HOST_PORT)));
  Process vmm({BinPath("ember-vmm"), "--config", VsockConfig("vsock-reset", uds),
               "--snapshot-path", dir + "/vm.state", "--snapshot-mem-path", dir + "/vm.mem",
               "--log-path", log});
  ASSERT_TRUE(Readable(host_listener.Get(), 60'000)) << "the guest never connected";
  base::UniqueFd from_guest(::accept4(host_listener.Get(), nullptr, nullptr, SOCK_CLOEXEC));
  EXPECT_EQ(ReadUntil(from_guest.Get(), VSOCK_MARKER), VSOCK_MARKER);
  ASSERT_TRUE(vmm.WaitForOutput("vsock: connected\n", seconds(30)));

  vmm.Signal(SIGUSR1);
  for (int i = 0; i < 200 && ReadFile(log).find("snapshot written") == std::string::npos; ++i) {
    usleep(50'000);
  }
  vmm.Signal(SIGKILL);
  vmm.Wait(seconds(10));
  ASSERT_NE(ReadFile(log).find("snapshot written"), std::string::npos) << ReadFile(log);

  // A killed VMM leaves its socket file; a clone gets its own path anyway.
  ProcessResult restored = RunProcess(
      {BinPath("ember-vmm"), "--restore-from", dir + "/vm.state", "--restore-mem",
       dir + "/vm.mem", "--vsock-override", dir + "/clone.sock"},
      seconds(60));
  EXPECT_EQ(restored.exit_code, 0) << restored.err;
  EXPECT_EQ(restored.out.find("Ember test guest"), std::string::npos) << "the guest rebooted";
  EXPECT_NE(restored.out.find("vsock: transport reset\nPASS vsock-reset\n"), std::string::npos)
      << restored.out << restored.err;
}

}  // namespace
}  // namespace ember::testing
