// ember-vmm: runs one microVM, standalone from a config file or (later) driven by emberd.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "vmm/base/clock.h"
#include "vmm/base/logging.h"
#include "vmm/base/unique_fd.h"
#include "vmm/config_loader.h"
#include "vmm/control/build_failure.h"
#include "vmm/control/control_server.h"
#include "vmm/exit_code.h"
#include "vmm/fcapi/firecracker_flags.h"
#include "vmm/pool_slot.h"
#include "vmm/restore.h"
#include "vmm/seccomp.h"
#include "vmm/startup_profile.h"
#include "vmm/vm_config.h"
#include "vmm/vmm.h"

namespace ember::vmm {
namespace {

constexpr char kUsage[] =
    "usage: ember-vmm [--config FILE] [options]\n"
    "\n"
    "Runs one microVM. With no kernel in the config, boots Ember's built-in test guest.\n"
    "\n"
    "  --config FILE        VM configuration (Firecracker's config-file JSON format), read\n"
    "                       through ember-config, which must sit beside ember-vmm\n"
    "  --config-proto FILE  VM configuration as a binary ember.v1.VmConfig message (emberd)\n"
    "  --serial-out FILE    write the guest's serial console to FILE instead of stdout\n"
    "  --log-path FILE      append the VMM's log to FILE instead of stderr\n"
    "  --log-level LEVEL    Error, Warning, Info (default), Debug or Trace\n"
    "  --metrics-path FILE  write metrics JSON to FILE every 60 s and at exit\n"
    "  --start-time-us N    CLOCK_MONOTONIC microseconds at which the caller started us;\n"
    "                       boot time counts from here (default: our own start)\n"
    "  --control-fd N       serve the listening control socket N (emberd): the VM is built\n"
    "                       but its vCPUs start only on the controller's Start request\n"
    "                       (a restored VM waits PAUSED for the controller's Resume)\n"
    "  --pool-slot --control-fd N  (emberd's VMM pool) prepare now (seccomp filters, /dev/kvm,\n"
    "                       the VM), then take this VMM's arguments and fds from the one\n"
    "                       connection on the listening socket N and run as if exec'd with them\n"
    "  --seccomp MODE       per-thread seccomp filters: enforce (default), log, or off\n"
    "  --exit-record FILE   when the VM ends, write \"CODE REASON\" (one line) to FILE, so a\n"
    "                       supervisor that was not watching can still learn how it ended\n"
    "  --restore-from FILE  restore the snapshot whose state file is FILE instead of booting\n"
    "  --restore-mem FILE   ... and whose memory file is FILE (mapped lazily, copy-on-write)\n"
    "  --restore-mem-name NAME  with --restore-mem: the memory file's name, when FILE is not\n"
    "                       it (emberd hands over the file it checked as /proc/self/fd/N):\n"
    "                       what this VM's diff snapshots name as their base, and NAME.ws the\n"
    "                       default working set\n"
    "  --base-memory-file NAME=FILE  with --restore-from, repeatable: the base memory file\n"
    "                       that a diff's state file names NAME is FILE; once one is given,\n"
    "                       every base must be, and no name from the state file is opened;\n"
    "                       split at the last '=' (a NAME may hold one, a FILE may not)\n"
    "  --restore-mem-backend file|uffd\n"
    "                       file (default): map the memory file copy-on-write; uffd: serve\n"
    "                       it page by page through userfaultfd and record the pages the\n"
    "                       guest touches (its working set) into MEM.ws when the VM ends\n"
    "  --restore-uffd-handler SOCK  instead of --restore-mem: Firecracker's Uffd backend; the\n"
    "                       VMM registers guest memory with a userfaultfd and sends it, with\n"
    "                       a JSON description of the memory regions, to the page-fault\n"
    "                       handler listening on the Unix socket SOCK, which serves the\n"
    "                       faults from the snapshot's memory file; the VM ends if it exits\n"
    "  --prefetch-working-set  with uffd: load the recorded working set before the vCPUs run\n"
    "  --working-set FILE   with uffd: the working-set file (default: the memory file + .ws)\n"
    "  --restore-overrides FILE  with --restore-from: the clone's new drive files, taps,\n"
    "                       guest MACs and vsock path, as a binary ember.v1.RestoreOverrides\n"
    "                       message (emberd); the flags below add to it\n"
    "  --drive-override ID=PATH  with --restore-from: give drive ID a new backing file\n"
    "  --net-override IFACE_ID=TAP[,MAC]  with --restore-from: give network interface\n"
    "                       IFACE_ID a new host tap (and guest MAC)\n"
    "  --vsock-override PATH  with --restore-from: a new host socket path for the vsock\n"
  "  --allow-dir DIR      with --restore-from, repeatable: a drive or vsock path that the\n"
  "                       state file names and no override replaces must lie under DIR\n"
  "                       (without symlinks or \"..\" leading out); with none, every such\n"
  "                       path is refused: a state file does not choose host files\n"
    "                       A restored VM logs and writes metrics only where --log-path and\n"
    "                       --metrics-path say, never where its state file says.\n"
    "  --snapshot-path FILE, --snapshot-mem-path FILE\n"
    "                       on SIGUSR1, pause, write a snapshot to these files and resume;\n"
    "                       on SIGUSR2, the same with a diff snapshot to FILE-diffN; the VM\n"
    "                       runs on once its memory is written, before the files are synced\n"
    "  --snapshot-no-sync   do not fsync those snapshots' files: faster, but a crash may\n"
    "                       lose (or, on some file systems, empty) the latest snapshot\n"
    "  --dirs-by-fd         (emberd) once running, open no directory by name: a snapshot\n"
    "                       request comes with its directory's fd (or asks for no sync), a\n"
    "                       uffd restore's working-set directory is opened at the start;\n"
    "                       the VMM thread's seccomp filter then refuses opening a directory\n"
    "  --help               this text\n"
    "\n"
    "Firecracker's flags work too (as does a `firecracker` symlink to ember-vmm): --api-sock\n"
    "PATH serves Firecracker's REST API (ember-fc-api --help); --config-file FILE --no-api,\n"
    "--level, --no-seccomp, --id, --boot-timer map onto the flags above.\n"
    "\n"
    "Exit codes: 0 guest reset or SIGTERM, 1 VMM error, 2 bad input, 3 guest triple fault,\n"
    "4 KVM internal error, 5 KVM entry failure, 6 unexpected vCPU exit.\n";

struct Flags {
  std::string config_path;        // JSON
  std::string config_proto_path;  // binary VmConfig
  std::string serial_out;
  std::string log_path;
  std::string log_level;
  std::string metrics_path;
  std::string exit_record;
  std::uint64_t start_us = 0;
  SeccompSetting seccomp = SeccompSetting::kEnforce;
  int control_fd = -1;  // --control-fd: driven by emberd over vmm/control/
  std::string restore_from;
  std::string restore_mem;
  std::string restore_mem_name;   // --restore-mem-name
  snapshot::HandedFiles base_files;  // --base-memory-file
  std::string restore_overrides;  // --restore-overrides: a binary v1::RestoreOverrides
  v1::RestoreOverrides overrides;  // the --*-override flags
  std::vector<std::string> allow_dirs;  // --allow-dir
  std::string snapshot_path;
  std::string snapshot_mem_path;
  bool snapshot_no_sync = false;
  bool dirs_by_fd = false;  // --dirs-by-fd
  std::string restore_mem_backend;  // empty: file
  std::string restore_uffd_handler;  // --restore-uffd-handler: an external handler's socket
  bool prefetch_working_set = false;
  std::string working_set;
};

// Main's thread preparing KVM while the config is read, until Main joins it (main thread only).
// Fail joins it first: exit()'s static destructors must not run under its KVM ioctls.
std::thread* preparing_kvm = nullptr;

[[noreturn]] void Fail(int code, const std::string& message) {
  std::fprintf(stderr, "ember-vmm: error: %s\n", message.c_str());
  control::ReportBuildFailure(code, message);
  if (preparing_kvm != nullptr && preparing_kvm->joinable()) preparing_kvm->join();
  std::exit(code);
}

#ifdef EMBER_VMM_TEST_HOOKS
// Test build only (ember-vmm-test-hooks): makes the thread of the given kind call socket(2),
// which no allowlist has, right after it installed its filter.
jailer::VmmThreadKind g_forbidden_kind;
void SetForbiddenSyscallHook(const std::string& kind) {
  if (kind != "vcpu" && kind != "vmm") Fail(kExitBadInput, "--test-forbidden-syscall: vcpu|vmm");
  g_forbidden_kind = kind == "vcpu" ? jailer::VmmThreadKind::kVcpu : jailer::VmmThreadKind::kVmm;
  SetSeccompInstalledHookForTesting([](jailer::VmmThreadKind installed) {
    if (installed != g_forbidden_kind) return;
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);  // SIGSYS unless in log mode
    std::fprintf(stderr, "forbidden socket() on the %s thread returned %d\n",
                 jailer::VmmThreadKindName(installed), fd);
    if (fd >= 0) ::close(fd);
  });
}
#endif

Flags ParseFlags(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(kExitOk);
    }
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Fail(kExitBadInput, std::string(arg) + " needs a value");
      return argv[++i];
    };
    if (arg == "--config") flags.config_path = value();
    else if (arg == "--config-proto") flags.config_proto_path = value();
    else if (arg == "--serial-out") flags.serial_out = value();
    else if (arg == "--log-path") flags.log_path = value();
    else if (arg == "--log-level") flags.log_level = value();
    else if (arg == "--metrics-path") flags.metrics_path = value();
    else if (arg == "--exit-record") flags.exit_record = value();
    else if (arg == "--seccomp") {
      auto setting = ParseSeccompSetting(value());
      if (!setting.ok()) Fail(kExitBadInput, std::string(setting.status().message()));
      flags.seccomp = *setting;
    }
