#include "commands.h"

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <thread>

#include "bundle.h"
#include "command_channel.h"
#include "console.h"
#include "container_state.h"
#include "image_cache.h"
#include "jail.h"
#include "nlohmann/json.hpp"
#include "runtime_config.h"
#include "supervisor.h"
#include "tap_device.h"
#include "vm_plan.h"
#include "vmm/agent_client/socket_file.h"
#include "vmm/base/atomic_file.h"
#include "vmm/base/status.h"
#include "workload.h"

namespace ember::runtime {
namespace {

using nlohmann::json;

// How long `delete --force` and `kill KILL` callers wait for a supervisor to go.
constexpr int kSupervisorExitTimeoutMs = 15'000;
// Added to the boot timeout for create's wait on its supervisor.
constexpr int kReportMarginMs = 10'000;

absl::StatusOr<std::string> TheId(const Invocation& inv) {
  if (inv.args.empty()) {
    return absl::InvalidArgumentError("\"" + inv.command + "\" requires a container id");
  }
  EMBER_RETURN_IF_ERROR(ValidateId(inv.args[0]));
  return inv.args[0];
}

absl::StatusOr<RuntimeConfig> Config(const Invocation& inv) {
  ConfigSource source = ChooseConfig(inv.global.config_path);
  return LoadRuntimeConfig(source.path, source.required);
}

// The container's status: stopped once its supervisor is gone, creating while it boots.
ContainerStatus StatusOf(const StateRoot& root, const ContainerRecord& record) {
  if (!SupervisorAlive(record)) return ContainerStatus::kStopped;
  absl::StatusOr<std::string> answer =
      AskSupervisor(root.SupervisorSocket(record.id), "status", 5'000);
  if (!answer.ok()) {
    return SupervisorAlive(record) ? ContainerStatus::kCreating : ContainerStatus::kStopped;
  }
  if (*answer == "created") return ContainerStatus::kCreated;
  if (*answer == "paused") return ContainerStatus::kPaused;
  return ContainerStatus::kRunning;
}

// Waits until the record's supervisor has exited (it is not our child: a pidfd tells).
bool WaitGone(const ContainerRecord& record, int timeout_ms) {
  base::UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, record.pid, 0)));
  if (!pidfd) return !SupervisorAlive(record);
  if (!SupervisorAlive(record)) return true;  // the pid may have been reused since
  pollfd pfd{pidfd.Get(), POLLIN, 0};
  while (::poll(&pfd, 1, timeout_ms) < 0 && errno == EINTR) {
  }
  return pfd.revents != 0 || !SupervisorAlive(record);
}

absl::Status WritePidFile(const std::string& path, pid_t pid) {
  if (path.empty()) return absl::OkStatus();
  std::filesystem::path file = std::filesystem::absolute(path);
  return base::WriteFileAtomically(file.string(), std::to_string(pid), 0644);
}

// Reads the supervisor's one report line.
std::string ReadReport(int fd, int timeout_ms) {
  std::string line;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return line.empty() ? "error the supervisor did not report in time" : line;
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
    char c;
    ssize_t n = ::read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return line.empty() ? "error the supervisor ended before it reported" : line;
    if (c == '\n') return line;
    line.push_back(c);
  }
}

// Undoes a create that failed part-way: the tap (a supervisor killed before its report made
// it and could not remove it), the lease and the state directory.
void Abandon(const StateRoot& root, const RuntimeConfig& config, const ContainerRecord& record,
             const std::string& lease) {
  const std::string& id = record.id;
  // The jail first: a jailed VMM outlives its killed supervisor, and holds the tap. One that
  // survives keeps everything, the state directory included (it is what holds the uid
  // lease), so that a delete retries this.
  if (!DestroyJail(record.jail_dir, record.jail_uid_lease, record.cgroup_dirs).ok()) return;
  if (!record.tap_name.empty()) (void)DeleteTap(record.netns_path, record.tap_name);
  if (!lease.empty()) {
    absl::StatusOr<ImageCache> cache =
        ImageCache::Open({config.image_cache_dir, config.rootfs_tool, {}});
    if (cache.ok()) (void)cache->Release(lease);
  }
  (void)root.Remove(id);
}

