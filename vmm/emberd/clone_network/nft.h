#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace ember::emberd {

// Runs nftables commands (`nft -f` syntax, one batch: all or nothing) in the calling thread's
// network namespace through libnftables, Debian's library behind the `nft` tool: the NAT
// rules of a clone's egress are a handful of nf_tables expressions whose netlink encoding is
// far larger than the text, and the library's parser checks them exactly as `nft` would.
// Returns what the commands print (a `list`'s output). Any thread; calls are serialised
// (libnftables keeps process-wide state).
[[nodiscard]] absl::StatusOr<std::string> RunNft(const std::string& commands);

}  // namespace ember::emberd
