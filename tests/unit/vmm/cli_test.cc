// ember-vmm's handling of bad input, run as a user runs it. None of these reach KVM.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <filesystem>

#include "tests/support/process.h"

namespace ember::testing {
namespace {

// Runs ember-vmm and expects the bad-input exit code with a single error line on stderr
// containing `expected`.
void ExpectBadInput(const std::vector<std::string>& args, const std::string& expected) {
  std::vector<std::string> argv = {BinPath("ember-vmm")};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessResult result = RunProcess(argv);
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_EQ(result.err.rfind("ember-vmm: error: ", 0), 0u) << result.err;
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
  EXPECT_NE(result.err.find(expected), std::string::npos) << result.err;
  EXPECT_EQ(result.out, "");
}

std::string Config(const std::string& json) { return WriteTempFile("vm.json", json); }

TEST(VmmCli, UnknownFlagIsRejected) { ExpectBadInput({"--frobnicate"}, "--frobnicate"); }

TEST(VmmCli, FlagWithoutValueIsRejected) { ExpectBadInput({"--config"}, "needs a value"); }

TEST(VmmCli, MissingConfigFileIsNamed) {
  ExpectBadInput({"--config", "/nonexistent/vm.json"}, "/nonexistent/vm.json");
}

TEST(VmmCli, MalformedJsonIsRejected) {
  ExpectBadInput({"--config", Config("{\"machine-config\": {")}, "config file");
}

TEST(VmmCli, UnknownFieldIsNamed) {
  ExpectBadInput({"--config", Config(R"({"machine-config": {"memory": 5}})")}, "memory");
}

TEST(VmmCli, WrongTypeIsNamed) {
  ExpectBadInput({"--config", Config(R"({"machine-config": {"mem_size_mib": "lots"}})")},
                 "machine-config.mem_size_mib");
}

TEST(VmmCli, ZeroMemoryIsRejected) {
  ExpectBadInput({"--config", Config(R"({"machine-config": {"mem_size_mib": 0}})")},
                 "machine-config.mem_size_mib");
}

TEST(VmmCli, MissingKernelIsNamed) {
  ExpectBadInput({"--config", Config(R"({"boot-source": {"kernel_image_path": "/no/vmlinux"}})")},
                 "/no/vmlinux");
}

TEST(VmmCli, UnreadableKernelIsNamed) {
  // A directory opens for reading but is not a kernel file.
  ExpectBadInput({"--config", Config(R"({"boot-source": {"kernel_image_path": "/tmp"}})")},
                 "not a regular file");
}

TEST(VmmCli, OverlongCommandLineIsRejected) {
  std::string args(3000, 'a');
  ExpectBadInput({"--config", Config(R"({"boot-source": {"boot_args": ")" + args + R"("}})")},
                 "boot-source.boot_args");
}

TEST(VmmCli, RateLimiterRefillTimeThatUsedToCrashIsRejected) {
  // 2^58 ms is 0 ns once multiplied out in 64 bits: ember-vmm died of SIGFPE on first I/O.
  ExpectBadInput({"--config", Config(R"({"drives": [{"drive_id": "d", "path_on_host": "/x",
                     "rate_limiter": {"bandwidth": {"size": 4096,
                                                    "refill_time": 288230376151711744}}}]})")},
                 "drives[0].rate_limiter.bandwidth.refill_time: must be 1 to 3600000 ms");
}

TEST(VmmCli, UnopenableExitRecordIsNamed) {
  ExpectBadInput({"--exit-record", "/nonexistent/dir/exit"}, "/nonexistent/dir/exit");
}

TEST(VmmCli, BadStartTimeIsRejected) { ExpectBadInput({"--start-time-us", "soon"}, "soon"); }

TEST(VmmCli, GarbageBinaryConfigIsRejected) {
  ExpectBadInput({"--config-proto", WriteTempFile("vm.pb", std::string("\xff\xff\xff", 3))},
                 "is not a binary ember.v1.VmConfig message");
}

TEST(VmmCli, MissingBinaryConfigIsNamed) {
  ExpectBadInput({"--config-proto", "/nonexistent/vm.pb"}, "/nonexistent/vm.pb");
}

