#pragma once

// Runs the real ember-agent binary on a Unix socket for a test, and what its tests check
// around it (its children, zombies among them).
#include <dirent.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ember/v1/agent.pb.h"
#include "tests/support/files.h"
#include "tests/support/process.h"
#include "vmm/agent_client/agent_client.h"

namespace ember::testing {

// The agent's children as /proc tells: (pid, state letter). Zombies are 'Z'.
inline std::vector<std::pair<pid_t, char>> ChildrenOf(pid_t parent) {
  std::vector<std::pair<pid_t, char>> children;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return children;
  while (dirent* entry = ::readdir(proc)) {
    std::string name = entry->d_name;
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in("/proc/" + name + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so read after the last ')'.
    std::size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 1));
    char state = '?';
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent) children.emplace_back(std::stoi(name), state);
  }
  ::closedir(proc);
  return children;
}

// Waits until `parent` has `count` children (live or zombie: a reaper thread may be a moment
// behind) and returns them; what it has then if that does not happen within `timeout`.
inline std::vector<std::pair<pid_t, char>> WaitChildren(
    pid_t parent, std::size_t count, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<std::pair<pid_t, char>> children = ChildrenOf(parent);
  while (children.size() != count && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    children = ChildrenOf(parent);
  }
  return children;
}

// Waits until `parent` has no children left; false if some stay.
inline bool WaitNoChildren(pid_t parent, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  return WaitChildren(parent, 0, timeout).empty();
}

// One ember-agent process listening at <scratch>/agent.sock, its image config at
// <scratch>/image-config.pb, and its ready event awaited at <scratch>/ready.sock before the
// constructor returns.
class AgentUnderTest {
 public:
  struct Setup {
    v1::ImageConfig image;
    // Runs the agent through this command (e.g. unshare, setpriv); its last word is followed
    // by the agent's path and flags.
    std::vector<std::string> wrapper;
    bool set_clock = false;  // a shared host's wall clock is left alone unless a test says so
  };

  AgentUnderTest() : AgentUnderTest(Setup{}) {}
  explicit AgentUnderTest(const Setup& setup) : scratch_("ember-agent-test") {
    socket_ = scratch_.path() + "/agent.sock";
    const std::string image_path = scratch_.path() + "/image-config.pb";
    std::ofstream(image_path, std::ios::binary) << setup.image.SerializeAsString();
    absl::StatusOr<agent_client::ReadyListener> listener =
        agent_client::ReadyListener::At(scratch_.path() + "/ready.sock");
    if (!listener.ok()) throw std::runtime_error(std::string(listener.status().message()));
    std::vector<std::string> argv = setup.wrapper;
    argv.insert(argv.end(), {BinPath("ember-agent"), "--unix", socket_, "--ready-unix",
                             listener->path(), "--image-config", image_path});
    if (!setup.set_clock) argv.push_back("--no-set-clock");
    process_ = std::make_unique<Process>(argv);
    ready_ = listener->Accept(30'000);
    // The wrappers (unshare, setpriv, sh) exec the agent: it keeps the process's pid.
    agent_pid_ = process_->pid();
  }

  ~AgentUnderTest() {
    if (process_) {
      // What the agent runs leads its own process group: killed with it, nothing of a test
      // outlives it.
      for (auto [child, state] : ChildrenOf(agent_pid_)) ::kill(-child, SIGKILL);
      if (agent_pid_ > 0) ::kill(agent_pid_, SIGKILL);
      process_->Signal(SIGKILL);
      (void)process_->Wait(std::chrono::seconds(10));
    }
  }

  // The ready event, or why it did not come.
  [[nodiscard]] const absl::StatusOr<v1::ReadyInfo>& ready_event() const { return ready_; }
  [[nodiscard]] agent_client::AgentClient Client() const {
    return agent_client::AgentClient(agent_client::Endpoint::Unix(socket_));
  }
  [[nodiscard]] const std::string& socket_path() const { return socket_; }
  [[nodiscard]] const std::string& scratch() const { return scratch_.path(); }
  // The agent's own pid (the wrapper's child when there is one).
  [[nodiscard]] pid_t agent_pid() const { return agent_pid_; }
  // Waits for the agent to end and returns how (after Shutdown).
  ProcessResult Wait(std::chrono::milliseconds timeout) {
    ProcessResult result = process_->Wait(timeout);
    process_.reset();
    return result;
  }

 private:
  ScopedTempDir scratch_;
  std::string socket_;
  std::unique_ptr<Process> process_;
  absl::StatusOr<v1::ReadyInfo> ready_ = absl::UnknownError("not started");
  pid_t agent_pid_ = -1;
};

// An ExecRequest for `argv` as the test's own user, so that the tests also run unprivileged.
inline v1::ExecRequest ExecOf(std::vector<std::string> argv) {
  v1::ExecRequest request;
  for (std::string& arg : argv) request.add_argv(std::move(arg));
  request.set_uid(::getuid());
  request.set_gid(::getgid());
  return request;
}

// Everything an Exec wrote, in arrival order.
struct Collected {
  std::string out;
  std::string err;
  std::string both;  // both streams as they came
  std::vector<std::size_t> chunk_sizes;
  agent_client::OutputCallback Callback() {
    return [this](v1::Output::Stream stream, std::string_view data) {
      (stream == v1::Output::STDERR ? err : out).append(data);
      both.append(data);
      chunk_sizes.push_back(data.size());
    };
  }
};

}  // namespace ember::testing
