// Stands in for ember-agent at /sbin/ember-agent in ember-init's host tests (static: it runs
// chrooted in a directory with no shared libraries). It reports what it sees inside and then
// waits:
//   --log PATH      appends "started pid=<pid> ppid=<ppid> hostname=<name>" to PATH and copies
//                   /proc/self/mounts to PATH.mounts
//   --orphans N     leaves N grandchildren behind that exit 200 ms later, for init to reap
// SIGUSR1 makes it exit with status 0 (the agent's power-off request); SIGTERM ends it.
#include <fcntl.h>
#include <signal.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

void Append(const std::string& path, const std::string& line) {
  int fd = open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return;
  [[maybe_unused]] ssize_t written = write(fd, line.data(), line.size());
  close(fd);
}

std::string ReadAll(const char* path) {
  std::string text;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "cannot open " + std::string(path) + "\n";
  char buffer[4096];
  ssize_t got;
  while ((got = read(fd, buffer, sizeof(buffer))) > 0)
    text.append(buffer, static_cast<size_t>(got));
  close(fd);
  return text;
}

void LeaveOrphans(int count) {
  for (int i = 0; i < count; ++i) {
    pid_t child = fork();
    if (child == 0) {
      if (fork() == 0) {
        usleep(200'000);
        _exit(0);
      }
      _exit(0);  // the grandchild is now init's
    }
    if (child > 0) waitpid(child, nullptr, 0);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string log;
  int orphans = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--log") == 0) log = argv[i + 1];
    if (std::strcmp(argv[i], "--orphans") == 0) orphans = std::atoi(argv[i + 1]);
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  sigprocmask(SIG_BLOCK, &set, nullptr);
  if (!log.empty()) {
    utsname names{};
    uname(&names);
    Append(log + ".mounts", ReadAll("/proc/self/mounts"));
    Append(log, "started pid=" + std::to_string(getpid()) + " ppid=" + std::to_string(getppid()) +
                    " hostname=" + names.nodename + "\n");
  }
  LeaveOrphans(orphans);
  if (orphans > 0 && !log.empty()) Append(log, "orphans left " + std::to_string(orphans) + "\n");
  int sig = 0;
  sigwait(&set, &sig);
  return 0;
}
