// Part of kanlab's compiled kernel: knot search, Horner's rule and the per-interval tables.
// One translation unit: kernel.cpp includes the parts in order (each uses the ones before it).
#pragma once

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

}  // namespace
