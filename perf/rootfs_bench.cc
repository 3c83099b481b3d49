// Measures ember-rootfs building a guest root image from a 64 MiB tree (rootfs_build_s: the
// whole process, from a directory, and rootfs_build_export_s: from a tar export of the same
// tree, staged without root, owners set by debugfs) next to `mke2fs -d` alone on the same tree
// into an image of the same size (mke2fs_d_s), runs interleaved, each figure the median. What
// ember-rootfs adds to mke2fs -d reads off the ratios. Prints figures only; never asserts a
// timing.
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "perf/bench_options.h"
#include "perf/bench_report.h"

extern char** environ;

namespace ember::perf {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kUsage[] =
    "usage: ember-rootfs-bench --rootfs PATH --work-dir DIR [--init PATH] [--agent PATH]\n"
    "                          [--runs N] [--verbose]\n"
    "\n"
    "  --rootfs PATH    the ember-rootfs binary\n"
    "  --work-dir DIR   a directory of the harness's own for the tree and images\n"
    "  --init PATH      ember-init to install (default: the ember-rootfs binary as stand-in)\n"
    "  --agent PATH     ember-agent to install (default: the same stand-in)\n"
    "  --runs N         samples per figure (default 5); each figure is the median\n"
    "  --verbose        print every sample to stderr\n";

// The tree: 1024 small files of 1-16 KiB in 16 directories, 56 files of 1 MiB and 64
// symlinks: about 64 MiB, shaped like a small distribution's root.
constexpr int kDirectories = 16;
constexpr int kSmallPerDirectory = 64;
constexpr int kLargeFiles = 56;
constexpr int kSymlinks = 64;

[[noreturn]] void Fail(const std::string& message) { Die("ember-rootfs-bench", message); }

struct Options {
  std::string rootfs;
  std::string work_dir;
  std::string init;
  std::string agent;
  int runs = 5;
  bool verbose = false;
};

Options ParseOptions(int argc, char** argv) {
  Options options;
  BenchOptions("ember-rootfs-bench", kUsage)
      .Text("--rootfs", &options.rootfs, /*required=*/true)
      .Text("--work-dir", &options.work_dir, /*required=*/true)
      .Text("--init", &options.init)
      .Text("--agent", &options.agent)
      .Number("--runs", &options.runs, 1)
      .Flag("--verbose", &options.verbose)
      .Parse(argc, argv);
  if (options.init.empty()) options.init = options.rootfs;
  if (options.agent.empty()) options.agent = options.rootfs;
  return options;
}

// Runs `argv` (looked up on PATH and in the sbin directories), its output discarded; fails
// the harness unless it exits 0.
void Run(const std::vector<std::string>& argv) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  std::string path = std::string("PATH=") + (getenv("PATH") ? getenv("PATH") : "") +
                     ":/usr/sbin:/sbin";
  std::vector<std::string> env_strings = {path};
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::string(*e).rfind("PATH=", 0) != 0) env_strings.push_back(*e);
  }
  std::vector<char*> env;
  for (std::string& entry : env_strings) env.push_back(entry.data());
  env.push_back(nullptr);
  // posix_spawnp searches the PATH of the calling process: set it for the lookup too.
  setenv("PATH", path.c_str() + 5, 1);
  pid_t pid = 0;
  int err = posix_spawnp(&pid, argv[0].c_str(), &actions, nullptr, args.data(), env.data());
  posix_spawn_file_actions_destroy(&actions);
  if (err != 0) Fail("cannot start " + argv[0]);
  int status = 0;
  if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string command;
    for (const std::string& arg : argv) command += " " + arg;
    Fail("failed:" + command);
  }
}

void WriteFile(const std::string& path, std::uint64_t size, std::uint64_t seed) {
  std::vector<std::uint64_t> words(size / 8 + 1);
  std::uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (std::uint64_t& word : words) {  // xorshift: data no file system can compress away
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    word = x;
  }
  FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr || std::fwrite(words.data(), 1, size, file) != size ||
      std::fclose(file) != 0) {
    Fail("cannot write " + path);
  }
}

