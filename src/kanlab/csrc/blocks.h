// Part of kanlab's compiled kernel: wide layers' blocks of samples sorted by interval.
// One translation unit: kernel.cpp includes the parts in order (each uses the ones before it).
#pragma once

namespace {

// ---- Wide layers (more than kNarrow inputs, at least kWideOut outputs) go block by block of
// samples instead: taking an entry's k + 1 weight rows whole (product_chunk) reads and writes
// a whole output row per weight row, and sums the weight gradient row by row in memory. Here a
// block's entries are located once and sorted by interval within each input (a counting sort);
// then, one tile of outputs at a time, an interval's k + 1 weight rows are loaded once for all
// its entries (forward), its k + 1 gradient rows summed in registers over them (weight
// gradient), and each entry's input gradient taken from the same rows. The residual, one weight
// row per input, is left to three small matrix products.

// Samples per block at most on coarse grids: a block's tile of outputs (kTileBytes per sample)
// stays in L1. AVX2's forward pass takes 256 (its tiles are half as wide): the longer runs of
// entries per interval took 0.94-0.99x the time at (1024, 256, 256, G = 5), interleaved in one
// process; its backward pass keeps 128, where x's gradient reads whole rows of G and took 1.07x
// the time with 256.
constexpr int64_t kBlockSamples = 128;
constexpr int64_t kForwardBlockSamples = kVectorBytes == 64 ? kBlockSamples : 2 * kBlockSamples;
// Inputs that a thread takes together in the coarse backward pass: as many as keep their
// tile-major weight gradient (padded_rows * n_out values per input) within this many bytes, half
// of a 512 KB L2, so that each block adds its sums into rows still in cache. A thread's whole
// range of inputs sent those rows to L3 and back once per block: with groups of 32 inputs the
// weight gradient took 0.91-0.98x the time at (1024, 256, 256, G = 5).
constexpr int64_t kGradientGroupBytes = 256 * 1024;
// Outputs per tile: four vectors with AVX-512's 32 registers, two with AVX2's 16 (the tile
// functions keep k + 1 rows of the tile in registers, or k + 1 sums of it).
constexpr int64_t kTileBytes = (kVectorBytes == 64 ? 4 : 2) * kVectorBytes;
// Fine grids: at least this many padded rows per input (G + 2k + 1), whose weight outweighs a
// block's outputs; their blocks take up to kFineSamples samples, so the weight passes once.
constexpr int64_t kFineRows = 32;
constexpr int64_t kFineSamples = 1024;

// The sum of a vector's lanes, as a tree.
template <typename T, typename V>
inline T horizontal_sum(V v) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) return _mm512_reduce_add_ps((__m512)v);
  else return _mm512_reduce_add_pd((__m512d)v);
#elif defined(__AVX__)
  if constexpr (std::is_same_v<T, float>) {
    __m128 half = _mm_add_ps(_mm256_castps256_ps128((__m256)v), _mm256_extractf128_ps((__m256)v, 1));
    half = _mm_add_ps(half, _mm_movehl_ps(half, half));
    return _mm_cvtss_f32(_mm_add_ss(half, _mm_movehdup_ps(half)));
  } else {
    const __m128d half = _mm_add_pd(_mm256_castpd256_pd128((__m256d)v), _mm256_extractf128_pd((__m256d)v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(half, _mm_unpackhi_pd(half, half)));
  }
#else
  constexpr int64_t kLanes = kVectorBytes / sizeof(T);
  T lanes[kLanes];
  std::memcpy(lanes, &v, sizeof(V));
  for (int64_t half = kLanes / 2; half > 0; half /= 2)
    for (int64_t l = 0; l < half; ++l) lanes[l] += lanes[l + half];
  return lanes[0];
#endif
}

// Whether a layer goes in blocks (layer._local_product_pays mirrors this rule); without a
// residual, a NaN input sends it entry by entry, whose features make the NaN rows.
bool takes_blocks(const LocalShape& shape) { return shape.n_in > kNarrow && shape.n_out >= kWideOut; }

// The fused layer's padded weight tile by tile, where its blocks read it on AVX2 (coarse grids;
// tiled_layout): input i's spline rows (rows = padded_rows - 1 of them) at i * rows * n_out,
// tile after tile of for_each_tile, the tile from t0 of width w a (rows, w) piece at t0 * rows;
// then the residual rows (n_in, n_out). Same size as the row-major weight. An interval's rows of
// a tile lie in one run instead of lines n_out apart, where the blocked forward waited on each
// interval's loads. x's gradient reads an entry's rows across all tiles: kept within the input's
// rows, their lines spread over the cache's sets (tiles of all inputs apart put them in one set,
// and x's gradient took 1.5x as long).
bool tiled_layout(const LocalShape& shape, const at::Tensor& x, bool with_base) {
  return kVectorBytes < 64 && takes_blocks(shape) && shape.padded_rows < kFineRows &&
         (with_base || !at::isnan(x).any().item<bool>());
}

// The tile of for_each_tile holding output o: its first output t0 and its width.
template <typename T>
inline void tile_containing(int64_t o, int64_t n_out, int64_t& t0, int64_t& width) {
  constexpr int64_t kLanes = kVectorBytes / sizeof(T), kTile = kTileBytes / sizeof(T);
  const int64_t full = n_out / kTile * kTile, vectors = (n_out - full) / kLanes * kLanes;
  if (o < full) t0 = o / kTile * kTile, width = kTile;
  else if (o < full + vectors) t0 = full, width = vectors;
  else t0 = full + vectors, width = n_out - t0;
}

// The tiled layout's residual rows, (n_in, n_out).
at::Tensor tiled_residual(const at::Tensor& padded, const LocalShape& shape) {
  const int64_t spline = shape.n_in * (shape.padded_rows - 1) * shape.n_out;
  return padded.view({-1}).narrow(0, spline, shape.n_in * shape.n_out).view({shape.n_in, shape.n_out});
}

