#include "vmm/emberd/startup.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "jailer/cgroup.h"
#include "vmm/base/logging.h"
#include "vmm/emberd/store.h"

namespace ember::emberd {
namespace {

// Where an operator keeps kernels, images and snapshots for API clients to name, unless
// --allow-dir says otherwise. emberd's state directory is not allowed by default: it holds
// the VMs' records and control sockets, which no drive or log path should reach.
constexpr char kDefaultAllowDir[] = "/srv/ember";

// The jailed ember-vmms' ids unless --jailer-id-base/--jailer-id-count say otherwise: far above
// the ranges distributions give to users and system accounts, and as many as a subuid block.
constexpr std::uint32_t kDefaultJailIdBase = 830000;
constexpr std::uint32_t kDefaultJailIdCount = 65536;

// The default --cgroup-parent: one per state directory, so that two emberds on one host never
// share a VM's cgroup (FNV-1a of the directory's path).
std::string DefaultCgroupParent(const std::string& state_dir) {
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  for (unsigned char c : state_dir) hash = (hash ^ c) * 0x100000001b3ULL;
  char text[32];
  std::snprintf(text, sizeof(text), "ember-%016llx", static_cast<unsigned long long>(hash));
  return text;
}

// Where each jailed VM's cgroup goes on this host (read before the seccomp filter).
JailCgroups CgroupsFromHost(const Flags& flags, const std::string& state_dir) {
  JailCgroups cgroups;
  cgroups.parent = flags.cgroup_parent.empty() ? DefaultCgroupParent(state_dir)
                                               : flags.cgroup_parent;
  while (!cgroups.parent.empty() && cgroups.parent.front() == '/') cgroups.parent.erase(0, 1);
  while (!cgroups.parent.empty() && cgroups.parent.back() == '/') cgroups.parent.pop_back();
  if (cgroups.parent.empty() || ("/" + cgroups.parent + "/").find("/../") != std::string::npos ||
      ("/" + cgroups.parent + "/").find("/./") != std::string::npos) {
    Fail("--cgroup-parent: \"" + flags.cgroup_parent + "\" is no path below a hierarchy's root");
  }
  absl::StatusOr<std::string> mountinfo = ReadFile("/proc/self/mountinfo");
  if (!mountinfo.ok()) Fail(std::string(mountinfo.status().message()));
  std::vector<jailer::MountInfoEntry> mounts = jailer::ParseMountInfo(*mountinfo);
  std::string v2_controllers;
  if (absl::StatusOr<std::string> v2 = jailer::FindCgroup2Mount(mounts); v2.ok()) {
    v2_controllers = ReadFile(*v2 + "/cgroup.controllers").value_or("");
  }
  jailer::CgroupPlacement placement =
      jailer::PlaceControllers(mounts, v2_controllers, {"memory", "pids", "cpu"});
  cgroups.version = placement.version;
  cgroups.controllers = placement.controllers;
  cgroups.mounts = placement.mounts;
  long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  cgroups.host_cpus = cpus > 0 ? static_cast<unsigned>(cpus) : 1;
  for (const std::string& controller : placement.missing) {
    EMBER_LOG(kWarn) << "emberd: no cgroup hierarchy here carries the " << controller
                     << " controller: jailed VMs get no " << controller << " limit";
  }
  return cgroups;
}

}  // namespace

std::string DefaultVmmPath() {
  std::error_code error;
  auto self = std::filesystem::read_symlink("/proc/self/exe", error);
  if (error) return "ember-vmm";
  return (self.parent_path() / "ember-vmm").string();
}

base::UniqueFd LockStateDir(const std::string& state_dir) {
  if (::mkdir(state_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    Fail("--state-dir: mkdir " + state_dir + ": " + std::strerror(errno));
  }
  const std::string path = state_dir + "/emberd.lock";
  base::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) Fail("--state-dir: open " + path + ": " + std::strerror(errno));
  if (::flock(fd.Get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) Fail("--state-dir: flock " + path + ": " + std::strerror(errno));
    absl::StatusOr<std::string> holder = ReadFile(path);
    std::string pid = holder.ok() ? holder->substr(0, holder->find('\n')) : "";
    Fail("--state-dir: another emberd" + (pid.empty() ? "" : " (pid " + pid + ")") +
         " already uses " + state_dir + " (it holds " + path + "); one emberd per state "
         "directory");
  }
  // For the message above, in the next emberd: which one holds the lock.
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd.Get(), 0) != 0 ||
      ::pwrite(fd.Get(), pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    Fail("--state-dir: write " + path + ": " + std::strerror(errno));
  }
  return fd;
}

base::PathRules OpenPathRules(std::vector<std::string> dirs) {
  if (dirs.empty()) {
    struct stat st {};
    if (::stat(kDefaultAllowDir, &st) == 0 && S_ISDIR(st.st_mode)) {
      dirs.push_back(kDefaultAllowDir);
    } else {
      EMBER_LOG(kWarn) << "emberd: " << kDefaultAllowDir << " (the default --allow-dir) is "
                       << "missing: no request may name a host path until it exists and "
                       << "emberd restarts, or --allow-dir names others";
    }
  }
  absl::StatusOr<base::PathRules> rules = base::PathRules::Open(dirs);
  if (!rules.ok()) Fail(std::string(rules.status().message()));
  return std::move(*rules);
}