struct Created {
  pid_t supervisor = -1;
};

absl::StatusOr<Created> CreateContainer(const Invocation& inv, const RuntimeLog& log) {
  EMBER_ASSIGN_OR_RETURN(std::string id, TheId(inv));
  EMBER_ASSIGN_OR_RETURN(RuntimeConfig config, Config(inv));
  std::filesystem::path bundle_dir = std::filesystem::absolute(inv.Get("bundle", "."));
  EMBER_ASSIGN_OR_RETURN(Bundle bundle, LoadBundle(bundle_dir));
  const std::string console_socket = inv.Get("console-socket");
  if (bundle.process.terminal && console_socket.empty()) {
    return absl::InvalidArgumentError(
        "cannot allocate tty if runc will detach without setting console socket");
  }
  if (!bundle.process.terminal && !console_socket.empty()) {
    return absl::InvalidArgumentError(
        "cannot use console socket if runc will not detach or "
        "allocate tty");
  }
  StateRoot root(inv.global.root);
  EMBER_RETURN_IF_ERROR(root.CreateContainerDir(id));

  ContainerRecord record;
  record.id = id;
  record.bundle = bundle.dir.string();
  record.rootfs = bundle.rootfs.string();
  record.created = Rfc3339Now();
  record.annotations = bundle.annotations;
  if (!bundle.network_namespace.empty()) {
    record.netns_path = bundle.network_namespace.string();
    record.tap_name = kTapName;
  }

  absl::StatusOr<ImageCache> cache =
      ImageCache::Open({config.image_cache_dir, config.rootfs_tool, {}});
  absl::StatusOr<ImageLease> lease =
      cache.ok() ? cache->Acquire(bundle.rootfs, !bundle.rootfs_readonly, root.ContainerDir(id))
                 : absl::StatusOr<ImageLease>(cache.status());
  if (!lease.ok()) {
    Abandon(root, config, record, "");
    return absl::Status(lease.status().code(),
                        "the container's root image: " + std::string(lease.status().message()));
  }
  record.image_lease = lease->id;

  SupervisorSpec spec;
  spec.id = id;
  spec.root = root;
  spec.launch.vmm_path = config.vmm_path;
  spec.launch.config_path = root.ContainerDir(id) + "/vm.pb";
  spec.launch.control_dir = root.ContainerDir(id);
  spec.launch.output_path = root.VmmLogPath(id);
  spec.launch.netns_path = record.netns_path;
  spec.vm = PlanVm(bundle, config, lease->image.string(), lease->writable, root.VsockPath(id), id);
  if (config.jailer.enabled) {
    absl::StatusOr<Jail> jail =
        PlanJail(config.jailer, id, config.vmm_path, root.ContainerDir(id),
                 spec.vm.machine_config().mem_size_mib());
    if (jail.ok()) {
      // Recorded before anything is put there, so that whatever fails next undoes it.
      record.jail_dir = jail->dir;
      record.jail_uid_lease = jail->uid_lease;
      record.jail_uid = jail->uid;
      record.cgroup_dirs = jail->cgroup_dirs;
    }
    absl::StatusOr<std::vector<std::string>> jailer_argv =
        jail.ok() ? PrepareJail(config.jailer, *jail, config.vmm_path, &spec.vm, record.netns_path,
                                record.tap_name, kVmmControlFd)
                  : absl::StatusOr<std::vector<std::string>>(jail.status());
    if (!jailer_argv.ok()) {
      Abandon(root, config, record, record.image_lease);
      return jailer_argv.status();
    }
    spec.launch.jailer_argv = std::move(*jailer_argv);
    spec.launch.config_path = jail->root + "/config.pb";
    spec.launch.config_in_jail = "/config.pb";
    spec.jail_root = jail->root;
    spec.jail_uid = jail->uid;
  }
  spec.workload = PlanExec(bundle.process);
  for (const BundleFile& file : bundle.files) {
    spec.workload.add_file_paths(file.path);
    spec.workload.add_file_contents(file.contents);
    spec.workload.add_file_modes(file.mode);
  }
  spec.console_socket =
      console_socket.empty() ? std::string() : std::filesystem::absolute(console_socket).string();
  spec.netns_path = record.netns_path;
  spec.tap_name = record.tap_name;
  spec.boot_timeout_ms = config.boot_timeout_ms;

  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) {
    Abandon(root, config, record, record.image_lease);
    return base::ErrnoError("pipe2", "supervisor report");
  }
  std::cout.flush();
  std::cerr.flush();
  pid_t pid = ::fork();
  if (pid < 0) {
    Abandon(root, config, record, record.image_lease);
    return base::ErrnoError("fork", "supervisor");
  }
  if (pid == 0) {
    // The supervisor: a session of its own (a terminal's signals to the caller's group do
    // not reach it), out of the bundle (so the caller can unmount it), holding only its
    // stdio and the report pipe.
    ::setsid();
    if (::chdir("/") != 0) ::_exit(1);
    ::close(report[0]);
    if (::dup2(report[1], 3) < 0) ::_exit(1);
    if (!spec.console_socket.empty()) {
      // The workload's stdio is the console's pty. runc's callers (containerd's shim) read
      // create's stdout and stderr until they close: holding them would hang create.
      int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
      if (null < 0 || ::dup2(null, 0) < 0 || ::dup2(null, 1) < 0 || ::dup2(null, 2) < 0) {
        ::_exit(1);
      }
    }
    ::close_range(4, ~0U, 0);
    RuntimeLog supervisor_log = log;
    supervisor_log.set_stderr(false);
    int status = RunSupervisor(spec, supervisor_log, base::UniqueFd(3));
    std::cout.flush();
    ::_exit(status);
  }
  ::close(report[1]);
  base::UniqueFd report_fd(report[0]);
  record.pid = pid;
  record.pid_start = ProcessStartTime(pid).value_or(0);
  absl::Status saved = root.Save(record);
  std::string line = saved.ok()
                         ? ReadReport(report_fd.Get(), config.boot_timeout_ms + kReportMarginMs)
                         : "error " + std::string(saved.message());
  if (line != "ok") {
    ::kill(pid, SIGKILL);
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    Abandon(root, config, record, record.image_lease);
    return absl::InternalError(line.starts_with("error ") ? line.substr(6) : line);
  }
  absl::Status pid_file = WritePidFile(inv.Get("pid-file"), pid);
  if (!pid_file.ok()) {
    ::kill(pid, SIGKILL);
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    Abandon(root, config, record, record.image_lease);
    return pid_file;
  }
  log.Debug("container " + id + " created: supervisor " + std::to_string(pid));
  return Created{pid};
}

