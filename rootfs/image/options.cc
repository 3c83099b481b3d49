#include "rootfs/image/options.h"

#include <charconv>
#include <vector>

namespace ember::rootfs {

absl::StatusOr<uint64_t> ParseSize(const std::string& text, const std::string& flag) {
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  std::string suffix(end, text.data() + text.size());
  uint64_t unit = 1;
  if (suffix == "K" || suffix == "k") unit = 1ULL << 10;
  if (suffix == "M" || suffix == "m") unit = 1ULL << 20;
  if (suffix == "G" || suffix == "g") unit = 1ULL << 30;
  if (ec != std::errc() || (unit == 1 && !suffix.empty()) || value == 0 ||
      value > (1ULL << 50) / unit) {
    return absl::InvalidArgumentError(flag + " \"" + text +
                                      "\" is not a size (bytes, or a number with K, M or G)");
  }
  return value * unit;
}

absl::StatusOr<Options> ParseOptions(int argc, char** argv) {
  Options options;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> absl::StatusOr<std::string> {
      if (i + 1 >= argc) return absl::InvalidArgumentError(arg + " needs a value");
      return std::string(argv[++i]);
    };
    if (arg == "-h" || arg == "--help") {
      options.help = true;
      return options;
    }
    if (arg == "--size" || arg == "--init" || arg == "--agent" || arg == "--format" ||
        arg == "--work-dir" || arg == "--max-bytes") {
      absl::StatusOr<std::string> text = value();
      if (!text.ok()) return text.status();
      if (arg == "--init") options.init = *text;
      if (arg == "--agent") options.agent = *text;
      if (arg == "--work-dir") options.work_dir = *text;
      if (arg == "--size" || arg == "--max-bytes") {
        absl::StatusOr<uint64_t> size = ParseSize(*text, arg);
        if (!size.ok()) return size.status();
        (arg == "--size" ? options.size_bytes : options.max_bytes) = *size;
      }
      if (arg == "--format") {
        if (*text == "dir") {
          options.kind = SourceKind::kDirectory;
        } else if (*text == "export") {
          options.kind = SourceKind::kExport;
        } else if (*text == "oci") {
          options.kind = SourceKind::kOci;
        } else {
          return absl::InvalidArgumentError("--format \"" + *text +
                                            "\" is not one of dir, export, oci");
        }
      }
      continue;
    }
    if (arg.size() > 1 && arg[0] == '-') {
      return absl::InvalidArgumentError("unknown option " + arg + " (see --help)");
    }
    positional.push_back(arg);
  }
  if (positional.size() != 2) {
    return absl::InvalidArgumentError("expected SOURCE and IMAGE (see --help)");
  }
  options.source = positional[0];
  options.output = positional[1];
  // These paths go into debugfs command lines, which end at a newline.
  for (const std::string* path :
       {&options.output, &options.init, &options.agent, &options.work_dir}) {
    if (path->find('\n') != std::string::npos) {
      return absl::InvalidArgumentError("a path with a newline: \"" + *path + "\"");
    }
  }
  return options;
}

}  // namespace ember::rootfs
