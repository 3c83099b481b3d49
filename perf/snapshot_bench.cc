// ember-snapshot-bench: snapshot and restore costs of ember-vmm (issue 6) for 128 MiB and 1 GiB
// guests: snapshot creation, restore (the file backend, userfaultfd, userfaultfd with the
// recorded working set prefetched), the guest's time to get its working set back after a
// restore, and clones restored at once; next to a cold boot of the same test guest measured
// in the same run. Prints perf/run's line format; never asserts a timing.
//
// The guest runs the test guest's `touch` scenario: it fills 32 MiB, prints "touch ready" and
// waits for a byte on its serial console (snapshotted there); a restore is given the byte on
// stdin, so the restored guest at once rewrites those 32 MiB and prints "touched".
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <charconv>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "perf/bench_options.h"
#include "perf/bench_report.h"
#include "vmm/base/clock.h"

extern char** environ;

namespace ember::perf {
namespace {

constexpr char kHarness[] = "ember-snapshot-bench";
constexpr char kUsage[] =
    "usage: ember-snapshot-bench --vmm PATH --work-dir DIR [--runs N] [--clones N]\n"
    "                            [--max-mib N] [--verbose]\n"
    "\n"
    "  --vmm PATH      ember-vmm binary\n"
    "  --work-dir DIR  scratch directory: configs, snapshots (up to 1 GiB sparse), logs\n"
    "  --runs N        samples per figure (default 5); each figure is the median\n"
    "  --clones N      VMs restored at once for clones_per_s (default 10)\n"
    "  --max-mib N     only the guest sizes up to N MiB (128, 1024; default 1024)\n"
    "  --verbose       print every sample to stderr\n";

struct Options {
  std::string vmm;
  std::string work_dir;
  int runs = 5;
  int clones = 10;
  int max_mib = 1024;
  bool verbose = false;
};

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void SleepMs(int ms) {
  timespec ts{ms / 1000, static_cast<long>(ms % 1000) * 1'000'000};
  ::nanosleep(&ts, nullptr);
}

// A number after `key` in `text` (a metrics JSON "name": N, or a log's "in N us"), or -1.
double NumberAfter(const std::string& text, const std::string& key, std::size_t from = 0) {
  std::size_t at = text.find(key, from);
  if (at == std::string::npos) return -1;
  std::uint64_t value = 0;
  const char* begin = text.data() + at + key.size();
  auto [end, ec] = std::from_chars(begin, text.data() + text.size(), value);
  return ec == std::errc() && end != begin ? static_cast<double>(value) : -1;
}

// One ember-vmm process; killed and reaped if still running when dropped.
class Vm {
 public:
  // `input`: bytes on its stdin (a pipe, closed after them), so its guest's serial console
  // gets them. (With the write end left open, ember-vmm noticed the guest's reset only at the
  // pipe's EOF.)
  Vm(const std::vector<std::string>& args, const std::string& log, const std::string& input) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) Die(kHarness, "pipe2 failed");
    if (!input.empty() && ::write(fds[1], input.data(), input.size()) < 0) {
      Die(kHarness, "write to a pipe failed");
    }
    ::close(fds[1]);
    std::vector<char*> argv;
    for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[0], 0);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                     0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    int error = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[0]);
    if (error != 0) Die(kHarness, "cannot start " + args[0] + ": " + std::strerror(error));
  }
  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;
  ~Vm() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  void Signal(int sig) const { ::kill(pid_, sig); }

  // Its exit code once it exits within `timeout_ms` (-1: killed by a signal); dies otherwise.
  int Wait(int timeout_ms, const std::string& what) {
    for (int waited = 0;; waited += 2) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      if (waited > timeout_ms) Die(kHarness, what + " did not end in time");
      SleepMs(2);
    }
  }

 private:
  pid_t pid_ = -1;
};

