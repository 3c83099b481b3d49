// ember-init as PID 1 of a new pid, mount, network and UTS namespace, chrooted into a root
// holding /sbin/ember-init and a fake /sbin/ember-agent (a directory, or an image built by
// ember-rootfs and loop-mounted): what it does in a guest, minus the kernel. Needs root
// (namespaces, devtmpfs, loop devices, a veth moved into the netns).
#include <elf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/files.h"
#include "tests/support/process.h"

namespace ember::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
namespace fs = std::filesystem;

constexpr char kAgentLog[] = "/agent.log";

// True when `path` is an ELF without an interpreter (sanitizer builds link dynamically).
bool IsStatic(const std::string& path) {
  std::string bytes = ReadFile(path);
  if (bytes.size() < sizeof(Elf64_Ehdr)) return false;
  Elf64_Ehdr header;
  std::memcpy(&header, bytes.data(), sizeof(header));
  for (int i = 0; i < header.e_phnum; ++i) {
    Elf64_Phdr phdr;
    std::size_t at = header.e_phoff + static_cast<std::size_t>(i) * header.e_phentsize;
    if (at + sizeof(phdr) > bytes.size()) return false;
    std::memcpy(&phdr, bytes.data() + at, sizeof(phdr));
    if (phdr.p_type == PT_INTERP) return false;
  }
  return true;
}

std::string Run(const std::vector<std::string>& argv) {
  ProcessResult result = RunProcess(argv, seconds(20));
  return result.out + result.err;
}

struct ChildArgs {
  std::string root;
  std::string cmdline;
  int sync_fd;     // read end: the parent writes a byte once the root and veth are in place
  int console_fd;  // write end: init's stdout and stderr
};

int ChildMain(void* raw) {
  auto* args = static_cast<ChildArgs*>(raw);
  // Mounts made inside (the image, init's) must not propagate back to the host's namespace.
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) _exit(121);
  char byte;
  if (read(args->sync_fd, &byte, 1) != 1) _exit(120);
  if (chroot(args->root.c_str()) != 0 || chdir("/") != 0) _exit(122);
  dup2(args->console_fd, STDOUT_FILENO);
  dup2(args->console_fd, STDERR_FILENO);
  std::string flag = "--cmdline=" + args->cmdline;
  char* argv[] = {const_cast<char*>("/sbin/ember-init"), flag.data(), nullptr};
  char* envp[] = {nullptr};
  execve(argv[0], argv, envp);
  _exit(123);
}

// What init's root is: a directory holding /sbin/ember-init and the fake agent (or no agent),
// or an ext4 image ember-rootfs built with both, loop-mounted in init's mount namespace.
enum class Root { kDirectory, kDirectoryWithoutAgent, kEmberRootfsImage };

// One ember-init in its namespaces. The destructor kills it (and with it the namespace).
class InitSandbox {
 public:
  explicit InitSandbox(Root kind = Root::kDirectory) : dir_("ember-init") {
    root_ = dir_.path() + "/root";
    fs::create_directories(root_);
    if (kind == Root::kEmberRootfsImage) {
      image_ = dir_.path() + "/root.ext4";
      fs::create_directories(dir_.path() + "/tree/etc");
      build_ = RunProcess({BinPath("ember-rootfs"), "--init", BinPath("ember-init"), "--agent",
                           FAKE_AGENT_PATH, dir_.path() + "/tree", image_});
      return;
    }
    fs::create_directories(root_ + "/sbin");
    fs::copy_file(BinPath("ember-init"), root_ + "/sbin/ember-init");
    if (kind == Root::kDirectory) fs::copy_file(FAKE_AGENT_PATH, root_ + "/sbin/ember-agent");
  }

  // ember-rootfs's run, for a kEmberRootfsImage root.
  [[nodiscard]] const ProcessResult& image_build() const { return build_; }

