#pragma once

// emberctl's subcommands, one table: adding one is a function and a row.
#include <span>
#include <string_view>

#include "vmm/emberctl/client.h"

namespace ember::ctl {

struct Command {
  std::string_view name;
  // Its lines in --help, in table order; empty when another row's lines cover it.
  std::string_view help;
  // Returns the exit code; bad usage exits through UsageError.
  int (*run)(Client& client, const Args& args);
  // Handles SIGINT/SIGTERM itself (sigwait on a thread of its own), so main blocks them before
  // the gRPC channel starts its threads, which then inherit the mask.
  bool takes_signals = false;
};

std::span<const Command> Commands();

// The row named `name`, or nullptr.
const Command* FindCommand(std::string_view name);

}  // namespace ember::ctl