// Polls `path` every 2 ms until it contains `text`; dies after `timeout_ms`.
void WaitForText(const std::string& path, const std::string& text, int timeout_ms,
                 const std::string& what) {
  for (int waited = 0; Slurp(path).find(text) == std::string::npos; waited += 2) {
    if (waited > timeout_ms) Die(kHarness, what + ": no \"" + text + "\" in " + path);
    SleepMs(2);
  }
}

std::string WriteConfig(const std::string& dir, int mem_mib, const std::string& test) {
  std::string path = dir + "/" + test + "-" + std::to_string(mem_mib) + ".json";
  std::ofstream(path) << R"({"boot-source": {"boot_args": "console=ttyS0 ember.test=)" << test
                      << R"("}, "machine-config": {"vcpu_count": 1, "mem_size_mib": )" << mem_mib
                      << "}}";
  return path;
}

class Bench {
 public:
  explicit Bench(Options options) : o_(std::move(options)) {}

  void RunSize(int mem_mib) {
    std::string tag = "_" + (mem_mib >= 1024 ? std::to_string(mem_mib / 1024) + "gib"
                                             : std::to_string(mem_mib) + "mib");
    dir_ = o_.work_dir + "/snap" + tag;
    if (::mkdir(dir_.c_str(), 0755) != 0 && errno != EEXIST) Die(kHarness, "mkdir " + dir_);
    state_ = dir_ + "/vm.state";
    memory_ = dir_ + "/vm.mem";

    double boot_ms = ColdBootMs(mem_mib);
    Creates create = CreateSnapshotMs(mem_mib);
    PrintFigure("snapshot_create_ms" + tag, create.total_ms, "ms",
                "write_fsync_same_bytes_ms" + tag, create.write_fsync_ms);
    PrintFigure("snapshot_create_paused_ms" + tag, create.paused_ms, "ms",
                "write_same_bytes_ms" + tag, create.write_ms);
    if (mem_mib == 128) {
      PrintNote(std::string("target: VM paused <= 10 ms for a snapshot of a guest that touched ") +
                "32 MiB: " + (create.paused_ms <= 10 ? "met" : "NOT met") + " (paused " +
                Fixed(create.paused_ms) + " ms; in all, files fsynced, " +
                Fixed(create.total_ms) + " ms)");
    }

    Restores file = RestoreRuns({}, "file");
    Restores uffd = RestoreRuns({"--restore-mem-backend", "uffd"}, "uffd");
    Restores prefetch =
        RestoreRuns({"--restore-mem-backend", "uffd", "--prefetch-working-set"}, "prefetch");
    std::string boot_name = "cold_boot_to_boot_timer_ms" + tag;
    PrintFigure("snapshot_restore_ms" + tag, file.restore_ms, "ms", boot_name, boot_ms);
    PrintFigure("snapshot_restore_uffd_ms" + tag, uffd.restore_ms, "ms", boot_name, boot_ms);
    PrintFigure("snapshot_restore_uffd_prefetch_ms" + tag, prefetch.restore_ms, "ms", boot_name,
                boot_ms);
    PrintRestoreProfile(tag, file);
    // Every way of getting memory back beside the plain file-mapped restore (the kernel's own
    // page cache faults), and the host's part of each uffd figure apart: the page server's
    // time serving faults, plus the prefetch's bulk copy (issue 18).
    const std::string file_name = "post_restore_touch_ms" + tag + "_file";
    PrintFigure(file_name, file.touch_ms, "ms");
    PrintFigure("post_restore_touch_ms" + tag + "_uffd", uffd.touch_ms, "ms", file_name,
                file.touch_ms);
    PrintFigure("post_restore_touch_ms" + tag + "_uffd_prefetch", prefetch.touch_ms, "ms",
                file_name, file.touch_ms);
    PrintFigure("post_restore_host_ms" + tag + "_uffd", uffd.host_ms, "ms",
                "post_restore_touch_ms" + tag + "_uffd", uffd.touch_ms);
    PrintFigure("post_restore_host_ms" + tag + "_uffd_prefetch", prefetch.host_ms, "ms",
                "post_restore_touch_ms" + tag + "_uffd_prefetch", prefetch.touch_ms);
    PrintFigure("clones_per_s" + tag, ClonesPerSecond(), "clones/s");
    if (mem_mib == 128) {
      PrintNote(std::string("target: snapshot_restore_ms < 5 ms median for 128 MiB: ") +
                (file.restore_ms < 5 ? "met" : "NOT met") + " (file " + Fixed(file.restore_ms) +
                ", uffd " + Fixed(uffd.restore_ms) + ", uffd+prefetch " +
                Fixed(prefetch.restore_ms) + ")");
    }
    double cut = prefetch.touch_ms > 0 ? uffd.touch_ms / prefetch.touch_ms : 0;
    PrintNote("target: prefetch cuts post_restore_touch" + tag + " >= 3x: " +
              (cut >= 3 ? "met" : "NOT met") + " (" + Fixed(cut) + "x; working set " +
              Fixed(ws_pages_ * 4.0 / 1024) + " MiB)");
  }

