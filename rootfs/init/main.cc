// ember-init: PID 1 of an Ember guest. README.md in this folder says what it does, which
// command-line keys it reads and which signals end the VM.
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "rootfs/init/agent_supervisor.h"
#include "rootfs/init/cmdline.h"
#include "rootfs/init/guest_config.h"
#include "rootfs/init/log.h"
#include "rootfs/init/system_setup.h"

namespace ember::init {
namespace {

constexpr char kAgentPath[] = "/sbin/ember-agent";
constexpr char kCmdlineFlag[] = "--cmdline=";
// How long the agent and every other process get to end after SIGTERM before SIGKILL.
constexpr auto kStopGrace = std::chrono::seconds(3);

// The signals that end the VM: SIGTERM and SIGUSR2 (what an agent or an operator sends),
// SIGPWR (power failure, as sysvinit), SIGINT (the kernel's ctrl-alt-del) and SIGUSR1 (halt
// in busybox's init). All end the same way: a guest under Ember has one way out.
constexpr int kPowerOffSignals[] = {SIGTERM, SIGUSR2, SIGPWR, SIGINT, SIGUSR1};

void Ignore(int) {}

// Blocks every signal init waits for; they are taken with sigtimedwait. The kernel drops
// signals to PID 1 that have no handler, so each gets a no-op handler as well.
sigset_t BlockSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGHUP);
  for (int sig : kPowerOffSignals) sigaddset(&set, sig);
  sigprocmask(SIG_BLOCK, &set, nullptr);
  struct sigaction action {};
  action.sa_handler = Ignore;
  sigemptyset(&action.sa_mask);
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sigismember(&set, sig) == 1) sigaction(sig, &action, nullptr);
  }
  return set;
}

std::string ReadCmdline() {
  std::ifstream file("/proc/cmdline");
  if (!file) {
    Log("cannot read /proc/cmdline: using no settings from the kernel command line");
    return "";
  }
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

void Configure(const GuestConfig& config) {
  for (const std::string& error : config.errors) Log(absl::StrCat("ignoring ", error));
  if (absl::Status status = SetHostname(config.hostname); !status.ok()) {
    Log(std::string(status.message()));
  }
  if (absl::Status status = BringUpLoopback(); !status.ok()) Log(std::string(status.message()));
  if (config.net) {
    if (absl::Status status = ConfigureInterface(*config.net); status.ok()) {
      char address[INET_ADDRSTRLEN] = {};
      inet_ntop(AF_INET, &config.net->address, address, sizeof(address));
      Log(absl::StrCat(config.net->device, ": ", address, "/", config.net->prefix_length));
    } else {
      Log(absl::StrCat("network not configured: ", status.message()));
    }
  }
  if (!config.seed.empty()) {
    if (absl::Status status = AddEntropy(config.seed); status.ok()) {
      Log(absl::StrCat("added ", config.seed.size(), " bytes of entropy from ember.seed"));
    } else {
      Log(std::string(status.message()));
    }
  }
}

// Reaps every child that has ended, orphans included; tells the supervisor about each.
// True when the agent asked to power off.
bool ReapChildren(AgentSupervisor& agent) {
  bool power_off = false;
  int status = 0;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    if (agent.OnChildExit(pid, status, Clock::now()) ==
        AgentSupervisor::ChildExit::kAgentAskedToPowerOff) {
      power_off = true;
    }
  }
  return power_off;
}

// Waits up to `limit` for every other process to end, reaping them.
void WaitForAllChildren(const sigset_t& signals, Clock::duration limit) {
  Clock::time_point deadline = Clock::now() + limit;
  while (true) {
    pid_t pid;
    while ((pid = waitpid(-1, nullptr, WNOHANG)) > 0) {
    }
    if (pid < 0 && errno == ECHILD) return;
    Clock::duration left = deadline - Clock::now();
    if (left <= Clock::duration::zero()) return;
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
    timespec timeout{ns / 1000000000, ns % 1000000000};
    sigtimedwait(&signals, nullptr, &timeout);
  }
}

[[noreturn]] void PowerOff(const sigset_t& signals, const std::string& why) {
  Log(absl::StrCat("powering off: ", why));
  // kill(-1) reaches every process but init itself (in a guest: every process there is).
  kill(-1, SIGTERM);
  WaitForAllChildren(signals, kStopGrace);
  kill(-1, SIGKILL);
  WaitForAllChildren(signals, kStopGrace);
  sync();
  // Under Ember (reboot=k) the reset goes through the i8042, which ends the VM cleanly; in a
  // pid namespace the kernel ends this init with SIGHUP instead.
  reboot(RB_AUTOBOOT);
  Log(absl::StrCat("reboot failed: ", std::strerror(errno)));
  _exit(1);
}

int Run(int argc, char** argv) {
  if (getpid() != 1) {
    Log(absl::StrCat("must run as PID 1 (it is ", getpid(),
                     "); it kills every process when "
                     "it powers off"));
    return 2;
  }
  std::optional<std::string> cmdline_override;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg.starts_with(kCmdlineFlag))
      cmdline_override = std::string(arg.substr(sizeof(kCmdlineFlag) - 1));
  }
  sigset_t signals = BlockSignals();
  umask(022);
  if (chdir("/") != 0) Log(absl::StrCat("chdir /: ", std::strerror(errno)));
  for (const std::string& error : MountFilesystems()) Log(error);
  std::string cmdline = cmdline_override ? *cmdline_override : ReadCmdline();
  GuestConfig config = ReadGuestConfig(Cmdline::Parse(cmdline));
  Configure(config);

  AgentSupervisor agent(kAgentPath, config.agent_args);
  while (true) {
    agent.StartIfDue(Clock::now());
    siginfo_t info{};
    int sig;
    if (std::optional<Clock::time_point> next = agent.next_start()) {
      auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::max(*next - Clock::now(), Clock::duration::zero()))
                    .count();
      timespec timeout{ns / 1000000000, ns % 1000000000};
      sig = sigtimedwait(&signals, &info, &timeout);
    } else {
      sig = sigwaitinfo(&signals, &info);
    }
    if (sig == SIGCHLD) {
      if (ReapChildren(agent)) PowerOff(signals, "the agent exited with status 0");
    } else if (sig == SIGHUP) {
      Log("SIGHUP ignored");
    } else if (sig > 0) {
      PowerOff(signals, absl::StrCat(strsignal(sig), " from pid ", info.si_pid));
    }
  }
}

}  // namespace
}  // namespace ember::init

int main(int argc, char** argv) { return ember::init::Run(argc, argv); }
