// Measures what the bzImage fast path (issue 3) costs on the host: decompressing the kernel's
// payload on a cold kernel cache (kernel_host_decompress_ms), and the warm cache hit that
// replaces it on every later boot (kernel_cache_hit_ms: SHA-256 of the bzImage and mapping the
// cached vmlinux). Both are printed against kernel_load_elf_ms, copying the vmlinux into fresh
// guest memory, which every boot pays either way, so the relative costs read off the ratios.
// Each step is timed as GuestLoader runs it, parsing the bzImage included. Prints figures only;
// never asserts a timing.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "perf/bench_options.h"
#include "perf/bench_report.h"
#include "vmm/arch/x86_64/bzimage.h"
#include "vmm/arch/x86_64/elf_loader.h"
#include "vmm/base/guest_memory.h"
#include "vmm/boot/kernel_cache.h"
#include "vmm/boot/kernel_image.h"
#include "vmm/boot/payload_decompress.h"

namespace ember::perf {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kUsage[] =
    "usage: ember-kernel-bench --kernel BZIMAGE --cache-dir DIR [--runs N] [--verbose]\n"
    "\n"
    "  --kernel BZIMAGE  a Linux bzImage (Debian's vmlinuz)\n"
    "  --cache-dir DIR   a kernel cache directory of the harness's own (filled on first use)\n"
    "  --runs N          samples per figure (default 20); each figure is the median\n"
    "  --verbose         print every sample to stderr\n";

// Enough guest RAM for any vmlinux loaded at 16 MiB.
constexpr std::uint64_t kGuestMemory = 512ull << 20;

[[noreturn]] void Fail(const std::string& message) { Die("ember-kernel-bench", message); }

template <typename T>
T Check(absl::StatusOr<T> value, const std::string& what) {
  if (!value.ok()) Fail(what + ": " + value.status().ToString());
  return std::move(value).value();
}

struct Options {
  std::string kernel;
  std::string cache_dir;
  int runs = 20;
  bool verbose = false;
};

Options ParseOptions(int argc, char** argv) {
  Options options;
  BenchOptions("ember-kernel-bench", kUsage)
      .Text("--kernel", &options.kernel, /*required=*/true)
      .Text("--cache-dir", &options.cache_dir, /*required=*/true)
      .Number("--runs", &options.runs, 1)
      .Flag("--verbose", &options.verbose)
      .Parse(argc, argv);
  return options;
}

double MillisSince(Clock::time_point start) { return SecondsSince(start) * 1000; }

std::string Mib(std::uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return text;
}

int Main(int argc, char** argv) {
  const Options options = ParseOptions(argc, argv);
  const vmm::KernelImage bzimage = Check(vmm::KernelImage::FromFile(options.kernel), "kernel");
  const arch::BzImage parsed = Check(arch::ParseBzImage(bzimage.bytes()), options.kernel);
  if (!vmm::CanDecompress(parsed.format)) {
    Fail(options.kernel + ": payload format " + arch::PayloadFormatName(parsed.format) +
         " is not one Ember decompresses");
  }
  PrintNote("kernel " + options.kernel + ": bzImage " + Mib(bzimage.bytes().size()) + ", " +
            arch::PayloadFormatName(parsed.format) + " payload " + Mib(parsed.payload.size()) +
            ", vmlinux " + Mib(parsed.uncompressed_size) + " uncompressed");

  // The cache starts empty; the first (untimed) lookup decompresses and stores the entry.
  const vmm::KernelCache cache(options.cache_dir);
  const std::string entry = cache.PathFor(vmm::KernelCache::ContentKey(bzimage.bytes()));
  ::unlink(entry.c_str());
  (void)Check(cache.Vmlinux(bzimage, parsed), "fill the kernel cache");
  struct stat st {};
  if (::stat(entry.c_str(), &st) != 0) Fail("the kernel cache did not store " + entry);

  std::vector<double> decompress, hit, load;
  for (int run = 0; run < options.runs; ++run) {
    Clock::time_point start = Clock::now();
    const arch::BzImage cold = Check(arch::ParseBzImage(bzimage.bytes()), "parse");
    const std::vector<std::uint8_t> vmlinux = Check(
        vmm::DecompressPayload(cold.format, cold.payload, cold.uncompressed_size), "decompress");
    decompress.push_back(MillisSince(start));

    start = Clock::now();
    const arch::BzImage warm = Check(arch::ParseBzImage(bzimage.bytes()), "parse");
    const vmm::KernelImage cached = Check(cache.Vmlinux(bzimage, warm), "cache hit");
    hit.push_back(MillisSince(start));

    // Fresh guest memory, as a new VM has: the copy pays for first touches of its pages, and
    // the cached file's pages are faulted in from the page cache.
    const base::GuestMemory memory =
        Check(base::GuestMemory::Create({{0, kGuestMemory}}), "guest memory");
    start = Clock::now();
    (void)Check(arch::LoadElfKernel(cached.bytes(), memory), "load vmlinux");
    load.push_back(MillisSince(start));
    if (options.verbose) {
      std::fprintf(stderr, "run %d: decompress %.2f ms, cache hit %.2f ms, load ELF %.2f ms\n", run,
                   decompress.back(), hit.back(), load.back());
    }
  }
  ::unlink(entry.c_str());
  const double load_ms = Median(load);
  PrintFigure("kernel_host_decompress_ms", Median(decompress), "ms", "kernel_load_elf_ms",
              load_ms);
  PrintFigure("kernel_cache_hit_ms", Median(hit), "ms", "kernel_load_elf_ms", load_ms);
  PrintFigure("kernel_load_elf_ms", load_ms, "ms");
  return 0;
}

}  // namespace
}  // namespace ember::perf

int main(int argc, char** argv) { return ember::perf::Main(argc, argv); }