 private:
  struct Creates {
    double total_ms = 0;        // the snapshot in all, its files fsynced (ember-vmm's log)
    double paused_ms = 0;       // of which the VM was paused (ember-vmm's log)
    double write_ms = 0;        // baseline: the memory file's data written afresh, page cache
    double write_fsync_ms = 0;  // baseline: the same, then fsynced
  };
  struct Restores {
    double restore_ms = 0;  // restore command to the vCPU's first instruction (VMM metric)
    double touch_ms = 0;    // restore command to the guest's "touched" (host clock)
    // uffd only: the page server's fault service time plus the prefetch's (VMM metrics).
    double host_ms = 0;
    // The medians of ember-vmm's startup.<phase>_us metrics (StartupProfile), in its order.
    std::vector<std::pair<std::string, double>> phases_us;
    double rest_us = 0;  // the median of each run's start_to_first_instruction less its phases
  };

  // The phases StartupProfile records on a restore, in order (vmm/startup_profile.h).
  static constexpr const char* kRestorePhases[] = {
      "exec",        "read_config", "seccomp_compile", "options",   "kvm_wait", "devices",
      "kvm_create_vm", "memory",    "irqchip_pit",     "device_wiring", "cpu_check",
      "vm_state",    "vcpu_state",  "device_state",    "watch_events"};

  // One `#` table of where a restore's time goes: each phase's median, and what is left of
  // start_to_first_instruction after them (the VMM loop, the vCPU thread and its seccomp
  // filter, up to KVM_RUN).
  static void PrintRestoreProfile(const std::string& tag, const Restores& restores) {
    PrintNote("restore profile" + tag + " (file backend; median us per phase of ember-vmm's "
              "start-up, vmm/startup_profile.h):");
    for (const auto& [phase, us] : restores.phases_us) {
      char line[96];
      std::snprintf(line, sizeof line, "  %-18s %8.0f us", phase.c_str(), us);
      PrintNote(line);
    }
    char line[128];
    std::snprintf(line, sizeof line, "  %-18s %8.0f us  (to the first KVM_RUN; total %.0f us)",
                  "rest", restores.rest_us, restores.restore_ms * 1000);
    PrintNote(line);
  }

  static std::string Fixed(double value) {
    char text[32];
    std::snprintf(text, sizeof text, "%.2f", value);
    return text;
  }

  void Sample(const std::string& name, double value) const {
    if (o_.verbose) std::fprintf(stderr, "%s %.3f\n", name.c_str(), value);
  }