  ~InitSandbox() {
    if (pid_ > 0 && !ended_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (console_fd_ >= 0) close(console_fd_);
  }

  // Starts init with `cmdline`; with `veth`, a veth's end is eth0 in init's netns.
  void Start(const std::string& cmdline, bool veth = false) {
    int sync[2], console[2];
    ASSERT_EQ(pipe2(sync, O_CLOEXEC), 0);
    ASSERT_EQ(pipe2(console, O_CLOEXEC), 0);
    ChildArgs args{root_, cmdline, sync[0], console[1]};
    stack_.resize(256 * 1024);
    pid_ = clone(ChildMain, stack_.data() + stack_.size(),
                 CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS | SIGCHLD, &args);
    close(sync[0]);
    close(console[1]);
    console_fd_ = console[0];
    ASSERT_GT(pid_, 0) << "clone: " << std::strerror(errno);
    if (!image_.empty()) {
      ProcessResult mounted = RunProcess({"/usr/bin/nsenter", "-t", std::to_string(pid_), "-m",
                                          "/usr/bin/mount", "-o", "loop", image_, root_});
      ASSERT_EQ(mounted.exit_code, 0) << mounted.out << mounted.err;
    }
    if (veth) {
      std::string host = "ei" + std::to_string(pid_) + "h";
      std::string guest = "ei" + std::to_string(pid_) + "g";
      std::string ns = std::to_string(pid_);
      ASSERT_EQ(
          RunProcess({"/usr/sbin/ip", "link", "add", host, "type", "veth", "peer", "name", guest})
              .exit_code,
          0);
      ASSERT_EQ(RunProcess({"/usr/sbin/ip", "link", "set", host, "up"}).exit_code, 0);
      ASSERT_EQ(RunProcess({"/usr/sbin/ip", "link", "set", guest, "netns", ns}).exit_code, 0);
      ASSERT_EQ(RunProcess({"/usr/bin/nsenter", "-t", ns, "-n", "/usr/sbin/ip", "link", "set",
                            guest, "name", "eth0"})
                    .exit_code,
                0);
    }
    ASSERT_EQ(write(sync[1], "x", 1), 1);
    close(sync[1]);
  }

  // Reads the console until it holds `text` or `timeout` passes.
  bool WaitForConsole(const std::string& text, milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (console_.find(text) == std::string::npos) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      PumpConsole(50);
    }
    return true;
  }

  // Waits until the agent log has `count` "started" lines.
  bool WaitForAgentStarts(std::size_t count, milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (AgentStarts() < count) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      PumpConsole(50);
    }
    return true;
  }

  [[nodiscard]] std::size_t AgentStarts() const {
    std::string log = AgentLog();
    std::size_t count = 0;
    for (std::size_t at = log.find("started "); at != std::string::npos;
         at = log.find("started ", at + 1)) {
      ++count;
    }
    return count;
  }

  // The wait status init ended with, or nullopt if it still runs after `timeout`.
  std::optional<int> WaitForEnd(milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        ended_ = true;
        PumpConsole(100);
        return status;
      }
      PumpConsole(50);
    }
    return std::nullopt;
  }

  // Host pids of init's children whose command is `comm`.
  [[nodiscard]] std::vector<pid_t> ChildrenNamed(const std::string& comm) const {
    std::vector<pid_t> found;
    std::string children =
        ReadFile("/proc/" + std::to_string(pid_) + "/task/" + std::to_string(pid_) + "/children");
    std::istringstream in(children);
    pid_t child;
    while (in >> child) {
      std::string name = ReadFile("/proc/" + std::to_string(child) + "/comm");
      if (name == comm + "\n") found.push_back(child);
    }
    return found;
  }

  // State letters of every process in init's pid namespace but init, from the host's /proc.
  [[nodiscard]] std::string StatesInNamespace() const {
    std::string states;
    std::error_code error;
    std::string ns = fs::read_symlink("/proc/" + std::to_string(pid_) + "/ns/pid", error);
    for (const auto& entry : fs::directory_iterator("/proc", error)) {
      std::string name = entry.path().filename();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      if (name == std::to_string(pid_)) continue;
      std::error_code ignored;
      if (fs::read_symlink(entry.path() / "ns/pid", ignored) != ns) continue;
      std::string status = ReadFile(entry.path() / "status");
      std::size_t at = status.find("State:\t");
      if (at != std::string::npos) states += status[at + 7];
    }
    return states;
  }

  // Runs `argv` in init's namespaces (`-n`, `-u`) through nsenter.
  [[nodiscard]] std::string InNamespace(const std::string& which,
                                        std::vector<std::string> argv) const {
    std::vector<std::string> full = {"/usr/bin/nsenter", "-t", std::to_string(pid_), which};
    full.insert(full.end(), argv.begin(), argv.end());
    return Run(full);
  }

  // Through /proc/<init>/root, which is the image where one is mounted.
  [[nodiscard]] std::string AgentLog() const { return ReadFile(InitRoot() + kAgentLog); }
  [[nodiscard]] std::string AgentMounts() const {
    return ReadFile(InitRoot() + kAgentLog + ".mounts");
  }
  [[nodiscard]] const std::string& console() const { return console_; }
  // The root directory as the host sees it.
  [[nodiscard]] const std::string& root() const { return root_; }
  [[nodiscard]] std::string InitRoot() const { return "/proc/" + std::to_string(pid_) + "/root"; }
  [[nodiscard]] pid_t pid() const { return pid_; }

 private:
  void PumpConsole(int timeout_ms) {
    pollfd fd{console_fd_, POLLIN, 0};
    if (poll(&fd, 1, timeout_ms) <= 0) return;
    char buffer[4096];
    ssize_t got = read(console_fd_, buffer, sizeof(buffer));
    if (got > 0) console_.append(buffer, static_cast<std::size_t>(got));
    if (got == 0) std::this_thread::sleep_for(milliseconds(timeout_ms));
  }

  ScopedTempDir dir_;
  std::string root_;
  std::string image_;
  ProcessResult build_;
  std::vector<char> stack_;
  pid_t pid_ = -1;
  bool ended_ = false;
  int console_fd_ = -1;
  std::string console_;
};

