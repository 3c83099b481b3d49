// emberctl: command-line client of emberd's gRPC API (ember/v1/api.proto), one subcommand
// per call (vmm/emberctl/commands.cc). Exit codes: 0 success, 1 the call failed (the message
// shows the gRPC code), 2 bad usage or config file, 3 emberd unreachable; `run` exits with the
// VM's exit code.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/emberctl/client.h"
#include "vmm/emberctl/commands.h"

namespace ember::ctl {
namespace {

constexpr char kUsageHead[] = "usage: emberctl [--socket PATH] [--json] COMMAND [args]\n\n";
constexpr char kUsageTail[] =
    "\n"
    "  --socket PATH   emberd's socket (default $EMBER_SOCKET or /run/ember/emberd.sock)\n"
    "  --json          print responses as JSON\n"
    "\n"
    "Exit codes: 0 ok, 1 the call failed, 2 bad usage, 3 emberd unreachable.\n";

void PrintUsage() {
  std::fputs(kUsageHead, stdout);
  for (const Command& command : Commands()) {
    std::fwrite(command.help.data(), 1, command.help.size(), stdout);
  }
  std::fputs(kUsageTail, stdout);
}

int Main(int argc, char** argv) {
  std::string socket = std::getenv("EMBER_SOCKET") != nullptr ? std::getenv("EMBER_SOCKET")
                                                              : "/run/ember/emberd.sock";
  bool json = false;
  int i = 1;
  for (; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      PrintUsage();
      return 0;
    } else if (arg == "--json") {
      json = true;
    } else if (arg == "--socket") {
      if (i + 1 >= argc) UsageError("--socket needs a value");
      socket = argv[++i];
    } else {
      break;
    }
  }
  if (i >= argc) UsageError("no command");
  std::string name = argv[i];
  std::vector<std::string> rest(argv + i + 1, argv + argc);
  Args args =
      ParseArgs(rest, {"force", "diff", "follow", "resume", "rm", "json", "prefetch-working-set",
                      "network", "stream"});
  const Command* command = FindCommand(name);
  if (command == nullptr) UsageError("unknown command \"" + name + "\"");
  if (command->takes_signals) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
  }
  if (args.Has("json")) json = true;
  Client client(socket, json);
  return command->run(client, args);
}

}  // namespace
}  // namespace ember::ctl

int main(int argc, char** argv) { return ember::ctl::Main(argc, argv); }
