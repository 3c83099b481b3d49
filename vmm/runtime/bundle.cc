#include "vmm/runtime/bundle.h"

#include <google/protobuf/util/json_util.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <array>
#include <cerrno>
#include <fstream>
#include <set>
#include <sstream>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "vmm/base/status.h"
#include "vmm/runtime/bind_source.h"
#include "vmm/runtime/oci_spec.pb.h"

namespace ember::runtime {
namespace {

namespace fs = std::filesystem;

// config.json is the caller's file, but a bundle is never megabytes: bound the read so a
// wrong path (a device, a huge file) fails fast.
constexpr std::uintmax_t kMaxSpecBytes = 4 << 20;

struct RlimitName {
  const char* name;
  int resource;
};
// Linux's resource limits as the runtime spec names them (config.md, "POSIX process").
constexpr std::array<RlimitName, 16> kRlimits = {{
    {"RLIMIT_AS", RLIMIT_AS},
    {"RLIMIT_CORE", RLIMIT_CORE},
    {"RLIMIT_CPU", RLIMIT_CPU},
    {"RLIMIT_DATA", RLIMIT_DATA},
    {"RLIMIT_FSIZE", RLIMIT_FSIZE},
    {"RLIMIT_LOCKS", RLIMIT_LOCKS},
    {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK},
    {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE},
    {"RLIMIT_NICE", RLIMIT_NICE},
    {"RLIMIT_NOFILE", RLIMIT_NOFILE},
    {"RLIMIT_NPROC", RLIMIT_NPROC},
    {"RLIMIT_RSS", RLIMIT_RSS},
    {"RLIMIT_RTPRIO", RLIMIT_RTPRIO},
    {"RLIMIT_RTTIME", RLIMIT_RTTIME},
    {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING},
    {"RLIMIT_STACK", RLIMIT_STACK},
}};

constexpr std::array<const char*, 4> kKnownAnnotations = {kAnnotationKernel, kAnnotationBootArgs,
                                                          kAnnotationVcpus, kAnnotationMemory};
constexpr absl::string_view kEmberAnnotationPrefix = "io.ember.";

// Every error of one file carries the same prefix: which file, then the field.
class FieldErrors {
 public:
  explicit FieldErrors(std::string file) : file_(std::move(file)) {}
  absl::Status Invalid(absl::string_view field, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(file_, ": ", field, ": ", what));
  }
  const std::string& file() const { return file_; }

 private:
  std::string file_;
};

absl::StatusOr<std::string> ReadSmallFile(const fs::path& path, absl::string_view what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT)
      return absl::NotFoundError(absl::StrCat("no ", what, " at ", path.string()));
    return base::ErrnoError("stat", path.string());
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", path.string(), ": not a regular file"));
  }
  if (static_cast<std::uintmax_t>(st.st_size) > kMaxSpecBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", path.string(), ": larger than ", kMaxSpecBytes, " bytes"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return base::ErrnoError("open", path.string());
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) return base::ErrnoError("read", path.string());
  return text.str();
}

// Protobuf's parser reports "invalid JSON in ember.runtime.oci.Spec @ process.args[0]: ..."
// over several lines; users wrote the JSON, so keep the location and the reason, on one line.
std::string JsonErrorText(absl::string_view message) {
  std::string text = absl::StrReplaceAll(message, {{"\n", " "}, {" ^", ""}});
  return std::string(absl::StripAsciiWhitespace(text));
}

template <typename Message>
absl::Status ParseJson(const std::string& json, Message* message, const FieldErrors& errors) {
  google::protobuf::util::JsonParseOptions options;
  // config.json holds much that a VM has no use for (mounts, hooks, seccomp, ...), and
  // newer spec versions add fields: only what oci_spec.proto declares is read.
  options.ignore_unknown_fields = true;
  auto status = google::protobuf::util::JsonStringToMessage(json, message, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        errors.file(), ": does not parse: ", JsonErrorText(std::string(status.message()))));
  }
  return absl::OkStatus();
}

