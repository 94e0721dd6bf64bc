// kanlab's compiled basis features: the B-spline layer's (batch, width * in) feature matrix
// and its first-order input gradient, and the layer weight matrix that multiplies it; and the
// local product, the layer's output from the same local bases without the feature matrix,
// alone, for a whole layer from its parameters (kan_layer) and with the regulariser's per-edge
// norms (kan_layer_norms). The local product goes by columns of samples on narrow layers (with
// few outputs, one output at a time vectorized over the samples, and the backward pass in one
// pass: column_backward), entry by entry on other layers of few outputs, and in blocks of
// samples sorted by interval on wide ones (blocked_product, blocked_backward).
//
// The same arithmetic as the pure-torch path in splines.py: on evenly spaced knots the closed
// form (f = (x - t_0) / h - s, the same polynomials in f on every interval); on other knots
// the interval s by counting knots <= x (torch.searchsorted(..., right=True)) and Horner's rule
// on that interval's power-form table (splines._interval_polynomials, in u = x - t_s), whose
// rows a column of samples looks up by register permutes where they fit (permuted_chunk). Bases
// are clamped at 0; bases that do not exist and inputs outside the knots give 0.
// Layout (slot-major, as the torch path): column m * in + i holds basis m of input i; with a
// residual, column n_basis * in + i holds base[b, i]. Second derivatives never come here: the
// Python side switches to its differentiable torch path when a backward pass builds a graph.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>
#if defined(__AVX__)
#include <immintrin.h>
#endif
#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

namespace {

// Rows of at most kMaxCounted knots are searched by counting the knots <= x, without branches;
// longer ones by bisection.
constexpr int64_t kMaxCounted = 40;

// Knots of row t (ascending) at or below x; NaN counts as below every knot (0). Short rows
// are counted without branches (no mispredictions), long ones by bisection.
template <typename T>
inline int64_t count_at_or_below(const T* t, int64_t n_knots, T x) {
  if (!(x >= t[0])) return 0;
  if (n_knots <= kMaxCounted) {
    int64_t count = 0;
    for (int64_t j = 0; j < n_knots; ++j) count += t[j] <= x;
    return count;
  }
  int64_t lo = 0, hi = n_knots;  // t[lo] <= x; every knot from hi on is > x
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) >> 1;
    if (t[mid] <= x) lo = mid; else hi = mid;
  }
  return hi;
}

// values[r] = sum_p table[1 + p * width + r] * u^p for r < width, p <= degree (Horner).
// Inlined where degree and width are compile-time constants, the loops unroll.
template <typename T>
inline void horner(const T* row, int64_t degree, int64_t width, T u, T* values) {
  for (int64_t r = 0; r < width; ++r) values[r] = row[1 + degree * width + r];
  for (int64_t p = degree - 1; p >= 0; --p)
    for (int64_t r = 0; r < width; ++r) values[r] = values[r] * u + row[1 + p * width + r];
}

// The interval s (t_s <= x < t_{s+1}) of x among input i's knots t, with that interval's table
// row evaluated at x into values; -1 (values untouched) for x outside [t_0, t_last) or NaN.
template <typename T>
inline int64_t local_values(const T* t, int64_t n_knots, const T* table, int64_t columns, int64_t i, T x,
                            int64_t degree, int64_t width, T* values) {
  const int64_t position = count_at_or_below(t, n_knots, x);
  if (position < 1 || position > n_knots - 1) return -1;
  const int64_t span = position - 1;
  const T* row = table + (i * (n_knots - 1) + span) * columns;
  horner(row, degree, width, x - row[0], values);
  return span;
}

// Where x falls among one layer's knots, and its local polynomial values: from the
// per-interval tables (any knots), or, given `cardinal`, in closed form for evenly spaced
// knots, as the torch path does: f = (x - t_0) / h - floor(.) and the same polynomials in f
// for every interval ((degree + 1, width) coefficients, row-major); with per_step (derivatives
// in x) divided by h.
template <typename T>
struct Intervals {
  const T* knots;
  int64_t n_knots;
  const T* table;
  int64_t columns;
  const T* cardinal;  // nullptr: general knots
  const T* start;
  const T* step;

  // The interval s of entry (., i) at x, values[r] for r < width; -1 outside or NaN.
  inline int64_t operator()(int64_t i, T x, int64_t degree, int64_t width, bool per_step, T* values) const {
    if (cardinal == nullptr) return local_values(knots + i * n_knots, n_knots, table, columns, i, x, degree, width, values);
    const T scaled = (x - start[i]) / step[i];
    const T lower = std::floor(scaled);
    if (!(lower >= T(0) && lower <= T(n_knots - 2))) return -1;
    T f = scaled - lower;
    f = f < T(0) ? T(0) : (f > T(1) ? T(1) : f);
    T power = T(1);
    for (int64_t r = 0; r < width; ++r) values[r] = cardinal[r];
    for (int64_t p = 1; p <= degree; ++p) {
      power = power * f;
      for (int64_t r = 0; r < width; ++r) values[r] += power * cardinal[p * width + r];
    }
    if (per_step) {
      const T inverse = T(1) / step[i];
      for (int64_t r = 0; r < width; ++r) values[r] = values[r] * inverse;
    }
    return static_cast<int64_t>(lower);
  }
};

// Calls body(std::integral_constant<int, K>) with K = k for the common degrees 1..5 (the
// chunked paths), and K = 0 (the entry-at-a-time path, k read at run time) otherwise.
template <typename Body>
inline void with_degree(int64_t k, Body body) {
  switch (k) {
    case 1: body(std::integral_constant<int, 1>()); break;
    case 2: body(std::integral_constant<int, 2>()); break;
    case 3: body(std::integral_constant<int, 3>()); break;
    case 4: body(std::integral_constant<int, 4>()); break;
    case 5: body(std::integral_constant<int, 5>()); break;
    default: body(std::integral_constant<int, 0>());
  }
}

// body(b, i) for every (sample, input) entry, samples spread over torch's threads: the
// entry-at-a-time path for degrees above 5.
template <typename Body>
inline void for_each_entry(int64_t batch, int64_t n_in, Body body) {
  at::parallel_for(0, batch, 64, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b)
      for (int64_t i = 0; i < n_in; ++i) body(b, i);
  });
}

void check(const at::Tensor& x, const at::Tensor& knots, int64_t k) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "x must be a contiguous (batch, in) tensor");
  TORCH_CHECK(knots.dim() == 2 && knots.size(0) == x.size(1) && knots.is_contiguous(),
              "knots must be a contiguous (in, n_knots) tensor");
  TORCH_CHECK(k >= 1 && k <= 16, "k must lie in [1, 16]");
  TORCH_CHECK(x.scalar_type() == knots.scalar_type(), "x and knots must share a dtype");
  TORCH_CHECK(x.device().is_cpu(), "the compiled basis features run on the CPU");
}

// How to evaluate: evenly spaced knots give cardinal (powers, k + 1) with start and step (in,),
// any other knots the per-interval table (one row per interval: t_s, then the coefficients).
template <typename T>
Intervals<T> intervals(const at::Tensor& knots, const std::optional<at::Tensor>& table,
                       const std::optional<at::Tensor>& cardinal, const std::optional<at::Tensor>& start,
                       const std::optional<at::Tensor>& step, int64_t k) {
  if (cardinal.has_value()) {
    TORCH_CHECK(start.has_value() && step.has_value(), "evenly spaced knots need start and step");
    for (const at::Tensor* t : {&*cardinal, &*start, &*step})
      TORCH_CHECK(t->is_contiguous() && t->scalar_type() == knots.scalar_type(), "start, step and cardinal must be "
                  "contiguous and of the knots' dtype");
    TORCH_CHECK(start->numel() == knots.size(0) && step->numel() == knots.size(0), "start and step must be (in,)");
    TORCH_CHECK(cardinal->dim() == 2 && cardinal->size(1) == k + 1 && cardinal->size(0) <= k + 1,
                "cardinal must be (powers, k + 1)");
    return Intervals<T>{knots.const_data_ptr<T>(), knots.size(1), nullptr, 0, cardinal->const_data_ptr<T>(),
                        start->const_data_ptr<T>(), step->const_data_ptr<T>()};
  }
  TORCH_CHECK(table.has_value(), "knots that are not evenly spaced need their per-interval table");
  TORCH_CHECK(table->dim() == 2 && table->size(0) == knots.size(0) * (knots.size(1) - 1) && table->is_contiguous(),
              "table must be contiguous with one row per interval");
  TORCH_CHECK(table->size(1) >= 1 + k * (k + 1), "table must hold t_s and the local polynomials' coefficients");
  TORCH_CHECK(table->numel() < std::numeric_limits<int32_t>::max(), "table too large for 32-bit offsets");
  TORCH_CHECK(table->scalar_type() == knots.scalar_type(), "table must be of the knots' dtype");
  return Intervals<T>{knots.const_data_ptr<T>(), knots.size(1), table->const_data_ptr<T>(), table->size(1),
                      nullptr, nullptr, nullptr};
}

constexpr int64_t kMaxWidth = 17;

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

// (batch, width * in) features, width = n_basis + 1 with a residual (base given) and n_basis
// without. Without a residual, a NaN input makes all its columns NaN (as the torch path).
at::Tensor basis_features(const at::Tensor& x, const std::optional<at::Tensor>& base, const at::Tensor& knots,
                          const std::optional<at::Tensor>& table, int64_t k, const std::optional<at::Tensor>& cardinal,
                          const std::optional<at::Tensor>& start, const std::optional<at::Tensor>& step) {
  check(x, knots, k);
  const bool with_base = base.has_value();
  if (with_base) TORCH_CHECK(base->sizes() == x.sizes() && base->is_contiguous(), "base must be like x");
  const int64_t batch = x.size(0), n_in = x.size(1), n_knots = knots.size(1);
  const int64_t n_basis = n_knots - k - 1, width = n_basis + (with_base ? 1 : 0);
  at::Tensor features = at::empty({batch, width * n_in}, x.options());  // every entry is written below
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "basis_features", [&] {
    using T = scalar_t;
    const T* X = x.const_data_ptr<T>();
    const T* R = with_base ? base->const_data_ptr<T>() : nullptr;
    T* out = features.data_ptr<T>();
    const Intervals<T> intervals_ = intervals<T>(knots, table, cardinal, start, step, k);
    with_degree(k, [&](auto degree) {
      constexpr int K = decltype(degree)::value;
      if constexpr (K == 0) {  // one entry at a time, k read at run time
        for_each_entry(batch, n_in, [&](int64_t b, int64_t i) {
          T values[kMaxWidth];
          const T xv = X[b * n_in + i];
          T* column = out + b * width * n_in + i;
          const int64_t span = intervals_(i, xv, k, k + 1, false, values);
          for (int64_t m = 0; m < n_basis; ++m) {
            const int64_t r = m + k - span;
            column[m * n_in] = span >= 0 && r >= 0 && r <= k ? std::max(values[r], T(0)) : T(0);
          }
          if (with_base) {
            column[n_basis * n_in] = R[b * n_in + i];
          } else if (std::isnan(xv)) {
            for (int64_t m = 0; m < n_basis; ++m) column[m * n_in] = xv;
          }
        });
      } else {
        const int64_t row_width = width * n_in;
        for_each_chunk<T, K, K + 1>(
            intervals_, knots, X, batch, false,
            [&](int64_t b, int64_t first, int64_t count, const Chunk<T, K>& chunk) {
              const T* xs = X + b * n_in + first;
              T* row = out + b * row_width + first;
              if (with_base)
                write_chunk<T, K, true, false>(chunk, xs, R + b * n_in + first, count, n_basis, n_in, 0, row);
              else write_chunk<T, K, false, false>(chunk, xs, nullptr, count, n_basis, n_in, 0, row);
            },
            [&](int64_t b, int64_t i, int64_t count, const T* xs, const Chunk<T, K>& chunk) {
              T* column = out + b * row_width + i;
              if (with_base)
                write_chunk<T, K, true, true>(chunk, xs, R + b * n_in + i, count, n_basis, n_in, row_width, column);
              else write_chunk<T, K, false, true>(chunk, xs, nullptr, count, n_basis, n_in, row_width, column);
            });
      }
    });
  });
  return features;
}

