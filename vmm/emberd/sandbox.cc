#include "vmm/emberd/sandbox.h"

#include "vmm/base/logging.h"

namespace ember::emberd {

absl::Status InstallSandbox() {
  EMBER_LOG(kDebug) << "emberd: no seccomp filter installed yet (jailer/ seccomp seam)";
  return absl::OkStatus();
}

}  // namespace ember::emberd
