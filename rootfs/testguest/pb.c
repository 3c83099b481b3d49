#include "pb.h"

#include "lib.h"

struct pb_reader pb_reader_of(const void *data, uint32_t len) {
  const uint8_t *p = data;
  return (struct pb_reader){p, p + len, 0};
}

struct pb_writer pb_writer_of(void *buf, uint32_t cap) {
  return (struct pb_writer){buf, 0, cap, 0};
}

static int fail(struct pb_reader *r) {
  r->error = 1;
  return 0;
}

/* A raw varint: at most 10 bytes, the tenth holding only bit 63. */
static int raw_varint(struct pb_reader *r, uint64_t *value) {
  uint64_t v = 0;
  for (uint32_t shift = 0; shift < 64; shift += 7) {
    if (r->p >= r->end) return fail(r);
    uint8_t b = *r->p++;
    if (shift == 63 && b > 1) return fail(r);
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *value = v;
      return 1;
    }
  }
  return fail(r);
}

int pb_next(struct pb_reader *r, uint32_t *field, uint32_t *wire_type) {
  if (r->error || r->p >= r->end) return 0;
  uint64_t key;
  if (!raw_varint(r, &key)) return 0;
  if (key >> 3 == 0 || key >> 3 > 0x1fffffff) return fail(r);
  *field = (uint32_t)(key >> 3);
  *wire_type = (uint32_t)(key & 7);
  return 1;
}

int pb_read_varint(struct pb_reader *r, uint64_t *value) {
  if (r->error) return 0;
  return raw_varint(r, value);
}

int pb_read_len(struct pb_reader *r, const uint8_t **data, uint32_t *len) {
  uint64_t n;
  if (!pb_read_varint(r, &n)) return 0;
  if (n > (uint64_t)(r->end - r->p)) return fail(r);
  *data = r->p;
  *len = (uint32_t)n;
  r->p += n;
  return 1;
}

int pb_skip(struct pb_reader *r, uint32_t wire_type) {
  uint64_t v;
  const uint8_t *d;
  uint32_t n;
  switch (wire_type) {
    case PB_VARINT:
      return pb_read_varint(r, &v);
    case PB_LEN:
      return pb_read_len(r, &d, &n);
    case PB_FIXED64:
    case PB_FIXED32: {
      uint32_t size = wire_type == PB_FIXED64 ? 8 : 4;
      if ((uint64_t)(r->end - r->p) < size) return fail(r);
      r->p += size;
      return 1;
    }
    default: /* groups (3, 4) and the unused 6, 7 */
      return fail(r);
  }
}

static void put_raw(struct pb_writer *w, uint64_t v) {
  do {
    uint8_t b = (uint8_t)(v & 0x7f);
    v >>= 7;
    if (v) b |= 0x80;
    if (w->len >= w->cap) {
      w->overflow = 1;
      return;
    }
    w->buf[w->len++] = b;
  } while (v);
}

void pb_put_varint(struct pb_writer *w, uint32_t field, uint64_t value) {
  put_raw(w, (uint64_t)field << 3 | PB_VARINT);
  put_raw(w, value);
}

void pb_put_bytes(struct pb_writer *w, uint32_t field, const void *data, uint32_t len) {
  put_raw(w, (uint64_t)field << 3 | PB_LEN);
  put_raw(w, len);
  if (w->overflow || len > w->cap - w->len) {
    w->overflow = 1;
    return;
  }
  memcpy(w->buf + w->len, data, len);
  w->len += len;
}
