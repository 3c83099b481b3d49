#include "vmm/runtime/jail.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <string>

#include "tests/support/files.h"
#include "vmm/agent_client/socket_file.h"
#include "vmm/base/unique_fd.h"

namespace ember::runtime {
namespace {

namespace fs = std::filesystem;

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  ASSERT_TRUE(out.flush()) << path;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::string text;
  std::getline(in, text);
  return text;
}

// A process in a jail's pids cgroup that SIGKILL does not end: it is also in a frozen cgroup-v1
// freezer group, where a pending SIGKILL waits until the group is thawed (as a VMM stuck in the
// kernel would). Root only; cleans up after itself.
class FrozenJailProcess {
 public:
  FrozenJailProcess()
      : pids_("/sys/fs/cgroup/pids/ember-jail-test-" + std::to_string(::getpid())),
        freezer_("/sys/fs/cgroup/freezer/ember-jail-test-" + std::to_string(::getpid())) {}
  ~FrozenJailProcess() {
    Thaw();
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::rmdir(freezer_.c_str());
    ::rmdir(pids_.c_str());
  }

  // False when this host has no cgroup-v1 pids and freezer hierarchies to do it with.
  bool Start() {
    if (::geteuid() != 0 || !fs::exists("/sys/fs/cgroup/pids/cgroup.procs") ||
        !fs::exists("/sys/fs/cgroup/freezer/cgroup.procs")) {
      return false;
    }
    fs::create_directory(pids_);
    fs::create_directory(freezer_);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::execl("/bin/sleep", "sleep", "1000", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    WriteFile(pids_ + "/cgroup.procs", std::to_string(pid_));
    WriteFile(freezer_ + "/cgroup.procs", std::to_string(pid_));
    WriteFile(freezer_ + "/freezer.state", "FROZEN");
    while (ReadFile(freezer_ + "/freezer.state") != "FROZEN") ::usleep(1000);
    return true;
  }

  // Lets the SIGKILL the jail's destruction sent take effect, and reaps the process.
  int ThawAndReap() {
    Thaw();
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

  const std::string& cgroup() const { return pids_; }
  pid_t pid() const { return pid_; }

 private:
  void Thaw() {
    if (fs::exists(freezer_)) WriteFile(freezer_ + "/freezer.state", "THAWED");
  }

  std::string pids_;
  std::string freezer_;
  pid_t pid_ = -1;
};

TEST(DestroyJail, KeepsTheUidLeaseAndDirectoryWhileAJailProcessOutlivesSigkill) {
  FrozenJailProcess vmm;
  if (!vmm.Start()) GTEST_SKIP() << "needs root and cgroup-v1 pids and freezer hierarchies";
  testing::ScopedTempDir temp("ember-jail");
  const std::string dir = temp.path() + "/ember-vmm/c1";
  const std::string lease = temp.path() + "/uids/100000";
  fs::create_directories(dir + "/root/out");
  fs::create_directories(temp.path() + "/uids");
  WriteFile(lease, dir);

  absl::Status status = DestroyJail(dir, lease, {vmm.cgroup()});

  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_NE(status.message().find("pids " + std::to_string(vmm.pid())), std::string::npos)
      << status;
  EXPECT_TRUE(fs::exists(dir + "/root/out"));
  EXPECT_TRUE(fs::exists(lease));
  EXPECT_TRUE(fs::exists(vmm.cgroup()));

  const int ended = vmm.ThawAndReap();
  EXPECT_TRUE(WIFSIGNALED(ended) && WTERMSIG(ended) == SIGKILL);
  EXPECT_TRUE(DestroyJail(dir, lease, {vmm.cgroup()}).ok());
  EXPECT_FALSE(fs::exists(dir));
  EXPECT_FALSE(fs::exists(lease));
  EXPECT_FALSE(fs::exists(vmm.cgroup()));
}

TEST(JailIdFor, NoContainerIdNamesAnotherContainersDigestedJailId) {
  const std::string digested = JailIdFor("ns/pod_1");

  EXPECT_EQ(JailIdFor("plain-id-1"), "plain-id-1");
  EXPECT_NE(digested, "ns/pod_1");
  EXPECT_NE(JailIdFor(digested), digested);
  EXPECT_LE(digested.size(), 64u);
  for (char c : digested) EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '-');
}

JailerSettings SettingsIn(const std::string& dir) {
  JailerSettings settings;
  settings.chroot_base_dir = dir + "/jails";
  settings.uid_base = 100000;
  settings.uid_count = 16;
  return settings;
}

TEST(PlanJail, TheJailLiesUnderTheVmmBinarysNameAsEmberJailerPutsIt) {
  if (::geteuid() != 0) GTEST_SKIP() << "plans cgroups: needs root";
  testing::ScopedTempDir temp("ember-jail");
  const std::string holder = temp.path() + "/c1";
  fs::create_directories(holder);

  absl::StatusOr<Jail> jail = PlanJail(SettingsIn(temp.path()), "c1", "/opt/ember/my-vmm", holder, 64);

  ASSERT_TRUE(jail.ok()) << jail.status();
  EXPECT_EQ(jail->dir, temp.path() + "/jails/my-vmm/c1");
  EXPECT_EQ(jail->root, jail->dir + "/root");
  EXPECT_TRUE(fs::is_directory(jail->dir));
}

TEST(PlanJail, RefusesAJailDirectoryThatExistsAndLeasesNoUidForIt) {
  if (::geteuid() != 0) GTEST_SKIP() << "plans cgroups: needs root";
  testing::ScopedTempDir temp("ember-jail");
  const JailerSettings settings = SettingsIn(temp.path());
  fs::create_directories(temp.path() + "/a");
  fs::create_directories(temp.path() + "/b");
  absl::StatusOr<Jail> first = PlanJail(settings, "c1", "/bin/ember-vmm", temp.path() + "/a", 64);
  ASSERT_TRUE(first.ok()) << first.status();
  fs::create_directories(first->root + "/out");

  absl::StatusOr<Jail> second = PlanJail(settings, "c1", "/bin/ember-vmm", temp.path() + "/b", 64);

  EXPECT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists) << second.status();
  EXPECT_TRUE(fs::is_directory(first->root + "/out"));
  int leases = 0;
  for (const auto& entry : fs::directory_iterator(settings.chroot_base_dir + "/uids")) {
    if (entry.path().filename().string()[0] != '.') ++leases;
  }
  EXPECT_EQ(leases, 1);
}

// A listening Unix socket at `path`, owned by `uid`.
base::UniqueFd ListenAt(const std::string& path, uid_t uid) {
  base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  path.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
  // sockaddr_un is what bind takes for AF_UNIX.
  EXPECT_EQ(::bind(fd.Get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0) << path;
  EXPECT_EQ(::listen(fd.Get(), 1), 0);
  EXPECT_EQ(::chown(path.c_str(), uid, uid), 0);
  return fd;
}

constexpr uid_t kJailUid = 100007;

TEST(OpenJailVsock, OpensTheVmmsOwnSocket) {
  if (::geteuid() != 0) GTEST_SKIP() << "chowns to the jail's uid: needs root";
  testing::ScopedTempDir temp("ember-jail");
  fs::create_directories(temp.path() + "/root/out");
  base::UniqueFd vmm = ListenAt(temp.path() + "/root/out/v.sock", kJailUid);

  absl::StatusOr<base::UniqueFd> socket = OpenJailVsock(temp.path() + "/root", kJailUid);

  ASSERT_TRUE(socket.ok()) << socket.status();
  struct stat st {};
  ASSERT_EQ(::stat(agent_client::SocketFdPath(*socket).c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
}

TEST(OpenJailVsock, RefusesASymlinkThereToAnotherListeningSocket) {
  if (::geteuid() != 0) GTEST_SKIP() << "chowns to the jail's uid: needs root";
  testing::ScopedTempDir temp("ember-jail");
  fs::create_directories(temp.path() + "/root/out");
  base::UniqueFd other = ListenAt(temp.path() + "/other.sock", kJailUid);
  fs::create_symlink(temp.path() + "/other.sock", temp.path() + "/root/out/v.sock");

  absl::StatusOr<base::UniqueFd> socket = OpenJailVsock(temp.path() + "/root", kJailUid);

  EXPECT_EQ(socket.status().code(), absl::StatusCode::kFailedPrecondition) << socket.status();
}

TEST(OpenJailVsock, RefusesASocketThatIsNotTheJailUids) {
  if (::geteuid() != 0) GTEST_SKIP() << "chowns to the jail's uid: needs root";
  testing::ScopedTempDir temp("ember-jail");
  fs::create_directories(temp.path() + "/root/out");
  base::UniqueFd planted = ListenAt(temp.path() + "/root/out/v.sock", 0);

  absl::StatusOr<base::UniqueFd> socket = OpenJailVsock(temp.path() + "/root", kJailUid);

  EXPECT_EQ(socket.status().code(), absl::StatusCode::kFailedPrecondition) << socket.status();
}

}  // namespace
}  // namespace ember::runtime
