#include "vmm/config_loader.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <vector>

#include "vmm/base/sibling_executable.h"
#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"
#include "vmm/exit_code.h"

extern char** environ;

namespace ember::vmm {
namespace {

constexpr char kToolName[] = "ember-config";
constexpr char kToolErrorPrefix[] = "ember-config: error: ";

struct ToolResult {
  int wait_status = 0;
  std::string out;
  std::string err;
};

absl::Status MakePipe(base::UniqueFd* read_end, base::UniqueFd* write_end) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return base::ErrnoError("pipe2", "for ember-config");
  read_end->Reset(fds[0]);
  write_end->Reset(fds[1]);
  return absl::OkStatus();
}

// `input` as a file to read from the start: a memfd rather than a pipe, so that writing it
// can neither block nor raise SIGPIPE whatever the tool does.
absl::StatusOr<base::UniqueFd> InputFile(const std::string& input) {
  base::UniqueFd fd(::memfd_create("ember-config-input", MFD_CLOEXEC));
  if (!fd) return base::ErrnoError("memfd_create", "for ember-config's input");
  for (std::size_t done = 0; done < input.size();) {
    ssize_t n = ::pwrite(fd.Get(), input.data() + done, input.size() - done,
                         static_cast<off_t>(done));
    if (n < 0 && errno != EINTR) return base::ErrnoError("write", "ember-config's input");
    if (n > 0) done += static_cast<std::size_t>(n);
  }
  return fd;
}

// Starts `argv` with `input` on its standard input and pipes on its standard output and error.
absl::Status SpawnTool(const std::vector<std::string>& argv, const std::string& input,
                       RunningTool* tool) {
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd in, InputFile(input));
  base::UniqueFd out_write, err_write;
  EMBER_RETURN_IF_ERROR(MakePipe(&tool->out, &out_write));
  EMBER_RETURN_IF_ERROR(MakePipe(&tool->err, &err_write));

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in.Get(), STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out_write.Get(), STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err_write.Get(), STDERR_FILENO);
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  int spawn_error =
      ::posix_spawn(&tool->pid, argv[0].c_str(), &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawn_error != 0) {
    tool->pid = -1;  // posix_spawn leaves it unspecified on failure: nothing to reap
    return base::ErrnoError(spawn_error, "cannot run", "\"" + argv[0] + "\"");
  }
  return absl::OkStatus();
}

// Collects what the tool writes and its exit status. One poll loop drains both pipes, so the
// tool cannot block on either however much it writes.
absl::StatusOr<ToolResult> CollectTool(RunningTool& tool) {
  ToolResult result;
  while (tool.out || tool.err) {
    pollfd fds[2];
    nfds_t count = 0;
    if (tool.out) fds[count++] = {tool.out.Get(), POLLIN, 0};
    if (tool.err) fds[count++] = {tool.err.Get(), POLLIN, 0};
    if (::poll(fds, count, -1) < 0) {
      if (errno == EINTR) continue;
      return base::ErrnoError("poll", "ember-config's output");
    }
    for (nfds_t i = 0; i < count; ++i) {
      if (fds[i].revents == 0) continue;
      bool is_out = tool.out && fds[i].fd == tool.out.Get();
      char buffer[16384];
      ssize_t n = ::read(fds[i].fd, buffer, sizeof buffer);
      if (n > 0) {
        (is_out ? result.out : result.err).append(buffer, static_cast<std::size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        (is_out ? tool.out : tool.err).Reset();
      }
    }
  }
  while (::waitpid(tool.pid, &result.wait_status, 0) < 0) {
    if (errno != EINTR) return base::ErrnoError("waitpid", "ember-config");
  }
  tool.pid = -1;
  return result;
}

absl::Status WithToolHint(const absl::Status& status) {
  return absl::InternalError(std::string(status.message()) +
                             " (ember-config reads --config's JSON for ember-vmm and belongs "
                             "beside it)");
}

// What ember-config's run came to: its binary config, or its one-line error.
absl::StatusOr<v1::VmConfig> ConfigFromTool(const std::string& tool, const ToolResult& result) {
  std::string message = result.err;
  if (message.starts_with(kToolErrorPrefix)) message.erase(0, sizeof kToolErrorPrefix - 1);
  while (!message.empty() && message.back() == '\n') message.pop_back();
  if (WIFEXITED(result.wait_status) && WEXITSTATUS(result.wait_status) == kExitBadInput) {
    return absl::InvalidArgumentError(message);
  }
  if (!WIFEXITED(result.wait_status) || WEXITSTATUS(result.wait_status) != kExitOk) {
    return absl::InternalError("\"" + tool + "\" failed reading the config" +
                               (message.empty() ? std::string() : ": " + message));
  }
  v1::VmConfig config;
  if (!config.ParseFromString(result.out)) {
    return absl::InternalError("\"" + tool + "\" returned a config that does not parse");
  }
  return config;
}

}  // namespace

std::string DefaultConfigToolPath() { return base::SiblingExecutable(kToolName); }

absl::StatusOr<PendingVmConfig> PendingVmConfig::Start(const std::string& source,
                                                       const std::string& input,
                                                       const std::string& tool) {
  PendingVmConfig pending;
  pending.tool_path_ = tool;
  if (auto status = SpawnTool({tool, "--binary", source}, input, &pending.tool_); !status.ok()) {
    return WithToolHint(status);
  }
  return pending;
}

PendingVmConfig::~PendingVmConfig() {
  // Not collected (the VMM failed first): reap it rather than leave a zombie.
  if (tool_.pid > 0) {
    tool_.out.Reset();
    tool_.err.Reset();
    int status = 0;
    ::waitpid(tool_.pid, &status, 0);
  }
}

absl::StatusOr<v1::VmConfig> PendingVmConfig::Finish() {
  absl::StatusOr<ToolResult> result = CollectTool(tool_);
  if (!result.ok()) return WithToolHint(result.status());
  return ConfigFromTool(tool_path_, *result);
}

absl::StatusOr<PendingVmConfig> StartLoadingVmConfigFile(const std::string& path,
                                                         const std::string& tool) {
  return PendingVmConfig::Start(path, "", tool);
}

absl::StatusOr<v1::VmConfig> LoadVmConfigFile(const std::string& path, const std::string& tool) {
  EMBER_ASSIGN_OR_RETURN(PendingVmConfig pending, StartLoadingVmConfigFile(path, tool));
  return pending.Finish();
}

absl::StatusOr<v1::VmConfig> ParseVmConfigJson(const std::string& json, const std::string& tool) {
  EMBER_ASSIGN_OR_RETURN(PendingVmConfig pending, PendingVmConfig::Start("-", json, tool));
  return pending.Finish();
}

absl::Status LoadBinaryMessage(const std::string& path, const std::string& what,
                               google::protobuf::MessageLite* message) {
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    // The user's bad input (exit code 2), whatever the errno.
    return absl::InvalidArgumentError(
        base::ErrnoError("cannot open " + what, "\"" + path + "\"").message());
  }
  if (!message->ParseFromFileDescriptor(fd.Get())) {
    return absl::InvalidArgumentError(what + " \"" + path + "\" is not a binary " +
                                      message->GetTypeName() + " message");
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::VmConfig> LoadVmConfigBinaryFile(const std::string& path) {
  v1::VmConfig config;
  EMBER_RETURN_IF_ERROR(LoadBinaryMessage(path, "config file", &config));
  return config;
}

}  // namespace ember::vmm
