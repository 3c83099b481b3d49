#!/usr/bin/env python3
"""Checks every #include of the source tree against DESIGN.md's dependency rule.

    include_rules.py <source dir>    exit 1 and list each include that breaks the rule
    include_rules.py --self-test     plants violations in a scratch tree; exit 1 unless each
                                     one is reported and the allowed includes are not

CMake already refuses most violations (each target sees only the headers of what it links,
the top CMakeLists.txt says how); this check reads the include lines themselves, so that it
also catches an include CMake would let through: a relative path ("../kvm/vm.h"), a header
reached through a link that breaks the rule, a system header a layer must not use.
"""

import os
import re
import sys
import tempfile

# Layers by path prefix (a folder or a single file); a file belongs to its longest match.
# Generated protobuf headers are included as "ember/v1/*.pb.h".
LAYERS = {
    "base": ["vmm/base"],
    "kvm": ["vmm/kvm"],
    "arch": ["vmm/arch"],
    "legacy": ["vmm/devices/legacy"],
    "virtio": ["virtio"],
    # Each device's state to and from its snapshot message, beside the device.
    "virtio_proto": [f"virtio/{stem}_proto.{ext}" for stem in
                     ["rate_limiter", "block/state", "net/state", "vsock/state", "mmio/state"]
                     for ext in ["h", "cc"]],
    "snapshot": ["snapshot"],
    "jailer": ["jailer"],
    "proto": ["proto", "ember/v1"],
    # The control channel's framing, and the launch message a pooled ember-vmm takes in it
    # (emberd sends it, the VMM reads it): both in ember_control_frame.
    "control_frame": [f"vmm/control/{name}" for name in
                      ["frame.h", "frame.cc", "pool_launch.h", "pool_launch.cc"]],
    "exit_code": ["vmm/exit_code.h"],
    "rules": ["vmm/rules"],
    "vmm": ["vmm"],  # the rest of vmm/: its top, boot/, control/'s VMM end, main
    "config_tool": ["vmm/config_tool"],
    "agent_client": ["vmm/agent_client"],
    "emberd": ["vmm/emberd"],
    "emberctl": ["vmm/emberctl"],
    # Firecracker's command line, linked into ember-vmm; the API front (ember-fc-api) beside it.
    "fc_flags": [f"vmm/fcapi/{name}" for name in
                 ["firecracker_flags.h", "firecracker_flags.cc", "firecracker_names.h"]],
    "fcapi": ["vmm/fcapi"],
    "runtime": ["vmm/runtime"],
    "guest": ["rootfs"],
    "rootfs_tool": ["rootfs/image"],
    "agent": ["rootfs/agent"],
    "tests": ["tests"],
    "perf": ["perf"],
}

EVERYTHING = set(LAYERS)

# What each layer may include besides itself (DESIGN.md, "Source layout").
ALLOWED = {
    "base": set(),
    "kvm": {"base"},
    "arch": {"base", "kvm"},
    "legacy": {"base"},
    "virtio": {"base"},
    "virtio_proto": {"base", "virtio", "proto"},
    "snapshot": {"base", "virtio", "proto"},
    "jailer": {"base"},
    "proto": set(),
    "control_frame": {"base", "proto"},
    "exit_code": set(),
    # The rules of a VM config, shared by ember-vmm and emberd: the messages, and virtio's
    # token-bucket rule (virtio/rate_limiter.h, inline; nothing of virtio is linked).
    "rules": {"proto", "virtio"},
    "vmm": {"base", "kvm", "arch", "legacy", "virtio", "virtio_proto", "snapshot", "jailer", "proto",
            "control_frame", "exit_code", "rules", "fc_flags"},
    "config_tool": {"base", "proto", "exit_code", "rules"},
    # The control plane: proto, the rules of a VM config, the control channel's framing, its
    # own seccomp filter (jailer/); never the VMM.
    "emberd": {"base", "proto", "rules", "control_frame", "jailer", "agent_client"},
    # The host's client of ember-agent: the messages and their framing. For emberd and
    # ember-runtime; the VMM itself never talks to the agent.
    "agent_client": {"base", "proto", "control_frame"},
    # ember-runtime: drives ember-vmm over the control channel and the guest through the agent
    # client, and removes its jails' cgroups with jailer/'s helpers (as emberd does); never
    # links the VMM.
    "runtime": {"base", "proto", "control_frame", "agent_client", "jailer"},
    "emberctl": {"proto"},
    "fc_flags": {"base"},
    # The API front drives ember-vmm over the control channel, reads JSON like ember-config and
    # builds its seccomp filter with jailer/'s table-driven allowlists.
    "fcapi": {"base", "proto", "control_frame", "exit_code", "config_tool", "fc_flags", "jailer",
              "rules"},
    "guest": set(),  # the guest shares only proto/ with the host
    # ember-rootfs runs on the host: base's fds, status, atomic files; agent.proto's ImageConfig
    "rootfs_tool": {"base", "proto"},
    # ember-agent, a Linux program of the guest: the messages, their framing (the control
    # channel's, which agent.proto adopts) and base's fds and statuses it builds on.
    "agent": {"proto", "control_frame", "base"},
    "tests": EVERYTHING,
    "perf": EVERYTHING,
}

