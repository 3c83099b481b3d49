// Vmm's snapshot and restore paths (the rest of Vmm is in vmm.cc).
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "absl/strings/str_format.h"
#include "snapshot/memory_file.h"
#include "snapshot/snapshot_id.h"
#include "snapshot/state_file.h"
#include "virtio/mmio/state_proto.h"
#include "vmm/base/clock.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/restore.h"
#include "vmm/seccomp.h"
#include "vmm/startup_profile.h"
#include "vmm/vcpu_state.h"
#include "vmm/vmm.h"

namespace ember::vmm {
namespace {

v1::SerialState ToProto(const devices::Serial::State& s) {
  v1::SerialState p;
  p.set_rx_fifo(std::string(s.rx_fifo.begin(), s.rx_fifo.end()));
  p.set_ier(s.ier);
  p.set_lcr(s.lcr);
  p.set_mcr(s.mcr);
  p.set_scratch(s.scratch);
  p.set_divisor_low(s.divisor_low);
  p.set_divisor_high(s.divisor_high);
  p.set_thr_empty_pending(s.thr_empty_pending);
  return p;
}

devices::Serial::State FromProto(const v1::SerialState& p) {
  auto byte = [](std::uint32_t v) { return static_cast<std::uint8_t>(v); };
  return {std::vector<std::uint8_t>(p.rx_fifo().begin(), p.rx_fifo().end()),
          byte(p.ier()), byte(p.lcr()), byte(p.mcr()), byte(p.scratch()),
          byte(p.divisor_low()), byte(p.divisor_high()), p.thr_empty_pending()};
}

// Where the file named `path` is made: in paths.dir_fd, when given, under its last component.
std::string WhereToWrite(const SnapshotPaths& paths, const std::string& path) {
  if (paths.dir_fd < 0) return path;
  return "/proc/self/fd/" + std::to_string(paths.dir_fd) + "/" +
         std::filesystem::path(path).filename().string();
}

absl::Status CheckSnapshotPaths(const SnapshotPaths& paths) {
  const std::filesystem::path state(paths.state_path);
  const std::filesystem::path memory(paths.memory_path);
  if (paths.dir_fd < 0) {
    // Its filter would kill the VMM at the directory's fsync: say so instead.
    if (paths.durable && DirectoriesByFdOnly()) {
      return absl::FailedPreconditionError(
          "this ember-vmm (--dirs-by-fd) opens no directory by name: attach the directory "
          "of " + paths.state_path + " to the request, or ask for no_sync");
    }
    return absl::OkStatus();
  }
  if (state.parent_path() != memory.parent_path() || !state.has_filename() ||
      !memory.has_filename()) {
    return absl::InvalidArgumentError(
        "a snapshot written in a directory handed over names two files of that directory; " +
        paths.state_path + " and " + paths.memory_path + " are not");
  }
  // Synced through this fd: a directory open for reading, not an O_PATH one.
  const int flags = ::fcntl(paths.dir_fd, F_GETFL);
  if (flags < 0 || (flags & O_PATH) != 0 || (flags & O_ACCMODE) != O_RDONLY) {
    return absl::InvalidArgumentError(
        "the directory handed over with a snapshot must be open for reading (O_RDONLY | "
        "O_DIRECTORY), so that it can be synced");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::SnapshotState> Vmm::CaptureState() {
  v1::SnapshotState state;
  *state.mutable_config() = config_;
  EMBER_ASSIGN_OR_RETURN(std::vector<std::uint32_t> msr_list, kvm_->GetMsrIndexList());
  std::size_t xsave_size = kvm_->XsaveSize();
  for (std::size_t i = 0; i < vcpus_.size(); ++i) {
    EMBER_ASSIGN_OR_RETURN(*state.add_vcpus(),
                           SaveVcpuState(vcpus_[i]->vcpu(), msr_list, xsave_size, vcpu_cpuid_[i]));
  }
  EMBER_ASSIGN_OR_RETURN(*state.mutable_vm(), SaveVmState(*vm_));
  *state.mutable_serial() = ToProto(serial_->Save());
  // Devices finish their in-flight I/O here, so memory (written next) holds its results.
  for (std::size_t i = 0; i < virtio_devices_.size(); ++i) {
    EMBER_ASSIGN_OR_RETURN(virtio::VirtioDeviceSnapshot device,
                           virtio_devices_.transport(i).SaveState());
    *state.add_virtio() = virtio::ToProto(device);
  }
  for (std::uint32_t word : RequiredCpuFeatures(vcpu_cpuid_.front())) {
    state.add_required_cpu_features(word);
  }
  state.set_memory_file_size(memory_->total_size());
  return state;
}

absl::Status Vmm::TakeDirtyPages(const v1::SnapshotState& state,
                                 std::vector<std::uint64_t>& dirty) {
  dirty.resize((memory_->page_count() + 63) / 64, 0);
  // KVM's log is per memslot (one per region), indexed from the slot's start. Each slot's
  // log goes into `dirty` as soon as it is taken, so a later failure loses nothing.
  const auto& regions = memory_->regions();
  for (std::uint32_t slot = 0; slot < regions.size(); ++slot) {
    std::vector<std::uint64_t> log((regions[slot].size / 4096 + 63) / 64, 0);
    EMBER_RETURN_IF_ERROR(vm_->TakeDirtyLog(slot, log));
    std::uint64_t first_page = regions[slot].file_offset / 4096;
    for (std::uint64_t page = 0; page < regions[slot].size / 4096; ++page) {
      if (log[page / 64] >> (page % 64) & 1) {
        dirty[(first_page + page) / 64] |= std::uint64_t{1} << ((first_page + page) % 64);
      }
    }
  }
  memory_->TakeDirtyPages(dirty);
  // Devices write their used rings through pointers taken once at activation, which the
  // VMM's own tracking cannot see: count those rings as written.
  for (const v1::VirtioDeviceState& device : state.virtio()) {
    for (const v1::VirtqueueState& queue : device.transport().queues()) {
      if (!queue.ready()) continue;
      std::uint64_t used_bytes = 6 + 8 * std::uint64_t{queue.size()} + 2;
      for (std::uint64_t addr = queue.device_addr() & ~std::uint64_t{4095};
           addr < queue.device_addr() + used_bytes; addr += 4096) {
        auto host = memory_->Slice(addr, 1);  // marks the page in memory's own tracking
        if (!host.ok()) break;
      }
    }
  }
  memory_->TakeDirtyPages(dirty);
  return absl::OkStatus();
}

absl::StatusOr<Vmm::PendingSnapshot> Vmm::WriteSnapshot(const SnapshotPaths& paths) {
  if (state_ != State::kPaused) {
    return absl::FailedPreconditionError("a snapshot needs a paused VM");
  }
  if (paths.diff && !memory_->dirty_tracking()) {
    return absl::FailedPreconditionError(
        "a diff snapshot needs machine-config.track_dirty_pages set when the VM was created");
  }
  if (paths.diff && snapshot_chain_.empty()) {
    return absl::FailedPreconditionError(
        "a diff snapshot needs a previous snapshot (or a restore) to apply onto");
  }
  EMBER_RETURN_IF_ERROR(CheckSnapshotPaths(paths));
  const std::string state_file = WhereToWrite(paths, paths.state_path);
  const std::string memory_file = WhereToWrite(paths, paths.memory_path);
  PendingSnapshot pending{paths, std::nullopt, std::nullopt, {}, base::MonotonicMicros()};
  EMBER_ASSIGN_OR_RETURN(v1::SnapshotState state, CaptureState());
  if (memory_->dirty_tracking()) {
    // Taken after the devices were quiesced (CaptureState), so their last writes count; a
    // full snapshot takes them too, to start the next diff from here. Taking them clears
    // KVM's log and memory's own, so they join the pages a failed attempt left pending and
    // stay pending until this snapshot's files are all committed.
    EMBER_RETURN_IF_ERROR(TakeDirtyPages(state, pending_dirty_));
  }
  // Both files carry it: a state file and a memory file of two snapshots (a crash between
  // the two renames of CommitSnapshot) are refused on restore.
  state.set_snapshot_id(snapshot::NewSnapshotId());
  absl::StatusOr<snapshot::WrittenMemoryFile> memory;
  if (paths.diff) {
    // A VM restored from a diff names that diff among its bases; writing its own next diff
    // there (ember-vmm's SIGUSR2 numbering starts again at -diff1) would replace a base.
    std::vector<std::string> bases;
    for (const snapshot::MemoryFileRef& base : snapshot_chain_) {
      bases.push_back(base.file.empty() ? base.path : base.file);
    }
    EMBER_RETURN_IF_ERROR(snapshot::CheckOutputIsNoInput(memory_file, bases));
    memory = snapshot::WriteDiffMemoryFileUncommitted(*memory_, pending_dirty_, memory_file,
                                                      state.snapshot_id(), paths.dir_fd);
    state.set_kind(v1::SnapshotState::DIFF);
    for (const snapshot::MemoryFileRef& base : snapshot_chain_) {
      state.add_base_memory_files(base.path);
      state.add_base_memory_ids(base.id);
    }
    pending.chain = snapshot_chain_;
  } else {
    memory = snapshot::WriteMemoryFileUncommitted(*memory_, memory_file, state.snapshot_id(),
                                                  paths.dir_fd);
  }
  if (!memory.ok()) return memory.status();
  // The restorer named it; what this VM wrote itself is no less trusted for being a symlink.
  pending.chain.push_back({paths.memory_path, state.snapshot_id(), snapshot::Symlinks::kFollow});
  for (const v1::MemoryRegion& region : memory->layout) *state.add_memory() = region;
  pending.memory = std::move(memory->file);
  EMBER_ASSIGN_OR_RETURN(pending.state,
                         snapshot::WriteStateFileUncommitted(state_file, state, paths.dir_fd));
  return pending;
}

absl::Status Vmm::CommitSnapshot(PendingSnapshot pending) {
  using Durability = base::AtomicFile::Durability;
  const Durability durability =
      pending.paths.durable ? Durability::kDurable : Durability::kRenameOnly;
  // The memory file first: the state file in place is what makes a snapshot restorable.
  EMBER_RETURN_IF_ERROR(pending.memory->Commit(durability));
  EMBER_RETURN_IF_ERROR(pending.state->Commit(durability));
  // Only a snapshot that can be restored becomes the base of the next diff.
  snapshot_chain_ = std::move(pending.chain);
  pending_dirty_.clear();
  return absl::OkStatus();
}

namespace {

void RecordSnapshot(const SnapshotPaths& paths, const SnapshotTimes& times) {
  base::MetricsRegistry::Global().Get("snapshot", "create_us")->Set(times.total_us);
  base::MetricsRegistry::Global().Get("snapshot", "paused_us")->Set(times.paused_us);
  EMBER_LOG(kInfo) << (paths.diff ? "diff " : "") << "snapshot written to " << paths.state_path
                   << " and " << paths.memory_path << (paths.durable ? "" : " (not synced)")
                   << " in " << times.total_us << " us, VM paused " << times.paused_us << " us";
}

}  // namespace

absl::Status Vmm::CreateSnapshot(const SnapshotPaths& paths) {
  EMBER_ASSIGN_OR_RETURN(PendingSnapshot pending, WriteSnapshot(paths));
  const std::uint64_t start = pending.start_us;
  EMBER_RETURN_IF_ERROR(CommitSnapshot(std::move(pending)));
  const std::uint64_t elapsed = base::MonotonicMicros() - start;
  RecordSnapshot(paths, {elapsed, elapsed});
  return absl::OkStatus();
}

absl::StatusOr<SnapshotTimes> Vmm::SnapshotWhileRunning(const SnapshotPaths& paths) {
  const bool was_running = state_ == State::kRunning;
  const std::uint64_t start = base::MonotonicMicros();
  absl::Status paused = was_running ? Pause() : absl::OkStatus();
  absl::StatusOr<PendingSnapshot> pending =
      paused.ok() ? WriteSnapshot(paths) : absl::StatusOr<PendingSnapshot>(paused);
  // The guest runs on as soon as its memory is in the files' page cache: syncing them is
  // the host's business, and nothing the guest does now reaches them.
  absl::Status resumed = was_running ? Resume() : absl::OkStatus();
  SnapshotTimes times;
  times.paused_us = base::MonotonicMicros() - start;
  if (!pending.ok()) return pending.status();
  EMBER_RETURN_IF_ERROR(CommitSnapshot(std::move(*pending)));
  EMBER_RETURN_IF_ERROR(resumed);
  times.total_us = base::MonotonicMicros() - start;
  RecordSnapshot(paths, times);
  return times;
}

absl::Status Vmm::WatchSnapshotSignal(const SnapshotPaths& paths) {
  // Blocked here, on the VMM thread, before the vCPU threads exist: they inherit the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGUSR1);
  sigaddset(&signals, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  snapshot_signal_fd_.Reset(::signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!snapshot_signal_fd_) return base::ErrnoError("signalfd", "SIGUSR1/SIGUSR2");
  return loop_->Add(snapshot_signal_fd_.Get(), EPOLLIN, [this, paths](std::uint32_t) {
    signalfd_siginfo info{};
    if (::read(snapshot_signal_fd_.Get(), &info, sizeof(info)) != sizeof(info)) return;
    // SIGUSR1: a full snapshot at the given paths. SIGUSR2: the next diff, at the same paths
    // with "-diff1", "-diff2", ... appended.
    SnapshotPaths target = paths;
    if (info.ssi_signo == SIGUSR2) {
      std::string suffix = "-diff" + std::to_string(++diff_snapshots_taken_);
      target.state_path += suffix;
      target.memory_path += suffix;
      target.diff = true;
    }
    if (auto status = SnapshotWhileRunning(target); !status.ok()) {
      EMBER_LOG(kError) << "snapshot failed: " << status.status().message();
    }
  });
}

absl::StatusOr<base::GuestMemory> Vmm::MapSnapshotMemory(
    const RestoreSource& source, const std::vector<base::GuestMemory::Range>& ranges) {
  const v1::SnapshotState& state = source.state;
  if (state.kind() == v1::SnapshotState::DIFF && state.base_memory_files().empty()) {
    return absl::InvalidArgumentError("diff snapshot names no base memory file");
  }
  // A full snapshot's memory file, or a diff's full base, mapped lazily; then each later
  // diff's pages, then this one's, copied over. Each file is checked again as it is opened:
  // the one mapped is the one checked.
  std::vector<snapshot::MemoryFileRef> chain = RestoreChain(source);
  std::uint64_t memory_size = state.memory_file_size();
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd full, snapshot::OpenMemoryFile(chain[0], memory_size));
  EMBER_ASSIGN_OR_RETURN(base::GuestMemory memory,
                         base::GuestMemory::MapFile(std::move(full), chain[0].path, ranges));
  for (std::size_t i = 1; i < chain.size(); ++i) {
    EMBER_RETURN_IF_ERROR(snapshot::ApplyDiffMemoryFile(memory, chain[i]));
  }
  return memory;
}

absl::Status Vmm::RestoreFromSnapshot(const RestoreSource& source, std::uint64_t start_us) {
  const v1::SnapshotState& state = source.state;
  // A diff taken from this VM applies onto what it was restored from.
  snapshot_chain_ = RestoreChain(source);
  EMBER_ASSIGN_OR_RETURN(std::vector<kvm_cpuid_entry2> supported, kvm_->GetSupportedCpuid());
  std::vector<std::uint32_t> required(state.required_cpu_features().begin(),
                                      state.required_cpu_features().end());
  EMBER_RETURN_IF_ERROR(CheckCpuFeatures(required, supported));
  // Devices by id, not by position: the same devices, whatever order they were saved in.
  std::vector<std::string> device_ids;
  for (std::size_t i = 0; i < virtio_devices_.size(); ++i) {
    device_ids.push_back(virtio_devices_.transport(i).device().name());
  }
  EMBER_ASSIGN_OR_RETURN(std::vector<int> saved_index,
                         virtio::MatchDeviceStates(device_ids, state.virtio()));
  StartupProfile::Mark("cpu_check");

  // The irqchip before the vCPUs: restoring a LAPIC consults the VM's interrupt routing.
  // What KVM refuses of it is the file's fault, as for the vCPUs below.
  if (auto status = RestoreVmState(*vm_, state.vm()); !status.ok()) {
    return absl::InvalidArgumentError("vm state: " + std::string(status.message()));
  }
  StartupProfile::Mark("vm_state");
  VcpuRunner::InstallKickSignalHandler();
  for (const v1::VcpuState& saved : state.vcpus()) {
    EMBER_ASSIGN_OR_RETURN(kvm::Vcpu vcpu, vm_->CreateVcpu(saved.id()));
    if (auto status = RestoreVcpuState(vcpu, saved); !status.ok()) {
      return absl::InvalidArgumentError("vcpu " + std::to_string(saved.id()) + ": " +
                                        std::string(status.message()));
    }
    std::vector<kvm_cpuid_entry2> cpuid(saved.cpuid().size() / sizeof(kvm_cpuid_entry2));
    std::memcpy(cpuid.data(), saved.cpuid().data(), cpuid.size() * sizeof(kvm_cpuid_entry2));
    vcpu_cpuid_.push_back(std::move(cpuid));
    AdoptVcpu(std::move(vcpu), start_us);
  }
  StartupProfile::Mark("vcpu_state");
  serial_->Restore(FromProto(state.serial()));
  for (std::size_t i = 0; i < virtio_devices_.size(); ++i) {
    const v1::VirtioDeviceState& saved = state.virtio(saved_index[i]);
    auto status = virtio_devices_.transport(i).RestoreState(virtio::FromProto(saved));
    if (!status.ok()) {
      return absl::InvalidArgumentError("virtio device " + saved.id() + ": " +
                                        std::string(status.message()));
    }
  }
  StartupProfile::Mark("device_state");
  return absl::OkStatus();
}

}  // namespace ember::vmm