absl::StatusOr<BundleRlimit> CheckRlimit(const oci::Rlimit& limit, const std::string& field,
                                         const FieldErrors& errors) {
  for (const RlimitName& known : kRlimits) {
    if (limit.type() != known.name) continue;
    if (limit.soft() > limit.hard()) {
      return errors.Invalid(field, absl::StrCat("soft limit ", limit.soft(),
                                                " is above the hard limit ", limit.hard()));
    }
    return BundleRlimit{known.name, known.resource, limit.soft(), limit.hard()};
  }
  if (limit.type().empty()) return errors.Invalid(field + ".type", "missing");
  return errors.Invalid(field + ".type",
                        absl::StrCat("unknown resource limit \"", limit.type(), "\""));
}

absl::StatusOr<BundleProcess> CheckProcess(const oci::Process& in, absl::string_view prefix,
                                           const FieldErrors& errors) {
  auto field = [&](absl::string_view name) { return absl::StrCat(prefix, name); };
  BundleProcess out;
  if (in.args_size() == 0) return errors.Invalid(field("args"), "empty");
  if (in.args(0).empty()) return errors.Invalid(field("args[0]"), "empty program name");
  out.args.assign(in.args().begin(), in.args().end());
  for (int i = 0; i < in.env_size(); ++i) {
    // The agent hands env to execve as is: an entry without '=' is not a variable.
    if (in.env(i).find('=') == std::string::npos || in.env(i).front() == '=') {
      return errors.Invalid(field(absl::StrCat("env[", i, "]")),
                            absl::StrCat("\"", in.env(i), "\" is not NAME=value"));
    }
  }
  out.env.assign(in.env().begin(), in.env().end());
  if (in.cwd().empty()) return errors.Invalid(field("cwd"), "missing");
  if (in.cwd().front() != '/') {
    return errors.Invalid(field("cwd"), absl::StrCat("\"", in.cwd(), "\" is not absolute"));
  }
  out.cwd = in.cwd();
  out.uid = in.user().uid();
  out.gid = in.user().gid();
  out.additional_gids.assign(in.user().additional_gids().begin(),
                             in.user().additional_gids().end());
  out.terminal = in.terminal();
  out.console_height = in.console_size().height();
  out.console_width = in.console_size().width();
  out.no_new_privileges = in.no_new_privileges();
  if (in.has_capabilities()) {
    const oci::Capabilities& caps = in.capabilities();
    out.capabilities = BundleCapabilities{
        {caps.bounding().begin(), caps.bounding().end()},
        {caps.effective().begin(), caps.effective().end()},
        {caps.inheritable().begin(), caps.inheritable().end()},
        {caps.permitted().begin(), caps.permitted().end()},
        {caps.ambient().begin(), caps.ambient().end()}};
  }
  std::set<std::string> seen;
  for (int i = 0; i < in.rlimits_size(); ++i) {
    std::string name = field(absl::StrCat("rlimits[", i, "]"));
    EMBER_ASSIGN_OR_RETURN(BundleRlimit limit, CheckRlimit(in.rlimits(i), name, errors));
    // The spec: "a runtime MUST generate an error for any duplicated type".
    if (!seen.insert(limit.name).second) {
      return errors.Invalid(name + ".type", absl::StrCat(limit.name, " given twice"));
    }
    out.rlimits.push_back(std::move(limit));
  }
  return out;
}

absl::StatusOr<uint32_t> CountCpuset(const std::string& cpus, const FieldErrors& errors) {
  constexpr absl::string_view kField = "linux.resources.cpu.cpus";
  uint64_t count = 0;
  for (absl::string_view part : absl::StrSplit(cpus, ',')) {
    std::vector<absl::string_view> range = absl::StrSplit(part, '-');
    uint32_t first = 0;
    uint32_t last = 0;
    bool ok = absl::SimpleAtoi(range[0], &first);
    if (range.size() == 1) {
      last = first;
    } else {
      ok = ok && range.size() == 2 && absl::SimpleAtoi(range[1], &last) && first <= last;
    }
    if (!ok) return errors.Invalid(kField, absl::StrCat("\"", cpus, "\" is not a CPU list"));
    count += uint64_t{last} - first + 1;
  }
  return static_cast<uint32_t>(std::min<uint64_t>(count, UINT32_MAX));
}

