#pragma once

#include <cstdint>

namespace ember::vmm {

// Where one ember-vmm's start-up (a boot or a restore) spends its time: each phase's
// microseconds go into the metric startup.<phase>_us, so that a benchmark reads the breakdown
// from the VM's metrics beside vmm.start_to_first_instruction_us (issue 18: "profile where a
// restore's time goes"). The phases follow one another: each Mark() closes the phase that
// began at the previous mark (or at Begin()). Main thread only, before the vCPUs start; the
// cost is one clock read per phase.
class StartupProfile {
 public:
  // Starts the clock at `start_us` (CLOCK_MONOTONIC µs). When the caller gave its spawn time
  // (`caller_start_us`, ember-vmm --start-time-us; 0 when it did not), the time from there to
  // `start_us` is the phase "exec" (fork, exec, the dynamic loader, static initialisers).
  static void Begin(std::uint64_t start_us, std::uint64_t caller_start_us);
  // Records the time since the previous mark as startup.<phase>_us (`phase`: a literal).
  static void Mark(const char* phase);
};

}  // namespace ember::vmm
