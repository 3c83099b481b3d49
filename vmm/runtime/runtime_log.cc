#include "runtime_log.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "nlohmann/json.hpp"

namespace ember::runtime {

std::string Rfc3339Now() {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  tm utc{};
  ::gmtime_r(&now.tv_sec, &utc);
  char date[32];
  std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &utc);
  char out[64];
  std::snprintf(out, sizeof(out), "%s.%09ldZ", date, now.tv_nsec);
  return out;
}

std::string RuntimeLog::FormatLine(absl::string_view format, absl::string_view level,
                                   absl::string_view message, absl::string_view time) {
  if (format == "json") {
    nlohmann::json line = {
        {"level", std::string(level)}, {"msg", std::string(message)}, {"time", std::string(time)}};
    return line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  }
  // logrus's text form: the message quoted as JSON quotes a string.
  nlohmann::json quoted = std::string(message);
  return "time=\"" + std::string(time) + "\" level=" + std::string(level) +
         " msg=" + quoted.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

void RuntimeLog::Append(absl::string_view level, absl::string_view message) const {
  if (options_.log_path.empty()) return;
  int fd = ::open(options_.log_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return;  // the message still went to stderr
  std::string line = FormatLine(options_.log_format, level, message, Rfc3339Now());
  ssize_t ignored = ::write(fd, line.data(), line.size());
  (void)ignored;
  ::close(fd);
}

void RuntimeLog::Error(absl::string_view message) const {
  if (stderr_) std::cerr << "ember-runtime: " << message << std::endl;
  Append("error", message);
}

void RuntimeLog::Warning(absl::string_view message) const {
  if (stderr_) std::cerr << "ember-runtime: warning: " << message << std::endl;
  Append("warning", message);
}

void RuntimeLog::Debug(absl::string_view message) const {
  if (options_.debug) Append("debug", message);
}

}  // namespace ember::runtime