  // A cold boot of the same guest to its boot-timer write, as ember-vmm logs it (counted from
  // --start-time-us, our spawn).
  double ColdBootMs(int mem_mib) {
    std::string config = WriteConfig(dir_, mem_mib, "idle");
    std::vector<double> samples;
    for (int i = 0; i < o_.runs; ++i) {
      std::string serial = dir_ + "/boot-serial.txt";
      std::string log = dir_ + "/boot-" + std::to_string(i) + ".log";
      ::unlink(log.c_str());
      ::unlink(serial.c_str());  // the last run's "idle" must not count for this one
      Vm vm({o_.vmm, "--config", config, "--serial-out", serial, "--log-path", log,
             "--start-time-us", std::to_string(base::MonotonicMicros())},
            dir_ + "/boot.out", "");
      WaitForText(serial, "\nidle\n", 30000, "cold boot");  // not the command line's "=idle"
      vm.Signal(SIGTERM);
      vm.Wait(10000, "cold boot");
      double us = NumberAfter(Slurp(log), "Guest-boot-time = ");
      if (us < 0) Die(kHarness, "no Guest-boot-time in " + log);
      samples.push_back(us / 1000);
      Sample("cold_boot_ms", us / 1000);
    }
    return Median(samples);
  }

  // The baseline of a snapshot's write: the data ranges of the memory file just written,
  // read beforehand (not timed), written with plain pwrites to a new sparse file of the same
  // size, then fsynced. Adds the write's and the write+fsync's ms to `write`, `write_fsync`.
  void PlainWriteOfTheSameBytes(std::vector<double>& write, std::vector<double>& write_fsync) {
    int in = ::open(memory_.c_str(), O_RDONLY | O_CLOEXEC);
    if (in < 0) Die(kHarness, "open " + memory_);
    struct stat st {};
    ::fstat(in, &st);
    std::vector<std::pair<off_t, std::string>> ranges;
    for (off_t pos = 0; pos < st.st_size;) {
      off_t data = ::lseek(in, pos, SEEK_DATA);
      if (data < 0) break;
      off_t hole = ::lseek(in, data, SEEK_HOLE);
      std::string bytes(static_cast<std::size_t>(hole - data), '\0');
      if (::pread(in, bytes.data(), bytes.size(), data) != static_cast<ssize_t>(bytes.size())) {
        Die(kHarness, "pread " + memory_);
      }
      ranges.emplace_back(data, std::move(bytes));
      pos = hole;
    }
    ::close(in);
    const std::string copy = dir_ + "/baseline.mem";
    ::unlink(copy.c_str());
    std::uint64_t start = base::MonotonicMicros();
    int out = ::open(copy.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0 || ::ftruncate(out, st.st_size) != 0) Die(kHarness, "create " + copy);
    for (const auto& [offset, bytes] : ranges) {
      if (::pwrite(out, bytes.data(), bytes.size(), offset) != static_cast<ssize_t>(bytes.size())) {
        Die(kHarness, "pwrite " + copy);
      }
    }
    std::uint64_t written = base::MonotonicMicros();
    if (::fsync(out) != 0) Die(kHarness, "fsync " + copy);
    std::uint64_t synced = base::MonotonicMicros();
    ::close(out);
    ::unlink(copy.c_str());
    write.push_back(static_cast<double>(written - start) / 1000);
    write_fsync.push_back(static_cast<double>(synced - start) / 1000);
    Sample("write_same_bytes_ms", write.back());
    Sample("write_fsync_same_bytes_ms", write_fsync.back());
  }

