#!/usr/bin/env python3
"""Checks rootfs/kernel/ember.config against the options an Ember guest cannot do without.

The fragment is merged onto tinyconfig, where everything not asked for is off, so an option
dropped from the fragment silently disappears from the kernel: this test is what notices.
build-kernel.sh checks the other half (that every option the fragment sets survived the merge).

    kernel_config_test.py <fragment>     the check (ctest: kernel_config)
    kernel_config_test.py --self-test    proof that the check reports a lost or flipped option
"""
import re
import sys

# option -> the value the fragment must give it ("n": "# CONFIG_X is not set"), and why.
REQUIRED = {
    # x86_64 guest on KVM
    "CONFIG_64BIT": ("y", "tinyconfig under ARCH=x86 would be a 32-bit kernel"),
    "CONFIG_SMP": ("y", "guests with more than one vCPU"),
    "CONFIG_MODULES": ("n", "the root image has no /lib/modules: everything built in"),
    "CONFIG_HYPERVISOR_GUEST": ("y", "needed by KVM_GUEST"),
    "CONFIG_PARAVIRT": ("y", "needed by KVM_GUEST"),
    "CONFIG_KVM_GUEST": ("y", "KVM's paravirtual clock and features"),
    "CONFIG_PARAVIRT_CLOCK": ("y", "kvm-clock"),
    # devices: virtio over MMIO, announced on the command line
    "CONFIG_VIRTIO": ("y", "virtio core"),
    "CONFIG_VIRTIO_MENU": ("y", "the menu that holds VIRTIO_MMIO"),
    "CONFIG_VIRTIO_MMIO": ("y", "Ember's only transport"),
    "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES": ("y", "virtio_mmio.device=4K@0x...:IRQ"),
    "CONFIG_VIRTIO_BLK": ("y", "the root disk"),
    "CONFIG_BLOCK": ("y", "block layer"),
    "CONFIG_BLK_DEV": ("y", "needed by VIRTIO_BLK"),
    "CONFIG_EXT4_FS": ("y", "ember-rootfs images are ext4"),
    "CONFIG_NET": ("y", "networking"),
    "CONFIG_NETDEVICES": ("y", "needed by VIRTIO_NET"),
    "CONFIG_VIRTIO_NET": ("y", "the guest's eth0"),
    "CONFIG_INET": ("y", "IPv4, ember-init's ip= settings"),
    "CONFIG_UNIX": ("y", "Unix sockets"),
    "CONFIG_VSOCKETS": ("y", "ember-agent listens on vsock"),
    "CONFIG_VIRTIO_VSOCKETS": ("y", "the vsock transport over virtio"),
    # console
    "CONFIG_PRINTK": ("y", "kernel messages at all"),
    "CONFIG_EARLY_PRINTK": ("y", "earlyprintk=ttyS0"),
    "CONFIG_TTY": ("y", "any console"),
    "CONFIG_SERIAL_8250": ("y", "Ember's COM1"),
    "CONFIG_SERIAL_8250_CONSOLE": ("y", "console=ttyS0"),
    "CONFIG_UNIX98_PTYS": ("y", "the agent's Exec with a TTY"),
    # what ember-init mounts and runs
    "CONFIG_DEVTMPFS": ("y", "/dev"),
    "CONFIG_PROC_FS": ("y", "/proc, /proc/cmdline"),
    "CONFIG_SYSFS": ("y", "/sys"),
    "CONFIG_SHMEM": ("y", "a real tmpfs"),
    "CONFIG_TMPFS": ("y", "/run, /tmp, /dev/shm"),
    "CONFIG_BINFMT_ELF": ("y", "ember-init and ember-agent are ELF"),
    "CONFIG_BINFMT_SCRIPT": ("y", "#! programs in user images"),
    "CONFIG_MULTIUSER": ("y", "the agent's Exec with uid/gid"),
    "CONFIG_FUTEX": ("y", "threads"),
    "CONFIG_EPOLL": ("y", "event loops"),
    "CONFIG_SIGNALFD": ("y", "event loops"),
    "CONFIG_TIMERFD": ("y", "event loops"),
    "CONFIG_EVENTFD": ("y", "event loops"),
    "CONFIG_POSIX_TIMERS": ("y", "clock_gettime, timers"),
    # left to ember-init: the kernel's ip= autoconfiguration would wait for DHCP
    "CONFIG_IP_PNP": ("n", "ember-init owns the network settings"),
}

SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


def parse(text):
    """Fragment text -> {option: value}, "n" for "is not set"; the last line for an option wins."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if m := SET.match(line):
            values[m.group(1)] = m.group(2)
        elif m := UNSET.match(line):
            values[m.group(1)] = "n"
    return values


def problems(text):
    values = parse(text)
    found = []
    for option, (want, why) in sorted(REQUIRED.items()):
        got = values.get(option)
        if got is None:
            found.append(f"{option} is missing (want {want}: {why})")
        elif got != want:
            found.append(f"{option} is {got}, want {want} ({why})")
    return found


def self_test(fragment_text):
    assert not problems(fragment_text), "the self-test needs a passing fragment"
    lost = "\n".join(l for l in fragment_text.splitlines()
                     if not l.startswith("CONFIG_VIRTIO_VSOCKETS="))
    flipped = fragment_text + "\nCONFIG_MODULES=y\n"
    unset = fragment_text.replace("CONFIG_EXT4_FS=y", "# CONFIG_EXT4_FS is not set")
    for name, text, expect in [("lost", lost, "CONFIG_VIRTIO_VSOCKETS is missing"),
                               ("flipped", flipped, "CONFIG_MODULES is y, want n"),
                               ("unset", unset, "CONFIG_EXT4_FS is n, want y")]:
        found = problems(text)
        if not any(p.startswith(expect) for p in found):
            print(f"self-test: a {name} option was not reported (got {found})")
            return 1
    print("self-test: lost, flipped and unset options are all reported")
    return 0


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--self-test":
        return self_test(open(sys.argv[2]).read())
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    found = problems(open(sys.argv[1]).read())
    for p in found:
        print(f"{sys.argv[1]}: {p}")
    if not found:
        print(f"{sys.argv[1]}: all {len(REQUIRED)} required options set")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
