#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ember/v1/snapshot.pb.h"
#include "ember/v1/vm_config.pb.h"
#include "vmm/base/atomic_file.h"
#include "vmm/base/event_fd.h"
#include "vmm/base/event_loop.h"
#include "vmm/base/guest_memory.h"
#include "snapshot/uffd_page_server.h"
#include "vmm/uffd_handoff.h"
#include "vmm/bus.h"
#include "vmm/devices/legacy/boot_timer.h"
#include "vmm/devices/legacy/i8042.h"
#include "vmm/devices/legacy/serial.h"
#include "vmm/exit_code.h"
#include "vmm/kvm/kvm.h"
#include "vmm/rules/vm_config_rules.h"
#include "vmm/vcpu_runner.h"
#include "vmm/virtio_devices.h"
#include "vmm/arch/x86_64/cpu_template.h"

namespace ember::vmm {

// A snapshot to restore instead of booting: its state, already read and verified, and its
// memory file.
struct RestoreSource {
  v1::SnapshotState state;
  std::string memory_path;  // the file mapped (emberd's: /proc/self/fd/N, the file it checked)
  // What this VM's diff snapshots name that file as their base (ember-vmm --restore-mem-name);
  // empty: memory_path.
  std::string memory_name{};
  // The files handed over for the bases a DIFF state file names, by those names
  // (snapshot::HandedFiles; ember-vmm --base-memory-file): a base among them is opened from its
  // file, never by its name.
  std::map<std::string, std::string> base_files{};
  // How guest memory comes back (vmm_uffd.cc): the file mapped MAP_PRIVATE, or anonymous
  // memory served through userfaultfd by a page server, which records the pages the guest
  // touches into working_set_path when the VM ends, or with prefetch_working_set loads the
  // set recorded there before the vCPUs start (and records nothing).
  // kUffdHandler: the uffd goes to a page-fault handler process listening at
  // uffd_handler_socket, as Firecracker's Uffd backend (uffd_handoff.h); no memory file.
  enum class MemoryBackend { kFile, kUffd, kUffdHandler };
  MemoryBackend memory_backend = MemoryBackend::kFile;
  std::string uffd_handler_socket{};  // kUffdHandler only
  std::string working_set_path{};  // kUffd only; empty: memory_name (or memory_path) + ".ws"
  bool prefetch_working_set = false;
};

struct SnapshotPaths {
  std::string state_path;
  std::string memory_path;
  // Only the pages written since the previous snapshot (or the restore), laid over that
  // snapshot's memory on restore. Needs machine-config.track_dirty_pages.
  bool diff = false;
  // Both files fsynced before they are put in place (and their directory after): a crash
  // then leaves the previous snapshot or this one whole. Off only where the files are scratch
  // (emberd copies a jailed VMM's files and syncs its copies) or the caller accepts losing
  // the snapshot to a crash.
  bool durable = true;
  // A directory the files are made in (borrowed for the call, open for reading; emberd's,
  // resolved by its rule): each under the last component of its path, through
  // /proc/self/fd/<dir_fd>, and the directory synced through it, never by the paths, which
  // then only name the files (in the state file, as a later diff's base). Both paths must lie
  // in one directory. -1: by the paths.
  int dir_fd = -1;
};

// How long a snapshot took: in all, and with the VM paused (what its guest feels). Equal
// when the VM stays paused throughout (a snapshot of a VM paused through the control
// channel); a standalone SIGUSR1/SIGUSR2 snapshot resumes the VM before it syncs its files.
struct SnapshotTimes {
  std::uint64_t total_us = 0;
  std::uint64_t paused_us = 0;
};

// KVM objects made before the VM's configuration was known (a pooled ember-vmm,
// vmm/pool_slot.h): the VM with its TSS, irqchip and PIT, none of which depends on the
// configuration. Vmm::Create takes them (leaving this empty) instead of making its own.
struct PreparedKvm {
  std::optional<kvm::Kvm> kvm;
  std::optional<kvm::Vm> vm;
};

// Fills `prepared`: /dev/kvm opened, KVM's supported CPUID read (the Kvm keeps it), the VM
// created with its TSS, irqchip and PIT. Any thread, before Vmm::Create; on an error the
// builder makes whatever is missing itself (and reports its own error). ember-vmm does it on a
// thread of its own while its main thread reads its config and compiles its filters (these
// ioctls mostly wait: KVM synchronises its interrupt routing), or a pooled VMM before its
// launch (vmm/pool_slot.h).
[[nodiscard]] absl::Status PrepareKvm(PreparedKvm& prepared);

struct VmmOptions {
  // Shared so that options stay copyable; the builder moves the objects out.
  std::shared_ptr<PreparedKvm> prepared;
  v1::VmConfig config;  // already validated; for a restore, the snapshot's (with overrides)
  std::optional<RestoreSource> restore;
  // CLOCK_MONOTONIC µs of the start command (boot time and first-instruction time count from it).
  std::uint64_t start_us = 0;
  // The guest's serial console: output fd (borrowed) and whether stdin feeds its input.
  int console_out_fd = 1;
  bool console_input = true;
  // Standalone snapshots: SIGUSR1 pauses the VM, writes a full snapshot here and resumes
  // it; SIGUSR2 does the same with a diff snapshot at these paths plus "-diffN".
  std::optional<SnapshotPaths> snapshot_on_sigusr1;
};

// What a VM built from `config` has: its vCPUs (ids 0 to count-1) and bytes of guest RAM,
// defaults applied. Boot and restore both build from these.
using rules::VcpuCountOf;
[[nodiscard]] std::uint64_t MemBytesOf(const v1::VmConfig& config);

// One microVM: KVM objects, guest memory, devices, vCPU threads and the VMM thread's event
// loop. Create() builds it completely but runs nothing; Run() starts the vCPUs and serves
// the loop on the calling thread (the VMM thread) until the VM ends.
class Vmm {
 public:
  // Builds the VM for boot, or from options.restore (VmBuilder). Errors: InvalidArgument for
  // the user's bad input (config, kernel, initrd, snapshot, device files), anything else for
  // a host failure.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Vmm>> Create(const VmmOptions& options);
  ~Vmm();

