// Part of kanlab's compiled kernel: fine grids' blocked kernels (the weight rearranged in cache).
// One translation unit: kernel.cpp includes the parts in order (each uses the ones before it).
#pragma once

namespace {

// Whether the rearrangements between coef's layout and the padded one go a square block of
// vectors at a time, transposed in registers (AVX-512 and AVX2), or element by element.
#if defined(__AVX512F__) || defined(__AVX2__)
#define KANLAB_TRANSPOSES 1
#endif

#if defined(__AVX512F__)
// Masked unaligned loads and stores of one vector (the first lanes), for the rearrangements
// between coef's layout and the padded one.
template <typename T> struct MaskedVector;
template <> struct MaskedVector<float> {
  using V = Simd<float>::V;
  typedef __mmask16 Mask;
  static Mask first(int64_t lanes) { return static_cast<Mask>((1u << lanes) - 1u); }
  static V load(const float* p, Mask mask) { return (V)_mm512_maskz_loadu_ps(mask, p); }
  static void store(float* p, V v, Mask mask) { _mm512_mask_storeu_ps(p, mask, (__m512)v); }
};
template <> struct MaskedVector<double> {
  using V = Simd<double>::V;
  typedef __mmask8 Mask;
  static Mask first(int64_t lanes) { return static_cast<Mask>((1u << lanes) - 1u); }
  static V load(const double* p, Mask mask) { return (V)_mm512_maskz_loadu_pd(mask, p); }
  static void store(double* p, V v, Mask mask) { _mm512_mask_storeu_pd(p, mask, (__m512d)v); }
};

// A square block of vectors transposed in registers: rows[r] lane c becomes rows[c] lane r
// (unpacks within 128-bit lanes, then two rounds of 128-bit lane shuffles).
inline void transpose_block(Simd<float>::V (&rows)[16]) {
  __m512 t[16], u[16], v[16];
  for (int p = 0; p < 8; ++p) {
    t[2 * p] = _mm512_unpacklo_ps((__m512)rows[2 * p], (__m512)rows[2 * p + 1]);
    t[2 * p + 1] = _mm512_unpackhi_ps((__m512)rows[2 * p], (__m512)rows[2 * p + 1]);
  }
  for (int q = 0; q < 4; ++q) {  // u[4q + c], lane j: column 4j + c of rows 4q .. 4q + 3
    const __m512d a = _mm512_castps_pd(t[4 * q]), b = _mm512_castps_pd(t[4 * q + 2]);
    const __m512d c = _mm512_castps_pd(t[4 * q + 1]), d = _mm512_castps_pd(t[4 * q + 3]);
    u[4 * q] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
    u[4 * q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    u[4 * q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
    u[4 * q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
  }
  for (int c = 0; c < 4; ++c) {
    v[c] = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);
    v[4 + c] = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xdd);
    v[8 + c] = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
    v[12 + c] = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xdd);
  }
  for (int c = 0; c < 4; ++c) {
    rows[c] = (Simd<float>::V)_mm512_shuffle_f32x4(v[c], v[8 + c], 0x88);
    rows[8 + c] = (Simd<float>::V)_mm512_shuffle_f32x4(v[c], v[8 + c], 0xdd);
    rows[4 + c] = (Simd<float>::V)_mm512_shuffle_f32x4(v[4 + c], v[12 + c], 0x88);
    rows[12 + c] = (Simd<float>::V)_mm512_shuffle_f32x4(v[4 + c], v[12 + c], 0xdd);
  }
}

inline void transpose_block(Simd<double>::V (&rows)[8]) {
  __m512d t[8], v[8];
  for (int p = 0; p < 4; ++p) {  // t[2p + c], lane j: column 2j + c of rows 2p, 2p + 1
    t[2 * p] = _mm512_unpacklo_pd((__m512d)rows[2 * p], (__m512d)rows[2 * p + 1]);
    t[2 * p + 1] = _mm512_unpackhi_pd((__m512d)rows[2 * p], (__m512d)rows[2 * p + 1]);
  }
  for (int c = 0; c < 2; ++c) {
    v[c] = _mm512_shuffle_f64x2(t[c], t[2 + c], 0x88);
    v[2 + c] = _mm512_shuffle_f64x2(t[c], t[2 + c], 0xdd);
    v[4 + c] = _mm512_shuffle_f64x2(t[4 + c], t[6 + c], 0x88);
    v[6 + c] = _mm512_shuffle_f64x2(t[4 + c], t[6 + c], 0xdd);
  }
  for (int c = 0; c < 2; ++c) {
    rows[c] = (Simd<double>::V)_mm512_shuffle_f64x2(v[c], v[4 + c], 0x88);
    rows[4 + c] = (Simd<double>::V)_mm512_shuffle_f64x2(v[c], v[4 + c], 0xdd);
    rows[2 + c] = (Simd<double>::V)_mm512_shuffle_f64x2(v[2 + c], v[6 + c], 0x88);
    rows[6 + c] = (Simd<double>::V)_mm512_shuffle_f64x2(v[2 + c], v[6 + c], 0xdd);
  }
}
#elif defined(__AVX2__)
// AVX2's: the masks are vectors whose lanes' sign bits choose (maskload reads nothing, and
// faults on nothing, outside them). Whole vectors go by plain loads and stores: Zen's masked
// stores are microcoded (the fine forward took 1.11-1.17x as long with them).
struct AVX2Mask {
  __m256i bits;
  bool whole;  // every lane
};
template <typename T> struct MaskedVector;
template <> struct MaskedVector<float> {
  using V = Simd<float>::V;
  typedef AVX2Mask Mask;
  static Mask first(int64_t lanes) {
    return {_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(lanes)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)),
            lanes >= 8};
  }
  static V load(const float* p, Mask mask) {
    return mask.whole ? load_vector<V>(p) : (V)_mm256_maskload_ps(p, mask.bits);
  }
  static void store(float* p, V v, Mask mask) {
    if (mask.whole) store_vector(p, v);
    else _mm256_maskstore_ps(p, mask.bits, (__m256)v);
  }
};
template <> struct MaskedVector<double> {
  using V = Simd<double>::V;
  typedef AVX2Mask Mask;
  static Mask first(int64_t lanes) {
    return {_mm256_cmpgt_epi64(_mm256_set1_epi64x(lanes), _mm256_setr_epi64x(0, 1, 2, 3)), lanes >= 4};
  }
  static V load(const double* p, Mask mask) {
    return mask.whole ? load_vector<V>(p) : (V)_mm256_maskload_pd(p, mask.bits);
  }
  static void store(double* p, V v, Mask mask) {
    if (mask.whole) store_vector(p, v);
    else _mm256_maskstore_pd(p, mask.bits, (__m256d)v);
  }
};

