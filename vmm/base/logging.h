#pragma once

#include <sstream>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace ember::base {

enum class LogLevel { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3, kTrace = 4 };

// Accepts Firecracker's spellings ("Error", "Warning", "Info", "Debug", "Trace"), any case.
[[nodiscard]] absl::Status ParseLogLevel(std::string_view text, LogLevel* level);

// Process-wide logger settings. Configure once at start-up, before threads exist.
void SetLogLevel(LogLevel level);
[[nodiscard]] LogLevel GetLogLevel();
// Appends to `path` from now on instead of stderr.
[[nodiscard]] absl::Status SetLogFile(const std::string& path);
// Names the calling thread in its log lines ("main", "vcpu0", ...).
void SetThreadName(std::string_view name);
// Whether lines carry their level and their source file:line (both, by default).
void SetLogDecorations(bool show_level, bool show_origin);

// One log line; written (whole, with one write) when it goes out of scope.
class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

}  // namespace ember::base

#define EMBER_LOG_ENABLED(level) \
  (::ember::base::LogLevel::level <= ::ember::base::GetLogLevel())
#define EMBER_LOG(level)              \
  if (!EMBER_LOG_ENABLED(level)) {    \
  } else                              \
    ::ember::base::LogMessage(::ember::base::LogLevel::level, __FILE__, __LINE__).stream()
