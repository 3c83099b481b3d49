// emberd: Ember's control plane. One per host: serves the gRPC API (ember/v1/api.proto) on a
// Unix socket, runs one ember-vmm per VM and keeps its records under --state-dir so that a
// restarted emberd finds every VM again.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "jailer/cgroup.h"
#include "vmm/base/logging.h"
#include "vmm/base/unique_fd.h"
#include "vmm/emberd/api_service.h"
#include "vmm/emberd/clone_network/function_networks.h"
#include "vmm/emberd/clone_network/network_server.h"
#include "vmm/emberd/launcher.h"
#include "vmm/emberd/vmm_pool.h"
#include "vmm/base/path_rules.h"
#include "vmm/emberd/sandbox.h"
#include "vmm/emberd/socket_group.h"
#include "vmm/emberd/store.h"
#include "vmm/emberd/tls_credentials.h"
#include "vmm/emberd/unix_socket.h"
#include "vmm/emberd/functions/function_manager.h"
#include "vmm/emberd/functions/functions_service.h"
#include "vmm/emberd/vm_manager.h"

namespace ember::emberd {
namespace {

constexpr char kUsage[] =
    "usage: emberd [options]\n"
    "\n"
    "Serves Ember's gRPC API and runs one ember-vmm per microVM.\n"
    "\n"
    "  --socket PATH      API Unix socket, mode 0600 root (default /run/ember/emberd.sock);\n"
    "                     only connections whose peer (SO_PEERCRED) is root or emberd's own\n"
    "                     uid are admitted\n"
  "  --socket-group GROUP\n"
  "                     make the socket 0660 root:GROUP (a name or gid) and admit only\n"
  "                     connections whose peer (SO_PEERCRED) is root or in GROUP\n"
    "  --state-dir DIR    VM records, control sockets, consoles (default /var/lib/ember);\n"
    "                     one emberd per directory (it holds DIR/emberd.lock)\n"
    "  --tcp HOST:PORT    also listen on TCP (off by default), only with mutual TLS: needs\n"
  "                     --tls-cert, --tls-key and --tls-client-ca\n"
  "  --tls-cert FILE, --tls-key FILE\n"
  "                     emberd's TLS certificate chain and private key (PEM) for --tcp\n"
  "  --tls-client-ca FILE\n"
  "                     the CA (PEM) whose certificates --tcp clients must present\n"
  "  --allow-dir DIR    host paths an API request names (kernel, initrd, drives, log,\n"
  "                     metrics, vsock socket, snapshot dir, restore files) must lie under\n"
  "                     DIR, with no symlink or \"..\" leading out; repeatable. Default\n"
  "                     /srv/ember; giving one replaces it. Others get INVALID_ARGUMENT\n"
    "  --vmm PATH         the ember-vmm binary (default: next to emberd)\n"
    "  --max-vms N        live VMs at most (default 1024)\n"
    "  --vmm-pool N       keep N ember-vmm processes started ahead (exec'd, seccomp filters\n"
    "                     compiled, /dev/kvm opened, VM and irqchip created), each handed to\n"
    "                     one Create or Restore and replaced in the background (default 0:\n"
    "                     none). Needs --no-jail: a jail is its VM's own (uid, chroot, cgroup\n"
    "                     named after it), which a VMM started ahead cannot have yet\n"
    "  --fn-max-in-flight N\n"
    "                     function invocations in flight on the host at most (default 64);\n"
    "                     more are RESOURCE_EXHAUSTED at once\n"
    "  --fn-egress        functions with network on: each clone also reaches beyond its\n"
    "                     namespace (a veth pair from 10.200.0.0/16 and NAT; needs the host's\n"
    "                     IPv4 forwarding on). Without it a clone reaches only its tap's host\n"
    "                     side (172.16.0.1/30). Clone networks need root; their namespaces\n"
    "                     are mounted under STATE-DIR/netns\n"
    "  --seccomp MODE     emberd's own seccomp filter: enforce (default), log, or off\n"
    "  --log-level LEVEL  Error, Warning, Info (default), Debug or Trace\n"
    "  --no-jail          run each ember-vmm UNJAILED: as root, with all capabilities, in\n"
    "                     emberd's namespaces. For development only: emberd warns at start-up\n"
    "                     and writes UNJAILED beside each VM's record\n"
    "  By default each ember-vmm runs through ember-jailer: chrooted (pivot_root) into\n"
    "  <chroot-base>/ember-vmm/<id>/root with its config, kernel and initrd (drives hard-linked:\n"
    "  same filesystem), as a uid and gid of its own with no capabilities and NoNewPrivs, in\n"
    "  new mount, pid, ipc, uts and network namespaces (a VM's taps are made in its own), with\n"
    "  only the device nodes it uses and RLIMIT_FSIZE its memory size + 64 MiB. Snapshots are\n"
    "  moved out of the jail; a restored clone gets the snapshot's files linked into its jail.\n"
    "  --jailer PATH      the ember-jailer binary (default: next to emberd)\n"
    "  --jailer-id-base N, --jailer-id-count N\n"
    "                     each jailed ember-vmm runs as uid = gid = one of N+1 ... N+COUNT,\n"
    "                     its own while its VM exists (until Delete); N itself is the group\n"
    "                     of the snapshot files emberd keeps, which restored clones get as\n"
    "                     their one supplementary group (defaults 830000 and 65536)\n"
    "  --chroot-base DIR  the jailer's --chroot-base-dir (default STATE-DIR/jail)\n"
    "  --cgroup-parent PATH\n"
    "                     each jailed VM gets a cgroup PATH/<id> (relative to each hierarchy's\n"
    "                     root; default ember-<hash of STATE-DIR>) limiting its memory (guest +\n"
    "                     128 MiB), tasks (vCPUs + 64 + 4 per host CPU and drive) and CPU weight\n"
    "                     (per vCPU): cgroup v2 where it carries memory, pids and cpu, else v1;\n"
    "                     removed when its VMM ends (or the VM is deleted)\n"
    "  --jailer-new-pid-ns\n"
    "                     accepted for old command lines: a new pid namespace is the default\n"
    "  --help             this text\n"
    "\n"
    "SIGTERM/SIGINT stop emberd but not the VMs; a new emberd re-attaches to them.\n";

// Where an operator keeps kernels, images and snapshots for API clients to name, unless
// --allow-dir says otherwise. emberd's state directory is not allowed by default: it holds
// the VMs' records and control sockets, which no drive or log path should reach.
constexpr char kDefaultAllowDir[] = "/srv/ember";

[[noreturn]] void Fail(const std::string& message) {
  std::fprintf(stderr, "emberd: error: %s\n", message.c_str());
  std::exit(2);
}

struct Flags {
  std::string socket = "/run/ember/emberd.sock";
  std::string state_dir = "/var/lib/ember";
  std::string tcp;
  TlsFiles tls;
  std::string socket_group;
  std::vector<std::string> allow_dirs;  // empty: kDefaultAllowDir
  std::string vmm;
  std::size_t max_vms = 1024;
  std::uint32_t fn_max_in_flight = 64;
  std::uint32_t vmm_pool = 0;  // --vmm-pool
  bool fn_egress = false;
  std::string log_level;
  std::optional<jailer::SeccompMode> seccomp = jailer::SeccompMode::kEnforce;
  std::string jailer;
  std::optional<std::uint32_t> jailer_id_base;
  std::optional<std::uint32_t> jailer_id_count;
  std::string chroot_base;
  std::string cgroup_parent;
  bool no_jail = false;
};

// The jailed ember-vmms' ids unless --jailer-id-base/--jailer-id-count say otherwise: far above
// the ranges distributions give to users and system accounts, and as many as a subuid block.
constexpr std::uint32_t kDefaultJailIdBase = 830000;
constexpr std::uint32_t kDefaultJailIdCount = 65536;

std::uint32_t ParseId(const std::string& flag, const std::string& text) {
  std::uint32_t id = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) {
    Fail(flag + ": \"" + text + "\" is not a number");
  }
  if (id == 0) Fail(flag + ": must be at least 1 (0 is root's id, or no id at all)");
  return id;
}

Flags ParseFlags(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Fail(std::string(arg) + " needs a value");
      return argv[++i];
    };
    if (arg == "--socket") flags.socket = value();
    else if (arg == "--state-dir") flags.state_dir = value();
    else if (arg == "--tcp") flags.tcp = value();
    else if (arg == "--socket-group") flags.socket_group = value();
    else if (arg == "--tls-cert") flags.tls.cert = value();
    else if (arg == "--tls-key") flags.tls.key = value();
    else if (arg == "--tls-client-ca") flags.tls.client_ca = value();
    else if (arg == "--allow-dir") flags.allow_dirs.push_back(value());
    else if (arg == "--vmm") flags.vmm = value();
    else if (arg == "--log-level") flags.log_level = value();
    else if (arg == "--jailer") flags.jailer = value();
    else if (arg == "--jailer-id-base") flags.jailer_id_base = ParseId("--jailer-id-base", value());
    else if (arg == "--jailer-id-count") flags.jailer_id_count = ParseId("--jailer-id-count", value());
    else if (arg == "--jailer-uid" || arg == "--jailer-gid") {
      Fail(std::string(arg) + ": every jailed VM has a uid and gid of its own now; give their "
           "range with --jailer-id-base and --jailer-id-count");
    }
    else if (arg == "--chroot-base") flags.chroot_base = value();
    else if (arg == "--cgroup-parent") flags.cgroup_parent = value();
    else if (arg == "--jailer-new-pid-ns") {}  // the default
    else if (arg == "--no-jail") flags.no_jail = true;
    else if (arg == "--fn-egress") flags.fn_egress = true;
    else if (arg == "--seccomp") {
      auto mode = ParseSeccompFlag(value());
      if (!mode.ok()) Fail(std::string(mode.status().message()));
      flags.seccomp = *mode;
    }
    else if (arg == "--vmm-pool") {
      std::string text = value();
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), flags.vmm_pool);
      if (ec != std::errc() || end != text.data() + text.size() || text.empty() ||
          flags.vmm_pool > 64) {
        Fail("--vmm-pool: \"" + text + "\" is not a number from 0 to 64");
      }
    }
    else if (arg == "--fn-max-in-flight") {
      flags.fn_max_in_flight = ParseId("--fn-max-in-flight", value());
    }
    else if (arg == "--max-vms") {
      std::string text = value();
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), flags.max_vms);
      if (ec != std::errc() || end != text.data() + text.size() || flags.max_vms == 0) {
        Fail("--max-vms: \"" + text + "\" is not a positive number");
      }
    } else {
      Fail("unknown flag \"" + std::string(arg) + "\" (see --help)");
    }
  }
  bool any_jail = !flags.jailer.empty() || flags.jailer_id_base || flags.jailer_id_count ||
                  !flags.chroot_base.empty() || !flags.cgroup_parent.empty();
  if (flags.vmm_pool > 0 && !flags.no_jail) {
    Fail("--vmm-pool needs --no-jail: a jailed ember-vmm's jail (its uid, chroot and cgroup) is "
         "its VM's own, named after the VM, which a VMM started ahead does not know yet");
  }
  if (flags.no_jail && any_jail) {
    Fail("--no-jail runs ember-vmm unjailed: --jailer, --jailer-id-base, --jailer-id-count, "
         "--chroot-base and --cgroup-parent have nothing to configure");
  }
  // A TCP listener anyone on the network can reach is as good as root on this host: it is
  // served only to clients with a certificate the operator's CA signed.
  bool any_tls = !flags.tls.cert.empty() || !flags.tls.key.empty() || !flags.tls.client_ca.empty();
  if (!flags.tcp.empty() &&
      (flags.tls.cert.empty() || flags.tls.key.empty() || flags.tls.client_ca.empty())) {
    Fail("--tcp needs --tls-cert, --tls-key and --tls-client-ca: emberd serves TCP only with "
         "mutual TLS");
  }
  if (flags.tcp.empty() && any_tls) {
    Fail("--tls-cert, --tls-key and --tls-client-ca go with --tcp (the Unix socket needs none)");
  }
  return flags;
}

