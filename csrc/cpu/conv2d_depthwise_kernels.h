// The depthwise kernel bodies (channels innermost, one vector of channels at a time), written once against a
// vector policy V and included twice by conv2d_depthwise.cpp: once plain (portable, float32 and float64) and
// once inside an AVX2+FMA target region, so the same source is compiled for both instruction sets and chosen
// at run time. No include guard on purpose; the includer supplies the namespace and the policies.
//
// V: kLanes; reg; zero(); load(p); load_n(p, n); store(p, a); store_n(p, a, n); fma(a, b, c) = a * b + c;
// add(a, b). The _n forms touch only the first n lanes (channel tails: C not a multiple of kLanes).

// Loads NV vectors of channels at p; with kTail the last one holds only n_last lanes (the rest read as 0).
template <typename T, typename V, int NV, bool kTail>
inline void dw_load(const T* p, int n_last, typename V::reg* out) {
  for (int v = 0; v < NV; ++v)
    out[v] = (kTail && v == NV - 1) ? V::load_n(p + v * V::kLanes, n_last) : V::load(p + v * V::kLanes);
}

// One destination pixel, NV vectors of channels from c: acc = bias + sum over the row taps x column taps of
// src[row][col][c] * wt[tap][c]. The tap lists hold only taps that land inside the source, so there are no
// bounds checks (fprop: the window's in-bounds taps; dgrad: the outputs whose window reads this pixel).
template <typename T, typename V, int NV, bool kTail>
inline void dw_gather_block(const DwGather<T>& a, const DwTap* rows, int nr, const DwTap* cols, int nc, T* dst,
                            int64_t c, int n_last) {
  using reg = typename V::reg;
  reg acc[NV];
  if (a.bias) {
    dw_load<T, V, NV, kTail>(a.bias + c, n_last, acc);
  } else {
    for (int v = 0; v < NV; ++v) acc[v] = V::zero();
  }
  for (int ri = 0; ri < nr; ++ri) {
    const T* src_row = a.src + rows[ri].src * a.src_h + c;
    const T* wt_row = a.wt + rows[ri].tap * a.S * a.C + c;
    for (int ci = 0; ci < nc; ++ci) {
      const T* x = src_row + cols[ci].src * a.src_w;
      const T* w = wt_row + cols[ci].tap * a.C;
      for (int v = 0; v < NV; ++v) {
        const bool part = kTail && v == NV - 1;
        const reg xv = part ? V::load_n(x + v * V::kLanes, n_last) : V::load(x + v * V::kLanes);
        const reg wv = part ? V::load_n(w + v * V::kLanes, n_last) : V::load(w + v * V::kLanes);
        acc[v] = V::fma(xv, wv, acc[v]);
      }
    }
  }
  for (int v = 0; v < NV; ++v) {
    if (kTail && v == NV - 1)
      V::store_n(dst + v * V::kLanes, acc[v], n_last);
    else
      V::store(dst + v * V::kLanes, acc[v]);
  }
}

// One destination row: every pixel, every channel (4 vectors at a time, then single vectors, then the tail).
template <typename T, typename V>
void dw_gather_row(const DwGather<T>& a, const DwTap* rows, int nr, T* dst_row) {
  constexpr int64_t L = V::kLanes;
  for (int64_t j = 0; j < a.dst_cols; ++j) {
    const DwTap* cols = a.col_taps + j * a.S;
    const int nc = a.col_ntaps[j];
    T* dst = dst_row + j * a.dst_w;
    int64_t c = 0;
    for (; c + 4 * L <= a.C; c += 4 * L) dw_gather_block<T, V, 4, false>(a, rows, nr, cols, nc, dst + c, c, 0);
    for (; c + L <= a.C; c += L) dw_gather_block<T, V, 1, false>(a, rows, nr, cols, nc, dst + c, c, 0);
    if (c < a.C) dw_gather_block<T, V, 1, true>(a, rows, nr, cols, nc, dst + c, c, static_cast<int>(a.C - c));
  }
}