class EmberInit : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (namespaces, devtmpfs, veth)";
    if (!IsStatic(BinPath("ember-init"))) {
      GTEST_SKIP() << "ember-init is not static in this build (sanitizers link dynamically)";
    }
  }
};

const std::string kAgentArgs = R"( ember.agent_args="--log /agent.log")";

TEST_F(EmberInit, MountsTheGuestFileSystems) {
  InitSandbox sandbox;
  sandbox.Start("console=ttyS0" + kAgentArgs);
  ASSERT_TRUE(sandbox.WaitForAgentStarts(1, seconds(20))) << sandbox.console();
  std::string mounts = sandbox.AgentMounts();
  for (const char* expected : {"proc /proc proc rw,nosuid,nodev,noexec", "sysfs /sys sysfs ",
                               "devtmpfs /dev devtmpfs ", "devpts /dev/pts devpts ",
                               "tmpfs /dev/shm tmpfs ", "tmpfs /run tmpfs ", "tmpfs /tmp tmpfs "}) {
    EXPECT_NE(mounts.find(expected), std::string::npos) << expected << " in\n" << mounts;
  }
  // tmpfs shows no mode option at its default, 1777; the mount points' own modes show it.
  std::string modes = sandbox.InNamespace(
      "-m", {"/usr/bin/stat", "-c", "%n %a", sandbox.root() + "/tmp", sandbox.root() + "/run"});
  EXPECT_NE(modes.find("/tmp 1777\n"), std::string::npos) << modes;
  EXPECT_NE(modes.find("/run 755\n"), std::string::npos) << modes;
}

TEST_F(EmberInit, RunsFromAnEmberRootfsImageAndPowersOff) {
  InitSandbox sandbox(Root::kEmberRootfsImage);
  ASSERT_EQ(sandbox.image_build().exit_code, 0) << sandbox.image_build().err;
  sandbox.Start("ember.hostname=from-image" + kAgentArgs);
  ASSERT_TRUE(sandbox.WaitForAgentStarts(1, seconds(20))) << sandbox.console();
  EXPECT_NE(sandbox.AgentLog().find("hostname=from-image"), std::string::npos)
      << sandbox.AgentLog();
  EXPECT_NE(sandbox.AgentMounts().find("devtmpfs /dev devtmpfs "), std::string::npos)
      << sandbox.AgentMounts();
  ASSERT_EQ(kill(sandbox.pid(), SIGTERM), 0);
  std::optional<int> status = sandbox.WaitForEnd(seconds(20));
  ASSERT_TRUE(status) << sandbox.console();
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGHUP) << *status;
}