// One block's entries of inputs [first_input, first_input + n_in) (of stride in all), input by
// input, sorted by interval: the block's i-th input's entries in interval s are [first[s],
// first[s + 1]) of first = start + i * (n_spans + 1), entry j the block's sample sample[i *
// capacity + j] with its K + 1 local values (and bases' slopes) at (i * capacity + j) * (K + 1).
// Entries outside the knots (or NaN) are left out.
template <typename T, int K>
struct SortedBlock {
  // Inputs whose columns of the block's samples are copied out of X together: one pass over
  // the block's rows per kColumns inputs, where a column at a time touched each row's cache
  // line once per input.
  static constexpr int64_t kColumns = 8;
  int64_t first_input, n_in, stride, n_spans, capacity;  // inputs [first_input, first_input + n_in) of stride
  // slopes per entry: K + 1, none (0), or 1, the second of the slope locator's values (u of
  // PowerIntervals, all that x's gradient by derivative rows reads)
  int64_t slope_width;
  std::vector<int32_t> start, sample, next, column_span;
  // column_value and column_slope: a column's entries in sample order, K + 1 values each
  std::vector<T> value, slope, column_x, column_value, column_slope;

  SortedBlock(int64_t first_input_, int64_t n_in_, int64_t stride_, int64_t n_spans_, int64_t capacity_,
              int64_t slope_width_)
      : first_input(first_input_), n_in(n_in_), stride(stride_), n_spans(n_spans_), capacity(capacity_),
        slope_width(slope_width_), start(n_in_ * (n_spans_ + 1)), sample(n_in_ * capacity_), next(n_spans_),
        column_span(capacity_), value(n_in_ * capacity_ * (K + 1)), slope(n_in_ * capacity_ * slope_width_),
        column_x(kColumns * capacity_), column_value(capacity_ * (K + 1)), column_slope(capacity_ * slope_width_) {}

  // The chunk's m entries' K + 1 local values, entry c's at target[c * (K + 1) + r], so that
  // sorting moves each entry's values in one copy; cubic floats by 4 x 4 transposes on AVX2.
  static inline void interleave(const Chunk<T, K>& chunk, int64_t m, T* target) {
    int64_t c = 0;
#if defined(__AVX__) && !defined(__AVX512F__)
    if constexpr (K == 3 && std::is_same_v<T, float>)
      for (; c + 8 <= m; c += 8) {
        const __m256 r0 = _mm256_load_ps(chunk.values[0] + c), r1 = _mm256_load_ps(chunk.values[1] + c);
        const __m256 r2 = _mm256_load_ps(chunk.values[2] + c), r3 = _mm256_load_ps(chunk.values[3] + c);
        const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
        const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
        // entry c + l's four values: lanes 0-3 of u[l] for l < 4, lanes 4-7 of u[l - 4] after
        const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
        const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        T* o = target + c * 4;
        _mm256_storeu_ps(o, _mm256_permute2f128_ps(u0, u1, 0x20));
        _mm256_storeu_ps(o + 8, _mm256_permute2f128_ps(u2, u3, 0x20));
        _mm256_storeu_ps(o + 16, _mm256_permute2f128_ps(u0, u1, 0x31));
        _mm256_storeu_ps(o + 24, _mm256_permute2f128_ps(u2, u3, 0x31));
      }
#endif
    for (; c < m; ++c)
      for (int r = 0; r <= K; ++r) target[c * (K + 1) + r] = chunk.values[r][c];
  }

  // Locates samples [b0, b0 + count) of X (batch, n_in) input by input (a column of samples at
  // a time, as for narrow layers) and sorts each column's entries by interval; slopes (nullptr:
  // none) also gives the bases' x-derivatives, or without slopes_in_x the locator's own values
  // (the powers of PowerIntervals), slope_width of them kept per entry.
  void build(const Locator<T>& values, const Locator<T>* slopes, const T* X, int64_t b0, int64_t count,
             bool slopes_in_x = true) {
    Chunk<T, K> chunk;
    for (int64_t i0 = 0; i0 < n_in; i0 += kColumns) {
      const int64_t g = std::min(kColumns, n_in - i0);
      for (int64_t c = 0; c < count; ++c) {
        const T* row = X + (b0 + c) * stride + first_input + i0;
        for (int64_t a = 0; a < g; ++a) column_x[a * capacity + c] = row[a];
      }
      for (int64_t a = 0; a < g; ++a) {
        const int64_t i = i0 + a;
        const T* xs = column_x.data() + a * capacity;
        for (int64_t c0 = 0; c0 < count; c0 += kChunk) {
          const int64_t m = std::min(kChunk, count - c0);
          values.template fill<K, K + 1, true>(xs + c0, first_input + i, m, false, chunk);
          std::copy(chunk.span, chunk.span + m, column_span.begin() + c0);
          interleave(chunk, m, &column_value[c0 * (K + 1)]);
          if (slopes == nullptr || slope_width == 0) continue;
          slopes->template fill<K, K, true>(xs + c0, first_input + i, m, slopes_in_x, chunk);
          if (slope_width == 1) std::copy(chunk.values[1], chunk.values[1] + m, column_slope.begin() + c0);
          else interleave(chunk, m, &column_slope[c0 * (K + 1)]);
        }
        int32_t* first = start.data() + i * (n_spans + 1);
        std::fill(first, first + n_spans + 1, 0);
        for (int64_t c = 0; c < count; ++c)
          if (column_span[c] >= 0) ++first[column_span[c] + 1];
        for (int64_t s = 0; s < n_spans; ++s) first[s + 1] += first[s];
        std::copy(first, first + n_spans, next.begin());
        int32_t* sample_i = sample.data() + i * capacity;
        T* value_i = value.data() + i * capacity * (K + 1);
        T* slope_i = slopes != nullptr && slope_width > 0 ? slope.data() + i * capacity * slope_width : nullptr;
        for (int64_t c = 0; c < count; ++c) {
          const int32_t s = column_span[c];
          if (s < 0) continue;
          const int64_t j = next[s]++;
          sample_i[j] = static_cast<int32_t>(c);
          std::memcpy(value_i + j * (K + 1), &column_value[c * (K + 1)], sizeof(T) * (K + 1));
          if (slope_i == nullptr) continue;
          if (slope_width == 1) slope_i[j] = column_slope[c];
          else std::memcpy(slope_i + j * (K + 1), &column_slope[c * (K + 1)], sizeof(T) * (K + 1));
        }
      }
    }
  }
};

