#include "rootfs/image/interrupt.h"

#include <signal.h>

#include <csignal>
#include <cstring>
#include <string>

namespace ember::rootfs {
namespace {

volatile std::sig_atomic_t g_signal = 0;

void Record(int signal) { g_signal = signal; }

}  // namespace

void InstallInterruptHandlers() {
  struct sigaction action {};
  action.sa_handler = Record;
  sigemptyset(&action.sa_mask);
  // No SA_RESTART: a read blocked on a pipe returns EINTR, and its loop checks the signal.
  action.sa_flags = 0;
  for (int signal : {SIGINT, SIGTERM, SIGHUP}) sigaction(signal, &action, nullptr);
}

int InterruptSignal() { return g_signal; }

absl::Status CheckInterrupt() {
  int signal = g_signal;
  if (signal == 0) return absl::OkStatus();
  return absl::CancelledError(std::string("interrupted by ") + sigabbrev_np(signal) +
                              "; nothing written");
}

}  // namespace ember::rootfs
