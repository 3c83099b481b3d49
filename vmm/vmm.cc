#include "vmm/vmm.h"

#include <link.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "virtio/block/block_device.h"
#include "vmm/arch/x86_64/layout.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/builder.h"
#include "vmm/seccomp.h"

namespace ember::vmm {
namespace {

constexpr std::uint64_t kMetricsFlushSeconds = 60;

// Gives back this process's page mappings of its own program's read-only segments (code,
// constants), which start-up filled: building the VM runs most of the binary once (config
// parsing, the boot loader, the seccomp compiler, protobuf's descriptors), and the kernel maps
// 64 KiB around every page it faults in, so that a VM idling after its start had ~2.4 MiB of
// code mapped of which its loops use a small part. The pages stay in the page cache (other
// VMMs map the same ones); what runs again is mapped again by a minor fault. Only segments
// that are not writable: their pages are the file's own, never private copies, so dropping a
// mapping loses nothing (RELRO lies in the writable segment and is left alone).
void ReleaseStartupCode() {
  dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void*) {
        // The first object dl_iterate_phdr reports is the program itself.
        const long page = ::sysconf(_SC_PAGESIZE);
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& ph = info->dlpi_phdr[i];
          if (ph.p_type != PT_LOAD || (ph.p_flags & PF_W) != 0) continue;
          const std::uintptr_t start = info->dlpi_addr + ph.p_vaddr;
          const std::uintptr_t end = start + ph.p_memsz;
          const std::uintptr_t first = (start + static_cast<std::uintptr_t>(page) - 1) &
                                       ~static_cast<std::uintptr_t>(page - 1);
          const std::uintptr_t last = end & ~static_cast<std::uintptr_t>(page - 1);
          if (last <= first) continue;
          // An address range the loader mapped; madvise takes it as a plain address.
          if (::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED) != 0) {
            EMBER_LOG(kDebug) << "madvise(MADV_DONTNEED) of the program's code: "
                              << std::strerror(errno);
          }
        }
        return 1;  // the program only
      },
      nullptr);
}

}  // namespace

std::uint64_t MemBytesOf(const v1::VmConfig& config) {
  return std::uint64_t{rules::MemMibOf(config)} * arch::kMiB;
}

absl::Status PrepareKvm(PreparedKvm& prepared) {
  EMBER_ASSIGN_OR_RETURN(kvm::Kvm kvm, kvm::Kvm::Open());
  EMBER_RETURN_IF_ERROR(kvm.GetSupportedCpuid().status());
  EMBER_ASSIGN_OR_RETURN(kvm::Vm vm, kvm.CreateVm());
  EMBER_RETURN_IF_ERROR(vm.SetTssAndIdentityMap(arch::kTssAddr, arch::kIdentityMapAddr));
  EMBER_RETURN_IF_ERROR(vm.CreateIrqchip());
  EMBER_RETURN_IF_ERROR(vm.CreatePit());
  prepared.kvm.emplace(std::move(kvm));
  prepared.vm.emplace(std::move(vm));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Vmm>> Vmm::Create(const VmmOptions& options) {
  return options.restore ? VmBuilder::BuildFromSnapshot(options) : VmBuilder::BuildForBoot(options);
}

Vmm::~Vmm() {
  for (auto& vcpu : vcpus_) vcpu->Stop();
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
  EMBER_RETURN_IF_ERROR(WatchUffdHandler());

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

void Vmm::GuestBooted(std::uint64_t us) {
  loop_->Post([] { ReleaseStartupCode(); });
  if (on_boot_) on_boot_(us);
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
  // Posted: after whatever started the vCPUs (a Start or Resume request) has been answered.
  loop_->Post([] { ReleaseStartupCode(); });
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

absl::Status Vmm::UpdateDrive(const std::string& drive_id, const std::string& path,
                              base::UniqueFd file) {
  virtio::block::BlockDevice* device = virtio_devices_.FindDrive(drive_id);
  if (device == nullptr) return absl::NotFoundError("the VM has no drive \"" + drive_id + "\"");
  if (path.empty()) return absl::InvalidArgumentError("drive " + drive_id + ": path is empty");
  v1::VmConfig updated = config_;
  v1::Drive* drive = nullptr;
  for (v1::Drive& candidate : *updated.mutable_drives()) {
    if (candidate.drive_id() == drive_id) drive = &candidate;
  }
  if (drive == nullptr) {
    return absl::InternalError("drive " + drive_id + " has a device but no config entry");
  }
  drive->set_path_on_host(path);
  // The check boot makes by name, made on the file itself (its name may not even be visible
  // here, in a jail): no file shared by two drives where either writes.
  for (const v1::Drive& other : updated.drives()) {
    if (other.drive_id() == drive_id) continue;
    virtio::block::BlockDevice* other_device = virtio_devices_.FindDrive(other.drive_id());
    if (other_device != nullptr && other_device->HoldsFile(file.Get()) &&
        !(other.is_read_only() && drive->is_read_only())) {
      return absl::InvalidArgumentError("drive " + drive_id + ": " + path + " is drive " +
                                        other.drive_id() +
                                        "'s file, and two drives may share a file only if "
                                        "neither writes");
    }
  }
  EMBER_RETURN_IF_ERROR(device->ReplaceFile(path, std::move(file)));
  config_ = std::move(updated);
  return absl::OkStatus();
}

absl::Status Vmm::SendCtrlAltDel() {
  if (state_ == State::kCreated) return absl::FailedPreconditionError("the VM has not started");
  return i8042_->SendCtrlAltDel();
}

VmExit Vmm::Serve() {
  if (auto status = loop_->Run(); !status.ok()) {
    Finish({kExitError, "event loop failed: " + std::string(status.message())});
  }
  for (auto& vcpu : vcpus_) vcpu->RequestStop();
  // An exited page-fault handler left faults nobody will serve; closing the last reference
  // to the uffd wakes them (the pages become plain anonymous memory), and a vCPU told to stop
  // leaves KVM_RUN before running guest code on them.
  if (uffd_handler_exited_) uffd_handoff_.reset();
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
