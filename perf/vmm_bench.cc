// ember-vmm-bench: measures what ember-vmm itself costs (start-up time, resident memory beyond the
// guest's) next to QEMU's microvm machine measured in the same run, and prints one line per figure
// in perf/run's format: `NAME VALUE UNIT | BASELINE-NAME VALUE UNIT | ratio R`.
//
// Run by perf/run; usable on its own (see kUsage). Prints figures only; never asserts a timing.
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "perf/bench_options.h"
#include "vmm/base/clock.h"
#include "vmm/base/unique_fd.h"

extern char** environ;

namespace ember::perf {
namespace {

using base::MonotonicMicros;
using base::UniqueFd;
using std::chrono::milliseconds;

constexpr char kUsage[] =
    "usage: ember-vmm-bench --vmm PATH [--qemu PATH] [--jailer PATH] [--work-dir DIR]\n"
    "                       [--runs N] [--rss-runs N] [--mem-mib N] [--rss-breakdown]\n"
    "                       [--verbose]\n"
    "\n"
    "  --vmm PATH        ember-vmm binary (ember-testguest must be beside it)\n"
    "  --qemu PATH       qemu-system-x86_64 for the baseline; without it no baseline is printed\n"
    "  --jailer PATH     ember-jailer (needs root): also time ember-vmm started through it\n"
    "  --work-dir DIR    scratch directory for configs, metrics, serial and QMP sockets\n"
    "  --runs N          start-up runs per figure (default 20); each figure is the median\n"
    "  --rss-runs N      idle-VM memory samples (default 10)\n"
    "  --mem-mib N       guest memory size for both VMMs (default 128)\n"
    "  --rss-breakdown   after the figures, print which mappings make up ember-vmm's RSS\n"
    "  --verbose         print every sample to stderr\n";

constexpr milliseconds kRunTimeout{10000};

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "ember-vmm-bench: error: %s\n", message.c_str());
  std::exit(1);
}

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

struct Options {
  std::string vmm_path;
  std::string qemu_path;  // empty: no baseline
  std::string jailer_path;  // empty: no jailed figure
  std::string work_dir;
  int runs = 20;
  int rss_runs = 10;
  int mem_mib = 128;
  bool rss_breakdown = false;
  bool verbose = false;
};

Options ParseOptions(int argc, char** argv) {
  Options options;
  BenchOptions("ember-vmm-bench", kUsage)
      .Text("--vmm", &options.vmm_path, /*required=*/true)
      .Text("--qemu", &options.qemu_path)
      .Text("--jailer", &options.jailer_path)
      .Text("--work-dir", &options.work_dir)
      .Number("--runs", &options.runs, 1)
      .Number("--rss-runs", &options.rss_runs, 1)
      .Number("--mem-mib", &options.mem_mib, 1)
      .Flag("--rss-breakdown", &options.rss_breakdown)
      .Flag("--verbose", &options.verbose)
      .Parse(argc, argv);
  return options;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out.flush()) Die("cannot write " + path);
}

// Milliseconds left until `deadline`, clamped to [0, max] for poll().
int PollTimeout(std::chrono::steady_clock::time_point deadline, milliseconds max) {
  auto left = std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
  return static_cast<int>(std::clamp(left, milliseconds(0), max).count());
}