#ifdef EMBER_VMM_TEST_HOOKS
    else if (arg == "--test-forbidden-syscall") SetForbiddenSyscallHook(value());
#endif
    else if (arg == "--restore-from") flags.restore_from = value();
    else if (arg == "--restore-mem") flags.restore_mem = value();
    else if (arg == "--restore-mem-name") flags.restore_mem_name = value();
    else if (arg == "--base-memory-file") {
      std::string text = value();
      // At the last '=': NAME is a snapshot's path, which may hold one (emberd's FILE is
      // /proc/self/fd/N).
      auto eq = text.rfind('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == text.size()) {
        Fail(kExitBadInput, "--base-memory-file: \"" + text + "\" is not NAME=FILE");
      }
      flags.base_files[text.substr(0, eq)] = text.substr(eq + 1);
    }
    else if (arg == "--restore-mem-backend") flags.restore_mem_backend = value();
    else if (arg == "--restore-uffd-handler") flags.restore_uffd_handler = value();
    else if (arg == "--prefetch-working-set") flags.prefetch_working_set = true;
    else if (arg == "--working-set") flags.working_set = value();
    else if (arg == "--snapshot-path") flags.snapshot_path = value();
    else if (arg == "--snapshot-mem-path") flags.snapshot_mem_path = value();
    else if (arg == "--snapshot-no-sync") flags.snapshot_no_sync = true;
    else if (arg == "--dirs-by-fd") flags.dirs_by_fd = true;
    else if (arg == "--drive-override") {
      std::string text = value();
      auto eq = text.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == text.size()) {
        Fail(kExitBadInput, "--drive-override: \"" + text + "\" is not ID=PATH");
      }
      (*flags.overrides.mutable_drive_path_on_host())[text.substr(0, eq)] = text.substr(eq + 1);
    }
    else if (arg == "--net-override") {
      std::string text = value();
      auto eq = text.find('=');
      auto comma = text.find(',', eq == std::string::npos ? 0 : eq);
      std::string tap = eq == std::string::npos ? "" : text.substr(eq + 1, comma - eq - 1);
      if (eq == 0 || tap.empty() || (comma != std::string::npos && comma + 1 == text.size())) {
        Fail(kExitBadInput, "--net-override: \"" + text + "\" is not IFACE_ID=TAP[,MAC]");
      }
      std::string id = text.substr(0, eq);
      (*flags.overrides.mutable_iface_host_dev_name())[id] = tap;
      if (comma != std::string::npos) {
        (*flags.overrides.mutable_iface_guest_mac())[id] = text.substr(comma + 1);
      }
    }
    else if (arg == "--vsock-override") flags.overrides.set_vsock_uds_path(value());
    else if (arg == "--allow-dir") flags.allow_dirs.push_back(value());
    else if (arg == "--restore-overrides") flags.restore_overrides = value();
    else if (arg == "--control-fd") {
      std::string text = value();
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), flags.control_fd);
      if (ec != std::errc() || end != text.data() + text.size() || flags.control_fd < 0) {
        Fail(kExitBadInput, "--control-fd: \"" + text + "\" is not a file descriptor number");
      }
    }
    else if (arg == "--start-time-us") {
      std::string text = value();
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), flags.start_us);
      if (ec != std::errc() || end != text.data() + text.size()) {
        Fail(kExitBadInput, "--start-time-us: \"" + text + "\" is not a whole number");
      }
    } else {
      Fail(kExitBadInput, "unknown flag \"" + std::string(arg) + "\" (see --help)");
    }
  }
  return flags;
}

