// The 16-lane vector layer (csrc/cpu/simd/vec16.h): the portable implementation against its definition
// on every CPU (masks of every length, NaN and infinities, tails that end at a page-like boundary), and
// against the AVX-512 implementation bit for bit where this CPU (and FASTCONV_CPU_ISA) allows AVX-512.
#include <ATen/ATen.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "check.h"
#include "cpu/cpu_features.h"
#include "cpu/simd/vec16.h"

namespace {

using fastconv::cpu::simd::first_lanes;
using fastconv::cpu::simd::Mask16;
using P = fastconv::cpu::simd::Vec16Portable;

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0 || (std::isnan(a) && std::isnan(b)); }

void fill(float* x, std::mt19937& rng) {
  std::normal_distribution<float> d;
  for (int i = 0; i < 16; ++i) x[i] = d(rng);
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), 0.0f, -0.0f};
  x[rng() % 16] = specials[rng() % 5];
}

void portable_against_definition(std::mt19937& rng) {
  alignas(64) float a[16], b[16], c[16], out[16];
  fill(a, rng);
  fill(b, rng);
  fill(c, rng);
  const P va = P::load(a), vb = P::load(b), vc = P::load(c);
  P::fma(va, vb, vc).store(out);
  for (int i = 0; i < 16; ++i) CHECK(same_bits(out[i], std::fma(a[i], b[i], c[i])), "fma lane %d", i);
  P::max(va, vb).store(out);
  for (int i = 0; i < 16; ++i) CHECK(same_bits(out[i], a[i] > b[i] ? a[i] : b[i]), "max lane %d", i);
  const Mask16 gt = P::greater(va, vb), nan = P::is_nan(va);
  for (int i = 0; i < 16; ++i) {
    CHECK(((gt >> i) & 1) == (a[i] > b[i]), "greater lane %d", i);
    CHECK(((nan >> i) & 1) == std::isnan(a[i]), "is_nan lane %d", i);
  }
  P::blend(gt, va, vb).store(out);
  for (int i = 0; i < 16; ++i) CHECK(same_bits(out[i], a[i] > b[i] ? b[i] : a[i]), "blend lane %d", i);
  for (int n = 0; n <= 16; ++n) {
    const Mask16 m = first_lanes(n);
    // A tail of n elements read from the end of a buffer: lanes past it must not be read.
    float tail[16];
    std::memcpy(tail, a, sizeof(float) * n);
    const P t = P::load_masked(tail, m);
    for (int i = 0; i < 16; ++i) CHECK(same_bits(t.lane[i], i < n ? a[i] : 0.0f), "load_masked n=%d lane %d", n, i);
    for (int i = 0; i < 16; ++i) out[i] = -1.0f;
    vb.store_masked(out, m);
    for (int i = 0; i < 16; ++i) CHECK(same_bits(out[i], i < n ? b[i] : -1.0f), "store_masked n=%d lane %d", n, i);
  }
}

#if FASTCONV_HAVE_AVX512_CODE
using N = fastconv::cpu::simd::Vec16Avx512;

// Every operation through both layers, bit for bit.
FC_AVX512 void native_against_portable(std::mt19937& rng) {
  alignas(64) float a[16], b[16], c[16], p[16], n[16];
  fill(a, rng);
  fill(b, rng);
  fill(c, rng);
  const P pa = P::load(a), pb = P::load(b), pc = P::load(c);
  const N na = N::load(a), nb = N::load(b), nc = N::load(c);
  auto agree = [&](const char* op) {
    for (int i = 0; i < 16; ++i) CHECK(same_bits(p[i], n[i]), "%s lane %d: portable %g, avx512 %g", op, i, p[i], n[i]);
  };
  P::fma(pa, pb, pc).store(p);
  N::fma(na, nb, nc).store(n);
  agree("fma");
  P::add(pa, pb).store(p);
  N::add(na, nb).store(n);
  agree("add");
  P::max(pa, pb).store(p);
  N::max(na, nb).store(n);
  agree("max");
  CHECK(P::greater(pa, pb) == N::greater(na, nb), "greater");
  CHECK(P::is_nan(pa) == N::is_nan(na), "is_nan");
  const Mask16 m = static_cast<Mask16>(rng());
  P::blend(m, pa, pb).store(p);
  N::blend(m, na, nb).store(n);
  agree("blend");
  CHECK(same_bits(P::loadu(b).reduce_add(), N::loadu(b).reduce_add()), "reduce_add");
  for (int len = 0; len <= 16; ++len) {
    P::load_masked(a, first_lanes(len)).storeu(p);
    N::load_masked(a, first_lanes(len)).storeu(n);
    agree("load_masked");
  }
}
#endif

}  // namespace

int main() {
  std::mt19937 rng(1234);
  for (int round = 0; round < 200; ++round) portable_against_definition(rng);
#if FASTCONV_HAVE_AVX512_CODE
  if (fastconv::cpu::cpu_has_avx512()) {
    for (int round = 0; round < 200; ++round) native_against_portable(rng);
  } else {
    std::printf("AVX-512 not available here (ISA level %s): the native layer is not compared\n",
                fastconv::cpu::cpu_isa_name(fastconv::cpu::cpu_isa()));
  }
#endif
  return fastconv_test::summary();
}
