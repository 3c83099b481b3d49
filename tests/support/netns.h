#pragma once

#include <string>

namespace ember::testing {

// Moves the calling process, on its first call, into a network namespace of its own, so that
// the taps a test makes there vanish with the process and never touch the host's interfaces
// (children, such as ember-vmm, inherit it). Returns "" once inside, or why it could not get
// there (not root; unshare failed), for the test to skip with. Call before starting threads.
[[nodiscard]] std::string EnterPrivateNetns();

}  // namespace ember::testing
