/* The `agent` scenario: serves agent.proto's test-guest subset (agent_service.c) on
 * AGENT_GUEST_PORT over virtio-vsock, and echoes bytes on AGENT_BYTE_ECHO_PORT. It serves
 * until the VMM is stopped, so it never prints PASS. Each connection carries one request
 * frame: once it is answered the guest shuts the connection down. A TRANSPORT_RESET (a
 * snapshot restore) drops every connection; the guest keeps listening and announces itself
 * again. */
#include "agent_ports.h"
#include "agent_service.h"
#include "lib.h"
#include "scenario.h"
#include "serial.h"
#include "tsc.h"
#include "virtio_vsock.h"

/* The guest's port for its ready-event connection to the host. */
#define READY_LOCAL_PORT 49153
#define MAX_CONNS 4

enum conn_kind { CONN_FREE, CONN_AGENT, CONN_ECHO };

/* One connection's addresses, and the bytes received (the guest consumes them at once). */
struct link {
  uint32_t local, peer;
  uint32_t fwd_cnt;
};

struct conn {
  enum conn_kind kind;
  struct link l;
  int streaming; /* 0, or what agent_exec left running on it (AGENT_STDIN, AGENT_SLEEPING) */
  uint64_t start_tsc;
  uint32_t have; /* bytes of the frames not yet served, in buf */
  uint8_t buf[VSOCK_BUF_ALLOC];
};

static struct virtio_vsock vs;
static struct agent_state state;
static struct conn conns[MAX_CONNS];
static uint8_t event_frame[AGENT_MAX_FRAME];

/* agent_send_fn for a connection: the frame in RW packets of at most VSOCK_MAX_PAYLOAD. The
 * host's window (256 KiB in ember-vmm) is far above the largest frame, so no credit wait. */
static int send_frame(void *ctx, const uint8_t *frame, uint32_t len, const char **reason) {
  const struct link *c = ctx;
  for (uint32_t off = 0; off < len;) {
    uint32_t n = len - off < VSOCK_MAX_PAYLOAD ? len - off : VSOCK_MAX_PAYLOAD;
    if (!virtio_vsock_send(&vs, c->local, c->peer, VSOCK_OP_RW, 0, c->fwd_cnt, frame + off, n,
                           reason)) {
      return 0;
    }
    off += n;
  }
  return 1;
}

static int control(const struct link *c, uint16_t op, uint32_t flags, const char **reason) {
  return virtio_vsock_send(&vs, c->local, c->peer, op, flags, c->fwd_cnt, 0, 0, reason);
}

/* Ends a connection from the guest's side (agent.proto: both close after the final answer). */
static int finish(struct conn *c, const char **reason) {
  c->kind = CONN_FREE;
  return control(&c->l, VSOCK_OP_SHUTDOWN, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND, reason);
}

static int announce(const char **reason) {
  return virtio_vsock_send(&vs, READY_LOCAL_PORT, AGENT_READY_HOST_PORT, VSOCK_OP_REQUEST, 0, 0, 0,
                           0, reason);
}

/* The ready-event connection: on the host's RESPONSE, one AgentEvent and a shutdown. An RST
 * (no listener) or anything after is ignored: the event is best effort. */
static int ready_event_packet(const struct vsock_hdr *h, const char **reason) {
  if (h->op != VSOCK_OP_RESPONSE) return 1;
  struct link l = {.local = READY_LOCAL_PORT, .peer = AGENT_READY_HOST_PORT};
  uint32_t len = agent_ready_event(&state, event_frame);
  return send_frame(&l, event_frame, len, reason) &&
         control(&l, VSOCK_OP_SHUTDOWN, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND, reason);
}

static struct conn *find(uint32_t local, uint32_t peer) {
  for (int i = 0; i < MAX_CONNS; i++) {
    if (conns[i].kind != CONN_FREE && conns[i].l.local == local && conns[i].l.peer == peer) {
      return &conns[i];
    }
  }
  return 0;
}

static int accept_conn(const struct vsock_hdr *h, const char **reason) {
  struct conn *c = find(h->dst_port, h->src_port); /* a reused port: a new connection */
  for (int i = 0; !c && i < MAX_CONNS; i++) {
    if (conns[i].kind == CONN_FREE) c = &conns[i];
  }
  struct link refused = {.local = h->dst_port, .peer = h->src_port};
  if (!c) return control(&refused, VSOCK_OP_RST, 0, reason);
  c->kind = h->dst_port == AGENT_GUEST_PORT ? CONN_AGENT : CONN_ECHO;
  c->l = refused;
  c->have = 0;
  c->streaming = 0;
  c->start_tsc = rdtsc();
  return control(&c->l, VSOCK_OP_RESPONSE, 0, reason);
}