// The tiles of outputs: kTileBytes wide while that many remain, then as many whole vectors as
// remain, then the last few outputs (fewer than one vector) alone. body(t0, width, vectors),
// vectors the tile's whole vectors (std::integral_constant 1..4) or 0 for the last few.
template <typename T, typename Body>
inline void for_each_tile(int64_t n_out, Body body) {
  constexpr int64_t kLanes = kVectorBytes / sizeof(T), kTile = kTileBytes / sizeof(T);
  for (int64_t t0 = 0; t0 < n_out;) {
    const int64_t remaining = n_out - t0;
    const int64_t width = remaining >= kTile ? kTile : remaining >= kLanes ? remaining / kLanes * kLanes : remaining;
    switch (width / kLanes) {
      case 0: body(t0, width, std::integral_constant<int, 0>()); break;
      case 1: body(t0, width, std::integral_constant<int, 1>()); break;
      case 2: body(t0, width, std::integral_constant<int, 2>()); break;
      case 3: body(t0, width, std::integral_constant<int, 3>()); break;
      default: body(t0, width, std::integral_constant<int, 4>());
    }
    t0 += width;
  }
}

// body(i, s, samples, values, slopes, j0, j1) for each input's non-empty interval: its entries
// [j0, j1) of the input's samples, local values and slopes (K + 1 per entry; slopes null
// without them); the block's inputs [begin, end) (end -1: all).
template <typename T, int K, typename Body>
inline void for_each_interval(const SortedBlock<T, K>& block, Body body, int64_t begin = 0, int64_t end = -1) {
  for (int64_t i = begin; i < (end < 0 ? block.n_in : end); ++i) {
    const int32_t* first = block.start.data() + i * (block.n_spans + 1);
    const int32_t* samples = block.sample.data() + i * block.capacity;
    const T* values = block.value.data() + i * block.capacity * (K + 1);
    const T* slopes = block.slope.empty() ? nullptr : block.slope.data() + i * block.capacity * block.slope_width;
    for (int64_t s = 0; s < block.n_spans; ++s)
      if (first[s] < first[s + 1]) body(block.first_input + i, s, samples, values, slopes, first[s], first[s + 1]);
  }
}

// The K + 1 weight rows from w (n_out apart), kVectors vectors of each.
template <typename V, int K, int kVectors, typename T>
inline void load_rows(const T* w, int64_t n_out, V (&rows)[K + 1][kVectors]) {
  constexpr int64_t kLanes = kVectorBytes / sizeof(T);
  for (int r = 0; r <= K; ++r)
    for (int q = 0; q < kVectors; ++q) rows[r][q] = load_vector<V>(w + r * n_out + q * kLanes);
}

// The block's count rows of G's tile [t0, t0 + width), contiguous (kTile apart): rows n_out
// apart would share a few cache sets.
template <typename T>
inline void copy_tile(const T* G, int64_t count, int64_t n_out, int64_t t0, int64_t width, T* tile) {
  constexpr int64_t kTile = kTileBytes / sizeof(T);
  for (int64_t b = 0; b < count; ++b) std::copy(G + b * n_out + t0, G + b * n_out + t0 + width, tile + b * kTile);
}

// Entries interval_forward takes at a time (each with kVectors running sums started from its tile
// row), so that several chains of FMAs are in flight: as many as AVX2's 16 registers hold beside
// the interval's K + 1 rows and a broadcast, at most 3 (a standalone loop took 0.8x the time of
// one at a time); AVX-512 keeps one at a time, as measured there.
constexpr int interleaved_entries(int k, int vectors) {
  if (kVectorBytes == 64) return 1;
  for (int e = 3; e > 1; --e)
    if ((k + 1 + e) * vectors + 1 <= 16) return e;
  return 1;
}

// interval_forward's entries interleaved_entries at a time (kVectors > 0), the leftovers one by
// one; out of line, where the caller's pointers do not crowd the registers (inlined, the rows
// were spilled to the stack).
template <typename T, int K, int kVectors>
__attribute__((noinline)) void interleaved_interval_forward(const T* w, int64_t row_stride, const int32_t* samples,
                                                            const T* values, int32_t j0, int32_t j1, T* tile) {
  using V = typename Simd<T>::V;
  constexpr int64_t kLanes = kVectorBytes / sizeof(T), kTile = kTileBytes / sizeof(T);
  constexpr int kEntries = interleaved_entries(K, kVectors);
  V rows[K + 1][kVectors];
  load_rows<V, K, kVectors>(w, row_stride, rows);
  int32_t j = j0;
  for (; j + kEntries <= j1; j += kEntries) {
    T* o[kEntries];
    V sums[kEntries][kVectors];
    for (int e = 0; e < kEntries; ++e) {
      o[e] = tile + samples[j + e] * kTile;
      for (int q = 0; q < kVectors; ++q) sums[e][q] = load_vector<V>(o[e] + q * kLanes);
    }
    for (int r = 0; r <= K; ++r)
      for (int e = 0; e < kEntries; ++e) {
        const V v = splat<V>(values[(j + e) * (K + 1) + r]);
        for (int q = 0; q < kVectors; ++q) sums[e][q] += v * rows[r][q];
      }
    for (int e = 0; e < kEntries; ++e)
      for (int q = 0; q < kVectors; ++q) store_vector(o[e] + q * kLanes, sums[e][q]);
  }
  for (; j < j1; ++j) {
    T* o = tile + samples[j] * kTile;
    V sums[kVectors];
    for (int q = 0; q < kVectors; ++q) sums[q] = load_vector<V>(o + q * kLanes);
    for (int r = 0; r <= K; ++r) {
      const V v = splat<V>(values[j * (K + 1) + r]);
      for (int q = 0; q < kVectors; ++q) sums[q] += v * rows[r][q];
    }
    for (int q = 0; q < kVectors; ++q) store_vector(o + q * kLanes, sums[q]);
  }
}