// d(loss)/dx (batch, in) from d(loss)/d(features) (batch, width * in), with derivative_table
// the per-interval d/du table (degree k - 1).
at::Tensor basis_features_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& knots,
                                   const std::optional<at::Tensor>& derivative_table, int64_t k, int64_t width,
                                   const std::optional<at::Tensor>& cardinal_derivative,
                                   const std::optional<at::Tensor>& start, const std::optional<at::Tensor>& step) {
  check(x, knots, k);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == x.size(0) && grad.size(1) == x.size(1) * width,
              "grad must be (batch, width * in)");
  const at::Tensor g = grad.contiguous();
  const int64_t batch = x.size(0), n_in = x.size(1), n_knots = knots.size(1), n_basis = n_knots - k - 1;
  at::Tensor grad_x = at::empty_like(x);  // every entry is written below
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "basis_features_backward", [&] {
    using T = scalar_t;
    const T *X = x.const_data_ptr<T>(), *G = g.const_data_ptr<T>();
    T* out = grad_x.data_ptr<T>();
    const Intervals<T> intervals_ = intervals<T>(knots, derivative_table, cardinal_derivative, start, step, k);
    with_degree(k, [&](auto degree) {
      constexpr int K = decltype(degree)::value;
      if constexpr (K == 0) {  // one entry at a time, k read at run time
        for_each_entry(batch, n_in, [&](int64_t b, int64_t i) {
          T values[kMaxWidth];
          const T xv = X[b * n_in + i];
          const T* column = G + b * width * n_in + i;
          const int64_t span = intervals_(i, xv, k - 1, k + 1, true, values);
          T sum = T(0);
          for (int64_t r = 0; span >= 0 && r <= k; ++r) {
            const int64_t m = span - k + r;
            if (m >= 0 && m < n_basis) sum += column[m * n_in] * values[r];
          }
          out[b * n_in + i] = std::isnan(xv) ? xv : sum;
        });
      } else {
        const int64_t row_width = width * n_in;
        for_each_chunk<T, K, K>(
            intervals_, knots, X, batch, true,
            [&](int64_t b, int64_t first, int64_t count, const Chunk<T, K>& chunk) {
              gather_chunk<T, K, false>(chunk, X + b * n_in + first, G + b * row_width + first, count, n_basis, n_in,
                                        0, out + b * n_in + first);
            },
            [&](int64_t b, int64_t i, int64_t count, const T* xs, const Chunk<T, K>& chunk) {
              gather_chunk<T, K, true>(chunk, xs, G + b * row_width + i, count, n_basis, n_in, row_width,
                                       out + b * n_in + i);
            });
      }
    });
  });
  return grad_x;
}

// The layer's (out, width * in) feature weight, slot-major like the features: column m * in + i
// of row o is coef[o, i, m] * spline_scale[o, i] for m < n_basis, and base_scale[o, i] in the
// residual slot m = n_basis (when base_scale is given). One pass instead of four small ops.
at::Tensor feature_weight(const at::Tensor& coef, const at::Tensor& spline_scale,
                          const std::optional<at::Tensor>& base_scale) {
  TORCH_CHECK(coef.dim() == 3 && coef.is_contiguous(), "coef must be a contiguous (out, in, n_basis) tensor");
  const int64_t n_out = coef.size(0), n_in = coef.size(1), n_basis = coef.size(2);
  const bool with_base = base_scale.has_value();
  for (const at::Tensor* t : {&spline_scale, with_base ? &*base_scale : &spline_scale}) {
    TORCH_CHECK(t->dim() == 2 && t->size(0) == n_out && t->size(1) == n_in && t->is_contiguous(),
                "spline_scale and base_scale must be contiguous (out, in) tensors");
    TORCH_CHECK(t->scalar_type() == coef.scalar_type(), "the scales must have coef's dtype");
  }
  TORCH_CHECK(coef.device().is_cpu(), "the compiled feature weight runs on the CPU");
  const int64_t width = n_basis + (with_base ? 1 : 0);
  at::Tensor weight = at::empty({n_out, width * n_in}, coef.options());  // every entry is written below
  AT_DISPATCH_FLOATING_TYPES(coef.scalar_type(), "feature_weight", [&] {
    using T = scalar_t;
    const T* C = coef.const_data_ptr<T>();
    const T* S = spline_scale.const_data_ptr<T>();
    const T* B = with_base ? base_scale->const_data_ptr<T>() : nullptr;
    T* W = weight.data_ptr<T>();
    at::parallel_for(0, n_out, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, width * n_in)),
                     [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        const T* c = C + o * n_in * n_basis;
        const T* s = S + o * n_in;
        T* w = W + o * width * n_in;
        for (int64_t m = 0; m < n_basis; ++m) {
          _Pragma("omp simd")  // (inside the dispatch macro's argument, where #pragma cannot go)
          for (int64_t i = 0; i < n_in; ++i) w[m * n_in + i] = c[i * n_basis + m] * s[i];
        }
        if (with_base) std::copy(B + o * n_in, B + (o + 1) * n_in, w + n_basis * n_in);
      }
    });
  });
  return weight;
}

// ---- The local product: a layer's output without its feature matrix. Each input has at most
// k + 1 non-zero bases, so out[b, :] = sum_i (sum over those bases m of B_m(x[b, i]) weight[i, m, :]
// + base[b, i] weight[i, n_basis, :]) costs batch * in * (k + 2) * n_out multiply-adds whatever
// G is, and nothing of size batch * in * G is written. weight is (in, width, n_out): the slot-major
// feature weight transposed. Inside, it is copied into padded rows (in, n_basis + 2k + 1, n_out): k
// zero rows before and after each input's bases, its residual row last, so an entry on interval s
// reads rows s .. s + k of its input whatever s is, with no test for bases that do not exist.

namespace {

// From this many outputs on, an entry's rows are taken whole (vectorized over outputs); below
// it, each output is taken for the whole chunk (vectorized over the chunk's entries).
constexpr int64_t kWideOut = 16;

template <typename T>
inline void axpy(T* __restrict__ row, T a, const T* __restrict__ w, int64_t n) {
#pragma omp simd
  for (int64_t o = 0; o < n; ++o) row[o] += a * w[o];
}

// Partial sums in one vector's worth of lanes: written so, GCC vectorizes it wherever it is
// inlined (an omp simd reduction here was left scalar inside the callers' unrolled loops).
template <typename T>
inline T dot(const T* __restrict__ a, const T* __restrict__ b, int64_t n) {
  constexpr int64_t kLanes = 64 / sizeof(T);
  T partial[kLanes] = {};
  int64_t o = 0;
  for (; o + kLanes <= n; o += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) partial[l] += a[o + l] * b[o + l];
  T sum = T(0);
  for (; o < n; ++o) sum += a[o] * b[o];
  for (int64_t l = 0; l < kLanes; ++l) sum += partial[l];
  return sum;
}

// A chunk's entries as padded weight rows: entry c reads rows row[c] .. row[c] + K with the local
// values v[r][c] (0 outside the knots), and its residual row base_row(c).
template <typename T, int K>
struct Rows {
  alignas(64) T v[K + 1][kChunk];
  alignas(64) int32_t row[kChunk];
  int32_t base_first, base_step;  // base_row(c) = base_first + c * base_step