// Weight gradient of NV vectors of channels from c0 over images [n_begin, n_end): for each (n, p, r, s) the
// row sum over q of dy * x is formed in registers, then added to acc[r][s] (L1); the order (n, p, r, s, q) is
// fixed by the problem alone.
template <typename T, typename V, int NV, bool kTail>
void dw_wgrad_block(const DwWgrad<T>& a, int64_t c0, int n_last, int64_t n_begin, int64_t n_end, T* acc) {
  using reg = typename V::reg;
  constexpr int64_t L = V::kLanes;
  const Conv2dProblem& p = *a.p;
  const int64_t taps = p.R * p.S, width = a.group;  // acc is [taps][group] whatever NV is
  for (int64_t i = 0; i < taps * width; ++i) acc[i] = T(0);
  for (int64_t n = n_begin; n < n_end; ++n) {
    for (int64_t out_h = 0; out_h < p.P; ++out_h) {
      const T* dy_row = a.dy + n * a.dys.n + out_h * a.dys.h + c0;
      for (int64_t r = 0; r < p.R; ++r) {
        const int64_t h = out_h * p.stride_h - p.pad_h + r * p.dilation_h;
        if (h < 0 || h >= p.H) continue;
        const T* x_row = a.x + n * a.xs.n + h * a.xs.h + c0;
        for (int64_t s = 0; s < p.S; ++s) {
          const int64_t q_begin = a.q_begin[s], q_end = a.q_end[s];
          if (q_begin >= q_end) continue;
          reg sum[NV];
          for (int v = 0; v < NV; ++v) sum[v] = V::zero();
          const int64_t w0 = s * p.dilation_w - p.pad_w;
          for (int64_t q = q_begin; q < q_end; ++q) {
            reg dv[NV], xv[NV];
            dw_load<T, V, NV, kTail>(dy_row + q * a.dys.w, n_last, dv);
            dw_load<T, V, NV, kTail>(x_row + (q * p.stride_w + w0) * a.xs.w, n_last, xv);
            for (int v = 0; v < NV; ++v) sum[v] = V::fma(dv[v], xv[v], sum[v]);
          }
          T* acc_rs = acc + (r * p.S + s) * width;
          for (int v = 0; v < NV; ++v)
            V::store(acc_rs + v * L, V::add(V::load(acc_rs + v * L), sum[v]));
        }
      }
    }
  }
}

template <typename T, typename V>
void dw_wgrad_group(const DwWgrad<T>& a, int64_t c0, int64_t n_begin, int64_t n_end, T* acc) {
  constexpr int64_t L = V::kLanes;
  const int64_t nch = std::min<int64_t>(a.group, a.p->C - c0);
  const int full = static_cast<int>(nch / L), rest = static_cast<int>(nch % L);
  // Instantiate 1..4 full vectors, or that many with the last one partial.
  switch (full + (rest ? 1 : 0)) {
#define FC_DW_CASE(NV)                                                                      \
  case NV:                                                                                  \
    if (rest)                                                                               \
      dw_wgrad_block<T, V, NV, true>(a, c0, rest, n_begin, n_end, acc);                     \
    else                                                                                    \
      dw_wgrad_block<T, V, NV, false>(a, c0, 0, n_begin, n_end, acc);                       \
    break;
    FC_DW_CASE(1)
    FC_DW_CASE(2)
    FC_DW_CASE(3)
    FC_DW_CASE(4)
#undef FC_DW_CASE
    default: TORCH_INTERNAL_ASSERT(false, "depthwise wgrad: channel group wider than 4 vectors");
  }
}

// ---- NCHW: one (image, channel) plane at a time, vectorised along output columns ------------------------
// The plane is first copied into a small zero-padded buffer (L1-resident for common sizes) that every window
// reads without bounds checks; columns are split into stride_w phases so that for any stride the taps of
// consecutive output columns are consecutive in memory (column j of the plane lives in phase j % stride_w at
// j / stride_w).

