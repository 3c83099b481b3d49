#pragma once

// What the perf/ harnesses share: medians of repeated samples, perf/run's line format
// (`NAME VALUE UNIT | BASELINE-NAME VALUE UNIT | ratio R`, `#` lines for notes), and fatal
// errors (their command lines: bench_options.h). Header-only so that each harness stays one
// small target.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

namespace ember::perf {

// Ends the harness: a benchmark that cannot run what it claims to measure prints nothing.
[[noreturn]] inline void Die(const std::string& harness, const std::string& message) {
  std::fprintf(stderr, "%s: error: %s\n", harness.c_str(), message.c_str());
  std::exit(1);
}

[[nodiscard]] inline double Median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const std::size_t mid = values.size() / 2;
  return values.size() % 2 == 1 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
}

[[nodiscard]] inline double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// One figure line on stdout; the baseline part only when there is a baseline.
inline void PrintFigure(const std::string& name, double value, const std::string& unit,
                        const std::string& baseline_name = "",
                        std::optional<double> baseline = {}) {
  std::string line = name + " ";
  char text[64];
  std::snprintf(text, sizeof text, "%.2f", value);
  line += text;
  line += " " + unit;
  if (baseline && *baseline > 0) {
    std::snprintf(text, sizeof text, "%.2f", *baseline);
    line += " | " + baseline_name + " " + text + " " + unit;
    std::snprintf(text, sizeof text, "%.3g", value / *baseline);
    line += std::string(" | ratio ") + text;
  }
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

// A `#` line on stdout: context a reader of the table needs (sizes, targets).
inline void PrintNote(const std::string& text) {
  std::printf("# %s\n", text.c_str());
  std::fflush(stdout);
}

}  // namespace ember::perf
