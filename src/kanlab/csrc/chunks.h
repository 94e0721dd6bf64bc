// Part of kanlab's compiled kernel: the feature path's chunked, vectorized kernels (degrees 1..5).
// One translation unit: kernel.cpp includes the parts in order (each uses the ones before it).
#pragma once

namespace {

// ---- Chunked paths for degrees 1..5: a row's inputs go in chunks of kChunk (a narrow layer's
// samples go in chunks of kChunk per input instead, see for_each_chunk). A first pass
// over the chunk finds every entry's interval and its k + 1 local values (in loops free of
// branches, for the compiler's vectorizer, wherever the knots allow); a second pass writes
// the chunk's part of each feature column (forward) or gathers the incoming gradient at the
// entries' k + 1 columns (backward), again vectorized over the chunk's inputs.
constexpr int64_t kChunk = 64;

// The machine's vectors (GCC/Clang vector extensions): 64 bytes with AVX-512, 32 bytes
// otherwise (AVX2's registers; wider ones would be emulated in pairs, spilling the tiles'
// registers), loaded and stored without alignment.
#if defined(__AVX512F__)
constexpr int64_t kVectorBytes = 64;
#else
constexpr int64_t kVectorBytes = 32;
#endif
// Storage for tiles and pieces read and written as whole vectors, aligned to a cache line:
// std::vector guarantees 16 bytes, and a tile 16 or 48 bytes off splits one in two of its rows'
// 32-byte accesses across two lines (a standalone loop of the blocked forward took 1.1x as long).
template <typename T>
struct CacheLineAllocator {
  typedef T value_type;
  CacheLineAllocator() = default;
  template <typename U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* p, std::size_t) { ::operator delete(p, std::align_val_t(64)); }
  template <typename U>
  bool operator==(const CacheLineAllocator<U>&) const { return true; }
  template <typename U>
  bool operator!=(const CacheLineAllocator<U>&) const { return false; }
};
template <typename T>
using AlignedVector = std::vector<T, CacheLineAllocator<T>>;
// Cache-line aligned storage left uninitialized, for buffers written before they are read
// (an AlignedVector would zero them first).
template <typename T>
struct UninitializedBuffer {
  T* data;
  explicit UninitializedBuffer(std::size_t n)
      : data(n > 0 ? static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))) : nullptr) {}
  ~UninitializedBuffer() {
    if (data != nullptr) ::operator delete(data, std::align_val_t(64));
  }
  UninitializedBuffer(const UninitializedBuffer&) = delete;
  UninitializedBuffer& operator=(const UninitializedBuffer&) = delete;
};

template <typename T> struct Simd;
template <> struct Simd<float> { typedef float V __attribute__((vector_size(kVectorBytes))); };
template <> struct Simd<double> { typedef double V __attribute__((vector_size(kVectorBytes))); };