// A spawned child process. Owns it: a child still running when its owner goes away is killed
// and reaped, so a failed benchmark never leaves VMs behind. Waits sleep in poll() on a pidfd
// rather than spinning, so the harness takes no CPU from the VMM it measures.
class Child {
 public:
  // Starts argv[0] with stdin from /dev/null and stdout/stderr appended to log_path.
  static Child Spawn(const std::vector<std::string>& args, const std::string& log_path) {
    std::vector<char*> argv;
    for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                     0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    pid_t pid = -1;
    int error = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (error != 0) Die("cannot start " + args[0] + ": " + std::strerror(error));
    UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    if (!pidfd) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      Die(Errno("pidfd_open"));
    }
    return Child(pid, std::move(pidfd));
  }

  Child(Child&& other) noexcept
      : pid_(std::exchange(other.pid_, -1)), pidfd_(std::move(other.pidfd_)) {}
  Child& operator=(Child&&) = delete;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }

  [[nodiscard]] pid_t pid() const { return pid_; }
  // Readable once the child has exited; borrowed for poll().
  [[nodiscard]] int exit_fd() const { return pidfd_.Get(); }

  // The child's wait status if it has exited by now.
  [[nodiscard]] std::optional<int> PollExit() {
    if (pid_ <= 0) Die("child polled after it was reaped");
    int status = 0;
    pid_t got = ::waitpid(pid_, &status, WNOHANG);
    if (got != pid_) return std::nullopt;
    pid_ = -1;
    return status;
  }

  // Waits for the child to exit, at most `timeout`; nullopt if it is still running then.
  [[nodiscard]] std::optional<int> WaitExit(milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (auto status = PollExit()) return status;
      int wait_ms = PollTimeout(deadline, timeout);
      if (wait_ms == 0) return std::nullopt;
      pollfd exited{.fd = pidfd_.Get(), .events = POLLIN, .revents = 0};
      ::poll(&exited, 1, wait_ms);
    }
  }

  // SIGTERM, then waits for the exit; its wait status, or nullopt if it would not stop.
  [[nodiscard]] std::optional<int> Terminate(milliseconds timeout) {
    ::kill(pid_, SIGTERM);
    return WaitExit(timeout);
  }

 private:
  Child(pid_t pid, UniqueFd pidfd) : pid_(pid), pidfd_(std::move(pidfd)) {}
  pid_t pid_;
  UniqueFd pidfd_;
};

// Wakes its owner when files appear or change in one directory (inotify), so waits for a
// socket or a serial line sleep instead of spinning.
class DirectoryWatch {
 public:
  explicit DirectoryWatch(const std::string& dir) : fd_(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) {
    if (!fd_) Die(Errno("inotify_init1"));
    if (::inotify_add_watch(fd_.Get(), dir.c_str(), IN_CREATE | IN_MODIFY) < 0) {
      Die(Errno("inotify_add_watch " + dir));
    }
  }

  // Sleeps until something changed in the directory, `child` exited, or `max` passed.
  void Wait(const Child& child, milliseconds max) {
    pollfd fds[2] = {{.fd = fd_.Get(), .events = POLLIN, .revents = 0},
                     {.fd = child.exit_fd(), .events = POLLIN, .revents = 0}};
    ::poll(fds, 2, static_cast<int>(max.count()));
    char drain[4096];
    while (::read(fd_.Get(), drain, sizeof drain) > 0) {
    }
  }

 private:
  UniqueFd fd_;
};

std::string DescribeStatus(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("signal ") + strsignal(WTERMSIG(status));
  return "wait status " + std::to_string(status);
}

// The tail of a child's log, for error messages.
std::string LogTail(const std::string& log_path) {
  std::string text = ReadFile(log_path);
  if (text.size() > 600) text = "..." + text.substr(text.size() - 600);
  return text.empty() ? "(log empty)" : "log " + log_path + ":\n" + text;
}

// Reads `"key":N` from ember-vmm's metrics JSON. The keys read here are unique in the file, so a
// search is enough and keeps this harness free of a JSON library.
std::optional<double> MetricValue(const std::string& json, const std::string& key) {
  std::string needle = "\"" + key + "\":";
  std::size_t at = json.find(needle);
  if (at == std::string::npos) return std::nullopt;
  const char* begin = json.data() + at + needle.size();
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(begin, json.data() + json.size(), value);
  if (ec != std::errc() || end == begin) return std::nullopt;
  return static_cast<double>(value);
}