// rows[r] lane c becomes rows[c] lane r: unpacks and shuffles within 128-bit lanes, then the
// halves exchanged.
inline void transpose_block(Simd<float>::V (&rows)[8]) {
  __m256 t[8], u[8];
  for (int p = 0; p < 4; ++p) {  // t[2p], lanes: a0 b0 a1 b1 | a4 b4 a5 b5 of rows a, b = 2p, 2p + 1
    t[2 * p] = _mm256_unpacklo_ps((__m256)rows[2 * p], (__m256)rows[2 * p + 1]);
    t[2 * p + 1] = _mm256_unpackhi_ps((__m256)rows[2 * p], (__m256)rows[2 * p + 1]);
  }
  for (int h = 0; h < 2; ++h) {  // u[4h + c]: column c | c + 4 of rows 4h .. 4h + 3
    u[4 * h] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0x44);
    u[4 * h + 1] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0xee);
    u[4 * h + 2] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0x44);
    u[4 * h + 3] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0xee);
  }
  for (int c = 0; c < 4; ++c) {
    rows[c] = (Simd<float>::V)_mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
    rows[4 + c] = (Simd<float>::V)_mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
  }
}

inline void transpose_block(Simd<double>::V (&rows)[4]) {
  const __m256d t0 = _mm256_unpacklo_pd((__m256d)rows[0], (__m256d)rows[1]);  // a0 b0 | a2 b2
  const __m256d t1 = _mm256_unpackhi_pd((__m256d)rows[0], (__m256d)rows[1]);  // a1 b1 | a3 b3
  const __m256d t2 = _mm256_unpacklo_pd((__m256d)rows[2], (__m256d)rows[3]);
  const __m256d t3 = _mm256_unpackhi_pd((__m256d)rows[2], (__m256d)rows[3]);
  rows[0] = (Simd<double>::V)_mm256_permute2f128_pd(t0, t2, 0x20);
  rows[1] = (Simd<double>::V)_mm256_permute2f128_pd(t1, t3, 0x20);
  rows[2] = (Simd<double>::V)_mm256_permute2f128_pd(t0, t2, 0x31);
  rows[3] = (Simd<double>::V)_mm256_permute2f128_pd(t1, t3, 0x31);
}
#endif

