// ember-runtime: an OCI runtime with runc's command line; each container runs in an Ember
// microVM (docs/ember-runtime.md).
#include <iostream>
#include <string>
#include <vector>

#include "cli.h"
#include "commands.h"
#include "runtime_log.h"

int main(int argc, char** argv) {
  using namespace ember::runtime;
  std::vector<std::string> args(argv + 1, argv + argc);
  absl::StatusOr<Invocation> invocation = ParseCommandLine(args);
  if (!invocation.ok()) {
    // The log flags may be what failed to parse: report to stderr alone.
    RuntimeLog(GlobalOptions{}).Error(invocation.status().message());
    return 1;
  }
  RuntimeLog log(invocation->global);
  if (invocation->version) {
    std::cout << "ember-runtime version 0.1.0\nspec: 1.1.0\n";
    return 0;
  }
  if (invocation->help) {
    std::cout << Usage();
    return 0;
  }
  absl::StatusOr<int> code = RunCommand(*invocation, log);
  if (!code.ok()) {
    log.Error(code.status().message());
    return 1;
  }
  return *code;
}
