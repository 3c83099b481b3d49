#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace ember::testing {

// ember-init as PID 1 of new pid, mount, network and UTS namespaces, chrooted into a root
// directory: what it is in a guest, minus the kernel. Two steps, so that a test can mount
// into the new mount namespace (an image, a host directory) or move a device into the network
// namespace between them. Needs root. The destructor kills init, and with it the namespace.
class NamespacedInit {
 public:
  NamespacedInit() = default;
  ~NamespacedInit();
  NamespacedInit(const NamespacedInit&) = delete;
  NamespacedInit& operator=(const NamespacedInit&) = delete;

  // Clones init's process, which makes its mounts private and waits for Release(). "" once
  // it runs, else why not.
  [[nodiscard]] std::string Clone(const std::string& root, const std::string& cmdline);
  // Lets it chroot into the root and exec /sbin/ember-init --cmdline=CMDLINE, its stdout and
  // stderr the console.
  void Release();

  // The wait status init ended with, or nullopt if it still runs after `timeout`.
  std::optional<int> WaitForEnd(std::chrono::milliseconds timeout);
  // Reads the console until it holds `text` or `timeout` passes.
  bool WaitForConsole(const std::string& text, std::chrono::milliseconds timeout);
  // Everything init and its children wrote so far.
  [[nodiscard]] const std::string& console();
  // Host pids of the processes in init's pid namespace, init's own included while it runs.
  [[nodiscard]] std::vector<pid_t> ProcessesInNamespace() const;
  [[nodiscard]] pid_t pid() const { return pid_; }

 private:
  void PumpConsole(int timeout_ms);

  std::vector<char> stack_;
  std::string root_;
  std::string cmdline_;
  pid_t pid_ = -1;
  std::filesystem::path pid_ns_;
  bool ended_ = false;
  int sync_fd_ = -1;     // write end: a byte releases init
  int console_fd_ = -1;  // read end of init's stdout and stderr
  std::string console_;
};

}  // namespace ember::testing
