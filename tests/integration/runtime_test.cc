// ember-runtime driven as runc's callers drive it (containerd's shim, podman's conmon): the
// real binary, a real VM (the test guest's agent scenario plays the container's process:
// Exec builtins echo, exit N, sleep infinity) and the real agent protocol over virtio-vsock.
// The test process is a subreaper, as containerd's shim is, so the --pid-file process becomes
// its child once `create` has exited and its exit status can be read.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/support/files.h"
#include "tests/support/kvm_available.h"
#include "tests/support/process.h"

extern char** environ;

namespace ember::testing {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

// The pids whose command line mentions `text` (our own state root: the supervisors, which
// keep create's argv, and the VMMs, whose config lies under it).
std::vector<pid_t> ProcessesMentioning(const std::string& text) {
  std::vector<pid_t> pids;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = ReadFile(entry.path().string() + "/cmdline");
    std::string stat = ReadFile(entry.path().string() + "/stat");
    std::size_t close = stat.rfind(')');
    if (close != std::string::npos && stat.substr(close + 2, 1) == "Z") continue;  // reaped soon
    if (cmdline.find(text) != std::string::npos) pids.push_back(std::stoi(name));
  }
  return pids;
}

// The mounts whose line mentions `text`. Only ours are counted: other programs on the host
// mount and unmount as they please while a test runs.
int MountsMentioning(const std::string& text) {
  std::istringstream mounts(ReadFile("/proc/self/mountinfo"));
  int count = 0;
  for (std::string line; std::getline(mounts, line);) count += line.find(text) != std::string::npos;
  return count;
}

// A started command whose stdout and stderr go to files (as the shim's fifos would: the
// supervisor keeps them after create exits).
struct Started {
  pid_t pid = -1;
  int exit_code = -1;
};

class RuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EMBER_REQUIRE_KVM();
    ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    root_ = dir_.path() + "/root";
    config_ = dir_.path() + "/runtime.json";
    WriteConfig(json::object());
    mounts_before_ = MountsMentioning(dir_.path()) + MountsMentioning(NetnsName());
  }

  void TearDown() override {
    if (::testing::Test::IsSkipped()) return;
    // Nothing left behind: no supervisor or VMM of ours, no mount, no state directory.
    EXPECT_EQ(ProcessesMentioning(root_), std::vector<pid_t>{});
    EXPECT_EQ(ProcessesOfJailUids(), std::vector<pid_t>{});  // a jailed VMM names no path
    EXPECT_EQ(MountsMentioning(dir_.path()) + MountsMentioning(NetnsName()), mounts_before_);
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(root_, ec)) {
      ADD_FAILURE() << "left in the state directory: " << entry.path();
    }
  }

  // The runtime's config file: the test's own cache and jail uids, plus `extra`.
  void WriteConfig(const json& extra) {
    json config = {{"image_cache_dir", dir_.path() + "/cache"},
                   {"boot_timeout_ms", 120000},
                   {"jailer", {{"uid_base", JailUidBase()}, {"uid_count", kJailUids}}}};
    config.merge_patch(extra);
    std::ofstream(config_) << config.dump();
  }

  // Each test process's jails take uids of their own, so that no other process has them.
  static constexpr std::uint32_t kJailUids = 1000;
  static std::uint32_t JailUidBase() {
    return 1'700'000'000u + static_cast<std::uint32_t>(::getpid() % 100'000) * kJailUids;
  }
  static std::uint32_t UidOf(pid_t pid) {
    std::istringstream status(ReadFile("/proc/" + std::to_string(pid) + "/status"));
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("Uid:", 0) == 0) return static_cast<std::uint32_t>(std::stoul(line.substr(5)));
    }
    return 0;
  }
  static std::vector<pid_t> ProcessesOfJailUids() {
    std::vector<pid_t> pids;
    for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
      const std::string name = entry.path().filename();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::string stat = ReadFile(entry.path().string() + "/stat");
      std::size_t close = stat.rfind(')');
      if (close != std::string::npos && stat.substr(close + 2, 1) == "Z") continue;  // ended
      std::uint32_t uid = UidOf(std::stoi(name));
      if (uid >= JailUidBase() && uid < JailUidBase() + kJailUids) pids.push_back(std::stoi(name));
    }
    return pids;
  }

  // A bundle whose process is `args`: a small root tree and config.json.
  std::string Bundle(const std::string& name, const std::vector<std::string>& args,
                     json extra = json::object()) {
    std::string bundle = dir_.path() + "/" + name;
    std::filesystem::create_directories(bundle + "/rootfs/bin");
    std::ofstream(bundle + "/rootfs/bin/hello") << "hello\n";
    json config = {{"ociVersion", "1.0.2"},
                   {"process",
                    {{"terminal", false},
                     {"user", {{"uid", 0}, {"gid", 0}}},
                     {"args", args},
                     {"env", {"PATH=/bin"}},
                     {"cwd", "/"}}},
                   {"root", {{"path", "rootfs"}, {"readonly", true}}},
                   {"hostname", name},
                   {"linux", {{"namespaces", {{{"type", "pid"}}, {{"type", "mount"}}}}}}};
    config.merge_patch(extra);
    std::ofstream(bundle + "/config.json") << config.dump(2);
    return bundle;
  }

  std::vector<std::string> Argv(const std::vector<std::string>& command) const {
    std::vector<std::string> argv = {
        BinPath("ember-runtime"), "--root", root_, "--config", config_, "--log", log_path(),
        "--log-format",           "json"};
    argv.insert(argv.end(), command.begin(), command.end());
    return argv;
  }

  ProcessResult Runtime(const std::vector<std::string>& command) const {
    return RunProcess(Argv(command), seconds(180));
  }

  // Runs the command with stdout and stderr to `out` and waits for it (not for what it
  // leaves running).
  int RuntimeTo(const std::vector<std::string>& command, const std::string& out) const {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    std::vector<std::string> args = Argv(command);
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    pid_t pid = -1;
    int spawned = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (spawned != 0) return -1;
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  // create, as the shim runs it; the --pid-file's pid.
  pid_t Create(const std::string& id, const std::string& bundle, const std::string& out) {
    std::string pid_file = dir_.path() + "/" + id + ".pid";
    int code = RuntimeTo({"create", "--bundle", bundle, "--pid-file", pid_file, id}, out);
    if (code != 0) {
      ADD_FAILURE() << "create exited " << code << ": " << ReadFile(out);
      return -1;
    }
    return std::stoi(ReadFile(pid_file));
  }

  std::string Status(const std::string& id) const {
    ProcessResult state = Runtime({"state", id});
    if (state.exit_code != 0) return "error: " + state.err;
    return json::parse(state.out)["status"];
  }

  // The --pid-file process's end, as the subreaper sees it.
  static int WaitExit(pid_t pid) {
    int status = 0;
    if (::waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + WTERMSIG(status);
  }

  std::string log_path() const { return dir_.path() + "/log.json"; }
  // The network namespace a test may make (ScopedNetns).
  static std::string NetnsName() { return "ember-rt-" + std::to_string(::getpid()); }

  // The last error line of the --log file.
  std::string LastLoggedError() const {
    std::ifstream in(log_path());
    std::string line, last;
    while (std::getline(in, line)) {
      json j = json::parse(line, nullptr, false);
      if (!j.is_discarded() && j.value("level", "") == "error") last = j.value("msg", "");
    }
    return last;
  }

  ScopedTempDir dir_{"ember-runtime"};
  std::string root_;
  std::string config_;
  int mounts_before_ = 0;
};

TEST_F(RuntimeTest, CreateThenStartRunsTheProcessAndThePidFileProcessExitsWithItsStatus) {
  std::string out = dir_.path() + "/out";
  pid_t pid = Create("c1", Bundle("b", {"exit", "7"}), out);
  ASSERT_GT(pid, 0);
  // A live descendant of ours once create has gone: ours to reap.
  EXPECT_EQ(::kill(pid, 0), 0);
  json state = json::parse(Runtime({"state", "c1"}).out);
  EXPECT_EQ(state["status"], "created");
  EXPECT_EQ(state["pid"], pid);
  EXPECT_EQ(state["id"], "c1");
  ASSERT_EQ(Runtime({"start", "c1"}).exit_code, 0);
  EXPECT_EQ(WaitExit(pid), 7);
  EXPECT_EQ(Status("c1"), "stopped");
  EXPECT_EQ(json::parse(Runtime({"state", "c1"}).out)["pid"], 0);
  EXPECT_EQ(Runtime({"delete", "c1"}).exit_code, 0);
  EXPECT_NE(Runtime({"state", "c1"}).exit_code, 0);
}

TEST_F(RuntimeTest, TheProcessWritesToCreatesStdout) {
  std::string out = dir_.path() + "/out";
  pid_t pid = Create("c1", Bundle("b", {"echo", "hello", "from", "the", "VM"}), out);
  ASSERT_GT(pid, 0);
  ASSERT_EQ(Runtime({"start", "c1"}).exit_code, 0);
  EXPECT_EQ(WaitExit(pid), 0);
  EXPECT_EQ(ReadFile(out), "hello from the VM\n");
  EXPECT_EQ(Runtime({"delete", "c1"}).exit_code, 0);
}

TEST_F(RuntimeTest, KillDeliversTheSignalThroughTheAgent) {
  pid_t pid = Create("c1", Bundle("b", {"sleep", "infinity"}), dir_.path() + "/out");
  ASSERT_GT(pid, 0);
  ASSERT_EQ(Runtime({"start", "c1"}).exit_code, 0);
  EXPECT_EQ(Status("c1"), "running");
  // A signal the process ignores by default changes nothing.
  ASSERT_EQ(Runtime({"kill", "c1", "WINCH"}).exit_code, 0);
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_EQ(Status("c1"), "running");
  ASSERT_EQ(Runtime({"kill", "c1", "TERM"}).exit_code, 0);
  EXPECT_EQ(WaitExit(pid), 128 + SIGTERM);
  EXPECT_EQ(Runtime({"delete", "c1"}).exit_code, 0);
}

TEST_F(RuntimeTest, SigkillEndsTheVm) {
  pid_t pid = Create("c1", Bundle("b", {"sleep", "infinity"}), dir_.path() + "/out");
  ASSERT_GT(pid, 0);
  ASSERT_EQ(Runtime({"start", "c1"}).exit_code, 0);
  ProcessResult ps = Runtime({"ps", "--format", "json", "c1"});
  ASSERT_EQ(ps.exit_code, 0) << ps.err;
  json pids = json::parse(ps.out);
  ASSERT_EQ(pids.size(), 2u);  // the supervisor and its ember-vmm
  EXPECT_EQ(pids[0], pid);
  pid_t vmm = pids[1];
  ASSERT_EQ(Runtime({"kill", "--all", "c1", "KILL"}).exit_code, 0);
  EXPECT_EQ(WaitExit(pid), 128 + SIGKILL);
  EXPECT_NE(::kill(vmm, 0), 0);
  EXPECT_EQ(Runtime({"delete", "c1"}).exit_code, 0);
}

// The name /proc/net/unix gives the socket `fd` of process `pid` is bound to ("@..." abstract),
// or "" if it has none.
std::string BoundName(pid_t pid, int fd) {
  std::string link = std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/fd/" +
                                                   std::to_string(fd));
  std::string inode = link.substr(link.find('[') + 1, link.find(']') - link.find('[') - 1);
  std::ifstream table("/proc/net/unix");
  std::string line;
  while (std::getline(table, line)) {
    std::istringstream fields(line);
    std::string field, name;
    for (int i = 0; i < 7; ++i) fields >> field;  // Num RefCount Protocol Flags Type St Inode
    if (field != inode) continue;
    fields >> name;
    return name;
  }
  return "";
}