template <typename V, typename T>
inline V load_vector(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V, typename T>
inline void store_vector(T* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}

// x in every lane, one broadcast (V{} + x would add 0 to x first, -0 giving +0; a loop over
// the lanes was left as a 16-byte broadcast and an insert)
template <typename V, typename T>
inline V splat(T x) {
#if defined(__AVX512F__)
  if constexpr (sizeof(V) == 64) {
    if constexpr (std::is_same_v<T, float>) return (V)_mm512_set1_ps(x);
    else return (V)_mm512_set1_pd(x);
  }
#endif
#if defined(__AVX__)
  if constexpr (sizeof(V) == 32) {
    if constexpr (std::is_same_v<T, float>) return (V)_mm256_set1_ps(x);
    else return (V)_mm256_set1_pd(x);
  }
#endif
  V v;
  for (size_t l = 0; l < sizeof(V) / sizeof(T); ++l) v[l] = x;
  return v;
}

// Per-chunk scratch: each entry's interval s (-1: outside the knots or NaN) and, where
// known, its k + 1 local values.
template <typename T, int K>
struct Chunk {
  alignas(64) T values[K + 1][kChunk];
  alignas(64) int32_t span[kChunk];
};

// Evenly spaced knots: the interval and the K + 1 polynomials (powers P, row-major (P, K + 1))
// in f = (x - t_0) / h - s, clamped to [0, 1] as the torch path does: the bases (clamped at
// 0), or with kPerStep their derivatives in x (divided by h). kOneInput: every entry belongs to
// the input of start[0] and step[0] (a column of samples), else entry c to start[c], step[c].
template <typename T, int K, int P, bool kPerStep, bool kOneInput>
inline void cardinal_chunk(const T* x, const T* start, const T* step, const T* cardinal, int64_t last_interval,
                           int64_t count, Chunk<T, K>& chunk) {
  T coefficients[P][K + 1];
  for (int p = 0; p < P; ++p)
    for (int r = 0; r <= K; ++r) coefficients[p][r] = cardinal[p * (K + 1) + r];
  const T last = static_cast<T>(last_interval);
#pragma omp simd
  for (int64_t c = 0; c < count; ++c) {
    const T first = kOneInput ? start[0] : start[c], spacing = kOneInput ? step[0] : step[c];
    const T scaled = (x[c] - first) / spacing;
    const T lower = std::floor(scaled);
    const bool inside = (lower >= T(0)) & (lower <= last);  // false for NaN
    const T f = std::min(std::max(scaled - lower, T(0)), T(1));
    const T scale = kPerStep ? T(1) / spacing : T(1);
#pragma GCC unroll 8
    for (int r = 0; r <= K; ++r) {
      T v = coefficients[P - 1][r];
#pragma GCC unroll 8
      for (int p = P - 2; p >= 0; --p) v = v * f + coefficients[p][r];
      chunk.values[r][c] = kPerStep ? v * scale : std::max(v, T(0));  // bases are clamped at 0
    }
    chunk.span[c] = static_cast<int32_t>(inside ? lower : T(-1));
  }
}

// General knots, at most kMaxCounted per input, given transposed (n_knots, in) from this chunk's first
// input on (kOneInput: that input's own row of knots, shared by every entry): the interval s by
// counting knots <= x.
template <typename T, int K, bool kOneInput>
inline void counted_chunk(const T* x, const T* knots, int64_t n_in, int64_t n_knots, int64_t count,
                          Chunk<T, K>& chunk) {
  int32_t position[kChunk];
#pragma omp simd
  for (int64_t c = 0; c < count; ++c) position[c] = 0;
  for (int64_t j = 0; j < n_knots; ++j) {
    if constexpr (kOneInput) {
      const T t = knots[j];
#pragma omp simd
      for (int64_t c = 0; c < count; ++c) position[c] += t <= x[c];  // NaN counts 0
    } else {
      const T* t = knots + j * n_in;
#pragma omp simd
      for (int64_t c = 0; c < count; ++c) position[c] += t[c] <= x[c];
    }
  }
  const int32_t last = static_cast<int32_t>(n_knots - 2);
#pragma omp simd
  for (int64_t c = 0; c < count; ++c) {
    const int32_t s = position[c] - 1;
    chunk.span[c] = (s >= 0) & (s <= last) ? s : -1;
  }
}

// Any number of general knots: the interval s by a bisection without branches (positions move
// by halving powers of two, each step a vectorized gather), entry c among the knots of row c, or
// with kOneInput all among row 0. position ends as the count of knots <= x (0 for NaN).
template <typename T, int K, bool kOneInput>
inline void searched_chunk(const T* x, const T* knots, int64_t n_knots, int64_t count, Chunk<T, K>& chunk) {
  const int32_t n = static_cast<int32_t>(n_knots);
  int32_t top = 1;
  while (top * 2 <= n) top *= 2;
  alignas(64) int32_t position[kChunk];
#pragma omp simd
  for (int64_t c = 0; c < count; ++c) position[c] = 0;
  for (int32_t step = top; step > 0; step >>= 1) {
#pragma omp simd
    for (int64_t c = 0; c < count; ++c) {
      const int32_t next = position[c] + step;
      const bool fits = next <= n;
      const T knot = knots[(kOneInput ? 0 : c * n_knots) + (fits ? next - 1 : 0)];
      position[c] = fits && knot <= x[c] ? next : position[c];
    }
  }
  const int32_t last = n - 2;
#pragma omp simd
  for (int64_t c = 0; c < count; ++c) {
    const int32_t s = position[c] - 1;
    chunk.span[c] = (s >= 0) & (s <= last) ? s : -1;
  }
}

// General knots, the intervals found: the K + 1 local polynomials (degree P - 1) of each
// entry's interval row (t_s, then the coefficients), by Horner's rule in u = x - t_s, the rows
// gathered with 32-bit offsets (the caller checks the table is small enough); bases clamped at 0.
// Entry c reads input first_row / rows_per_input + c, or (rows_per_input 0) all the same input.
// Horner is written out here rather than calling horner(): through that call (values in a
// local array) GCC no longer vectorizes the loop.
template <typename T, int K, int P>
inline void tabled_chunk(const T* x, const T* table, int64_t first_row, int64_t rows_per_input, int64_t columns,
                         int64_t count, Chunk<T, K>& chunk) {
  const int32_t stride = static_cast<int32_t>(columns);
  const int32_t first_offset = static_cast<int32_t>(first_row * columns);
  const int32_t input_offset = static_cast<int32_t>(rows_per_input * columns);
#pragma omp simd
  for (int64_t c = 0; c < count; ++c) {
    const int32_t s = chunk.span[c];
    const bool inside = s >= 0;
    const int32_t row = first_offset + static_cast<int32_t>(c) * input_offset + (inside ? s : 0) * stride;
    const T u = x[c] - table[row];
#pragma GCC unroll 8
    for (int r = 0; r <= K; ++r) {
      T v = table[row + 1 + (P - 1) * (K + 1) + r];
#pragma GCC unroll 8
      for (int p = P - 2; p >= 0; --p) v = v * u + table[row + 1 + p * (K + 1) + r];
      chunk.values[r][c] = inside ? (P == K + 1 ? std::max(v, T(0)) : v) : T(0);
    }
  }
}

#if defined(__AVX512F__)
// Two-register permutes: lane l of the result is lane index[l] of (low, high), index < 2 * lanes.
template <typename T> struct Permute;
template <> struct Permute<double> {
  typedef int64_t I __attribute__((vector_size(64)));
  static Simd<double>::V at(Simd<double>::V low, I index, Simd<double>::V high) {
    return (Simd<double>::V)_mm512_permutex2var_pd((__m512d)low, (__m512i)index, (__m512d)high);
  }
};
template <> struct Permute<float> {
  typedef int32_t I __attribute__((vector_size(64)));
  static Simd<float>::V at(Simd<float>::V low, I index, Simd<float>::V high) {
    return (Simd<float>::V)_mm512_permutex2var_ps((__m512)low, (__m512i)index, (__m512)high);
  }
};

// tabled_chunk for a column of samples of one input whose table has at most 2 * lanes interval
// rows, given by lanes (table_by_lanes: column j's rows in two vectors at lanes + 2 * lanes * j):
// each coefficient of an entry's row is a two-register permute by its interval instead of a
// gather. The same Horner arithmetic in the same order as tabled_chunk.
template <typename T, int K, int P>
inline void permuted_chunk(const T* x, const T* lanes, int64_t count, Chunk<T, K>& chunk) {
  using V = typename Simd<T>::V;
  using I = typename Permute<T>::I;
  constexpr int64_t kLanes = kVectorBytes / sizeof(T);
  auto column = [&](int64_t j, I index) {
    return Permute<T>::at(load_vector<V>(lanes + 2 * kLanes * j), index,
                          load_vector<V>(lanes + 2 * kLanes * j + kLanes));
  };
  const V zero = {};
  for (int64_t c0 = 0; c0 < count; c0 += kLanes) {
    alignas(64) T xs[kLanes] = {};
    I index, inside;
    for (int64_t l = 0; l < kLanes; ++l) {
      const bool present = c0 + l < count;
      const int32_t s = present ? chunk.span[c0 + l] : -1;
      index[l] = s < 0 ? 0 : s;
      inside[l] = s < 0 ? 0 : -1;
      xs[l] = present ? x[c0 + l] : T(0);
    }
    const V u = load_vector<V>(xs) - column(0, index);
#pragma GCC unroll 8
    for (int r = 0; r <= K; ++r) {
      V v = column(1 + (P - 1) * (K + 1) + r, index);
#pragma GCC unroll 8
      for (int p = P - 2; p >= 0; --p) v = v * u + column(1 + p * (K + 1) + r, index);
      if constexpr (P == K + 1) v = v > zero ? v : zero;  // bases are clamped at 0
      store_vector(chunk.values[r] + c0, inside ? v : zero);
    }
  }
}
#endif

// A column locator's table by lanes, for permuted_chunk: (in, columns, 2 * lanes), input i's
// interval row s of column j at [i, j, s], zero past its last interval. Undefined (the tables
// are gathered) where the machine lacks the permutes, on evenly spaced knots (no table) and
// where an input has more intervals than two vectors hold.
template <typename T>
at::Tensor table_by_lanes(const T* table, int64_t columns, const at::Tensor& knots) {
#if defined(__AVX512F__)
  constexpr int64_t kLanes = kVectorBytes / sizeof(T);
  const int64_t n_in = knots.size(0), n_rows = knots.size(1) - 1;
  if (table == nullptr || n_rows > 2 * kLanes) return at::Tensor();
  at::Tensor lanes = at::zeros({n_in, columns, 2 * kLanes}, knots.options());
  T* to = lanes.data_ptr<T>();
  for (int64_t i = 0; i < n_in; ++i)
    for (int64_t row = 0; row < n_rows; ++row)
      for (int64_t j = 0; j < columns; ++j) to[(i * columns + j) * 2 * kLanes + row] = table[(i * n_rows + row) * columns + j];
  return lanes;
#else
  (void)table, (void)columns, (void)knots;
  return at::Tensor();
#endif
}

// Everything one layer's chunked pass needs to locate entries of inputs [first, first + count).
template <typename T>
struct Locator {
  const T* knots;           // (in, n_knots)
  const T* knots_by_row;    // (n_knots, in), general knots with n_knots <= kMaxCounted, else nullptr
  int64_t n_in, n_knots;
  const T* table;           // general knots: per-interval rows (t_s, coefficients)
  int64_t columns;
  const T* cardinal;        // evenly spaced knots: (P, K + 1)
  const T* start;
  const T* step;
  const T* lanes = nullptr;  // the table by lanes (table_by_lanes) where defined, for columns

  // Fills chunk.span and chunk.values[r][c] for c < count (P powers: K + 1 for the bases,
  // clamped at 0; K for their derivatives, in x with per_step on evenly spaced knots): entry c
  // of input first + c (a row's inputs), or with kOneInput of input first (a column's samples).
  template <int K, int P, bool kOneInput>
  inline void fill(const T* x, int64_t first, int64_t count, bool per_step, Chunk<T, K>& chunk) const {
    if (cardinal != nullptr) {
      if (per_step)
        cardinal_chunk<T, K, P, true, kOneInput>(x, start + first, step + first, cardinal, n_knots - 2, count, chunk);
      else
        cardinal_chunk<T, K, P, false, kOneInput>(x, start + first, step + first, cardinal, n_knots - 2, count, chunk);
      return;
    }
#if defined(__AVX512F__)
    if (kOneInput && lanes != nullptr && n_knots <= kMaxCounted) {
      counted_chunk<T, K, true>(x, knots + first * n_knots, n_in, n_knots, count, chunk);
      permuted_chunk<T, K, P>(x, lanes + first * columns * 2 * (kVectorBytes / sizeof(T)), count, chunk);
      return;
    }
#endif
    if (kOneInput && n_knots <= kMaxCounted)
      counted_chunk<T, K, true>(x, knots + first * n_knots, n_in, n_knots, count, chunk);
    else if (knots_by_row != nullptr) counted_chunk<T, K, false>(x, knots_by_row + first, n_in, n_knots, count, chunk);
    else searched_chunk<T, K, kOneInput>(x, knots + first * n_knots, n_knots, count, chunk);
    tabled_chunk<T, K, P>(x, table, first * (n_knots - 1), kOneInput ? 0 : n_knots - 1, columns, count, chunk);
  }
};

// A chunk's part of the features. Its entries c are the inputs of one row (entry c at
// column[c], for column = out + m * n_in), or, kColumn, samples of one input (entry c at
// column[c * row_width]). Each basis column m < n_basis gets the local value that lands there,
// or 0; then the residual column gets base (entry c at base[c], kColumn base[c * n_in]), or,
// without one (kWithBase false), a NaN input makes all its columns NaN.
template <typename T, int K, bool kWithBase, bool kColumn>
inline void write_chunk(const Chunk<T, K>& chunk, const T* x, const T* base, int64_t count, int64_t n_basis,
                        int64_t n_in, int64_t row_width, T* out) {
  for (int64_t m = 0; m < n_basis; ++m) {
    T* column = out + m * n_in;
#pragma omp simd
    for (int64_t c = 0; c < count; ++c) {
      const int32_t r_here = static_cast<int32_t>(m) + K - chunk.span[c];  // which local value is basis m
      T v = T(0);
#pragma GCC unroll 8
      for (int r = 0; r <= K; ++r) v = r_here == r ? chunk.values[r][c] : v;
      column[kColumn ? c * row_width : c] = !kWithBase && std::isnan(x[c]) ? x[c] : v;
    }
  }
  if constexpr (kWithBase) {
    T* column = out + n_basis * n_in;
#pragma omp simd
    for (int64_t c = 0; c < count; ++c) column[kColumn ? c * row_width : c] = base[kColumn ? c * n_in : c];
  }
}

// A chunk's input gradients (entries as in write_chunk): for each entry, the sum over its
// existing bases m of the incoming gradient at grad + m * n_in + c (kColumn: + c * row_width)
// times the basis derivative, into out[c] (kColumn: out[c * n_in]); NaN for NaN inputs.
template <typename T, int K, bool kColumn>
inline void gather_chunk(const Chunk<T, K>& chunk, const T* x, const T* grad, int64_t count, int64_t n_basis,
                         int64_t n_in, int64_t row_width, T* out) {
#pragma omp simd
  for (int64_t c = 0; c < count; ++c) {
    const int32_t span = chunk.span[c];
    const int64_t entry = kColumn ? c * row_width : c;
    T sum = T(0);
#pragma GCC unroll 8
    for (int r = 0; r <= K; ++r) {
      const int32_t m = span - K + r;
      const bool exists = (span >= 0) & (m >= 0) & (m < n_basis);
      sum += exists ? grad[entry + (exists ? m : 0) * n_in] * chunk.values[r][c] : T(0);
    }
    out[kColumn ? c * n_in : c] = std::isnan(x[c]) ? x[c] : sum;
  }
}

// Narrow layers (at most kNarrow inputs) go by columns: a row of a few inputs would leave most of
// a chunk idle, so a chunk is kChunk samples of one input instead.
constexpr int64_t kNarrow = 6;
// Threads take tasks of at least kMinEntries (sample, input) entries: waking one costs more than
// a smaller task saves.
constexpr int64_t kMinEntries = 8192;

// Finds intervals and local values (P powers, see Locator::fill) chunk by chunk, samples spread
// over torch's threads, each thread with its own scratch, and hands each chunk on: wide layers
// to row(b, first, count, chunk) for inputs [first, first + count) of sample b; narrow ones to
// column(b, i, count, xs, chunk) for samples [b, b + count) of input i, whose values are xs.
template <typename T, int K, int P, typename Row, typename Column>
inline void for_each_chunk(const Intervals<T>& intervals, const at::Tensor& knots, const T* X, int64_t batch,
                           bool per_step, Row row, Column column) {
  const int64_t n_in = knots.size(0), n_knots = knots.size(1);
  const bool narrow = n_in <= kNarrow;
  const bool counted = intervals.cardinal == nullptr && n_knots <= kMaxCounted && !narrow;
  const at::Tensor knots_by_row = counted ? knots.t().contiguous() : at::Tensor();
  Locator<T> locate{intervals.knots, counted ? knots_by_row.template const_data_ptr<T>() : nullptr, n_in,
                    n_knots, intervals.table, intervals.columns, intervals.cardinal, intervals.start,
                    intervals.step};
  const at::Tensor lanes = narrow ? table_by_lanes(intervals.table, intervals.columns, knots) : at::Tensor();
  if (lanes.defined()) locate.lanes = lanes.template const_data_ptr<T>();
  if (narrow) {
    const int64_t blocks = (batch + kChunk - 1) / kChunk;
    at::parallel_for(0, blocks, std::max<int64_t>(1, kMinEntries / (kChunk * n_in)), [&](int64_t begin, int64_t end) {
      Chunk<T, K> chunk;
      alignas(64) T xs[kChunk];
      for (int64_t block = begin; block < end; ++block) {
        const int64_t b = block * kChunk, count = std::min(kChunk, batch - b);
        for (int64_t i = 0; i < n_in; ++i) {
          for (int64_t c = 0; c < count; ++c) xs[c] = X[(b + c) * n_in + i];
          locate.template fill<K, P, true>(xs, i, count, per_step, chunk);
          column(b, i, count, static_cast<const T*>(xs), chunk);
        }
      }
    });
    return;
  }
  at::parallel_for(0, batch, std::max<int64_t>(1, kMinEntries / n_in), [&](int64_t begin, int64_t end) {
    Chunk<T, K> chunk;
    for (int64_t b = begin; b < end; ++b)
      for (int64_t first = 0; first < n_in; first += kChunk) {
        const int64_t count = std::min(kChunk, n_in - first);
        locate.template fill<K, P, false>(X + b * n_in + first, first, count, per_step, chunk);
        row(b, first, count, chunk);
      }
  });
}

}  // namespace