// One interval's entries [j0, j1) added into a tile's sums (the block's rows, kTile apart): each
// entry's sum_r v_r * w[r * row_stride, :width], the interval's K + 1 rows of the tile (w)
// loaded into registers once for all its entries; on AVX2 interleaved_interval_forward.
template <typename T, int K, int kVectors>
inline void interval_forward(const T* w, int64_t row_stride, const int32_t* samples, const T* values, int32_t j0,
                             int32_t j1, int64_t width, T* tile) {
  using V = typename Simd<T>::V;
  constexpr int64_t kLanes = kVectorBytes / sizeof(T), kTile = kTileBytes / sizeof(T);
  if constexpr (kVectors > 0 && interleaved_entries(K, kVectors) > 1) {
    interleaved_interval_forward<T, K, kVectors>(w, row_stride, samples, values, j0, j1, tile);
  } else if constexpr (kVectors > 0) {
    V rows[K + 1][kVectors];
    load_rows<V, K, kVectors>(w, row_stride, rows);
    for (int32_t j = j0; j < j1; ++j) {
      T* o = tile + samples[j] * kTile;
      V v[K + 1];  // the entry's values, each broadcast once for all the tile's vectors
      for (int r = 0; r <= K; ++r) v[r] = splat<V>(values[j * (K + 1) + r]);
      for (int q = 0; q < kVectors; ++q) {
        V sum = v[0] * rows[0][q];
        for (int r = 1; r <= K; ++r) sum += v[r] * rows[r][q];
        store_vector(o + q * kLanes, load_vector<V>(o + q * kLanes) + sum);
      }
    }
  } else {
    for (int32_t j = j0; j < j1; ++j) {
      T* o = tile + samples[j] * kTile;
      const T* v = values + j * (K + 1);
      for (int64_t l = 0; l < width; ++l) {
        T sum = v[0] * w[l];
        for (int r = 1; r <= K; ++r) sum += v[r] * w[r * row_stride + l];
        o[l] += sum;
      }
    }
  }
}

// out[b, :] (the block's rows, n_out apart) += a tile's sums (count rows, kTile apart), or with
// kStore, = them.
template <typename T, bool kStore = false>
inline void add_tile(const T* tile, int64_t count, int64_t width, int64_t n_out, T* out) {
  constexpr int64_t kTile = kTileBytes / sizeof(T);
  for (int64_t b = 0; b < count; ++b) {
    T* row = out + b * n_out;
    if constexpr (kStore) {
      std::copy(tile + b * kTile, tile + b * kTile + width, row);
    } else {
#pragma omp simd
      for (int64_t l = 0; l < width; ++l) row[l] += tile[b * kTile + l];
    }
  }
}

// A tile's piece of a row, width values from source to target: kVectors whole vectors (width
// kVectors vectors), or element by element for the last few (kVectors 0); std::copy calls
// memmove for each piece.
template <typename T, int kVectors>
inline void copy_piece(const T* source, int64_t width, T* target) {
  using V = typename Simd<T>::V;
  constexpr int64_t kLanes = kVectorBytes / sizeof(T);
  if constexpr (kVectors > 0)
    for (int q = 0; q < kVectors; ++q) store_vector(target + q * kLanes, load_vector<V>(source + q * kLanes));
  else
    for (int64_t l = 0; l < width; ++l) target[l] = source[l];
}

// out[b, :] (the block's rows, n_out apart) += the spline part of each entry: sum_r v_r * W[i,
// s + r, :], W the padded weight (n_in, padded_rows, n_out), or with tiled in the tiled layout.
template <typename T, int K>
void block_forward(const SortedBlock<T, K>& block, const T* W, int64_t padded_rows, int64_t n_out, int64_t count,
                   T* out, bool tiled) {
  constexpr int64_t kTile = kTileBytes / sizeof(T);
  AlignedVector<T> scratch(count * kTile);  // the block's rows of the tile, contiguous (as copy_tile's)
  const int64_t rows = tiled ? padded_rows - 1 : padded_rows;  // rows per input
  for_each_tile<T>(n_out, [&](int64_t t0, int64_t width, auto vectors) {
    T* tile = scratch.data();
    std::fill(tile, tile + count * kTile, T(0));
    const int64_t row_stride = tiled ? width : n_out;
    for_each_interval(block, [&](int64_t i, int64_t s, const int32_t* samples, const T* values, const T*,
                                 int32_t j0, int32_t j1) {
      const T* w = tiled ? W + i * rows * n_out + t0 * rows + s * width : W + (i * rows + s) * n_out + t0;
      interval_forward<T, K, decltype(vectors)::value>(w, row_stride, samples, values, j0, j1, width, tile);
    });
    add_tile(tile, count, width, n_out, out + t0);
  });
}

