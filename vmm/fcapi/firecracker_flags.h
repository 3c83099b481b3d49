#pragma once

#include <string>
#include <vector>

// Firecracker's process flags on ember-vmm's command line, so that a program written to run
// `firecracker` runs ember-vmm (or a `firecracker` symlink to it) unchanged. Linked into
// ember-vmm: plain string work, no protobuf, no allocation unless a Firecracker flag is there,
// so ember-vmm's start-up and memory do not move for its own command lines.
namespace ember::fcapi {

// ember-vmm's command line after Firecracker's flags are handled. Called first thing by
// ember-vmm's main(), before anything else happens in the process:
// - with the API on (--api-sock, or the program run as `firecracker` without --no-api, which
//   then serves Firecracker's default socket path), the process execs ember-fc-api with the
//   same arguments and never returns;
// - otherwise each Firecracker flag becomes ember-vmm's own (--config-file: --config,
//   --level: --log-level, --no-seccomp: --seccomp off; --no-api, --boot-timer, --id,
//   --show-level, --show-log-origin and the CPU-time flags change nothing Ember does), and
//   flags for what Ember lacks (--seccomp-filter, MMDS, PCI, --module, snapshot describing)
//   end the process with one line naming the flag and exit code 2;
// - a command line with no Firecracker flag is returned as it is.
class FirecrackerCommandLine {
 public:
  FirecrackerCommandLine(int argc, char** argv);

  [[nodiscard]] int argc() const { return argc_; }
  [[nodiscard]] char** argv() const { return argv_; }

 private:
  int argc_;
  char** argv_;
  std::vector<std::string> storage_;  // the translated arguments, when there were any
  std::vector<char*> pointers_;
};

}  // namespace ember::fcapi