absl::StatusOr<ContainerRecord> Running(const StateRoot& root, const std::string& id) {
  EMBER_ASSIGN_OR_RETURN(ContainerRecord record, root.Load(id));
  if (!SupervisorAlive(record)) return absl::FailedPreconditionError("container not running");
  return record;
}

absl::StatusOr<int> Start(const Invocation& inv) {
  EMBER_ASSIGN_OR_RETURN(std::string id, TheId(inv));
  StateRoot root(inv.global.root);
  EMBER_ASSIGN_OR_RETURN(ContainerRecord record, root.Load(id));
  ContainerStatus status = StatusOf(root, record);
  if (status == ContainerStatus::kStopped) {
    return absl::FailedPreconditionError("cannot start a container that has stopped");
  }
  if (status != ContainerStatus::kCreated) {
    return absl::FailedPreconditionError(std::string("cannot start an already ") +
                                         StatusName(status) + " container");
  }
  EMBER_RETURN_IF_ERROR(AskSupervisor(root.SupervisorSocket(id), "start").status());
  return 0;
}

absl::StatusOr<int> State(const Invocation& inv) {
  EMBER_ASSIGN_OR_RETURN(std::string id, TheId(inv));
  StateRoot root(inv.global.root);
  EMBER_ASSIGN_OR_RETURN(ContainerRecord record, root.Load(id));
  std::cout << OciStateJson(record, StatusOf(root, record));
  return 0;
}