TEST_F(EmberInit, SetsHostnameAndConfiguresLoAndEth0FromIp) {
  InitSandbox sandbox;
  sandbox.Start("ip=10.201.0.2::10.201.0.1:255.255.255.0:guest-one:eth0:off" + kAgentArgs,
                /*veth=*/true);
  ASSERT_TRUE(sandbox.WaitForAgentStarts(1, seconds(20))) << sandbox.console();
  EXPECT_NE(sandbox.AgentLog().find("hostname=guest-one"), std::string::npos) << sandbox.AgentLog();
  EXPECT_EQ(sandbox.InNamespace("-u", {"/usr/bin/hostname"}), "guest-one\n");
  std::string eth0 =
      sandbox.InNamespace("-n", {"/usr/sbin/ip", "-o", "-4", "addr", "show", "eth0"});
  EXPECT_NE(eth0.find("inet 10.201.0.2/24 "), std::string::npos) << eth0;
  std::string links = sandbox.InNamespace("-n", {"/usr/sbin/ip", "-o", "link", "show"});
  EXPECT_TRUE(std::regex_search(links, std::regex(R"(lo: <LOOPBACK,UP,LOWER_UP>)"))) << links;
  EXPECT_TRUE(std::regex_search(links, std::regex(R"(eth0@\S+: <[A-Z_,]*\bUP\b)"))) << links;
  std::string lo = sandbox.InNamespace("-n", {"/usr/sbin/ip", "-o", "-4", "addr", "show", "lo"});
  EXPECT_NE(lo.find("inet 127.0.0.1/8"), std::string::npos) << lo;
  std::string routes = sandbox.InNamespace("-n", {"/usr/sbin/ip", "route", "show", "default"});
  EXPECT_NE(routes.find("default via 10.201.0.1 dev eth0"), std::string::npos) << routes;
  EXPECT_NE(sandbox.console().find("ember-init: eth0: 10.201.0.2/24"), std::string::npos)
      << sandbox.console();
}

TEST_F(EmberInit, EmberIpConfiguresTheNamedDevice) {
  InitSandbox sandbox;
  sandbox.Start("ember.ip=10.202.0.9/16,gw=10.202.0.1 ember.hostname=fn-7" + kAgentArgs,
                /*veth=*/true);
  ASSERT_TRUE(sandbox.WaitForAgentStarts(1, seconds(20))) << sandbox.console();
  std::string eth0 =
      sandbox.InNamespace("-n", {"/usr/sbin/ip", "-o", "-4", "addr", "show", "eth0"});
  EXPECT_NE(eth0.find("inet 10.202.0.9/16 "), std::string::npos) << eth0;
  EXPECT_EQ(sandbox.InNamespace("-u", {"/usr/bin/hostname"}), "fn-7\n");
}

TEST_F(EmberInit, SeedIsAddedToTheEntropyPool) {
  InitSandbox sandbox;
  sandbox.Start("ember.seed=00112233445566778899aabbccddeeff" + kAgentArgs);
  ASSERT_TRUE(sandbox.WaitForConsole("added 16 bytes of entropy from ember.seed", seconds(20)))
      << sandbox.console();
}

TEST_F(EmberInit, RestartsTheAgentAfterItIsKilled) {
  InitSandbox sandbox;
  sandbox.Start(kAgentArgs);
  ASSERT_TRUE(sandbox.WaitForAgentStarts(1, seconds(20))) << sandbox.console();
  std::vector<pid_t> agents = sandbox.ChildrenNamed("ember-agent");
  ASSERT_EQ(agents.size(), 1u) << sandbox.console();
  ASSERT_EQ(kill(agents[0], SIGKILL), 0);
  ASSERT_TRUE(sandbox.WaitForAgentStarts(2, seconds(20))) << sandbox.console();
  EXPECT_NE(sandbox.console().find("was killed by signal 9 (Killed); restarting it in 0.1 s"),
            std::string::npos)
      << sandbox.console();
  std::vector<pid_t> restarted = sandbox.ChildrenNamed("ember-agent");
  ASSERT_EQ(restarted.size(), 1u);
  EXPECT_NE(restarted[0], agents[0]);
}

TEST_F(EmberInit, ReapsOrphans) {
  InitSandbox sandbox;
  sandbox.Start(R"(ember.agent_args="--log /agent.log --orphans 4")");
  ASSERT_TRUE(sandbox.WaitForAgentStarts(1, seconds(20))) << sandbox.console();
  auto deadline = std::chrono::steady_clock::now() + seconds(20);
  while (sandbox.AgentLog().find("orphans left 4") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(50));
  }
  ASSERT_NE(sandbox.AgentLog().find("orphans left 4"), std::string::npos) << sandbox.AgentLog();
  // The orphans exit 200 ms after they are left; then only the agent remains.
  std::string states;
  while (std::chrono::steady_clock::now() < deadline) {
    states = sandbox.StatesInNamespace();
    if (states.size() == 1) break;
    std::this_thread::sleep_for(milliseconds(100));
  }
  EXPECT_EQ(states.size(), 1u) << "process states in the namespace: " << states;
  EXPECT_EQ(states.find('Z'), std::string::npos) << states;
}