// One mapping of /proc/PID/smaps, sizes in KiB.
struct Mapping {
  std::string name;  // path, [heap], [stack], memfd:…; empty for anonymous mappings
  std::uint64_t rss = 0;
  std::uint64_t private_dirty = 0;
  std::uint64_t shared_dirty = 0;
  std::uint64_t private_clean = 0;
  std::uint64_t shared_clean = 0;
};

std::vector<Mapping> ReadSmaps(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps");
  if (!in) Die("cannot read /proc/" + std::to_string(pid) + "/smaps");
  std::vector<Mapping> mappings;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string first;
    fields >> first;
    if (first.empty()) continue;
    if (first.back() != ':') {
      // Header: address perms offset dev inode [name]
      std::string perms, offset, dev, inode;
      fields >> perms >> offset >> dev >> inode;
      std::string name;
      std::getline(fields, name);
      name.erase(0, name.find_first_not_of(' '));
      mappings.push_back({.name = name});
      continue;
    }
    if (mappings.empty()) continue;
    std::uint64_t kib = 0;
    fields >> kib;
    Mapping& current = mappings.back();
    if (first == "Rss:")
      current.rss = kib;
    else if (first == "Private_Dirty:")
      current.private_dirty = kib;
    else if (first == "Shared_Dirty:")
      current.shared_dirty = kib;
    else if (first == "Private_Clean:")
      current.private_clean = kib;
    else if (first == "Shared_Clean:")
      current.shared_clean = kib;
  }
  return mappings;
}

std::uint64_t TotalRssKib(const std::vector<Mapping>& mappings) {
  std::uint64_t total = 0;
  for (const Mapping& mapping : mappings) total += mapping.rss;
  return total;
}

bool IsGuestMemory(const Mapping& mapping) {
  return mapping.name.find("memfd:ember-guest-mem") != std::string::npos;
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  std::size_t mid = values.size() / 2;
  return values.size() % 2 == 1 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
}

std::string Format(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f", value);
  return text;
}

std::string FormatRatio(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3g", value);
  return text;
}

