#pragma once
// Test helpers shared by the jailer tests: running ember-jailer with pipes on its stdio.

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace ember::jailer {

inline constexpr char kJailer[] = EMBER_BIN_DIR "/ember-jailer";

inline std::string ReadFileOr(const std::string& path, const std::string& fallback = "") {
  std::ifstream in(path);
  if (!in) return fallback;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// For nftw(FTW_DEPTH | FTW_PHYS): removes a test's temporary tree.
inline int RemoveEntry(const char* path, const struct stat*, int, struct FTW*) {
  return remove(path);
}

// This process's cgroup path in the v1 hierarchy of `controller` ("" if there is none).
inline std::string OwnV1Cgroup(const std::string& controller) {
  std::istringstream in(ReadFileOr("/proc/self/cgroup"));
  std::string line;
  while (std::getline(in, line)) {
    // id:controllers:path
    size_t a = line.find(':');
    size_t b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::string controllers = "," + line.substr(a + 1, b - a - 1) + ",";
    if (controllers.find("," + controller + ",") != std::string::npos) return line.substr(b + 1);
  }
  return "";
}

// One run of ember-jailer, started with pipes on its stdio; killed if the test forgets it.
class Jailer {
 public:
  struct Options {
    std::vector<int> inherit_fds;  // kept open across exec into the jailer (CLOEXEC cleared).
    std::vector<std::string> env = {"EMBER_SECRET=1", "PATH=/usr/bin"};
  };

  Jailer(const std::vector<std::string>& args, const Options& options) {
    int in[2], out[2], err[2];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
      std::abort();
    }
    pid_ = fork();
    if (pid_ == 0) {
      dup2(in[0], 0);
      dup2(out[1], 1);
      dup2(err[1], 2);
      for (int fd : options.inherit_fds) fcntl(fd, F_SETFD, 0);
      std::vector<std::string> store = {kJailer};
      store.insert(store.end(), args.begin(), args.end());
      std::vector<char*> argv;
      for (auto& s : store) argv.push_back(s.data());
      argv.push_back(nullptr);
      std::vector<std::string> env_store = options.env;
      std::vector<char*> envp;
      for (auto& s : env_store) envp.push_back(s.data());
      envp.push_back(nullptr);
      execve(kJailer, argv.data(), envp.data());
      _exit(127);
    }
    close(in[0]);
    close(out[1]);
    close(err[1]);
    stdin_ = in[1];
    stdout_ = out[0];
    stderr_ = err[0];
  }
  ~Jailer() {
    if (pid_ > 0 && exit_code_ < 0) {
      kill(pid_, SIGKILL);
      Wait();
    }
    for (int fd : {stdin_, stdout_, stderr_}) {
      if (fd >= 0) close(fd);
    }
  }

  pid_t pid() const { return pid_; }

  // Reads stdout up to the probe's "ready" line (sent after its report when given --wait).
  std::string ReadUntilReady() {
    std::string text;
    char c;
    while (read(stdout_, &c, 1) == 1) {
      text += c;
      if (text.size() >= 6 && text.compare(text.size() - 6, 6, "ready\n") == 0) break;
    }
    out_ += text;
    return text;
  }
  // Lets a probe started with --wait finish.
  void CloseStdin() {
    close(stdin_);
    stdin_ = -1;
  }
  int Wait() {
    CloseStdin();
    out_ += Drain(stdout_);
    err_ = Drain(stderr_);
    int status = 0;
    waitpid(pid_, &status, 0);
    return Finish(status);
  }
  // Waits up to `timeout` without closing stdin (so a probe in --wait cannot leave on its
  // own); returns the exit code, or -1 if the jailer was still running and has been killed.
  int WaitWithStdinOpen(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        kill(pid_, SIGKILL);
        Wait();
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    out_ += Drain(stdout_);
    err_ = Drain(stderr_);
    return Finish(status);
  }
  const std::string& out() const { return out_; }
  const std::string& err() const { return err_; }

 private:
  int Finish(int status) {
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return exit_code_;
  }
  static std::string Drain(int fd) {
    std::string text;
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) text.append(buf, static_cast<size_t>(n));
    return text;
  }

  pid_t pid_ = -1;
  int stdin_ = -1, stdout_ = -1, stderr_ = -1;
  int exit_code_ = -1;
  std::string out_, err_;
};

}  // namespace ember::jailer
