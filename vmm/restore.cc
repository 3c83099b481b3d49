#include "vmm/restore.h"

#include <filesystem>
#include <vector>

#include "absl/strings/str_format.h"
#include "snapshot/memory_file.h"
#include "snapshot/state_file.h"
#include "vmm/arch/x86_64/layout.h"
#include "vmm/base/status.h"
#include "vmm/config_loader.h"
#include "vmm/rules/restore_overrides.h"
#include "vmm/vm_config.h"

namespace ember::vmm {

absl::Status CheckStateMatchesConfig(const v1::SnapshotState& state, const v1::VmConfig& config) {
  const std::uint64_t mem_bytes = MemBytesOf(config);
  const std::vector<base::GuestMemory::Range> ranges = arch::GuestRamRanges(mem_bytes);
  if (state.memory_size() != static_cast<int>(ranges.size())) {
    return absl::InvalidArgumentError(
        absl::StrFormat("it has %d memory regions; a VM of %d MiB has %d", state.memory_size(),
                        mem_bytes / arch::kMiB, ranges.size()));
  }
  // Regions lie back to back in the memory file, in address order, as GuestMemory maps them.
  std::uint64_t file_offset = 0;
  for (int i = 0; i < state.memory_size(); ++i) {
    const v1::MemoryRegion& region = state.memory(i);
    const base::GuestMemory::Range& expected = ranges[static_cast<std::size_t>(i)];
    if (region.guest_start() != expected.start || region.size() != expected.size) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "memory region %d is 0x%x bytes at 0x%x; a VM of %d MiB has 0x%x bytes at 0x%x", i,
          region.size(), region.guest_start(), mem_bytes / arch::kMiB, expected.size,
          expected.start));
    }
    if (region.file_offset() != file_offset) {
      return absl::InvalidArgumentError(
          absl::StrFormat("memory region %d is at memory-file offset 0x%x; it must be at 0x%x",
                          i, region.file_offset(), file_offset));
    }
    file_offset += region.size();
  }
  if (state.memory_file_size() != file_offset) {
    return absl::InvalidArgumentError(
        absl::StrFormat("it records a memory file of %d bytes; its memory regions fill %d",
                        state.memory_file_size(), file_offset));
  }
  const std::uint32_t vcpu_count = VcpuCountOf(config);
  if (state.vcpus_size() != static_cast<int>(vcpu_count)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "it has %d vCPUs; its configuration gives %d", state.vcpus_size(), vcpu_count));
  }
  std::vector<bool> seen(vcpu_count, false);
  for (const v1::VcpuState& vcpu : state.vcpus()) {
    if (vcpu.id() >= vcpu_count) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "vCPU id %d is out of range for %d vCPUs", vcpu.id(), vcpu_count));
    }
    if (seen[vcpu.id()]) {
      return absl::InvalidArgumentError(absl::StrFormat("vCPU id %d appears twice", vcpu.id()));
    }
    seen[vcpu.id()] = true;
  }
  return absl::OkStatus();
}

absl::Status CheckPathsFromStateFile(const v1::VmConfig& config,
                                     const v1::RestoreOverrides& overrides,
                                     const base::PathRules& allowed) {
  auto check = [&](const std::string& device, const std::string& path,
                   const std::string& override_flag) -> absl::Status {
    if (allowed.empty()) {
      return absl::InvalidArgumentError(
          device + ": " + path + " comes from the state file, which does not choose host "
          "files; give " + override_flag + ", or --allow-dir DIR to accept the state file's "
          "paths under DIR");
    }
    absl::Status status = allowed.Check(device + " (its path from the state file)", path);
    if (status.ok()) return status;
    return absl::InvalidArgumentError(std::string(status.message()) + "; or give " +
                                      override_flag);
  };
  for (const v1::Drive& drive : config.drives()) {
    if (drive.path_on_host().empty() ||
        overrides.drive_path_on_host().count(drive.drive_id()) != 0) {
      continue;
    }
    EMBER_RETURN_IF_ERROR(check("drive \"" + drive.drive_id() + "\"", drive.path_on_host(),
                                "--drive-override " + drive.drive_id() + "=PATH"));
  }
  if (!config.vsock().uds_path().empty() && overrides.vsock_uds_path().empty()) {
    EMBER_RETURN_IF_ERROR(
        check("vsock socket", config.vsock().uds_path(), "--vsock-override PATH"));
  }
  return absl::OkStatus();
}

