#include "vmm/builder.h"

#include "vmm/arch/x86_64/acpi.h"
#include "vmm/arch/x86_64/boot_cpu.h"
#include "vmm/arch/x86_64/cpuid.h"
#include "vmm/arch/x86_64/layout.h"
#include "vmm/arch/x86_64/mptable.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/boot/cmdline.h"
#include "vmm/boot/guest_loader.h"
#include "vmm/device_list.h"
#include "vmm/rules/vm_config_rules.h"
#include "vmm/startup_profile.h"

namespace ember::vmm {

absl::StatusOr<std::unique_ptr<Vmm>> VmBuilder::BuildForBoot(const VmmOptions& options) {
  std::unique_ptr<Vmm> vmm(new Vmm());
  VmBuilder builder(options, *vmm);
  // Check the kernel before creating anything, so bad input fails fast and cheaply.
  const v1::BootSource& boot = options.config.boot_source();
  if (boot.kernel_image_path().empty()) {
    builder.kernel_ = KernelImage::Builtin();
  } else {
    auto image = KernelImage::FromFile(boot.kernel_image_path());
    if (!image.ok()) {
      return absl::InvalidArgumentError("boot-source.kernel_image_path: " +
                                        std::string(image.status().message()));
    }
    builder.kernel_ = std::move(*image);
  }
  EMBER_RETURN_IF_ERROR(builder.BuildVm());
  EMBER_RETURN_IF_ERROR(builder.LoadGuestAndCreateVcpus());
  StartupProfile::Mark("guest_load");
  EMBER_RETURN_IF_ERROR(vmm->WatchEvents(options));
  StartupProfile::Mark("watch_events");
  return vmm;
}

absl::StatusOr<std::unique_ptr<Vmm>> VmBuilder::BuildFromSnapshot(const VmmOptions& options) {
  std::unique_ptr<Vmm> vmm(new Vmm());
  VmBuilder builder(options, *vmm);
  // A restore boots nothing: the kernel is already in the memory file.
  EMBER_RETURN_IF_ERROR(builder.BuildVm());
  EMBER_RETURN_IF_ERROR(vmm->RestoreFromSnapshot(*options.restore, options.start_us));
  EMBER_RETURN_IF_ERROR(vmm->WatchEvents(options));
  StartupProfile::Mark("watch_events");
  vmm->state_ = Vmm::State::kPaused;  // the guest is mid-run; Resume() (or Run()) starts it
  EMBER_LOG(kInfo) << "VM restored: " << vmm->vcpus_.size() << " vCPU(s), "
                   << vmm->memory_->total_size() / arch::kMiB << " MiB from "
                   << options.restore->memory_path;
  return vmm;
}

absl::Status VmBuilder::BuildVm() {
  const v1::VmConfig& config = options_.config;
  vmm_.metrics_path_ = config.metrics().metrics_path();
  vmm_.config_ = config;
  // Every piece of user input is checked, and every device created (its files, taps and
  // sockets opened), before KVM is touched.
  EMBER_RETURN_IF_ERROR(rules::CheckVmConfig(config));
  const std::string& cpu_template = config.machine_config().cpu_template();
  EMBER_ASSIGN_OR_RETURN(cpu_template_,
                         arch::ParseCpuTemplate(cpu_template.empty() ? "host" : cpu_template));
  EMBER_RETURN_IF_ERROR(CreateDevices());
  StartupProfile::Mark("devices");

  PreparedKvm* prepared = options_.prepared.get();
  if (prepared != nullptr && prepared->kvm && prepared->vm) {
    // A pooled VMM made these before it knew its VM (vmm/pool_slot.h).
    vmm_.kvm_ = std::move(prepared->kvm);
    vmm_.vm_ = std::move(prepared->vm);
    prepared->kvm.reset();
    prepared->vm.reset();
    EMBER_RETURN_IF_ERROR(CreateMemory());
    StartupProfile::Mark("memory");
  } else {
    EMBER_ASSIGN_OR_RETURN(vmm_.kvm_, kvm::Kvm::Open());
    EMBER_ASSIGN_OR_RETURN(vmm_.vm_, vmm_.kvm_->CreateVm());
    StartupProfile::Mark("kvm_create_vm");
    EMBER_RETURN_IF_ERROR(CreateMemory());
    StartupProfile::Mark("memory");
    EMBER_RETURN_IF_ERROR(
        vmm_.vm_->SetTssAndIdentityMap(arch::kTssAddr, arch::kIdentityMapAddr));
    EMBER_RETURN_IF_ERROR(vmm_.vm_->CreateIrqchip());
    EMBER_RETURN_IF_ERROR(vmm_.vm_->CreatePit());
    StartupProfile::Mark("irqchip_pit");
  }
  EMBER_ASSIGN_OR_RETURN(vmm_.loop_, base::EventLoop::Create());
  EMBER_RETURN_IF_ERROR(CreateLegacyDevices());
  EMBER_RETURN_IF_ERROR(PlaceVirtioDevices());
  StartupProfile::Mark("device_wiring");
  return absl::OkStatus();
}

absl::Status VmBuilder::CreateDevices() {
  EMBER_ASSIGN_OR_RETURN(std::vector<DeviceSpec> specs, DeviceSpecsOf(options_.config));
  for (DeviceSpec& spec : specs) {
    EMBER_ASSIGN_OR_RETURN(std::unique_ptr<virtio::VirtioDevice> device,
                           spec.create(vmm_.virtio_devices_.index()));
    devices_.emplace_back(std::move(spec.id), std::move(device));
  }
  return absl::OkStatus();
}

absl::Status VmBuilder::CreateMemory() {
  const std::uint64_t mem_bytes = MemBytesOf(options_.config);
  // The layout a VM of this size has; a restore never takes the state file's own say
  // (PrepareRestore refuses a state whose regions differ from it).
  std::vector<base::GuestMemory::Range> ranges = arch::GuestRamRanges(mem_bytes);
  if (options_.restore) {
    using Backend = RestoreSource::MemoryBackend;
    const Backend backend = options_.restore->memory_backend;
    auto memory = backend == Backend::kUffd          ? vmm_.ServeSnapshotMemory(*options_.restore, ranges)
                  : backend == Backend::kUffdHandler ? vmm_.HandOffSnapshotMemory(*options_.restore, ranges)
                                                     : Vmm::MapSnapshotMemory(*options_.restore, ranges);
    if (!memory.ok()) {
      if (backend == Backend::kUffdHandler && !absl::IsInvalidArgument(memory.status())) {
        return memory.status();  // the host's failure, not the snapshot's
      }
      return absl::InvalidArgumentError(
          (backend == Backend::kUffdHandler ? "snapshot memory: " : "snapshot memory file: ") +
          std::string(memory.status().message()));
    }
    vmm_.memory_ = std::move(*memory);
  } else {
    EMBER_ASSIGN_OR_RETURN(vmm_.memory_, base::GuestMemory::Create(ranges));
  }
  // Diff snapshots need to know what changed: KVM logs the guest's writes per memslot, guest
  // memory the VMM's own (device) writes.
  const bool track_dirty = options_.config.machine_config().track_dirty_pages();
  if (track_dirty) vmm_.memory_->EnableDirtyTracking();
  std::uint32_t slot = 0;
  for (const base::GuestRegion& region : vmm_.memory_->regions()) {
    EMBER_RETURN_IF_ERROR(vmm_.vm_->SetUserMemoryRegion(slot++, region.guest_start, region.size,
                                                        region.host,
                                                        track_dirty ? KVM_MEM_LOG_DIRTY_PAGES : 0));
  }
  return absl::OkStatus();
}

absl::Status VmBuilder::CreateLegacyDevices() {
  EMBER_ASSIGN_OR_RETURN(vmm_.serial_irq_, base::EventFd::Create());
  EMBER_ASSIGN_OR_RETURN(vmm_.serial_rx_space_, base::EventFd::Create());
  EMBER_ASSIGN_OR_RETURN(vmm_.reset_event_, base::EventFd::Create());
  EMBER_RETURN_IF_ERROR(vmm_.vm_->RegisterIrqfd(vmm_.serial_irq_->Get(), arch::kCom1Irq));
  EMBER_ASSIGN_OR_RETURN(vmm_.keyboard_irq_, base::EventFd::Create());
  EMBER_RETURN_IF_ERROR(vmm_.vm_->RegisterIrqfd(vmm_.keyboard_irq_->Get(), arch::kI8042Irq));

  const v1::Console& console = options_.config.console();
  vmm_.serial_ = std::make_unique<devices::Serial>(
      options_.console_out_fd, &*vmm_.serial_irq_, &*vmm_.serial_rx_space_,
      console.has_max_bytes() ? console.max_bytes() : devices::Serial::kDefaultMaxOutputBytes);
  vmm_.i8042_ = std::make_unique<devices::I8042>(&*vmm_.reset_event_, &*vmm_.keyboard_irq_);
  Vmm* vmm = &vmm_;
  vmm_.boot_timer_ =
      std::make_unique<devices::BootTimer>(options_.start_us,
                                           [vmm](std::uint64_t us) { vmm->GuestBooted(us); });
  EMBER_RETURN_IF_ERROR(vmm_.pio_bus_.Insert(arch::kCom1Port, arch::kCom1Size, vmm_.serial_.get()));
  EMBER_RETURN_IF_ERROR(
      vmm_.pio_bus_.Insert(arch::kI8042Port, arch::kI8042Size, vmm_.i8042_.get()));
  return vmm_.mmio_bus_.Insert(arch::kBootTimerAddr, arch::kBootTimerSize,
                               vmm_.boot_timer_.get());
}

absl::Status VmBuilder::PlaceVirtioDevices() {
  for (auto& [id, device] : devices_) {
    EMBER_ASSIGN_OR_RETURN(base::EventFd irq, base::EventFd::Create());
    EMBER_ASSIGN_OR_RETURN(auto transport, virtio::MmioTransport::Create(
                                               *vmm_.memory_, std::move(device), std::move(irq)));
    EMBER_RETURN_IF_ERROR(vmm_.virtio_devices_.Add(std::move(id), std::move(transport),
                                                   vmm_.mmio_bus_, *vmm_.vm_, *vmm_.loop_));
  }
  devices_.clear();
  return absl::OkStatus();
}

absl::Status VmBuilder::LoadGuestAndCreateVcpus() {
  const v1::BootSource& boot = options_.config.boot_source();
  const std::uint32_t vcpu_count = VcpuCountOf(options_.config);
  vmm_.cmdline_ = AssembleCmdline(options_.config, boot.kernel_image_path().empty(),
                                  vmm_.virtio_devices_.CmdlineTokens());
  EMBER_RETURN_IF_ERROR(CheckCmdlineLength(vmm_.cmdline_));
  KernelCache cache(KernelCache::DefaultDir());
  GuestBoot guest_boot{&*kernel_, boot.initrd_path(), vmm_.cmdline_,
                       !boot.has_decompress_on_host() || boot.decompress_on_host(), &cache};
  EMBER_ASSIGN_OR_RETURN(LoadedGuest guest, LoadGuest(*vmm_.memory_, guest_boot));
  EMBER_RETURN_IF_ERROR(arch::WriteMpTable(*vmm_.memory_, vcpu_count));
  // The same devices as the command line's tokens and the buses: a kernel with ACPI finds
  // them in the DSDT, whether its drivers are built in or modules.
  const arch::AcpiDevices acpi_devices{
      .com1 = arch::IsaDevice{arch::kCom1Port, arch::kCom1Size, arch::kCom1Irq},
      .i8042 = arch::IsaDevice{arch::kI8042Port, arch::kI8042Size, arch::kI8042Irq},
      .virtio_mmio = vmm_.virtio_devices_.MmioDevices()};
  EMBER_RETURN_IF_ERROR(arch::WriteAcpiTables(*vmm_.memory_, vcpu_count, acpi_devices));
  EMBER_RETURN_IF_ERROR(CreateVcpus(guest.entry));
  EMBER_LOG(kInfo) << "VM built: " << vcpu_count << " vCPU(s), "
                   << MemBytesOf(options_.config) / arch::kMiB << " MiB, kernel "
                   << kernel_->name() << " (" << BootPathName(guest.path)
                   << "), command line \"" << vmm_.cmdline_ << "\"";
  return absl::OkStatus();
}

absl::Status VmBuilder::CreateVcpus(std::uint64_t entry) {
  const std::uint32_t count = VcpuCountOf(options_.config);
  EMBER_ASSIGN_OR_RETURN(std::vector<kvm_cpuid_entry2> supported, vmm_.kvm_->GetSupportedCpuid());
  VcpuRunner::InstallKickSignalHandler();
  for (std::uint32_t id = 0; id < count; ++id) {
    EMBER_ASSIGN_OR_RETURN(kvm::Vcpu vcpu, vmm_.vm_->CreateVcpu(id));
    std::vector<kvm_cpuid_entry2> cpuid = arch::NormalizeCpuid(supported, id, count);
    arch::ApplyCpuTemplate(cpu_template_, cpuid);
    EMBER_RETURN_IF_ERROR(vcpu.SetCpuid(cpuid));
    vmm_.vcpu_cpuid_.push_back(std::move(cpuid));
    if (id == 0) {
      EMBER_RETURN_IF_ERROR(arch::ConfigureBootVcpu(vcpu, entry));
    } else {
      EMBER_RETURN_IF_ERROR(arch::ConfigureApplicationVcpu(vcpu));
    }
    vmm_.AdoptVcpu(std::move(vcpu), options_.start_us);
  }
  return absl::OkStatus();
}

}  // namespace ember::vmm
