#include "vmm/vm_config.h"

#include <fcntl.h>
#include <unistd.h>

#include "vmm/base/logging.h"
#include "vmm/arch/x86_64/cpu_template.h"
#include "vmm/base/status.h"
#include "vmm/drive_config.h"
#include "vmm/net_config.h"

namespace ember::vmm {
namespace {

absl::Status FieldError(const std::string& field, const std::string& problem) {
  return absl::InvalidArgumentError(field + ": " + problem);
}

absl::Status CheckReadableFile(const std::string& field, const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return FieldError(field,
                      std::string(base::ErrnoError("cannot open", "\"" + path + "\"").message()));
  }
  ::close(fd);
  return absl::OkStatus();
}

absl::Status ValidateMachine(const v1::MachineConfig& machine) {
  if (machine.has_vcpu_count() && (machine.vcpu_count() < 1 || machine.vcpu_count() > kMaxVcpus)) {
    return FieldError("machine-config.vcpu_count",
                      "must be between 1 and " + std::to_string(kMaxVcpus) + ", got " +
                          std::to_string(machine.vcpu_count()));
  }
  if (machine.has_mem_size_mib() &&
      (machine.mem_size_mib() < kMinMemMib || machine.mem_size_mib() > kMaxMemMib)) {
    return FieldError("machine-config.mem_size_mib",
                      "must be between " + std::to_string(kMinMemMib) + " and " +
                          std::to_string(kMaxMemMib) + " MiB, got " +
                          std::to_string(machine.mem_size_mib()));
  }
  if (machine.smt()) return FieldError("machine-config.smt", "SMT is not supported");
  if (!machine.cpu_template().empty()) {
    if (auto parsed = arch::ParseCpuTemplate(machine.cpu_template()); !parsed.ok()) {
      return FieldError("machine-config.cpu_template", std::string(parsed.status().message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateVmConfig(const v1::VmConfig& config) {
  EMBER_RETURN_IF_ERROR(ValidateMachine(config.machine_config()));
  const v1::BootSource& boot = config.boot_source();
  if (!boot.kernel_image_path().empty()) {
    EMBER_RETURN_IF_ERROR(CheckReadableFile("boot-source.kernel_image_path",
                                            boot.kernel_image_path()));
  }
  if (!boot.initrd_path().empty()) {
    EMBER_RETURN_IF_ERROR(CheckReadableFile("boot-source.initrd_path", boot.initrd_path()));
  }
  if (auto drives = DriveConfigs(config); !drives.ok()) return drives.status();
  if (auto nets = NetConfigs(config); !nets.ok()) return nets.status();
  if (auto vsock = VsockConfigOf(config); !vsock.ok()) return vsock.status();
  if (!config.logger().level().empty()) {
    base::LogLevel level;
    if (auto status = base::ParseLogLevel(config.logger().level(), &level); !status.ok()) {
      return FieldError("logger.level", std::string(status.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace ember::vmm