TEST_F(EmberInit, PowerOffSignalsEndTheNamespaceThroughReboot) {
  for (int sig : {SIGTERM, SIGUSR2, SIGPWR}) {
    InitSandbox sandbox;
    sandbox.Start(kAgentArgs);
    ASSERT_TRUE(sandbox.WaitForAgentStarts(1, seconds(20))) << sandbox.console();
    ASSERT_EQ(kill(sandbox.pid(), sig), 0);
    std::optional<int> status = sandbox.WaitForEnd(seconds(20));
    ASSERT_TRUE(status) << strsignal(sig) << ": init still runs\n" << sandbox.console();
    // reboot(RB_AUTOBOOT) in a pid namespace ends its init with SIGHUP.
    EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGHUP)
        << strsignal(sig) << ": wait status " << *status << "\n"
        << sandbox.console();
    EXPECT_NE(sandbox.console().find("ember-init: powering off: " + std::string(strsignal(sig))),
              std::string::npos)
        << sandbox.console();
  }
}

TEST_F(EmberInit, AgentExitingWithStatusZeroPowersOff) {
  InitSandbox sandbox;
  sandbox.Start(kAgentArgs);
  ASSERT_TRUE(sandbox.WaitForAgentStarts(1, seconds(20))) << sandbox.console();
  std::vector<pid_t> agents = sandbox.ChildrenNamed("ember-agent");
  ASSERT_EQ(agents.size(), 1u);
  ASSERT_EQ(kill(agents[0], SIGUSR1), 0);  // the fake agent's cue to exit with status 0
  std::optional<int> status = sandbox.WaitForEnd(seconds(20));
  ASSERT_TRUE(status) << sandbox.console();
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGHUP) << *status;
  EXPECT_NE(sandbox.console().find("exited with status 0: powering off"), std::string::npos)
      << sandbox.console();
  // Not restarted: one start on the console (the agent's log went with init's root).
  const std::string& console = sandbox.console();
  std::size_t first = console.find("started /sbin/ember-agent (pid");
  EXPECT_NE(first, std::string::npos) << console;
  EXPECT_EQ(console.find("started /sbin/ember-agent (pid", first + 1), std::string::npos)
      << console;
}

TEST_F(EmberInit, MalformedIpIsReportedAndEverythingElseStillRuns) {
  InitSandbox sandbox;
  sandbox.Start("ip=10.0.0.300::::::off ember.hostname=still-set" + kAgentArgs, /*veth=*/true);
  ASSERT_TRUE(sandbox.WaitForAgentStarts(1, seconds(20))) << sandbox.console();
  EXPECT_NE(sandbox.console().find("ember-init: ignoring ip: client address '10.0.0.300' is not "
                                   "an IPv4 address"),
            std::string::npos)
      << sandbox.console();
  EXPECT_EQ(sandbox.InNamespace("-u", {"/usr/bin/hostname"}), "still-set\n");
  std::string eth0 =
      sandbox.InNamespace("-n", {"/usr/sbin/ip", "-o", "-4", "addr", "show", "eth0"});
  EXPECT_EQ(eth0.find("inet "), std::string::npos) << eth0;
}

TEST_F(EmberInit, MissingAgentIsRetriedNoFasterThanTheBackoff) {
  InitSandbox sandbox(Root::kDirectoryWithoutAgent);
  sandbox.Start("");
  ASSERT_TRUE(sandbox.WaitForConsole("restarting it in 0.8 s", seconds(20))) << sandbox.console();
  // Attempts at 0, 0.1, 0.3, 0.7 and 1.5 s: the fifth is announced no earlier than 0.7 s in.
  std::this_thread::sleep_for(seconds(2));
  sandbox.WaitForConsole("(never printed)", milliseconds(100));
  std::regex attempt(R"(ember-init: cannot start /sbin/ember-agent: No such file or directory; )"
                     R"(restarting it in ([0-9.]+) s)");
  std::vector<double> delays;
  const std::string& console = sandbox.console();
  for (std::sregex_iterator it(console.begin(), console.end(), attempt), end; it != end; ++it) {
    delays.push_back(std::stod((*it)[1]));
  }
  ASSERT_GE(delays.size(), 4u) << console;
  EXPECT_LE(delays.size(), 6u) << console;
  for (std::size_t i = 1; i < delays.size(); ++i) EXPECT_GT(delays[i], delays[i - 1]) << console;
  ASSERT_EQ(kill(sandbox.pid(), SIGTERM), 0);
  std::optional<int> status = sandbox.WaitForEnd(seconds(20));
  ASSERT_TRUE(status) << console;
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGHUP) << *status;
}

}  // namespace
}  // namespace ember::testing
