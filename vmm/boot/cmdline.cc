#include "vmm/boot/cmdline.h"

#include "vmm/arch/x86_64/layout.h"

namespace ember::vmm {

namespace {

void Append(std::string& cmdline, const std::string& words) {
  if (words.empty()) return;
  if (!cmdline.empty()) cmdline += ' ';
  cmdline += words;
}

}  // namespace

std::string AssembleCmdline(const v1::VmConfig& config, bool builtin_guest,
                            const std::string& device_tokens) {
  const v1::BootSource& boot = config.boot_source();
  std::string cmdline;
  if (boot.has_boot_args()) {
    cmdline = boot.boot_args();
  } else {
    cmdline = kDefaultBootArgs;
    if (builtin_guest) Append(cmdline, kDefaultTestScenarios);
  }
  for (const v1::Drive& drive : config.drives()) {
    if (!drive.is_root_device()) continue;
    Append(cmdline, drive.partuuid().empty() ? "root=/dev/vda" : "root=PARTUUID=" + drive.partuuid());
    Append(cmdline, drive.is_read_only() ? "ro" : "rw");
  }
  Append(cmdline, device_tokens);
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
