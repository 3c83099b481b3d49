#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace ember::rootfs {

// What the image is built from; kAuto decides from what SOURCE is.
enum class SourceKind { kAuto, kDirectory, kExport, kOci };

// ember-rootfs's command line.
struct Options {
  std::string source;
  std::string output;
  SourceKind kind = SourceKind::kAuto;
  std::optional<uint64_t> size_bytes;
  std::optional<uint64_t> max_bytes;  // none: no limit
  std::string init;      // empty: ember-init beside ember-rootfs
  std::string agent;     // empty: ember-agent beside ember-rootfs
  std::string work_dir;  // empty: beside the image
  bool help = false;
};

inline constexpr const char* kUsage =
    "usage: ember-rootfs [options] SOURCE IMAGE\n"
    "Builds a sparse ext4 root image for an Ember guest at IMAGE, without root or loop mounts.\n"
    "SOURCE is a directory, a container export tarball (podman/docker export; plain or gzip),\n"
    "an OCI image layout directory or an OCI archive (podman save --format oci-archive).\n"
    "  --size SIZE     image size in bytes, or with a K, M or G suffix (default: the content\n"
    "                  plus headroom)\n"
    "  --init PATH     ember-init, installed as /sbin/ember-init (default: beside ember-rootfs)\n"
    "  --agent PATH    ember-agent, installed as /sbin/ember-agent (default: beside ember-rootfs)\n"
    "  --format KIND   dir, export or oci, instead of deciding from SOURCE\n"
    "  --work-dir DIR  where archives are unpacked while the image is built (default: beside\n"
    "                  IMAGE); a tmpfs stages many small files far faster than a disk\n"
    "  --max-bytes SIZE  refuse a source whose files take more than SIZE (bytes, or with a K,\n"
    "                  M or G suffix): an archive is refused as it expands past it (file sizes\n"
    "                  as declared, and 512 bytes per entry), a directory by its blocks in use.\n"
    "                  Default: no limit. Refused, nothing is left behind (exit 2)\n"
    "The image's entrypoint, cmd, env, working directory and user (from an OCI image's config)\n"
    "are written to /etc/ember/image-config.pb (agent.proto's ImageConfig) for ember-agent.\n"
    "Exit status: 0 done, 2 bad input (nothing written), 1 other failures.\n";

// Parses argv; a malformed command line is InvalidArgument.
[[nodiscard]] absl::StatusOr<Options> ParseOptions(int argc, char** argv);

// "64M" -> 67108864; InvalidArgument naming `flag` for anything else than digits and one
// K/M/G suffix.
[[nodiscard]] absl::StatusOr<uint64_t> ParseSize(const std::string& text,
                                                 const std::string& flag = "--size");

}  // namespace ember::rootfs