void PrintFigure(const std::string& name, double value, const std::string& unit,
                 const std::string& baseline_name = "", std::optional<double> baseline = {}) {
  std::string line = name + " " + Format(value) + " " + unit;
  if (baseline && *baseline > 0) {
    line += " | " + baseline_name + " " + Format(*baseline) + " " + unit + " | ratio " +
            FormatRatio(value / *baseline);
  }
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

class Bench {
 public:
  explicit Bench(Options options) : options_(std::move(options)) {
    hello_config_ = options_.work_dir + "/hello.json";
    idle_config_ = options_.work_dir + "/idle.json";
    WriteFile(hello_config_, Config("hello"));
    WriteFile(idle_config_, Config("idle"));
  }

  // One ember-vmm run of the `hello` scenario to its clean exit; returns
  // {start_to_first_instruction_ms, start_to_boot_timer_ms} from its metrics file.
  std::pair<double, double> EmberStart(int run) {
    std::string metrics = Path("ember-start-metrics.json", run);
    std::string log = Path("ember-start.log", run);
    ::unlink(metrics.c_str());
    std::vector<std::string> args = {options_.vmm_path,
                                     "--config",
                                     hello_config_,
                                     "--metrics-path",
                                     metrics,
                                     "--serial-out",
                                     Path("ember-start-serial.txt", run),
                                     "--start-time-us",
                                     ""};
    // The clock is read immediately before the spawn: the figure counts from exec.
    args.back() = std::to_string(MonotonicMicros());
    Child vmm = Child::Spawn(args, log);
    std::optional<int> status = vmm.WaitExit(kRunTimeout);
    if (!status) Die("ember-vmm (hello) did not exit within 10 s; " + LogTail(log));
    if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
      Die("ember-vmm (hello) ended with " + DescribeStatus(*status) + "; " + LogTail(log));
    }
    std::string json = ReadFile(metrics);
    auto first = MetricValue(json, "start_to_first_instruction_us");
    auto boot = MetricValue(json, "boot_time_us");
    if (!first || !boot) Die("metrics file " + metrics + " lacks the start-up figures: " + json);
    return {*first / 1000.0, *boot / 1000.0};
  }

  // One run of the `hello` scenario through ember-jailer (chroot, new pid namespace, uid/gid
  // nobody), to the VMM's clean exit; returns its start_to_first_instruction in ms, counted
  // from the jailer's exec. The chroot is made afresh (and the VMM copied in) every run.
  double JailedStart(int run) {
    const std::string base = options_.work_dir + "/jails";
    const std::string id = "bench-" + std::to_string(run < 0 ? 0 : run % 2);
    const std::string root = base + "/ember-vmm/" + id + "/root";
    RemoveTree(base + "/ember-vmm/" + id);
    // The jailer keeps an existing chroot directory: the config goes in beforehand.
    for (const std::string& dir : {base, base + "/ember-vmm", base + "/ember-vmm/" + id, root}) {
      if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) Die(Errno("mkdir " + dir));
    }
    WriteFile(root + "/hello.json", Config("hello"));
    std::string log = Path("jailed-start.log", run);
    std::vector<std::string> args = {options_.jailer_path, "--id", id, "--exec-file",
                                     options_.vmm_path, "--uid", "65534", "--gid", "65534",
                                     "--chroot-base-dir", base, "--new-pid-ns", "--",
                                     "--config", "/hello.json", "--metrics-path",
                                     "/out/metrics.json", "--serial-out", "/out/serial.txt",
                                     "--start-time-us", ""};
    args.back() = std::to_string(MonotonicMicros());
    Child jailer = Child::Spawn(args, log);
    std::optional<int> status = jailer.WaitExit(kRunTimeout);
    if (!status) Die("jailed ember-vmm (hello) did not exit within 10 s; " + LogTail(log));
    if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
      Die("jailed ember-vmm (hello) ended with " + DescribeStatus(*status) + "; " + LogTail(log));
    }
    std::string json = ReadFile(root + "/out/metrics.json");  // the jail's one writable dir
    auto first = MetricValue(json, "start_to_first_instruction_us");
    if (!first) Die("jailed metrics file lacks start_to_first_instruction_us: " + json);
    return *first / 1000.0;
  }

  void RemoveJails() { RemoveTree(options_.work_dir + "/jails"); }

  struct EmberMemory {
    double overhead_mib;
    std::vector<Mapping> mappings;
  };

  // One ember-vmm run of the `idle` scenario: once the guest has said `idle` (it then halts with
  // interrupts off), samples smaps and stops the VM with SIGTERM.
  EmberMemory EmberIdleMemory(int run) {
    std::string serial = Path("ember-idle-serial.txt", run);
    std::string log = Path("ember-idle.log", run);
    ::unlink(serial.c_str());
    DirectoryWatch watch(options_.work_dir);
    Child vmm =
        Child::Spawn({options_.vmm_path, "--config", idle_config_, "--serial-out", serial}, log);
    auto deadline = std::chrono::steady_clock::now() + kRunTimeout;
    while (ReadFile(serial).find("idle\n") == std::string::npos) {
      if (auto status = vmm.PollExit()) {
        Die("ember-vmm (idle) ended early with " + DescribeStatus(*status) + "; " + LogTail(log));
      }
      if (std::chrono::steady_clock::now() > deadline) {
        Die("ember-vmm (idle) did not print `idle` within 10 s; " + LogTail(log));
      }
      watch.Wait(vmm, milliseconds(5));
    }
    // Let the VMM thread finish handling the guest's last exits before sampling.
    std::this_thread::sleep_for(milliseconds(50));
    std::vector<Mapping> mappings = ReadSmaps(vmm.pid());
    std::optional<int> status = vmm.Terminate(kRunTimeout);
    if (!status) Die("ember-vmm (idle) did not stop on SIGTERM within 10 s; " + LogTail(log));
    if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
      Die("ember-vmm (idle) ended on SIGTERM with " + DescribeStatus(*status) + "; " +
          LogTail(log));
    }
    std::uint64_t guest_kib = 0;
    bool found_guest = false;
    for (const Mapping& mapping : mappings) {
      if (!IsGuestMemory(mapping)) continue;
      guest_kib += mapping.rss;
      found_guest = true;
    }
    if (!found_guest) Die("no memfd:ember-guest-mem mapping in ember-vmm's smaps");
    double overhead = static_cast<double>(TotalRssKib(mappings) - guest_kib) / 1024.0;
    return {overhead, std::move(mappings)};
  }

  struct QemuSample {
    double start_to_qmp_ms;
    double rss_mib;
  };

  // One `qemu-system-x86_64 -M microvm -S` run: time from exec to the QMP greeting, then its RSS
  // in that stopped state.
  QemuSample QemuStart(int run) {
    std::string socket_path = Path("qmp.sock", run);
    std::string log = Path("qemu.log", run);
    ::unlink(socket_path.c_str());
    std::vector<std::string> args = {options_.qemu_path,
                                     "-M",
                                     "microvm",
                                     "-accel",
                                     "kvm",
                                     "-m",
                                     std::to_string(options_.mem_mib) + "M",
                                     "-smp",
                                     "1",
                                     "-S",
                                     "-nodefaults",
                                     "-nographic",
                                     "-display",
                                     "none",
                                     "-qmp",
                                     "unix:" + socket_path + ",server=on,wait=off"};
    DirectoryWatch watch(options_.work_dir);
    std::uint64_t start_us = MonotonicMicros();
    Child qemu = Child::Spawn(args, log);
    std::uint64_t greeting_us = WaitForQmpGreeting(qemu, watch, socket_path, log);
    std::vector<Mapping> mappings = ReadSmaps(qemu.pid());
    if (!qemu.Terminate(kRunTimeout)) Die("qemu did not stop on SIGTERM within 10 s");
    ::unlink(socket_path.c_str());
    return {static_cast<double>(greeting_us - start_us) / 1000.0,
            static_cast<double>(TotalRssKib(mappings)) / 1024.0};
  }

 private:
  std::string Config(const std::string& scenario) const {
    return "{\"boot-source\":{\"boot_args\":\"console=ttyS0 ember.test=" + scenario +
           "\"},\"machine-config\":{\"vcpu_count\":1,\"mem_size_mib\":" +
           std::to_string(options_.mem_mib) + "}}\n";
  }

  static void RemoveTree(const std::string& path) {
    ::nftw(
        path.c_str(), [](const char* entry, const struct stat*, int, FTW*) { return ::remove(entry); },
        16, FTW_DEPTH | FTW_PHYS);
  }

  // Alternating file names keep the previous run's files for comparison with a failing one's.
  std::string Path(const std::string& name, int run) const {
    std::string prefix = run < 0 ? "warmup" : std::to_string(run % 2);
    return options_.work_dir + "/" + prefix + "-" + name;
  }

  // Connects to QEMU's QMP socket as soon as it exists (woken by `watch` on its directory) and
  // returns the clock reading at which the greeting (`{"QMP": ...}` line) arrived.
  static std::uint64_t WaitForQmpGreeting(Child& qemu, DirectoryWatch& watch,
                                          const std::string& socket_path, const std::string& log) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (socket_path.size() >= sizeof address.sun_path) Die("QMP socket path too long");
    std::memcpy(address.sun_path, socket_path.c_str(), socket_path.size() + 1);
    auto deadline = std::chrono::steady_clock::now() + kRunTimeout;
    for (;;) {
      if (auto status = qemu.PollExit()) {
        Die("qemu ended before its QMP socket answered, " + DescribeStatus(*status) + "; " +
            LogTail(log));
      }
      if (std::chrono::steady_clock::now() > deadline) {
        Die("qemu's QMP socket did not answer within 10 s; " + LogTail(log));
      }
      UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (!fd) Die(Errno("socket(AF_UNIX)"));
      // Reason for the cast: the sockets API takes every address family as sockaddr.
      if (::connect(fd.Get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
        if (errno == ENOENT) {
          watch.Wait(qemu, milliseconds(5));
        } else if (errno == ECONNREFUSED) {
          // Bound but not yet listening: a window of microseconds.
          std::this_thread::sleep_for(std::chrono::microseconds(20));
        } else {
          Die(Errno("connect " + socket_path));
        }
        continue;
      }
      std::string received;
      while (received.find('\n') == std::string::npos) {
        pollfd readable{.fd = fd.Get(), .events = POLLIN, .revents = 0};
        if (::poll(&readable, 1, static_cast<int>(kRunTimeout.count())) <= 0) {
          Die("no QMP greeting within 10 s of connecting");
        }
        char buffer[512];
        ssize_t got = ::read(fd.Get(), buffer, sizeof buffer);
        if (got <= 0) Die("QMP socket closed before the greeting");
        received.append(buffer, static_cast<std::size_t>(got));
      }
      std::uint64_t now = MonotonicMicros();
      if (received.find("\"QMP\"") == std::string::npos)
        Die("unexpected QMP greeting: " + received);
      return now;
    }
  }

  Options options_;
  std::string hello_config_;
  std::string idle_config_;
};