// ember-vmm runs as root and obeys whoever holds its control channel (snapshots to any path,
// drive swaps): only the supervisor may ever reach it. ember-vmm keeps its listener on fd 3.
TEST_F(RuntimeTest, NoOtherProcessCanConnectToTheVmmsControlChannel) {
  pid_t pid = Create("c1", Bundle("b", {"sleep", "infinity"}), dir_.path() + "/out");
  ASSERT_GT(pid, 0);
  ProcessResult ps = Runtime({"ps", "--format", "json", "c1"});
  ASSERT_EQ(ps.exit_code, 0) << ps.err;
  json pids = json::parse(ps.out);
  ASSERT_EQ(pids.size(), 2u);
  std::string name = BoundName(pids[1], 3);
  ASSERT_FALSE(name.empty()) << "fd 3 of ember-vmm is not a bound Unix socket";
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, name.data(), std::min(name.size(), sizeof(address.sun_path) - 1));
  if (name[0] == '@') address.sun_path[0] = '\0';
  socklen_t length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() +
                                            (name[0] == '@' ? 0 : 1));
  int conn = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(conn, 0);
  EXPECT_NE(::connect(conn, reinterpret_cast<sockaddr*>(&address), length), 0)
      << "connected to ember-vmm's control listener at " << name;
  ::close(conn);
  ASSERT_EQ(Runtime({"kill", "c1", "KILL"}).exit_code, 0);
  WaitExit(pid);
  EXPECT_EQ(Runtime({"delete", "c1"}).exit_code, 0);
}

