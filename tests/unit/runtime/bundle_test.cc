// LoadBundle / LoadProcess: OCI config.json as containerd and podman write it, and each kind of
// bad input refused naming the field.
#include "vmm/runtime/bundle.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <utility>

#include "tests/support/files.h"

namespace ember::runtime {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

// Shaped like the config.json containerd's `ctr run` writes (trimmed): fields ember-runtime
// does not read (seccomp, masked paths, cgroups) are there to be skipped.
constexpr char kContainerdConfig[] = R"json({
  "ociVersion": "1.1.0",
  "process": {
    "user": {"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 18},
    "args": ["echo", "hello"],
    "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
    "cwd": "/work",
    "terminal": true,
    "consoleSize": {"height": 24, "width": 80},
    "capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"]},
    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512}],
    "noNewPrivileges": true,
    "apparmorProfile": "cri-containerd.apparmor.d"
  },
  "root": {"path": "rootfs", "readonly": true},
  "hostname": "box",
  "mounts": [{"destination": "/proc", "type": "proc", "source": "proc",
              "options": ["nosuid", "noexec", "nodev"]}],
  "hooks": {"createRuntime": [{"path": "/bin/true"}]},
  "annotations": {"io.kubernetes.cri.container-type": "container"},
  "linux": {
    "resources": {"devices": [{"allow": false, "access": "rwm"}],
                  "memory": {"limit": 268435456, "swap": 268435456},
                  "cpu": {"shares": 1024, "quota": 150000, "period": 100000}},
    "cgroupsPath": "/default/c1",
    "namespaces": [{"type": "pid"}, {"type": "ipc"},
                   {"type": "network", "path": "/var/run/netns/cni-1234"}, {"type": "mount"}],
    "maskedPaths": ["/proc/kcore"],
    "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}
  }
})json";

// The smallest config.json the runtime accepts, with `process` and `extra` (top-level
// members, comma-led) spliced in.
std::string MinimalConfig(const std::string& process = R"({"args": ["sh"], "cwd": "/"})",
                          const std::string& extra = "") {
  return R"({"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": )" + process + extra +
         "}";
}

class BundleTest : public ::testing::Test {
 protected:
  BundleTest() : dir_("bundle-test") { std::filesystem::create_directory(bundle() / "rootfs"); }
  std::filesystem::path bundle() const { return dir_.path(); }
  void WriteConfig(const std::string& json) const {
    std::ofstream(bundle() / "config.json") << json;
  }
  absl::StatusOr<Bundle> LoadWith(const std::string& json) const {
    WriteConfig(json);
    return LoadBundle(bundle());
  }
  // The error LoadBundle gives for `json`; fails the test when it loads.
  std::string ErrorFor(const std::string& json) const {
    auto loaded = LoadWith(json);
    EXPECT_FALSE(loaded.ok()) << json;
    return loaded.ok() ? "" : std::string(loaded.status().message());
  }

 private:
  testing::ScopedTempDir dir_;
};

TEST_F(BundleTest, ContainerdConfigLoadsEveryFieldTheVmNeeds) {
  auto loaded = LoadWith(kContainerdConfig);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Bundle& b = *loaded;
  EXPECT_EQ(b.rootfs, bundle() / "rootfs");
  EXPECT_TRUE(b.rootfs_readonly);
  EXPECT_THAT(b.process.args, ElementsAre("echo", "hello"));
  EXPECT_EQ(b.process.env.size(), 2u);
  EXPECT_EQ(b.process.cwd, "/work");
  EXPECT_EQ(b.process.uid, 1000u);
  EXPECT_EQ(b.process.gid, 1000u);
  EXPECT_THAT(b.process.additional_gids, ElementsAre(10u, 20u));
  EXPECT_TRUE(b.process.terminal);
  EXPECT_EQ(b.process.console_height, 24u);
  EXPECT_EQ(b.process.console_width, 80u);
  EXPECT_TRUE(b.process.no_new_privileges);
  ASSERT_EQ(b.process.rlimits.size(), 1u);
  EXPECT_EQ(b.process.rlimits[0].resource, RLIMIT_NOFILE);
  EXPECT_EQ(b.process.rlimits[0].soft, 512u);
  EXPECT_EQ(b.process.rlimits[0].hard, 1024u);
  ASSERT_TRUE(b.process.capabilities.has_value());
  EXPECT_THAT(b.process.capabilities->bounding, ElementsAre("CAP_CHOWN"));
  EXPECT_THAT(b.process.capabilities->effective, ElementsAre("CAP_CHOWN"));
  EXPECT_TRUE(b.process.capabilities->ambient.empty());
  EXPECT_EQ(b.hostname, "box");
  EXPECT_EQ(b.vcpus, 2u);                             // quota 1.5 periods, rounded up
  EXPECT_EQ(b.memory_mib, 256u + kGuestOverheadMib);  // the limit plus the guest's own
  EXPECT_EQ(b.network_namespace, "/var/run/netns/cni-1234");
  EXPECT_TRUE(b.kernel.empty());
  EXPECT_EQ(b.annotations.at("io.kubernetes.cri.container-type"), "container");
}