// Input i's padded spline rows for the outputs [o0, o0 + outputs), outputs at most one vector:
// rows[r * row_stride + l] for r < n_basis + 2k is row r of the padded weight at output o0 + l,
// zero above and below the bases and mask * scale_sp * coef between (C, S, M: coef (out, in,
// n_basis), scale_sp and mask (out, in)). With AVX-512 or AVX2 the outputs' coefficients (each a run
// of coef) are loaded, scaled and transposed in registers, a vector of bases at a time.
template <typename T>
inline void scaled_spline_rows(const T* C, const T* S, const T* M, const LocalShape& shape, int64_t k, int64_t i,
                               int64_t o0, int64_t outputs, T* rows, int64_t row_stride) {
  const int64_t n_in = shape.n_in, n_basis = shape.n_basis;
#if defined(KANLAB_TRANSPOSES)
  using Masked = MaskedVector<T>;
  using V = typename Simd<T>::V;
  constexpr int64_t kLanes = kVectorBytes / sizeof(T);
  const V zero = {};
  const auto output_mask = Masked::first(outputs);
  T scales[kLanes];
  for (int64_t l = 0; l < outputs; ++l) scales[l] = M[(o0 + l) * n_in + i] * S[(o0 + l) * n_in + i];
  for (int64_t r = 0; r < k; ++r) {  // the padding rows above and below the bases
    Masked::store(rows + r * row_stride, zero, output_mask);
    Masked::store(rows + (k + n_basis + r) * row_stride, zero, output_mask);
  }
  for (int64_t m0 = 0; m0 < n_basis; m0 += kLanes) {
    const int64_t bases = std::min(kLanes, n_basis - m0);
    const auto basis_mask = Masked::first(bases);
    V block[kLanes];
    for (int64_t l = 0; l < kLanes; ++l)
      block[l] = l < outputs ? Masked::load(C + ((o0 + l) * n_in + i) * n_basis + m0, basis_mask) * scales[l] : zero;
    transpose_block(block);  // block[j]: basis m0 + j of the outputs o0 ..
    for (int64_t j = 0; j < bases; ++j) Masked::store(rows + (k + m0 + j) * row_stride, block[j], output_mask);
  }
#else
  for (int64_t l = 0; l < outputs; ++l) {
    const int64_t edge = (o0 + l) * n_in + i;
    const T spline_scale = M[edge] * S[edge];
    for (int64_t r = 0; r < k; ++r) {
      rows[r * row_stride + l] = T(0);
      rows[(k + n_basis + r) * row_stride + l] = T(0);
    }
    for (int64_t m = 0; m < n_basis; ++m) rows[(k + m) * row_stride + l] = spline_scale * C[edge * n_basis + m];
  }
#endif
}

// n values from source to target by non-temporal stores where the machine has them (whole aligned
// vectors; the ends and other machines by plain copies): a gradient larger than the caches goes
// to memory without its lines being read in first. Readers on other threads need store_fence()
// after the last of them.
template <typename T>
inline void stream_copy(const T* source, int64_t n, T* target) {
#if defined(__AVX__)
  constexpr int64_t kLanes = kVectorBytes / sizeof(T);
  int64_t j = 0;
  for (; j < n && reinterpret_cast<uintptr_t>(target + j) % kVectorBytes != 0; ++j) target[j] = source[j];
  for (; j + kLanes <= n; j += kLanes) {
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<T, float>) _mm512_stream_ps(target + j, _mm512_loadu_ps(source + j));
    else _mm512_stream_pd(target + j, _mm512_loadu_pd(source + j));
#else
    if constexpr (std::is_same_v<T, float>) _mm256_stream_ps(target + j, _mm256_loadu_ps(source + j));
    else _mm256_stream_pd(target + j, _mm256_loadu_pd(source + j));
#endif
  }
  std::copy(source + j, source + n, target + j);
#else
  std::copy(source, source + n, target);
#endif
}

inline void store_fence() {
#if defined(__AVX__)
  _mm_sfence();
#endif
}

// A wide layer's parameters on fine grids, from which the kernels build each input's padded rows
// where they need them (coef (out, in, n_basis), scale_sp and mask (out, in)), and where the
// parameters' gradients go: grad_coef / grad_scale_sp, null where not asked.
template <typename T>
struct EdgeTargets {
  const T *coef, *scale_sp, *mask;
  T *grad_coef, *grad_scale_sp;
};

// Inputs [i0, i0 + inputs)'s padded spline rows for the tile of outputs [t0, t0 + width) into
// pieces: input i0 + a's row r at pieces + (a * (n_basis + 2k) + r) * kTile. A vector of outputs
// by the inputs at a time (scaled_spline_rows), so that each output's coefficients are read in
// one run over the inputs.
template <typename T>
inline void tile_spline_rows(const EdgeTargets<T>& edges, const LocalShape& shape, int64_t k, int64_t i0,
                             int64_t inputs, int64_t t0, int64_t width, T* pieces) {
  constexpr int64_t kLanes = kVectorBytes / sizeof(T), kTile = kTileBytes / sizeof(T);
  const int64_t piece_size = (shape.n_basis + 2 * k) * kTile;
  for (int64_t o0 = t0; o0 < t0 + width; o0 += kLanes)
    for (int64_t a = 0; a < inputs; ++a)
      scaled_spline_rows(edges.coef, edges.scale_sp, edges.mask, shape, k, i0 + a, o0,
                         std::min(kLanes, t0 + width - o0), pieces + a * piece_size + (o0 - t0), kTile);
}