# System headers a layer must not include.
FORBIDDEN_SYSTEM = {
    "virtio": {"linux/kvm.h"},
}

# Known violations, each to be removed with its include: (including file, included header).
EXCEPTIONS = set()

TOP_DIRS = ["vmm", "virtio", "snapshot", "jailer", "proto", "rootfs", "tests", "perf"]
OUR_PREFIXES = tuple(d + "/" for d in TOP_DIRS) + ("ember/",)
SOURCE_SUFFIXES = (".c", ".cc", ".h", ".S")
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')


def layer_of(path):
    best = None
    for layer, prefixes in LAYERS.items():
        for prefix in prefixes:
            if path == prefix or path.startswith(prefix + "/"):
                if best is None or len(prefix) > len(best[1]):
                    best = (layer, prefix)
    return best[0] if best else None


def resolve(root, including, spelled):
    """The repository path a quoted include names, or None for a header not of this tree."""
    beside = os.path.normpath(os.path.join(os.path.dirname(including), spelled))
    if os.path.isfile(os.path.join(root, beside)):  # the compiler looks beside the file first
        return beside
    if spelled.startswith(OUR_PREFIXES):
        return os.path.normpath(spelled)
    return None


def violations(root, exceptions=EXCEPTIONS):
    found = []
    used_exceptions = set()
    for top in TOP_DIRS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames.sort()
            for name in sorted(filenames):
                if not name.endswith(SOURCE_SUFFIXES):
                    continue
                path = os.path.relpath(os.path.join(dirpath, name), root)
                layer = layer_of(path)
                if layer is None:
                    found.append(f"{path}: in no layer of tests/include_rules.py's table")
                    continue
                with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
                    lines = f.readlines()
                for number, line in enumerate(lines, 1):
                    match = INCLUDE.match(line)
                    if not match:
                        continue
                    bracket, spelled = match.groups()
                    closing = ">" if bracket == "<" else '"'
                    where = f"{path}:{number}: {layer} includes {bracket}{spelled}{closing}"
                    if bracket == "<" and spelled in FORBIDDEN_SYSTEM.get(layer, ()):
                        found.append(where + ", a system header it must not use")
                        continue
                    target = resolve(root, path, spelled) if bracket == '"' or \
                        spelled.startswith(OUR_PREFIXES) else None
                    if target is None:
                        continue
                    target_layer = layer_of(target)
                    if target_layer is None:
                        found.append(where + ", outside every layer")
                    elif target_layer != layer and target_layer not in ALLOWED[layer]:
                        if (path, target) in exceptions:
                            used_exceptions.add((path, target))
                            continue
                        found.append(f"{where}: {layer} may not use {target_layer}")
    for path, target in sorted(exceptions - used_exceptions):
        print(f"note: the exception {path} -> {target} is no longer needed; remove it",
              file=sys.stderr)
    return found


def check(root):
    found = violations(root)
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} include(s) break the dependency rule (DESIGN.md, Source layout). "
              "Use the layer through what it may depend on, or, if the rule itself changes, "
              "change DESIGN.md, this table and the CMake links together.")
        return 1
    print("every include follows the dependency rule")
    return 0


def self_test():
    planted = {
        "virtio/ok.cc": '#include "vmm/base/status.h"\n#include <linux/virtio_ring.h>\n',
        "virtio/kvm.cc": '#include "vmm/kvm/vm.h"\n',
        "virtio/relative.cc": '#include "../vmm/kvm/vm.h"\n',
        "virtio/uapi.cc": "#include <linux/kvm.h>\n",
        "vmm/emberd/ok.cc": '#include "vmm/control/frame.h"\n#include "ember/v1/api.pb.h"\n',
        "vmm/emberd/vmm.cc": '#include "vmm/vmm.h"\n',
        "vmm/base/up.h": '#include "virtio/queue.h"\n',
        "rootfs/testguest/local.c": '#include "serial.h"\n',
        "rootfs/testguest/serial.h": "",
        "vmm/kvm/vm.h": "", "vmm/vmm.h": "", "vmm/base/status.h": "", "virtio/queue.h": "",
        "vmm/control/frame.h": "",
    }
    expected = {"virtio/kvm.cc", "virtio/relative.cc", "virtio/uapi.cc", "vmm/emberd/vmm.cc",
                "vmm/base/up.h"}
    with tempfile.TemporaryDirectory() as root:
        for path, text in planted.items():
            os.makedirs(os.path.join(root, os.path.dirname(path)), exist_ok=True)
            with open(os.path.join(root, path), "w", encoding="utf-8") as f:
                f.write(text)
        found = violations(root, exceptions=set())
    reported = {line.split(":", 1)[0] for line in found}
    for line in found:
        print("reported:", line)
    if reported != expected or len(found) != len(expected):
        print(f"FAIL: expected exactly one report for each of {sorted(expected)}")
        return 1
    print("each planted violation is reported, and only those")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(self_test())
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(check(sys.argv[1]))
