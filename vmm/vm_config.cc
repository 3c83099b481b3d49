#include "vmm/vm_config.h"

#include <fcntl.h>

#include "vmm/base/logging.h"
#include "vmm/arch/x86_64/cpu_template.h"
#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"
#include "vmm/drive_config.h"
#include "vmm/net_config.h"
#include "vmm/rules/vm_config_rules.h"

namespace ember::vmm {
namespace {

absl::Status FieldError(const std::string& field, const std::string& problem) {
  return absl::InvalidArgumentError(field + ": " + problem);
}

absl::Status CheckReadableFile(const std::string& field, const std::string& path) {
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    return FieldError(field,
                      std::string(base::ErrnoError("cannot open", "\"" + path + "\"").message()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateVmConfig(const v1::VmConfig& config) {
  EMBER_RETURN_IF_ERROR(rules::CheckVmConfig(config));
  const v1::MachineConfig& machine = config.machine_config();
  if (!machine.cpu_template().empty()) {
    if (auto parsed = arch::ParseCpuTemplate(machine.cpu_template()); !parsed.ok()) {
      return FieldError("machine-config.cpu_template", std::string(parsed.status().message()));
    }
  }
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
  if (!config.logger().level().empty()) {
    base::LogLevel level;
    if (auto status = base::ParseLogLevel(config.logger().level(), &level); !status.ok()) {
      return FieldError("logger.level", std::string(status.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace ember::vmm