// The spline rows' weight gradient for one tile of outputs [t0, t0 + width): grad_w[i, s + r,
// tile] (padded, n_out per row) += sum over the entries of v_r * G[b, tile], G's tile rows
// `stride` apart in tile, an interval's k + 1 rows summed in registers over its entries;
// grad_w's rows start at input first_row_input; the block's inputs [begin, end) (end -1: all).
template <typename T, int K, int kVectors>
inline void tile_weight_gradient(const SortedBlock<T, K>& block, const T* tile, int64_t stride, int64_t t0,
                                 int64_t width, int64_t padded_rows, int64_t n_out, T* grad_w, int64_t first_row_input = 0,
                                 int64_t begin = 0, int64_t end = -1) {
  using V = typename Simd<T>::V;
  constexpr int64_t kLanes = kVectorBytes / sizeof(T);
  for_each_interval(block, [&](int64_t i, int64_t s, const int32_t* samples, const T* values, const T*, int32_t j0,
                               int32_t j1) {
    T* target = grad_w + ((i - first_row_input) * padded_rows + s) * n_out + t0;
    if constexpr (kVectors > 0) {
      V sums[K + 1][kVectors] = {};
      for (int32_t j = j0; j < j1; ++j) {
        const T* g = tile + samples[j] * stride;
        V grads[kVectors];
        for (int q = 0; q < kVectors; ++q) grads[q] = load_vector<V>(g + q * kLanes);
        for (int r = 0; r <= K; ++r) {
          const V v = splat<V>(values[j * (K + 1) + r]);
          for (int q = 0; q < kVectors; ++q) sums[r][q] += v * grads[q];
        }
      }
      for (int r = 0; r <= K; ++r)
        for (int q = 0; q < kVectors; ++q) {
          T* p = target + r * n_out + q * kLanes;
          store_vector(p, load_vector<V>(p) + sums[r][q]);
        }
    } else {
      for (int r = 0; r <= K; ++r)
        for (int32_t j = j0; j < j1; ++j) {
          const T* g = tile + samples[j] * stride;
          const T v = values[j * (K + 1) + r];
          for (int64_t l = 0; l < width; ++l) target[r * n_out + l] += v * g[l];
        }
    }
  }, begin, end);
}

// Where tile_input_gradient adds entry j of input i: its sample's row of x's gradient, or with
// kEntrySums the first lane of its vector of running sums (the entries' of inputs from
// first_summed on).
template <bool kEntrySums, typename T, int K>
inline T& entry_result(const SortedBlock<T, K>& block, T* result, const int32_t* samples, int64_t i, int32_t j,
                       int64_t first_summed) {
  constexpr int64_t kLanes = kVectorBytes / sizeof(T);
  if constexpr (kEntrySums) return result[((i - first_summed) * block.capacity + j) * kLanes];
  else return result[samples[j] * block.stride + i];
}

// The spline part of x's gradient from one tile of outputs: result[b, i] (the block's rows,
// n_in apart) += sum_r slope_r * <W[i, s + r, tile], G[b, tile]>, G's tile rows `stride` apart,
// an interval's rows loaded once for all its entries. W holds the tile's weight rows,
// row_stride apart, padded_rows per input from input first_row_input on; the block's inputs
// [begin, end) (end -1: all). With kEntrySums, result holds a vector of running sums for each
// of those inputs' entries instead (input begin + a's entry j at (a * capacity + j) * lanes),
// which the tiles go through in one stream, reduced once after the last tile.
template <typename T, int K, int kVectors, bool kEntrySums = false>
inline void tile_input_gradient(const SortedBlock<T, K>& block, const T* tile, int64_t stride, const T* W,
                                int64_t row_stride, int64_t width, int64_t padded_rows, T* result,
                                int64_t first_row_input = 0, int64_t begin = 0, int64_t end = -1) {
  using V = typename Simd<T>::V;
  const int64_t n_out = row_stride;
  for_each_interval(block, [&](int64_t i, int64_t s, const int32_t* samples, const T*, const T* slopes, int32_t j0,
                               int32_t j1) {
    const T* w = W + ((i - first_row_input) * padded_rows + s) * row_stride;
    if constexpr (kVectors > 0) {
      constexpr int64_t kLanes = kVectorBytes / sizeof(T);
      V rows[K + 1][kVectors];
      load_rows<V, K, kVectors>(w, n_out, rows);
      for (int32_t j = j0; j < j1; ++j) {
        const T* g = tile + samples[j] * stride;
        const T* d = slopes + j * (K + 1);
        V dot = {};
        for (int q = 0; q < kVectors; ++q) {
          V u = d[0] * rows[0][q];
          for (int r = 1; r <= K; ++r) u += d[r] * rows[r][q];
          dot += u * load_vector<V>(g + q * kLanes);
        }
        if constexpr (kEntrySums) {
          T* sums = &entry_result<true>(block, result, samples, i, j, block.first_input + begin);
          store_vector(sums, load_vector<V>(sums) + dot);
        } else {
          result[samples[j] * block.stride + i] += horizontal_sum<T>(dot);
        }
      }
    } else {
      for (int32_t j = j0; j < j1; ++j) {
        const T* g = tile + samples[j] * stride;
        const T* d = slopes + j * (K + 1);
        T sum = T(0);
        for (int64_t l = 0; l < width; ++l) {
          T u = d[0] * w[l];
          for (int r = 1; r <= K; ++r) u += d[r] * w[r * n_out + l];
          sum += u * g[l];
        }
        entry_result<kEntrySums>(block, result, samples, i, j, block.first_input + begin) += sum;
      }
    }
  }, begin, end);
}

// The block's weight gradient (tile_weight_gradient), tile by tile of G's rows (n_out apart),
// into the block's inputs' weight gradient laid out tile-major (the tile from t0 of width w is
// (inputs, padded_rows, w) at t0 * inputs * padded_rows): an interval's sums go into rows that lie
// in one stream, where rows n_out apart left the loop waiting on each interval's last stores.
template <typename T, int K>
void block_weight_gradient(const SortedBlock<T, K>& block, const T* G, int64_t padded_rows, int64_t n_out,
                           int64_t count, T* tiled_grad_w) {
  constexpr int64_t kTile = kTileBytes / sizeof(T);
  AlignedVector<T> scratch(count * kTile);  // the block's rows of G's tile (copy_tile)
  for_each_tile<T>(n_out, [&](int64_t t0, int64_t width, auto vectors) {
    copy_tile(G, count, n_out, t0, width, scratch.data());
    tile_weight_gradient<T, K, decltype(vectors)::value>(block, scratch.data(), kTile, 0, width, padded_rows, width,
                                                         tiled_grad_w + t0 * block.n_in * padded_rows,
                                                         block.first_input);
  });
}