// Groups ember-vmm's mappings by what they are and prints their resident sizes, largest first,
// as `#` comment lines after the figures.
void PrintRssBreakdown(const std::vector<Mapping>& mappings) {
  struct Group {
    std::uint64_t rss = 0, clean = 0, dirty = 0;
    int count = 0;
  };
  std::map<std::string, Group> groups;
  Group total;
  for (const Mapping& mapping : mappings) {
    std::string key = mapping.name;
    if (IsGuestMemory(mapping)) {
      key = "guest memory (memfd, excluded)";
    } else if (key.empty()) {
      key = "[anonymous: thread stacks, malloc arenas, TLS]";
    } else if (key.find("libabsl_") != std::string::npos) {
      key = "libabsl_*.so (all)";
    } else if (key.front() == '/') {
      key = key.substr(key.rfind('/') + 1);
    }
    Group& group = groups[key];
    std::uint64_t clean = mapping.private_clean + mapping.shared_clean;
    std::uint64_t dirty = mapping.private_dirty + mapping.shared_dirty;
    group.rss += mapping.rss;
    group.clean += clean;
    group.dirty += dirty;
    group.count += 1;
    if (!IsGuestMemory(mapping)) {
      total.rss += mapping.rss;
      total.clean += clean;
      total.dirty += dirty;
    }
  }
  std::vector<std::pair<std::string, Group>> sorted(groups.begin(), groups.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.second.rss > b.second.rss; });
  std::printf("# ember-vmm RSS breakdown (idle guest, median run), KiB:\n");
  std::printf("# %8s %8s %8s %5s  %s\n", "rss", "clean", "dirty", "maps", "what");
  for (const auto& [name, group] : sorted) {
    if (group.rss == 0) continue;
    std::printf("# %8llu %8llu %8llu %5d  %s\n", static_cast<unsigned long long>(group.rss),
                static_cast<unsigned long long>(group.clean),
                static_cast<unsigned long long>(group.dirty), group.count, name.c_str());
  }
  std::printf(
      "# %8llu %8llu %8llu %5s  overhead total (clean = file pages from the page cache,\n"
      "#                                  shareable between VMMs; dirty = this VMM's own)\n",
      static_cast<unsigned long long>(total.rss), static_cast<unsigned long long>(total.clean),
      static_cast<unsigned long long>(total.dirty), "");
}