absl::StatusOr<int> Kill(const Invocation& inv) {
  EMBER_ASSIGN_OR_RETURN(std::string id, TheId(inv));
  if (inv.args.size() > 2) return absl::InvalidArgumentError("kill: too many arguments");
  EMBER_ASSIGN_OR_RETURN(int sig, ParseSignal(inv.args.size() == 2 ? inv.args[1] : "SIGTERM"));
  StateRoot root(inv.global.root);
  EMBER_ASSIGN_OR_RETURN(ContainerRecord record, Running(root, id));
  std::string request = "kill " + std::to_string(sig) + (inv.Has("all") ? " all" : "");
  absl::StatusOr<std::string> answer = AskSupervisor(root.SupervisorSocket(id), request);
  if (!answer.ok() && !SupervisorAlive(record)) {
    return absl::FailedPreconditionError("container not running");
  }
  if (!answer.ok()) return answer.status();
  return 0;
}

// Removes what a stopped container leaves: its tap (when its supervisor was killed outright
// and could not), its image lease and its state directory.
absl::Status RemoveStopped(const Invocation& inv, const StateRoot& root,
                           const ContainerRecord& record, const RuntimeLog& log) {
  // The jail first: a jailed VMM has no parent-death signal, so one whose supervisor was
  // killed outright runs on (holding the tap) until its cgroup is emptied.
  EMBER_RETURN_IF_ERROR(DestroyJail(record.jail_dir, record.jail_uid_lease, record.cgroup_dirs));
  if (!record.tap_name.empty()) {
    absl::Status tap = DeleteTap(record.netns_path, record.tap_name);
    if (!tap.ok()) log.Warning(tap.message());
  }
  if (!record.image_lease.empty()) {
    EMBER_ASSIGN_OR_RETURN(RuntimeConfig config, Config(inv));
    EMBER_ASSIGN_OR_RETURN(ImageCache cache,
                           ImageCache::Open({config.image_cache_dir, config.rootfs_tool, {}}));
    EMBER_RETURN_IF_ERROR(cache.Release(record.image_lease));
  }
  return root.Remove(record.id);
}

absl::StatusOr<int> Delete(const Invocation& inv, const RuntimeLog& log) {
  EMBER_ASSIGN_OR_RETURN(std::string id, TheId(inv));
  StateRoot root(inv.global.root);
  const bool force = inv.Has("force");
  absl::StatusOr<ContainerRecord> record = root.Load(id);
  if (absl::IsNotFound(record.status())) {
    if (!force) return record.status();
    (void)root.Remove(id);  // a directory a crashed create left without its record
    return 0;
  }
  if (!record.ok()) return record.status();
  ContainerStatus status = StatusOf(root, *record);
  if (status != ContainerStatus::kStopped) {
    if (!force) {
      return absl::FailedPreconditionError("cannot delete container " + id +
                                           " that is not stopped: " + StatusName(status));
    }
    if (!AskSupervisor(root.SupervisorSocket(id), "kill 9").ok() && SupervisorAlive(*record)) {
      // No answer (it is still booting): SIGKILL, and its VMM dies with it (PDEATHSIG).
      base::UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, record->pid, 0)));
      if (pidfd && SupervisorAlive(*record)) {
        ::syscall(SYS_pidfd_send_signal, pidfd.Get(), SIGKILL, nullptr, 0);
      }
    }
    if (!WaitGone(*record, kSupervisorExitTimeoutMs)) {
      return absl::DeadlineExceededError("container " + id + "'s supervisor (pid " +
                                         std::to_string(record->pid) + ") did not exit");
    }
  }
  EMBER_RETURN_IF_ERROR(RemoveStopped(inv, root, *record, log));
  return 0;
}

