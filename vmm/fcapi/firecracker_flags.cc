#include "vmm/fcapi/firecracker_flags.h"

#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "vmm/base/sibling_executable.h"
#include "vmm/fcapi/firecracker_names.h"

namespace ember::fcapi {
namespace {

[[noreturn]] void Refuse(const std::string& message) {
  std::fprintf(stderr, "ember-vmm: error: %s\n", message.c_str());
  std::exit(2);  // vmm/exit_code.h's kExitBadInput: bad input
}

std::string_view BaseName(std::string_view path) {
  std::size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

// Whether a Firecracker flag appears, so that ember-vmm's own command lines cost one pass.
bool HasFirecrackerFlag(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (IsFirecrackerFlag(argv[i])) return true;
  }
  return false;
}

[[noreturn]] void ExecApiFront(char** argv) {
  std::string front = base::SiblingExecutable(kApiFrontName);
  ::execv(front.c_str(), argv);
  Refuse("--api-sock: cannot run the API front \"" + front + "\": " + std::strerror(errno));
}

}  // namespace

FirecrackerCommandLine::FirecrackerCommandLine(int argc, char** argv) : argc_(argc), argv_(argv) {
  bool as_firecracker = argc > 0 && BaseName(argv[0]) == "firecracker";
  if (!as_firecracker && !HasFirecrackerFlag(argc, argv)) return;
  bool no_api = false;
  bool api_sock = false;
  bool config_file = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--no-api") no_api = true;
    if (arg == "--api-sock") api_sock = true;
    if (arg == "--config-file") config_file = true;
    if (auto refused = RefusedFlagReason(arg); !refused.empty()) {
      Refuse(std::string(arg) + ": " + refused);
    }
    if (arg == "--version") {
      std::printf("ember-vmm, serving Firecracker's API v%s\n", kFirecrackerApiVersion);
      std::exit(0);
    }
  }
  if (no_api && api_sock) Refuse("--no-api and --api-sock: give one");
  if ((api_sock || as_firecracker) && !no_api) ExecApiFront(argv);
  if (!config_file) Refuse("--no-api needs --config-file, as with Firecracker");

  storage_.emplace_back(argv[0]);
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Refuse(std::string(arg) + " needs a value");
      return argv[++i];
    };
    if (arg == "--config-file") {
      storage_.insert(storage_.end(), {"--config", value()});
    } else if (arg == "--level") {
      storage_.insert(storage_.end(), {"--log-level", value()});
    } else if (arg == "--no-seccomp") {
      storage_.insert(storage_.end(), {"--seccomp", "off"});
    } else if (arg == "--id") {
      if (auto error = CheckInstanceId(value()); !error.empty()) Refuse("--id: " + error);
    } else if (arg == "--start-time-cpu-us" || arg == "--parent-cpu-time-us" ||
               arg == "--http-api-max-payload-size") {
      std::string text = value();
      unsigned long long number = 0;
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
      if (ec != std::errc() || end != text.data() + text.size()) {
        Refuse(std::string(arg) + ": \"" + text + "\" is not a whole number");
      }
    } else if (arg == "--no-api" || arg == "--boot-timer" || arg == "--show-level" ||
               arg == "--show-log-origin") {
      // Nothing to do: without --no-api this process would have become the API front; Ember's
      // boot timer device is always there; Ember's log lines show level and origin already.
    } else {
      storage_.emplace_back(arg);  // ember-vmm's own flags, and --log-path, --metrics-path...
    }
  }
  for (std::string& arg : storage_) pointers_.push_back(arg.data());
  pointers_.push_back(nullptr);
  argc_ = static_cast<int>(storage_.size());
  argv_ = pointers_.data();
}

}  // namespace ember::fcapi
