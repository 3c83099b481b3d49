#include "snapshot/snapshot_id.h"

#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>

namespace ember::snapshot {
namespace {

// Drawn while the process starts, before any seccomp filter (the VMM's allows no getrandom);
// the program's own static initialisation runs before main. Should getrandom fail, the clock
// and the pid make it unlikely enough to meet another process's.
std::array<std::uint64_t, 2> DrawProcessSeed() {
  std::array<std::uint64_t, 2> seed{};
  if (::getrandom(seed.data(), sizeof(seed), 0) != static_cast<ssize_t>(sizeof(seed))) {
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    seed[0] = static_cast<std::uint64_t>(now.tv_sec) * 1'000'000'000u +
              static_cast<std::uint64_t>(now.tv_nsec);
    seed[1] = static_cast<std::uint64_t>(::getpid());
  }
  return seed;
}

const std::array<std::uint64_t, 2> kProcessSeed = DrawProcessSeed();

}  // namespace

std::string NewSnapshotId() {
  // The counter keeps this process's ids apart; the seed keeps them apart from others'.
  static std::atomic<std::uint64_t> counter{0};
  std::array<std::uint64_t, 2> id = kProcessSeed;
  id[1] += counter.fetch_add(1) + 1;
  std::string bytes(kSnapshotIdSize, '\0');
  std::memcpy(bytes.data(), id.data(), kSnapshotIdSize);
  return bytes;
}

std::string SnapshotIdText(const std::string& id) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string text;
  for (char c : id) {
    auto byte = static_cast<unsigned char>(c);
    text += kHex[byte >> 4];
    text += kHex[byte & 0xf];
  }
  return text.empty() ? "(none)" : text;
}

}  // namespace ember::snapshot