absl::StatusOr<uint32_t> VcpusFrom(const oci::Spec& spec, const FieldErrors& errors) {
  uint64_t vcpus = kDefaultVcpus;
  std::string field;
  const oci::Cpu& cpu = spec.linux().resources().cpu();
  if (auto it = spec.annotations().find(kAnnotationVcpus); it != spec.annotations().end()) {
    field = absl::StrCat("annotations[\"", kAnnotationVcpus, "\"]");
    uint32_t value = 0;
    if (!absl::SimpleAtoi(it->second, &value)) {
      return errors.Invalid(field, absl::StrCat("\"", it->second, "\" is not a number"));
    }
    vcpus = value;
  } else if (cpu.quota() > 0 && cpu.period() > 0) {
    field = "linux.resources.cpu.quota";
    vcpus = (static_cast<uint64_t>(cpu.quota()) + cpu.period() - 1) / cpu.period();
  } else if (!cpu.cpus().empty()) {
    field = "linux.resources.cpu.cpus";
    EMBER_ASSIGN_OR_RETURN(vcpus, CountCpuset(cpu.cpus(), errors));
  }
  if (vcpus < 1 || vcpus > kMaxVcpus) {
    return errors.Invalid(field, absl::StrCat(vcpus, " vCPUs: a VM has 1 to ", kMaxVcpus));
  }
  return static_cast<uint32_t>(vcpus);
}

absl::StatusOr<uint32_t> MemoryFrom(const oci::Spec& spec, const FieldErrors& errors) {
  uint64_t mib = kDefaultMemoryMib;
  std::string field;
  if (auto it = spec.annotations().find(kAnnotationMemory); it != spec.annotations().end()) {
    field = absl::StrCat("annotations[\"", kAnnotationMemory, "\"]");
    auto parsed = ParseMemoryMib(it->second);
    if (!parsed.ok()) return errors.Invalid(field, parsed.status().message());
    mib = *parsed;
  } else if (int64_t limit = spec.linux().resources().memory().limit(); limit > 0) {
    field = "linux.resources.memory.limit";
    constexpr uint64_t kMib = 1 << 20;
    mib = (static_cast<uint64_t>(limit) + kMib - 1) / kMib + kGuestOverheadMib;
  }
  if (mib < kMinMemoryMib || mib > kMaxMemoryMib) {
    return errors.Invalid(field, absl::StrCat(mib, " MiB: a VM has ", kMinMemoryMib, " MiB to ",
                                              kMaxMemoryMib, " MiB"));
  }
  return static_cast<uint32_t>(mib);
}

absl::Status CheckAnnotations(const oci::Spec& spec, Bundle& out, const FieldErrors& errors) {
  for (const auto& [key, value] : spec.annotations()) {
    if (!absl::StartsWith(key, kEmberAnnotationPrefix)) continue;
    bool known = false;
    for (const char* name : kKnownAnnotations) known = known || key == name;
    if (!known) {
      return errors.Invalid(
          absl::StrCat("annotations[\"", key, "\"]"),
          absl::StrCat("unknown Ember annotation (known: ", kAnnotationKernel, ", ",
                       kAnnotationBootArgs, ", ", kAnnotationVcpus, ", ", kAnnotationMemory, ")"));
    }
  }
  if (auto it = spec.annotations().find(kAnnotationKernel); it != spec.annotations().end()) {
    std::string field = absl::StrCat("annotations[\"", kAnnotationKernel, "\"]");
    if (it->second.empty() || it->second.front() != '/') {
      return errors.Invalid(field, absl::StrCat("\"", it->second, "\" is not an absolute path"));
    }
    std::error_code ec;
    if (!fs::is_regular_file(it->second, ec)) {
      return errors.Invalid(field, absl::StrCat("no kernel file at ", it->second));
    }
    out.kernel = it->second;
  }
  if (auto it = spec.annotations().find(kAnnotationBootArgs); it != spec.annotations().end()) {
    out.boot_args = it->second;
  }
  out.annotations.insert(spec.annotations().begin(), spec.annotations().end());
  return absl::OkStatus();
}

