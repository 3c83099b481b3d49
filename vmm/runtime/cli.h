#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ember::runtime {

// runc's global flags, as containerd's shim, podman's conmon and cri-o pass them.
struct GlobalOptions {
  std::string root = "/run/ember-runtime";  // --root: the containers' state directories
  std::string log_path;                     // --log: where errors (and debug lines) go
  std::string log_format = "text";          // --log-format text|json
  bool debug = false;
  bool systemd_cgroup = false;  // accepted; a VM has no host cgroup of its own
  std::string config_path;      // --config: the runtime's own config file
};

// One command line, parsed. Flags are kept under their long name without dashes; a flag that
// takes no value holds "true"; a repeatable flag (exec's --env) holds every value.
struct Invocation {
  GlobalOptions global;
  bool version = false;  // --version / -v
  bool help = false;     // --help / -h, or no command
  std::string command;   // "create", "start", ...
  std::map<std::string, std::vector<std::string>> flags;
  std::vector<std::string> args;  // what follows the flags: the id, then the rest

  [[nodiscard]] bool Has(const std::string& flag) const { return flags.contains(flag); }
  // The flag's last value, or `fallback` when it was not given.
  [[nodiscard]] std::string Get(const std::string& flag, const std::string& fallback = "") const;
};

// Parses `argv` (without the program name) as runc does (urfave/cli): global flags, the
// command, its flags (`-f`, `--flag`, `-flag`, `--flag=value`, `--flag value`), then its
// arguments; flags end at the first argument or at `--`. An unknown command or flag, or a
// flag without its value, is InvalidArgument with urfave's wording.
[[nodiscard]] absl::StatusOr<Invocation> ParseCommandLine(const std::vector<std::string>& argv);

// The usage text `--help` prints.
[[nodiscard]] std::string Usage();

// A signal as runc's kill takes it: "KILL", "SIGKILL" or "9" (case-insensitive names).
[[nodiscard]] absl::StatusOr<int> ParseSignal(const std::string& text);

}  // namespace ember::runtime