// Inputs built into cache together by tile_spline_rows in the forward pass on fine grids.
constexpr int64_t kPieceInputs = 8;

// The spline part of a wide layer's output on fine grids, added into out (batch, n_out), from the
// padded weight W or, without one, from the parameters (edges): threads take ranges of inputs (the
// first adding into out, the others into their own sums, added to out at the end), so that each
// reads its part of the weight once per block of at most kFineSamples samples. From the
// parameters, for each block, tile of outputs and kPieceInputs inputs, those inputs' padded rows
// of the tile are built in cache (tile_spline_rows) and their entries' values added into the
// tile's sums: the parameters pass through memory once per block, and nothing the size of the
// weight is written.
template <typename T, int K>
void fine_product(const Intervals<T>& intervals, const at::Tensor& knots, const T* X, const T* W,
                  const EdgeTargets<T>* edges, const LocalShape& shape, T* out) {
  constexpr int64_t kTile = kTileBytes / sizeof(T);
  at::Tensor lanes;
  const Locator<T> locate = column_locator(intervals, knots, lanes);
  const int64_t n_spans = knots.size(1) - 1, batch = shape.batch, n_in = shape.n_in, n_out = shape.n_out;
  const int64_t slots = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n_in));
  const int64_t block = std::min(batch, kFineSamples);
  // the other slots' sums, each (batch, n_out) and written once, tile by tile (no zeroing)
  std::unique_ptr<T[]> sums(new T[(slots - 1) * batch * n_out]);
  const int64_t piece_rows = shape.n_basis + 2 * K;
  at::parallel_for(0, slots, 1, [&](int64_t begin, int64_t end) {
    AlignedVector<T> tile(block * kTile), pieces(W == nullptr ? kPieceInputs * piece_rows * kTile : 0);
    for (int64_t slot = begin; slot < end; ++slot) {
      const int64_t i0 = slot * n_in / slots, i1 = (slot + 1) * n_in / slots;
      T* target = slot == 0 ? out : sums.get() + (slot - 1) * batch * n_out;
      SortedBlock<T, K> sorted(i0, i1 - i0, n_in, n_spans, block, 0);
      for (int64_t b0 = 0; b0 < batch; b0 += block) {
        const int64_t count = std::min(block, batch - b0);
        sorted.build(locate, nullptr, X, b0, count);
        for_each_tile<T>(n_out, [&](int64_t t0, int64_t width, auto vectors) {
          std::fill(tile.data(), tile.data() + count * kTile, T(0));
          if (W != nullptr)
            for_each_interval(sorted, [&](int64_t i, int64_t s, const int32_t* samples, const T* values, const T*,
                                          int32_t j0, int32_t j1) {
              interval_forward<T, K, decltype(vectors)::value>(W + (i * shape.padded_rows + s) * n_out + t0, n_out,
                                                               samples, values, j0, j1, width, tile.data());
            });
          for (int64_t a0 = 0; W == nullptr && a0 < sorted.n_in; a0 += kPieceInputs) {
            const int64_t inputs = std::min(kPieceInputs, sorted.n_in - a0);
            tile_spline_rows(*edges, shape, K, i0 + a0, inputs, t0, width, pieces.data());
            for_each_interval(sorted, [&](int64_t i, int64_t s, const int32_t* samples, const T* values, const T*,
                                          int32_t j0, int32_t j1) {
              const T* w = pieces.data() + ((i - i0 - a0) * piece_rows + s) * kTile;
              interval_forward<T, K, decltype(vectors)::value>(w, kTile, samples, values, j0, j1, width, tile.data());
            }, a0, a0 + inputs);
          }
          if (slot == 0) add_tile(tile.data(), count, width, n_out, target + b0 * n_out + t0);
          else add_tile<T, true>(tile.data(), count, width, n_out, target + b0 * n_out + t0);
        });
      }
    }
  });
  at::parallel_for(0, batch, 64, [&](int64_t begin, int64_t end) {
    for (int64_t slot = 1; slot < slots; ++slot) {
      const T* sum = sums.get() + (slot - 1) * batch * n_out;
      for (int64_t e = begin * n_out; e < end * n_out; ++e) out[e] += sum[e];
    }
  });
}