TEST_F(RuntimeTest, KillOfACreatedContainerEndsItWithTheSignalsStatus) {
  pid_t pid = Create("c1", Bundle("b", {"sleep", "infinity"}), dir_.path() + "/out");
  ASSERT_GT(pid, 0);
  ASSERT_EQ(Runtime({"kill", "c1"}).exit_code, 0);  // SIGTERM by default
  EXPECT_EQ(WaitExit(pid), 128 + SIGTERM);
  EXPECT_EQ(Runtime({"delete", "c1"}).exit_code, 0);
}

TEST_F(RuntimeTest, DeleteOfARunningContainerNeedsForce) {
  pid_t pid = Create("c1", Bundle("b", {"sleep", "infinity"}), dir_.path() + "/out");
  ASSERT_GT(pid, 0);
  ASSERT_EQ(Runtime({"start", "c1"}).exit_code, 0);
  ProcessResult refused = Runtime({"delete", "c1"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_EQ(LastLoggedError(), "cannot delete container c1 that is not stopped: running");
  EXPECT_EQ(Status("c1"), "running");
  EXPECT_EQ(Runtime({"delete", "--force", "c1"}).exit_code, 0);
  EXPECT_EQ(WaitExit(pid), 128 + SIGKILL);
}

TEST_F(RuntimeTest, SecondCreateWithTheSameIdIsRefusedAndTheFirstRunsOn) {
  std::string bundle = Bundle("b", {"echo", "first"});
  std::string out = dir_.path() + "/out";
  pid_t pid = Create("c1", bundle, out);
  ASSERT_GT(pid, 0);
  std::string second_out = dir_.path() + "/second";
  EXPECT_EQ(RuntimeTo({"create", "--bundle", bundle, "c1"}, second_out), 1);
  EXPECT_EQ(LastLoggedError(), "container with id \"c1\" already exists");
  EXPECT_EQ(Status("c1"), "created");
  ASSERT_EQ(Runtime({"start", "c1"}).exit_code, 0);
  EXPECT_EQ(WaitExit(pid), 0);
  EXPECT_EQ(ReadFile(out), "first\n");
  EXPECT_EQ(Runtime({"delete", "c1"}).exit_code, 0);
}

TEST_F(RuntimeTest, UnknownIdIsAnErrorInRuncsJsonLogForEveryCommand) {
  for (std::vector<std::string> command :
       std::vector<std::vector<std::string>>{{"state", "nope"},
                                             {"start", "nope"},
                                             {"kill", "nope", "KILL"},
                                             {"delete", "nope"},
                                             {"pause", "nope"},
                                             {"ps", "nope"}}) {
    ProcessResult result = Runtime(command);
    EXPECT_EQ(result.exit_code, 1) << command[0];
    EXPECT_EQ(LastLoggedError(), "container \"nope\" does not exist") << command[0];
  }
  // runc's `delete --force` of a container that is not there succeeds.
  EXPECT_EQ(Runtime({"delete", "--force", "nope"}).exit_code, 0);
}

TEST_F(RuntimeTest, BundleWithoutRootfsIsRefusedLeavingNothing) {
  std::string bundle = Bundle("b", {"echo", "x"});
  std::filesystem::remove_all(bundle + "/rootfs");
  std::string out = dir_.path() + "/out";
  EXPECT_EQ(RuntimeTo({"create", "--bundle", bundle, "c1"}, out), 1);
  EXPECT_NE(LastLoggedError().find("rootfs"), std::string::npos) << LastLoggedError();
  EXPECT_NE(Runtime({"state", "c1"}).exit_code, 0);
}

TEST_F(RuntimeTest, ConfigJsonThatDoesNotParseIsRefusedLeavingNothing) {
  std::string bundle = Bundle("b", {"echo", "x"});
  std::ofstream(bundle + "/config.json") << "{\"process\": {";
  std::string out = dir_.path() + "/out";
  EXPECT_EQ(RuntimeTo({"create", "--bundle", bundle, "c1"}, out), 1);
  EXPECT_NE(LastLoggedError().find("config.json"), std::string::npos) << LastLoggedError();
  EXPECT_NE(Runtime({"state", "c1"}).exit_code, 0);
}

TEST_F(RuntimeTest, ProgramTheGuestLacksEndsTheContainerAtStart) {
  pid_t pid = Create("c1", Bundle("b", {"/bin/no-such-program"}), dir_.path() + "/out");
  ASSERT_GT(pid, 0);
  EXPECT_EQ(Runtime({"start", "c1"}).exit_code, 1);
  EXPECT_NE(LastLoggedError().find("could not start"), std::string::npos) << LastLoggedError();
  EXPECT_EQ(WaitExit(pid), 127);
  EXPECT_EQ(Runtime({"delete", "c1"}).exit_code, 0);
}

TEST_F(RuntimeTest, ExecRunsAnotherProcessInTheVm) {
  pid_t pid = Create("c1", Bundle("b", {"sleep", "infinity"}), dir_.path() + "/out");
  ASSERT_GT(pid, 0);
  ASSERT_EQ(Runtime({"start", "c1"}).exit_code, 0);
  std::string process = dir_.path() + "/process.json";
  std::ofstream(process) << json{{"args", {"echo", "exec'd"}},
                                 {"cwd", "/"},
                                 {"user", {{"uid", 0}, {"gid", 0}}}}
                                .dump();
  ProcessResult exec = Runtime({"exec", "--process", process, "c1"});
  EXPECT_EQ(exec.exit_code, 0) << exec.err;
  EXPECT_EQ(exec.out, "exec'd\n");
  ProcessResult exit_code = Runtime({"exec", "c1", "exit", "3"});
  EXPECT_EQ(exit_code.exit_code, 3) << exit_code.err;
  EXPECT_EQ(Runtime({"delete", "--force", "c1"}).exit_code, 0);
  EXPECT_EQ(WaitExit(pid), 128 + SIGKILL);
}

TEST_F(RuntimeTest, PauseAndResumeShowInTheState) {
  pid_t pid = Create("c1", Bundle("b", {"sleep", "infinity"}), dir_.path() + "/out");
  ASSERT_GT(pid, 0);
  ASSERT_EQ(Runtime({"start", "c1"}).exit_code, 0);
  ASSERT_EQ(Runtime({"pause", "c1"}).exit_code, 0);
  EXPECT_EQ(Status("c1"), "paused");
  EXPECT_EQ(Runtime({"pause", "c1"}).exit_code, 1);
  ASSERT_EQ(Runtime({"resume", "c1"}).exit_code, 0);
  EXPECT_EQ(Status("c1"), "running");
  ASSERT_EQ(Runtime({"kill", "c1", "INT"}).exit_code, 0);
  EXPECT_EQ(WaitExit(pid), 128 + SIGINT);
  EXPECT_EQ(Runtime({"delete", "c1"}).exit_code, 0);
}

// The pids `ps --format json` gives: the supervisor, then its VMM.
std::vector<pid_t> PsPids(const ProcessResult& ps) {
  std::vector<pid_t> pids;
  json list = json::parse(ps.out, nullptr, false);
  if (list.is_array()) {
    for (const json& pid : list) pids.push_back(pid.get<pid_t>());
  }
  return pids;
}

std::string StatusLine(pid_t pid, const std::string& key) {
  std::istringstream status(ReadFile("/proc/" + std::to_string(pid) + "/status"));
  for (std::string line; std::getline(status, line);) {
    if (line.rfind(key + ":", 0) == 0) return line.substr(key.size() + 2);
  }
  return "";
}

std::string NsOf(const std::string& pid, const std::string& ns) {
  std::error_code ec;
  return std::filesystem::read_symlink("/proc/" + pid + "/ns/" + ns, ec).string();
}

TEST_F(RuntimeTest, TheVmmRunsJailedAsAUidOfItsOwnAndDeleteRemovesTheJail) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: ember-jailer";
  pid_t pid = Create("c1", Bundle("b", {"sleep", "infinity"}), dir_.path() + "/out");
  ASSERT_GT(pid, 0);
  std::vector<pid_t> pids = PsPids(Runtime({"ps", "--format", "json", "c1"}));
  ASSERT_EQ(pids.size(), 2u);
  const pid_t vmm = pids[1];
  const std::uint32_t uid = UidOf(vmm);
  EXPECT_GE(uid, JailUidBase());
  EXPECT_LT(uid, JailUidBase() + kJailUids);
  const std::string id = std::to_string(uid);
  EXPECT_EQ(StatusLine(vmm, "Uid"), id + "\t" + id + "\t" + id + "\t" + id);
  EXPECT_EQ(StatusLine(vmm, "Gid"), id + "\t" + id + "\t" + id + "\t" + id);
  EXPECT_EQ(StatusLine(vmm, "CapEff"), "0000000000000000");
  EXPECT_EQ(StatusLine(vmm, "CapBnd"), "0000000000000000");
  EXPECT_EQ(StatusLine(vmm, "NoNewPrivs"), "1");
  for (const char* ns : {"mnt", "net", "ipc", "uts"}) {
    EXPECT_NE(NsOf(std::to_string(vmm), ns), NsOf("self", ns)) << ns;
  }
  const std::string jail = dir_.path() + "/cache/jails/ember-vmm/c1";
  EXPECT_TRUE(std::filesystem::exists(jail + "/root/drive0"));
  EXPECT_TRUE(std::filesystem::exists(dir_.path() + "/cache/jails/uids/" + id));
  // The VMM's own cgroups, named after the container, under ember-runtime/.
  std::string cgroups = ReadFile("/proc/" + std::to_string(vmm) + "/cgroup");
  EXPECT_NE(cgroups.find("/ember-runtime/c1"), std::string::npos) << cgroups;
  // An exec reaches the jailed VMM's vsock socket through the container's v.sock.
  ProcessResult exec = Runtime({"exec", "c1", "echo", "jailed"});
  EXPECT_EQ(exec.out, "jailed\n") << exec.err;

  ASSERT_EQ(Runtime({"delete", "--force", "c1"}).exit_code, 0);
  EXPECT_EQ(WaitExit(pid), 128 + SIGKILL);
  EXPECT_FALSE(std::filesystem::exists(jail));
  EXPECT_FALSE(std::filesystem::exists(dir_.path() + "/cache/jails/uids/" + id));
  std::istringstream lines(cgroups);
  for (std::string line; std::getline(lines, line);) {
    std::size_t at = line.find("/ember-runtime/c1");
    if (at == std::string::npos) continue;
    std::string hierarchy = line.substr(line.find(':') + 1);
    hierarchy = hierarchy.substr(0, hierarchy.find(':'));
    EXPECT_FALSE(std::filesystem::exists("/sys/fs/cgroup/" +
                                         (hierarchy.empty() ? std::string("unified") : hierarchy) +
                                         "/ember-runtime/c1"))
        << line;
  }
}

TEST_F(RuntimeTest, AJailedVmmWhoseSupervisorWasKilledIsEndedByDelete) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: ember-jailer";
  pid_t pid = Create("c1", Bundle("b", {"sleep", "infinity"}), dir_.path() + "/out");
  ASSERT_GT(pid, 0);
  std::vector<pid_t> pids = PsPids(Runtime({"ps", "--format", "json", "c1"}));
  ASSERT_EQ(pids.size(), 2u);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);  // jailed, its VMM has no parent-death signal
  EXPECT_EQ(WaitExit(pid), 1000 + SIGKILL);
  EXPECT_EQ(Status("c1"), "stopped");
  EXPECT_EQ(Runtime({"delete", "c1"}).exit_code, 0);
  // TearDown: no process of the jails' uids is left.
}