TEST(VmmCli, JsonAndBinaryConfigTogetherAreRejected) {
  ExpectBadInput({"--config", Config("{}"), "--config-proto", "/nonexistent/vm.pb"},
                 "--config and --config-proto");
}

TEST(VmmCli, MissingConfigToolIsAHostErrorNamingIt) {
  // ember-vmm copied somewhere without its ember-config beside it.
  std::string lonely = WriteTempFile("ember-vmm", "");
  std::filesystem::copy_file(BinPath("ember-vmm"), lonely,
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::permissions(lonely, std::filesystem::perms::owner_all);
  ProcessResult result = RunProcess({lonely, "--config", Config("{}")});
  EXPECT_EQ(result.exit_code, 1) << result.err;
  EXPECT_NE(result.err.find("ember-config"), std::string::npos) << result.err;
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
}

TEST(ConfigToolCli, MalformedJsonIsOneLineWithExitCodeTwo) {
  ProcessResult result = RunProcess({BinPath("ember-config"), Config("{\"drives\": [")});
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_EQ(result.err.rfind("ember-config: error: config file ", 0), 0u) << result.err;
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
  EXPECT_EQ(result.out, "");
}

TEST(ConfigToolCli, ValidConfigChecksSilently) {
  ProcessResult result = RunProcess({BinPath("ember-config"), Config(R"({"drives": []})")});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "");
  EXPECT_EQ(result.err, "");
}

TEST(ConfigToolCli, BinaryOutputIsTheSerializedMessage) {
  // machine-config (field 2) holding vcpu_count (field 1) = 2: bytes 12 02 08 02.
  ProcessResult result = RunProcess(
      {BinPath("ember-config"), "--binary", Config(R"({"machine-config": {"vcpu_count": 2}})")});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, std::string("\x12\x02\x08\x02", 4));
}

TEST(ConfigToolCli, NoFileIsRejected) {
  ProcessResult result = RunProcess({BinPath("ember-config"), "--binary"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("no config file"), std::string::npos) << result.err;
}

// Runs `argv` as a host where io_uring is refused would (sysctl kernel.io_uring_disabled, an
// outer seccomp policy): io_uring_setup(2) fails with EPERM, through a filter installed in
// the child before exec. Returns the exit code and what it wrote to stderr.
ProcessResult RunWithIoUringRefused(const std::vector<std::string>& argv) {
  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return {};
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(err_pipe[1], STDERR_FILENO);
    int null = ::open("/dev/null", O_RDWR);
    ::dup2(null, STDIN_FILENO);
    ::dup2(null, STDOUT_FILENO);
    sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog program{static_cast<unsigned short>(std::size(code)), code};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
      ::_exit(99);
    }
    std::vector<char*> args;
    for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(98);
  }
  ::close(err_pipe[1]);
  ProcessResult result;
  char buffer[4096];
  for (ssize_t n; (n = ::read(err_pipe[0], buffer, sizeof buffer)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    result.err.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(err_pipe[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

TEST(VmmCli, IoUringTheHostRefusesIsAHostErrorNotBadInput) {
  std::string disk = WriteTempFile("disk.img", std::string(64 * 1024, '\0'));
  ProcessResult result = RunWithIoUringRefused(
      {BinPath("ember-vmm"), "--config",
       Config(R"({"drives": [{"drive_id": "data", "path_on_host": ")" + disk +
              R"(", "io_engine": "Async"}]})")});
  EXPECT_EQ(result.exit_code, 1) << result.err;
  EXPECT_NE(result.err.find("io_uring"), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("drive \"data\""), std::string::npos) << result.err;
}

TEST(VmmCli, DriveFileWithoutPermissionIsBadInput) {
  // A writable drive on a file that cannot be opened for writing is the config's fault. Tests
  // run as root, whom no mode bit refuses; ember-vmm's own executable, running, cannot be
  // opened for writing (ETXTBSY).
  ExpectBadInput({"--config", Config(R"({"drives": [{"drive_id": "data", "path_on_host": ")" +
                                     BinPath("ember-vmm") + R"("}]})")},
                 "drive \"data\"");
}

TEST(VmmCli, HelpPrintsUsageAndSucceeds) {
  ProcessResult result = RunProcess({BinPath("ember-vmm"), "--help"});
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_NE(result.out.find("usage: ember-vmm"), std::string::npos);
}

}  // namespace
}  // namespace ember::testing