// The parameters' gradients of input i's edges to outputs [o_begin, o_end) from its padded
// weight-gradient rows (row r's gradient of output o at slab[r * row_stride + o - o_begin]):
// grad_coef = g * (mask * scale_sp) and grad_scale_sp = mask * sum_m g_m * coef_m. With AVX-512
// or AVX2, a vector of outputs by a vector of bases at a time: the rows' pieces loaded and
// transposed in registers, so that each edge's bases come out as one vector. staged: output
// o_begin + l's coef gradient goes to staged + l * staged_stride instead of into grad_coef.
template <typename T>
inline void input_edge_gradients(const T* slab, int64_t row_stride, int64_t i, int64_t o_begin, int64_t o_end,
                                 const LocalShape& shape, int64_t k, const EdgeTargets<T>& edges,
                                 T* staged = nullptr, int64_t staged_stride = 0) {
  const int64_t n_in = shape.n_in, n_basis = shape.n_basis;
#if defined(KANLAB_TRANSPOSES)
  using Masked = MaskedVector<T>;
  using V = typename Simd<T>::V;
  constexpr int64_t kLanes = kVectorBytes / sizeof(T);
  for (int64_t o0 = o_begin; o0 < o_end; o0 += kLanes) {
    const int64_t outputs = std::min(kLanes, o_end - o0);
    const auto output_mask = Masked::first(outputs);
    V slopes[kLanes] = {};
    for (int64_t m0 = 0; m0 < n_basis; m0 += kLanes) {
      const int64_t bases = std::min(kLanes, n_basis - m0);
      const auto basis_mask = Masked::first(bases);
      V block[kLanes];
      for (int64_t j = 0; j < kLanes; ++j)
        block[j] = j < bases ? Masked::load(slab + (k + m0 + j) * row_stride + o0 - o_begin, output_mask) : V{};
      transpose_block(block);  // block[l]: output o0 + l's gradients of bases m0 ..
      for (int64_t l = 0; l < outputs; ++l) {
        const int64_t edge = (o0 + l) * n_in + i;
        if (edges.grad_coef != nullptr)
          Masked::store((staged != nullptr ? staged + (o0 - o_begin + l) * staged_stride : edges.grad_coef + edge * n_basis) + m0,
                        block[l] * (edges.mask[edge] * edges.scale_sp[edge]), basis_mask);
        slopes[l] += block[l] * Masked::load(edges.coef + edge * n_basis + m0, basis_mask);
      }
    }
    if (edges.grad_scale_sp != nullptr)
      for (int64_t l = 0; l < outputs; ++l) {
        const int64_t edge = (o0 + l) * n_in + i;
        edges.grad_scale_sp[edge] = horizontal_sum<T>(slopes[l]) * edges.mask[edge];
      }
  }
#else
  for (int64_t o = o_begin; o < o_end; ++o) {
    const int64_t edge = o * n_in + i;
    const T spline_scale = edges.mask[edge] * edges.scale_sp[edge];
    const T* column = slab + k * row_stride + o - o_begin;
    const T* c = edges.coef + edge * n_basis;
    T* grad_c = edges.grad_coef == nullptr ? nullptr
                : staged != nullptr        ? staged + (o - o_begin) * staged_stride
                                           : edges.grad_coef + edge * n_basis;
    T slope = T(0);
    for (int64_t m = 0; m < n_basis; ++m) {
      const T g = column[m * row_stride];
      if (grad_c != nullptr) grad_c[m] = g * spline_scale;
      slope += g * c[m];
    }
    if (edges.grad_scale_sp != nullptr) edges.grad_scale_sp[edge] = slope * edges.mask[edge];
  }
#endif
}

