#pragma once

#include "absl/status/status.h"

namespace ember::rootfs {

// SIGINT, SIGTERM and SIGHUP end a build cleanly: the handlers only record the signal, the
// long loops (archive entries, tree walks) and the helper programs' ends check it and return
// Cancelled, so every RAII owner removes what it made (the temporary image, the work
// directory) before main exits with 128 + the signal. Call once, from main, before building.
void InstallInterruptHandlers();

// The signal received, or 0.
[[nodiscard]] int InterruptSignal();

// OK, or Cancelled naming the signal once one arrived.
[[nodiscard]] absl::Status CheckInterrupt();

}  // namespace ember::rootfs