TEST_F(BundleTest, WithoutCapabilitiesTheProcessHasNone) {
  auto loaded = LoadWith(MinimalConfig());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_FALSE(loaded->process.capabilities.has_value());
}

TEST_F(BundleTest, WithoutLimitsTheVmGetsTheDefaults) {
  auto loaded = LoadWith(MinimalConfig());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->vcpus, kDefaultVcpus);
  EXPECT_EQ(loaded->memory_mib, kDefaultMemoryMib);
  EXPECT_FALSE(loaded->rootfs_readonly);
  EXPECT_TRUE(loaded->network_namespace.empty());
}

TEST_F(BundleTest, AbsoluteRootPathIsTakenAsIs) {
  std::string root = (bundle() / "rootfs").string();
  auto loaded = LoadWith(R"({"ociVersion": "1.0.0", "root": {"path": ")" + root +
                         R"("}, "process": {"args": ["sh"], "cwd": "/"}})");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->rootfs, root);
}

TEST_F(BundleTest, EmberAnnotationsSetKernelBootArgsVcpusAndMemory) {
  std::string kernel = (bundle() / "vmlinux").string();
  std::ofstream(kernel) << "not really a kernel";
  auto loaded =
      LoadWith(MinimalConfig(R"({"args": ["sh"], "cwd": "/"})",
                             R"(, "annotations": {"io.ember.kernel": ")" + kernel +
                                 R"(", "io.ember.boot-args": "console=ttyS0 ember.test=agent",
                                           "io.ember.vcpus": "3", "io.ember.memory": "1Gi"},
                                           "linux": {"resources": {"memory": {"limit": 1048576}}})"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->kernel, kernel);
  EXPECT_EQ(loaded->boot_args, "console=ttyS0 ember.test=agent");
  EXPECT_EQ(loaded->vcpus, 3u);
  EXPECT_EQ(loaded->memory_mib, 1024u);  // the annotation is the VM's whole memory
}