// --restore-mem-backend and the working-set flags, which go with uffd only.
absl::Status ApplyMemoryBackendFlags(const Flags& flags, RestoreSource* restore) {
  using Backend = RestoreSource::MemoryBackend;
  if (!flags.restore_uffd_handler.empty()) {
    if (!flags.restore_mem_backend.empty() || flags.prefetch_working_set ||
        !flags.working_set.empty()) {
      return absl::InvalidArgumentError(
          "--restore-uffd-handler takes no --restore-mem-backend, --prefetch-working-set or "
          "--working-set: the handler serves the memory");
    }
    restore->memory_backend = Backend::kUffdHandler;
    restore->uffd_handler_socket = flags.restore_uffd_handler;
    return absl::OkStatus();
  }
  if (flags.restore_mem_backend.empty() || flags.restore_mem_backend == "file") {
    restore->memory_backend = Backend::kFile;
  } else if (flags.restore_mem_backend == "uffd") {
    restore->memory_backend = Backend::kUffd;
  } else {
    return absl::InvalidArgumentError("--restore-mem-backend: \"" + flags.restore_mem_backend +
                                      "\" is not file or uffd");
  }
  if (restore->memory_backend != Backend::kUffd &&
      (flags.prefetch_working_set || !flags.working_set.empty())) {
    return absl::InvalidArgumentError(
        "--prefetch-working-set and --working-set need --restore-mem-backend uffd");
  }
  restore->prefetch_working_set = flags.prefetch_working_set;
  restore->working_set_path = flags.working_set;
  return absl::OkStatus();
}

