// L-BFGS's search direction for kanlab.optim.LBFGS, as one operator.
//
// The two-loop recursion (Nocedal and Wright, alg. 7.4) makes two ATen calls and a host read per
// curvature pair and loop; for a small KAN each costs more in the interpreter than in the
// kernel. This makes the same calls, on the same arguments and in the same order, as the
// optimizer's Python loop (so the same bits), from C++. Any device: it only calls ATen.

#include <torch/library.h>

#include <ATen/ATen.h>

#include <vector>

namespace {

// -H grad from the pairs (dirs[j] = y_j, steps[j] = s_j, ro[j] = 1 / y_j's_j), oldest first, and
// the initial scaling h_diag.
at::Tensor lbfgs_direction(const at::Tensor& grad, at::TensorList dirs, at::TensorList steps, at::ArrayRef<double> ro,
                           double h_diag) {
  const size_t n = dirs.size();
  TORCH_CHECK(steps.size() == n && ro.size() == n, "lbfgs_direction: dirs, steps and ro must have the same length");
  at::Tensor q = grad.neg();
  std::vector<double> alphas(n);
  for (size_t j = n; j-- > 0;) {
    // volatile: each product is rounded on its own, as Python's floats are (no fused multiply-add)
    volatile double alpha = steps[j].dot(q).item<double>() * ro[j];
    alphas[j] = alpha;
    q.add_(dirs[j], -alphas[j]);
  }
  q.mul_(h_diag);
  for (size_t j = 0; j < n; ++j) {
    volatile double beta = dirs[j].dot(q).item<double>() * ro[j];
    q.add_(steps[j], alphas[j] - beta);
  }
  return q;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(kanlab_native, m) {
  m.def("lbfgs_direction(Tensor grad, Tensor[] dirs, Tensor[] steps, float[] ro, float h_diag) -> Tensor");
}

TORCH_LIBRARY_IMPL(kanlab_native, CompositeExplicitAutograd, m) { m.impl("lbfgs_direction", &lbfgs_direction); }