absl::StatusOr<int> PauseResume(const Invocation& inv) {
  EMBER_ASSIGN_OR_RETURN(std::string id, TheId(inv));
  StateRoot root(inv.global.root);
  EMBER_ASSIGN_OR_RETURN(ContainerRecord record, Running(root, id));
  (void)record;
  EMBER_RETURN_IF_ERROR(AskSupervisor(root.SupervisorSocket(id), inv.command).status());
  return 0;
}

absl::StatusOr<int> Ps(const Invocation& inv) {
  EMBER_ASSIGN_OR_RETURN(std::string id, TheId(inv));
  StateRoot root(inv.global.root);
  EMBER_ASSIGN_OR_RETURN(ContainerRecord record, root.Load(id));
  std::vector<int> pids;
  if (SupervisorAlive(record)) {
    absl::StatusOr<std::string> answer = AskSupervisor(root.SupervisorSocket(id), "pids");
    std::istringstream in(answer.ok() ? *answer : std::to_string(record.pid));
    for (int pid; in >> pid;) {
      if (pid > 0) pids.push_back(pid);
    }
  }
  std::string format = inv.Get("format", "table");
  if (format == "json") {
    std::cout << json(pids).dump() << "\n";
  } else if (format == "table") {
    std::cout << "PID\n";
    for (int pid : pids) std::cout << pid << "\n";
  } else {
    return absl::InvalidArgumentError("invalid format option: " + format);
  }
  return 0;
}

absl::StatusOr<int> List(const Invocation& inv) {
  StateRoot root(inv.global.root);
  std::string format = inv.Get("format", "table");
  json all = json::array();
  if (format == "table" && !inv.Has("quiet"))
    std::cout << "ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER\n";
  for (const std::string& id : root.List()) {
    absl::StatusOr<ContainerRecord> record = root.Load(id);
    if (!record.ok()) continue;
    ContainerStatus status = StatusOf(root, *record);
    int pid = status == ContainerStatus::kStopped ? 0 : record->pid;
    if (inv.Has("quiet")) {
      std::cout << id << "\n";
    } else if (format == "json") {
      all.push_back(json::parse(OciStateJson(*record, status)));
    } else {
      std::cout << id << "\t" << pid << "\t" << StatusName(status) << "\t" << record->bundle << "\t"
                << record->created << "\troot\n";
    }
  }
  if (format == "json" && !inv.Has("quiet")) std::cout << all.dump() << "\n";
  return 0;
}

absl::StatusOr<int> Features() {
  json features = {
      {"ociVersionMin", "1.0.0"},
      {"ociVersionMax", "1.1.0"},
      {"hooks", json::array()},
      {"mountOptions", json::array()},
      {"linux",
       {{"namespaces", {"network"}},
        {"capabilities", json::array()},
        {"cgroup", {{"v1", false}, {"v2", false}, {"systemd", false}, {"systemdUser", false}}},
        {"seccomp", {{"enabled", false}}},
        {"apparmor", {{"enabled", false}}},
        {"selinux", {{"enabled", false}}}}},
      {"annotations",
       {{"io.ember.runtime", "microvm"},
        {kAnnotationKernel, "the guest kernel (absolute path)"},
        {kAnnotationBootArgs, "the guest kernel command line"},
        {kAnnotationVcpus, "vCPUs, 1-32"},
        {kAnnotationMemory, "guest memory, e.g. 512Mi"}}},
  };
  std::cout << features.dump(2) << "\n";
  return 0;
}

// The process exec runs: --process's file, else the command line's.
absl::StatusOr<BundleProcess> ExecProcess(const Invocation& inv) {
  if (inv.Has("process")) return LoadProcess(inv.Get("process"));
  if (inv.args.size() < 2) {
    return absl::InvalidArgumentError("exec: give --process P.json or a command after the id");
  }
  BundleProcess process;
  process.args.assign(inv.args.begin() + 1, inv.args.end());
  auto it = inv.flags.find("env");
  if (it != inv.flags.end()) process.env = it->second;
  process.cwd = inv.Get("cwd", "/");
  process.terminal = inv.Has("tty");
  if (std::string user = inv.Get("user"); !user.empty()) {
    std::size_t colon = user.find(':');
    try {
      process.uid = static_cast<uint32_t>(std::stoul(user.substr(0, colon)));
      if (colon != std::string::npos) {
        process.gid = static_cast<uint32_t>(std::stoul(user.substr(colon + 1)));
      }
    } catch (const std::exception&) {
      return absl::InvalidArgumentError("exec: --user takes UID[:GID], not \"" + user + "\"");
    }
  }
  return process;
}

