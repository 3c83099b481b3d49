#include "vmm/base/logging.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <limits>

#include "absl/strings/ascii.h"
#include "vmm/base/metrics.h"
#include "vmm/base/status.h"

namespace ember::base {
namespace {

std::atomic<LogLevel> g_level{LogLevel::kInfo};
std::atomic<int> g_log_fd{STDERR_FILENO};
std::atomic<bool> g_show_level{true};
std::atomic<bool> g_show_origin{true};
thread_local std::string t_thread_name = "main";

// The size cap (SetLogSizeLimit): what the log holds so far, counting a log file's size
// when it was opened, and whether the notice that the cap was reached went out.
std::atomic<std::uint64_t> g_log_limit{std::numeric_limits<std::uint64_t>::max()};
std::atomic<bool> g_rate_limit{false};
std::atomic<std::uint64_t> g_log_used{0};
std::atomic<bool> g_cap_noted{false};
// Room kept below the cap for that notice, so that it always fits.
constexpr std::uint64_t kCapNoticeRoom = 256;

struct LoggerMetrics {
  Metric* rate_limited_lines;
  Metric* lines_over_cap;
  Metric* bytes_over_cap;
};
const LoggerMetrics& Counters() {
  static const LoggerMetrics metrics{
      MetricsRegistry::Global().Get("logger", "rate_limited_lines"),
      MetricsRegistry::Global().Get("logger", "lines_over_cap"),
      MetricsRegistry::Global().Get("logger", "bytes_over_cap")};
  return metrics;
}

// A regular file's size; 0 for a pipe, terminal or anything else that does not keep bytes.
std::uint64_t KeptBytes(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
  return static_cast<std::uint64_t>(st.st_size);
}

// Takes `n` bytes of the log's room below `limit`; false when they do not fit.
bool TakeRoom(std::uint64_t n, std::uint64_t limit) {
  std::uint64_t used = g_log_used.load(std::memory_order_relaxed);
  do {
    if (n > limit || used > limit - n) return false;
  } while (!g_log_used.compare_exchange_weak(used, used + n, std::memory_order_relaxed));
  return true;
}

void WriteLog(const std::string& text) {
  // One write per line keeps lines from different threads whole.
  [[maybe_unused]] ssize_t ignored = ::write(g_log_fd.load(), text.data(), text.size());
}

// "<UTC time> [<thread>] ", how every line starts.
std::string LinePrefix() {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()) %
                std::chrono::seconds(1);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
  char frac[16];
  std::snprintf(frac, sizeof(frac), ".%06lldZ", static_cast<long long>(micros.count()));
  return std::string(stamp) + frac + " [" + t_thread_name + "] ";
}

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kError: return "ERROR";
    case LogLevel::kWarn: return "WARN";
    case LogLevel::kInfo: return "INFO";
    case LogLevel::kDebug: return "DEBUG";
    case LogLevel::kTrace: return "TRACE";
  }
  return "?";
}

std::string_view Basename(std::string_view path) {
  // Keep the path from the source root: "vmm/main.cc" says more than "main.cc".
  for (std::string_view root : {"/vmm/", "/virtio/", "/snapshot/", "/jailer/", "/tests/"}) {
    auto pos = path.rfind(root);
    if (pos != std::string_view::npos) return path.substr(pos + 1);
  }
  auto slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

}  // namespace

absl::Status ParseLogLevel(std::string_view text, LogLevel* level) {
  std::string lower = absl::AsciiStrToLower(std::string(text));
  if (lower == "error") *level = LogLevel::kError;
  else if (lower == "warning" || lower == "warn") *level = LogLevel::kWarn;
  else if (lower == "info") *level = LogLevel::kInfo;
  else if (lower == "debug") *level = LogLevel::kDebug;
  else if (lower == "trace") *level = LogLevel::kTrace;
  else {
    return absl::InvalidArgumentError("unknown log level \"" + std::string(text) +
                                      "\" (expected Error, Warning, Info, Debug or Trace)");
  }
  return absl::OkStatus();
}

void SetLogLevel(LogLevel level) { g_level.store(level); }
LogLevel GetLogLevel() { return g_level.load(std::memory_order_relaxed); }

absl::Status SetLogFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoError("open log file", path);
  g_log_used.store(KeptBytes(fd));
  g_cap_noted.store(false);
  int old = g_log_fd.exchange(fd);
  if (old != STDERR_FILENO) ::close(old);
  return absl::OkStatus();
}

void SetLogSizeLimit(std::uint64_t max_bytes) {
  (void)Counters();  // the metrics show from the start, at zero
  g_log_limit.store(max_bytes);
  // stderr redirected to a file (emberd's vmm.log) is bounded with what it already holds.
  if (const std::uint64_t kept = KeptBytes(g_log_fd.load()); kept > g_log_used.load()) {
    g_log_used.store(kept);
  }
  g_cap_noted.store(false);
}

void SetLogRateLimit(bool on) {
  (void)Counters();
  g_rate_limit.store(on);
}

bool LogSiteLimit::Admit() {
  if (!g_rate_limit.load(std::memory_order_relaxed)) return true;
  return AdmitAt(std::chrono::duration_cast<std::chrono::nanoseconds>(
                     std::chrono::steady_clock::now().time_since_epoch())
                     .count());
}

bool LogSiteLimit::AdmitAt(std::int64_t now) {
  std::int64_t next = next_ns_.load(std::memory_order_relaxed);
  while (true) {
    const std::int64_t start = std::max(next, now);
    if (start - now > (kLogBurst - 1) * kLogIntervalNs) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      Counters().rate_limited_lines->Add();
      return false;
    }
    if (next_ns_.compare_exchange_weak(next, start + kLogIntervalNs,
                                       std::memory_order_relaxed)) {
      return true;
    }
  }
}

void SetThreadName(std::string_view name) { t_thread_name = std::string(name); }

void SetLogDecorations(bool show_level, bool show_origin) {
  g_show_level.store(show_level);
  g_show_origin.store(show_origin);
}

LogMessage::LogMessage(LogLevel level, const char* file, int line, std::uint64_t dropped)
    : dropped_(dropped) {
  stream_ << LinePrefix();
  if (g_show_level.load(std::memory_order_relaxed)) stream_ << LevelName(level) << ' ';
  if (g_show_origin.load(std::memory_order_relaxed)) {
    stream_ << Basename(file) << ':' << line << "] ";
  }
}

LogMessage::~LogMessage() {
  if (dropped_ != 0) {
    // std::dec: the line itself may have left the stream in hex.
    stream_ << std::dec << " [" << dropped_
            << " more lines from here were dropped by the log rate limit]";
  }
  stream_ << '\n';
  const std::string text = stream_.str();
  const std::uint64_t limit = g_log_limit.load(std::memory_order_relaxed);
  if (TakeRoom(text.size(), limit > kCapNoticeRoom ? limit - kCapNoticeRoom : 0)) {
    WriteLog(text);
    return;
  }
  Counters().lines_over_cap->Add();
  Counters().bytes_over_cap->Add(text.size());
  if (g_cap_noted.exchange(true)) return;
  std::string notice = LinePrefix() + "WARN the log reached its size cap of " +
                       std::to_string(limit) +
                       " bytes (logger.max_bytes); later lines are dropped and counted in "
                       "metrics (logger.lines_over_cap)\n";
  if (TakeRoom(notice.size(), limit)) WriteLog(notice);
}

}  // namespace ember::base