std::unique_ptr<CloneNetworkServer> StartCloneNetworks(const Flags& flags,
                                                       const std::string& netns_dir) {
  if (flags.fn_egress_private && !flags.fn_egress) Fail("--fn-egress-private needs --fn-egress");
  if (::geteuid() != 0) {
    if (flags.fn_egress) Fail("--fn-egress: clone networks need root");
    return nullptr;
  }
  CloneNetworkServerConfig config;
  config.netns_dir = netns_dir;
  if (flags.fn_egress) {
    config.egress = EgressPoolConfig{};
    config.egress->reach_private_ranges = flags.fn_egress_private;
  }
  auto server = CloneNetworkServer::Start(std::move(config));
  if (!server.ok()) Fail("clone network server: " + std::string(server.status().message()));
  return std::move(*server);
}

std::unique_ptr<functions::RootfsBuilder> StartRootfsBuilder(const Flags& flags) {
  const std::string tool =
      (std::filesystem::path(DefaultVmmPath()).parent_path() / "ember-rootfs").string();
  if (::access(tool.c_str(), X_OK) != 0) {
    EMBER_LOG(kWarn) << "emberd: no " << tool << ": functions cannot be deployed from OCI "
                     << "archives";
    return nullptr;
  }
  auto builder = functions::RootfsBuilder::Start(tool, functions::RootfsBuilder::kDefaultTimeout,
                                                 functions::RootfsBuilder::kDefaultBuilderId,
                                                 std::uint64_t{flags.fn_max_image_mib} << 20);
  if (!builder.ok()) Fail("rootfs builder: " + std::string(builder.status().message()));
  return std::move(*builder);
}

void ConfigureProcess(const Flags& flags) {
  if (!flags.log_level.empty()) {
    base::LogLevel level;
    if (auto s = base::ParseLogLevel(flags.log_level, &level); !s.ok()) {
      Fail(std::string(s.message()));
    }
    base::SetLogLevel(level);
  }
  ::signal(SIGPIPE, SIG_IGN);
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);  // every thread inherits it
}

std::optional<JailerConfig> JailFromFlags(const Flags& flags, std::string* vmm,
                                          ManagerOptions* options) {
  if (flags.no_jail) {
    EMBER_LOG(kWarn) << "emberd: --no-jail: every ember-vmm runs UNJAILED, as root with all "
                        "capabilities in emberd's namespaces. For development only; never on a "
                        "host whose guests you do not trust";
    return std::nullopt;
  }
  std::string jailer = flags.jailer.empty()
                           ? (std::filesystem::path(DefaultVmmPath()).parent_path() /
                              "ember-jailer").string()
                           : flags.jailer;
  if (::access(jailer.c_str(), X_OK) != 0) {
    Fail("--jailer: \"" + jailer + "\" is not executable (or run emberd --no-jail, for "
         "development only)");
  }
  if (::geteuid() != 0) {
    Fail("the jail (the default) needs root: ember-jailer chroots, makes namespaces and "
         "changes identity. Run emberd as root, or with --no-jail for development only");
  }
  JailerConfig jail;
  jail.jailer = std::filesystem::absolute(jailer).string();
  std::string chroot_base =
      flags.chroot_base.empty() ? options->state_dir + "/jail" : flags.chroot_base;
  if (flags.chroot_base.empty() && ::mkdir(options->state_dir.c_str(), 0700) != 0 &&
      errno != EEXIST) {
    Fail("--state-dir: mkdir " + options->state_dir + ": " + std::strerror(errno));
  }
  jail.chroot_base = std::filesystem::absolute(chroot_base).lexically_normal().string();
  while (jail.chroot_base.size() > 1 && jail.chroot_base.back() == '/') {
    jail.chroot_base.pop_back();
  }
  jail.ids.base = flags.jailer_id_base.value_or(kDefaultJailIdBase);
  jail.ids.count = flags.jailer_id_count.value_or(kDefaultJailIdCount);
  // uid and gid 4294967295 are (uid_t)-1, "no change" to chown and setresuid.
  if (std::uint64_t{jail.ids.base} + jail.ids.count >= 0xffffffffULL) {
    Fail("--jailer-id-base + --jailer-id-count: ids end at " +
         std::to_string(std::uint64_t{jail.ids.base} + jail.ids.count) +
         ", past the largest uid 4294967294");
  }
  jail.new_pid_ns = true;
  jail.isolate = true;
  options->jail_ids = jail.ids;
  jail.cgroups = CgroupsFromHost(flags, options->state_dir);
  options->jail_cgroups = jail.cgroups;
  *vmm = std::filesystem::absolute(*vmm).string();
  options->jail_dir =
      std::filesystem::path(jail.JailRoot(*vmm, "x")).parent_path().parent_path().string();
  return jail;
}

}  // namespace ember::emberd
