#pragma once

#include <optional>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "jailer/emberd_seccomp.h"
#include "jailer/seccomp_filter.h"

namespace ember::emberd {

// --seccomp: enforce (default), log, or off (no filter; nullopt).
[[nodiscard]] absl::StatusOr<std::optional<jailer::SeccompMode>> ParseSeccompFlag(
    std::string_view text);

// emberd's own seccomp allowlist (jailer/emberd_seccomp.h), installed on every thread at once
// by the main thread once the gRPC server has started: gRPC's threads and the VM supervisor
// exist by then, and threads started later inherit it. emberd must not exec afterwards (VMMs
// are spawned by the fork server, launcher.h). `mode` nullopt installs nothing and says so;
// every choice is logged. `params`: what the allowlist depends on (--tcp, the jail).
[[nodiscard]] absl::Status InstallSandbox(std::optional<jailer::SeccompMode> mode,
                                          const jailer::EmberdSeccompParams& params);

}  // namespace ember::emberd