  // Boots the touch guest, waits until it filled its memory, and snapshots it `runs` times
  // (SIGUSR1), each followed by the baseline write of the same bytes; the figures are the
  // VMM's own times per snapshot, from its log: in all, and with the VM paused.
  Creates CreateSnapshotMs(int mem_mib) {
    std::string config = WriteConfig(dir_, mem_mib, "touch");
    std::string serial = dir_ + "/original-serial.txt";
    std::string log = dir_ + "/original.log";
    ::unlink(log.c_str());
    ::unlink(serial.c_str());
    Vm vm({o_.vmm, "--config", config, "--serial-out", serial, "--log-path", log,
           "--snapshot-path", state_, "--snapshot-mem-path", memory_},
          dir_ + "/original.out", "");
    WaitForText(serial, "touch ready\n", 120000, "touch guest");
    std::vector<double> total, paused, write, write_fsync;
    std::size_t from = 0;
    for (int i = 0; i < o_.runs; ++i) {
      vm.Signal(SIGUSR1);
      std::string text;
      std::size_t at = std::string::npos;
      for (int waited = 0;; waited += 2) {
        text = Slurp(log);
        at = text.find("snapshot written", from);
        std::size_t paused_at = at == std::string::npos ? at : text.find("paused", at);
        if (paused_at != std::string::npos && text.find(" us\n", paused_at) != std::string::npos) {
          from = at + 1;
          break;
        }
        if (waited > 60000) Die(kHarness, "no snapshot written: " + log);
        SleepMs(2);
      }
      double us = NumberAfter(text, " in ", at);
      double paused_us = NumberAfter(text, "VM paused ", at);
      if (us < 0 || paused_us < 0) Die(kHarness, "no times in " + log);
      total.push_back(us / 1000);
      paused.push_back(paused_us / 1000);
      Sample("snapshot_create_ms", us / 1000);
      Sample("snapshot_create_paused_ms", paused_us / 1000);
      PlainWriteOfTheSameBytes(write, write_fsync);
    }
    vm.Signal(SIGKILL);
    vm.Wait(10000, "touch guest");
    return {Median(total), Median(paused), Median(write), Median(write_fsync)};
  }

  std::vector<std::string> RestoreArgs(const std::string& name, int i,
                                       std::uint64_t start_us) const {
    return {o_.vmm,           "--restore-from", state_,          "--restore-mem",
            memory_,          "--metrics-path", Path(name, i, "metrics.json"),
            "--serial-out",   Path(name, i, "serial.txt"),        "--log-path",
            Path(name, i, "log"), "--start-time-us", std::to_string(start_us)};
  }

  std::string Path(const std::string& name, int i, const std::string& what) const {
    return dir_ + "/" + name + "-" + std::to_string(i) + "." + what;
  }

  Restores RestoreRuns(const std::vector<std::string>& extra, const std::string& name) {
    std::vector<double> restore, touch, host, rest;
    std::vector<std::vector<double>> phases(std::size(kRestorePhases));
    for (int i = 0; i < o_.runs; ++i) {
      for (const char* what : {"metrics.json", "serial.txt"}) ::unlink(Path(name, i, what).c_str());
      std::uint64_t start = base::MonotonicMicros();
      std::vector<std::string> args = RestoreArgs(name, i, start);
      args.insert(args.end(), extra.begin(), extra.end());
      Vm vm(args, Path(name, i, "out"), "g");
      WaitForText(Path(name, i, "serial.txt"), "touched\n", 120000, name + " restore");
      double touch_ms = static_cast<double>(base::MonotonicMicros() - start) / 1000;
      if (vm.Wait(30000, name + " restore") != 0) {
        Die(kHarness, name + " restore failed: " + Slurp(Path(name, i, "log")));
      }
      std::string metrics = Slurp(Path(name, i, "metrics.json"));
      double first_us = NumberAfter(metrics, "\"start_to_first_instruction_us\":");
      if (first_us < 0) Die(kHarness, "no start_to_first_instruction_us: " + metrics);
      if (name == "uffd") ws_pages_ = NumberAfter(metrics, "\"working_set_pages\":");
      restore.push_back(first_us / 1000);
      touch.push_back(touch_ms);
      Sample(name + " restore_ms", first_us / 1000);
      Sample(name + " touch_ms", touch_ms);
      const std::size_t uffd_at = metrics.find("\"uffd\":");
      if (uffd_at != std::string::npos) {
        const double served_us = NumberAfter(metrics, "\"fault_service_us\":", uffd_at);
        const double prefetch_us = NumberAfter(metrics, "\"prefetch_us\":", uffd_at);
        host.push_back((std::max(0.0, served_us) + std::max(0.0, prefetch_us)) / 1000);
        Sample(name + " host_ms", host.back());
      }
      const std::size_t startup_at = metrics.find("\"startup\":");
      double left_us = first_us;
      for (std::size_t p = 0; p < phases.size(); ++p) {
        const double us =
            startup_at == std::string::npos
                ? -1
                : NumberAfter(metrics, "\"" + std::string(kRestorePhases[p]) + "_us\":",
                              startup_at);
        if (us >= 0) phases[p].push_back(us);
        if (us >= 0) left_us -= us;
      }
      rest.push_back(left_us);
    }
    Restores result{Median(restore), Median(touch), Median(host), {}, Median(rest)};
    for (std::size_t p = 0; p < phases.size(); ++p) {
      if (!phases[p].empty()) result.phases_us.emplace_back(kRestorePhases[p], Median(phases[p]));
    }
    return result;
  }

