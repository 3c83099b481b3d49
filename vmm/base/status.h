#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ember::base {

// Builds an error for a failed syscall from the current errno, naming the call and the
// object it was applied to, e.g. ErrnoError("open", "/tmp/disk.img").
[[nodiscard]] absl::Status ErrnoError(std::string_view call, std::string_view object = {});

// The same, for an errno value the caller already holds (io_uring results, pthread calls).
[[nodiscard]] absl::Status ErrnoError(int err, std::string_view call, std::string_view object = {});

}  // namespace ember::base

#define EMBER_CONCAT_INNER_(a, b) a##b
#define EMBER_CONCAT_(a, b) EMBER_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define EMBER_RETURN_IF_ERROR(expr) \
  EMBER_RETURN_IF_ERROR_IMPL_(EMBER_CONCAT_(ember_status_, __LINE__), expr)
// The status variable is named per line so the macro nests (inside a lambda argument).
#define EMBER_RETURN_IF_ERROR_IMPL_(status, expr)    \
  do {                                               \
    if (absl::Status status = (expr); !status.ok()) { \
      return status;                                 \
    }                                                \
  } while (false)

// `lhs = value of expr`, or returns its error status from the enclosing function.
#define EMBER_ASSIGN_OR_RETURN(lhs, expr) \
  EMBER_ASSIGN_OR_RETURN_IMPL_(EMBER_CONCAT_(ember_statusor_, __LINE__), lhs, expr)
#define EMBER_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return std::move(tmp).status();     \
  lhs = std::move(tmp).value()
