#ifndef ILA_CLIBDEFLATE_SHIM_H
#define ILA_CLIBDEFLATE_SHIM_H
// libdeflate (Debian libdeflate-dev): whole-buffer zlib-format compression, several times faster
// than zlib at the same level; its output is what HDF5's deflate filter decodes with inflate.
#include <libdeflate.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

// HDF5's shuffle filter (H5Zshuffle.c): byte j of element i goes to dst[j * n + i], for n
// elements of `size` bytes. SSE2 (every x86-64) for 4- and 2-byte elements: the compiler does
// not vectorise the plain loop without AVX2 (1.4 GB/s against ~10 here).
static inline void ila_shuffle(const uint8_t *restrict src, uint8_t *restrict dst, size_t n, size_t size) {
    size_t i = 0;
    if (size == 4) {
        uint8_t *restrict d0 = dst, *restrict d1 = dst + n, *restrict d2 = dst + 2 * n, *restrict d3 = dst + 3 * n;
#if defined(__SSE2__)
        const __m128i low = _mm_set1_epi32(0xFF);
        for (; i + 16 <= n; i += 16) {
            const __m128i a = _mm_loadu_si128((const __m128i *)(src + 4 * i));
            const __m128i b = _mm_loadu_si128((const __m128i *)(src + 4 * i + 16));
            const __m128i c = _mm_loadu_si128((const __m128i *)(src + 4 * i + 32));
            const __m128i d = _mm_loadu_si128((const __m128i *)(src + 4 * i + 48));
#define ILA_PLANE(shift, out)                                                                      \
            {                                                                                      \
                __m128i ab = _mm_packs_epi32(_mm_and_si128(_mm_srli_epi32(a, shift), low),         \
                                             _mm_and_si128(_mm_srli_epi32(b, shift), low));        \
                __m128i cd = _mm_packs_epi32(_mm_and_si128(_mm_srli_epi32(c, shift), low),         \
                                             _mm_and_si128(_mm_srli_epi32(d, shift), low));        \
                _mm_storeu_si128((__m128i *)((out) + i), _mm_packus_epi16(ab, cd));                \
            }
            ILA_PLANE(0, d0) ILA_PLANE(8, d1) ILA_PLANE(16, d2) ILA_PLANE(24, d3)
#undef ILA_PLANE
        }
#endif
        for (; i < n; i++) {
            d0[i] = src[4 * i];
            d1[i] = src[4 * i + 1];
            d2[i] = src[4 * i + 2];
            d3[i] = src[4 * i + 3];
        }
    } else if (size == 2) {
        uint8_t *restrict d0 = dst, *restrict d1 = dst + n;
#if defined(__SSE2__)
        const __m128i low = _mm_set1_epi16(0xFF);
        for (; i + 16 <= n; i += 16) {
            const __m128i a = _mm_loadu_si128((const __m128i *)(src + 2 * i));
            const __m128i b = _mm_loadu_si128((const __m128i *)(src + 2 * i + 16));
            _mm_storeu_si128((__m128i *)(d0 + i), _mm_packus_epi16(_mm_and_si128(a, low), _mm_and_si128(b, low)));
            _mm_storeu_si128((__m128i *)(d1 + i), _mm_packus_epi16(_mm_srli_epi16(a, 8), _mm_srli_epi16(b, 8)));
        }
#endif
        for (; i < n; i++) {
            d0[i] = src[2 * i];
            d1[i] = src[2 * i + 1];
        }
    } else {
        for (size_t j = 0; j < size; j++)
            for (i = 0; i < n; i++) dst[j * n + i] = src[i * size + j];
    }
}

#endif