absl::Status CheckNamespaces(const oci::Spec& spec, Bundle& out, const FieldErrors& errors) {
  for (int i = 0; i < spec.linux().namespaces_size(); ++i) {
    const oci::Namespace& ns = spec.linux().namespaces(i);
    if (ns.type() != "network" || ns.path().empty()) continue;
    if (ns.path().front() != '/') {
      return errors.Invalid(absl::StrCat("linux.namespaces[", i, "].path"),
                            absl::StrCat("\"", ns.path(), "\" is not absolute"));
    }
    out.network_namespace = ns.path();
  }
  return absl::OkStatus();
}

absl::Status CheckRoot(const oci::Spec& spec, Bundle& out, const FieldErrors& errors) {
  if (!spec.has_root()) return errors.Invalid("root", "missing");
  if (spec.root().path().empty()) return errors.Invalid("root.path", "missing");
  fs::path root = spec.root().path();
  out.rootfs = root.is_absolute() ? root : out.dir / root;
  struct stat st {};
  if (::stat(out.rootfs.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::NotFoundError(
        absl::StrCat(errors.file(), ": root.path: no directory at ", out.rootfs.string()));
  }
  out.rootfs_readonly = spec.root().readonly();
  return absl::OkStatus();
}

// Where a guest (ember-init) mounts its own kernel file systems: the runtime's mounts of
// those types there are what the guest has already. /dev/shm is the guest's own tmpfs whatever
// the caller binds there (podman and CRI bind a host directory).
bool GuestsOwnMount(const oci::Mount& mount) {
  static const std::set<std::string> kTypes = {"proc",   "sysfs",  "devpts",  "mqueue",
                                               "tmpfs",  "cgroup", "cgroup2", "devtmpfs"};
  static const std::set<std::string> kPlaces = {"/proc",        "/sys", "/dev",
                                                "/dev/pts",     "/dev/shm", "/dev/mqueue",
                                                "/sys/fs/cgroup", "/run", "/tmp"};
  if (mount.destination() == "/dev/shm") return true;
  return kTypes.count(mount.type()) != 0 && kPlaces.count(mount.destination()) != 0;
}

bool HasOption(const oci::Mount& mount, absl::string_view option) {
  for (const std::string& o : mount.options()) {
    if (o == option) return true;
  }
  return false;
}

absl::Status CheckMounts(const oci::Spec& spec, Bundle& out, const FieldErrors& errors) {
  std::size_t budget = kMaxCopiedBytes;
  for (int i = 0; i < spec.mounts_size(); ++i) {
    const oci::Mount& mount = spec.mounts(i);
    const std::string field = absl::StrCat("mounts[", i, "]");
    if (mount.destination().empty() || mount.destination().front() != '/') {
      return errors.Invalid(field + ".destination",
                            absl::StrCat("\"", mount.destination(), "\" is not absolute"));
    }
    if (GuestsOwnMount(mount)) continue;
    const bool bind = mount.type() == "bind" || HasOption(mount, "bind") || HasOption(mount, "rbind");
    if (!bind) {
      return errors.Invalid(field, absl::StrCat("a ", mount.type(), " mount at ",
                                                mount.destination(),
                                                " cannot be given to a VM (only bind mounts and "
                                                "the kernel file systems a guest has are)"));
    }
    absl::StatusOr<BindSource> source = BindSource::Open(mount.source());
    if (!source.ok()) return errors.Invalid(field + ".source", source.status().message());
    if (!source->is_directory()) {
      absl::StatusOr<CopiedFile> file = source->ReadFile(&budget);
      if (!file.ok()) return errors.Invalid(field, file.status().message());
      out.files.push_back({mount.destination(), std::move(file->contents), file->mode});
      continue;
    }
    if (!HasOption(mount, "ro")) {
      return errors.Invalid(field, absl::StrCat(
                                       "a writable directory (", mount.source(), " at ",
                                       mount.destination(),
                                       ") cannot be shared with a VM: only files and read-only "
                                       "directories are copied in"));
    }
    // Read-only directories (Kubernetes' secrets, config maps, service account tokens): their
    // regular files, through links that stay inside (config maps link through ..data).
    absl::StatusOr<std::vector<CopiedFile>> files = source->ReadTree(&budget);
    if (!files.ok()) return errors.Invalid(field, files.status().message());
    for (CopiedFile& file : *files) {
      out.files.push_back(
          {mount.destination() + "/" + file.relative, std::move(file.contents), file.mode});
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<uint64_t> ParseMemoryMib(const std::string& quantity) {
  struct Unit {
    absl::string_view suffix;
    uint64_t bytes;
  };
  constexpr uint64_t kKi = 1024;
  constexpr std::array<Unit, 8> kUnits = {{{"Ki", kKi},
                                           {"Mi", kKi * kKi},
                                           {"Gi", kKi * kKi * kKi},
                                           {"Ti", kKi * kKi * kKi * kKi},
                                           {"k", 1000},
                                           {"M", 1000 * 1000},
                                           {"G", 1000 * 1000 * 1000},
                                           {"T", uint64_t{1000} * 1000 * 1000 * 1000}}};
  size_t digits = 0;
  while (digits < quantity.size() &&
         absl::ascii_isdigit(static_cast<unsigned char>(quantity[digits]))) {
    ++digits;
  }
  uint64_t number = 0;
  if (digits == 0 || !absl::SimpleAtoi(absl::string_view(quantity).substr(0, digits), &number)) {
    return absl::InvalidArgumentError(absl::StrCat("\"", quantity, "\" is not a memory size"));
  }
  absl::string_view suffix = absl::string_view(quantity).substr(digits);
  uint64_t unit = 1;
  if (!suffix.empty()) {
    bool found = false;
    for (const Unit& u : kUnits) {
      if (suffix == u.suffix) {
        unit = u.bytes;
        found = true;
      }
    }
    if (!found) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown memory unit \"", suffix, "\" in \"", quantity,
                       "\" (units: k M G T, Ki Mi Gi Ti, or none for bytes)"));
    }
  }
  if (number > UINT64_MAX / unit) {
    return absl::InvalidArgumentError(absl::StrCat("\"", quantity, "\" is too large"));
  }
  constexpr uint64_t kMib = kKi * kKi;
  uint64_t bytes = number * unit;
  return bytes / kMib + (bytes % kMib != 0 ? 1 : 0);
}

absl::StatusOr<Bundle> LoadBundle(const fs::path& bundle_dir) {
  Bundle out;
  std::error_code ec;
  out.dir = fs::absolute(bundle_dir, ec);
  if (ec)
    return absl::InvalidArgumentError(
        absl::StrCat("bundle ", bundle_dir.string(), ": ", ec.message()));
  fs::path config = out.dir / "config.json";
  FieldErrors errors(absl::StrCat("config.json ", config.string()));
  EMBER_ASSIGN_OR_RETURN(std::string json, ReadSmallFile(config, "config.json"));
  oci::Spec spec;
  EMBER_RETURN_IF_ERROR(ParseJson(json, &spec, errors));
  if (spec.oci_version().empty()) return errors.Invalid("ociVersion", "missing");
  if (!spec.oci_version().starts_with("1.")) {
    return errors.Invalid("ociVersion", absl::StrCat("\"", spec.oci_version(),
                                                     "\": only runtime-spec 1.x is understood"));
  }
  if (!spec.has_process()) return errors.Invalid("process", "missing");
  EMBER_ASSIGN_OR_RETURN(out.process, CheckProcess(spec.process(), "process.", errors));
  EMBER_RETURN_IF_ERROR(CheckRoot(spec, out, errors));
  out.hostname = spec.hostname();
  EMBER_RETURN_IF_ERROR(CheckAnnotations(spec, out, errors));
  EMBER_ASSIGN_OR_RETURN(out.vcpus, VcpusFrom(spec, errors));
  EMBER_ASSIGN_OR_RETURN(out.memory_mib, MemoryFrom(spec, errors));
  EMBER_RETURN_IF_ERROR(CheckNamespaces(spec, out, errors));
  EMBER_RETURN_IF_ERROR(CheckMounts(spec, out, errors));
  return out;
}

absl::StatusOr<BundleProcess> LoadProcess(const fs::path& process_json) {
  FieldErrors errors(absl::StrCat("process ", process_json.string()));
  EMBER_ASSIGN_OR_RETURN(std::string json, ReadSmallFile(process_json, "process file"));
  oci::Process process;
  EMBER_RETURN_IF_ERROR(ParseJson(json, &process, errors));
  return CheckProcess(process, "", errors);
}

}  // namespace ember::runtime
