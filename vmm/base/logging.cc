#include "vmm/base/logging.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ctime>

#include "absl/strings/ascii.h"
#include "vmm/base/status.h"

namespace ember::base {
namespace {

std::atomic<LogLevel> g_level{LogLevel::kInfo};
std::atomic<int> g_log_fd{STDERR_FILENO};
std::atomic<bool> g_show_level{true};
std::atomic<bool> g_show_origin{true};
thread_local std::string t_thread_name = "main";

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
  int old = g_log_fd.exchange(fd);
  if (old != STDERR_FILENO) ::close(old);
  return absl::OkStatus();
}

void SetThreadName(std::string_view name) { t_thread_name = std::string(name); }

void SetLogDecorations(bool show_level, bool show_origin) {
  g_show_level.store(show_level);
  g_show_origin.store(show_origin);
}

LogMessage::LogMessage(LogLevel level, const char* file, int line) {
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
  stream_ << stamp << frac << " [" << t_thread_name << "] ";
  if (g_show_level.load(std::memory_order_relaxed)) stream_ << LevelName(level) << ' ';
  if (g_show_origin.load(std::memory_order_relaxed)) {
    stream_ << Basename(file) << ':' << line << "] ";
  }
}

LogMessage::~LogMessage() {
  stream_ << '\n';
  std::string text = stream_.str();
  // One write per line keeps lines from different threads whole.
  [[maybe_unused]] ssize_t ignored = ::write(g_log_fd.load(), text.data(), text.size());
}

}  // namespace ember::base
