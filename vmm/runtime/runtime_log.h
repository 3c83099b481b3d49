#pragma once

#include <string>

#include "absl/strings/string_view.h"
#include "cli.h"

namespace ember::runtime {

// Where ember-runtime reports: errors go to stderr and, with --log, to that file in runc's
// form (`--log-format json`: one {"level","msg","time"} object a line, which containerd's
// shim reads back to show why a command failed; text: logrus's key=value line). Debug lines
// go to the file only, with --debug. Any process; each call opens, appends and closes, so a
// supervisor that outlives the command holds no fd of the log.
class RuntimeLog {
 public:
  explicit RuntimeLog(GlobalOptions options) : options_(std::move(options)) {}

  // The supervisor, whose stderr is the workload's, reports to the log file only.
  void set_stderr(bool on) { stderr_ = on; }

  void Error(absl::string_view message) const;
  void Warning(absl::string_view message) const;
  void Debug(absl::string_view message) const;

  // One line as it is written to the log file (tests check the form).
  [[nodiscard]] static std::string FormatLine(absl::string_view format, absl::string_view level,
                                              absl::string_view message, absl::string_view time);

 private:
  void Append(absl::string_view level, absl::string_view message) const;
  GlobalOptions options_;
  bool stderr_ = true;
};

// Now as RFC 3339 with nanoseconds in UTC, as runc's logs and OCI state's `created` write it.
[[nodiscard]] std::string Rfc3339Now();

}  // namespace ember::runtime
