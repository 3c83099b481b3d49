/* The few libc functions the compiler may call even in freestanding code. */
#pragma once

#include <stdint.h>

typedef __SIZE_TYPE__ size_t;

void *memset(void *dst, int value, size_t n);
void *memcpy(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