TEST_F(BundleTest, CpusetCountsAsVcpus) {
  auto loaded = LoadWith(MinimalConfig(R"({"args": ["sh"], "cwd": "/"})",
                                       R"(, "linux": {"resources": {"cpu": {"cpus": "0-2,7"}}})"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->vcpus, 4u);
}

TEST_F(BundleTest, NewNetworkNamespaceWithoutPathMeansNoNetwork) {
  auto loaded = LoadWith(MinimalConfig(R"({"args": ["sh"], "cwd": "/"})",
                                       R"(, "linux": {"namespaces": [{"type": "network"}]})"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(loaded->network_namespace.empty());
}

TEST_F(BundleTest, MissingConfigIsNotFound) {
  auto loaded = LoadBundle(bundle());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("config.json"));
}

TEST_F(BundleTest, ConfigThatDoesNotParseNamesTheFile) {
  std::string error = ErrorFor(R"({"ociVersion": "1.0.0", "process": )");
  EXPECT_THAT(error, HasSubstr((bundle() / "config.json").string()));
  EXPECT_THAT(error, HasSubstr("does not parse"));
}

TEST_F(BundleTest, WrongTypeForAKnownFieldIsRefused) {
  EXPECT_THAT(ErrorFor(MinimalConfig(R"({"args": ["id"], "cwd": "/", "user": {"uid": "root"}})")),
              HasSubstr("process.user.uid"));
}

TEST_F(BundleTest, MissingOciVersionIsRefused) {
  EXPECT_THAT(ErrorFor(R"({"root": {"path": "rootfs"}, "process": {"args": ["sh"], "cwd": "/"}})"),
              HasSubstr("ociVersion: missing"));
}

TEST_F(BundleTest, OtherMajorOciVersionIsRefused) {
  EXPECT_THAT(ErrorFor(R"({"ociVersion": "2.0.0", "root": {"path": "rootfs"},
                           "process": {"args": ["sh"], "cwd": "/"}})"),
              HasSubstr("ociVersion: \"2.0.0\""));
}

TEST_F(BundleTest, MissingProcessIsRefused) {
  EXPECT_THAT(ErrorFor(R"({"ociVersion": "1.0.0", "root": {"path": "rootfs"}})"),
              HasSubstr("process: missing"));
}

TEST_F(BundleTest, EmptyArgsAreRefused) {
  EXPECT_THAT(ErrorFor(MinimalConfig(R"({"args": [], "cwd": "/"})")),
              HasSubstr("process.args: empty"));
}

TEST_F(BundleTest, MissingOrRelativeCwdIsRefused) {
  EXPECT_THAT(ErrorFor(MinimalConfig(R"({"args": ["sh"]})")), HasSubstr("process.cwd: missing"));
  EXPECT_THAT(ErrorFor(MinimalConfig(R"({"args": ["sh"], "cwd": "work"})")),
              HasSubstr("process.cwd: \"work\" is not absolute"));
}

TEST_F(BundleTest, EnvEntryWithoutEqualsIsRefused) {
  EXPECT_THAT(ErrorFor(MinimalConfig(R"({"args": ["sh"], "cwd": "/", "env": ["A=1", "B"]})")),
              HasSubstr("process.env[1]"));
}

TEST_F(BundleTest, MissingRootIsRefused) {
  EXPECT_THAT(ErrorFor(R"({"ociVersion": "1.0.0", "process": {"args": ["sh"], "cwd": "/"}})"),
              HasSubstr("root: missing"));
}

TEST_F(BundleTest, RootfsThatIsNotADirectoryIsNotFound) {
  std::filesystem::remove(bundle() / "rootfs");
  auto loaded = LoadWith(MinimalConfig());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("root.path: no directory at"));
}

TEST_F(BundleTest, UnknownRlimitIsRefused) {
  EXPECT_THAT(ErrorFor(MinimalConfig(R"({"args": ["sh"], "cwd": "/",
      "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 2},
                  {"type": "RLIMIT_BANANAS", "soft": 1, "hard": 2}]})")),
              HasSubstr("process.rlimits[1].type: unknown resource limit \"RLIMIT_BANANAS\""));
}

TEST_F(BundleTest, RlimitSoftAboveHardIsRefused) {
  EXPECT_THAT(ErrorFor(MinimalConfig(R"({"args": ["sh"], "cwd": "/",
      "rlimits": [{"type": "RLIMIT_CORE", "soft": 10, "hard": 2}]})")),
              HasSubstr("process.rlimits[0]: soft limit 10 is above the hard limit 2"));
}

TEST_F(BundleTest, DuplicateRlimitIsRefused) {
  EXPECT_THAT(ErrorFor(MinimalConfig(R"({"args": ["sh"], "cwd": "/",
      "rlimits": [{"type": "RLIMIT_CORE", "soft": 1, "hard": 2},
                  {"type": "RLIMIT_CORE", "soft": 1, "hard": 2}]})")),
              HasSubstr("RLIMIT_CORE given twice"));
}

TEST_F(BundleTest, UnknownMemoryUnitIsRefused) {
  EXPECT_THAT(ErrorFor(MinimalConfig(R"({"args": ["sh"], "cwd": "/"})",
                                     R"(, "annotations": {"io.ember.memory": "512MB"})")),
              HasSubstr("annotations[\"io.ember.memory\"]: unknown memory unit \"MB\""));
}

TEST_F(BundleTest, MemoryOutsideTheVmBoundsIsRefused) {
  EXPECT_THAT(ErrorFor(MinimalConfig(R"({"args": ["sh"], "cwd": "/"})",
                                     R"(, "annotations": {"io.ember.memory": "8Mi"})")),
              HasSubstr("8 MiB: a VM has 16 MiB to"));
}

