#include "cli.h"

#include <signal.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <functional>
#include <optional>
#include <string_view>

#include "absl/status/status.h"

namespace ember::runtime {
namespace {

struct FlagSpec {
  std::string_view name;
  std::string_view short_name;  // "" when none
  bool takes_value;
};

struct CommandSpec {
  std::string_view name;
  std::vector<FlagSpec> flags;
};

const std::vector<FlagSpec> kCreateFlags = {
    {"bundle", "b", true},      {"console-socket", "", true},  {"pid-file", "", true},
    {"no-pivot", "", false},    {"no-new-keyring", "", false}, {"preserve-fds", "", true},
    {"pidfd-socket", "", true},
};

// run: create's flags, and whether to wait.
std::vector<FlagSpec> RunFlags() {
  std::vector<FlagSpec> flags = kCreateFlags;
  flags.push_back({"detach", "d", false});
  flags.push_back({"keep", "", false});
  return flags;
}

// Every command runc has and the flags its callers pass. Flags Ember has no use for (SELinux
// labels, AppArmor, capabilities of an exec) are accepted and ignored: inside a VM the guest
// kernel is the isolation boundary, and refusing them would fail callers that always pass
// them.
const std::vector<CommandSpec>& Commands() {
  static const std::vector<CommandSpec> commands = {
      {"create", kCreateFlags},
      {"run", RunFlags()},
      {"start", {}},
      {"state", {}},
      {"kill", {{"all", "a", false}}},
      {"delete", {{"force", "f", false}}},
      {"ps", {{"format", "f", true}}},
      {"list", {{"format", "f", true}, {"quiet", "q", false}}},
      {"exec",
       {{"process", "p", true},
        {"detach", "d", false},
        {"pid-file", "", true},
        {"console-socket", "", true},
        {"pidfd-socket", "", true},
        {"tty", "t", false},
        {"cwd", "", true},
        {"env", "e", true},
        {"user", "u", true},
        {"additional-gids", "g", true},
        {"no-new-privs", "", false},
        {"cap", "c", true},
        {"preserve-fds", "", true},
        {"process-label", "", true},
        {"apparmor", "", true},
        {"cgroup", "", true},
        {"ignore-paused", "", false}}},
      {"pause", {}},
      {"resume", {}},
      {"features", {}},
      // Refused when run (commands.cc says why); parsed so that the refusal names them.
      {"update", {}},
      {"checkpoint", {}},
      {"restore", {}},
  };
  return commands;
}

// runc's global flags (and Ember's --config).
const std::vector<FlagSpec>& GlobalFlags() {
  static const std::vector<FlagSpec> flags = {
      {"version", "v", false},  {"root", "", true},   {"log", "", true},
      {"log-format", "", true}, {"debug", "", false}, {"systemd-cgroup", "", false},
      {"rootless", "", true},   {"criu", "", true},   {"config", "", true},
  };
  return flags;
}

// "-x", "--x", "--x=v": the name and the value after "=", if any. nullopt: not a flag.
std::optional<std::pair<std::string, std::optional<std::string>>> SplitFlag(std::string_view arg) {
  if (arg.size() < 2 || arg[0] != '-') return std::nullopt;
  std::string_view body = arg.substr(arg[1] == '-' ? 2 : 1);
  if (body.empty()) return std::nullopt;
  std::size_t eq = body.find('=');
  if (eq == std::string_view::npos) return std::make_pair(std::string(body), std::nullopt);
  return std::make_pair(std::string(body.substr(0, eq)), std::string(body.substr(eq + 1)));
}

absl::Status Undefined(std::string_view name) {
  return absl::InvalidArgumentError("flag provided but not defined: -" + std::string(name));
}

absl::Status NeedsValue(std::string_view name) {
  return absl::InvalidArgumentError("flag needs an argument: -" + std::string(name));
}

// The value of flag `name` at argv[*i]: after "=", else the next argument (advancing *i),
// or "true" for a flag that takes none.
absl::StatusOr<std::string> FlagValue(const std::string& name, bool takes_value,
                                      const std::optional<std::string>& inline_value,
                                      const std::vector<std::string>& argv, std::size_t* i) {
  if (inline_value) return *inline_value;
  if (!takes_value) return std::string("true");
  if (*i + 1 >= argv.size()) return NeedsValue(name);
  return argv[++*i];
}

// Parses the flags at argv[*i] on, up to the first argument that is no flag or "--" (left at
// *i), passing each to `take` under its long name. --help / -h set inv->help.
absl::Status ParseFlags(const std::vector<FlagSpec>& specs, const std::vector<std::string>& argv,
                        std::size_t* i, Invocation* inv,
                        const std::function<absl::Status(std::string_view, std::string)>& take) {
  for (; *i < argv.size(); ++*i) {
    const std::string& arg = argv[*i];
    if (arg == "--") return absl::OkStatus();
    if (arg == "--help" || arg == "-h") {
      inv->help = true;
      continue;
    }
    auto flag = SplitFlag(arg);
    if (!flag) return absl::OkStatus();
    const auto& [name, inline_value] = *flag;
    auto spec = std::find_if(specs.begin(), specs.end(), [&](const FlagSpec& f) {
      return f.name == name || (!f.short_name.empty() && f.short_name == name);
    });
    if (spec == specs.end()) return Undefined(name);
    absl::StatusOr<std::string> value = FlagValue(name, spec->takes_value, inline_value, argv, i);
    if (!value.ok()) return value.status();
    absl::Status taken = take(spec->name, std::move(*value));
    if (!taken.ok()) return taken;
  }
  return absl::OkStatus();
}

}  // namespace

std::string Invocation::Get(const std::string& flag, const std::string& fallback) const {
  auto it = flags.find(flag);
  return it == flags.end() || it->second.empty() ? fallback : it->second.back();
}

absl::StatusOr<Invocation> ParseCommandLine(const std::vector<std::string>& argv) {
  Invocation inv;
  std::size_t i = 0;
  // Global flags, up to the command.
  absl::Status globals =
      ParseFlags(GlobalFlags(), argv, &i, &inv, [&](std::string_view name, std::string value) {
        if (name == "version") inv.version = true;
        if (name == "root") inv.global.root = value;
        if (name == "log") inv.global.log_path = value;
        if (name == "log-format") {
          if (value != "text" && value != "json") {
            return absl::InvalidArgumentError("invalid log-format: " + value);
          }
          inv.global.log_format = value;
        }
        if (name == "debug") inv.global.debug = value != "false";
        if (name == "systemd-cgroup") inv.global.systemd_cgroup = value != "false";
        if (name == "config") inv.global.config_path = value;
        return absl::OkStatus();
      });
  if (!globals.ok()) return globals;
  if (inv.global.root.empty()) return absl::InvalidArgumentError("--root: an empty path");
  if (i == argv.size()) {
    if (!inv.version) inv.help = true;
    return inv;
  }
  inv.command = argv[i++];
  const auto& commands = Commands();
  auto command = std::find_if(commands.begin(), commands.end(),
                              [&](const CommandSpec& c) { return c.name == inv.command; });
  if (command == commands.end()) {
    return absl::InvalidArgumentError("No help topic for '" + inv.command +
                                      "' (an unknown command)");
  }
  absl::Status flags =
      ParseFlags(command->flags, argv, &i, &inv, [&](std::string_view name, std::string value) {
        inv.flags[std::string(name)].push_back(std::move(value));
        return absl::OkStatus();
      });
  if (!flags.ok()) return flags;
  if (i < argv.size() && argv[i] == "--") ++i;
  inv.args.assign(argv.begin() + static_cast<std::ptrdiff_t>(i), argv.end());
  return inv;
}

std::string Usage() {
  return "ember-runtime: an OCI runtime that runs each container in an Ember microVM\n"
         "(runc's command line; see docs/ember-runtime.md)\n\n"
         "usage: ember-runtime [global flags] COMMAND [flags] ID [args]\n\n"
         "global flags:\n"
         "  --root DIR            state directories (default /run/ember-runtime)\n"
         "  --log FILE            errors and debug lines go here (and to stderr)\n"
         "  --log-format text|json\n"
         "  --debug, --systemd-cgroup, --rootless V, --criu P   accepted\n"
         "  --config FILE         the runtime's config (default $EMBER_RUNTIME_CONFIG,\n"
         "                        else /etc/ember/runtime.json when it exists)\n"
         "  --version\n\n"
         "commands:\n"
         "  create --bundle B [--pid-file F] [--console-socket S] ID\n"
         "  start ID | state ID | pause ID | resume ID\n"
         "  run --bundle B [--pid-file F] [--detach] ID\n"
         "  kill [--all] ID [SIGNAL]   (default SIGTERM)\n"
         "  delete [--force] ID\n"
         "  ps [--format table|json] ID\n"
         "  list [--format table|json] [--quiet]\n"
         "  exec [--process P.json | --tty --cwd D --env E --user U] [--detach] [--pid-file F]\n"
         "       [--console-socket S] ID [COMMAND ARGS...]\n"
         "  features\n"
         "  update, checkpoint, restore: refused (not supported yet)\n";
}

absl::StatusOr<int> ParseSignal(const std::string& text) {
  static const std::array<std::pair<std::string_view, int>, 31> kNames = {{
      {"HUP", SIGHUP},       {"INT", SIGINT},   {"QUIT", SIGQUIT},     {"ILL", SIGILL},
      {"TRAP", SIGTRAP},     {"ABRT", SIGABRT}, {"IOT", SIGIOT},       {"BUS", SIGBUS},
      {"FPE", SIGFPE},       {"KILL", SIGKILL}, {"USR1", SIGUSR1},     {"SEGV", SIGSEGV},
      {"USR2", SIGUSR2},     {"PIPE", SIGPIPE}, {"ALRM", SIGALRM},     {"TERM", SIGTERM},
      {"STKFLT", SIGSTKFLT}, {"CHLD", SIGCHLD}, {"CONT", SIGCONT},     {"STOP", SIGSTOP},
      {"TSTP", SIGTSTP},     {"TTIN", SIGTTIN}, {"TTOU", SIGTTOU},     {"URG", SIGURG},
      {"XCPU", SIGXCPU},     {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF},
      {"WINCH", SIGWINCH},   {"IO", SIGIO},     {"SYS", SIGSYS},
  }};
  int number = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
  if (!text.empty() && ec == std::errc() && end == text.data() + text.size()) {
    if (number <= 0 || number > SIGRTMAX) {
      return absl::InvalidArgumentError("invalid signal: " + text);
    }
    return number;
  }
  std::string upper;
  for (char c : text)
    upper.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  std::string_view name = upper;
  if (name.starts_with("SIG")) name.remove_prefix(3);
  for (const auto& [n, value] : kNames) {
    if (n == name) return value;
  }
  return absl::InvalidArgumentError("unknown signal \"" + text + "\"");
}

}  // namespace ember::runtime