TEST_F(RuntimeTest, UnjailedWhenTheConfigSaysSo) {
  WriteConfig({{"jailer", {{"enabled", false}}}});
  pid_t pid = Create("c1", Bundle("b", {"sleep", "infinity"}), dir_.path() + "/out");
  ASSERT_GT(pid, 0);
  std::vector<pid_t> pids = PsPids(Runtime({"ps", "--format", "json", "c1"}));
  ASSERT_EQ(pids.size(), 2u);
  EXPECT_EQ(UidOf(pids[1]), ::geteuid());
  EXPECT_FALSE(std::filesystem::exists(dir_.path() + "/cache/jails/ember-vmm/c1"));
  ASSERT_EQ(Runtime({"delete", "--force", "c1"}).exit_code, 0);
  EXPECT_EQ(WaitExit(pid), 128 + SIGKILL);
}

// A network namespace made with `ip netns add` for one test (as CNI makes a pod's), gone with it.
class ScopedNetns {
 public:
  explicit ScopedNetns(std::string name) : name_(std::move(name)) {
    ok_ = RunProcess({"/usr/sbin/ip", "netns", "add", name_}).exit_code == 0;
  }
  ~ScopedNetns() {
    if (ok_) (void)RunProcess({"/usr/sbin/ip", "netns", "del", name_});
  }
  [[nodiscard]] bool ok() const { return ok_; }
  [[nodiscard]] std::string path() const { return "/var/run/netns/" + name_; }
  // `ip link show NAME` inside it: empty when there is no such link.
  [[nodiscard]] std::string Link(const std::string& link) const {
    ProcessResult shown = RunProcess({"/usr/sbin/ip", "-n", name_, "-o", "link", "show", link});
    return shown.exit_code == 0 ? shown.out : "";
  }