  // Starts the vCPUs and serves the VMM loop on the calling thread until the guest resets
  // or faults, a vCPU fails, Stop() is called, or SIGTERM/SIGINT arrives (the caller must
  // have blocked those two signals in every thread). Call once.
  VmExit Run();

  // The VMM thread's side of a VM driven by a control channel. Serve() runs the loop
  // without starting the vCPUs; Start() (posted to the loop) starts them. A restored VM
  // begins kPaused with its vCPU threads not started yet: Resume() starts them (Start()
  // refuses it, as the guest already booted).
  enum class State { kCreated, kRunning, kPaused, kEnded };
  VmExit Serve();
  [[nodiscard]] absl::Status Start();
  // Parks every vCPU at an instruction boundary; Resume() lets them go on.
  [[nodiscard]] absl::Status Pause();
  [[nodiscard]] absl::Status Resume();
  // Writes a full snapshot of the paused VM: every vCPU, the irqchips, PIT, clock, devices
  // (their in-flight I/O completed first) and guest memory. VMM thread.
  [[nodiscard]] absl::Status CreateSnapshot(const SnapshotPaths& paths);
  // Swaps drive `drive_id`'s backing file for `file`, opened by the caller, known as `path`
  // (BlockDevice::ReplaceFile), and records `path` in the config a later snapshot saves.
  // NOT_FOUND for an unknown drive; INVALID_ARGUMENT for a file that cannot be used (opened
  // for the wrong access, of a bad size, or a path another drive uses where either writes):
  // the old file then stays. VMM thread.
  [[nodiscard]] absl::Status UpdateDrive(const std::string& drive_id, const std::string& path,
                                         base::UniqueFd file);
  // Firecracker's SendCtrlAltDel: the keys go into the i8042's output buffer and IRQ 1 is
  // raised (I8042::SendCtrlAltDel). FAILED_PRECONDITION before Start; RESOURCE_EXHAUSTED when
  // the guest has not read the last ones. VMM thread.
  [[nodiscard]] absl::Status SendCtrlAltDel();
  // Ends the VM with `exit` (the first reason wins).
  void Stop(VmExit exit) { Finish(std::move(exit)); }
  [[nodiscard]] State state() const { return state_; }
  // VMM thread only: control-channel handlers run on this loop.
  [[nodiscard]] base::EventLoop& loop() { return *loop_; }
  // VMM thread only: the virtio devices, e.g. to change a drive's rate limiter.
  [[nodiscard]] VirtioDevices& virtio_devices() { return virtio_devices_; }
  // Called on a vCPU thread with the boot time in µs when the guest writes the boot timer.
  // Set before Start().
  void OnBoot(std::function<void(std::uint64_t)> callback) { on_boot_ = std::move(callback); }