int Main(int argc, char** argv) {
  Options options = ParseOptions(argc, argv);
  if (::access("/dev/kvm", R_OK | W_OK) != 0) Die(Errno("/dev/kvm is not usable"));
  bool baseline = !options.qemu_path.empty();
  bool jailed = !options.jailer_path.empty();
  if (options.work_dir.empty()) {
    char scratch[] = "/tmp/ember-vmm-bench.XXXXXX";
    if (::mkdtemp(scratch) == nullptr) Die(Errno("mkdtemp"));
    options.work_dir = scratch;
  } else if (::mkdir(options.work_dir.c_str(), 0755) != 0 && errno != EEXIST) {
    Die(Errno("mkdir " + options.work_dir));
  }
  int runs = options.runs;
  int rss_runs = options.rss_runs;
  bool rss_breakdown = options.rss_breakdown;
  bool verbose = options.verbose;
  Bench bench(std::move(options));

  // Untimed warm-up: page cache, dynamic loader caches, KVM module state.
  bench.EmberStart(-1);
  if (baseline) bench.QemuStart(-1);
  if (jailed) bench.JailedStart(-1);

  // Interleaved, so that drift in machine load affects both sides alike.
  std::vector<double> first_instruction, boot_timer, qemu_qmp, qemu_rss, jailed_first;
  for (int run = 0; run < runs; ++run) {
    auto [first, boot] = bench.EmberStart(run);
    first_instruction.push_back(first);
    boot_timer.push_back(boot);
    if (verbose)
      std::fprintf(stderr, "run %d: ember first instruction %.3f ms, boot timer %.3f ms\n", run,
                   first, boot);
    if (baseline) {
      Bench::QemuSample sample = bench.QemuStart(run);
      qemu_qmp.push_back(sample.start_to_qmp_ms);
      qemu_rss.push_back(sample.rss_mib);
      if (verbose)
        std::fprintf(stderr, "run %d: qemu QMP greeting %.3f ms, RSS %.2f MiB\n", run,
                     sample.start_to_qmp_ms, sample.rss_mib);
    }
    if (jailed) {
      jailed_first.push_back(bench.JailedStart(run));
      if (verbose)
        std::fprintf(stderr, "run %d: jailed ember first instruction %.3f ms\n", run,
                     jailed_first.back());
    }
  }
  std::vector<Bench::EmberMemory> memory;
  for (int run = 0; run < rss_runs; ++run) {
    memory.push_back(bench.EmberIdleMemory(run));
    if (verbose)
      std::fprintf(stderr, "run %d: ember RSS overhead %.2f MiB\n", run,
                   memory.back().overhead_mib);
  }
  std::vector<double> overheads;
  for (const auto& sample : memory) overheads.push_back(sample.overhead_mib);

  std::optional<double> qmp_median, rss_median;
  if (baseline) {
    qmp_median = Median(qemu_qmp);
    rss_median = Median(qemu_rss);
  }
  PrintFigure("vmm_start_to_first_instruction", Median(first_instruction), "ms",
              "qemu_microvm_start_to_qmp", qmp_median);
  PrintFigure("vmm_start_to_boot_timer", Median(boot_timer), "ms");
  if (jailed) {
    bench.RemoveJails();
    PrintFigure("jailer_start_to_first_instruction", Median(jailed_first), "ms",
                "vmm_start_to_first_instruction", Median(first_instruction));
  }
  PrintFigure("vmm_rss_overhead", Median(overheads), "MiB", "qemu_microvm_rss", rss_median);

  if (rss_breakdown) {
    // The run whose overhead is the median (the upper one for an even count).
    std::sort(memory.begin(), memory.end(),
              [](const auto& a, const auto& b) { return a.overhead_mib < b.overhead_mib; });
    PrintRssBreakdown(memory[memory.size() / 2].mappings);
  }
  return 0;
}

}  // namespace
}  // namespace ember::perf

int main(int argc, char** argv) { return ember::perf::Main(argc, argv); }