 private:
  std::string name_;
  bool ok_ = false;
};

TEST_F(RuntimeTest, BundlesNetworkNamespaceGetsTheVmsTapUntilTheContainerGoes) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: network namespaces and taps";
  ScopedNetns netns(NetnsName());
  ASSERT_TRUE(netns.ok());
  json network = {
      {"linux",
       {{"namespaces", {{{"type", "pid"}}, {{"type", "network"}, {"path", netns.path()}}}}}}};
  pid_t pid = Create("c1", Bundle("b", {"sleep", "infinity"}, network), dir_.path() + "/out");
  ASSERT_GT(pid, 0);
  std::string tap = netns.Link("ember0");
  EXPECT_NE(tap.find("ember0"), std::string::npos);
  EXPECT_NE(tap.find("UP"), std::string::npos) << tap;
  ASSERT_EQ(Runtime({"start", "c1"}).exit_code, 0);
  ASSERT_EQ(Runtime({"kill", "c1", "TERM"}).exit_code, 0);
  EXPECT_EQ(WaitExit(pid), 128 + SIGTERM);
  EXPECT_EQ(netns.Link("ember0"), "");
  EXPECT_EQ(Runtime({"delete", "c1"}).exit_code, 0);
}

TEST_F(RuntimeTest, DeleteRemovesTheTapOfASupervisorThatWasKilledOutright) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: network namespaces and taps";
  ScopedNetns netns(NetnsName());
  ASSERT_TRUE(netns.ok());
  json network = {{"linux", {{"namespaces", {{{"type", "network"}, {"path", netns.path()}}}}}}};
  pid_t pid = Create("c1", Bundle("b", {"sleep", "infinity"}, network), dir_.path() + "/out");
  ASSERT_GT(pid, 0);
  ASSERT_NE(netns.Link("ember0"), "");
  ASSERT_EQ(::kill(pid, SIGKILL), 0);  // no clean-up of its own; its VMM dies with it
  EXPECT_EQ(WaitExit(pid), 1000 + SIGKILL);
  EXPECT_EQ(Status("c1"), "stopped");
  EXPECT_NE(netns.Link("ember0"), "");  // persistent: still there
  EXPECT_EQ(Runtime({"delete", "c1"}).exit_code, 0);
  EXPECT_EQ(netns.Link("ember0"), "");
}

