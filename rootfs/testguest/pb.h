/* A small protobuf wire-format reader and writer for the `agent` scenario: varints and
 * length-delimited fields are all agent.proto's flat messages use; other wire types are
 * skipped when reading. Every read is bounds-checked, so malformed input sets an error flag
 * and never reads outside the buffer. */
#pragma once

#include <stdint.h>

#define PB_VARINT 0
#define PB_FIXED64 1
#define PB_LEN 2
#define PB_FIXED32 5

struct pb_reader {
  const uint8_t *p;
  const uint8_t *end;
  int error; /* set once input is malformed; every later call fails */
};

struct pb_writer {
  uint8_t *buf;
  uint32_t len;
  uint32_t cap;
  int overflow; /* set once a write did not fit; the message is then unusable */
};

/* A reader of data[0..len), a writer into buf[0..cap). */
struct pb_reader pb_reader_of(const void *data, uint32_t len);
struct pb_writer pb_writer_of(void *buf, uint32_t cap);

/* The next field's number and wire type: 1, or 0 at the end of the message (r->error set
 * when the end is not a clean one). */
int pb_next(struct pb_reader *r, uint32_t *field, uint32_t *wire_type);
/* The current field's value, of the wire type pb_next gave. Return 1, or 0 with r->error. */
int pb_read_varint(struct pb_reader *r, uint64_t *value);
int pb_read_len(struct pb_reader *r, const uint8_t **data, uint32_t *len);
/* Skips the current field's value (any wire type but the deprecated groups). */
int pb_skip(struct pb_reader *r, uint32_t wire_type);

void pb_put_varint(struct pb_writer *w, uint32_t field, uint64_t value);
void pb_put_bytes(struct pb_writer *w, uint32_t field, const void *data, uint32_t len);
