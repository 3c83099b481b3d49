#include "vmm/vmm.h"

#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "vmm/arch/x86_64/acpi.h"
#include "vmm/arch/x86_64/boot_cpu.h"
#include "vmm/arch/x86_64/cpu_template.h"
#include "vmm/arch/x86_64/cpuid.h"
#include "vmm/arch/x86_64/layout.h"
#include "vmm/arch/x86_64/mptable.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/boot/cmdline.h"
#include "vmm/boot/guest_loader.h"
#include "vmm/boot/kernel_image.h"
#include "vmm/drive_config.h"
#include "vmm/net_config.h"
#include "vmm/seccomp.h"
#include "virtio/block/block_device.h"
#include "vmm/vm_config.h"

namespace ember::vmm {
namespace {

constexpr std::uint64_t kMetricsFlushSeconds = 60;

}  // namespace

std::uint64_t MemBytesOf(const v1::VmConfig& config) {
  return std::uint64_t{rules::MemMibOf(config)} * arch::kMiB;
}

absl::StatusOr<std::unique_ptr<Vmm>> Vmm::Create(const VmmOptions& options) {
  std::unique_ptr<Vmm> vmm(new Vmm());
  EMBER_RETURN_IF_ERROR(vmm->Build(options));
  return vmm;
}

Vmm::~Vmm() {
  for (auto& vcpu : vcpus_) vcpu->Stop();
}

absl::Status Vmm::Build(const VmmOptions& options) {
  const v1::MachineConfig& machine = options.config.machine_config();
  std::uint32_t vcpu_count = VcpuCountOf(options.config);
  std::uint64_t mem_bytes = MemBytesOf(options.config);
  metrics_path_ = options.config.metrics().metrics_path();
  config_ = options.config;

  // Check the kernel before creating anything, so bad input fails fast and cheaply.
  const v1::BootSource& boot = options.config.boot_source();
  std::optional<KernelImage> kernel;
  if (options.restore) {
    // A restore boots nothing: the kernel is already in the memory file.
  } else if (boot.kernel_image_path().empty()) {
    kernel = KernelImage::Builtin();
  } else {
    auto image = KernelImage::FromFile(boot.kernel_image_path());
    if (!image.ok()) {
      return absl::InvalidArgumentError("boot-source.kernel_image_path: " +
                                        std::string(image.status().message()));
    }
    kernel = std::move(*image);
  }
  // Every other piece of user input is checked before KVM is touched, too.
  EMBER_RETURN_IF_ERROR(rules::CheckVmConfig(options.config));
  EMBER_ASSIGN_OR_RETURN(std::vector<virtio::block::BlockConfig> drives,
                         DriveConfigs(options.config));
  EMBER_ASSIGN_OR_RETURN(std::vector<virtio::net::NetConfig> nets, NetConfigs(options.config));
  std::optional<virtio::vsock::VsockConfig> vsock = VsockConfigOf(options.config);
  EMBER_ASSIGN_OR_RETURN(arch::CpuTemplate cpu_template,
                         arch::ParseCpuTemplate(machine.cpu_template().empty()
                                                    ? std::string("host")
                                                    : machine.cpu_template()));

  EMBER_ASSIGN_OR_RETURN(kvm_, kvm::Kvm::Open());
  EMBER_ASSIGN_OR_RETURN(vm_, kvm_->CreateVm());
  if (options.restore) {
    // The layout a VM of this size has, never the state file's own say (PrepareRestore
    // refuses a state whose regions differ from it).
    std::vector<base::GuestMemory::Range> ranges = arch::GuestRamRanges(mem_bytes);
    auto memory = options.restore->memory_backend == RestoreSource::MemoryBackend::kUffd
                      ? ServeSnapshotMemory(*options.restore, ranges)
                      : MapSnapshotMemory(*options.restore, ranges);
    if (!memory.ok()) {
      return absl::InvalidArgumentError("snapshot memory file: " +
                                        std::string(memory.status().message()));
    }
    memory_ = std::move(*memory);
  } else {
    EMBER_ASSIGN_OR_RETURN(memory_, base::GuestMemory::Create(arch::GuestRamRanges(mem_bytes)));
  }
  // Diff snapshots need to know what changed: KVM logs the guest's writes per memslot, guest
  // memory the VMM's own (device) writes.
  const bool track_dirty = machine.track_dirty_pages();
  if (track_dirty) memory_->EnableDirtyTracking();
  std::uint32_t slot = 0;
  for (const base::GuestRegion& region : memory_->regions()) {
    EMBER_RETURN_IF_ERROR(vm_->SetUserMemoryRegion(slot++, region.guest_start, region.size,
                                                   region.host,
                                                   track_dirty ? KVM_MEM_LOG_DIRTY_PAGES : 0));
  }
  EMBER_RETURN_IF_ERROR(vm_->SetTssAndIdentityMap(arch::kTssAddr, arch::kIdentityMapAddr));
  EMBER_RETURN_IF_ERROR(vm_->CreateIrqchip());
  EMBER_RETURN_IF_ERROR(vm_->CreatePit());
  EMBER_ASSIGN_OR_RETURN(loop_, base::EventLoop::Create());
  EMBER_RETURN_IF_ERROR(CreateLegacyDevices(options));
  EMBER_RETURN_IF_ERROR(CreateVirtioDevices(drives, nets, vsock));
  if (options.restore) {
    EMBER_RETURN_IF_ERROR(RestoreFromSnapshot(*options.restore, options.start_us));
    EMBER_RETURN_IF_ERROR(WatchEvents(options));
    state_ = State::kPaused;  // the guest is mid-run; Resume() (or Run()) starts the vCPUs
    EMBER_LOG(kInfo) << "VM restored: " << vcpus_.size() << " vCPU(s), "
                     << memory_->total_size() / arch::kMiB << " MiB from "
                     << options.restore->memory_path;
    return absl::OkStatus();
  }

  cmdline_ = AssembleCmdline(options.config, boot.kernel_image_path().empty(),
                             virtio_devices_.CmdlineTokens());
  EMBER_RETURN_IF_ERROR(CheckCmdlineLength(cmdline_));
  KernelCache cache(KernelCache::DefaultDir());
  GuestBoot guest_boot{&*kernel, boot.initrd_path(), cmdline_,
                       !boot.has_decompress_on_host() || boot.decompress_on_host(), &cache};
  EMBER_ASSIGN_OR_RETURN(LoadedGuest guest, LoadGuest(*memory_, guest_boot));
  EMBER_RETURN_IF_ERROR(arch::WriteMpTable(*memory_, vcpu_count));
  // The same devices as the command line's tokens and the buses: a kernel with ACPI finds
  // them in the DSDT, whether its drivers are built in or modules.
  const arch::AcpiDevices acpi_devices{
      .com1 = arch::IsaDevice{arch::kCom1Port, arch::kCom1Size, arch::kCom1Irq},
      .i8042 = arch::IsaDevice{arch::kI8042Port, arch::kI8042Size, arch::kI8042Irq},
      .virtio_mmio = virtio_devices_.MmioDevices()};
  EMBER_RETURN_IF_ERROR(arch::WriteAcpiTables(*memory_, vcpu_count, acpi_devices));
  EMBER_RETURN_IF_ERROR(CreateVcpus(vcpu_count, guest.entry, cpu_template, options.start_us));
  EMBER_RETURN_IF_ERROR(WatchEvents(options));
  EMBER_LOG(kInfo) << "VM built: " << vcpu_count << " vCPU(s), " << mem_bytes / arch::kMiB
                   << " MiB, kernel " << kernel->name() << " (" << BootPathName(guest.path)
                   << "), command line \"" << cmdline_
                   << "\"";
  return absl::OkStatus();
}

absl::Status Vmm::CreateLegacyDevices(const VmmOptions& options) {
  EMBER_ASSIGN_OR_RETURN(serial_irq_, base::EventFd::Create());
  EMBER_ASSIGN_OR_RETURN(serial_rx_space_, base::EventFd::Create());
  EMBER_ASSIGN_OR_RETURN(reset_event_, base::EventFd::Create());
  EMBER_RETURN_IF_ERROR(vm_->RegisterIrqfd(serial_irq_->Get(), arch::kCom1Irq));

  serial_ = std::make_unique<devices::Serial>(options.console_out_fd, &*serial_irq_,
                                              &*serial_rx_space_);
  i8042_ = std::make_unique<devices::I8042>(&*reset_event_);
  boot_timer_ = std::make_unique<devices::BootTimer>(options.start_us, [this](std::uint64_t us) {
    if (on_boot_) on_boot_(us);
  });
  EMBER_RETURN_IF_ERROR(pio_bus_.Insert(arch::kCom1Port, arch::kCom1Size, serial_.get()));
  EMBER_RETURN_IF_ERROR(pio_bus_.Insert(arch::kI8042Port, arch::kI8042Size, i8042_.get()));
  EMBER_RETURN_IF_ERROR(
      mmio_bus_.Insert(arch::kBootTimerAddr, arch::kBootTimerSize, boot_timer_.get()));
  return absl::OkStatus();
}

absl::Status Vmm::CreateBlockDevices(const std::vector<virtio::block::BlockConfig>& drives) {
  for (const virtio::block::BlockConfig& drive : drives) {
    auto device = virtio::block::BlockDevice::Create(drive);
    if (!device.ok()) {
      // Missing files, bad sizes: the user's input.
      return absl::InvalidArgumentError("drive \"" + drive.drive_id +
                                        "\": " + std::string(device.status().message()));
    }
    EMBER_ASSIGN_OR_RETURN(base::EventFd irq, base::EventFd::Create());
    EMBER_ASSIGN_OR_RETURN(auto transport,
                           virtio::MmioTransport::Create(*memory_, std::move(*device), std::move(irq)));
    EMBER_RETURN_IF_ERROR(virtio_devices_.Add(std::move(transport), mmio_bus_, *vm_, *loop_));
  }
  return absl::OkStatus();
}

absl::Status Vmm::CreateVcpus(std::uint32_t count, std::uint64_t entry,
                              arch::CpuTemplate cpu_template, std::uint64_t start_us) {
  EMBER_ASSIGN_OR_RETURN(std::vector<kvm_cpuid_entry2> supported, kvm_->GetSupportedCpuid());
  VcpuRunner::InstallKickSignalHandler();
  for (std::uint32_t id = 0; id < count; ++id) {
    EMBER_ASSIGN_OR_RETURN(kvm::Vcpu vcpu, vm_->CreateVcpu(id));
    std::vector<kvm_cpuid_entry2> cpuid = arch::NormalizeCpuid(supported, id, count);
    arch::ApplyCpuTemplate(cpu_template, cpuid);
    EMBER_RETURN_IF_ERROR(vcpu.SetCpuid(cpuid));
    vcpu_cpuid_.push_back(std::move(cpuid));
    if (id == 0) {
      EMBER_RETURN_IF_ERROR(arch::ConfigureBootVcpu(vcpu, entry));
    } else {
      EMBER_RETURN_IF_ERROR(arch::ConfigureApplicationVcpu(vcpu));
    }
    AdoptVcpu(std::move(vcpu), start_us);
  }
  return absl::OkStatus();
}

void Vmm::AdoptVcpu(kvm::Vcpu vcpu, std::uint64_t start_us) {
  vcpus_.push_back(std::make_unique<VcpuRunner>(
      std::move(vcpu), &pio_bus_, &mmio_bus_, start_us,
      [this](VmExit exit) { loop_->Post([this, exit] { Finish(exit); }); }));
}

absl::Status Vmm::WatchEvents(const VmmOptions& options) {
  EMBER_RETURN_IF_ERROR(loop_->Add(reset_event_->Get(), EPOLLIN, [this](std::uint32_t) {
    reset_event_->Consume();
    Finish({kExitOk, "guest reset the machine through the i8042 controller"});
  }));

  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  // Under ember-jailer --new-pid-ns this process is its namespace's init, and the kernel drops
  // signals to an init whose handler is SIG_DFL. The handler never runs (the signals stay
  // blocked and are read from the signalfd); it only makes them deliverable.
  struct sigaction stop_action {};
  stop_action.sa_handler = [](int) {};
  sigemptyset(&stop_action.sa_mask);
  sigaction(SIGTERM, &stop_action, nullptr);
  sigaction(SIGINT, &stop_action, nullptr);
  signal_fd_.Reset(::signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signal_fd_) return base::ErrnoError("signalfd");
  EMBER_RETURN_IF_ERROR(loop_->Add(signal_fd_.Get(), EPOLLIN, [this](std::uint32_t) {
    signalfd_siginfo info{};
    if (::read(signal_fd_.Get(), &info, sizeof(info)) != sizeof(info)) return;
    Finish({kExitOk, std::string("stopped by ") + strsignal(static_cast<int>(info.ssi_signo))});
  }));

  if (options.snapshot_on_sigusr1) EMBER_RETURN_IF_ERROR(WatchSnapshotSignal(*options.snapshot_on_sigusr1));

  if (options.console_input) {
    // A regular file or /dev/null cannot be polled; the console is then output-only.
    stdin_watched_ = loop_->Add(STDIN_FILENO, EPOLLIN, [this](std::uint32_t) {
                             FeedConsoleInput();
                           }).ok();
    EMBER_RETURN_IF_ERROR(loop_->Add(serial_rx_space_->Get(), EPOLLIN, [this](std::uint32_t) {
      serial_rx_space_->Consume();
      FeedConsoleInput();
    }));
  }

  if (!metrics_path_.empty()) {
    metrics_timer_.Reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
    if (!metrics_timer_) return base::ErrnoError("timerfd_create");
    itimerspec period{};
    period.it_interval.tv_sec = period.it_value.tv_sec = kMetricsFlushSeconds;
    if (::timerfd_settime(metrics_timer_.Get(), 0, &period, nullptr) != 0) {
      return base::ErrnoError("timerfd_settime");
    }
    EMBER_RETURN_IF_ERROR(loop_->Add(metrics_timer_.Get(), EPOLLIN, [this](std::uint32_t) {
      std::uint64_t expirations;
      [[maybe_unused]] ssize_t n = ::read(metrics_timer_.Get(), &expirations, sizeof(expirations));
      WriteMetrics();
    }));
  }
  return absl::OkStatus();
}

void Vmm::FeedConsoleInput() {
  constexpr std::size_t kMaxPending = 4096;
  if (stdin_watched_ && pending_input_.size() < kMaxPending) {
    std::uint8_t buf[kMaxPending];
    ssize_t n = ::read(STDIN_FILENO, buf, kMaxPending - pending_input_.size());
    if (n <= 0) {
      // End of input (or an error): stop watching so the loop does not spin on it.
      loop_->Remove(STDIN_FILENO);
      stdin_watched_ = false;
    } else {
      pending_input_.insert(pending_input_.end(), buf, buf + n);
    }
  }
  std::size_t taken = serial_->EnqueueInput(pending_input_);
  pending_input_.erase(pending_input_.begin(), pending_input_.begin() + static_cast<long>(taken));
  // With the backlog full, stop reading stdin until the guest drains the FIFO.
  if (stdin_watched_) {
    (void)loop_->Modify(STDIN_FILENO, pending_input_.size() < kMaxPending ? std::uint32_t{EPOLLIN} : 0u);
  }
}

VmExit Vmm::Run() {
  if (auto status = StartVcpus(); !status.ok()) return {kExitError, std::string(status.message())};
  return Serve();
}

absl::Status Vmm::Start() {
  if (state_ != State::kCreated) {
    return absl::FailedPreconditionError(
        vcpus_started_ ? "the VM has already been started"
                       : "a restored VM is paused, not created: resume it to run it");
  }
  return StartVcpus();
}

absl::Status Vmm::StartVcpus() {
  if (vcpus_started_) return absl::FailedPreconditionError("the vCPUs are already running");
  vcpus_started_ = true;
  for (auto& vcpu : vcpus_) vcpu->Start();
  // Only now: threads inherit their creator's filter, and the vCPUs' must not be narrowed by
  // the VMM thread's. The guest cannot reach this thread before it returns to the loop.
  EMBER_RETURN_IF_ERROR(InstallThreadSeccomp(jailer::VmmThreadKind::kVmm));
  state_ = State::kRunning;
  return absl::OkStatus();
}

absl::Status Vmm::Pause() {
  if (state_ != State::kRunning) return absl::FailedPreconditionError("the VM is not running");
  for (auto& vcpu : vcpus_) vcpu->Pause();
  state_ = State::kPaused;
  return absl::OkStatus();
}

absl::Status Vmm::Resume() {
  if (state_ != State::kPaused) return absl::FailedPreconditionError("the VM is not paused");
  if (!vcpus_started_) return StartVcpus();  // a restored VM's first run
  for (auto& vcpu : vcpus_) vcpu->Resume();
  state_ = State::kRunning;
  return absl::OkStatus();
}

VmExit Vmm::Serve() {
  if (auto status = loop_->Run(); !status.ok()) {
    Finish({kExitError, "event loop failed: " + std::string(status.message())});
  }
  for (auto& vcpu : vcpus_) vcpu->Stop();
  SaveWorkingSet();
  state_ = State::kEnded;
  WriteMetrics();
  return exit_.value_or(VmExit{kExitError, "event loop ended without a reason"});
}

void Vmm::Finish(VmExit exit) {
  if (!exit_) exit_ = std::move(exit);
  loop_->Stop();
}

void Vmm::WriteMetrics() const {
  if (metrics_path_.empty()) return;
  if (auto status = base::MetricsRegistry::Global().WriteTo(metrics_path_); !status.ok()) {
    EMBER_LOG(kWarn) << "cannot write metrics: " << status.message();
  }
}

}  // namespace ember::vmm