  [[nodiscard]] const std::string& cmdline() const { return cmdline_; }

 private:
  Vmm() = default;
  friend class VmBuilder;  // builds every part of a Vmm (builder.h)
  // The boot timer's write, on the vCPU thread: the guest has booted, so the code that boot
  // ran is released as start-up's was (on the VMM thread), then on_boot_ is told.
  void GuestBooted(std::uint64_t us);
  [[nodiscard]] absl::Status WatchEvents(const VmmOptions& options);
  // The restore path of Build(): vCPUs, VM and device state from the snapshot.
  [[nodiscard]] absl::Status RestoreFromSnapshot(const RestoreSource& source,
                                                 std::uint64_t start_us);
  // A restore's guest memory for the userfaultfd backend: anonymous memory and the page
  // server that fills it, started (vmm_uffd.cc).
  [[nodiscard]] absl::StatusOr<base::GuestMemory> ServeSnapshotMemory(
      const RestoreSource& source, const std::vector<base::GuestMemory::Range>& ranges);
  // The same for an external page-fault handler: anonymous memory registered with a uffd that
  // went to the handler (UffdHandoff). WatchUffdHandler (with the loop, from WatchEvents)
  // ends the VM when that handler's process exits (vmm_uffd.cc).
  [[nodiscard]] absl::StatusOr<base::GuestMemory> HandOffSnapshotMemory(
      const RestoreSource& source, const std::vector<base::GuestMemory::Range>& ranges);
  [[nodiscard]] absl::Status WatchUffdHandler();
  // Writes the working set a userfaultfd restore recorded, if it records one. VMM thread,
  // when the VM has ended.
  void SaveWorkingSet();
  [[nodiscard]] absl::StatusOr<v1::SnapshotState> CaptureState();
  // The guest memory of a snapshot: its memory file mapped lazily, with a diff's bases
  // beneath it.
  [[nodiscard]] static absl::StatusOr<base::GuestMemory> MapSnapshotMemory(
      const RestoreSource& source, const std::vector<base::GuestMemory::Range>& ranges);
  // OR-s the pages written since the last call (guest and devices) into `dirty`, one bit
  // per page of the memory's backing layout, sizing it first; resets the tracking. On an
  // error, what was taken before it is in `dirty`.
  [[nodiscard]] absl::Status TakeDirtyPages(const v1::SnapshotState& state,
                                            std::vector<std::uint64_t>& dirty);
  [[nodiscard]] absl::Status WatchSnapshotSignal(const SnapshotPaths& paths);
  // A snapshot whose files are written but not yet synced nor in place (CreateSnapshot's
  // halves: WriteSnapshot reads the paused VM, CommitSnapshot needs it no more).
  struct PendingSnapshot {
    SnapshotPaths paths;
    std::optional<base::AtomicFile> memory;
    std::optional<base::AtomicFile> state;
    std::vector<snapshot::MemoryFileRef> chain;  // snapshot_chain_ once committed
    std::uint64_t start_us = 0;
  };
  [[nodiscard]] absl::StatusOr<PendingSnapshot> WriteSnapshot(const SnapshotPaths& paths);
  [[nodiscard]] absl::Status CommitSnapshot(PendingSnapshot pending);
  // The standalone snapshot of SIGUSR1/SIGUSR2: pause, write, resume, then commit.
  [[nodiscard]] absl::StatusOr<SnapshotTimes> SnapshotWhileRunning(const SnapshotPaths& paths);
  // Hands a configured vCPU to a runner thread (not started yet).
  void AdoptVcpu(kvm::Vcpu vcpu, std::uint64_t start_us);
  // Starts the vCPU threads (created or restored VM) and narrows the VMM thread's syscalls.
  [[nodiscard]] absl::Status StartVcpus();
  void FeedConsoleInput();
  // Records how the VM ends (the first reason wins) and stops the loop. VMM thread.
  void Finish(VmExit exit);
  void WriteMetrics() const;

