// ember-jailer: builds one microVM's jail and execs the VMM inside it. See JailerUsage().
#include <cstdio>
#include <string>
#include <vector>

#include "jailer/jail.h"
#include "jailer/jailer_args.h"

namespace {

constexpr int kExitSetupFailed = 1;
constexpr int kExitUsage = 2;

int Fail(int code, const absl::Status& status) {
  std::string line = "ember-jailer: " + std::string(status.message()) + "\n";
  std::fputs(line.c_str(), stderr);
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ember::jailer;
  std::vector<std::string> args_text(argv + 1, argv + argc);
  absl::StatusOr<JailerArgs> args = ParseJailerArgs(args_text);
  if (!args.ok()) return Fail(kExitUsage, args.status());
  if (args->help) {
    std::fputs(JailerUsage().c_str(), stdout);
    return 0;
  }
  if (absl::Status s = CheckExecFile(args->exec_file); !s.ok()) return Fail(kExitUsage, s);
  if (absl::Status s = CheckPassFd(*args); !s.ok()) return Fail(kExitUsage, s);

  absl::StatusOr<int> exit_code = RunJailer(*args);
  if (!exit_code.ok()) return Fail(kExitSetupFailed, exit_code.status());
  return *exit_code;
}
