/* The `net` scenario, against the host side in tests/integration/virtio_net_test.cc: the guest
 * takes the IPv4 address `ember.net=A.B.C.D[/len]` and answers ARP requests for it, ICMP echo
 * requests to it and UDP datagrams to port 7 (echo), until a UDP datagram "quit" arrives. */
#include "boot_info.h"
#include "lib.h"
#include "scenario.h"
#include "serial.h"
#include "virtio_net.h"

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_ARP 0x0806
#define IP_PROTO_ICMP 1
#define IP_PROTO_UDP 17
#define ICMP_ECHO_REPLY 0
#define ICMP_ECHO_REQUEST 8
#define UDP_ECHO_PORT 7
/* About 40-60 s at 2-3 GHz. */
#define NET_CYCLES 120000000000ull

static struct virtio_net net;
/* Used when the device offers no MAC: locally administered. */
static const uint8_t kDefaultMac[6] = {0x06, 0x00, 0x0a, 0x00, 0x00, 0x02};

static inline uint64_t rdtsc(void) {
  uint32_t lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((uint64_t)hi << 32) | lo;
}

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static void swap(uint8_t *a, uint8_t *b, int n) {
  for (int i = 0; i < n; i++) {
    uint8_t t = a[i];
    a[i] = b[i];
    b[i] = t;
  }
}

/* "A.B.C.D" optionally followed by "/len"; 1 when well formed. */
static int parse_ip(const char *p, uint64_t len, uint8_t ip[4]) {
  const char *end = p + len;
  for (int part = 0; part < 4; part++) {
    uint32_t v = 0;
    int digits = 0;
    while (p < end && *p >= '0' && *p <= '9' && digits < 3) {
      v = v * 10 + (uint32_t)(*p++ - '0');
      digits++;
    }
    if (!digits || v > 255) return 0;
    ip[part] = (uint8_t)v;
    if (part < 3 && (p >= end || *p++ != '.')) return 0;
  }
  return p == end || *p == '/';
}

static void put_ip(const uint8_t ip[4]) {
  for (int i = 0; i < 4; i++) {
    if (i) serial_putc('.');
    serial_put_dec(ip[i]);
  }
}

int net_scenario(const struct boot_info *boot, const char **reason) {
  uint8_t ip[4];
  uint64_t len;
  const char *value = cmdline_value(boot->cmdline, "ember.net", &len);
  if (!value || !parse_ip(value, len, ip)) {
    *reason = "no ember.net=A.B.C.D on the command line";
    return 0;
  }
  if (!virtio_net_init(&net, boot->cmdline, kDefaultMac, reason)) return 0;
  serial_puts("net: ready at ");
  put_ip(ip);
  serial_puts(" mac ");
  for (int i = 0; i < 6; i++) {
    if (i) serial_putc(':');
    serial_putc("0123456789abcdef"[net.mac[i] >> 4]);
    serial_putc("0123456789abcdef"[net.mac[i] & 0xf]);
  }
  serial_putc('\n');

  uint32_t arp = 0, icmp = 0, udp = 0;
  uint64_t deadline = rdtsc() + NET_CYCLES;
  for (;;) {
    if (rdtsc() > deadline) {
      *reason = "no \"quit\" datagram in time";
      return 0;
    }
    uint32_t n;
    uint8_t *f = virtio_net_poll(&net, &n);
    if (!f || n < ETH_HLEN) continue;
    uint8_t *eth_src = f + 6;
    uint16_t type = be16(f + 12);
    uint8_t *l3 = f + ETH_HLEN;
    uint32_t l3_len = n - ETH_HLEN;
    if (type == ETH_P_ARP && l3_len >= 28 && be16(l3 + 6) == 1 && memcmp(l3 + 24, ip, 4) == 0) {
      /* Request for our address: answer in place (op 2, sender us, target them). */
      l3[7] = 2;
      memcpy(l3 + 18, l3 + 8, 10); /* target = old sender (MAC and IP) */
      memcpy(l3 + 8, net.mac, 6);
      memcpy(l3 + 14, ip, 4);
    } else if (type == ETH_P_IP && l3_len >= 20 && (l3[0] >> 4) == 4 &&
               memcmp(l3 + 16, ip, 4) == 0) {
      uint32_t ihl = (uint32_t)(l3[0] & 0xf) * 4;
      if (ihl < 20 || l3_len < ihl + 8) continue;
      uint8_t *l4 = l3 + ihl;
      if (l3[9] == IP_PROTO_ICMP && l4[0] == ICMP_ECHO_REQUEST) {
        /* Type 8 -> 0 lowers the ones'-complement sum by 0x0800; the checksum rises by it. */
        l4[0] = ICMP_ECHO_REPLY;
        uint32_t sum = (uint32_t)be16(l4 + 2) + 0x0800;
        sum = (sum & 0xffff) + (sum >> 16);
        l4[2] = (uint8_t)(sum >> 8);
        l4[3] = (uint8_t)sum;
        icmp++;
      } else if (l3[9] == IP_PROTO_UDP && be16(l4 + 2) == UDP_ECHO_PORT) {
        uint32_t payload = be16(l4 + 4) >= 8 ? be16(l4 + 4) - 8u : 0;
        if (payload == 4 && memcmp(l4 + 8, "quit", 4) == 0) break;
        swap(l4, l4 + 2, 2); /* ports; the checksum's sum does not change */
        udp++;
      } else {
        continue;
      }
      swap(l3 + 12, l3 + 16, 4); /* addresses; neither checksum changes */
    } else {
      continue;
    }
    if (type == ETH_P_ARP) arp++;
    memcpy(f, eth_src, 6);
    memcpy(eth_src, net.mac, 6);
    if (!virtio_net_send(&net, f, n, reason)) return 0;
  }
  serial_puts("net: answered ");
  serial_put_dec(arp);
  serial_puts(" ARP, ");
  serial_put_dec(icmp);
  serial_puts(" ICMP, ");
  serial_put_dec(udp);
  serial_puts(" UDP\n");
  return 1;
}