TEST_F(BundleTest, TooManyVcpusAreRefusedNamingTheField) {
  EXPECT_THAT(ErrorFor(MinimalConfig(
                  R"({"args": ["sh"], "cwd": "/"})",
                  R"(, "linux": {"resources": {"cpu": {"quota": 6400000, "period": 100000}}})")),
              HasSubstr("linux.resources.cpu.quota: 64 vCPUs: a VM has 1 to 32"));
  EXPECT_THAT(ErrorFor(MinimalConfig(R"({"args": ["sh"], "cwd": "/"})",
                                     R"(, "annotations": {"io.ember.vcpus": "0"})")),
              HasSubstr("annotations[\"io.ember.vcpus\"]: 0 vCPUs"));
}

TEST_F(BundleTest, MalformedCpusetIsRefused) {
  EXPECT_THAT(ErrorFor(MinimalConfig(R"({"args": ["sh"], "cwd": "/"})",
                                     R"(, "linux": {"resources": {"cpu": {"cpus": "3-1"}}})")),
              HasSubstr("linux.resources.cpu.cpus: \"3-1\" is not a CPU list"));
}

TEST_F(BundleTest, MisspelledEmberAnnotationIsRefused) {
  EXPECT_THAT(ErrorFor(MinimalConfig(R"({"args": ["sh"], "cwd": "/"})",
                                     R"(, "annotations": {"io.ember.vpcus": "2"})")),
              HasSubstr("annotations[\"io.ember.vpcus\"]: unknown Ember annotation"));
}

TEST_F(BundleTest, KernelAnnotationMustNameAnExistingAbsoluteFile) {
  EXPECT_THAT(ErrorFor(MinimalConfig(R"({"args": ["sh"], "cwd": "/"})",
                                     R"(, "annotations": {"io.ember.kernel": "vmlinux"})")),
              HasSubstr("is not an absolute path"));
  EXPECT_THAT(
      ErrorFor(MinimalConfig(R"({"args": ["sh"], "cwd": "/"})",
                             R"(, "annotations": {"io.ember.kernel": "/nonexistent/vmlinux"})")),
      HasSubstr("no kernel file at /nonexistent/vmlinux"));
}

TEST_F(BundleTest, RelativeNetworkNamespacePathIsRefused) {
  EXPECT_THAT(ErrorFor(MinimalConfig(
                  R"({"args": ["sh"], "cwd": "/"})",
                  R"(, "linux": {"namespaces": [{"type": "network", "path": "netns/x"}]})")),
              HasSubstr("linux.namespaces[0].path"));
}

TEST_F(BundleTest, ExecProcessFileLoadsAlone) {
  std::string path = (bundle() / "process.json").string();
  std::ofstream(path) << R"({"args": ["cat"], "cwd": "/", "env": ["A=1"], "user": {"uid": 5},
                            "terminal": false, "capabilities": {}})";
  auto process = LoadProcess(path);
  ASSERT_TRUE(process.ok()) << process.status();
  EXPECT_THAT(process->args, ElementsAre("cat"));
  EXPECT_EQ(process->uid, 5u);
}

TEST_F(BundleTest, ExecProcessFileIsCheckedLikeConfigs) {
  std::string path = (bundle() / "process.json").string();
  std::ofstream(path) << R"({"args": [], "cwd": "/"})";
  auto process = LoadProcess(path);
  ASSERT_FALSE(process.ok());
  EXPECT_THAT(std::string(process.status().message()), HasSubstr(path + ": args: empty"));
  EXPECT_EQ(LoadProcess(bundle() / "missing.json").status().code(), absl::StatusCode::kNotFound);
}

// config.json with `mounts` (a JSON array) and the minimal rest.
std::string WithMounts(const std::string& mounts) {
  return MinimalConfig(R"({"args": ["sh"], "cwd": "/"})", R"(, "mounts": )" + mounts);
}