  // Entry c belongs to input first_input + c * input_step (a row: step 1; a column: step 0).
  inline void fill(const Chunk<T, K>& chunk, int64_t first_input, int64_t input_step, int64_t padded_rows,
                   int64_t count) {
    const int32_t first = static_cast<int32_t>(first_input * padded_rows);
    const int32_t step = static_cast<int32_t>(input_step * padded_rows);
#pragma omp simd
    for (int64_t c = 0; c < count; ++c) {
      const int32_t s = chunk.span[c];
      const bool inside = s >= 0;
      row[c] = first + static_cast<int32_t>(c) * step + (inside ? s : 0);
#pragma GCC unroll 8
      for (int r = 0; r <= K; ++r) v[r][c] = inside ? chunk.values[r][c] : T(0);
    }
    base_first = first + static_cast<int32_t>(padded_rows - 1);
    base_step = step;
  }
};

// Adds the chunk's entries to the output: kColumn (samples of one input), entry c to out row c;
// else (inputs of one sample) all to out row 0. base[c * base_stride] is entry c's residual value;
// without one (nullptr), a NaN input makes the output NaN, as its features do.
template <typename T, int K, bool kColumn>
inline void product_chunk(const Rows<T, K>& rows, const T* xs, const T* base, int64_t base_stride, const T* W,
                          int64_t n_out, int64_t count, T* out) {
  if (n_out >= kWideOut) {
    for (int64_t c = 0; c < count; ++c) {
      T* target = kColumn ? out + c * n_out : out;
#pragma GCC unroll 8
      for (int r = 0; r <= K; ++r) axpy(target, rows.v[r][c], W + (rows.row[c] + r) * n_out, n_out);
      const int64_t base_row = rows.base_first + c * rows.base_step;
      if (base != nullptr) axpy(target, base[c * base_stride], W + base_row * n_out, n_out);
      else for (int64_t o = 0; o < n_out; ++o) target[o] += (std::isnan(xs[c]) ? xs[c] : T(0));
    }
    return;
  }
  for (int64_t o = 0; o < n_out; ++o) {
    T total = T(0);
#pragma omp simd reduction(+ : total)
    for (int64_t c = 0; c < count; ++c) {
      const int32_t base_row = rows.base_first + static_cast<int32_t>(c) * rows.base_step;
      T sum = base != nullptr ? base[c * base_stride] * W[base_row * n_out + o] : (std::isnan(xs[c]) ? xs[c] : T(0));
#pragma GCC unroll 8
      for (int r = 0; r <= K; ++r) sum += rows.v[r][c] * W[(rows.row[c] + r) * n_out + o];
      if constexpr (kColumn) out[c * n_out + o] += sum;
      else total += sum;
    }
    if constexpr (!kColumn) out[o] += total;
  }
}

// The chunk's input gradients, rows.v holding the bases' x-derivatives: entry c's sum over its
// bases of v * <weight row, grad row>, grad row c (kColumn) or 0, into result[c * result_stride].
template <typename T, int K, bool kColumn>
inline void slope_chunk(const Rows<T, K>& rows, const T* xs, const T* G, const T* W, int64_t n_out, int64_t count,
                        T* result, int64_t result_stride) {
  alignas(64) T sums[kChunk];
  if (n_out >= kWideOut) {
    for (int64_t c = 0; c < count; ++c) {
      const T* g = kColumn ? G + c * n_out : G;
      T sum = T(0);
#pragma GCC unroll 8
      for (int r = 0; r <= K; ++r) sum += rows.v[r][c] * dot(W + (rows.row[c] + r) * n_out, g, n_out);
      sums[c] = sum;
    }
  } else {
#pragma omp simd
    for (int64_t c = 0; c < count; ++c) sums[c] = T(0);
    for (int64_t o = 0; o < n_out; ++o) {
#pragma omp simd
      for (int64_t c = 0; c < count; ++c) {
        T sum = T(0);
#pragma GCC unroll 8
        for (int r = 0; r <= K; ++r) sum += rows.v[r][c] * W[(rows.row[c] + r) * n_out + o];
        sums[c] += sum * (kColumn ? G[c * n_out + o] : G[o]);
      }
    }
  }
#pragma omp simd
  for (int64_t c = 0; c < count; ++c) result[c * result_stride] = std::isnan(xs[c]) ? xs[c] : sums[c];
}

// Adds the chunk's part of the weight gradient into grad_w (padded, this thread's own): each
// entry's value times its grad row (c, kColumn, or 0) at its rows and its residual value at its
// residual row (without a residual, a NaN input makes its basis rows NaN, as the features do).
// Below kWideOut outputs, entry c adds into copy c % kSpread of grad_w (copy_size apart), so that
// consecutive entries on the same interval do not wait on each other's stores.
constexpr int64_t kSpread = 4;

template <typename T, int K, bool kColumn>
inline void scatter_chunk(const Rows<T, K>& rows, const T* xs, const T* base, int64_t base_stride, const T* G,
                          int64_t n_out, int64_t n_basis, int64_t count, T* grad_w_copies, int64_t copy_size) {
  for (int64_t c = 0; c < count; ++c) {
    const T* g = kColumn ? G + c * n_out : G;
    T* grad_w = grad_w_copies + (n_out >= kWideOut ? 0 : (c % kSpread) * copy_size);
#pragma GCC unroll 8
    for (int r = 0; r <= K; ++r) {
      T* target = grad_w + (rows.row[c] + r) * n_out;
      const T v = rows.v[r][c];
      if (n_out >= kWideOut) axpy(target, v, g, n_out);
      else for (int64_t o = 0; o < n_out; ++o) target[o] += v * g[o];
    }
    T* residual = grad_w + (rows.base_first + c * rows.base_step) * n_out;
    if (base != nullptr) {
      axpy(residual, base[c * base_stride], g, n_out);
    } else if (std::isnan(xs[c])) {  // basis m's row lies n_basis + K - m rows above the residual's
      for (int64_t m = 0; m < n_basis; ++m)
        for (int64_t o = 0; o < n_out; ++o) residual[(m - n_basis - K) * n_out + o] += xs[c] * g[o];
    }
  }
}

// Like for_each_chunk, handing each chunk's local values and their x-derivatives (slopes) together.
template <typename T, int K, typename Row, typename Column>
inline void for_each_chunk_with_slopes(const Intervals<T>& values, const Intervals<T>& slopes,
                                       const at::Tensor& knots, const T* X, int64_t batch, Row row, Column column) {
  const int64_t n_in = knots.size(0), n_knots = knots.size(1);
  const bool narrow = n_in <= kNarrow;
  const bool counted = values.cardinal == nullptr && n_knots <= kMaxCounted && !narrow;
  const at::Tensor knots_by_row = counted ? knots.t().contiguous() : at::Tensor();
  const T* by_row = counted ? knots_by_row.template const_data_ptr<T>() : nullptr;
  Locator<T> locate_values{values.knots, by_row, n_in, n_knots, values.table, values.columns,
                           values.cardinal, values.start, values.step};
  Locator<T> locate_slopes{slopes.knots, by_row, n_in, n_knots, slopes.table, slopes.columns,
                           slopes.cardinal, slopes.start, slopes.step};
  const at::Tensor value_lanes = narrow ? table_by_lanes(values.table, values.columns, knots) : at::Tensor();
  const at::Tensor slope_lanes = narrow ? table_by_lanes(slopes.table, slopes.columns, knots) : at::Tensor();
  if (value_lanes.defined()) locate_values.lanes = value_lanes.template const_data_ptr<T>();
  if (slope_lanes.defined()) locate_slopes.lanes = slope_lanes.template const_data_ptr<T>();
  if (narrow) {
    const int64_t blocks = (batch + kChunk - 1) / kChunk;
    at::parallel_for(0, blocks, std::max<int64_t>(1, kMinEntries / (kChunk * n_in)), [&](int64_t begin, int64_t end) {
      Chunk<T, K> value_chunk, slope_chunk_;
      alignas(64) T xs[kChunk];
      for (int64_t block = begin; block < end; ++block) {
        const int64_t b = block * kChunk, count = std::min(kChunk, batch - b);
        for (int64_t i = 0; i < n_in; ++i) {
          for (int64_t c = 0; c < count; ++c) xs[c] = X[(b + c) * n_in + i];
          locate_values.template fill<K, K + 1, true>(xs, i, count, false, value_chunk);
          locate_slopes.template fill<K, K, true>(xs, i, count, true, slope_chunk_);
          column(b, i, count, static_cast<const T*>(xs), value_chunk, slope_chunk_);
        }
      }
    });
    return;
  }
  at::parallel_for(0, batch, std::max<int64_t>(1, kMinEntries / n_in), [&](int64_t begin, int64_t end) {
    Chunk<T, K> value_chunk, slope_chunk_;
    for (int64_t b = begin; b < end; ++b)
      for (int64_t first = 0; first < n_in; first += kChunk) {
        const int64_t count = std::min(kChunk, n_in - first);
        locate_values.template fill<K, K + 1, false>(X + b * n_in + first, first, count, false, value_chunk);
        locate_slopes.template fill<K, K, false>(X + b * n_in + first, first, count, true, slope_chunk_);
        row(b, first, count, value_chunk, slope_chunk_);
      }
  });
}

// phi of a column's entry c (samples of one input) for output o, as edge_values computes it.
template <typename T, int K>
inline T column_edge_value(const Rows<T, K>& rows, int64_t c, T x, const T* base, int64_t base_stride,
                           const T* residual, const T* W, int64_t n_out, int64_t o) {
  T phi = base != nullptr ? base[c * base_stride] * residual[o] : (std::isnan(x) ? x : T(0));
#pragma GCC unroll 8
  for (int r = 0; r <= K; ++r) phi += rows.v[r][c] * W[(rows.row[c] + r) * n_out + o];
  return phi;
}

// The backward pass of a column of samples (one input) with few outputs, output by output: each
// entry's output gradient (kNorms: with the norms' part, GN this input's column of
// grad_norms / batch, n_in apart), its x-gradient and residual-gradient parts vectorized over the
// column's entries; the weight gradient adds entry c into copy c % kSpread of grad_w (copy_size
// apart), as scatter_chunk does (and, as it does without kNorms, a NaN input without a residual
// makes its basis rows NaN).
template <typename T, int K, bool kNorms>
inline void column_backward(const Rows<T, K>& values, const Rows<T, K>& slopes, const T* xs, const T* base,
                            int64_t base_stride, const T* G, const T* GN, const T* W, int64_t n_out, int64_t n_in,
                            int64_t n_basis, int64_t count, T* grad_w, T* grad_x, T* grad_base, int64_t result_stride,
                            int64_t copy_size) {
  const T* residual = W + values.base_first * n_out;
  alignas(64) T gradient[kChunk], x_sum[kChunk], base_sum[kChunk], residual_in[kChunk];
#pragma omp simd
  for (int64_t c = 0; c < count; ++c) x_sum[c] = base_sum[c] = T(0);
  if constexpr (kNorms) {  // the entries' residual inputs, contiguous; without a residual 0, or NaN for NaN x
    if (base != nullptr) {
      for (int64_t c = 0; c < count; ++c) residual_in[c] = base[c * base_stride];
    } else {
#pragma omp simd
      for (int64_t c = 0; c < count; ++c) residual_in[c] = std::isnan(xs[c]) ? xs[c] : T(0);
    }
  }
  // One short loop per quantity: GCC vectorizes each of these, where it left the single loop
  // over the entries that did all of them scalar for most degrees and types (seen on AVX2).
  for (int64_t o = 0; o < n_out; ++o) {
#pragma omp simd
    for (int64_t c = 0; c < count; ++c) gradient[c] = G[c * n_out + o];
    if constexpr (kNorms) {  // phi as column_edge_value computes it, then its sign's part
      const T norm_gradient = GN[o * n_in];
      const T weight = base != nullptr ? residual[o] : T(1);
#pragma omp simd
      for (int64_t c = 0; c < count; ++c) {
        T value = residual_in[c] * weight;
#pragma GCC unroll 8
        for (int r = 0; r <= K; ++r) value += values.v[r][c] * W[(values.row[c] + r) * n_out + o];
        gradient[c] += value > T(0) ? norm_gradient : (value < T(0) ? -norm_gradient : T(0));
      }
    }
    if (grad_base != nullptr) {
      const T weight = residual[o];
#pragma omp simd
      for (int64_t c = 0; c < count; ++c) base_sum[c] += weight * gradient[c];
    }
    if (grad_x != nullptr) {
#pragma omp simd
      for (int64_t c = 0; c < count; ++c) {
        T slope = T(0);
#pragma GCC unroll 8
        for (int r = 0; r <= K; ++r) slope += slopes.v[r][c] * W[(slopes.row[c] + r) * n_out + o];
        x_sum[c] += slope * gradient[c];
      }
    }
    if (grad_w != nullptr) {
      for (int64_t c = 0; c < count; ++c) {
        T* copy = grad_w + (c % kSpread) * copy_size;
#pragma GCC unroll 8
        for (int r = 0; r <= K; ++r) copy[(values.row[c] + r) * n_out + o] += values.v[r][c] * gradient[c];
        if (base != nullptr) {
          copy[values.base_first * n_out + o] += base[c * base_stride] * gradient[c];
        } else if (!kNorms && std::isnan(xs[c])) {  // basis m's row lies n_basis + K - m above the residual's
          T* basis_rows = copy + (values.base_first - n_basis - K) * n_out + o;
          for (int64_t m = 0; m < n_basis; ++m) basis_rows[m * n_out] += xs[c] * gradient[c];
        }
      }
    }
  }
  if (grad_x != nullptr) {
#pragma omp simd
    for (int64_t c = 0; c < count; ++c) grad_x[c * result_stride] = std::isnan(xs[c]) ? xs[c] : x_sum[c];
  }
  if (grad_base != nullptr) {
#pragma omp simd
    for (int64_t c = 0; c < count; ++c) grad_base[c * result_stride] = base_sum[c];
  }
}

struct LocalShape {
  int64_t batch, n_in, n_basis, width, n_out, padded_rows;
};

LocalShape local_shape(const at::Tensor& x, const std::optional<at::Tensor>& base, const at::Tensor& knots, int64_t k,
                       const at::Tensor& weight) {
  check(x, knots, k);
  TORCH_CHECK(k <= 5, "the local product takes degrees 1..5");
  if (base.has_value()) TORCH_CHECK(base->sizes() == x.sizes() && base->is_contiguous(), "base must be like x");
  const int64_t n_basis = knots.size(1) - k - 1, width = n_basis + (base.has_value() ? 1 : 0);
  TORCH_CHECK(weight.dim() == 3 && weight.size(0) == x.size(1) && weight.size(1) == width && weight.is_contiguous(),
              "weight must be a contiguous (in, width, out) tensor");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "weight must have x's dtype");
  const LocalShape shape{x.size(0), x.size(1), n_basis, width, weight.size(2), n_basis + 2 * k + 1};
  TORCH_CHECK(shape.n_in * shape.padded_rows * std::max<int64_t>(1, shape.n_out) < std::numeric_limits<int32_t>::max(),
              "weight too large for 32-bit offsets");
  return shape;
}

