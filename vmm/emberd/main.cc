// emberd: Ember's control plane. One per host: serves the gRPC API (ember/v1/api.proto) on a
// Unix socket, runs one ember-vmm per VM and keeps its records under --state-dir so that a
// restarted emberd finds every VM again.
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <system_error>

#include <grpcpp/grpcpp.h>

#include "vmm/base/logging.h"
#include "vmm/base/path_rules.h"
#include "vmm/base/unique_fd.h"
#include "vmm/emberd/api_service.h"
#include "vmm/emberd/clone_network/function_networks.h"
#include "vmm/emberd/clone_network/network_server.h"
#include "vmm/emberd/flags.h"
#include "vmm/emberd/functions/function_manager.h"
#include "vmm/emberd/functions/functions_service.h"
#include "vmm/emberd/launcher.h"
#include "vmm/emberd/sandbox.h"
#include "vmm/emberd/socket_group.h"
#include "vmm/emberd/startup.h"
#include "vmm/emberd/tls_credentials.h"
#include "vmm/emberd/unix_socket.h"
#include "vmm/emberd/vm_manager.h"
#include "vmm/emberd/vmm_pool.h"

namespace ember::emberd {
namespace {

// The host side of every function clone's tap (the guest's gateway; clone_network.h).
constexpr char kFunctionTapAddress[] = "172.16.0.1/30";

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

int Main(int argc, char** argv) {
  Flags flags = ParseFlags(argc, argv);
  ConfigureProcess(flags);
  ManagerOptions options;
  options.state_dir = std::filesystem::absolute(flags.state_dir).string();
  options.max_vms = flags.max_vms;
  std::string vmm = flags.vmm.empty() ? DefaultVmmPath() : flags.vmm;
  if (::access(vmm.c_str(), X_OK) != 0) Fail("--vmm: \"" + vmm + "\" is not executable");
  std::optional<JailerConfig> jail = JailFromFlags(flags, &vmm, &options);
  // One lease table of jail uids for the jailed view (VMs) and the VMM pool (slots, whose ids
  // VMs take over); outlives both.
  std::optional<JailIdLeases> jail_leases;
  if (jail) {
    jail->ids.leases = &jail_leases.emplace(jail->ids);
    options.jail_ids.leases = jail->ids.leases;
  }
  // Where function clones' network namespaces are mounted (CloneNetworkServer's).
  const std::string netns_dir = ::geteuid() == 0 ? options.state_dir + "/netns" : "";
  // Before any thread exists and before the filter: see ForkServerLauncher.
  auto launcher = ForkServerLauncher::Start(vmm, jail, netns_dir);
  if (!launcher.ok()) Fail("fork server: " + std::string(launcher.status().message()));
  // Also before the lock (it holds no copy) and before any thread.
  std::unique_ptr<functions::RootfsBuilder> rootfs_builder = StartRootfsBuilder(flags);
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
  VmmPool* pool = nullptr;
  if (flags.vmm_pool > 0) {
    std::optional<VmmPool::Jail> pool_jail;
    if (jail) pool_jail = VmmPool::Jail{*jail, vmm};
    auto created = VmmPool::Create(std::move(vmm_launcher), options.state_dir + "/vmm-pool",
                                   flags.vmm_pool, std::move(pool_jail));
    if (!created.ok()) Fail("--vmm-pool: " + std::string(created.status().message()));
    pool = created->get();
    vmm_launcher = std::move(*created);
  } else if (jail) {
    VmmPool::RemoveLeftovers(*jail);  // an earlier emberd's pool's, if it had one
  }
  auto manager = VmManager::Create(options, std::move(vmm_launcher));
  if (!manager.ok()) Fail(std::string(manager.status().message()));
  if (auto s = (*manager)->Recover(); !s.ok()) Fail(std::string(s.message()));
  // Once the recovered VMs hold their uids; its thread gets emberd's filter with every other
  // one (InstallSandbox below).
  if (pool != nullptr) pool->Start();
  functions::FunctionOptions fn_options;
  fn_options.state_dir = options.state_dir;
  fn_options.image_dir = *image_dir;
  fn_options.max_in_flight = flags.fn_max_in_flight;
  fn_options.max_archive_bytes = std::uint64_t{flags.fn_max_archive_mib} << 20;
  fn_options.max_pooled = FnMaxPooled(flags);
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
