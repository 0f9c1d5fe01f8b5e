/* Seeded pseudo-random numbers, the same on every machine: splitmix64 (one 64-bit word of state:
 * reservoir, samplers, holdout and replay draws) and xoshiro256** (four words: weight
 * initialisation). Not for anything secret. Header-only: the generators are a few instructions. */
#ifndef EDDY_RNG_H
#define EDDY_RNG_H

#include <stdint.h>

/* splitmix64: advances *state and returns the next value. */
static inline uint64_t eddy_rng_next(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Uniform in [0, n) (0 when n is 0); modulo bias is below 2^-40 for the n eddy uses. */
static inline uint64_t eddy_rng_below(uint64_t *state, uint64_t n) { return n ? eddy_rng_next(state) % n : 0; }

/* Uniform double in [0, 1), 53 random bits. */
static inline double eddy_rng_unit(uint64_t *state) { return (double)(eddy_rng_next(state) >> 11) * 0x1.0p-53; }

/* xoshiro256**: s is 4 words, seeded by eddy_xoshiro_seed. */
static inline void eddy_xoshiro_seed(uint64_t s[4], uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) s[i] = eddy_rng_next(&x);
}

static inline uint64_t eddy_xoshiro_next(uint64_t s[4]) {
  uint64_t x = s[1] * 5, t = s[1] << 17;
  uint64_t result = ((x << 7) | (x >> 57)) * 9;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = (s[3] << 45) | (s[3] >> 19);
  return result;
}

#endif
