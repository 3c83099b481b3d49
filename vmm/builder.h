#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/arch/x86_64/cpu_template.h"
#include "vmm/boot/kernel_image.h"
#include "vmm/vmm.h"

namespace ember::vmm {

// Builds a Vmm, completely but running nothing, in one of two ways that share everything up
// to the guest: the config's checks, its devices (from the device list, device_list.h) and
// the VM around them. Errors: InvalidArgument for the user's input (config, kernel, initrd,
// snapshot, drive files, taps, socket paths); anything else for a host failure.
class VmBuilder {
 public:
  // A VM that boots options.config's kernel (none: the built-in test guest).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Vmm>> BuildForBoot(
      const VmmOptions& options);
  // A VM restored from options.restore (PrepareRestore made it), PAUSED until resumed.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Vmm>> BuildFromSnapshot(
      const VmmOptions& options);

 private:
  VmBuilder(const VmmOptions& options, Vmm& vmm) : options_(options), vmm_(vmm) {}

  // What both ways share: checks, devices created, KVM, VM, memory, legacy devices, and the
  // virtio devices placed. `memory` comes from the boot or the snapshot.
  [[nodiscard]] absl::Status BuildVm();
  [[nodiscard]] absl::Status CreateDevices();
  [[nodiscard]] absl::Status CreateMemory();
  [[nodiscard]] absl::Status CreateLegacyDevices();
  [[nodiscard]] absl::Status PlaceVirtioDevices();
  [[nodiscard]] absl::Status LoadGuestAndCreateVcpus();
  [[nodiscard]] absl::Status CreateVcpus(std::uint64_t entry);

  const VmmOptions& options_;
  Vmm& vmm_;
  std::optional<KernelImage> kernel_;  // boot only
  arch::CpuTemplate cpu_template_{};
  // The devices created from the device specs, with their ids, until they are placed.
  std::vector<std::pair<std::string, std::unique_ptr<virtio::VirtioDevice>>> devices_;
};

}  // namespace ember::vmm