// NV vectors of output columns of one row (the last one n_last wide when kTail), accumulated in registers:
// acc = bias + sum over (r, s) of buf[row + r * d_h][tap_off[s] + column] * wts[r][s].
template <typename T, typename V, int NV, bool kTail>
inline void dw_plane_chunk(const DwPlane<T>& a, const T* brow0, const T* wts, T bias, T* dst, int n_last) {
  using reg = typename V::reg;
  constexpr int64_t L = V::kLanes;
  reg acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = V::set1(bias);
  for (int64_t r = 0; r < a.R; ++r) {
    const T* brow = brow0 + r * a.dilation_h * a.buf_w;
    for (int64_t s = 0; s < a.S; ++s) {
      const T* x = brow + a.tap_off[s];
      const reg w = V::set1(wts[r * a.S + s]);
      for (int v = 0; v < NV; ++v) {
        const reg xv = (kTail && v == NV - 1) ? V::load_n(x + v * L, n_last) : V::load(x + v * L);
        acc[v] = V::fma(xv, w, acc[v]);
      }
    }
  }
  for (int v = 0; v < NV; ++v) {
    if (kTail && v == NV - 1)
      V::store_n(dst + v * L, acc[v], n_last);
    else
      V::store(dst + v * L, acc[v]);
  }
}

// out[i][j] = bias + sum over (r, s) of buf[i * st_h + r * d_h][tap_off[s] + j] * wts[r][s] for one plane,
// 4 vectors of columns at a time, then the remainder as 1..4 vectors with a partial last one.
template <typename T, typename V>
void dw_plane_correlate(const DwPlane<T>& a, const T* buf, const T* wts, T bias, T* out, int64_t out_h,
                        int64_t out_w, T* row_tmp) {
  constexpr int64_t L = V::kLanes;
  const bool contiguous_row = out_w == 1;
  for (int64_t i = 0; i < a.rows; ++i) {
    T* dst = contiguous_row ? out + i * out_h : row_tmp;
    const T* brow0 = buf + i * a.stride_h * a.buf_w;
    int64_t j0 = 0;
    for (; j0 + 4 * L <= a.cols; j0 += 4 * L) dw_plane_chunk<T, V, 4, false>(a, brow0 + j0, wts, bias, dst + j0, 0);
    const int64_t rest = a.cols - j0;
    if (rest > 0) {
      const int nv = static_cast<int>((rest + L - 1) / L), n_last = static_cast<int>(rest - (nv - 1) * L);
      switch (nv) {
        case 1: dw_plane_chunk<T, V, 1, true>(a, brow0 + j0, wts, bias, dst + j0, n_last); break;
        case 2: dw_plane_chunk<T, V, 2, true>(a, brow0 + j0, wts, bias, dst + j0, n_last); break;
        case 3: dw_plane_chunk<T, V, 3, true>(a, brow0 + j0, wts, bias, dst + j0, n_last); break;
        default: dw_plane_chunk<T, V, 4, true>(a, brow0 + j0, wts, bias, dst + j0, n_last); break;
      }
    }
    if (!contiguous_row)
      for (int64_t j = 0; j < a.cols; ++j) out[i * out_h + j * out_w] = row_tmp[j];
  }
}

// Weight gradient of one plane pair, added to acc[tap][lane]: for each output row and vector of columns,
// dy times the window-shifted input, per tap. The lanes are summed by the caller in a fixed order.
template <typename T, typename V>
void dw_plane_wgrad(const DwPlane<T>& a, const T* buf, const T* dy, int64_t dy_h, T* acc) {
  using reg = typename V::reg;
  constexpr int64_t L = V::kLanes;
  const int64_t taps = a.R * a.S;
  for (int64_t i = 0; i < a.rows; ++i) {
    const T* dy_row = dy + i * dy_h;
    for (int64_t j0 = 0; j0 < a.cols; j0 += L) {
      const int n = static_cast<int>(std::min<int64_t>(L, a.cols - j0));
      const reg d = n == L ? V::load(dy_row + j0) : V::load_n(dy_row + j0, n);
      for (int64_t r = 0; r < a.R; ++r) {
        const T* brow = buf + (i * a.stride_h + r * a.dilation_h) * a.buf_w + j0;
        for (int64_t s = 0; s < a.S; ++s) {
          const T* x = brow + a.tap_off[s];
          T* acc_t = acc + (r * a.S + s) * L;
          const reg xv = n == L ? V::load(x) : V::load_n(x, n);
          V::store(acc_t, V::fma(d, xv, V::load(acc_t)));
        }
      }
    }
  }
  (void)taps;
}
