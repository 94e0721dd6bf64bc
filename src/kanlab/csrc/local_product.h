// Part of kanlab's compiled kernel: the local product's per-entry and per-column kernels.
// One translation unit: kernel.cpp includes the parts in order (each uses the ones before it).
#pragma once

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

}  // namespace
