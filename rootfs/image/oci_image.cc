#include "rootfs/image/oci_image.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <list>
#include <nlohmann/json.hpp>

#include "rootfs/image/layer_reader.h"
#include "rootfs/image/sha256.h"
#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"

namespace ember::rootfs {
namespace {

using Json = nlohmann::json;

// Index, manifest and config blobs are small; a bigger one is not what it claims to be.
constexpr uint64_t kMaxJsonBlob = 16 * 1024 * 1024;
constexpr int kMaxIndexDepth = 4;

constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
constexpr std::string_view kDockerList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
constexpr std::string_view kDockerManifest = "application/vnd.docker.distribution.manifest.v2+json";

// This host's architecture as OCI spells it: the guest runs on it.
#if defined(__x86_64__)
constexpr std::string_view kArchitecture = "amd64";
#elif defined(__aarch64__)
constexpr std::string_view kArchitecture = "arm64";
#else
#error "unknown architecture"
#endif

struct Descriptor {
  std::string media_type;
  std::string digest;
  std::string blob;  // blobs/<algorithm>/<hex>
  std::string hex;
  uint64_t size = 0;
  const Json* json = nullptr;
};

absl::Status Bad(const std::string& display, const std::string& what) {
  return absl::InvalidArgumentError("OCI image " + display + ": " + what);
}

std::string StringField(const Json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

absl::StatusOr<Descriptor> ParseDescriptor(const Json& json, const std::string& display,
                                           const std::string& where) {
  if (!json.is_object()) return Bad(display, where + " is not a descriptor");
  Descriptor d;
  d.json = &json;
  d.media_type = StringField(json, "mediaType");
  d.digest = StringField(json, "digest");
  auto size = json.find("size");
  if (size == json.end() || !size->is_number_unsigned()) {
    return Bad(display, where + " has no size");
  }
  d.size = size->get<uint64_t>();
  // sha256 only: what every tool writes, and a name that cannot leave blobs/.
  constexpr std::string_view kPrefix = "sha256:";
  d.hex = d.digest.rfind(kPrefix, 0) == 0 ? d.digest.substr(kPrefix.size()) : "";
  if (d.hex.size() != 64 || d.hex.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return Bad(display, where + " has digest \"" + d.digest + "\", not sha256:<64 hex digits>");
  }
  d.blob = "blobs/sha256/" + d.hex;
  return d;
}

// The blob `d` names, open, a regular file of the size `d` says.
absl::StatusOr<base::UniqueFd> OpenBlob(int layout_fd, const Descriptor& d,
                                        const std::string& display) {
  open_how how{};
  how.flags = O_RDONLY | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  base::UniqueFd fd(
      static_cast<int>(::syscall(SYS_openat2, layout_fd, d.blob.c_str(), &how, sizeof(how))));
  if (!fd) {
    return Bad(display, "blob " + d.digest + ": " + std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd.Get(), &st) != 0) return base::ErrnoError("fstat", d.blob);
  if (!S_ISREG(st.st_mode)) return Bad(display, "blob " + d.digest + " is not a regular file");
  if (static_cast<uint64_t>(st.st_size) != d.size) {
    return absl::DataLossError("OCI image " + display + ": blob " + d.digest + " holds " +
                               std::to_string(st.st_size) + " bytes, its descriptor says " +
                               std::to_string(d.size));
  }
  return fd;
}

absl::Status DigestMismatch(const std::string& display, const std::string& digest) {
  return absl::DataLossError("OCI image " + display + ": blob " + digest +
                             " does not match its digest");
}

// A JSON blob (index, manifest, config): read whole, checked against its digest, parsed.
absl::StatusOr<Json> ReadJsonBlob(int layout_fd, const Descriptor& d, const std::string& display) {
  if (d.size > kMaxJsonBlob) return Bad(display, "blob " + d.digest + " is too big for JSON");
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd fd, OpenBlob(layout_fd, d, display));
  std::string bytes(d.size, '\0');
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::read(fd.Get(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return base::ErrnoError("read", d.blob);
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  if (done != bytes.size() || Sha256Hex(bytes) != d.hex) return DigestMismatch(display, d.digest);
  Json json = Json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return Bad(display, "blob " + d.digest + " is not a JSON object");
  }
  return json;
}

bool ForThisHost(const Descriptor& d) {
  auto platform = d.json->find("platform");
  if (platform == d.json->end() || !platform->is_object()) return true;
  return StringField(*platform, "os") == "linux" &&
         StringField(*platform, "architecture") == kArchitecture;
}

// The image manifests an index names for this host, nested indexes followed.
absl::Status CollectManifests(int layout_fd, const Json& index, const std::string& display,
                              int depth, std::vector<Descriptor>* found, std::list<Json>* keep) {
  if (depth > kMaxIndexDepth) return Bad(display, "indexes nested too deep");
  auto manifests = index.find("manifests");
  if (manifests == index.end() || !manifests->is_array()) {
    return Bad(display, "an index without a manifests list");
  }
  for (const Json& item : *manifests) {
    EMBER_ASSIGN_OR_RETURN(Descriptor d, ParseDescriptor(item, display, "an index entry"));
    if (!ForThisHost(d)) continue;
    if (d.media_type == kOciIndex || d.media_type == kDockerList) {
      EMBER_ASSIGN_OR_RETURN(Json nested, ReadJsonBlob(layout_fd, d, display));
      keep->push_back(std::move(nested));
      EMBER_RETURN_IF_ERROR(
          CollectManifests(layout_fd, keep->back(), display, depth + 1, found, keep));
      continue;
    }
    if (d.media_type != kOciManifest && d.media_type != kDockerManifest) continue;
    found->push_back(d);
  }
  return absl::OkStatus();
}

bool IsLayerType(const std::string& media_type) {
  for (std::string_view accepted :
       {"application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip"}) {
    if (media_type == accepted) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<OciImage> ReadOciLayout(int layout_fd, const std::string& display) {
  // index.json is the one file not named by a digest: read it as a blob of its own size.
  struct stat st {};
  if (::fstatat(layout_fd, "index.json", &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) {
    return Bad(display, "no index.json");
  }
  base::UniqueFd index_fd(::openat(layout_fd, "index.json", O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!index_fd) return base::ErrnoError("open", display + "/index.json");
  if (static_cast<uint64_t>(st.st_size) > kMaxJsonBlob) return Bad(display, "index.json too big");
  std::string text(static_cast<size_t>(st.st_size), '\0');
  if (::read(index_fd.Get(), text.data(), text.size()) != st.st_size) {
    return base::ErrnoError("read", display + "/index.json");
  }
  Json index = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (index.is_discarded() || !index.is_object()) {
    return Bad(display, "index.json is not a JSON object");
  }

  std::vector<Descriptor> manifests;
  std::list<Json> nested;  // the nested indexes, kept while descriptors point into them
  EMBER_RETURN_IF_ERROR(CollectManifests(layout_fd, index, display, 0, &manifests, &nested));
  if (manifests.empty()) {
    return Bad(display, "no image for linux/" + std::string(kArchitecture) + " in its index");
  }
  if (manifests.size() > 1) {
    return Bad(display, "its index names " + std::to_string(manifests.size()) +
                            " images for linux/" + std::string(kArchitecture) +
                            "; save one image per archive");
  }
  EMBER_ASSIGN_OR_RETURN(Json manifest, ReadJsonBlob(layout_fd, manifests[0], display));

  auto config = manifest.find("config");
  if (config == manifest.end()) return Bad(display, "a manifest without a config");
  EMBER_ASSIGN_OR_RETURN(Descriptor config_d, ParseDescriptor(*config, display, "the config"));
  EMBER_ASSIGN_OR_RETURN(Json config_json, ReadJsonBlob(layout_fd, config_d, display));
  OciImage image;
  absl::StatusOr<ImageConfig> parsed = ParseOciImageConfig(config_json.dump());
  if (!parsed.ok()) return Bad(display, std::string(parsed.status().message()));
  image.config = std::move(*parsed);

  auto layers = manifest.find("layers");
  if (layers == manifest.end() || !layers->is_array()) {
    return Bad(display, "a manifest without a layers list");
  }
  for (const Json& item : *layers) {
    EMBER_ASSIGN_OR_RETURN(Descriptor d, ParseDescriptor(item, display, "a layer"));
    if (!IsLayerType(d.media_type)) {
      return Bad(display, "layer " + d.digest + " has media type \"" + d.media_type +
                              "\", not a tar layer ember-rootfs reads");
    }
    image.layers.push_back(OciLayer{d.digest, d.blob, d.size});
  }
  return image;
}

absl::Status ApplyOciLayers(int layout_fd, const OciImage& image, StagedTree* tree) {
  for (size_t i = 0; i < image.layers.size(); ++i) {
    const OciLayer& layer = image.layers[i];
    std::string display = "layer " + std::to_string(i + 1) + " (" + layer.digest + ")";
    Descriptor d;
    d.digest = layer.digest;
    d.blob = layer.blob;
    d.size = layer.size;
    EMBER_ASSIGN_OR_RETURN(base::UniqueFd fd, OpenBlob(layout_fd, d, display));
    std::string sha256;
    EMBER_RETURN_IF_ERROR(ApplyLayer(fd.Get(), display, tree, &sha256));
    if ("sha256:" + sha256 != layer.digest) return DigestMismatch(display, layer.digest);
  }
  return absl::OkStatus();
}

}  // namespace ember::rootfs