std::string DefaultVmmPath() {
  std::error_code error;
  auto self = std::filesystem::read_symlink("/proc/self/exe", error);
  if (error) return "ember-vmm";
  return (self.parent_path() / "ember-vmm").string();
}

// Takes the state directory's lock, an flock on <state_dir>/emberd.lock, held for as long as
// the returned fd (close-on-exec: no ember-vmm inherits it) is open. Exits when another emberd
// holds it, naming that emberd's pid.
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

// The allowed directories (--allow-dir, or the default when it exists), opened before the
// seccomp filter. An operator's directory that cannot be opened stops emberd.
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

// The host side of every function clone's tap (the guest's gateway; clone_network.h).
constexpr char kFunctionTapAddress[] = "172.16.0.1/30";

// The clone networks of functions with network on, or null without root (a function asking
// for one is then refused). Called while emberd has one thread, after it holds the state
// directory's lock: the server empties `netns_dir` of what an earlier emberd left.
std::unique_ptr<CloneNetworkServer> StartCloneNetworks(const Flags& flags,
                                                       const std::string& netns_dir) {
  if (::geteuid() != 0) {
    if (flags.fn_egress) Fail("--fn-egress: clone networks need root");
    return nullptr;
  }
  CloneNetworkServerConfig config;
  config.netns_dir = netns_dir;
  if (flags.fn_egress) config.egress = EgressPoolConfig{};
  auto server = CloneNetworkServer::Start(std::move(config));
  if (!server.ok()) Fail("clone network server: " + std::string(server.status().message()));
  return std::move(*server);
}

