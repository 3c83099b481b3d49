#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "rootfs/image/image_config.h"
#include "rootfs/image/staged_tree.h"

namespace ember::rootfs {

// One image of an OCI image layout (image-spec's index.json -> manifest -> config + layers),
// resolved: its config read, its layers in the order they apply. Every blob is named by
// digest under blobs/ and its bytes are checked against it.
struct OciLayer {
  std::string digest;  // "sha256:<hex>"
  std::string blob;    // relative to the layout, "blobs/sha256/<hex>"
  uint64_t size = 0;
};
struct OciImage {
  ImageConfig config;
  std::vector<OciLayer> layers;
};

// Reads the layout open at `layout_fd` (`display` names it in errors). An index naming
// several images picks the one for linux on this host's architecture; none or several of
// those is InvalidArgument, as are malformed JSON, unknown media types and digests that do
// not match. Blobs are opened beneath the layout, never through a symlink.
[[nodiscard]] absl::StatusOr<OciImage> ReadOciLayout(int layout_fd, const std::string& display);

// Stages `image`'s layers in order into `tree`, each checked against its digest.
[[nodiscard]] absl::Status ApplyOciLayers(int layout_fd, const OciImage& image, StagedTree* tree);

}  // namespace ember::rootfs