// A loaded config, or the process ends: exit code 2 for the user's bad input, 1 otherwise.
v1::VmConfig ConfigOrFail(absl::StatusOr<v1::VmConfig> config) {
  if (!config.ok()) {
    bool user_error = config.status().code() == absl::StatusCode::kInvalidArgument;
    Fail(user_error ? kExitBadInput : kExitError, std::string(config.status().message()));
  }
  return std::move(*config);
}

void ConfigureLogging(const Flags& flags, const v1::Logger& logger) {
  std::string level_text = !flags.log_level.empty() ? flags.log_level : logger.level();
  if (!level_text.empty()) {
    base::LogLevel level;
    if (auto status = base::ParseLogLevel(level_text, &level); !status.ok()) {
      Fail(kExitBadInput, std::string(status.message()));
    }
    base::SetLogLevel(level);
  }
  base::SetLogDecorations(!logger.has_show_level() || logger.show_level(),
                          !logger.has_show_log_origin() || logger.show_log_origin());
  // The guest can make this process log, and must not fill the host's disk through it.
  base::SetLogRateLimit(true);
  base::SetLogSizeLimit(logger.has_max_bytes() ? logger.max_bytes() : base::kDefaultLogSizeLimit);
  std::string path = !flags.log_path.empty() ? flags.log_path : logger.log_path();
  if (!path.empty()) {
    if (auto status = base::SetLogFile(path); !status.ok()) {
      Fail(kExitBadInput, std::string(status.message()));
    }
  }
}