// The builder of functions' images from OCI archives: ember-rootfs beside emberd, or null
// (deploys from an archive are then refused) when there is none.
std::unique_ptr<functions::RootfsBuilder> StartRootfsBuilder() {
  const std::string tool =
      (std::filesystem::path(DefaultVmmPath()).parent_path() / "ember-rootfs").string();
  if (::access(tool.c_str(), X_OK) != 0) {
    EMBER_LOG(kWarn) << "emberd: no " << tool << ": functions cannot be deployed from OCI "
                     << "archives";
    return nullptr;
  }
  auto builder = functions::RootfsBuilder::Start(tool);
  if (!builder.ok()) Fail("rootfs builder: " + std::string(builder.status().message()));
  return std::move(*builder);
}

volatile sig_atomic_t g_stop_signal = 0;
void OnStopSignal(int sig) { g_stop_signal = sig; }

// Blocks until SIGTERM/SIGINT arrives (returns 0) or the fork server exits (returns 1).
// The fork server cannot be restarted: it must be forked before emberd has threads or its
// seccomp filter. Without it no VM can be created, so emberd ends and lets its service manager
// start a new one, which re-attaches to every VM (they keep running meanwhile).
int WaitForStopOrForkServerDeath(const base::UniqueFd& fork_server, pid_t fork_server_pid) {
  // Only this thread leaves the stop signals unblocked, and only while it waits in ppoll.
  sigset_t wait_mask;
  pthread_sigmask(SIG_SETMASK, nullptr, &wait_mask);
  sigdelset(&wait_mask, SIGTERM);
  sigdelset(&wait_mask, SIGINT);
  while (g_stop_signal == 0) {
    pollfd watched{fork_server.Get(), POLLIN, 0};
    if (::ppoll(&watched, 1, nullptr, &wait_mask) > 0) {
      EMBER_LOG(kError) << "emberd: the fork server (pid " << fork_server_pid
                        << ") exited; no VM can be created without it, so emberd stops here "
                           "(VMs keep running; a restarted emberd re-attaches to them)";
      return 1;
    }
  }
  EMBER_LOG(kInfo) << "emberd: " << strsignal(g_stop_signal)
                   << ": shutting down (VMs keep running)";
  return 0;
}