// weight (in, width, n_out) into padded rows (in, n_basis + 2k + 1, n_out), see above; one plain
// pass (these layers are small, and a few tensor operations would cost more than the copy).
at::Tensor padded_weight(const at::Tensor& weight, const LocalShape& shape, int64_t k, bool with_base) {
  at::Tensor padded = at::empty({shape.n_in, shape.padded_rows, shape.n_out}, weight.options());
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "padded_weight", [&] {
    const scalar_t* from = weight.const_data_ptr<scalar_t>();
    scalar_t* to = padded.data_ptr<scalar_t>();
    const int64_t n_out = shape.n_out, block = shape.n_basis * n_out;
    for (int64_t i = 0; i < shape.n_in; ++i) {
      scalar_t* rows = to + i * shape.padded_rows * n_out;
      const scalar_t* source = from + i * shape.width * n_out;
      std::fill(rows, rows + k * n_out, scalar_t(0));
      std::copy(source, source + block, rows + k * n_out);
      std::fill(rows + k * n_out + block, rows + (shape.padded_rows - 1) * n_out, scalar_t(0));
      if (with_base) std::copy(source + block, source + block + n_out, rows + (shape.padded_rows - 1) * n_out);
      else std::fill(rows + (shape.padded_rows - 1) * n_out, rows + shape.padded_rows * n_out, scalar_t(0));
    }
  });
  return padded;
}

// The inverse for gradients: the sum of parts (copies, padded) back into (in, width, n_out).
at::Tensor unpadded_sum(const at::Tensor& parts, const LocalShape& shape, int64_t k, bool with_base) {
  at::Tensor result = at::empty({shape.n_in, shape.width, shape.n_out}, parts.options());
  AT_DISPATCH_FLOATING_TYPES(parts.scalar_type(), "unpadded_sum", [&] {
    const scalar_t* from = parts.const_data_ptr<scalar_t>();
    scalar_t* to = result.data_ptr<scalar_t>();
    const int64_t n_out = shape.n_out, padded = shape.padded_rows * n_out, copies = parts.size(0);
    for (int64_t i = 0; i < shape.n_in; ++i)
      for (int64_t m = 0; m < shape.width; ++m) {
        const int64_t row = m < shape.n_basis ? m + k : shape.padded_rows - 1;
        scalar_t* target = to + (i * shape.width + m) * n_out;
        const scalar_t* source = from + (i * shape.padded_rows + row) * n_out;
        std::copy(source, source + n_out, target);
        for (int64_t copy = 1; copy < copies; ++copy)
          for (int64_t o = 0; o < n_out; ++o) target[o] += source[copy * shape.n_in * padded + o];
      }
  });
  return result;
}

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

// out (batch, n_out) from the padded weight (see padded_weight), given in the tiled layout where
// tiled says so (the fused layer's, tiled_layout).
at::Tensor product_from_padded(const at::Tensor& x, const std::optional<at::Tensor>& base, const at::Tensor& knots,
                               const std::optional<at::Tensor>& table, int64_t k,
                               const std::optional<at::Tensor>& cardinal, const std::optional<at::Tensor>& start,
                               const std::optional<at::Tensor>& step, const at::Tensor& padded,
                               const LocalShape& shape, bool tiled = false) {
  const bool with_base = base.has_value();
  const bool blocks = tiled || (takes_blocks(shape) && (with_base || !at::isnan(x).any().item<bool>()));
  const at::Tensor residual = tiled ? tiled_residual(padded, shape) : padded.select(1, shape.padded_rows - 1);
  at::Tensor result = blocks && with_base ? at::mm(*base, residual) : at::zeros({shape.batch, shape.n_out}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "local_product", [&] {
    using T = scalar_t;
    const T *X = x.const_data_ptr<T>(), *R = with_base ? base->const_data_ptr<T>() : nullptr;
    const T* W = padded.const_data_ptr<T>();
    T* out = result.data_ptr<T>();
    const int64_t n_in = shape.n_in, n_out = shape.n_out, padded_rows = shape.padded_rows;
    const Intervals<T> intervals_ = intervals<T>(knots, table, cardinal, start, step, k);
    with_degree(k, [&](auto degree) {
      constexpr int K = decltype(degree)::value;
      if constexpr (K > 0) {
        if (blocks) {
          blocked_product<T, K>(intervals_, knots, X, W, shape, out, tiled);
          return;
        }
        for_each_chunk<T, K, K + 1>(
            intervals_, knots, X, shape.batch, false,
            [&](int64_t b, int64_t first, int64_t count, const Chunk<T, K>& chunk) {
              Rows<T, K> rows;
              rows.fill(chunk, first, 1, padded_rows, count);
              product_chunk<T, K, false>(rows, X + b * n_in + first, R ? R + b * n_in + first : nullptr, 1, W, n_out,
                                         count, out + b * n_out);
            },
            [&](int64_t b, int64_t i, int64_t count, const T* xs, const Chunk<T, K>& chunk) {
              Rows<T, K> rows;
              rows.fill(chunk, i, 0, padded_rows, count);
              product_chunk<T, K, true>(rows, xs, R ? R + b * n_in + i : nullptr, n_in, W, n_out, count,
                                        out + b * n_out);
            });
      }
    });
  });
  return result;
}

// Gradients of the product's output from grad (batch, n_out) and the padded weight: (grad_x,
// grad_base, parts), each computed only where asked (an empty tensor otherwise); parts are the
// padded weight gradient's per-thread copies, (copies, in, padded_rows, n_out), to be summed.
// derivative_table / cardinal_derivative give the bases' x-derivatives, as in
// basis_features_backward. The padded weight in the tiled layout where tiled says so; its
// gradient's parts are row-major in any case.
std::tuple<at::Tensor, at::Tensor, at::Tensor> product_backward_from_padded(
    const at::Tensor& grad, const at::Tensor& x, const std::optional<at::Tensor>& base, const at::Tensor& knots,
    const std::optional<at::Tensor>& table, const std::optional<at::Tensor>& derivative_table, int64_t k,
    const std::optional<at::Tensor>& cardinal, const std::optional<at::Tensor>& cardinal_derivative,
    const std::optional<at::Tensor>& start, const std::optional<at::Tensor>& step, const at::Tensor& padded,
    const LocalShape& shape, bool need_x, bool need_base, bool need_weight, bool tiled = false) {
  const bool with_base = base.has_value();
  const int64_t batch = shape.batch, n_in = shape.n_in, n_out = shape.n_out, padded_rows = shape.padded_rows;
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == batch && grad.size(1) == n_out, "grad must be (batch, out)");
  const at::Tensor g = grad.contiguous();
  at::Tensor grad_x = need_x ? at::empty_like(x) : at::empty({0}, x.options());
  // a narrow layer with few outputs takes every gradient in one pass by columns (column_backward)
  const bool by_columns = n_in <= kNarrow && n_out < kWideOut;
  at::Tensor grad_base = by_columns && need_base && with_base ? at::empty_like(x) : at::empty({0}, x.options());
  const bool blocks = tiled || (takes_blocks(shape) && (with_base || !at::isnan(x).any().item<bool>()));
  const int64_t n_threads = need_weight ? at::get_num_threads() : 0;
  const int64_t spread = n_out >= kWideOut ? 1 : kSpread, copy_size = n_in * padded_rows * n_out;
  // the blocks write one part, each thread zeroing its own inputs' rows (in parallel, while in cache)
  at::Tensor parts = !need_weight ? at::Tensor()
                     : blocks     ? at::empty({1, n_in, padded_rows, n_out}, x.options())
                                  : at::zeros({n_threads * spread, n_in, padded_rows, n_out}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "local_product_backward", [&] {
    using T = scalar_t;
    const T *X = x.const_data_ptr<T>(), *R = with_base ? base->const_data_ptr<T>() : nullptr;
    const T *W = padded.const_data_ptr<T>(), *G = g.const_data_ptr<T>();
    with_degree(k, [&](auto degree) {
      constexpr int K = decltype(degree)::value;
      if constexpr (K > 0) {
        if (blocks) {
          const Intervals<T> values = intervals<T>(knots, table, cardinal, start, step, k);
          const Intervals<T> slopes =
              need_x ? intervals<T>(knots, derivative_table, cardinal_derivative, start, step, k) : values;
          blocked_backward<T, K>(values, slopes, knots, X, G, W, shape, need_x ? grad_x.data_ptr<T>() : nullptr,
                                 need_weight ? parts.data_ptr<T>() : nullptr, nullptr, tiled);
          return;
        }
        if (by_columns) {
          const Intervals<T> values = intervals<T>(knots, table, cardinal, start, step, k);
          const Intervals<T> slopes = intervals<T>(knots, derivative_table, cardinal_derivative, start, step, k);
          T* GX = need_x ? grad_x.data_ptr<T>() : nullptr;
          T* GB = grad_base.numel() > 0 ? grad_base.data_ptr<T>() : nullptr;
          T* P = need_weight ? parts.data_ptr<T>() : nullptr;
          for_each_chunk_with_slopes<T, K>(
              values, slopes, knots, X, batch,
              [](int64_t, int64_t, int64_t, const Chunk<T, K>&, const Chunk<T, K>&) {},  // narrow: columns only
              [&](int64_t b, int64_t i, int64_t count, const T* xs, const Chunk<T, K>& value_chunk,
                  const Chunk<T, K>& slope_chunk_) {
                Rows<T, K> value_rows, slope_rows;
                value_rows.fill(value_chunk, i, 0, padded_rows, count);
                slope_rows.fill(slope_chunk_, i, 0, padded_rows, count);
                T* own_part = nullptr;
                if (P != nullptr) {
                  const int64_t thread = at::get_thread_num();
                  TORCH_CHECK(thread < n_threads, "more threads than at the start of the backward pass");
                  own_part = P + thread * spread * copy_size;
                }
                const int64_t at = b * n_in + i;
                column_backward<T, K, false>(value_rows, slope_rows, xs, R ? R + at : nullptr, n_in, G + b * n_out,
                                             nullptr, W, n_out, n_in, shape.n_basis, count, own_part,
                                             GX ? GX + at : nullptr, GB ? GB + at : nullptr, n_in, copy_size);
              });
          return;
        }
        if (need_weight) {
          T* P = parts.data_ptr<T>();
          auto own_part = [&]() {
            const int64_t thread = at::get_thread_num();
            TORCH_CHECK(thread < n_threads, "more threads than at the start of the backward pass");
            return P + thread * spread * copy_size;
          };
          const Intervals<T> values = intervals<T>(knots, table, cardinal, start, step, k);
          for_each_chunk<T, K, K + 1>(
              values, knots, X, batch, false,
              [&](int64_t b, int64_t first, int64_t count, const Chunk<T, K>& chunk) {
                Rows<T, K> rows;
                rows.fill(chunk, first, 1, padded_rows, count);
                scatter_chunk<T, K, false>(rows, X + b * n_in + first, R ? R + b * n_in + first : nullptr, 1,
                                           G + b * n_out, n_out, shape.n_basis, count, own_part(), copy_size);
              },
              [&](int64_t b, int64_t i, int64_t count, const T* xs, const Chunk<T, K>& chunk) {
                Rows<T, K> rows;
                rows.fill(chunk, i, 0, padded_rows, count);
                scatter_chunk<T, K, true>(rows, xs, R ? R + b * n_in + i : nullptr, n_in, G + b * n_out, n_out,
                                          shape.n_basis, count, own_part(), copy_size);
              });
        }
        if (need_x) {
          T* out = grad_x.data_ptr<T>();
          const Intervals<T> slopes = intervals<T>(knots, derivative_table, cardinal_derivative, start, step, k);
          for_each_chunk<T, K, K>(
              slopes, knots, X, batch, true,
              [&](int64_t b, int64_t first, int64_t count, const Chunk<T, K>& chunk) {
                Rows<T, K> rows;
                rows.fill(chunk, first, 1, padded_rows, count);
                slope_chunk<T, K, false>(rows, X + b * n_in + first, G + b * n_out, W, n_out, count,
                                         out + b * n_in + first, 1);
              },
              [&](int64_t b, int64_t i, int64_t count, const T* xs, const Chunk<T, K>& chunk) {
                Rows<T, K> rows;
                rows.fill(chunk, i, 0, padded_rows, count);
                slope_chunk<T, K, true>(rows, xs, G + b * n_out, W, n_out, count, out + b * n_in + i, n_in);
              });
        }
      }
    });
  });
  // grad_base[b, i] = <weight[i, residual row, :], grad[b, :]>: one small matrix product
  if (need_base && with_base && !by_columns)
    grad_base = at::mm(g, (tiled ? tiled_residual(padded, shape) : padded.select(1, padded_rows - 1)).t());
  // the blocks leave the residual row's weight gradient to a matrix product too
  if (blocks && need_weight && with_base) parts.select(0, 0).select(1, padded_rows - 1).add_(at::mm(base->t(), g));
  return {grad_x, grad_base, need_weight ? parts : at::empty({0}, x.options())};
}

}  // namespace

