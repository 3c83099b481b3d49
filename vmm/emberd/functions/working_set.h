#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "vmm/emberd/working_set_size.h"

namespace ember::emberd::functions {

// A function's recorded working set (the pages a restored clone touched; snapshot/working_set.h
// is its format, which emberd may not link): a jailed clone restored through userfaultfd
// records it into its jail's output directory, and emberd takes it from there once that clone
// is gone. It is untrusted data a jailed VMM wrote, so emberd checks it before it becomes the
// set every later cold clone prefetches: a regular file reached without a symlink, at most
// MaxWorkingSetBytes(memory), the format's magic, version, page size and this guest's memory
// size, and runs that are ascending, apart and inside the memory. Its CRC and fingerprint are
// the prefetching ember-vmm's to check (a set it refuses fails that restore, and the caller
// drops the set and records a new one: CloneOps::Restore).

// The largest well-formed set for `memory_bytes` of guest memory: every other page a run.
using ::ember::emberd::MaxWorkingSetBytes;

// Whether `bytes` is a well-formed working set for a guest of `memory_bytes`; INVALID_ARGUMENT
// saying what is wrong.
[[nodiscard]] absl::Status CheckWorkingSet(const std::string& bytes, std::uint64_t memory_bytes);

// Takes the set a jailed clone recorded (kJailWorkingSetFile in `jail_output_dir`, its jail's
// output directory on the host, whose VMM has ended), checks it and puts it at `to` (atomically,
// root's, 0600). NOT_FOUND when the clone recorded none.
[[nodiscard]] absl::Status TakeRecordedWorkingSet(const std::string& jail_output_dir,
                                                  std::uint64_t memory_bytes,
                                                  const std::string& to);

}  // namespace ember::emberd::functions
