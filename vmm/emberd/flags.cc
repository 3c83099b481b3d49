#include "vmm/emberd/flags.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "vmm/emberd/sandbox.h"

namespace ember::emberd {
namespace {

constexpr char kUsage[] =
    "usage: emberd [options]\n"
    "\n"
    "Serves Ember's gRPC API and runs one ember-vmm per microVM.\n"
    "\n"
    "  --socket PATH      API Unix socket, mode 0600 root (default /run/ember/emberd.sock);\n"
    "                     only connections whose peer (SO_PEERCRED) is root or emberd's own\n"
    "                     uid are admitted\n"
  "  --socket-group GROUP\n"
  "                     make the socket 0660 root:GROUP (a name or gid) and admit only\n"
  "                     connections whose peer (SO_PEERCRED) is root or in GROUP\n"
    "  --state-dir DIR    VM records, control sockets, consoles (default /var/lib/ember);\n"
    "                     one emberd per directory (it holds DIR/emberd.lock)\n"
    "  --tcp HOST:PORT    also listen on TCP (off by default), only with mutual TLS: needs\n"
  "                     --tls-cert, --tls-key and --tls-client-ca\n"
  "  --tls-cert FILE, --tls-key FILE\n"
  "                     emberd's TLS certificate chain and private key (PEM) for --tcp\n"
  "  --tls-client-ca FILE\n"
  "                     the CA (PEM) whose certificates --tcp clients must present\n"
  "  --allow-dir DIR    host paths an API request names (kernel, initrd, drives, log,\n"
  "                     metrics, vsock socket, snapshot dir, restore files) must lie under\n"
  "                     DIR, with no symlink or \"..\" leading out; repeatable. Default\n"
  "                     /srv/ember; giving one replaces it. Others get INVALID_ARGUMENT\n"
    "  --vmm PATH         the ember-vmm binary (default: next to emberd)\n"
    "  --max-vms N        live VMs at most (default 1024)\n"
    "  --vmm-pool N       keep N ember-vmm processes started ahead (exec'd, seccomp filters\n"
    "                     compiled, /dev/kvm opened, VM and irqchip created), each handed to\n"
    "                     one Create or Restore and replaced in the background (default 0:\n"
    "                     none). Jailed (the default), N of each kind (boots; restores, which\n"
    "                     have the snapshot group), each in a jail made ahead (its own uid,\n"
    "                     cgroup, root and namespaces) that becomes the VM's when one claims it\n"
    "  --fn-max-archive-mib N\n"
    "                     the largest OCI archive a function is deployed from (default 4096);\n"
    "                     a larger one is INVALID_ARGUMENT, nothing of it kept\n"
    "  --fn-max-in-flight N\n"
    "                     function invocations in flight on the host at most (default 64);\n"
    "                     more are RESOURCE_EXHAUSTED at once\n"
    "  --fn-max-pooled N  functions' clones kept ready on the host at most, paused (min_warm)\n"
    "                     and warm (keep_warm_ms) together; a refill beyond it waits, a clone\n"
    "                     beyond it is discarded after its invocation. Below --max-vms\n"
    "                     (default: a quarter of it, at most 256)\n"
    "  --fn-max-image-mib N\n"
    "                     what an OCI archive's image may expand to while ember-rootfs builds it\n"
    "                     (its files' sizes, 512 bytes per entry), in MiB (default 4096); a\n"
    "                     larger one is INVALID_ARGUMENT, nothing of it kept\n"
    "  --fn-egress        functions with network on: each clone also reaches beyond its\n"
    "                     namespace (a veth pair from 10.200.0.0/16 and NAT; needs the host's\n"
    "                     IPv4 forwarding on). Without it a clone reaches only its tap's host\n"
    "                     side (172.16.0.1/30). Clone networks need root; their namespaces\n"
    "                     are mounted under STATE-DIR/netns. Egress reaches what lies beyond\n"
    "                     the host's links, never the host itself (no connection to any of its\n"
    "                     addresses), link-local (169.254.0.0/16: cloud metadata), loopback\n"
    "                     or other clones, nor the private ranges 10/8, 172.16/12, 192.168/16\n"
    "                     and 100.64/10 (the host's LANs) unless --fn-egress-private\n"
    "  --fn-egress-private\n"
    "                     clones' egress may also reach the private ranges\n"
    "  --seccomp MODE     emberd's own seccomp filter: enforce (default), log, or off\n"
    "  --log-level LEVEL  Error, Warning, Info (default), Debug or Trace\n"
    "  --no-jail          run each ember-vmm UNJAILED: as root, with all capabilities, in\n"
    "                     emberd's namespaces. For development only: emberd warns at start-up\n"
    "                     and writes UNJAILED beside each VM's record\n"
    "  By default each ember-vmm runs through ember-jailer: chrooted (pivot_root) into\n"
    "  <chroot-base>/ember-vmm/<id>/root with its config, kernel and initrd (drives hard-linked:\n"
    "  same filesystem), as a uid and gid of its own with no capabilities and NoNewPrivs, in\n"
    "  new mount, pid, ipc, uts and network namespaces (a VM's taps are made in its own), with\n"
    "  only the device nodes it uses and RLIMIT_FSIZE its memory size + 64 MiB. Snapshots are\n"
    "  moved out of the jail; a restored clone gets the snapshot's files linked into its jail.\n"
    "  --jailer PATH      the ember-jailer binary (default: next to emberd)\n"
    "  --jailer-id-base N, --jailer-id-count N\n"
    "                     each jailed ember-vmm runs as uid = gid = one of N+1 ... N+COUNT,\n"
    "                     its own while its VM exists (until Delete); N itself is the group\n"
    "                     of the snapshot files emberd keeps, which restored clones get as\n"
    "                     their one supplementary group (defaults 830000 and 65536)\n"
    "  --chroot-base DIR  the jailer's --chroot-base-dir (default STATE-DIR/jail)\n"
    "  --cgroup-parent PATH\n"
    "                     each jailed VM gets a cgroup PATH/<id> (relative to each hierarchy's\n"
    "                     root; default ember-<hash of STATE-DIR>) limiting its memory (guest +\n"
    "                     128 MiB), tasks (vCPUs + 64 + 4 per host CPU and drive) and CPU weight\n"
    "                     (per vCPU): cgroup v2 where it carries memory, pids and cpu, else v1;\n"
    "                     removed when its VMM ends (or the VM is deleted)\n"
    "  --jailer-new-pid-ns\n"
    "                     accepted for old command lines: a new pid namespace is the default\n"
    "  --help             this text\n"
    "\n"
    "SIGTERM/SIGINT stop emberd but not the VMs; a new emberd re-attaches to them.\n";

std::uint32_t ParseId(const std::string& flag, const std::string& text) {
  std::uint32_t id = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) {
    Fail(flag + ": \"" + text + "\" is not a number");
  }
  if (id == 0) Fail(flag + ": must be at least 1 (0 is root's id, or no id at all)");
  return id;
}

}  // namespace

