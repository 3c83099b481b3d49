#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace ember::runtime {

// A container process's terminal, as runc makes one for `process.terminal`: a pty whose master
// goes to the caller over `socket_path` (one message, the terminal's name as data, the fd as
// SCM_RIGHTS) and whose slave, returned, stands for the guest process's stdio on the host: raw
// (the guest's own terminal does the line discipline) and the calling process's controlling
// terminal when it has none (so a resize arrives as SIGWINCH). `rows`/`cols` 0: not set.
[[nodiscard]] absl::StatusOr<base::UniqueFd> OpenConsole(const std::string& socket_path,
                                                         std::uint32_t rows, std::uint32_t cols);

}  // namespace ember::runtime
