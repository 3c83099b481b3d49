// Runs ember-jailer for real (as root) with jail_probe as the jailed binary and asserts on what
// the probe reports from inside, and on what the host sees of it from outside (/proc/<pid>).
// Every jail, cgroup and network namespace a test makes is removed again in TearDown.
#include <fcntl.h>
#include <ftw.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "jailer/cgroup.h"
#include "tests/unit/jailer/jailer_process.h"

namespace ember::jailer {
namespace {

using ::testing::HasSubstr;

constexpr char kProbe[] = JAIL_PROBE_PATH;
constexpr uid_t kUid = 12345;
constexpr gid_t kGid = 12346;
constexpr char kNoCaps[] = "0000000000000000";

using Report = std::map<std::string, std::string>;

Report ParseReport(const std::string& text) {
  Report report;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    size_t eq = line.find('=');
    if (eq != std::string::npos) report[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return report;
}

std::string NsLink(const std::string& pid, const char* ns) {
  char buf[128];
  ssize_t n = readlink(("/proc/" + pid + "/ns/" + ns).c_str(), buf, sizeof(buf) - 1);
  return n < 0 ? "unreadable" : std::string(buf, static_cast<size_t>(n));
}

class JailTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "ember-jailer needs root (mknod, namespaces, setuid)";
    char dir[] = "/tmp/ember-jail-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    base_ = dir;
    id_ = "t" + std::to_string(getpid()) + "-" +
          ::testing::UnitTest::GetInstance()->current_test_info()->name();
    for (char& c : id_) {
      if (!isalnum(static_cast<unsigned char>(c))) c = '-';
    }
    id_ = id_.substr(0, 64);
  }

  void TearDown() override {
    // Leaf cgroups first, then the parents this test made.
    for (auto it = cgroup_dirs_.rbegin(); it != cgroup_dirs_.rend(); ++it) rmdir(it->c_str());
    for (const auto& path : netns_files_) {
      umount2(path.c_str(), MNT_DETACH);
      unlink(path.c_str());
    }
    if (!base_.empty()) nftw(base_.c_str(), RemoveEntry, 16, FTW_DEPTH | FTW_PHYS);
    // No mount made for the jail may be left in the host's mount namespace.
    if (!base_.empty()) {
      EXPECT_THAT(ReadFileOr("/proc/self/mountinfo"), ::testing::Not(HasSubstr(base_)));
    }
  }

  std::string ChrootDir() const { return base_ + "/jail_probe/" + id_ + "/root"; }

  std::vector<std::string> Args(std::vector<std::string> jailer_flags,
                                std::vector<std::string> probe_args = {},
                                const std::string& exec = kProbe) {
    std::vector<std::string> args = {"--id",
                                     id_,
                                     "--exec-file",
                                     exec,
                                     "--uid",
                                     std::to_string(kUid),
                                     "--gid",
                                     std::to_string(kGid),
                                     "--chroot-base-dir",
                                     base_};
    args.insert(args.end(), jailer_flags.begin(), jailer_flags.end());
    args.push_back("--");
    args.insert(args.end(), probe_args.begin(), probe_args.end());
    return args;
  }

  // Runs the jailer to completion and returns the probe's report (stdout).
  Report RunProbe(std::vector<std::string> jailer_flags, std::vector<std::string> probe_args = {},
                  const Jailer::Options& options = {}) {
    Jailer jailer(Args(std::move(jailer_flags), std::move(probe_args)), options);
    int code = jailer.Wait();
    EXPECT_EQ(code, 0) << "stderr: " << jailer.err();
    Report report = ParseReport(jailer.out());
    EXPECT_EQ(report["end"], "1") << "probe did not report; stderr: " << jailer.err();
    return report;
  }