  // `clones` restores of the one snapshot started at once (file backend, sharing its memory
  // file); clones per second until the last one's vCPU runs.
  double ClonesPerSecond() {
    std::vector<double> samples;
    for (int run = 0; run < o_.runs; ++run) {
      std::uint64_t start = base::MonotonicMicros();
      std::vector<std::unique_ptr<Vm>> clones;
      for (int i = 0; i < o_.clones; ++i) {
        ::unlink(Path("clone", i, "metrics.json").c_str());
        ::unlink(Path("clone", i, "log").c_str());
        clones.push_back(std::make_unique<Vm>(RestoreArgs("clone", i, start),
                                              Path("clone", i, "out"), ""));
      }
      // Each clone's guest waits for input forever; once every clone logged its restore, its
      // vCPU is about to run: stop them and read when each first ran.
      for (int i = 0; i < o_.clones; ++i) {
        WaitForText(Path("clone", i, "log"), "VM restored", 60000, "clone");
      }
      SleepMs(50);
      double last_us = 0;
      for (int i = 0; i < o_.clones; ++i) {
        clones[static_cast<std::size_t>(i)]->Signal(SIGTERM);
        clones[static_cast<std::size_t>(i)]->Wait(10000, "clone");
        double us = NumberAfter(Slurp(Path("clone", i, "metrics.json")),
                                "\"start_to_first_instruction_us\":");
        if (us < 0) Die(kHarness, "clone " + std::to_string(i) + " never ran");
        last_us = std::max(last_us, us);
      }
      samples.push_back(o_.clones / (last_us / 1e6));
      Sample("clones_per_s", samples.back());
    }
    return Median(samples);
  }

  Options o_;
  std::string dir_, state_, memory_;
  double ws_pages_ = 0;
};

int Main(int argc, char** argv) {
  Options options;
  BenchOptions(kHarness, kUsage)
      .Text("--vmm", &options.vmm, /*required=*/true)
      .Text("--work-dir", &options.work_dir, /*required=*/true)
      .Number("--runs", &options.runs, 1)
      .Number("--clones", &options.clones, 1)
      .Number("--max-mib", &options.max_mib, 128)
      .Flag("--verbose", &options.verbose)
      .Parse(argc, argv);
  PrintNote("snapshots (issue 6): touch guest, 1 vCPU, working set 32 MiB; restore figures are "
            "ember-vmm's start_to_first_instruction; touch figures are host time from the "
            "restore command to the guest's \"touched\" line");
  PrintNote("guest-side times (cold boot, post-restore touch) run under this host's emulated "
            "KVM (~1 us per guest instruction, ~6 us per first touch of a page): not hardware "
            "figures; VMM-side times (create, restore, clones) are meaningful");
  PrintNote("load average at start (1, 5, 15 min; other processes inflate times): " +
            Slurp("/proc/loadavg").substr(0, Slurp("/proc/loadavg").find(" ", 15)));
  Bench bench(options);
  for (int mem_mib : {128, 1024}) {
    if (mem_mib <= options.max_mib) bench.RunSize(mem_mib);
  }
  return 0;
}

}  // namespace
}  // namespace ember::perf

int main(int argc, char** argv) { return ember::perf::Main(argc, argv); }