TEST_F(BundleTest, KernelFileSystemsAtTheirPlacesAreTheGuestsOwn) {
  auto loaded = LoadWith(WithMounts(R"([
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts"},
    {"destination": "/dev/shm", "type": "bind", "source": "/nonexistent/shm", "options": ["rbind"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs"},
    {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"}])"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(loaded->files.empty());
}

TEST_F(BundleTest, BindMountedFilesAndReadOnlyDirectoriesAreCopiedIn) {
  std::filesystem::path hosts = bundle() / "hosts";
  std::ofstream(hosts) << "127.0.0.1 box\n";
  ::chmod(hosts.c_str(), 0640);
  // A Kubernetes secret: files linked through ..data, which is not copied itself.
  std::filesystem::path secret = bundle() / "secret";
  std::filesystem::create_directories(secret / "..2024_01" );
  std::ofstream(secret / "..2024_01" / "token") << "t0k3n";
  std::filesystem::create_directory_symlink("..2024_01", secret / "..data");
  std::filesystem::create_symlink("..data/token", secret / "token");
  auto loaded = LoadWith(WithMounts(R"([
    {"destination": "/etc/hosts", "type": "bind", "source": ")" + hosts.string() +
                                    R"(", "options": ["rbind", "rprivate"]},
    {"destination": "/var/run/secrets/sa", "type": "bind", "source": ")" + secret.string() +
                                    R"(", "options": ["rbind", "ro"]}])"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->files.size(), 2u) << (loaded->files.empty() ? "" : loaded->files.back().path);
  EXPECT_EQ(loaded->files[0].path, "/etc/hosts");
  EXPECT_EQ(loaded->files[0].contents, "127.0.0.1 box\n");
  EXPECT_EQ(loaded->files[0].mode, 0640u);
  EXPECT_EQ(loaded->files[1].path, "/var/run/secrets/sa/token");
  EXPECT_EQ(loaded->files[1].contents, "t0k3n");
}

TEST_F(BundleTest, AWritableDirectoryBindIsRefusedNamingIt) {
  std::filesystem::create_directory(bundle() / "volume");
  std::string error = ErrorFor(WithMounts(R"([{"destination": "/data", "type": "bind", "source": ")" +
                                          (bundle() / "volume").string() +
                                          R"(", "options": ["rbind"]}])"));
  EXPECT_THAT(error, HasSubstr("mounts[0]"));
  EXPECT_THAT(error, HasSubstr("writable directory"));
}

TEST_F(BundleTest, OtherMountTypesAreRefusedNamingThem) {
  std::string error = ErrorFor(
      WithMounts(R"([{"destination": "/data", "type": "nfs", "source": "server:/export"}])"));
  EXPECT_THAT(error, HasSubstr("mounts[0]"));
  EXPECT_THAT(error, HasSubstr("nfs mount at /data"));
}

TEST_F(BundleTest, BindMountedFilesBeyondWhatAVmIsGivenAreRefused) {
  std::filesystem::path big = bundle() / "big";
  std::ofstream(big) << std::string(kMaxCopiedBytes + 1, 'x');
  std::string error = ErrorFor(WithMounts(R"([{"destination": "/big", "type": "bind", "source": ")" +
                                          big.string() + R"(", "options": ["rbind", "ro"]}])"));
  EXPECT_THAT(error, HasSubstr("exceed"));
}

// A read-only directory bind whose source a tenant controls (a volume, an NFS share): the
// runtime reads it as root, so a link must not carry it to the host's files.
class ReadOnlyDirectoryTest : public BundleTest {
 protected:
  ReadOnlyDirectoryTest() {
    std::ofstream(outside()) << "host secret";
    std::filesystem::create_directory(volume());
  }
  std::filesystem::path outside() const { return bundle() / "outside"; }
  std::filesystem::path volume() const { return bundle() / "volume"; }
  absl::StatusOr<Bundle> LoadVolume() const {
    return LoadWith(WithMounts(R"([{"destination": "/data", "type": "bind", "source": ")" +
                               volume().string() + R"(", "options": ["rbind", "ro"]}])"));
  }
  // Fails the test if any copied file holds the host file's contents.
  static void ExpectNoHostContents(const absl::StatusOr<Bundle>& loaded) {
    if (!loaded.ok()) return;
    for (const BundleFile& file : loaded->files) {
      EXPECT_NE(file.contents, "host secret") << file.path << " is the host's file";
    }
  }
};

TEST_F(ReadOnlyDirectoryTest, AnAbsoluteSymlinkOutIsRefusedNamingTheMountAndTheEntry) {
  std::ofstream(volume() / "plain") << "mine";
  std::filesystem::create_symlink(outside(), volume() / "a");
  auto loaded = LoadVolume();
  ExpectNoHostContents(loaded);
  ASSERT_FALSE(loaded.ok()) << "a -> " << outside() << " was followed";
  EXPECT_THAT(loaded.status().message(), HasSubstr("mounts[0]"));
  EXPECT_THAT(loaded.status().message(), HasSubstr(volume().string() + "/a"));
  EXPECT_THAT(loaded.status().message(), HasSubstr("leads out"));
}