int Main(int argc, char** argv) {
  std::uint64_t own_start_us = base::MonotonicMicros();
  // SIGTERM/SIGINT are taken from a signalfd in the VMM loop; block them before any thread
  // exists so every thread inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  // A jail's RLIMIT_FSIZE must fail the write that reaches it (EFBIG: a console byte or log
  // line dropped and counted, a snapshot refused), not kill the VM with SIGXFSZ.
  ::signal(SIGXFSZ, SIG_IGN);

  // A pooled VMM (emberd's VMM pool): prepared now, it runs on below with the arguments of
  // the launch it waits for, as if exec'd with them.
  std::shared_ptr<PreparedKvm> prepared;
  std::vector<std::string> launch_args;
  std::vector<char*> launch_argv;
  if (argc == 4 && std::string_view(argv[1]) == "--pool-slot" &&
      std::string_view(argv[2]) == "--control-fd") {
    int slot_fd = -1;
    const std::string_view text = argv[3];
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), slot_fd);
    if (ec != std::errc() || end != text.data() + text.size() || slot_fd < 0) {
      Fail(kExitBadInput, "--pool-slot --control-fd N: \"" + std::string(text) +
                              "\" is not a file descriptor number");
    }
    prepared = std::make_shared<PreparedKvm>();
    launch_args = RunPoolSlot(slot_fd, prepared.get());
    launch_args.insert(launch_args.begin(), argv[0]);
    for (std::string& arg : launch_args) launch_argv.push_back(arg.data());
    launch_argv.push_back(nullptr);
    argc = static_cast<int>(launch_args.size());
    argv = launch_argv.data();
    own_start_us = base::MonotonicMicros();  // the VM's start-up begins at its launch
  }

  Flags flags = ParseFlags(argc, argv);
  StartupProfile::Begin(own_start_us, flags.start_us);
  // KVM's VM-wide set-up does not depend on the config: on a thread of its own while this one
  // reads the config and compiles the filters. It ends before Vmm::Create, long before any
  // guest code runs, so it needs no filter of its own.
  std::thread preparing;
  if (!prepared) {
    prepared = std::make_shared<PreparedKvm>();
    preparing = std::thread([p = prepared.get()] { (void)PrepareKvm(*p); });
    preparing_kvm = &preparing;
  }
  control::SetBuildFailureSinks(flags.control_fd, flags.exit_record);
  VmmOptions options;
  std::optional<PendingVmConfig> pending_config;  // --config: ember-config at work
  if (!flags.restore_from.empty()) {
    if (!flags.config_path.empty() || !flags.config_proto_path.empty() ||
        flags.restore_mem.empty() == flags.restore_uffd_handler.empty()) {
      Fail(kExitBadInput, "--restore-from needs one of --restore-mem and --restore-uffd-handler "
                          "and takes no --config");
    }
    v1::RestoreOverrides overrides;
    if (!flags.restore_overrides.empty()) {
      auto loaded = LoadRestoreOverrides(flags.restore_overrides);
      if (!loaded.ok()) Fail(kExitBadInput, std::string(loaded.status().message()));
      overrides = std::move(*loaded);
    }
    overrides.MergeFrom(flags.overrides);  // a flag replaces the file's entry for its device
    auto allowed = base::PathRules::Open(flags.allow_dirs, "ember-vmm");
    if (!allowed.ok()) Fail(kExitBadInput, std::string(allowed.status().message()));
    if (!flags.restore_mem_name.empty() && flags.restore_mem.empty()) {
      Fail(kExitBadInput, "--restore-mem-name goes with --restore-mem");
    }
    if (auto status = PrepareRestore(flags.restore_from,
                                     {flags.restore_mem, flags.restore_mem_name, flags.base_files},
                                     overrides, *allowed, &options);
        !status.ok()) {
      Fail(kExitBadInput, std::string(status.message()));
    }
    if (auto status = ApplyMemoryBackendFlags(flags, &*options.restore); !status.ok()) {
      Fail(kExitBadInput, std::string(status.message()));
    }
  } else if (flags.overrides.ByteSizeLong() != 0 || !flags.restore_overrides.empty() ||
             !flags.allow_dirs.empty() || !flags.restore_mem_name.empty() ||
             !flags.base_files.empty() ||
             !flags.restore_mem.empty() || !flags.restore_uffd_handler.empty() ||
             !flags.restore_mem_backend.empty() || flags.prefetch_working_set ||
             !flags.working_set.empty()) {
    Fail(kExitBadInput, "--restore-mem, --restore-mem-name, --base-memory-file, "
                        "--restore-mem-backend, --restore-uffd-handler, "
                        "--prefetch-working-set, "
                        "--working-set, --restore-overrides, --drive-override, --net-override, "
                        "--vsock-override and --allow-dir need --restore-from");
  } else if (!flags.config_path.empty() || !flags.config_proto_path.empty()) {
    if (!flags.config_path.empty() && !flags.config_proto_path.empty()) {
      Fail(kExitBadInput, "--config and --config-proto are alternatives; give one");
    }
    if (flags.config_path.empty()) {
      options.config = ConfigOrFail(LoadVmConfigBinaryFile(flags.config_proto_path));
    } else {
      auto started = StartLoadingVmConfigFile(flags.config_path);
      if (!started.ok()) Fail(kExitError, std::string(started.status().message()));
      pending_config.emplace(std::move(*started));
    }
  }
  StartupProfile::Mark("read_config");  // a restore's state file read and checked here
  // Compiled while ember-config, if any, parses the JSON on the other CPU.
  if (flags.dirs_by_fd && !flags.snapshot_path.empty() && !flags.snapshot_no_sync) {
    Fail(kExitBadInput, "--dirs-by-fd takes --snapshot-path only with --snapshot-no-sync: its "
                        "snapshots would sync their directory, opened by name");
  }
  if (auto status = ConfigureSeccomp(flags.seccomp, flags.dirs_by_fd); !status.ok()) {
    Fail(kExitError, std::string(status.message()));
  }
  StartupProfile::Mark("seccomp_compile");
  if (pending_config) options.config = ConfigOrFail(pending_config->Finish());
  if (flags.snapshot_path.empty() != flags.snapshot_mem_path.empty()) {
    Fail(kExitBadInput, "--snapshot-path and --snapshot-mem-path go together");
  }
  if (!flags.snapshot_path.empty()) {
    options.snapshot_on_sigusr1 = SnapshotPaths{flags.snapshot_path, flags.snapshot_mem_path,
                                                /*diff=*/false, !flags.snapshot_no_sync};
  }
  if (!flags.metrics_path.empty()) options.config.mutable_metrics()->set_metrics_path(flags.metrics_path);
  if (auto status = ValidateVmConfig(options.config); !status.ok()) {
    Fail(kExitBadInput, std::string(status.message()));
  }
  ConfigureLogging(flags, options.config.logger());
  WarnIfSeccompRelaxed(flags.seccomp);
  options.start_us = flags.start_us != 0 ? flags.start_us : own_start_us;

  base::UniqueFd serial_out;
  if (!flags.serial_out.empty()) {
    serial_out.Reset(::open(flags.serial_out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!serial_out) {
      Fail(kExitBadInput, "--serial-out: cannot open \"" + flags.serial_out +
                              "\": " + std::strerror(errno));
    }
    options.console_out_fd = serial_out.Get();
  }

  // Opened now, while every path is still allowed; written once, when the VM ends.
  base::UniqueFd exit_record;
  if (!flags.exit_record.empty()) {
    exit_record.Reset(::open(flags.exit_record.c_str(),
                             O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!exit_record) {
      Fail(kExitBadInput, "--exit-record: cannot open \"" + flags.exit_record +
                              "\": " + std::strerror(errno));
    }
  }

  if (flags.control_fd >= 0) options.console_input = false;  // emberd's VMs have no terminal
  StartupProfile::Mark("options");
  if (preparing.joinable()) preparing.join();
  preparing_kvm = nullptr;
  StartupProfile::Mark("kvm_wait");
  options.prepared = std::move(prepared);
  auto vmm = Vmm::Create(options);
  if (!vmm.ok()) {
    bool user_error = vmm.status().code() == absl::StatusCode::kInvalidArgument;
    Fail(user_error ? kExitBadInput : kExitError, std::string(vmm.status().message()));
  }
  VmExit exit = flags.control_fd >= 0
                    ? control::ServeControlled(**vmm, flags.control_fd, options.start_us)
                    : (*vmm)->Run();
  if (exit.code == kExitOk) {
    EMBER_LOG(kInfo) << "VM ended: " << exit.reason;
  } else {
    EMBER_LOG(kError) << "VM ended: " << exit.reason << " (exit code " << exit.code << ")";
  }
  if (exit_record) {
    std::string line = std::to_string(exit.code) + " " + exit.reason + "\n";
    if (::pwrite(exit_record.Get(), line.data(), line.size(), 0) !=
        static_cast<ssize_t>(line.size())) {
      EMBER_LOG(kError) << "--exit-record: cannot write \"" << flags.exit_record
                        << "\": " << std::strerror(errno);
    }
  }
  return exit.code;
}

}  // namespace
}  // namespace ember::vmm

int main(int argc, char** argv) {
  // Firecracker's flags first: --api-sock execs the API front and does not return.
  ember::fcapi::FirecrackerCommandLine command_line(argc, argv);
  return ember::vmm::Main(command_line.argc(), command_line.argv());
}