// The log level, and the signals: SIGPIPE ignored, SIGTERM/SIGINT blocked in every thread.
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

// The jail every ember-vmm runs in unless --no-jail, filling in `options`' jail fields; `vmm`
// becomes absolute, as the jailer's --exec-file.
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

int Main(int argc, char** argv) {
  Flags flags = ParseFlags(argc, argv);
  ConfigureProcess(flags);
  ManagerOptions options;
  options.state_dir = std::filesystem::absolute(flags.state_dir).string();
  options.max_vms = flags.max_vms;
  std::string vmm = flags.vmm.empty() ? DefaultVmmPath() : flags.vmm;
  if (::access(vmm.c_str(), X_OK) != 0) Fail("--vmm: \"" + vmm + "\" is not executable");
  std::optional<JailerConfig> jail = JailFromFlags(flags, &vmm, &options);
  // Where function clones' network namespaces are mounted (CloneNetworkServer's).
  const std::string netns_dir = ::geteuid() == 0 ? options.state_dir + "/netns" : "";
  // Before any thread exists and before the filter: see ForkServerLauncher.
  auto launcher = ForkServerLauncher::Start(vmm, jail, netns_dir);
  if (!launcher.ok()) Fail("fork server: " + std::string(launcher.status().message()));
  // Also before the lock (it holds no copy) and before any thread.
  std::unique_ptr<functions::RootfsBuilder> rootfs_builder = StartRootfsBuilder();
  // One emberd per state directory: a second would take over the VMs' control connections and
  // write the same records. Locked after the fork server is forked, so that it holds no copy.
  base::UniqueFd state_lock = LockStateDir(options.state_dir);
  // Outlives the functions (declared before them): their clones' leases go back to it.
  std::unique_ptr<CloneNetworkServer> clone_networks = StartCloneNetworks(flags, netns_dir);
  // A socket that still accepts connections is a live server's (an emberd with another state
  // directory): unlinking it would take its clients away.
  if (ConnectUnix(flags.socket).ok()) {
    Fail("--socket: " + flags.socket + " is served by another process (another emberd?)");
  }
  pid_t fork_server_pid = (*launcher)->helper_pid();
  base::UniqueFd fork_server(static_cast<int>(::syscall(SYS_pidfd_open, fork_server_pid, 0)));
  if (!fork_server) Fail("pidfd_open of the fork server: " + std::string(strerror(errno)));
  struct sigaction on_stop {};
  on_stop.sa_handler = OnStopSignal;
  ::sigaction(SIGTERM, &on_stop, nullptr);
  ::sigaction(SIGINT, &on_stop, nullptr);
  base::PathRules paths = OpenPathRules(flags.allow_dirs);
  // The VMMs may also use the root images emberd keeps for functions, which API requests
  // cannot name (the API's rules stay `paths`): only read-only, and only as a drive emberd's
  // own configuration names (PathRules::OpenReadOnlyFile), never one a client's state file
  // names (the VMM's --allow-dir is the client's).
  auto image_dir = functions::MakeImageDir(options.state_dir);
  if (!image_dir.ok()) Fail(std::string(image_dir.status().message()));
  // And an unjailed function VM's vsock socket, in its function's directory: a place emberd's
  // own configuration may name (PathRules::OpenPlace), never a state file's path.
  const std::string function_dir = options.state_dir + "/fn";
  if (::mkdir(function_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    Fail("mkdir " + function_dir + ": " + std::strerror(errno));
  }
  using OwnDir = base::PathRules::OwnDir;
  auto vmm_paths = base::PathRules::Open(paths.Dirs(), "emberd",
                                         {{*image_dir, OwnDir::Use::kReadOnlyFiles},
                                          {function_dir, OwnDir::Use::kPlaces}});
  if (!vmm_paths.ok()) Fail(std::string(vmm_paths.status().message()));
  options.paths = &*vmm_paths;
  std::unique_ptr<VmmLauncher> vmm_launcher = std::move(*launcher);
  if (flags.vmm_pool > 0) {
    // Its thread gets emberd's filter with every other one (InstallSandbox below).
    auto pool = VmmPool::Create(std::move(vmm_launcher), options.state_dir + "/vmm-pool",
                                flags.vmm_pool);
    if (!pool.ok()) Fail("--vmm-pool: " + std::string(pool.status().message()));
    vmm_launcher = std::move(*pool);
  }
  auto manager = VmManager::Create(options, std::move(vmm_launcher));
  if (!manager.ok()) Fail(std::string(manager.status().message()));
  if (auto s = (*manager)->Recover(); !s.ok()) Fail(std::string(s.message()));
  functions::FunctionOptions fn_options;
  fn_options.state_dir = options.state_dir;
  fn_options.image_dir = *image_dir;
  fn_options.max_in_flight = flags.fn_max_in_flight;
  fn_options.jail_dir = options.jail_dir;
  fn_options.rootfs = rootfs_builder.get();
  fn_options.paths = &paths;
  std::optional<FunctionNetworks> fn_networks;
  if (clone_networks != nullptr) {
    fn_networks.emplace(*clone_networks, *Ipv4Cidr::Parse(kFunctionTapAddress), flags.fn_egress);
    fn_options.networks = &*fn_networks;
  }
  auto functions = functions::FunctionManager::Create(fn_options, **manager);
  if (!functions.ok()) Fail(std::string(functions.status().message()));
  if (auto s = (*functions)->Recover(); !s.ok()) Fail(std::string(s.message()));

  std::error_code error;
  std::filesystem::create_directories(std::filesystem::path(flags.socket).parent_path(), error);
  ::unlink(flags.socket.c_str());
  ApiService service(**manager, paths);
  functions::FunctionsService functions_service(**functions, paths);
  grpc::ServerBuilder builder;
  // The socket is created under this umask, so it is 0600 from the start.
  mode_t old_umask = ::umask(0177);
  // emberd accepts on the socket itself, to check each peer (SO_PEERCRED) before gRPC sees it.
  std::optional<gid_t> socket_group;
  if (!flags.socket_group.empty()) {
    absl::StatusOr<gid_t> group = ResolveGroup(flags.socket_group);
    if (!group.ok()) Fail(std::string(group.status().message()));
    socket_group = *group;
  }
  auto listening = GroupSocketServer::Listen(flags.socket, socket_group);
  if (!listening.ok()) Fail("--socket: " + std::string(listening.status().message()));
  std::unique_ptr<GroupSocketServer> group_socket = std::move(*listening);
  if (!flags.tcp.empty()) {
    auto credentials = MutualTlsCredentials(flags.tls);
    if (!credentials.ok()) Fail(std::string(credentials.status().message()));
    builder.AddListeningPort(flags.tcp, *credentials);
  }
  builder.RegisterService(&service);
  builder.RegisterService(&functions_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ::umask(old_umask);
  if (!server) Fail("cannot listen on " + flags.socket + (flags.tcp.empty() ? "" : " / " + flags.tcp));
  group_socket->Serve(server.get());

  jailer::EmberdSeccompParams seccomp_params;
  seccomp_params.tcp = !flags.tcp.empty();
  if (jail) seccomp_params.snapshot_gid = jail->ids.snapshot_gid();
  if (auto s = InstallSandbox(flags.seccomp, seccomp_params); !s.ok()) {
    Fail("sandbox: " + std::string(s.message()));
  }
  EMBER_LOG(kInfo) << "emberd: serving on unix:" << flags.socket
                   << (flags.tcp.empty() ? "" : " and tcp:" + flags.tcp + " (mutual TLS)")
                   << ", state in "
                   << options.state_dir << ", host paths under " << paths.Describe() << ", ember-vmm " << vmm
                   << (jail ? ", jailed by " + jail->jailer + " in " + options.jail_dir
                            : ", UNJAILED (--no-jail)");
  std::fprintf(stderr, "emberd: ready\n");

  int exit_code = WaitForStopOrForkServerDeath(fork_server, fork_server_pid);
  group_socket.reset();  // no new connections while the server shuts down
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  return exit_code;
}

}  // namespace
}  // namespace ember::emberd

int main(int argc, char** argv) { return ember::emberd::Main(argc, argv); }