// out (batch, n_out) = the layer's output (without bias or symbolic edges); degrees 1..5.
at::Tensor local_product(const at::Tensor& x, const std::optional<at::Tensor>& base, const at::Tensor& knots,
                         const std::optional<at::Tensor>& table, int64_t k, const std::optional<at::Tensor>& cardinal,
                         const std::optional<at::Tensor>& start, const std::optional<at::Tensor>& step,
                         const at::Tensor& weight) {
  const LocalShape shape = local_shape(x, base, knots, k, weight);
  const at::Tensor padded = padded_weight(weight, shape, k, base.has_value());
  return product_from_padded(x, base, knots, table, k, cardinal, start, step, padded, shape);
}

// Gradients of local_product's output from grad (batch, n_out): (grad_x, grad_base, grad_weight), each
// computed only where asked (an empty tensor otherwise). grad_weight sums per-thread parts.
std::tuple<at::Tensor, at::Tensor, at::Tensor> local_product_backward(
    const at::Tensor& grad, const at::Tensor& x, const std::optional<at::Tensor>& base, const at::Tensor& knots,
    const std::optional<at::Tensor>& table, const std::optional<at::Tensor>& derivative_table, int64_t k,
    const std::optional<at::Tensor>& cardinal, const std::optional<at::Tensor>& cardinal_derivative,
    const std::optional<at::Tensor>& start, const std::optional<at::Tensor>& step, const at::Tensor& weight,
    bool need_x, bool need_base, bool need_weight) {
  const LocalShape shape = local_shape(x, base, knots, k, weight);
  const at::Tensor padded = padded_weight(weight, shape, k, base.has_value());
  auto [grad_x, grad_base, parts] = product_backward_from_padded(
      grad, x, base, knots, table, derivative_table, k, cardinal, cardinal_derivative, start, step, padded, shape,
      need_x, need_base, need_weight);
  at::Tensor grad_weight = need_weight ? unpadded_sum(parts, shape, k, base.has_value()) : at::empty({0}, x.options());
  return {grad_x, grad_base, grad_weight};
}

// ---- The fused layer: kan_layer builds the padded weight straight from the layer's parameters
// and computes the silu residual itself, so a small KAN's training step is one call per layer
// forward and one backward, instead of a dozen small tensor operations and their graph nodes.
// Padded row k + m of input i holds (mask * scale_sp)[o, i] * coef[o, i, m] for output o, the
// last row (mask * scale_base)[o, i], the products in the order of the torch path's. Where the
// layer goes in coarse blocks on AVX2 the rows are kept in the tiled layout (tiled_layout), which
// the forward pass and the backward pass (given the forward's weight or building it again) both
// read; the padded weight a caller gets back is only for kan_layer_backward.

namespace {

// The fused layer's weight and its gradients are rearranged (coef's (out, in, n_basis) to the
// padded (in, rows, out) and back) in blocks of kSpan outputs by kInputs inputs, whose
// parameters lie together in coef and whose padded rows take kSpan values at a time; over
// threads from kLargeLayer coefficients on.
constexpr int64_t kSpan = 16, kInputs = 16;
constexpr int64_t kLargeLayer = 1 << 14;

// body(i0, inputs, o0, outputs, block) for each block, block a (kInputs, n_basis + 1, kSpan)
// scratch of the calling thread.
template <typename T, typename Body>
void for_each_transpose_block(const LocalShape& shape, Body body) {
  const int64_t n_blocks = (shape.n_in + kInputs - 1) / kInputs;
  const int64_t grain = std::max<int64_t>(1, kLargeLayer / std::max<int64_t>(1, kInputs * shape.n_out * shape.n_basis));
  at::parallel_for(0, n_blocks, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> block(kInputs * (shape.n_basis + 1) * kSpan);
    for (int64_t index = begin; index < end; ++index) {
      const int64_t i0 = index * kInputs, inputs = std::min(kInputs, shape.n_in - i0);
      for (int64_t o0 = 0; o0 < shape.n_out; o0 += kSpan) body(i0, inputs, o0, std::min(kSpan, shape.n_out - o0), block.data());
    }
  });
}
LocalShape layer_shape(const at::Tensor& x, const at::Tensor& knots, int64_t k, const at::Tensor& coef,
                       const at::Tensor& scale_sp, const std::optional<at::Tensor>& scale_base,
                       const at::Tensor& mask) {
  check(x, knots, k);
  TORCH_CHECK(k <= 5, "the local product takes degrees 1..5");
  const int64_t n_basis = knots.size(1) - k - 1;
  TORCH_CHECK(coef.dim() == 3 && coef.size(1) == x.size(1) && coef.size(2) == n_basis && coef.is_contiguous(),
              "coef must be a contiguous (out, in, n_basis) tensor");
  for (const at::Tensor* t : {&coef, &scale_sp, &mask, scale_base.has_value() ? &*scale_base : &mask}) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), "the layer's parameters must have x's dtype");
    if (t == &coef) continue;
    TORCH_CHECK(t->dim() == 2 && t->size(0) == coef.size(0) && t->size(1) == coef.size(1) && t->is_contiguous(),
                "scale_sp, scale_base and mask must be contiguous (out, in) tensors");
  }
  const LocalShape shape{x.size(0), x.size(1), n_basis, n_basis + (scale_base.has_value() ? 1 : 0), coef.size(0),
                         n_basis + 2 * k + 1};
  TORCH_CHECK(shape.n_in * shape.padded_rows * std::max<int64_t>(1, shape.n_out) < std::numeric_limits<int32_t>::max(),
              "weight too large for 32-bit offsets");
  return shape;
}

#if defined(KANLAB_TRANSPOSES)
// layer_padded_weight with AVX-512 or AVX2: kInputs inputs by a vector of outputs by a vector of
// bases at a time, the outputs' coefficients (each a row of coef) loaded, scaled and transposed
// in registers into pieces of the padded rows (with tiled, of the tiled layout's tiles: a vector
// of outputs lies in one tile); the same products as the blocks below, so the same values.
template <typename T>
void padded_weight_by_transposes(const T* C, const T* S, const T* B, const T* M, const LocalShape& shape, int64_t k,
                                 T* P, bool tiled) {
  using Masked = MaskedVector<T>;
  constexpr int64_t kLanes = kVectorBytes / sizeof(T);
  const int64_t n_in = shape.n_in, n_out = shape.n_out, n_basis = shape.n_basis, rows = shape.padded_rows;
  const int64_t n_blocks = (n_in + kInputs - 1) / kInputs;
  const int64_t grain = std::max<int64_t>(1, kLargeLayer / std::max<int64_t>(1, kInputs * n_out * n_basis));
  at::parallel_for(0, n_blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index)
      for (int64_t o0 = 0; o0 < n_out; o0 += kLanes)
        for (int64_t i = index * kInputs; i < std::min(n_in, (index + 1) * kInputs); ++i) {
          const int64_t outputs = std::min(kLanes, n_out - o0);
          T* residual_row = tiled ? P + (n_in * (rows - 1) + i) * n_out : P + (i * rows + rows - 1) * n_out;
          if (tiled) {
            int64_t t0, width;
            tile_containing<T>(o0, n_out, t0, width);
            T* piece = P + i * (rows - 1) * n_out + t0 * (rows - 1) + o0 - t0;  // the tile's rows, width apart
            scaled_spline_rows(C, S, M, shape, k, i, o0, outputs, piece, width);
          } else {
            scaled_spline_rows(C, S, M, shape, k, i, o0, outputs, P + i * rows * n_out + o0, n_out);
          }
          T residual[kLanes] = {};
          if (B != nullptr)
            for (int64_t l = 0; l < outputs; ++l) residual[l] = M[(o0 + l) * n_in + i] * B[(o0 + l) * n_in + i];
          const auto output_mask = Masked::first(outputs);
          Masked::store(residual_row + o0, Masked::load(residual, output_mask), output_mask);
        }
  });
}

// layer_gradients for a single part: input_edge_gradients for kInputs inputs by a vector of
// outputs at a time, so that each output's gradients are written in runs of kInputs rows and the
// vector's columns share cache lines; grad_scale_base = g * mask from the residual row.
template <typename T>
void gradients_from_one_part(const T* P, const T* C, const T* S, const T* M, const LocalShape& shape, int64_t k, T* GC,
                          T* GS, T* GB) {
  constexpr int64_t kLanes = kVectorBytes / sizeof(T);
  const int64_t n_in = shape.n_in, n_out = shape.n_out, n_basis = shape.n_basis, rows = shape.padded_rows;
  const int64_t n_blocks = (n_in + kInputs - 1) / kInputs;
  const int64_t grain = std::max<int64_t>(1, kLargeLayer / std::max<int64_t>(1, kInputs * n_out * n_basis));
  const EdgeTargets<T> edges{C, S, M, GC, GS};
  at::parallel_for(0, n_blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index)
      for (int64_t o0 = 0; o0 < n_out; o0 += kLanes)
        for (int64_t i = index * kInputs; i < std::min(n_in, (index + 1) * kInputs); ++i) {
          const T* slab = P + i * rows * n_out;
          const int64_t o1 = std::min(n_out, o0 + kLanes);
          if (GC != nullptr || GS != nullptr) input_edge_gradients(slab + o0, n_out, i, o0, o1, shape, k, edges);
          if (GB != nullptr)
            for (int64_t o = o0; o < o1; ++o) GB[o * n_in + i] = slab[(rows - 1) * n_out + o] * M[o * n_in + i];
        }
  });
}
#endif