// Relays one exec until it ends: its status. Signals this process gets go to the process.
int RelayExec(WorkloadRelay& relay, const RuntimeLog& log) {
  sigset_t mask;
  sigemptyset(&mask);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) sigaddset(&mask, sig);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);
  base::UniqueFd signals(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  ::signal(SIGPIPE, SIG_IGN);
  while (true) {
    std::vector<pollfd> fds = {{signals.Get(), POLLIN, 0}};
    relay.AddPollFds(&fds);
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return 255;
    }
    if (fds[0].revents != 0) {
      signalfd_siginfo info{};
      while (::read(signals.Get(), &info, sizeof(info)) == sizeof(info)) {
        (void)relay.Signal(static_cast<int>(info.ssi_signo), false);
      }
    }
    absl::StatusOr<std::optional<int>> ended = relay.OnReady(fds, 1);
    if (!ended.ok()) {
      log.Error(ended.status().message());
      return 255;
    }
    if (*ended) return **ended;
  }
}

absl::StatusOr<int> Exec(const Invocation& inv, const RuntimeLog& log) {
  EMBER_ASSIGN_OR_RETURN(std::string id, TheId(inv));
  StateRoot root(inv.global.root);
  EMBER_ASSIGN_OR_RETURN(ContainerRecord record, root.Load(id));
  ContainerStatus status = StatusOf(root, record);
  if (status == ContainerStatus::kStopped || status == ContainerStatus::kCreating) {
    return absl::FailedPreconditionError("cannot exec in a stopped container");
  }
  if (status == ContainerStatus::kPaused && !inv.Has("ignore-paused")) {
    return absl::FailedPreconditionError("cannot exec in a paused container");
  }
  EMBER_ASSIGN_OR_RETURN(BundleProcess process, ExecProcess(inv));
  if (process.terminal && inv.Get("console-socket").empty() && inv.Has("detach")) {
    return absl::InvalidArgumentError(
        "cannot allocate tty if runc will detach without setting console socket");
  }
  // Jailed, the VMM owns the directory its socket is in: connect only to that very socket.
  base::UniqueFd jail_vsock;
  if (!record.jail_dir.empty()) {
    EMBER_ASSIGN_OR_RETURN(jail_vsock, OpenJailVsock(record.jail_dir + "/root", record.jail_uid));
  }
  const agent_client::Endpoint endpoint = agent_client::Endpoint::Vsock(
      jail_vsock ? agent_client::SocketFdPath(jail_vsock) : root.VsockPath(id));
  const v1::ExecRequest request = PlanExec(process);
  const std::string console_socket =
      process.terminal && !inv.Get("console-socket").empty()
          ? std::filesystem::absolute(inv.Get("console-socket")).string()
          : std::string();
  // With a console socket the process's stdio is a pty whose master goes to the caller.
  base::UniqueFd console;
  auto stdio = [&]() -> absl::StatusOr<WorkloadRelay::Stdio> {
    if (console_socket.empty()) return WorkloadRelay::Stdio{};
    EMBER_ASSIGN_OR_RETURN(
        console, OpenConsole(console_socket, process.console_height, process.console_width));
    return WorkloadRelay::Stdio{console.Get(), console.Get(), console.Get()};
  };
  if (!inv.Has("detach")) {
    EMBER_ASSIGN_OR_RETURN(WorkloadRelay::Stdio fds, stdio());
    EMBER_ASSIGN_OR_RETURN(std::unique_ptr<WorkloadRelay> relay,
                           WorkloadRelay::Start(endpoint, request, fds));
    EMBER_RETURN_IF_ERROR(WritePidFile(inv.Get("pid-file"), ::getpid()));
    return RelayExec(*relay, log);
  }
  // Detached: a child of ours relays (the caller, a subreaper, inherits it) and this process
  // returns once the agent said the process runs.
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) return base::ErrnoError("pipe2", "exec report");
  std::cout.flush();
  pid_t pid = ::fork();
  if (pid < 0) return base::ErrnoError("fork", "exec");
  if (pid == 0) {
    ::setsid();
    if (::chdir("/") != 0) ::_exit(1);
    ::close(report[0]);
    if (!console_socket.empty()) {
      // The process's stdio is the pty. The caller reads this command's stdout and stderr
      // until they close (containerd's shim does): holding them would hang it.
      int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
      if (null < 0 || ::dup2(null, 0) < 0 || ::dup2(null, 1) < 0 || ::dup2(null, 2) < 0) {
        ::_exit(1);
      }
      ::close(null);
    }
    RuntimeLog child_log = log;
    child_log.set_stderr(false);
    absl::StatusOr<WorkloadRelay::Stdio> fds = stdio();
    absl::StatusOr<std::unique_ptr<WorkloadRelay>> relay =
        fds.ok() ? WorkloadRelay::Start(endpoint, request, *fds)
                 : absl::StatusOr<std::unique_ptr<WorkloadRelay>>(fds.status());
    std::string line =
        relay.ok() ? "ok\n" : "error " + std::string(relay.status().message()) + "\n";
    ssize_t ignored = ::write(report[1], line.data(), line.size());
    (void)ignored;
    ::close(report[1]);
    if (!relay.ok()) ::_exit(1);
    ::_exit(RelayExec(**relay, child_log));
  }
  ::close(report[1]);
  base::UniqueFd report_fd(report[0]);
  std::string line = ReadReport(report_fd.Get(), 60'000);
  if (line != "ok") {
    ::kill(pid, SIGKILL);
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    return absl::InternalError(line.starts_with("error ") ? line.substr(6) : line);
  }
  EMBER_RETURN_IF_ERROR(WritePidFile(inv.Get("pid-file"), pid));
  return 0;
}