// One entry's part of x's gradient, <sum_r slope_r * w_r, g> over the whole output row g (w: its
// interval's K + 1 weight rows, n_out apart), reduced once at the end. AVX2's tiles (16 float
// outputs) are too narrow to pay for a reduction per tile. The slopes' combination of the rows
// comes first, so the only running sums are two vectors (K + 1 running dots wait on the FMA's
// latency); kept out of line, where the caller's pointers do not crowd the registers.
template <typename T, int K>
__attribute__((noinline)) T entry_input_gradient(const T* w, int64_t n_out, const T* g, const T* slopes) {
  using V = typename Simd<T>::V;
  constexpr int64_t kLanes = kVectorBytes / sizeof(T);
  int64_t o = 0;
  V s[K + 1];
  for (int r = 0; r <= K; ++r) s[r] = splat<V>(slopes[r]);
  V sums[2] = {};
  for (; o + 2 * kLanes <= n_out; o += 2 * kLanes)
    for (int h = 0; h < 2; ++h) {
      V row = s[0] * load_vector<V>(w + o + h * kLanes);
      for (int r = 1; r <= K; ++r) row += s[r] * load_vector<V>(w + r * n_out + o + h * kLanes);
      sums[h] += row * load_vector<V>(g + o + h * kLanes);
    }
  for (; o + kLanes <= n_out; o += kLanes) {
    V row = s[0] * load_vector<V>(w + o);
    for (int r = 1; r <= K; ++r) row += s[r] * load_vector<V>(w + r * n_out + o);
    sums[0] += row * load_vector<V>(g + o);
  }
  T total = horizontal_sum<T>(sums[0] + sums[1]);
  for (; o < n_out; ++o) {
    T u = slopes[0] * w[o];
    for (int r = 1; r <= K; ++r) u += slopes[r] * w[r * n_out + o];
    total += u * g[o];
  }
  return total;
}

// ---- x's gradient by derivative rows (AVX2's tiled layout, more than kFewTiles tiles). An
// entry's slope combination sum_r slope_r(u) * W[s + r] is a polynomial of degree K - 1 in its
// local coordinate u, sum_p u^p * D[s, p], whose K rows D[s, p] = sum_r c[p][r] * W[s + r] (c the
// slopes' coefficients on interval s, times 1/h on evenly spaced knots) are built once per
// input and interval from the weight; each entry then takes K - 1 multiply-adds per vector by
// Horner's rule and one for its dot product with G's row, where the K + 1 weight rows took
// K + 2. Two entries of an interval go together, each loaded vector of D serving both.

// Intervals whose local polynomials are the powers of the entry's local coordinate: value p < P
// is u^p (the rest 0), u the f of evenly spaced knots or x - t_s on other knots.
template <typename T>
struct PowerIntervals {
  std::vector<T> identity, table;
  Intervals<T> intervals;

  PowerIntervals(const Intervals<T>& values, int64_t n_in, int64_t n_spans, int64_t powers, int64_t width)
      : identity(powers * width, T(0)), intervals(values) {
    for (int64_t p = 0; p < powers; ++p) identity[p * width + p] = T(1);
    if (values.cardinal != nullptr) {
      intervals.cardinal = identity.data();
      return;
    }
    const int64_t columns = 1 + powers * width;
    table.assign(n_in * n_spans * columns, T(0));
    for (int64_t row = 0; row < n_in * n_spans; ++row) {
      table[row * columns] = values.table[row * values.columns];  // t_s
      std::copy(identity.begin(), identity.end(), table.begin() + row * columns + 1);
    }
    intervals.table = table.data();
    intervals.columns = columns;
  }
};

// One input's derivative rows of interval s, into D_input (the input's n_spans * K rows, tiled as
// the weight: the tile from t0 of width w at t0 * n_spans * K, row s * K + p of it w apart), from
// the tiled weight's rows of input i (w_rows per input).
template <typename T, int K>
void derivative_rows(const Intervals<T>& slopes, const T* W_tiled, int64_t w_rows, int64_t n_spans, int64_t n_out,
                     int64_t i, int64_t s, T* D_input) {
  const int64_t rows = n_spans * K;
  const T* c = slopes.cardinal != nullptr ? slopes.cardinal : slopes.table + (i * n_spans + s) * slopes.columns + 1;
  const T scale = slopes.cardinal != nullptr ? T(1) / slopes.step[i] : T(1);
  T coefficients[K][K + 1];
  for (int p = 0; p < K; ++p)
    for (int r = 0; r <= K; ++r) coefficients[p][r] = c[p * (K + 1) + r] * scale;
  for_each_tile<T>(n_out, [&](int64_t t0, int64_t width, auto) {
    const T* w = W_tiled + i * w_rows * n_out + t0 * w_rows + s * width;
    T* d = D_input + t0 * rows + s * K * width;
    for (int p = 0; p < K; ++p)
#pragma omp simd
      for (int64_t l = 0; l < width; ++l) {
        T sum = coefficients[p][0] * w[l];
        for (int r = 1; r <= K; ++r) sum += coefficients[p][r] * w[r * width + l];
        d[p * width + l] = sum;
      }
  });
}

// Keeps v in a register where the compiler would fold its load into every instruction that
// reads it (loading it again for each); a no-op on machines without AVX.
template <typename V>
inline void keep_in_register(V& v) {
#if defined(__AVX__)
  asm("" : "+x"(v));
#else
  (void)v;
#endif
}