// A supervisor that dies while its VM boots (killed; the host short of memory) cannot remove
// the tap it made: the failed create must.
TEST_F(RuntimeTest, ACreateWhoseSupervisorDiesDuringBootLeavesNoTap) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: network namespaces and taps";
  ScopedNetns netns(NetnsName());
  ASSERT_TRUE(netns.ok());
  json network = {{"linux", {{"namespaces", {{{"type", "network"}, {"path", netns.path()}}}}}}};
  std::string bundle = Bundle("b", {"echo", "x"}, network);
  std::string out = dir_.path() + "/out";
  std::vector<std::string> args = Argv({"create", "--bundle", bundle, "c1"});
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t create = -1;
  ASSERT_EQ(posix_spawn(&create, argv[0], nullptr, nullptr, argv.data(), environ), 0);
  // The tap is made before ember-vmm starts; the supervisor leads a session of its own.
  pid_t supervisor = -1;
  auto deadline = std::chrono::steady_clock::now() + seconds(60);
  while (supervisor < 0 && std::chrono::steady_clock::now() < deadline) {
    if (!netns.Link("ember0").empty()) {
      for (pid_t pid : ProcessesMentioning(root_)) {
        if (::getsid(pid) == pid) supervisor = pid;
      }
    }
  }
  ASSERT_GT(supervisor, 0);
  ASSERT_EQ(::kill(supervisor, SIGKILL), 0);
  EXPECT_EQ(WaitExit(create), 1);
  EXPECT_EQ(netns.Link("ember0"), "") << ReadFile(out);
}

TEST_F(RuntimeTest, RunWaitsForTheProcessThenRemovesTheContainer) {
  ProcessResult run = Runtime({"run", "--bundle", Bundle("b", {"exit", "7"}), "c1"});
  EXPECT_EQ(run.exit_code, 7) << run.err;
  EXPECT_NE(Runtime({"state", "c1"}).exit_code, 0);  // and TearDown finds no state left
}