// Makes the tree; returns its data bytes.
std::uint64_t MakeTree(const std::string& tree) {
  std::uint64_t bytes = 0;
  if (mkdir(tree.c_str(), 0755) != 0) Fail("cannot make " + tree);
  for (int d = 0; d < kDirectories; ++d) {
    std::string dir = tree + "/dir" + std::to_string(d);
    if (mkdir(dir.c_str(), 0755) != 0) Fail("cannot make " + dir);
    for (int f = 0; f < kSmallPerDirectory; ++f) {
      std::uint64_t size = 1024 * (1 + static_cast<std::uint64_t>((d * 7 + f * 13) % 16));
      WriteFile(dir + "/file" + std::to_string(f), size, static_cast<std::uint64_t>(d * 1000 + f));
      bytes += size;
    }
  }
  std::string large = tree + "/large";
  if (mkdir(large.c_str(), 0755) != 0) Fail("cannot make " + large);
  for (int f = 0; f < kLargeFiles; ++f) {
    WriteFile(large + "/blob" + std::to_string(f), 1 << 20, static_cast<std::uint64_t>(f) + 99);
    bytes += 1 << 20;
  }
  for (int s = 0; s < kSymlinks; ++s) {
    std::string target = "/dir" + std::to_string(s % kDirectories) + "/file" + std::to_string(s);
    std::string link = tree + "/link" + std::to_string(s);
    if (symlink(target.c_str(), link.c_str()) != 0) Fail("cannot make " + link);
  }
  return bytes;
}

std::uint64_t FileSize(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) Fail("cannot stat " + path);
  return static_cast<std::uint64_t>(st.st_size);
}

int Main(int argc, char** argv) {
  const Options options = ParseOptions(argc, argv);
  const std::string tree = options.work_dir + "/rootfs-tree";
  const std::string tarball = options.work_dir + "/rootfs-tree.tar";
  const std::string image = options.work_dir + "/rootfs.ext4";
  const std::uint64_t bytes = MakeTree(tree);
  Run({"tar", "-C", tree, "-cf", tarball, "."});

  std::vector<double> from_dir;
  std::vector<double> from_export;
  std::vector<double> mke2fs;
  std::uint64_t image_size = 0;
  for (int run = 0; run < options.runs; ++run) {
    Clock::time_point start = Clock::now();
    Run({options.rootfs, "--init", options.init, "--agent", options.agent, tree, image});
    from_dir.push_back(SecondsSince(start));
    image_size = FileSize(image);
    unlink(image.c_str());

    start = Clock::now();
    Run({options.rootfs, "--init", options.init, "--agent", options.agent, tarball, image});
    from_export.push_back(SecondsSince(start));
    unlink(image.c_str());

    // The baseline: mke2fs -d alone, same tree, an image of the size ember-rootfs chose.
    start = Clock::now();
    if (truncate(image.c_str(), 0) != 0) {
      int fd = open(image.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) Fail("cannot create " + image);
      close(fd);
    }
    if (truncate(image.c_str(), static_cast<off_t>(image_size)) != 0) Fail("truncate " + image);
    Run({"mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-d", tree, image});
    mke2fs.push_back(SecondsSince(start));
    unlink(image.c_str());
    if (options.verbose) {
      std::fprintf(stderr, "run %d: from dir %.3f s, from export %.3f s, mke2fs -d %.3f s\n",
                   run, from_dir.back(), from_export.back(), mke2fs.back());
    }
  }
  char note[160];
  std::snprintf(note, sizeof note,
                "rootfs tree: %.1f MiB in %d files, %d symlinks; image %.0f MiB (sparse)",
                static_cast<double>(bytes) / (1 << 20),
                kDirectories * kSmallPerDirectory + kLargeFiles, kSymlinks,
                static_cast<double>(image_size) / (1 << 20));
  PrintNote(note);
  const double baseline = Median(mke2fs);
  PrintFigure("rootfs_build_s", Median(from_dir), "s", "mke2fs_d_s", baseline);
  PrintFigure("rootfs_build_export_s", Median(from_export), "s", "mke2fs_d_s", baseline);
  return 0;
}

}  // namespace
}  // namespace ember::perf

int main(int argc, char** argv) { return ember::perf::Main(argc, argv); }