Flags ParseFlags(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Fail(std::string(arg) + " needs a value");
      return argv[++i];
    };
    if (arg == "--socket") flags.socket = value();
    else if (arg == "--state-dir") flags.state_dir = value();
    else if (arg == "--tcp") flags.tcp = value();
    else if (arg == "--socket-group") flags.socket_group = value();
    else if (arg == "--tls-cert") flags.tls.cert = value();
    else if (arg == "--tls-key") flags.tls.key = value();
    else if (arg == "--tls-client-ca") flags.tls.client_ca = value();
    else if (arg == "--allow-dir") flags.allow_dirs.push_back(value());
    else if (arg == "--vmm") flags.vmm = value();
    else if (arg == "--log-level") flags.log_level = value();
    else if (arg == "--jailer") flags.jailer = value();
    else if (arg == "--jailer-id-base") flags.jailer_id_base = ParseId("--jailer-id-base", value());
    else if (arg == "--jailer-id-count") flags.jailer_id_count = ParseId("--jailer-id-count", value());
    else if (arg == "--jailer-uid" || arg == "--jailer-gid") {
      Fail(std::string(arg) + ": every jailed VM has a uid and gid of its own now; give their "
           "range with --jailer-id-base and --jailer-id-count");
    }
    else if (arg == "--chroot-base") flags.chroot_base = value();
    else if (arg == "--cgroup-parent") flags.cgroup_parent = value();
    else if (arg == "--jailer-new-pid-ns") {}  // the default
    else if (arg == "--no-jail") flags.no_jail = true;
    else if (arg == "--fn-egress") flags.fn_egress = true;
    else if (arg == "--fn-egress-private") flags.fn_egress_private = true;
    else if (arg == "--seccomp") {
      auto mode = ParseSeccompFlag(value());
      if (!mode.ok()) Fail(std::string(mode.status().message()));
      flags.seccomp = *mode;
    }
    else if (arg == "--vmm-pool") {
      std::string text = value();
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), flags.vmm_pool);
      if (ec != std::errc() || end != text.data() + text.size() || text.empty() ||
          flags.vmm_pool > 64) {
        Fail("--vmm-pool: \"" + text + "\" is not a number from 0 to 64");
      }
    }
    else if (arg == "--fn-max-archive-mib") {
      flags.fn_max_archive_mib = ParseId("--fn-max-archive-mib", value());
    }
    else if (arg == "--fn-max-in-flight") {
      flags.fn_max_in_flight = ParseId("--fn-max-in-flight", value());
    }
    else if (arg == "--fn-max-pooled") flags.fn_max_pooled = ParseId("--fn-max-pooled", value());
    else if (arg == "--fn-max-image-mib") {
      flags.fn_max_image_mib = ParseId("--fn-max-image-mib", value());
    }
    else if (arg == "--max-vms") {
      std::string text = value();
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), flags.max_vms);
      if (ec != std::errc() || end != text.data() + text.size() || flags.max_vms == 0) {
        Fail("--max-vms: \"" + text + "\" is not a positive number");
      }
    } else {
      Fail("unknown flag \"" + std::string(arg) + "\" (see --help)");
    }
  }
  if (flags.fn_max_pooled && *flags.fn_max_pooled >= flags.max_vms) {
    Fail("--fn-max-pooled must be below --max-vms (" + std::to_string(flags.max_vms) +
         "): pooled clones are VMs, and the API's own need room beside them");
  }
  bool any_jail = !flags.jailer.empty() || flags.jailer_id_base || flags.jailer_id_count ||
                  !flags.chroot_base.empty() || !flags.cgroup_parent.empty();
  if (flags.no_jail && any_jail) {
    Fail("--no-jail runs ember-vmm unjailed: --jailer, --jailer-id-base, --jailer-id-count, "
         "--chroot-base and --cgroup-parent have nothing to configure");
  }
  // A TCP listener anyone on the network can reach is as good as root on this host: it is
  // served only to clients with a certificate the operator's CA signed.
  bool any_tls = !flags.tls.cert.empty() || !flags.tls.key.empty() || !flags.tls.client_ca.empty();
  if (!flags.tcp.empty() &&
      (flags.tls.cert.empty() || flags.tls.key.empty() || flags.tls.client_ca.empty())) {
    Fail("--tcp needs --tls-cert, --tls-key and --tls-client-ca: emberd serves TCP only with "
         "mutual TLS");
  }
  if (flags.tcp.empty() && any_tls) {
    Fail("--tls-cert, --tls-key and --tls-client-ca go with --tcp (the Unix socket needs none)");
  }
  return flags;
}

std::uint32_t FnMaxPooled(const Flags& flags) {
  return flags.fn_max_pooled.value_or(
      static_cast<std::uint32_t>(std::min<std::size_t>(256, flags.max_vms / 4)));
}

void Fail(const std::string& message) {
  std::fprintf(stderr, "emberd: error: %s\n", message.c_str());
  std::exit(2);
}

}  // namespace ember::emberd