absl::Status CheckBaseMemoryFiles(const v1::SnapshotState& state, const std::string& state_path,
                                  const base::PathRules& allowed,
                                  const snapshot::HandedFiles& handed) {
  if (state.base_memory_files().empty()) return absl::OkStatus();
  if (!handed.empty()) {
    for (int i = 0; i < state.base_memory_files_size(); ++i) {
      const std::string& path = state.base_memory_files(i);
      if (handed.count(path) == 0) {
        return absl::InvalidArgumentError(
            "base memory file " + std::to_string(i) + " (its path from the state file): " +
            path + " is none of the files handed over (--base-memory-file), and with those "
            "given ember-vmm opens no base by the state file's name");
      }
    }
    return absl::OkStatus();
  }
  const std::string state_dir =
      std::filesystem::absolute(state_path).lexically_normal().parent_path().string();
  base::PathRules beside;
  if (allowed.empty()) {
    EMBER_ASSIGN_OR_RETURN(beside, base::PathRules::Open({state_dir}, "ember-vmm"));
  }
  for (int i = 0; i < state.base_memory_files_size(); ++i) {
    const std::string field =
        "base memory file " + std::to_string(i) + " (its path from the state file)";
    const std::string& path = state.base_memory_files(i);
    if (!allowed.empty()) {
      EMBER_RETURN_IF_ERROR(allowed.Check(field, path));
    } else if (!beside.Check(field, path).ok()) {
      return absl::InvalidArgumentError(
          field + ": " + path + " is not in the state file's own directory " + state_dir +
          " (or leads out of it through a symlink or \"..\"); with no --allow-dir, ember-vmm "
          "maps base memory files only from there: give --allow-dir DIR to accept them under "
          "DIR");
    }
  }
  return absl::OkStatus();
}

std::vector<snapshot::MemoryFileRef> RestoreChain(const RestoreSource& source) {
  // Handed over (memory_name set): named by memory_name, opened as memory_path.
  snapshot::MemoryFileRef memory{source.memory_path, "", snapshot::Symlinks::kFollow};
  if (!source.memory_name.empty()) memory = {source.memory_name, "", memory.symlinks, memory.path};
  return snapshot::MemoryChain(source.state, memory, source.base_files);
}

absl::Status PrepareRestore(const std::string& state_path, const RestoreMemory& memory,
                            const v1::RestoreOverrides& overrides, const base::PathRules& allowed,
                            VmmOptions* options) {
  EMBER_ASSIGN_OR_RETURN(v1::SnapshotState read, snapshot::ReadStateFile(state_path));
  // Before any base is opened: a file opened is already a file read.
  if (auto status = CheckBaseMemoryFiles(read, state_path, allowed, memory.bases);
      !status.ok()) {
    return absl::InvalidArgumentError("snapshot state file " + state_path + ": " +
                                      std::string(status.message()));
  }
  RestoreSource source{std::move(read), memory.path, memory.name, memory.bases};
  const v1::SnapshotState& state = source.state;
  // No memory file (empty path): an external page-fault handler serves the memory.
  for (const snapshot::MemoryFileRef& file :
       memory.path.empty() ? std::vector<snapshot::MemoryFileRef>{} : RestoreChain(source)) {
    if (auto status = snapshot::CheckMemoryFile(file, state.memory_file_size()); !status.ok()) {
      return absl::InvalidArgumentError("snapshot state file " + state_path + ": " +
                                        std::string(status.message()));
    }
  }
  v1::VmConfig config = state.config();
  EMBER_RETURN_IF_ERROR(rules::ApplyRestoreOverrides(overrides, "overrides",
                                                     rules::UnknownDevices::kRefuse, &config));
  EMBER_RETURN_IF_ERROR(ValidateVmConfig(config));
  // The CRC proves the file intact, not that whoever wrote it was Ember: what gets mapped and
  // created is derived from the configuration, and the state must describe exactly that.
  if (auto status = CheckStateMatchesConfig(state, config); !status.ok()) {
    return absl::InvalidArgumentError("snapshot state file " + state_path +
                                      " does not match its configuration: " +
                                      std::string(status.message()));
  }
  if (auto status = CheckPathsFromStateFile(config, overrides, allowed); !status.ok()) {
    return absl::InvalidArgumentError("snapshot state file " + state_path + ": " +
                                      std::string(status.message()));
  }
  options->config = std::move(config);
  options->restore = std::move(source);
  return absl::OkStatus();
}

absl::StatusOr<v1::RestoreOverrides> LoadRestoreOverrides(const std::string& path) {
  v1::RestoreOverrides overrides;
  EMBER_RETURN_IF_ERROR(LoadBinaryMessage(path, "--restore-overrides file", &overrides));
  return overrides;
}

}  // namespace ember::vmm