// The fused layer's padded weight, row-major (n_in, padded_rows, n_out) or, with tiled, in the
// tiled layout (tiled_layout; AVX2 only).
at::Tensor layer_padded_weight(const at::Tensor& coef, const at::Tensor& scale_sp,
                               const std::optional<at::Tensor>& scale_base, const at::Tensor& mask,
                               const LocalShape& shape, int64_t k, bool tiled = false) {
  TORCH_CHECK(!tiled || kVectorBytes < 64, "the tiled layout is AVX2's");
  at::Tensor padded = at::empty({shape.n_in, shape.padded_rows, shape.n_out}, coef.options());
  AT_DISPATCH_FLOATING_TYPES(coef.scalar_type(), "layer_padded_weight", [&] {
    using T = scalar_t;
    const T *C = coef.const_data_ptr<T>(), *S = scale_sp.const_data_ptr<T>(), *M = mask.const_data_ptr<T>();
    const T* B = scale_base.has_value() ? scale_base->const_data_ptr<T>() : nullptr;
    T* P = padded.data_ptr<T>();
#if defined(KANLAB_TRANSPOSES)
    padded_weight_by_transposes(C, S, B, M, shape, k, P, tiled);
    return;
#endif
    const int64_t n_in = shape.n_in, n_out = shape.n_out, n_basis = shape.n_basis, rows = shape.padded_rows;
    const int64_t width = n_basis + 1;  // a block's rows per input: the spline rows, the residual
    for_each_transpose_block<T>(shape, [&](int64_t i0, int64_t inputs, int64_t o0, int64_t outputs, T* block) {
      for (int64_t l = 0; l < outputs; ++l)
        for (int64_t a = 0; a < inputs; ++a) {
          const int64_t edge = (o0 + l) * n_in + i0 + a;
          const T spline_scale = M[edge] * S[edge];
          T* column = block + a * width * kSpan + l;
          for (int64_t m = 0; m < n_basis; ++m) column[m * kSpan] = spline_scale * C[edge * n_basis + m];
          if (B != nullptr) column[n_basis * kSpan] = M[edge] * B[edge];
        }
      // row r of input i, outputs [o0, o0 + outputs), from source (nullptr: zeros)
      const auto put = [&](int64_t i, int64_t r, const T* source) {
        const auto write = [&](const T* from, int64_t count, T* to) {
          if (from != nullptr) std::copy(from, from + count, to);
          else std::fill(to, to + count, T(0));
        };
        if (!tiled) return write(source, outputs, P + (i * rows + r) * n_out + o0);
        if (r == rows - 1) return write(source, outputs, P + n_in * (rows - 1) * n_out + i * n_out + o0);
        for (int64_t o = o0, t0, tile_width; o < o0 + outputs;) {  // piece by piece of the tiles
          tile_containing<T>(o, n_out, t0, tile_width);
          const int64_t end = std::min(o0 + outputs, t0 + tile_width);
          write(source != nullptr ? source + (o - o0) : nullptr, end - o,
                P + i * (rows - 1) * n_out + t0 * (rows - 1) + r * tile_width + (o - t0));
          o = end;
        }
      };
      for (int64_t a = 0; a < inputs; ++a) {
        const T* source = block + a * width * kSpan;
        for (int64_t m = 0; m < n_basis; ++m) put(i0 + a, k + m, source + m * kSpan);
        put(i0 + a, rows - 1, B != nullptr ? source + n_basis * kSpan : nullptr);
        for (int64_t r = 0; r < k; ++r) {  // the padding rows above and below the bases
          put(i0 + a, r, nullptr);
          put(i0 + a, k + n_basis + r, nullptr);
        }
      }
    });
  });
  return padded;
}

// What every fused-layer pass starts from: the shape, the padded weight (the forward pass's,
// given, or built here, in the tiled layout where tiled says so) and the silu residual (none
// without scale_base).
struct LayerInputs {
  LocalShape shape;
  at::Tensor padded;
  std::optional<at::Tensor> base;
};

LayerInputs layer_inputs(const at::Tensor& x, const at::Tensor& knots, int64_t k, const at::Tensor& coef,
                         const at::Tensor& scale_sp, const std::optional<at::Tensor>& scale_base,
                         const at::Tensor& mask, const std::optional<at::Tensor>& padded = std::nullopt,
                         bool tiled = false) {
  const LocalShape shape = layer_shape(x, knots, k, coef, scale_sp, scale_base, mask);
  const bool given = padded.has_value() && padded->numel() > 0;  // the fine forward pass keeps none
  if (given)
    TORCH_CHECK(padded->sizes() == at::IntArrayRef({shape.n_in, shape.padded_rows, shape.n_out}) &&
                    padded->is_contiguous() && padded->scalar_type() == x.scalar_type(),
                "padded must be the forward pass's padded weight of this layer");
  return {shape, given ? *padded : layer_padded_weight(coef, scale_sp, scale_base, mask, shape, k, tiled),
          scale_base.has_value() ? std::optional<at::Tensor>(at::silu(x)) : std::nullopt};
}

// The parameters' gradients from the padded weight gradient's parts (summed over its copies):
// grad_coef = g * (mask * scale_sp), grad_scale_sp = sum_m g * coef * mask, grad_scale_base = g * mask.
void layer_gradients(const at::Tensor& parts, const LocalShape& shape, int64_t k, const at::Tensor& coef,
                     const at::Tensor& scale_sp, const at::Tensor& mask, at::Tensor& grad_coef, at::Tensor& grad_sp,
                     at::Tensor& grad_base) {
  AT_DISPATCH_FLOATING_TYPES(coef.scalar_type(), "layer_gradients", [&] {
    using T = scalar_t;
    const T *P = parts.const_data_ptr<T>(), *C = coef.const_data_ptr<T>(), *S = scale_sp.const_data_ptr<T>();
    const T* M = mask.const_data_ptr<T>();
    T* GC = grad_coef.defined() ? grad_coef.data_ptr<T>() : nullptr;
    T* GS = grad_sp.defined() ? grad_sp.data_ptr<T>() : nullptr;
    T* GB = grad_base.defined() ? grad_base.data_ptr<T>() : nullptr;
#if defined(KANLAB_TRANSPOSES)
    if (parts.size(0) == 1) {
      gradients_from_one_part(P, C, S, M, shape, k, GC, GS, GB);
      return;
    }
#endif
    const int64_t n_in = shape.n_in, n_out = shape.n_out, n_basis = shape.n_basis, rows = shape.padded_rows;
    const int64_t copies = parts.size(0), copy_size = n_in * rows * n_out, width = n_basis + 1;
    for_each_transpose_block<T>(shape, [&](int64_t i0, int64_t inputs, int64_t o0, int64_t outputs, T* block) {
      for (int64_t a = 0; a < inputs; ++a)
        for (int64_t m = 0; m < width; ++m) {  // the rows' sums over the copies
          const T* source = P + ((i0 + a) * rows + (m < n_basis ? k + m : rows - 1)) * n_out + o0;
          T* total = block + (a * width + m) * kSpan;
          std::copy(source, source + outputs, total);
          for (int64_t copy = 1; copy < copies; ++copy)
            for (int64_t l = 0; l < outputs; ++l) total[l] += source[copy * copy_size + l];
        }
      for (int64_t l = 0; l < outputs; ++l)
        for (int64_t a = 0; a < inputs; ++a) {
          const int64_t edge = (o0 + l) * n_in + i0 + a;
          const T spline_scale = M[edge] * S[edge];
          const T* column = block + a * width * kSpan + l;
          T slope = T(0);
          for (int64_t m = 0; m < n_basis; ++m) {
            const T g = column[m * kSpan];
            if (GC != nullptr) GC[edge * n_basis + m] = g * spline_scale;
            slope += g * C[edge * n_basis + m];
          }
          if (GS != nullptr) GS[edge] = slope * M[edge];
          if (GB != nullptr) GB[edge] = column[n_basis * kSpan] * M[edge];
        }
    });
  });
}

// Whether a fused layer goes by fine_layer_forward and blocks_layer_backward, with no padded weight:
// a wide layer on a fine grid; without a residual, a NaN input sends it entry by entry instead.
bool takes_fine_layer(const LocalShape& shape, const at::Tensor& x, bool with_base) {
  return takes_blocks(shape) && shape.padded_rows >= kFineRows && (with_base || !at::isnan(x).any().item<bool>());
}

// The fused layer on fine grids (takes_fine_layer), without a padded weight: the residual
// silu(x) @ (mask * scale_base)^T as a matrix product, the spline part by fine_product.
at::Tensor fine_layer_forward(const at::Tensor& x, const at::Tensor& knots, const std::optional<at::Tensor>& table,
                              int64_t k, const std::optional<at::Tensor>& cardinal,
                              const std::optional<at::Tensor>& start, const std::optional<at::Tensor>& step,
                              const at::Tensor& coef, const at::Tensor& scale_sp,
                              const std::optional<at::Tensor>& scale_base, const at::Tensor& mask,
                              const LocalShape& shape) {
  at::Tensor result = scale_base.has_value() ? at::mm(at::silu(x), mask.mul(*scale_base).t())
                                             : at::zeros({shape.batch, shape.n_out}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fine_layer_forward", [&] {
    using T = scalar_t;
    const Intervals<T> intervals_ = intervals<T>(knots, table, cardinal, start, step, k);
    const EdgeTargets<T> edges{coef.const_data_ptr<T>(), scale_sp.const_data_ptr<T>(), mask.const_data_ptr<T>(),
                               nullptr, nullptr};
    with_degree(k, [&](auto degree) {
      constexpr int K = decltype(degree)::value;
      if constexpr (K > 0)
        fine_product<T, K>(intervals_, knots, x.const_data_ptr<T>(), nullptr, &edges, shape, result.data_ptr<T>());
    });
  });
  return result;
}

// kan_layer_backward in blocks of samples: the blocks give x's gradient and the parameters'
// gradients (blocked_backward's edges); the residual's parts are two small matrix products.
// padded: the forward pass's padded weight on coarse grids (in the tiled layout where tiled says
// so), whose groups of inputs turn their weight gradient into the edges' while it is in cache
// (no padded weight gradient in memory); nullptr on fine grids, whose blocks read the parameters
// themselves. base: silu(x) where the caller has it.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> blocks_layer_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& knots, const std::optional<at::Tensor>& table,
    const std::optional<at::Tensor>& derivative_table, int64_t k, const std::optional<at::Tensor>& cardinal,
    const std::optional<at::Tensor>& cardinal_derivative, const std::optional<at::Tensor>& start,
    const std::optional<at::Tensor>& step, const at::Tensor& coef, const at::Tensor& scale_sp,
    const std::optional<at::Tensor>& scale_base, const at::Tensor& mask, const LocalShape& shape,
    const at::Tensor* padded, const std::optional<at::Tensor>& base, bool tiled, bool need_x, bool need_coef,
    bool need_scale_sp, bool need_scale_base) {
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == shape.batch && grad.size(1) == shape.n_out, "grad must be (batch, out)");
  const at::Tensor g = grad.contiguous();
  const at::Tensor none = at::empty({0}, x.options());
  at::Tensor grad_x = need_x ? at::empty_like(x) : none;
  at::Tensor grad_coef = need_coef ? at::empty_like(coef) : none;
  at::Tensor grad_sp = need_scale_sp ? at::empty_like(scale_sp) : none;
  if (need_x || need_coef || need_scale_sp)  // else the residual's products below are all that is asked
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "blocks_layer_backward", [&] {
      using T = scalar_t;
      const Intervals<T> values = intervals<T>(knots, table, cardinal, start, step, k);
      const Intervals<T> slopes =
          need_x ? intervals<T>(knots, derivative_table, cardinal_derivative, start, step, k) : values;
      const EdgeTargets<T> edges{coef.const_data_ptr<T>(), scale_sp.const_data_ptr<T>(), mask.const_data_ptr<T>(),
                                 need_coef ? grad_coef.data_ptr<T>() : nullptr,
                                 need_scale_sp ? grad_sp.data_ptr<T>() : nullptr};
      with_degree(k, [&](auto degree) {
        constexpr int K = decltype(degree)::value;
        if constexpr (K > 0)
          blocked_backward<T, K>(values, slopes, knots, x.const_data_ptr<T>(), g.const_data_ptr<T>(),
                                 padded != nullptr ? padded->const_data_ptr<T>() : nullptr, shape,
                                 need_x ? grad_x.data_ptr<T>() : nullptr, nullptr, &edges, tiled);
      });
    });
  if (!scale_base.has_value()) return {grad_x, grad_coef, grad_sp, none};
  if (need_x) {  // the residual's rows (in, out) from the padded weight, or (out, in) from the parameters
    const at::Tensor residual = padded == nullptr ? mask.mul(*scale_base)
                                : tiled ? tiled_residual(*padded, shape).t()
                                        : padded->select(1, shape.padded_rows - 1).t();
    grad_x.add_(at::silu_backward(at::mm(g, residual), x));
  }
  const at::Tensor grad_base_scale =
      need_scale_base ? at::mm((base.has_value() ? *base : at::silu(x)).t(), g).t().mul(mask).contiguous() : none;
  return {grad_x, grad_coef, grad_sp, grad_base_scale};
}