// Fine grids (at least kFineRows padded rows per input) in the backward pass: an input's weight
// and gradient rows outweigh a block's output gradient, so each should pass through memory once.
// Threads take ranges of inputs, and go through them in groups whose weight-gradient rows fit in
// kGroupBytes: for each block of at most kFineSamples samples, each tile of outputs, and each
// input of the group, the weight gradient and x's gradient. The output gradient is laid out tile
// by tile once (each tile's rows contiguous) and shared by the threads. x's gradient is summed
// by the group's entries, a vector of sums each, across the tiles, and reduced and scattered
// into grad_x once per block: a reduction and a scattered add per tile made x's gradient take
// 1.3x as long on AVX2.
//  - Given the padded weight W (the product of a weight built in torch), x's gradient reads it
//    and the weight gradient goes into grad_w's rows.
//  - Given the layer's parameters instead (edges), the group's padded rows of the tile are built
//    in cache (tile_spline_rows) for x's gradient, and its weight-gradient rows of the tile go
//    into a scratch of the group's rows, tile-major (the tile from t0 of width w is (inputs,
//    rows, w) at t0 * inputs * rows, so that an interval's sums go into one run), turned into
//    coef's and scale_sp's gradients (input_edge_gradients) in the last block, while they and
//    that part of coef are in cache: no padded weight and no padded gradient at all, and coef
//    read once. With AVX-512, coef's gradient is staged a vector of outputs at a time, so that
//    each output's run of the group's inputs is written in one copy, by non-temporal stores
//    where it is larger than kStreamBytes (more than a core's L2 holds): at (1024, 256, 256,
//    G = 100) (27 MB) the masked stores straight into grad_coef, which read each line in first,
//    took about 3 ms of the step's 23; staged and streamed, the step took 0.91x the time
//    (staged alone 0.96x), and streamed rather than staged alone 0.96x at G = 50 (14 MB), still
//    0.98x and 0.99x at G = 50 and 25 (7 MB) with an Adam step reading the gradient after. The
//    AVX2 build, on the same Zen 4 machine, took 1.12x the time staged and 1.10x staged and
//    streamed, and writes straight into grad_coef.
constexpr int64_t kGroupBytes = 1 << 19;
constexpr int64_t kStreamBytes = 4 << 20;
constexpr bool kStagedEdgeGradients = kVectorBytes == 64;

template <typename T, int K>
void fine_blocked_backward(const Locator<T>& locate_values, const Locator<T>& locate_slopes, int64_t n_spans,
                           const T* X, const T* G, const T* W, const LocalShape& shape, T* grad_x, T* grad_w,
                           const EdgeTargets<T>* edges) {
  using V = typename Simd<T>::V;
  constexpr int64_t kLanes = kVectorBytes / sizeof(T), kTile = kTileBytes / sizeof(T);
  const int64_t batch = shape.batch, n_in = shape.n_in, n_out = shape.n_out, rows = shape.padded_rows;
  TORCH_CHECK((W != nullptr) != (edges != nullptr), "the fine backward takes the padded weight or the parameters");
  // the tile from t0 of width w: its rows w apart from tiled + t0 * batch (every element written)
  std::unique_ptr<T[]> tiled(new T[batch * n_out]);
  at::parallel_for(0, batch, 64, [&](int64_t begin, int64_t end) {
    for_each_tile<T>(n_out, [&](int64_t t0, int64_t width, auto) {
      for (int64_t b = begin; b < end; ++b)
        std::copy(G + b * n_out + t0, G + b * n_out + t0 + width, tiled.get() + t0 * batch + b * width);
    });
  });
  const int64_t block = std::min(batch, kFineSamples), n_blocks = (batch + block - 1) / block;
  const int64_t group = std::max<int64_t>(1, kGroupBytes / (rows * n_out * static_cast<int64_t>(sizeof(T))));
  const bool to_edges = edges != nullptr && (edges->grad_coef != nullptr || edges->grad_scale_sp != nullptr);
  const bool stream =
      kStagedEdgeGradients && n_out * n_in * shape.n_basis * static_cast<int64_t>(sizeof(T)) > kStreamBytes;
  at::parallel_for(0, n_in, 1, [&](int64_t begin, int64_t end) {
    SortedBlock<T, K> sorted(begin, std::min(group, end - begin), n_in, n_spans, block, grad_x != nullptr ? K + 1 : 0);
    AlignedVector<T> scratch(to_edges ? sorted.n_in * rows * n_out : 0);
    AlignedVector<T> staged(kStagedEdgeGradients && to_edges && edges->grad_coef != nullptr
                                ? kLanes * sorted.n_in * shape.n_basis
                                : 0);
    const int64_t piece_rows = shape.n_basis + 2 * K;
    AlignedVector<T> pieces(grad_x != nullptr && W == nullptr ? sorted.n_in * piece_rows * kTile : 0);
    // x's gradient by the group's entries (tile_input_gradient's kEntrySums), scattered into
    // grad_x once a block's tiles are done
    AlignedVector<T> entry_sums(grad_x != nullptr ? sorted.n_in * block * kLanes : 0);
    for (int64_t g0 = begin; g0 < end; g0 += group) {
      sorted.first_input = g0;
      sorted.n_in = std::min(group, end - g0);
      if (grad_w != nullptr) std::fill(grad_w + g0 * rows * n_out, grad_w + (g0 + sorted.n_in) * rows * n_out, T(0));
      for (int64_t index = 0; index < n_blocks; ++index) {
        const int64_t b0 = index * block, count = std::min(block, batch - b0);
        sorted.build(locate_values, grad_x != nullptr ? &locate_slopes : nullptr, X, b0, count);
        if (grad_x != nullptr) std::fill(entry_sums.begin(), entry_sums.end(), T(0));
        for_each_tile<T>(n_out, [&](int64_t t0, int64_t width, auto vectors) {
          constexpr int kVectors = decltype(vectors)::value;
          const T* tile = tiled.get() + t0 * batch + b0 * width;
          T* result = grad_x == nullptr ? nullptr : entry_sums.data();
          if (W != nullptr) {
            if (grad_w != nullptr)
              tile_weight_gradient<T, K, kVectors>(sorted, tile, width, t0, width, rows, n_out, grad_w + g0 * rows * n_out, g0);
            if (result != nullptr)
              tile_input_gradient<T, K, kVectors, true>(sorted, tile, width, W + t0, n_out, width, rows, result);
            return;
          }
          if (result != nullptr) {
            tile_spline_rows(*edges, shape, K, g0, sorted.n_in, t0, width, pieces.data());
            tile_input_gradient<T, K, kVectors, true>(sorted, tile, width, pieces.data(), kTile, width, piece_rows, result,
                                                      g0);
          }
          if (!to_edges) return;
          T* tile_grad = scratch.data() + t0 * sorted.n_in * rows;  // the group's (inputs, rows, width) of the tile
          if (index == 0) std::fill(tile_grad, tile_grad + sorted.n_in * rows * width, T(0));
          tile_weight_gradient<T, K, kVectors>(sorted, tile, width, 0, width, rows, width, tile_grad, g0);
          if (index == n_blocks - 1)  // a vector of outputs by the group's inputs: coef read in runs of inputs
            for (int64_t o0 = t0; o0 < t0 + width; o0 += kLanes) {
              const int64_t outputs = std::min(t0 + width, o0 + kLanes) - o0, run = sorted.n_in * shape.n_basis;
              for (int64_t a = 0; a < sorted.n_in; ++a)
                input_edge_gradients(tile_grad + a * rows * width + o0 - t0, width, g0 + a, o0, o0 + outputs, shape,
                                     K, *edges, staged.empty() ? nullptr : staged.data() + a * shape.n_basis, run);
              for (int64_t l = 0; !staged.empty() && l < outputs; ++l) {
                const T* source = staged.data() + l * run;
                T* target = edges->grad_coef + ((o0 + l) * n_in + g0) * shape.n_basis;
                if (stream) stream_copy(source, run, target);
                else std::copy(source, source + run, target);
              }
            }
        });
        if (grad_x != nullptr)
          for (int64_t a = 0; a < sorted.n_in; ++a) {
            const int32_t entries = sorted.start[a * (n_spans + 1) + n_spans];
            const int32_t* samples = sorted.sample.data() + a * block;
            const T* sums = entry_sums.data() + a * block * kLanes;
            for (int32_t j = 0; j < entries; ++j)
              grad_x[(b0 + samples[j]) * n_in + g0 + a] = horizontal_sum<T>(load_vector<V>(sums + j * kLanes));
          }
      }
    }
    if (stream) store_fence();
  });
}

