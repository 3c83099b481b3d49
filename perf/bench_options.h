#pragma once

// The perf/ harnesses' one command-line parser. A harness binds each option to a field of its
// Options struct, with the least value a number may take; --help, unknown options, missing
// values, missing required options and malformed numbers are handled here, alike for all.
// Header-only, as bench_report.h.
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "perf/bench_report.h"

namespace ember::perf {

// The shortest sample a --seconds option takes: below it, a sample is mostly setup and timer.
inline constexpr double kMinSampleSeconds = 0.01;

class BenchOptions {
 public:
  // `harness` names the program in errors; `usage` is printed by --help and after an error.
  BenchOptions(std::string harness, const char* usage)
      : harness_(std::move(harness)), usage_(usage) {}

  // `--name` alone sets *value.
  BenchOptions& Flag(const char* name, bool* value) {
    options_.push_back({name, false, false, [value](const std::string&) {
                          *value = true;
                          return std::string();
                        }});
    return *this;
  }

  // `--name TEXT`; a required one must be given, and not empty.
  BenchOptions& Text(const char* name, std::string* value, bool required = false) {
    options_.push_back({name, true, required, [value](const std::string& text) {
                          *value = text;
                          return std::string();
                        }});
    return *this;
  }

  // `--name N`: a whole number, or a decimal one for a floating-point field, at least `min`.
  template <typename T>
  BenchOptions& Number(const char* name, T* value, T min) {
    static_assert(std::is_arithmetic_v<T>);
    options_.push_back({name, true, false, [value, min](const std::string& text) {
                          T parsed{};
                          auto [end, ec] =
                              std::from_chars(text.data(), text.data() + text.size(), parsed);
                          if (ec != std::errc() || end != text.data() + text.size() ||
                              parsed < min) {
                            return "\"" + text + "\" is not a number >= " + Show(min);
                          }
                          *value = parsed;
                          return std::string();
                        }});
    return *this;
  }

  // Sets the bound fields from argv. -h/--help prints the usage and exits 0; anything wrong
  // ends the harness with what was wrong and the usage.
  void Parse(int argc, char** argv) {
    std::vector<bool> seen(options_.size(), false);
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      if (arg == "-h" || arg == "--help") {
        std::fputs(usage_, stdout);
        std::exit(0);
      }
      std::size_t index = 0;
      while (index < options_.size() && options_[index].name != arg) ++index;
      if (index == options_.size()) Fail("unknown argument " + arg);
      const Option& option = options_[index];
      std::string value;
      if (option.takes_value) {
        if (i + 1 >= argc) Fail(arg + " needs a value");
        value = argv[++i];
      }
      if (std::string problem = option.set(value); !problem.empty()) {
        Fail(arg + ": " + problem);
      }
      seen[index] = !option.takes_value || !value.empty();
    }
    for (std::size_t index = 0; index < options_.size(); ++index) {
      if (options_[index].required && !seen[index]) Fail(options_[index].name + " is required");
    }
  }

 private:
  template <typename T>
  static std::string Show(T number) {
    if constexpr (std::is_floating_point_v<T>) {
      char text[32];
      std::snprintf(text, sizeof text, "%g", static_cast<double>(number));
      return text;
    } else {
      return std::to_string(number);
    }
  }

  struct Option {
    std::string name;
    bool takes_value;
    bool required;
    // Stores the value; returns what is wrong with it, or "".
    std::function<std::string(const std::string& text)> set;
  };

  [[noreturn]] void Fail(const std::string& message) const {
    Die(harness_, message + "\n" + usage_);
  }

  std::string harness_;
  const char* usage_;
  std::vector<Option> options_;
};

}  // namespace ember::perf
