#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "absl/status/statusor.h"

namespace ember::runtime {

// A container's hold on a guest root image. `id` is what Release takes: the runtime keeps it
// in the container's state. It is the lease's directory (CACHE/leases/KEY/TOKEN), so Release
// finds the cache from it whatever cache directory the releasing process was configured with
// (podman runs `delete` without the --runtime-flag options it gave `create`).
struct ImageLease {
  std::string id;
  // The ext4 image the VM's root drive opens. For a read-only lease it is the cache's shared
  // image, which the VM must attach read-only; a writable lease gets a copy of its own
  // (a reflink where the file system has them, else a sparse copy), removed by Release.
  std::filesystem::path image;
  bool writable = false;
};

// Guest root images built by ember-rootfs from containers' root directories, kept on disk and
// shared between containers of the same image, so that only the first container of an image
// pays for the build.
//
// The content key is cheap, not a hash of every file (docs/ember-runtime.md, "Image cache"),
// but the cache is shared by every container on the host, so it rests on what no image author
// can set: paths, modes, owners, sizes and times come from tar headers, and a look-alike of
// another image with same-size trojaned files matches them all.
// - a root that is an overlayfs mount with absolute layer paths (containerd's overlayfs
//   snapshotter, podman's overlay driver) is keyed by its lower layers (path, device, inode,
//   change time of each layer directory: overlayfs forbids changing a lower layer while it is
//   mounted, and the snapshotters never change a committed one) plus a stat fingerprint of its
//   upper directory, which is empty or nearly so when a container is created (the identity,
//   as below, of its non-empty files only: the snapshotter's mount-point directories there are
//   new in every container);
// - any other directory by a stat fingerprint of the whole tree: each entry's relative path,
//   type, mode, owner, size, modification time and symlink target, and the device, inode and
//   change time (set by the kernel on every write, chmod, chown, xattr change or utimes) of the
//   root and of every entry but empty files (runtimes create them as mount points; their times
//   are left out too), without reading any file. A copy of a tree, or an overlay root with
//   relative layer paths (its device is the mount's), is another key.
// The ember-rootfs, ember-init and ember-agent binaries (size, time) are in every key, so a
// rebuilt guest program never meets an image made with the old one.
//
// On disk, under `dir`: images/KEY.ext4 (the built image), locks/KEY (flock(2): held
// exclusively while one process checks, builds, leases or evicts KEY, so two creates of one
// image build it once and eviction never removes a leased one), leases/KEY/TOKEN/ (one per
// lease: `holder` and, for a writable lease, root.ext4).
//
// Each call is independent and takes the locks it needs; any number of processes may use one
// cache directory at once. Not for concurrent use from several threads of one process
// (flock is per open file, so that works too, but nothing here needs it).
class ImageCache {
 public:
  struct Options {
    std::filesystem::path dir;           // created if missing (0700)
    std::filesystem::path ember_rootfs;  // empty: ember-rootfs beside the running program
    std::filesystem::path work_dir;      // ember-rootfs --work-dir; empty: its default
  };

  // Creates the directory layout. InvalidArgument for an empty dir; errno errors otherwise.
  [[nodiscard]] static absl::StatusOr<ImageCache> Open(Options options);

  // Leases the image of `rootfs_dir`, building it first when the cache lacks it. `holder` is a
  // path that exists as long as the lease is needed (the container's state directory):
  // EvictUnused treats a lease whose holder is gone as released, so a create that crashed
  // before it recorded the lease pins nothing for ever; empty: never stale. NotFound for a
  // missing rootfs_dir; ember-rootfs's refusal (a device node in the tree, ...) is
  // InvalidArgument with its message.
  [[nodiscard]] absl::StatusOr<ImageLease> Acquire(const std::filesystem::path& rootfs_dir,
                                                   bool writable,
                                                   const std::filesystem::path& holder = {});

  // Ends a lease, in the cache its id names (which may be another directory than this
  // cache's): removes its directory (and a writable lease's copy). An id already released is
  // OK, so `delete` can be retried; anything not shaped as a lease's path is InvalidArgument.
  [[nodiscard]] absl::Status Release(const std::string& lease_id);

  // Removes the images no live lease holds (and stale leases, see Acquire), except the `keep`
  // most recently leased or released of them. Returns the bytes of images removed (allocated
  // blocks). Images being built or leased are untouched. Acquire runs it after each build with
  // kKeptUnusedImages, so a cache nobody trims stays bounded.
  [[nodiscard]] absl::StatusOr<uint64_t> EvictUnused(size_t keep = 0);

  // How many unleased images a build leaves in the cache (the next containers of recently
  // run images start without a build).
  static constexpr size_t kKeptUnusedImages = 8;

  // The key Acquire would use for `rootfs_dir` (hex SHA-256). For tests and diagnostics.
  [[nodiscard]] absl::StatusOr<std::string> ContentKey(
      const std::filesystem::path& rootfs_dir) const;

  [[nodiscard]] const std::filesystem::path& dir() const { return options_.dir; }

 private:
  explicit ImageCache(Options options) : options_(std::move(options)) {}
  // Makes a lease on the built image of `key`; the caller holds the key's lock.
  [[nodiscard]] absl::StatusOr<ImageLease> LeaseLocked(const std::string& key,
                                                       const std::filesystem::path& image,
                                                       bool writable,
                                                       const std::filesystem::path& holder);

  Options options_;
};

}  // namespace ember::runtime