// kEntries entries' (1 or 2) parts of x's gradient from their interval's derivative rows (the
// input's D_input, rows per input, from row q): <sum_p u^p * D[q + p], g> by Horner's rule in each
// entry's u, added into *result[e]; whole tiles a vector at a time (kTileBytes / kVectorBytes
// vectors: two on AVX2, four with AVX-512), the last few outputs element by element.
template <typename T, int K, int kEntries>
__attribute__((noinline)) void derivative_entries_input_gradient(const T* D_input, int64_t rows, int64_t q,
                                                                 int64_t n_out, const T* const* g, const T* u,
                                                                 T* const* result) {
  using V = typename Simd<T>::V;
  constexpr int64_t kLanes = kVectorBytes / sizeof(T), kTile = kTileBytes / sizeof(T), kHalves = kTile / kLanes;
  V us[kEntries], sums[kEntries][kHalves] = {};
  for (int e = 0; e < kEntries; ++e) us[e] = splat<V>(u[e]);
  const int64_t full = n_out / kTile * kTile, tile_stride = kTile * rows;
  const T* d = D_input + q * kTile;
  for (int64_t o = 0; o < full; o += kTile, d += tile_stride)
    for (int h = 0; h < kHalves; ++h) {
      V row[K];
      for (int p = 0; p < K; ++p) {
        row[p] = load_vector<V>(d + p * kTile + h * kLanes);
        if constexpr (kEntries > 1) keep_in_register(row[p]);  // one load for both entries, not one each
      }
      for (int e = 0; e < kEntries; ++e) {
        V t = row[K - 1];
        for (int p = K - 2; p >= 0; --p) t = t * us[e] + row[p];
        sums[e][h] += t * load_vector<V>(g[e] + o + h * kLanes);
      }
    }
  for (int e = 0; e < kEntries; ++e) {
    for (int h = 1; h < kHalves; ++h) sums[e][0] += sums[e][h];
    T total = horizontal_sum<T>(sums[e][0]);
    for (int64_t t0 = full, width = 0; t0 < n_out; t0 += width) {
      int64_t first;
      tile_containing<T>(t0, n_out, first, width);
      const T* dt = D_input + t0 * rows + q * width;
      for (int64_t l = 0; l < width; ++l) {
        T t = dt[(K - 1) * width + l];
        for (int p = K - 2; p >= 0; --p) t = t * u[e] + dt[p * width + l];
        total += t * g[e][t0 + l];
      }
    }
    *result[e] += total;
  }
}

// The block's part of x's gradient by derivative rows: D holds the rows of the block's inputs
// (n_spans * K rows each, from input first_input on), built where ready says they are not yet
// (an interval's rows the first time one of its entries comes); the block's slopes are the
// entries' u alone (slope_width 1, the second power of PowerIntervals).
template <typename T, int K>
void derivative_block_input_gradient(const SortedBlock<T, K>& block, const Intervals<T>& slopes, const T* W_tiled,
                                     int64_t w_rows, const T* G, int64_t n_out, T* D, uint8_t* ready, T* result) {
  const int64_t n_spans = block.n_spans, rows = n_spans * K;
  for_each_interval(block, [&](int64_t i, int64_t s, const int32_t* samples, const T*, const T* powers, int32_t j0,
                               int32_t j1) {
    const int64_t a = i - block.first_input;
    T* D_input = D + a * rows * n_out;
    if (!ready[a * n_spans + s]) {
      derivative_rows<T, K>(slopes, W_tiled, w_rows, n_spans, n_out, i, s, D_input);
      ready[a * n_spans + s] = 1;
    }
    auto u = [&](int32_t j) { return K > 1 ? powers[j] : T(0); };
    int32_t j = j0;
    for (; j + 1 < j1; j += 2) {
      const T* g[2] = {G + samples[j] * n_out, G + samples[j + 1] * n_out};
      const T us[2] = {u(j), u(j + 1)};
      T* targets[2] = {result + samples[j] * block.stride + i, result + samples[j + 1] * block.stride + i};
      derivative_entries_input_gradient<T, K, 2>(D_input, rows, s * K, n_out, g, us, targets);
    }
    if (j < j1) {
      const T* g[1] = {G + samples[j] * n_out};
      const T us[1] = {u(j)};
      T* targets[1] = {result + samples[j] * block.stride + i};
      derivative_entries_input_gradient<T, K, 1>(D_input, rows, s * K, n_out, g, us, targets);
    }
  });
}

// x's gradient from the tiled layout (AVX2) where the layer has at most kFewTiles tiles of
// outputs: input by input, tile by tile, an interval's rows of the tile loaded once for all its
// entries, each entry's products summed as a vector across the tiles and reduced once (G's rows
// first laid out tile by tile). Entry by entry along whole rows pays a reduction and a set-up
// per entry that only many tiles amortize: this took 0.84-0.88x its time at 64 float outputs (4
// tiles), 0.93x at 128 and 1.05x at 256 (16 tiles), interleaved in one process; about even at 8
// and 16 tiles of doubles. More tiles go by derivative rows (derivative_block_input_gradient),
// which took 1.16x this one's backward time at 64 outputs and 1.02x at 128.
constexpr int64_t kFewTiles = 8;