// The fd in the one message of a connection to the console socket listening at `listener`.
int ReceiveConsole(int listener) {
  int conn = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  if (conn < 0) return -1;
  char name[128];
  iovec iov{name, sizeof(name)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  int fd = -1;
  if (::recvmsg(conn, &msg, MSG_CMSG_CLOEXEC) > 0) {
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    if (cmsg != nullptr && cmsg->cmsg_type == SCM_RIGHTS) {
      std::memcpy(&fd, CMSG_DATA(cmsg), sizeof(fd));
    }
  }
  ::close(conn);
  return fd;
}

TEST_F(RuntimeTest, TerminalProcessGetsAPtyWhoseMasterGoesOverTheConsoleSocket) {
  std::string socket_path = dir_.path() + "/console.sock";
  int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener, 1), 0);
  json terminal = {
      {"process", {{"terminal", true}, {"consoleSize", {{"height", 30}, {"width", 100}}}}}};
  std::string bundle = Bundle("b", {"echo", "on the tty"}, terminal);
  std::string pid_file = dir_.path() + "/c1.pid";
  // Without the socket a terminal cannot be given: refused, as runc does.
  EXPECT_EQ(RuntimeTo({"create", "--bundle", bundle, "c1"}, dir_.path() + "/out"), 1);
  ASSERT_EQ(RuntimeTo({"create", "--bundle", bundle, "--console-socket", socket_path, "--pid-file",
                       pid_file, "c1"},
                      dir_.path() + "/out"),
            0)
      << ReadFile(dir_.path() + "/out");
  pid_t pid = std::stoi(ReadFile(pid_file));
  int master = ReceiveConsole(listener);
  ::close(listener);
  ASSERT_GE(master, 0);
  winsize size{};
  ASSERT_EQ(::ioctl(master, TIOCGWINSZ, &size), 0);
  EXPECT_EQ(size.ws_row, 30);
  EXPECT_EQ(size.ws_col, 100);
  ASSERT_EQ(Runtime({"start", "c1"}).exit_code, 0);
  std::string seen;
  while (seen.find('\n') == std::string::npos) {
    pollfd pfd{master, POLLIN, 0};
    if (::poll(&pfd, 1, 30'000) != 1) break;
    char buf[256];
    ssize_t n = ::read(master, buf, sizeof(buf));
    if (n <= 0) break;
    seen.append(buf, static_cast<std::size_t>(n));
  }
  EXPECT_EQ(seen, "on the tty\n");  // raw: no \r added on the host
  EXPECT_EQ(WaitExit(pid), 0);
  ::close(master);
  EXPECT_EQ(Runtime({"delete", "c1"}).exit_code, 0);
}

// A listening Unix socket at `path` (a console socket, as the shim makes one).
int ListenAt(const std::string& path) {
  int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listener, 1) != 0) {
    ::close(listener);
    return -1;
  }
  return listener;
}

// containerd's shim reads a detached exec's stdout and stderr until they close; with a tty the
// process's stdio is the pty, so nothing may keep them once exec has returned.
TEST_F(RuntimeTest, DetachedTtyExecLetsGoOfTheCallersStdout) {
  pid_t pid = Create("c1", Bundle("b", {"sleep", "infinity"}), dir_.path() + "/out");
  ASSERT_GT(pid, 0);
  ASSERT_EQ(Runtime({"start", "c1"}).exit_code, 0);
  std::string socket_path = dir_.path() + "/console.sock";
  int listener = ListenAt(socket_path);
  ASSERT_GE(listener, 0);
  int out[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_adddup2(&actions, out[1], 2);
  std::string exec_pid_file = dir_.path() + "/exec.pid";
  std::vector<std::string> args =
      Argv({"exec", "--detach", "--tty", "--console-socket", socket_path, "--pid-file",
            exec_pid_file, "c1", "sleep", "infinity"});
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t exec = -1;
  ASSERT_EQ(posix_spawn(&exec, argv[0], &actions, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  EXPECT_EQ(WaitExit(exec), 0);
  int master = ReceiveConsole(listener);
  ::close(listener);
  EXPECT_GE(master, 0);
  pollfd pfd{out[0], POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 10'000), 1) << "exec's stdout is still held open";
  char c;
  EXPECT_EQ(::read(out[0], &c, 1), 0);
  ::close(out[0]);
  EXPECT_EQ(Runtime({"delete", "--force", "c1"}).exit_code, 0);
  EXPECT_EQ(WaitExit(pid), 128 + SIGKILL);
  // The relay the detached exec left (the test, a subreaper, inherited it) ends with the VM.
  EXPECT_NE(WaitExit(std::stoi(ReadFile(exec_pid_file))), -1);
  if (master >= 0) ::close(master);
}

TEST_F(RuntimeTest, UnsupportedCommandsAreRefusedSayingSo) {
  for (const char* command : {"update", "checkpoint", "restore"}) {
    EXPECT_EQ(Runtime({command, "c1"}).exit_code, 1);
    EXPECT_NE(LastLoggedError().find("does not support"), std::string::npos);
  }
}

}  // namespace
}  // namespace ember::testing