TEST_F(ReadOnlyDirectoryTest, ARelativeSymlinkUpAndOutIsRefused) {
  std::filesystem::create_directory(volume() / "sub");
  std::filesystem::create_symlink("../../outside", volume() / "sub" / "b");
  auto loaded = LoadVolume();
  ExpectNoHostContents(loaded);
  ASSERT_FALSE(loaded.ok()) << "sub/b -> ../../outside was followed";
  EXPECT_THAT(loaded.status().message(), HasSubstr(volume().string() + "/sub/b"));
  EXPECT_THAT(loaded.status().message(), HasSubstr("../../outside"));
}

TEST_F(ReadOnlyDirectoryTest, AKubernetesConfigMapTreeStillCopiesThroughItsInnerLinks) {
  // kubelet's atomic writer: ..data -> ..TIMESTAMP, each key -> ..data/key, all relative.
  std::filesystem::create_directories(volume() / "..2024_01_01_00_00_00.1" / "sub");
  std::ofstream(volume() / "..2024_01_01_00_00_00.1" / "app.conf") << "level=debug\n";
  std::ofstream(volume() / "..2024_01_01_00_00_00.1" / "sub" / "deep") << "deep";
  ::chmod((volume() / "..2024_01_01_00_00_00.1" / "app.conf").c_str(), 0600);
  std::filesystem::create_directory_symlink("..2024_01_01_00_00_00.1", volume() / "..data");
  std::filesystem::create_symlink("..data/app.conf", volume() / "app.conf");
  std::filesystem::create_directory_symlink("..data/sub", volume() / "sub");  // key "sub/deep"
  std::filesystem::create_directory(volume() / "dir");
  std::filesystem::create_symlink("../..data/sub/deep", volume() / "dir" / "deep");
  std::filesystem::create_directory_symlink("..", volume() / "dir" / "up");  // a loop: once
  ASSERT_EQ(::mkfifo((volume() / "fifo").c_str(), 0600), 0);
  std::filesystem::create_symlink("fifo", volume() / "to-fifo");
  std::filesystem::create_symlink("missing", volume() / "dangling");
  auto loaded = LoadVolume();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  std::map<std::string, std::pair<std::string, uint32_t>> copied;
  for (const BundleFile& file : loaded->files) copied[file.path] = {file.contents, file.mode};
  EXPECT_THAT(copied, ElementsAre(Pair("/data/app.conf", Pair("level=debug\n", 0600u)),
                                  Pair("/data/dir/deep", Pair("deep", 0644u)),
                                  Pair("/data/sub/deep", Pair("deep", 0644u))));
}

TEST_F(BundleTest, AFileThatReadsLongerThanItsSizeIsRefusedNotReadWithoutEnd) {
  // /proc files say 0 bytes and read more: what a file growing after its stat looks like.
  std::string error = ErrorFor(WithMounts(
      R"([{"destination": "/status", "type": "bind", "source": "/proc/self/status"}])"));
  EXPECT_THAT(error, HasSubstr("mounts[0]"));
  EXPECT_THAT(error, HasSubstr("grew"));
}

TEST(ParseMemoryMib, UnitsAreKubernetesQuantities) {
  EXPECT_EQ(*ParseMemoryMib("512Mi"), 512u);
  EXPECT_EQ(*ParseMemoryMib("2Gi"), 2048u);
  EXPECT_EQ(*ParseMemoryMib("1G"), 954u);     // 10^9 bytes, rounded up to MiB
  EXPECT_EQ(*ParseMemoryMib("1048577"), 2u);  // bytes
  EXPECT_EQ(*ParseMemoryMib("1024Ki"), 1u);
  EXPECT_FALSE(ParseMemoryMib("").ok());
  EXPECT_FALSE(ParseMemoryMib("Mi").ok());
  EXPECT_FALSE(ParseMemoryMib("-5Mi").ok());
  EXPECT_FALSE(ParseMemoryMib("99999999999999999999Ti").ok());
  EXPECT_THAT(std::string(ParseMemoryMib("5 Mi").status().message()),
              HasSubstr("unknown memory unit \" Mi\""));
}

}  // namespace
}  // namespace ember::runtime