// The fused layers' backward results: x's gradient with the silu residual's part added, and the
// parameters' gradients from the weight gradient's parts; an empty tensor for each one not asked.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> layer_backward_result(
    const at::Tensor& x, at::Tensor grad_x, const at::Tensor& grad_base, const at::Tensor& parts,
    const LocalShape& shape, int64_t k, const at::Tensor& coef, const at::Tensor& scale_sp, const at::Tensor& mask,
    bool with_base, bool need_x, bool need_coef, bool need_scale_sp, bool need_scale_base) {
  if (need_x && with_base) grad_x.add_(at::silu_backward(grad_base, x));
  at::Tensor grad_coef = need_coef ? at::empty_like(coef) : at::Tensor();
  at::Tensor grad_sp = need_scale_sp ? at::empty_like(scale_sp) : at::Tensor();
  at::Tensor grad_base_scale = need_scale_base ? at::empty_like(scale_sp) : at::Tensor();
  if (need_coef || need_scale_sp || need_scale_base)
    layer_gradients(parts, shape, k, coef, scale_sp, mask, grad_coef, grad_sp, grad_base_scale);
  const at::Tensor none = at::empty({0}, x.options());
  return {need_x ? grad_x : none, need_coef ? grad_coef : none, need_scale_sp ? grad_sp : none,
          need_scale_base ? grad_base_scale : none};
}

}  // namespace

// A KAN layer's output (batch, n_out) from x (batch, in) and its parameters: coef (out, in,
// n_basis), scale_sp, scale_base (None: no residual; else the residual is silu(x)) and mask (out,
// in); degrees 1..5. The same as local_product with the layer's weight and base. Also returns
// the padded weight it built, for the backward pass to reuse.
std::tuple<at::Tensor, at::Tensor> kan_layer(const at::Tensor& x, const at::Tensor& knots, const std::optional<at::Tensor>& table, int64_t k,
                     const std::optional<at::Tensor>& cardinal, const std::optional<at::Tensor>& start,
                     const std::optional<at::Tensor>& step, const at::Tensor& coef, const at::Tensor& scale_sp,
                     const std::optional<at::Tensor>& scale_base, const at::Tensor& mask) {
  const LocalShape shape = layer_shape(x, knots, k, coef, scale_sp, scale_base, mask);
  if (takes_fine_layer(shape, x, scale_base.has_value()))  // no padded weight to keep
    return {fine_layer_forward(x, knots, table, k, cardinal, start, step, coef, scale_sp, scale_base, mask, shape),
            at::empty({0}, x.options())};
  const bool tiled = tiled_layout(shape, x, scale_base.has_value());
  const LayerInputs layer = layer_inputs(x, knots, k, coef, scale_sp, scale_base, mask, std::nullopt, tiled);
  return {product_from_padded(x, layer.base, knots, table, k, cardinal, start, step, layer.padded, layer.shape, tiled),
          layer.padded};
}

// kan_layer's first-order gradients (grad_x, grad_coef, grad_scale_sp, grad_scale_base) from grad
// (batch, n_out), each computed only where asked (an empty tensor otherwise); padded: the forward
// pass's padded weight (None: built again).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> kan_layer_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& knots, const std::optional<at::Tensor>& table,
    const std::optional<at::Tensor>& derivative_table, int64_t k, const std::optional<at::Tensor>& cardinal,
    const std::optional<at::Tensor>& cardinal_derivative, const std::optional<at::Tensor>& start,
    const std::optional<at::Tensor>& step, const at::Tensor& coef, const at::Tensor& scale_sp,
    const std::optional<at::Tensor>& scale_base, const at::Tensor& mask, bool need_x, bool need_coef,
    bool need_scale_sp, bool need_scale_base, const std::optional<at::Tensor>& padded) {
  const bool with_base = scale_base.has_value();
  need_scale_base = need_scale_base && with_base;
  const LocalShape shape = layer_shape(x, knots, k, coef, scale_sp, scale_base, mask);
  if (takes_fine_layer(shape, x, with_base))
    return blocks_layer_backward(grad, x, knots, table, derivative_table, k, cardinal, cardinal_derivative, start, step,
                                 coef, scale_sp, scale_base, mask, shape, nullptr, std::nullopt, false, need_x,
                                 need_coef, need_scale_sp, need_scale_base);
  const bool tiled = tiled_layout(shape, x, with_base);  // as the forward pass's
  const LayerInputs layer = layer_inputs(x, knots, k, coef, scale_sp, scale_base, mask, padded, tiled);
  if (tiled || (takes_blocks(shape) && (with_base || !at::isnan(x).any().item<bool>())))
    return blocks_layer_backward(grad, x, knots, table, derivative_table, k, cardinal, cardinal_derivative, start, step,
                                 coef, scale_sp, scale_base, mask, shape, &layer.padded, layer.base, tiled, need_x,
                                 need_coef, need_scale_sp, need_scale_base);
  const bool need_weight = need_coef || need_scale_sp || need_scale_base;
  auto [grad_x, grad_base, parts] = product_backward_from_padded(
      grad, x, layer.base, knots, table, derivative_table, k, cardinal, cardinal_derivative, start, step, layer.padded,
      layer.shape, need_x, need_x && with_base, need_weight, tiled);
  return layer_backward_result(x, grad_x, grad_base, parts, layer.shape, k, coef, scale_sp, mask, with_base, need_x,
                               need_coef, need_scale_sp, need_scale_base);
}

// ---- The fused layer with the regulariser's edge norms: norms[o, i] = mean_b |phi_oi(x[b, i])|,
// each edge's whole value (spline and residual, as the torch path's edge_mean_abs of the
// features), from the same local values, so a regularised step needs no feature matrix either.
// The backward folds the norms' gradient into each entry's output gradient,
// g[b, o] + grad_norms[o, i] * sign(phi_oi(x[b, i])) / batch, recomputing phi, and goes on as the
// plain backward with it: the weight rows, the residual and (with the bases' derivatives) x.

namespace {

// phi of entry c (input i) for every output into phi[o]: its residual row and K + 1 basis rows;
// without a residual, NaN for a NaN input (as the features).
template <typename T, int K>
inline void edge_values(const Rows<T, K>& rows, int64_t c, T x, const T* base, const T* W, int64_t n_out, T* phi) {
  const T* residual = W + (rows.base_first + c * rows.base_step) * n_out;
  const T b = base != nullptr ? *base : T(0);
  const T fill = base == nullptr && std::isnan(x) ? x : T(0);
#pragma omp simd
  for (int64_t o = 0; o < n_out; ++o) phi[o] = base != nullptr ? b * residual[o] : fill;
#pragma GCC unroll 8
  for (int r = 0; r <= K; ++r) axpy(phi, rows.v[r][c], W + (rows.row[c] + r) * n_out, n_out);
}

// Forward: entry c's phi into the output row and |phi| into this thread's norm sums (out, in).
// A column of samples with few outputs goes output by output, vectorized over its entries.
template <typename T, int K, bool kColumn>
inline void norm_product_chunk(const Rows<T, K>& rows, const T* xs, const T* base, int64_t base_stride, const T* W,
                               int64_t n_out, int64_t n_in, int64_t first_input, int64_t count, T* out, T* norms,
                               T* phi) {
  if (kColumn && n_out < kWideOut) {
    const T* residual = W + rows.base_first * n_out;
    for (int64_t o = 0; o < n_out; ++o) {
      T norm = T(0);
#pragma omp simd reduction(+ : norm)
      for (int64_t c = 0; c < count; ++c) {
        const T value = column_edge_value<T, K>(rows, c, xs[c], base, base_stride, residual, W, n_out, o);
        out[c * n_out + o] += value;
        norm += std::abs(value);
      }
      norms[o * n_in + first_input] += norm;
    }
    return;
  }
  for (int64_t c = 0; c < count; ++c) {
    const int64_t i = kColumn ? first_input : first_input + c;
    edge_values<T, K>(rows, c, xs[c], base != nullptr ? base + c * base_stride : nullptr, W, n_out, phi);
    T* target = kColumn ? out + c * n_out : out;
    for (int64_t o = 0; o < n_out; ++o) {
      target[o] += phi[o];
      norms[o * n_in + i] += std::abs(phi[o]);
    }
  }
}

// Backward: entry c's output gradient with the norms' part (GN: grad_norms / batch, (out, in)),
// then its weight rows' gradient (into this thread's grad_w), its residual's and its x-gradient.
template <typename T, int K, bool kColumn>
inline void norm_backward_chunk(const Rows<T, K>& values, const Rows<T, K>& slopes, const T* xs, const T* base,
                                int64_t base_stride, const T* G, const T* GN, const T* W, int64_t n_out, int64_t n_in,
                                int64_t first_input, int64_t count, T* grad_w, T* grad_x, T* grad_base,
                                int64_t result_stride, T* phi, int64_t copy_size) {
  if (kColumn && n_out < kWideOut) {
    column_backward<T, K, true>(values, slopes, xs, base, base_stride, G, GN + first_input, W, n_out, n_in, 0, count,
                                grad_w, grad_x, grad_base, result_stride, copy_size);
    return;
  }
  for (int64_t c = 0; c < count; ++c) {
    const int64_t i = kColumn ? first_input : first_input + c;
    const T* g = kColumn ? G + c * n_out : G;
    edge_values<T, K>(values, c, xs[c], base != nullptr ? base + c * base_stride : nullptr, W, n_out, phi);
    for (int64_t o = 0; o < n_out; ++o) {
      const T sign = T(phi[o] > T(0)) - T(phi[o] < T(0));
      phi[o] = g[o] + GN[o * n_in + i] * sign;  // phi now holds the entry's output gradient
    }
    const int64_t base_row = values.base_first + c * values.base_step;
    if (grad_w != nullptr) {
#pragma GCC unroll 8
      for (int r = 0; r <= K; ++r) axpy(grad_w + (values.row[c] + r) * n_out, values.v[r][c], phi, n_out);
      if (base != nullptr) axpy(grad_w + base_row * n_out, base[c * base_stride], phi, n_out);
    }
    if (grad_x != nullptr) {
      T sum = T(0);
#pragma GCC unroll 8
      for (int r = 0; r <= K; ++r) sum += slopes.v[r][c] * dot(W + (slopes.row[c] + r) * n_out, phi, n_out);
      grad_x[c * result_stride] = std::isnan(xs[c]) ? xs[c] : sum;
    }
    if (grad_base != nullptr) grad_base[c * result_stride] = dot(W + base_row * n_out, phi, n_out);
  }
}

}  // namespace

