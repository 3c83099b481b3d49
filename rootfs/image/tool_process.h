#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ember::rootfs {

// What a finished helper program (mke2fs, debugfs) left: its exit status and what it wrote to
// stderr (the first 64 KiB), from which its errors are reported.
struct ToolResult {
  int exit_code = 0;  // 128 + N when killed by signal N
  std::string stderr_text;
};

// Runs `argv` (argv[0] looked up on PATH, then in /sbin and /usr/sbin, where Debian puts
// e2fsprogs for users whose PATH lacks them) with stdin and stdout on /dev/null, and waits for
// it. An error only when it could not be started; its own failure is in the result.
[[nodiscard]] absl::StatusOr<ToolResult> RunTool(const std::vector<std::string>& argv);

// The first line of `text` that is not blank, for one-line error messages.
[[nodiscard]] std::string FirstLine(const std::string& text);

}  // namespace ember::rootfs