template <typename T, int K>
void tiled_block_input_gradient(const SortedBlock<T, K>& block, const T* G, const T* W, int64_t padded_rows,
                                int64_t n_out, int64_t count, T* result) {
  using V = typename Simd<T>::V;
  constexpr int64_t kLanes = kVectorBytes / sizeof(T);
  const int64_t rows = padded_rows - 1;
  AlignedVector<T> tiles(count * n_out);  // G's tile from t0 of width w: its rows w apart from t0 * count
  for_each_tile<T>(n_out, [&](int64_t t0, int64_t width, auto) {
    for (int64_t b = 0; b < count; ++b)
      std::copy(G + b * n_out + t0, G + b * n_out + t0 + width, tiles.data() + t0 * count + b * width);
  });
  AlignedVector<T> sums(count * kLanes);  // an input's entries' running sums, a vector each
  for (int64_t a = 0; a < block.n_in; ++a) {
    const int64_t i = block.first_input + a;
    std::fill(sums.begin(), sums.end(), T(0));
    for_each_tile<T>(n_out, [&](int64_t t0, int64_t width, auto vectors) {
      // the input's rows of the tile, width apart (one input's rows from input i on)
      tile_input_gradient<T, K, decltype(vectors)::value, true>(block, tiles.data() + t0 * count, width,
                                                                 W + i * rows * n_out + t0 * rows, width, width, rows,
                                                                 sums.data(), i, a, a + 1);
    });
    const int32_t entries = block.start[a * (block.n_spans + 1) + block.n_spans];
    const int32_t* samples = block.sample.data() + a * block.capacity;
    for (int32_t j = 0; j < entries; ++j)
      result[samples[j] * block.stride + i] += horizontal_sum<T>(load_vector<V>(sums.data() + j * kLanes));
  }
}

// The block's part of x's gradient; the caller zeroes the rows, and entries outside the knots
// keep 0. With AVX-512, tile by tile of G's rows (n_out apart, tile_input_gradient); without,
// entry by entry along whole rows (entry_input_gradient), or from AVX2's tiled layout
// tiled_block_input_gradient (few tiles; more take derivative_block_input_gradient instead).
template <typename T, int K>
void block_input_gradient(const SortedBlock<T, K>& block, const T* G, const T* W, int64_t padded_rows,
                          int64_t n_out, int64_t count, T* result, bool tiled) {
  constexpr int64_t kTile = kTileBytes / sizeof(T);
  if (tiled) return tiled_block_input_gradient(block, G, W, padded_rows, n_out, count, result);
  if constexpr (kVectorBytes < 64) {
    for_each_interval(block, [&](int64_t i, int64_t s, const int32_t* samples, const T*, const T* slopes, int32_t j0,
                                 int32_t j1) {
      const T* w = W + (i * padded_rows + s) * n_out;
      for (int32_t j = j0; j < j1; ++j)
        result[samples[j] * block.stride + i] +=
            entry_input_gradient<T, K>(w, n_out, G + samples[j] * n_out, slopes + j * (K + 1));
    });
    return;
  }
  AlignedVector<T> scratch(count * kTile);  // the block's rows of G's tile (copy_tile)
  for_each_tile<T>(n_out, [&](int64_t t0, int64_t width, auto vectors) {
    copy_tile(G, count, n_out, t0, width, scratch.data());
    tile_input_gradient<T, K, decltype(vectors)::value>(block, scratch.data(), kTile, W + t0, n_out, width,
                                                        padded_rows, result);
  });
}

// Samples per block: kBlockSamples (more on fine grids); with split_samples (the forward pass,
// whose threads take blocks) kForwardBlockSamples, and fewer where that leaves a thread without
// a block.
int64_t block_samples(int64_t batch, int64_t n_spans, bool split_samples = true) {
  const int64_t threads = split_samples ? std::max<int64_t>(1, at::get_num_threads()) : 1;
  // fine grids: about 8 entries per interval, so that loading an interval's rows pays off
  const int64_t most =
      std::max(split_samples ? kForwardBlockSamples : kBlockSamples, std::min<int64_t>(8 * n_spans, 1024));
  return std::clamp<int64_t>((batch + threads - 1) / threads, 16, most);
}

// The locator for a wide layer's blocks (columns of samples, as for_each_chunk's narrow layers).
// lanes keeps its table by lanes (table_by_lanes) alive.
template <typename T>
Locator<T> column_locator(const Intervals<T>& intervals, const at::Tensor& knots, at::Tensor& lanes) {
  Locator<T> locate{intervals.knots, nullptr, knots.size(0), knots.size(1), intervals.table, intervals.columns,
                    intervals.cardinal, intervals.start, intervals.step};
  lanes = table_by_lanes(intervals.table, intervals.columns, knots);
  if (lanes.defined()) locate.lanes = lanes.template const_data_ptr<T>();
  return locate;
}

template <typename T> struct EdgeTargets;
template <typename T, int K>
void fine_product(const Intervals<T>& intervals, const at::Tensor& knots, const T* X, const T* W,
                  const EdgeTargets<T>* edges, const LocalShape& shape, T* out);

// The spline part of a wide layer's output, added into out (batch, n_out), W in the tiled layout
// where tiled says so; on fine grids with more than one thread, by ranges of inputs (fine_product).
template <typename T, int K>
void blocked_product(const Intervals<T>& intervals, const at::Tensor& knots, const T* X, const T* W,
                     const LocalShape& shape, T* out, bool tiled) {
  if (shape.padded_rows >= kFineRows && std::min<int64_t>(at::get_num_threads(), shape.n_in) > 1) {
    TORCH_CHECK(!tiled, "fine grids take the row-major padded weight");
    fine_product<T, K>(intervals, knots, X, W, nullptr, shape, out);
    return;
  }
  at::Tensor lanes;
  const Locator<T> locate = column_locator(intervals, knots, lanes);
  const int64_t n_spans = knots.size(1) - 1;
  const int64_t block = block_samples(shape.batch, n_spans), n_blocks = (shape.batch + block - 1) / block;
  at::parallel_for(0, n_blocks, 1, [&](int64_t begin, int64_t end) {
    SortedBlock<T, K> sorted(0, shape.n_in, shape.n_in, n_spans, block, 0);
    for (int64_t index = begin; index < end; ++index) {
      const int64_t b0 = index * block, count = std::min(block, shape.batch - b0);
      sorted.build(locate, nullptr, X, b0, count);
      block_forward(sorted, W, shape.padded_rows, shape.n_out, count, out + b0 * shape.n_out, tiled);
    }
  });
}

}  // namespace