/* Whether c->buf starts with a whole frame, whose payload length goes to *len; *refuse is
 * set when that length is more than the buffer holds. */
static int whole_frame(const struct conn *c, uint32_t *len, int *refuse) {
  if (c->have < 4) return 0;
  *len = (uint32_t)c->buf[0] | (uint32_t)c->buf[1] << 8 | (uint32_t)c->buf[2] << 16 |
         (uint32_t)c->buf[3] << 24;
  *refuse = *len > AGENT_MAX_REQUEST;
  return !*refuse && c->have >= 4 + *len;
}

/* Collects frames: the request, then for a streaming `cat` or a `sleep` its later frames. Each whole
 * frame is served and dropped from the buffer; a length too large is refused. Bytes after the
 * final answer are dropped: one request per connection. */
static int agent_data(struct conn *c, const uint8_t *data, uint32_t n, const char **reason) {
  uint32_t room = (uint32_t)sizeof(c->buf) - c->have;
  if (n > room) n = room; /* only a peer ignoring the credit window sends more */
  memcpy(c->buf + c->have, data, n);
  c->have += n;
  int refuse = 0;
  uint32_t len;
  while (whole_frame(c, &len, &refuse)) {
    int r = c->streaming ? agent_stdin(c->buf + 4, len, c->streaming, c->start_tsc, send_frame,
                                       &c->l, reason)
                         : agent_serve(&state, c->buf + 4, len, send_frame, &c->l, reason);
    if (r == 0) return 0;
    if (r == AGENT_FINAL) return finish(c, reason);
    c->streaming = r;
    c->have -= 4 + len;
    /* The room this frees reaches the host in the fwd_cnt of the guest's next packet, or in
     * its answer to the device's CREDIT_REQUEST. */
    for (uint32_t i = 0; i < c->have; i++) c->buf[i] = c->buf[4 + len + i];
  }
  if (!refuse) return 1;
  return agent_send_error(AGENT_RESOURCE_EXHAUSTED,
                          "request frame larger than the test guest's 4092 bytes", send_frame,
                          &c->l, reason) &&
         finish(c, reason);
}

static int handle(const struct vsock_packet *p, const char **reason) {
  const struct vsock_hdr h = p->hdr;
  if (h.dst_port == READY_LOCAL_PORT) return ready_event_packet(&h, reason);
  if (h.op == VSOCK_OP_REQUEST &&
      (h.dst_port == AGENT_GUEST_PORT || h.dst_port == AGENT_BYTE_ECHO_PORT)) {
    return accept_conn(&h, reason);
  }
  struct conn *c = find(h.dst_port, h.src_port);
  if (!c) {
    struct link stray = {.local = h.dst_port, .peer = h.src_port};
    return h.op == VSOCK_OP_RST || control(&stray, VSOCK_OP_RST, 0, reason);
  }
  switch (h.op) {
    case VSOCK_OP_RW:
      if (h.len > VSOCK_MAX_PAYLOAD) { /* the device never sends more than the buffer holds */
        c->kind = CONN_FREE;
        return control(&c->l, VSOCK_OP_RST, 0, reason);
      }
      c->l.fwd_cnt += h.len;
      if (c->kind == CONN_ECHO) {
        return virtio_vsock_send(&vs, c->l.local, c->l.peer, VSOCK_OP_RW, 0, c->l.fwd_cnt,
                                 p->payload, h.len, reason);
      }
      return agent_data(c, p->payload, h.len, reason);
    case VSOCK_OP_CREDIT_REQUEST:
      return control(&c->l, VSOCK_OP_CREDIT_UPDATE, 0, reason);
    case VSOCK_OP_SHUTDOWN: /* the host left before its answer, or ends an echo */
      c->kind = CONN_FREE;
      return control(&c->l, VSOCK_OP_RST, 0, reason);
    case VSOCK_OP_RST:
      c->kind = CONN_FREE;
      return 1;
    default:
      return 1;
  }
}

int agent_scenario(const struct boot_info *boot, const char **reason) {
  if (!virtio_vsock_init(&vs, boot->cmdline, reason)) return 0;
  agent_state_init(&state);
  if (!announce(reason)) return 0;
  serial_puts("agent: listening\n");
  for (;;) {
    /* Events first: a reset the device raised before it delivered a new connection must not
     * drop that connection. */
    uint32_t id;
    if (virtio_vsock_poll_event(&vs, &id) && id == VSOCK_EVENT_TRANSPORT_RESET) {
      memset(conns, 0, sizeof(conns));
      serial_puts("agent: transport reset\n");
      if (!announce(reason)) return 0;
    }
    const struct vsock_packet *p = virtio_vsock_poll(&vs);
    if (p && !handle(p, reason)) return 0;
  }
}