// kan_layer's output and the edge norms (out, in), mean_b |phi_oi(x[b, i])|, and the padded weight
// (as kan_layer); degrees 1..5.
std::tuple<at::Tensor, at::Tensor, at::Tensor> kan_layer_norms(
    const at::Tensor& x, const at::Tensor& knots, const std::optional<at::Tensor>& table, int64_t k,
    const std::optional<at::Tensor>& cardinal, const std::optional<at::Tensor>& start,
    const std::optional<at::Tensor>& step, const at::Tensor& coef, const at::Tensor& scale_sp,
    const std::optional<at::Tensor>& scale_base, const at::Tensor& mask) {
  const LayerInputs layer = layer_inputs(x, knots, k, coef, scale_sp, scale_base, mask);
  const LocalShape& shape = layer.shape;
  const at::Tensor& padded = layer.padded;
  const std::optional<at::Tensor>& base = layer.base;
  const int64_t batch = shape.batch, n_in = shape.n_in, n_out = shape.n_out, padded_rows = shape.padded_rows;
  const int64_t n_threads = at::get_num_threads();
  at::Tensor result = at::zeros({batch, n_out}, x.options());
  at::Tensor norm_parts = at::zeros({n_threads, n_out, n_in}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "kan_layer_norms", [&] {
    using T = scalar_t;
    const T *X = x.const_data_ptr<T>(), *R = base.has_value() ? base->const_data_ptr<T>() : nullptr;
    const T* W = padded.const_data_ptr<T>();
    T *out = result.data_ptr<T>(), *parts = norm_parts.data_ptr<T>();
    auto own_part = [&]() {
      const int64_t thread = at::get_thread_num();
      TORCH_CHECK(thread < n_threads, "more threads than at the start of the pass");
      return parts + thread * n_out * n_in;
    };
    const Intervals<T> intervals_ = intervals<T>(knots, table, cardinal, start, step, k);
    with_degree(k, [&](auto degree) {
      constexpr int K = decltype(degree)::value;
      if constexpr (K > 0) {
        for_each_chunk<T, K, K + 1>(
            intervals_, knots, X, batch, false,
            [&](int64_t b, int64_t first, int64_t count, const Chunk<T, K>& chunk) {
              Rows<T, K> rows;
              rows.fill(chunk, first, 1, padded_rows, count);
              std::vector<T> phi(n_out);
              norm_product_chunk<T, K, false>(rows, X + b * n_in + first, R ? R + b * n_in + first : nullptr, 1, W,
                                              n_out, n_in, first, count, out + b * n_out, own_part(), phi.data());
            },
            [&](int64_t b, int64_t i, int64_t count, const T* xs, const Chunk<T, K>& chunk) {
              Rows<T, K> rows;
              rows.fill(chunk, i, 0, padded_rows, count);
              std::vector<T> phi(n_out);
              norm_product_chunk<T, K, true>(rows, xs, R ? R + b * n_in + i : nullptr, n_in, W, n_out, n_in, i, count,
                                             out + b * n_out, own_part(), phi.data());
            });
      }
    });
  });
  return {result, norm_parts.sum(0).div_(static_cast<double>(batch)), padded};
}

// kan_layer_norms' first-order gradients (grad_x, grad_coef, grad_scale_sp, grad_scale_base) from grad
// (batch, n_out) and grad_norms (out, in), each computed only where asked (an empty tensor otherwise);
// padded as for kan_layer_backward.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> kan_layer_norms_backward(
    const at::Tensor& grad, const at::Tensor& grad_norms, const at::Tensor& x, const at::Tensor& knots,
    const std::optional<at::Tensor>& table, const std::optional<at::Tensor>& derivative_table, int64_t k,
    const std::optional<at::Tensor>& cardinal, const std::optional<at::Tensor>& cardinal_derivative,
    const std::optional<at::Tensor>& start, const std::optional<at::Tensor>& step, const at::Tensor& coef,
    const at::Tensor& scale_sp, const std::optional<at::Tensor>& scale_base, const at::Tensor& mask, bool need_x,
    bool need_coef, bool need_scale_sp, bool need_scale_base, const std::optional<at::Tensor>& padded_weight) {
  const LayerInputs layer = layer_inputs(x, knots, k, coef, scale_sp, scale_base, mask, padded_weight);
  const LocalShape& shape = layer.shape;
  const at::Tensor& padded = layer.padded;
  const std::optional<at::Tensor>& base = layer.base;
  const bool with_base = scale_base.has_value();
  need_scale_base = need_scale_base && with_base;
  const int64_t batch = shape.batch, n_in = shape.n_in, n_out = shape.n_out, padded_rows = shape.padded_rows;
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == batch && grad.size(1) == n_out, "grad must be (batch, out)");
  TORCH_CHECK(grad_norms.dim() == 2 && grad_norms.size(0) == n_out && grad_norms.size(1) == n_in,
              "grad_norms must be (out, in)");
  const at::Tensor g = grad.contiguous();
  const at::Tensor scaled_norms = grad_norms.div(static_cast<double>(batch)).contiguous();
  const bool need_weight = need_coef || need_scale_sp || need_scale_base;
  const int64_t n_threads = at::get_num_threads(), copy_size = n_in * padded_rows * n_out;
  // few outputs of a narrow layer: kSpread copies per thread (norm_backward_column)
  const int64_t spread = n_in <= kNarrow && n_out < kWideOut ? kSpread : 1;
  at::Tensor parts =
      need_weight ? at::zeros({n_threads * spread, n_in, padded_rows, n_out}, x.options()) : at::Tensor();
  at::Tensor grad_x = need_x ? at::empty_like(x) : at::Tensor();
  at::Tensor grad_base = need_x && with_base ? at::empty_like(x) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "kan_layer_norms_backward", [&] {
    using T = scalar_t;
    const T *X = x.const_data_ptr<T>(), *R = with_base ? base->const_data_ptr<T>() : nullptr;
    const T *W = padded.const_data_ptr<T>(), *G = g.const_data_ptr<T>(), *GN = scaled_norms.const_data_ptr<T>();
    T* P = need_weight ? parts.data_ptr<T>() : nullptr;
    T* GX = need_x ? grad_x.data_ptr<T>() : nullptr;
    T* GB = grad_base.defined() ? grad_base.data_ptr<T>() : nullptr;
    auto own_part = [&]() -> T* {
      if (P == nullptr) return nullptr;
      const int64_t thread = at::get_thread_num();
      TORCH_CHECK(thread < n_threads, "more threads than at the start of the backward pass");
      return P + thread * spread * copy_size;
    };
    const Intervals<T> values = intervals<T>(knots, table, cardinal, start, step, k);
    const Intervals<T> slopes = intervals<T>(knots, derivative_table, cardinal_derivative, start, step, k);
    with_degree(k, [&](auto degree) {
      constexpr int K = decltype(degree)::value;
      if constexpr (K > 0) {
        for_each_chunk_with_slopes<T, K>(
            values, slopes, knots, X, batch,
            [&](int64_t b, int64_t first, int64_t count, const Chunk<T, K>& value_chunk, const Chunk<T, K>& slope_chunk_) {
              Rows<T, K> value_rows, slope_rows;
              value_rows.fill(value_chunk, first, 1, padded_rows, count);
              slope_rows.fill(slope_chunk_, first, 1, padded_rows, count);
              std::vector<T> phi(n_out);
              const int64_t at = b * n_in + first;
              norm_backward_chunk<T, K, false>(value_rows, slope_rows, X + at, R ? R + at : nullptr, 1, G + b * n_out,
                                               GN, W, n_out, n_in, first, count, own_part(), GX ? GX + at : nullptr,
                                               GB ? GB + at : nullptr, 1, phi.data(), copy_size);
            },
            [&](int64_t b, int64_t i, int64_t count, const T* xs, const Chunk<T, K>& value_chunk,
                const Chunk<T, K>& slope_chunk_) {
              Rows<T, K> value_rows, slope_rows;
              value_rows.fill(value_chunk, i, 0, padded_rows, count);
              slope_rows.fill(slope_chunk_, i, 0, padded_rows, count);
              std::vector<T> phi(n_out);
              const int64_t at = b * n_in + i;
              norm_backward_chunk<T, K, true>(value_rows, slope_rows, xs, R ? R + at : nullptr, n_in, G + b * n_out,
                                              GN, W, n_out, n_in, i, count, own_part(), GX ? GX + at : nullptr,
                                              GB ? GB + at : nullptr, n_in, phi.data(), copy_size);
            });
      }
    });
  });
  return layer_backward_result(x, grad_x, grad_base, parts, shape, k, coef, scale_sp, mask, with_base, need_x, need_coef,
                               need_scale_sp, need_scale_base);
}

TORCH_LIBRARY(kanlab_native, m) {
  m.def("basis_features(Tensor x, Tensor? base, Tensor knots, Tensor? table, int k, Tensor? cardinal, Tensor? start, "
        "Tensor? step) -> Tensor");
  m.def("basis_features_backward(Tensor grad, Tensor x, Tensor knots, Tensor? derivative_table, int k, int width, "
        "Tensor? cardinal_derivative, Tensor? start, Tensor? step) -> Tensor");
  m.def("feature_weight(Tensor coef, Tensor spline_scale, Tensor? base_scale) -> Tensor");
  m.def("local_product(Tensor x, Tensor? base, Tensor knots, Tensor? table, int k, Tensor? cardinal, Tensor? start, "
        "Tensor? step, Tensor weight) -> Tensor");
  m.def("local_product_backward(Tensor grad, Tensor x, Tensor? base, Tensor knots, Tensor? table, "
        "Tensor? derivative_table, int k, Tensor? cardinal, Tensor? cardinal_derivative, Tensor? start, Tensor? step, "
        "Tensor weight, bool need_x, bool need_base, bool need_weight) -> (Tensor, Tensor, Tensor)");
  m.def("kan_layer(Tensor x, Tensor knots, Tensor? table, int k, Tensor? cardinal, Tensor? start, Tensor? step, "
        "Tensor coef, Tensor scale_sp, Tensor? scale_base, Tensor mask) -> (Tensor, Tensor)");
  m.def("kan_layer_backward(Tensor grad, Tensor x, Tensor knots, Tensor? table, Tensor? derivative_table, int k, "
        "Tensor? cardinal, Tensor? cardinal_derivative, Tensor? start, Tensor? step, Tensor coef, Tensor scale_sp, "
        "Tensor? scale_base, Tensor mask, bool need_x, bool need_coef, bool need_scale_sp, bool need_scale_base, "
        "Tensor? padded=None) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("kan_layer_norms(Tensor x, Tensor knots, Tensor? table, int k, Tensor? cardinal, Tensor? start, Tensor? step, "
        "Tensor coef, Tensor scale_sp, Tensor? scale_base, Tensor mask) -> (Tensor, Tensor, Tensor)");
  m.def("kan_layer_norms_backward(Tensor grad, Tensor grad_norms, Tensor x, Tensor knots, Tensor? table, "
        "Tensor? derivative_table, int k, Tensor? cardinal, Tensor? cardinal_derivative, Tensor? start, Tensor? step, "
        "Tensor coef, Tensor scale_sp, Tensor? scale_base, Tensor mask, bool need_x, bool need_coef, "
        "bool need_scale_sp, bool need_scale_base, Tensor? padded=None) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(kanlab_native, CPU, m) {
  m.impl("basis_features", &basis_features);
  m.impl("basis_features_backward", &basis_features_backward);
  m.impl("feature_weight", &feature_weight);
  m.impl("local_product", &local_product);
  m.impl("local_product_backward", &local_product_backward);
  m.impl("kan_layer", &kan_layer);
  m.impl("kan_layer_backward", &kan_layer_backward);
  m.impl("kan_layer_norms", &kan_layer_norms);
  m.impl("kan_layer_norms_backward", &kan_layer_norms_backward);
}