// The spline part of a wide layer's gradients: x's into grad_x (batch, n_in) where given, the
// padded weight's into grad_w (n_in, padded_rows, n_out) where given; edges asks for the
// parameters' gradients instead (and on fine grids gives the parameters instead of W,
// fine_blocked_backward); W is in the tiled layout where tiled says so. Threads take ranges of
// inputs, each going through all the blocks of samples for its own inputs, so each writes its own
// rows of the weight gradient and its own columns of grad_x: no per-thread copies to zero and
// sum. On coarse grids a thread sums its rows tile-major (block_weight_gradient), a group of
// inputs at a time (kGradientGroupBytes), and after the group's last block rearranges them into
// grad_w or turns them into the edges' gradients (input_edge_gradients) while they are in
// cache; at (1024, 256, 256, G = 5) the latter took the backward pass 0.96x the time of
// rearranging them and then taking the edges' gradients from grad_w. On AVX2's tiled
// layout of many tiles it takes x's gradient from the group's derivative rows, each interval's
// built from W when its first entry comes (derivative_block_input_gradient).
template <typename T, int K>
void blocked_backward(const Intervals<T>& values, const Intervals<T>& slopes, const at::Tensor& knots, const T* X,
                      const T* G, const T* W, const LocalShape& shape, T* grad_x, T* grad_w,
                      const EdgeTargets<T>* edges = nullptr, bool tiled = false) {
  at::Tensor value_lanes, slope_lanes;
  const Locator<T> locate_values = column_locator(values, knots, value_lanes);
  const Locator<T> locate_slopes = column_locator(slopes, knots, slope_lanes);
  const int64_t n_spans = knots.size(1) - 1, n_in = shape.n_in, n_out = shape.n_out;
  const int64_t block = block_samples(shape.batch, n_spans, false), n_blocks = (shape.batch + block - 1) / block;
  const int64_t row_size = shape.padded_rows * n_out;
  if (grad_x != nullptr) std::fill(grad_x, grad_x + shape.batch * n_in, T(0));
  if (shape.padded_rows >= kFineRows) {
    fine_blocked_backward<T, K>(locate_values, locate_slopes, n_spans, X, G, W, shape, grad_x, grad_w, edges);
    return;
  }
  // with edges, the parameters' gradients straight from each group's tile-major rows
  const bool to_edges = edges != nullptr && (edges->grad_coef != nullptr || edges->grad_scale_sp != nullptr);
  TORCH_CHECK(edges == nullptr || grad_w == nullptr, "the weight gradient goes to grad_w or to the edges");
  const bool weight_gradient = grad_w != nullptr || to_edges;
  constexpr int64_t kTile = kTileBytes / sizeof(T);
  // AVX2's tiled layout of more than kFewTiles tiles takes x's gradient by derivative rows
  const bool by_derivative_rows = tiled && grad_x != nullptr && n_out > kFewTiles * kTile;
  // x's gradient alone from the weight's rows goes through a thread's inputs in one group (each
  // group reads G again); from derivative rows (n_spans * K per input: 33 at G = 5, k = 3, where
  // the weight has 15), in the weight gradient's groups: in one group (and with its buffer
  // zeroed) x's gradient alone took 1.00-1.02x the time from the weight's rows, in groups 0.91x
  const int64_t group = weight_gradient || by_derivative_rows
                            ? std::max<int64_t>(1, kGradientGroupBytes / (row_size * int64_t(sizeof(T))))
                            : n_in;
  PowerIntervals<T> powers(values, by_derivative_rows ? n_in : 0, n_spans, K, K + 1);
  at::Tensor power_lanes;
  const Locator<T> locate_powers =
      by_derivative_rows ? column_locator(powers.intervals, knots, power_lanes) : locate_slopes;
  const Locator<T>* locate_x = grad_x == nullptr ? nullptr : by_derivative_rows ? &locate_powers : &locate_slopes;
  at::parallel_for(0, n_in, 1, [&](int64_t range_begin, int64_t range_end) {
    for (int64_t begin = range_begin; begin < range_end; begin += group) {
      const int64_t end = std::min(range_end, begin + group);
      SortedBlock<T, K> sorted(begin, end - begin, n_in, n_spans, block,
                               grad_x == nullptr ? 0 : by_derivative_rows ? 1 : K + 1);
      // these inputs' derivative rows, each interval's built when its first entry comes
      UninitializedBuffer<T> derivative(by_derivative_rows ? (end - begin) * n_spans * K * n_out : 0);
      std::vector<uint8_t> ready(by_derivative_rows ? (end - begin) * n_spans : 0, 0);
      // these inputs' weight gradient, tile-major (block_weight_gradient), then rearranged into grad_w
      AlignedVector<T> tiled_grad(weight_gradient ? (end - begin) * row_size : 0);
      for (int64_t index = 0; index < n_blocks; ++index) {
        const int64_t b0 = index * block, count = std::min(block, shape.batch - b0);
        sorted.build(locate_values, locate_x, X, b0, count, !by_derivative_rows);
        if (weight_gradient)
          block_weight_gradient(sorted, G + b0 * n_out, shape.padded_rows, n_out, count, tiled_grad.data());
        if (by_derivative_rows)
          derivative_block_input_gradient(sorted, slopes, W, shape.padded_rows - 1, G + b0 * n_out, n_out,
                                          derivative.data, ready.data(), grad_x + b0 * n_in);
        else if (grad_x != nullptr)
          block_input_gradient(sorted, G + b0 * n_out, W, shape.padded_rows, n_out, count, grad_x + b0 * n_in, tiled);
      }
      if (to_edges)
        for_each_tile<T>(n_out, [&](int64_t t0, int64_t width, auto) {
          const T* source = tiled_grad.data() + t0 * (end - begin) * shape.padded_rows;
          for (int64_t a = 0; a < end - begin; ++a)
            input_edge_gradients(source + a * shape.padded_rows * width, width, begin + a, t0, t0 + width, shape, K,
                                 *edges);
        });
      if (grad_w != nullptr)
        for_each_tile<T>(n_out, [&](int64_t t0, int64_t width, auto vectors) {
          const T* source = tiled_grad.data() + t0 * (end - begin) * shape.padded_rows;
          for (int64_t row = 0; row < (end - begin) * shape.padded_rows; ++row)
            copy_piece<T, decltype(vectors)::value>(source + row * width, width,
                                                    grad_w + begin * row_size + row * n_out + t0);
        });
    }
  });
}

}  // namespace