absl::StatusOr<int> Run(const Invocation& inv, const RuntimeLog& log) {
  EMBER_ASSIGN_OR_RETURN(Created created, CreateContainer(inv, log));
  EMBER_ASSIGN_OR_RETURN(std::string id, TheId(inv));
  StateRoot root(inv.global.root);
  absl::Status started = AskSupervisor(root.SupervisorSocket(id), "start").status();
  if (started.ok() && inv.Has("detach")) return 0;
  if (!started.ok()) ::kill(created.supervisor, SIGKILL);
  int status = 0;
  while (::waitpid(created.supervisor, &status, 0) < 0 && errno == EINTR) {
  }
  // runc's `run` destroys the container once it has ended: nothing of it outlives the command.
  EMBER_ASSIGN_OR_RETURN(ContainerRecord record, root.Load(id));
  EMBER_RETURN_IF_ERROR(RemoveStopped(inv, root, record, log));
  if (!started.ok()) return started;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

absl::StatusOr<int> RunCommand(const Invocation& inv, const RuntimeLog& log) {
  const std::string& command = inv.command;
  if (command == "create") {
    EMBER_ASSIGN_OR_RETURN(Created created, CreateContainer(inv, log));
    (void)created;
    return 0;
  }
  if (command == "run") return Run(inv, log);
  if (command == "start") return Start(inv);
  if (command == "state") return State(inv);
  if (command == "kill") return Kill(inv);
  if (command == "delete") return Delete(inv, log);
  if (command == "pause" || command == "resume") return PauseResume(inv);
  if (command == "ps") return Ps(inv);
  if (command == "list") return List(inv);
  if (command == "exec") return Exec(inv, log);
  if (command == "features") return Features();
  return absl::UnimplementedError("ember-runtime does not support \"" + command +
                                  "\": a container's resources are its VM's, fixed at create; "
                                  "checkpoint and restore are not implemented yet");
}

}  // namespace ember::runtime