  // A network namespace handle at a file under base_, made by a throwaway child.
  std::string MakeNetns() {
    std::string path = base_ + "-netns";
    int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    if (fd >= 0) close(fd);
    pid_t child = fork();
    if (child == 0) {
      if (unshare(CLONE_NEWNET) != 0) _exit(1);
      if (mount("/proc/self/ns/net", path.c_str(), nullptr, MS_BIND, nullptr) != 0) _exit(2);
      _exit(0);
    }
    int status = 0;
    waitpid(child, &status, 0);
    netns_files_.push_back(path);
    EXPECT_EQ(status, 0) << "could not create a network namespace";
    return path;
  }

  std::string base_;
  std::string id_;
  std::vector<std::string> cgroup_dirs_;
  std::vector<std::string> netns_files_;
};

// --- identity and privileges ---------------------------------------------------------------

TEST_F(JailTest, RunsAsGivenUidAndGidWithNoSupplementaryGroups) {
  Report r = RunProbe({});
  EXPECT_EQ(r["uid"], "12345,12345,12345");
  EXPECT_EQ(r["gid"], "12346,12346,12346");
  EXPECT_EQ(r["groups"], "0");
  EXPECT_EQ(r["setuid0"], "EPERM");
}

TEST_F(JailTest, SupplementaryGidIsTheOnlyGroupBesidesTheGid) {
  Report r = RunProbe({"--supplementary-gid", "23999"});
  EXPECT_EQ(r["uid"], "12345,12345,12345");
  EXPECT_EQ(r["gid"], "12346,12346,12346");
  EXPECT_EQ(r["groups"], "1");
  EXPECT_EQ(r["group_list"], "23999");
}

TEST_F(JailTest, HoldsNoCapabilitiesInAnySet) {
  Report r = RunProbe({});
  EXPECT_EQ(r["cap_eff"], kNoCaps);
  EXPECT_EQ(r["cap_prm"], kNoCaps);
  EXPECT_EQ(r["cap_inh"], kNoCaps);
  EXPECT_EQ(r["cap_bnd"], kNoCaps);
  EXPECT_EQ(r["cap_amb"], kNoCaps);
  EXPECT_EQ(r["no_new_privs"], "1");
}

TEST_F(JailTest, AllowRootStillDropsEveryCapability) {
  Jailer jailer({"--id", id_, "--exec-file", kProbe, "--uid", "0", "--gid", "0", "--allow-root",
                 "--chroot-base-dir", base_},
                {});
  ASSERT_EQ(jailer.Wait(), 0) << jailer.err();
  Report r = ParseReport(jailer.out());
  EXPECT_EQ(r["uid"], "0,0,0");
  EXPECT_EQ(r["cap_eff"], kNoCaps);
  EXPECT_EQ(r["cap_prm"], kNoCaps);
  EXPECT_EQ(r["cap_bnd"], kNoCaps);
  EXPECT_EQ(r["chroot_syscall"], "EPERM");
  EXPECT_EQ(r["mknod_syscall"], "EPERM");
}

// --- filesystem view -------------------------------------------------------------------------

TEST_F(JailTest, SeesOnlyItsChroot) {
  Report r = RunProbe({});
  EXPECT_EQ(r["root_entries"], "dev,jail_probe,out");
  EXPECT_EQ(r["cwd"], "/");
  EXPECT_EQ(r["dotdot_is_root"], "1");
  EXPECT_EQ(r["sees_etc_passwd"], "0");
  EXPECT_EQ(r["sees_proc"], "0");
}

TEST_F(JailTest, TheJailRootIsRootsAndTheBinaryWritesOnlyInItsOutputDir) {
  Report r = RunProbe({});
  EXPECT_EQ(r["root_owner"], "0:0");
  EXPECT_EQ(r["root_mode"], "0755");
  EXPECT_EQ(r["create_at_root"], "EACCES");
  EXPECT_EQ(r["create_in_out"], "ok");
  struct stat out {};
  ASSERT_EQ(lstat((ChrootDir() + "/out").c_str(), &out), 0);
  EXPECT_TRUE(S_ISDIR(out.st_mode));
  EXPECT_EQ(out.st_uid, kUid);
  EXPECT_EQ(out.st_gid, kGid);
  EXPECT_EQ(out.st_mode & 07777, 0700u);
  struct stat binary {};
  ASSERT_EQ(stat((ChrootDir() + "/jail_probe").c_str(), &binary), 0);
  EXPECT_EQ(binary.st_uid, 0u);
}

TEST_F(JailTest, ReusingAJailTakesBackARootAnEarlierJailGaveAway) {
  RunProbe({});
  ASSERT_EQ(chown(ChrootDir().c_str(), kUid, kGid), 0);
  ASSERT_EQ(chmod(ChrootDir().c_str(), 0777), 0);
  Report r = RunProbe({});
  EXPECT_EQ(r["root_owner"], "0:0");
  EXPECT_EQ(r["root_mode"], "0755");
  EXPECT_EQ(r["create_at_root"], "EACCES");
}

TEST_F(JailTest, DeviceNodesAreOwnedByTheJailUserAndUsable) {
  Report r = RunProbe({});
  EXPECT_EQ(r["dev_kvm"], "c:10:232:12345:12346:0600");
  EXPECT_EQ(r["dev_tun"], "c:10:200:12345:12346:0600");
  struct stat st {};
  if (stat("/dev/userfaultfd", &st) == 0) {
    EXPECT_EQ(r["dev_uffd"], "c:" + std::to_string(major(st.st_rdev)) + ":" +
                                 std::to_string(minor(st.st_rdev)) + ":12345:12346:0600");
  }
  if (access("/dev/kvm", F_OK) == 0) {
    EXPECT_EQ(r["open_kvm"], "ok");
  }
  if (access("/dev/net/tun", F_OK) == 0) {
    EXPECT_EQ(r["open_tun"], "ok");
  }
  EXPECT_EQ(r["mknod_syscall"], "EPERM");
  EXPECT_EQ(r["chroot_syscall"], "EPERM");
}

TEST_F(JailTest, HardLinksARootOwnedExecFile) {
  RunProbe({});
  struct stat original {
  }, jailed{};
  ASSERT_EQ(stat(kProbe, &original), 0);
  ASSERT_EQ(stat((ChrootDir() + "/jail_probe").c_str(), &jailed), 0);
  EXPECT_EQ(jailed.st_ino, original.st_ino);
}

TEST_F(JailTest, CopiesAnExecFileOthersCouldWrite) {
  // A group-writable binary must not be shared with the jail: the copy is root's own.
  std::string bin_dir = base_ + "/bin";
  ASSERT_EQ(mkdir(bin_dir.c_str(), 0755), 0);
  std::string exec = bin_dir + "/jail_probe";
  {
    std::ifstream src(kProbe, std::ios::binary);
    std::ofstream dst(exec, std::ios::binary);
    dst << src.rdbuf();
  }
  ASSERT_EQ(chmod(exec.c_str(), 0775), 0);
  Jailer jailer(Args({}, {}, exec), {});
  ASSERT_EQ(jailer.Wait(), 0) << jailer.err();
  EXPECT_EQ(ParseReport(jailer.out())["end"], "1");
  struct stat original {
  }, jailed{};
  ASSERT_EQ(stat(exec.c_str(), &original), 0);
  ASSERT_EQ(stat((ChrootDir() + "/jail_probe").c_str(), &jailed), 0);
  EXPECT_NE(jailed.st_ino, original.st_ino);
  EXPECT_EQ(jailed.st_size, original.st_size);
  EXPECT_EQ(jailed.st_uid, 0u);
  EXPECT_EQ(jailed.st_mode & 07777, 0755u);
}

TEST_F(JailTest, ReusingAJailReplacesAPlantedExecSymlinkWithoutFollowingIt) {
  RunProbe({});
  // A previous tenant owns the jail root and could leave a symlink where the binary goes.
  std::string victim = base_ + "/victim";
  { std::ofstream(victim) << "host file"; }
  std::string planted = ChrootDir() + "/jail_probe";
  ASSERT_EQ(unlink(planted.c_str()), 0);
  ASSERT_EQ(symlink(victim.c_str(), planted.c_str()), 0);
  Report r = RunProbe({});
  EXPECT_EQ(r["uid"], "12345,12345,12345");
  EXPECT_EQ(ReadFileOr(victim), "host file");
}

TEST_F(JailTest, RefusesAPlantedDevSymlink) {
  std::string outside = base_ + "/outside";
  ASSERT_EQ(mkdir(outside.c_str(), 0755), 0);
  ASSERT_EQ(system(("mkdir -p " + ChrootDir()).c_str()), 0);
  ASSERT_EQ(symlink(outside.c_str(), (ChrootDir() + "/dev").c_str()), 0);
  Jailer jailer(Args({}), {});
  EXPECT_EQ(jailer.Wait(), 1);
  EXPECT_THAT(jailer.err(), HasSubstr("/dev in the jail is not a directory"));
  EXPECT_EQ(rmdir(outside.c_str()), 0) << "the jailer created something outside the jail";
}

TEST_F(JailTest, DynamicallyLinkedExecFailsWithAClearError) {
  Jailer jailer(Args({}, {}, "/bin/true"), {});
  EXPECT_EQ(jailer.Wait(), 1);
  EXPECT_THAT(jailer.err(), HasSubstr("dynamically linked"));
  EXPECT_THAT(jailer.err(), HasSubstr("execve /true failed"));
}

// --- inherited state ------------------------------------------------------------------------

TEST_F(JailTest, ClosesInheritedFdsButKeepsThePassedOne) {
  int pipe_fds[2];
  ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
  ASSERT_EQ(dup3(pipe_fds[0], 40, O_CLOEXEC), 40);  // the control socket stand-in
  ASSERT_EQ(dup3(pipe_fds[1], 41, O_CLOEXEC), 41);  // a leak the jailer must close
  Jailer::Options options;
  options.inherit_fds = {40, 41};
  Report r = RunProbe({"--pass-fd", "40"}, {}, options);
  EXPECT_EQ(r["fds"], "0,1,2,40");
  for (int fd : {pipe_fds[0], pipe_fds[1], 40, 41}) close(fd);
}

TEST_F(JailTest, UnderNewPidNsOnlyTheVmmHoldsThePassedFd) {
  int pipe_fds[2];
  ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
  ASSERT_EQ(dup3(pipe_fds[0], 40, O_CLOEXEC), 40);
  Jailer::Options options;
  options.inherit_fds = {40};
  Jailer jailer(Args({"--new-pid-ns", "--pass-fd", "40"}, {"--wait"}), options);
  Report r = ParseReport(jailer.ReadUntilReady());
  ASSERT_EQ(r["end"], "1") << jailer.err();
  EXPECT_EQ(r["fds"], "0,1,2,40");
  std::string vmm_pid = ReadFileOr(ChrootDir() + "/jail_probe.pid");
  ASSERT_FALSE(vmm_pid.empty());
  vmm_pid.pop_back();
  struct stat st {};
  EXPECT_EQ(stat(("/proc/" + vmm_pid + "/fd/40").c_str(), &st), 0);
  EXPECT_NE(stat(("/proc/" + std::to_string(jailer.pid()) + "/fd/40").c_str(), &st), 0)
      << "the waiting jailer parent still holds the passed fd";
  EXPECT_EQ(jailer.Wait(), 0) << jailer.err();
  for (int fd : {pipe_fds[0], pipe_fds[1], 40}) close(fd);
}

TEST_F(JailTest, ClosesEveryInheritedFdWithoutPassFd) {
  int fd = dup3(2, 50, O_CLOEXEC);
  ASSERT_EQ(fd, 50);
  Jailer::Options options;
  options.inherit_fds = {50};
  Report r = RunProbe({}, {}, options);
  EXPECT_EQ(r["fds"], "0,1,2");
  close(fd);
}

TEST_F(JailTest, ClearsTheEnvironment) {
  Report r = RunProbe({});
  EXPECT_EQ(r["env_count"], "0");
}

TEST_F(JailTest, PassesVmmArgumentsVerbatim) {
  Report r = RunProbe({}, {"--config", "a b.json", "--", "--id"});
  EXPECT_EQ(r["argc"], "5");
  EXPECT_EQ(r["arg0"], "jail_probe");
  EXPECT_EQ(r["arg1"], "--config");
  EXPECT_EQ(r["arg2"], "a b.json");
  EXPECT_EQ(r["arg3"], "--");
  EXPECT_EQ(r["arg4"], "--id");
}

// --- limits ----------------------------------------------------------------------------------

TEST_F(JailTest, AppliesResourceLimits) {
  Report r = RunProbe({"--resource-limit", "fsize=4096", "--resource-limit", "no-file=64"},
                      {"--write-bytes", "8192"});
  EXPECT_EQ(r["rlimit_fsize"], "4096,4096");
  EXPECT_EQ(r["rlimit_nofile"], "64,64");
  EXPECT_EQ(r["write_result"], "short:4096");
}

TEST_F(JailTest, DefaultsNoFileLimitTo2048) {
  Report r = RunProbe({});
  EXPECT_EQ(r["rlimit_nofile"], "2048,2048");
}

// --- namespaces ------------------------------------------------------------------------------

TEST_F(JailTest, RunsInItsOwnMountNamespaceOnly) {
  Jailer jailer(Args({}, {"--wait"}), {});
  Report r = ParseReport(jailer.ReadUntilReady());
  ASSERT_EQ(r["end"], "1") << jailer.err();
  std::string pid = std::to_string(jailer.pid());  // no fork: the jailer became the probe
  EXPECT_NE(NsLink(pid, "mnt"), NsLink("self", "mnt"));
  EXPECT_EQ(NsLink(pid, "pid"), NsLink("self", "pid"));
  EXPECT_EQ(NsLink(pid, "net"), NsLink("self", "net"));
  EXPECT_EQ(r["pid"], pid);
  EXPECT_EQ(jailer.Wait(), 0) << jailer.err();
}

TEST_F(JailTest, NewPidNsRunsTheBinaryAsPidOneAndMirrorsItsExitCode) {
  Jailer jailer(Args({"--new-pid-ns"}, {"--wait", "--exit", "7"}), {});
  Report r = ParseReport(jailer.ReadUntilReady());
  ASSERT_EQ(r["end"], "1") << jailer.err();
  EXPECT_EQ(r["pid"], "1");
  // The foreground parent writes the pid file after the fork, as the child runs.
  std::string host_pid;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((host_pid = ReadFileOr(ChrootDir() + "/jail_probe.pid")).empty() &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_FALSE(host_pid.empty());
  host_pid.pop_back();  // newline
  EXPECT_NE(host_pid, std::to_string(jailer.pid()));
  EXPECT_NE(NsLink(host_pid, "pid"), NsLink("self", "pid"));
  EXPECT_NE(NsLink(host_pid, "mnt"), NsLink("self", "mnt"));
  // The foreground parent waits for its child, unprivileged.
  std::string parent_status = ReadFileOr("/proc/" + std::to_string(jailer.pid()) + "/status");
  EXPECT_THAT(parent_status, HasSubstr("CapEff:\t0000000000000000"));
  EXPECT_EQ(jailer.Wait(), 7) << jailer.err();
}

TEST_F(JailTest, NewPidNsForegroundParentForwardsSigterm) {
  Jailer jailer(Args({"--new-pid-ns"}, {"--term-handler", "--wait"}), {});
  ASSERT_EQ(ParseReport(jailer.ReadUntilReady())["end"], "1") << jailer.err();
  ASSERT_EQ(kill(jailer.pid(), SIGTERM), 0);
  // The probe leaves with 99 from its handler and the parent mirrors that; 143 would mean the
  // parent itself died of the signal.
  EXPECT_EQ(jailer.WaitWithStdinOpen(std::chrono::seconds(10)), 99) << jailer.err();
}

TEST_F(JailTest, JoinsTheGivenNetworkNamespace) {
  std::string netns = MakeNetns();
  struct stat st {};
  ASSERT_EQ(stat(netns.c_str(), &st), 0);
  Jailer jailer(Args({"--netns", netns}, {"--wait"}), {});
  ASSERT_EQ(ParseReport(jailer.ReadUntilReady())["end"], "1") << jailer.err();
  std::string pid = std::to_string(jailer.pid());
  EXPECT_EQ(NsLink(pid, "net"), "net:[" + std::to_string(st.st_ino) + "]");
  EXPECT_NE(NsLink(pid, "net"), NsLink("self", "net"));
  EXPECT_EQ(jailer.Wait(), 0) << jailer.err();
}

TEST_F(JailTest, MissingNetnsFailsWithExitCodeOne) {
  Jailer jailer(Args({"--netns", base_ + "/no-such-netns"}), {});
  EXPECT_EQ(jailer.Wait(), 1);
  EXPECT_THAT(jailer.err(), HasSubstr("open network namespace"));
}

// --- daemonize -------------------------------------------------------------------------------

TEST_F(JailTest, DaemonizeDetachesAndReportsThePid) {
  Jailer jailer(Args({"--daemonize"}, {"--out", "/out/report"}), {});
  ASSERT_EQ(jailer.Wait(), 0) << jailer.err();
  std::string report_path = ChrootDir() + "/out/report";
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (access(report_path.c_str(), F_OK) != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  Report r = ParseReport(ReadFileOr(report_path));
  ASSERT_EQ(r["end"], "1");
  std::string pid_file = ReadFileOr(ChrootDir() + "/jail_probe.pid");
  EXPECT_EQ(pid_file, r["pid"] + "\n");
  EXPECT_EQ(r["sid"], r["pid"]);
  EXPECT_EQ(r["stdin"], "chr:1:3");
  EXPECT_EQ(r["stdout"], "chr:1:3");
  EXPECT_EQ(r["stderr"], "chr:1:3");
  EXPECT_EQ(r["uid"], "12345,12345,12345");
  // Let the daemon finish before TearDown removes its jail.
  std::string stat_path = "/proc/" + r["pid"] + "/stat";
  auto running = [&] {
    std::string stat = ReadFileOr(stat_path);
    size_t paren = stat.rfind(')');
    return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] != 'Z';
  };
  while (running() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// --- cgroups ---------------------------------------------------------------------------------

class JailCgroupTest : public JailTest {
 protected:
  // Parent cgroup path (relative to the hierarchy) nested under this test's own cgroup, so the
  // probe never leaves the cgroup the test runs in.
  std::string ParentUnder(const std::string& own) {
    std::string parent = own + "/ember-jailer-test-" + std::to_string(getpid());
    while (!parent.empty() && parent[0] == '/') parent.erase(0, 1);
    return parent;
  }
  void RecordForCleanup(const std::string& hierarchy, const std::string& parent) {
    cgroup_dirs_.push_back(hierarchy + "/" + parent);
    cgroup_dirs_.push_back(hierarchy + "/" + parent + "/" + id_);
  }
  std::vector<MountInfoEntry> Mounts() {
    return ParseMountInfo(ReadFileOr("/proc/self/mountinfo"));
  }
};

TEST_F(JailCgroupTest, V1PidsLimitStopsForks) {
  auto mount = FindCgroup1Mount(Mounts(), "pids");
  if (!mount.ok()) GTEST_SKIP() << "no cgroup v1 pids hierarchy here: " << mount.status();
  std::string parent = ParentUnder(OwnV1Cgroup("pids"));
  RecordForCleanup(*mount, parent);
  Jailer jailer(Args({"--cgroup-version", "1", "--cgroup", "pids.max=3", "--parent-cgroup", parent},
                     {"--fork", "5", "--wait"}),
                {});
  Report r = ParseReport(jailer.ReadUntilReady());
  ASSERT_EQ(r["end"], "1") << jailer.err();
  // The probe itself is one of the three.
  EXPECT_EQ(r["forks_ok"], "2");
  EXPECT_EQ(r["fork_error"], "EAGAIN");
  std::string leaf = *mount + "/" + parent + "/" + id_;
  EXPECT_EQ(ReadFileOr(leaf + "/pids.max"), "3\n");
  EXPECT_THAT(ReadFileOr("/proc/" + std::to_string(jailer.pid()) + "/cgroup"),
              HasSubstr(":pids:/" + parent + "/" + id_ + "\n"));
  EXPECT_EQ(jailer.Wait(), 0) << jailer.err();
}

TEST_F(JailCgroupTest, V1MemoryLimitIsSetOnTheJailCgroup) {
  auto mount = FindCgroup1Mount(Mounts(), "memory");
  if (!mount.ok()) GTEST_SKIP() << "no cgroup v1 memory hierarchy here: " << mount.status();
  std::string parent = ParentUnder(OwnV1Cgroup("memory"));
  RecordForCleanup(*mount, parent);
  Jailer jailer(Args({"--cgroup-version", "1", "--cgroup", "memory.limit_in_bytes=67108864",
                      "--parent-cgroup", parent},
                     {"--wait"}),
                {});
  ASSERT_EQ(ParseReport(jailer.ReadUntilReady())["end"], "1") << jailer.err();
  std::string leaf = *mount + "/" + parent + "/" + id_;
  EXPECT_EQ(ReadFileOr(leaf + "/memory.limit_in_bytes"), "67108864\n");
  EXPECT_THAT(ReadFileOr("/proc/" + std::to_string(jailer.pid()) + "/cgroup"),
              HasSubstr(":memory:/" + parent + "/" + id_ + "\n"));
  EXPECT_EQ(jailer.Wait(), 0) << jailer.err();
}

TEST_F(JailCgroupTest, V2PlacesTheBinaryInItsCgroup) {
  auto mount = FindCgroup2Mount(Mounts());
  if (!mount.ok()) GTEST_SKIP() << "no cgroup v2 hierarchy here: " << mount.status();
  std::string parent = "ember-jailer-test-" + std::to_string(getpid());
  RecordForCleanup(*mount, parent);
  Jailer jailer(Args({"--cgroup-version", "2", "--cgroup", "cgroup.max.descendants=0",
                      "--parent-cgroup", parent},
                     {"--wait"}),
                {});
  ASSERT_EQ(ParseReport(jailer.ReadUntilReady())["end"], "1") << jailer.err();
  std::string leaf = *mount + "/" + parent + "/" + id_;
  EXPECT_EQ(ReadFileOr(leaf + "/cgroup.max.descendants"), "0\n");
  EXPECT_THAT(ReadFileOr(leaf + "/cgroup.procs"), HasSubstr(std::to_string(jailer.pid())));
  EXPECT_EQ(jailer.Wait(), 0) << jailer.err();
}

// The v2 path with a real controller: this host's v2 hierarchy carries only hugetlb (memory,
// pids and cpu are bound to v1 hierarchies, and the kernel gives a controller to one hierarchy
// at a time), so hugetlb stands in for them: enabled in every ancestor's subtree_control from
// the root down, its limit written in the jail's own cgroup, the binary placed there.
TEST_F(JailCgroupTest, V2EnablesItsControllerOnTheWayDownAndWritesTheLimit) {
  auto mount = FindCgroup2Mount(Mounts());
  if (!mount.ok()) GTEST_SKIP() << "no cgroup v2 hierarchy here: " << mount.status();
  if (ReadFileOr(*mount + "/cgroup.controllers").find("hugetlb") == std::string::npos) {
    GTEST_SKIP() << "the hugetlb controller is not on the v2 hierarchy " << *mount << " here";
  }
  std::string parent = "ember-jailer-test-" + std::to_string(getpid());
  RecordForCleanup(*mount, parent);
  Jailer jailer(Args({"--cgroup-version", "2", "--cgroup", "hugetlb.2MB.max=0",
                      "--parent-cgroup", parent},
                     {"--wait"}),
                {});
  if (ParseReport(jailer.ReadUntilReady())["end"] != "1") {
    const int status = jailer.Wait();
    FAIL() << "the jailer ended (" << status << "): " << jailer.err();
  }
  EXPECT_THAT(ReadFileOr(*mount + "/cgroup.subtree_control"), HasSubstr("hugetlb"));
  EXPECT_THAT(ReadFileOr(*mount + "/" + parent + "/cgroup.subtree_control"), HasSubstr("hugetlb"));
  std::string leaf = *mount + "/" + parent + "/" + id_;
  EXPECT_EQ(ReadFileOr(leaf + "/hugetlb.2MB.max"), "0\n");
  EXPECT_THAT(ReadFileOr("/proc/" + std::to_string(jailer.pid()) + "/cgroup"),
              HasSubstr("0::/" + parent + "/" + id_ + "\n"));
  EXPECT_EQ(jailer.Wait(), 0) << jailer.err();
}

TEST_F(JailCgroupTest, V2PidsLimitStopsForks) {
  auto mount = FindCgroup2Mount(Mounts());
  if (!mount.ok()) GTEST_SKIP() << "no cgroup v2 hierarchy here: " << mount.status();
  if (ReadFileOr(*mount + "/cgroup.controllers").find("pids") == std::string::npos) {
    GTEST_SKIP() << "the pids controller is not on the v2 hierarchy " << *mount
                 << " here (it is bound to v1)";
  }
  std::string parent = "ember-jailer-test-" + std::to_string(getpid());
  RecordForCleanup(*mount, parent);
  Jailer jailer(Args({"--cgroup-version", "2", "--cgroup", "pids.max=3", "--cgroup",
                      "memory.max=268435456", "--parent-cgroup", parent},
                     {"--fork", "5"}),
                {});
  ASSERT_EQ(jailer.Wait(), 0) << jailer.err();
  Report r = ParseReport(jailer.out());
  EXPECT_EQ(r["forks_ok"], "2");
  EXPECT_EQ(ReadFileOr(*mount + "/" + parent + "/" + id_ + "/memory.max"), "268435456\n");
}

TEST_F(JailCgroupTest, V2ControllerMissingFromTheHierarchyIsAClearError) {
  auto mount = FindCgroup2Mount(Mounts());
  if (!mount.ok()) GTEST_SKIP() << "no cgroup v2 hierarchy here: " << mount.status();
  if (ReadFileOr(*mount + "/cgroup.controllers").find("memory") != std::string::npos) {
    GTEST_SKIP() << "memory is available on v2 here; nothing to refuse";
  }
  std::string parent = "ember-jailer-test-" + std::to_string(getpid());
  RecordForCleanup(*mount, parent);
  Jailer jailer(Args({"--cgroup", "memory.max=1000000", "--parent-cgroup", parent}), {});
  EXPECT_EQ(jailer.Wait(), 1);
  EXPECT_THAT(jailer.err(), HasSubstr("controller \"memory\" is not available"));
}

}  // namespace
}  // namespace ember::jailer
