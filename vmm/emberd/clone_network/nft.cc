#include "vmm/emberd/clone_network/nft.h"

#include <nftables/libnftables.h>

#include <memory>
#include <mutex>

namespace ember::emberd {

absl::StatusOr<std::string> RunNft(const std::string& commands) {
  static std::mutex mu;
  std::lock_guard lock(mu);
  // A context per call: its netlink socket is opened in the namespace the thread is in now.
  std::unique_ptr<nft_ctx, decltype(&nft_ctx_free)> ctx(nft_ctx_new(NFT_CTX_DEFAULT),
                                                        &nft_ctx_free);
  if (ctx == nullptr) return absl::InternalError("nft_ctx_new failed");
  if (nft_ctx_buffer_output(ctx.get()) != 0 || nft_ctx_buffer_error(ctx.get()) != 0) {
    return absl::InternalError("nftables: cannot buffer output");
  }
  if (nft_run_cmd_from_buffer(ctx.get(), commands.c_str()) != 0) {
    std::string error = nft_ctx_get_error_buffer(ctx.get());
    while (!error.empty() && error.back() == '\n') error.pop_back();
    return absl::InternalError("nftables refused \"" + commands + "\": " + error);
  }
  return std::string(nft_ctx_get_output_buffer(ctx.get()));
}

}  // namespace ember::emberd