  std::optional<kvm::Kvm> kvm_;
  std::optional<kvm::Vm> vm_;
  std::optional<base::GuestMemory> memory_;
  // A userfaultfd restore's page server: declared after memory_, so it stops before the
  // memory it fills is unmapped.
  std::unique_ptr<snapshot::UffdPageServer> page_server_;
  std::string working_set_path_;  // where SaveWorkingSet writes; empty: nothing to record
  // Its directory, opened at restore (before any filter): synced through this fd, not opened
  // by name when the VM ends.
  base::UniqueFd working_set_dir_;
  std::unique_ptr<UffdHandoff> uffd_handoff_;  // an external handler's restore
  bool uffd_handler_exited_ = false;
  std::optional<base::EventLoop> loop_;
  Bus pio_bus_{"pio_bus"};
  Bus mmio_bus_{"mmio_bus"};

  std::optional<base::EventFd> serial_irq_;
  std::optional<base::EventFd> serial_rx_space_;
  std::optional<base::EventFd> reset_event_;
  std::optional<base::EventFd> keyboard_irq_;  // IRQ 1's irqfd: the i8042's keys
  std::unique_ptr<devices::Serial> serial_;
  std::unique_ptr<devices::I8042> i8042_;
  std::unique_ptr<devices::BootTimer> boot_timer_;
  VirtioDevices virtio_devices_;
  std::vector<std::unique_ptr<VcpuRunner>> vcpus_;

  base::UniqueFd signal_fd_;
  base::UniqueFd snapshot_signal_fd_;
  base::UniqueFd metrics_timer_;
  std::string metrics_path_;
  std::string cmdline_;
  std::vector<std::uint8_t> pending_input_;  // stdin bytes the serial FIFO had no room for
  bool stdin_watched_ = false;
  std::optional<VmExit> exit_;
  State state_ = State::kCreated;
  bool vcpus_started_ = false;
  v1::VmConfig config_;
  // Memory files a diff snapshot taken now would apply onto, with the ids they carry: the
  // last full snapshot's, then the diffs since. Empty until a snapshot is taken or restored.
  std::vector<snapshot::MemoryFileRef> snapshot_chain_;
  // Pages written since the last snapshot whose files were all written: taken out of the
  // dirty tracking by CreateSnapshot and kept here until a snapshot succeeds, so a failed
  // one (disk full, EIO) leaves them for the next diff. Empty when nothing is pending.
  std::vector<std::uint64_t> pending_dirty_;
  int diff_snapshots_taken_ = 0;  // standalone SIGUSR2 snapshots, for their file names
  // The CPUID table each vCPU was given, as set (see SaveVcpuState).
  std::vector<std::vector<kvm_cpuid_entry2>> vcpu_cpuid_;
  std::function<void(std::uint64_t)> on_boot_;
};

}  // namespace ember::vmm
