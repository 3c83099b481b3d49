#pragma once

#include <atomic>
#include <cstdint>
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

// The log's bounds, for a process whose guest can make it log (ember-vmm); both are off
// until set, since a daemon's log (emberd's) is the operator's to rotate. Configure at
// start-up, before threads exist.
//
// ember-vmm's cap unless the VM config says otherwise (logger.max_bytes).
inline constexpr std::uint64_t kDefaultLogSizeLimit = std::uint64_t{16} << 20;
// Bounds the log (the log file, or stderr when there is none), so that a guest that keeps
// the VMM logging cannot fill the host's disk: once a line would take it past `max_bytes`,
// one notice says so and every later line is dropped and counted (metrics
// logger.lines_over_cap and logger.bytes_over_cap). A log file's existing size counts, so
// that a file appended to by successive VMMs stays bounded too.
void SetLogSizeLimit(std::uint64_t max_bytes);
// Turns on the rate limit of every EMBER_LOG call site (LogSiteLimit).
void SetLogRateLimit(bool on);

// The rate limit of one EMBER_LOG call site: lines may come kLogBurst at once, then one per
// kLogIntervalNs on average; the others are dropped and counted (metric
// logger.rate_limited_lines), and the next line let through from the site says how many.
// Every site has one rather than a chosen few, since many lines are the guest's doing (a
// refused feature set, a driver error), a guest can repeat them at will, and a new line
// should not have to be recognised as such to be bounded. Any thread.
class LogSiteLimit {
 public:
  static constexpr std::int64_t kLogBurst = 10;
  static constexpr std::int64_t kLogIntervalNs = 1'000'000'000;

  constexpr LogSiteLimit() = default;
  // Whether a line from this site may go out now; always, while SetLogRateLimit is off.
  [[nodiscard]] bool Admit();
  // Whether it may at `now_ns` of steady_clock, whatever SetLogRateLimit says (tests).
  [[nodiscard]] bool AdmitAt(std::int64_t now_ns);
  // How many lines were dropped since the last call; resets the count.
  [[nodiscard]] std::uint64_t TakeDropped() { return dropped_.exchange(0); }

 private:
  // The site's schedule in ns of steady_clock (GCRA): a line goes out while this lies at
  // most kLogBurst - 1 intervals ahead of now, and moves it one interval on.
  std::atomic<std::int64_t> next_ns_{0};
  std::atomic<std::uint64_t> dropped_{0};
};
// Names the calling thread in its log lines ("main", "vcpu0", ...).
void SetThreadName(std::string_view name);
// Whether lines carry their level and their source file:line (both, by default).
void SetLogDecorations(bool show_level, bool show_origin);

// One log line; written (whole, with one write) when it goes out of scope.
class LogMessage {
 public:
  // `dropped`: lines of this site the rate limit dropped before this one.
  LogMessage(LogLevel level, const char* file, int line, std::uint64_t dropped = 0);
  ~LogMessage();
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
  std::uint64_t dropped_;
};

}  // namespace ember::base

#define EMBER_LOG_ENABLED(level) \
  (::ember::base::LogLevel::level <= ::ember::base::GetLogLevel())
// One line at `level`, written when the statement ends; the arguments are evaluated only
// when it is written. Each call site is rate-limited (LogSiteLimit).
#define EMBER_LOG(level)                                                              \
  if (static constinit ::ember::base::LogSiteLimit ember_log_site;                    \
      !EMBER_LOG_ENABLED(level) || !ember_log_site.Admit()) {                         \
  } else                                                                              \
    ::ember::base::LogMessage(::ember::base::LogLevel::level, __FILE__, __LINE__,     \
                              ember_log_site.TakeDropped())                           \
        .stream()
