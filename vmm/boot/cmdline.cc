#include "vmm/boot/cmdline.h"

#include "vmm/arch/x86_64/layout.h"

namespace ember::vmm {

std::string AssembleCmdline(const v1::VmConfig& config, bool builtin_guest) {
  const v1::BootSource& boot = config.boot_source();
  if (boot.has_boot_args()) return boot.boot_args();
  std::string cmdline = kDefaultBootArgs;
  if (builtin_guest) cmdline += std::string(" ") + kDefaultTestScenarios;
  return cmdline;
}

absl::Status CheckCmdlineLength(const std::string& cmdline) {
  if (cmdline.size() + 1 > arch::kCmdlineMaxSize) {
    return absl::InvalidArgumentError("boot-source.boot_args: the kernel command line is " +
                                      std::to_string(cmdline.size()) +
                                      " bytes; the limit is " +
                                      std::to_string(arch::kCmdlineMaxSize - 1));
  }
  return absl::OkStatus();
}

}  // namespace ember::vmm
