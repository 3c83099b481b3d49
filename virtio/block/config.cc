#include "virtio/block/config.h"

#include <sys/stat.h>

#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "vmm/base/status.h"

namespace ember::virtio::block {
namespace {

absl::StatusOr<bool> ParseOnOff(const std::string& key, const std::string& value) {
  if (value == "on" || value == "true" || value == "1") return true;
  if (value == "off" || value == "false" || value == "0") return false;
  return absl::InvalidArgumentError(absl::StrCat("drive option ", key, "=", value,
                                                 ": expected on or off"));
}

}  // namespace

absl::StatusOr<BlockConfig> ParseDriveToken(const std::string& token) {
  BlockConfig config;
  std::map<std::string, std::uint64_t*> numbers = {
      {"bw_size", &config.rate_limiter.bandwidth.size},
      {"bw_burst", &config.rate_limiter.bandwidth.one_time_burst},
      {"bw_refill_ms", &config.rate_limiter.bandwidth.refill_time_ms},
      {"ops_size", &config.rate_limiter.ops.size},
      {"ops_burst", &config.rate_limiter.ops.one_time_burst},
      {"ops_refill_ms", &config.rate_limiter.ops.refill_time_ms},
  };
  for (absl::string_view item : absl::StrSplit(token, ',', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(item, absl::MaxSplits('=', 1));
    const std::string& key = kv.first;
    const std::string& value = kv.second;
    if (key == "id") {
      config.drive_id = value;
    } else if (key == "path") {
      config.path = value;
    } else if (key == "ro") {
      EMBER_ASSIGN_OR_RETURN(config.read_only, ParseOnOff(key, value));
    } else if (key == "direct") {
      EMBER_ASSIGN_OR_RETURN(config.direct_io, ParseOnOff(key, value));
    } else if (key == "engine" && (value == "io_uring" || value == "sync")) {
      config.engine = value == "sync" ? EngineKind::kSync : EngineKind::kIoUring;
    } else if (key == "cache" && (value == "unsafe" || value == "writeback")) {
      config.cache = value == "writeback" ? CacheMode::kWriteback : CacheMode::kUnsafe;
    } else if (auto it = numbers.find(key); it != numbers.end()) {
      if (!absl::SimpleAtoi(value, it->second)) {
        return absl::InvalidArgumentError(
            absl::StrCat("drive option ", key, "=", value, ": expected a number"));
      }
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("drive option ", key, "=", value, " is not understood in \"", token,
                       "\""));
    }
  }
  if (config.drive_id.empty() || config.path.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("drive \"", token, "\" needs both id= and path="));
  }
  return config;
}

absl::Status CheckDrivesShareNoWritableFile(const std::vector<BlockConfig>& drives) {
  struct Seen {
    const BlockConfig* drive;
    dev_t dev;
    ino_t ino;
  };
  std::vector<Seen> seen;
  for (const BlockConfig& drive : drives) {
    struct stat st {};
    if (::stat(drive.path.c_str(), &st) != 0) {
      return base::ErrnoError("stat", absl::StrCat("drive ", drive.drive_id, " (", drive.path, ")"));
    }
    for (const Seen& other : seen) {
      if (other.dev == st.st_dev && other.ino == st.st_ino &&
          (!drive.read_only || !other.drive->read_only)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "drives ", other.drive->drive_id, " and ", drive.drive_id,
            " use the same file and at least one is writable"));
      }
    }
    seen.push_back({&drive, st.st_dev, st.st_ino});
  }
  return absl::OkStatus();
}

}  // namespace ember::virtio::block
