// infolens._sampling: the per-sample inner loops of the marginalization engine.
//
// Three kernels, each bit-identical to the numpy fallback in runtime/kernels.py:
//   sample_categorical  inverse-CDF draws from PatchSampler probabilities
//   composite           write one K x K in-fill per batch item through a per-channel LUT
//   restore             copy the K x K region back from the preprocessed base image
// Inputs are validated while the GIL is held; the loops run with it released so the
// caller can keep ONNX Runtime busy from another thread.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

// Bit-exactness with numpy needs the float adds of the CDF in index order, unfused.
#ifdef __FAST_MATH__
#error "sampling.cpp must not be compiled with -ffast-math: results must match numpy bit for bit"
#endif

namespace py = pybind11;

namespace {

constexpr int kLevels = 256;  // pixel values 0..255

[[noreturn]] void fail(const std::string &msg) { throw py::value_error(msg); }

std::string shape_str(const py::array &a) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) {
        if (d) s += ", ";
        s += std::to_string(a.shape(d));
    }
    if (a.ndim() == 1) s += ",";
    return s + ")";
}

template <typename T>
bool has_dtype(const py::array &a) {
    return py::isinstance<py::array_t<T>>(a);
}

// Messages match runtime/kernels.py (_check_array) so both backends read the same.
void check_layout(const py::array &a, const char *name, int ndim, bool writeable = false) {
    if (a.ndim() != ndim)
        fail(std::string(name) + " must be " + std::to_string(ndim) + "-D, got shape " +
             shape_str(a));
    if (!(a.flags() & py::array::c_style))
        fail(std::string(name) + " must be C-contiguous");
    if (writeable && !a.writeable()) fail(std::string(name) + " must be writeable");
}

template <typename T>
void check_array(const py::array &a, const char *name, const char *dtype_name, int ndim) {
    if (!has_dtype<T>(a))
        fail(std::string(name) + " must have dtype " + dtype_name + ", got " +
             py::str(a.dtype()).cast<std::string>());
    check_layout(a, name, ndim);
}

py::array as_array(const py::handle &obj, const char *name) {
    if (!py::isinstance<py::array>(obj))
        fail(std::string(name) + " must be a numpy array, got " +
             std::string(Py_TYPE(obj.ptr())->tp_name));
    return py::reinterpret_borrow<py::array>(obj);
}

// Rows of one CDF block are interleaved (cdf[j * R + r]) so R independent sequential sums
// advance together: the same adds per row as np.cumsum, but R chains hide the add latency.
// Returns false if a probability is negative/nan, a row sum is not finite, or a uniform is
// outside [0, 1); the caller then raises, so garbage draws for bad input never escape.
template <int R>
bool sample_rows(const float *probs, const float *uniforms, std::uint8_t *out, py::ssize_t N,
                 py::ssize_t M) {
    alignas(64) float cdf[kLevels * R];
    float s[R];
    bool ok = true;
    for (int r = 0; r < R; ++r) s[r] = 0.0f;
    for (int j = 0; j < kLevels; ++j)
        for (int r = 0; r < R; ++r) {
            const float p = probs[r * kLevels + j];
            ok &= p >= 0.0f;
            s[r] += p;
            cdf[j * R + r] = s[r];
        }
    for (int r = 0; r < R; ++r) ok &= std::isfinite(s[r]);
    for (py::ssize_t n = 0; n < N; ++n) {
        float t[R];
        int pos[R];
        for (int r = 0; r < R; ++r) {
            const float u = uniforms[n * M + r];
            ok &= u >= 0.0f && u < 1.0f;
            t[r] = u * s[r];
            pos[r] = 0;
        }
        // Branch-free upper bound, R searches interleaved: after the 8 halvings
        // pos = #{j : cdf[j] <= t} clipped to 255, because the steps sum to 255.
        for (int step = kLevels / 2; step > 0; step >>= 1)
            for (int r = 0; r < R; ++r)
                pos[r] += step & -static_cast<int>(cdf[(pos[r] + step - 1) * R + r] <= t[r]);
        for (int r = 0; r < R; ++r) out[n * M + r] = static_cast<std::uint8_t>(pos[r]);
    }
    return ok;
}

py::array_t<std::uint8_t> sample_categorical(const py::object &probs_obj,
                                             const py::object &uniforms_obj) {
    py::array probs = as_array(probs_obj, "probs");
    py::array uniforms = as_array(uniforms_obj, "uniforms");
    check_array<float>(probs, "probs", "float32", 3);
    check_array<float>(uniforms, "uniforms", "float32", 3);
    const py::ssize_t P = probs.shape(0), M = probs.shape(1);
    if (probs.shape(2) != kLevels)
        fail("probs must have shape [P, M, 256], got " + shape_str(probs));
    if (uniforms.shape(0) != P || uniforms.shape(2) != M)
        fail("uniforms must have shape [P, N, M] = [" + std::to_string(P) + ", N, " +
             std::to_string(M) + "] to match probs " + shape_str(probs) + ", got " +
             shape_str(uniforms));
    const py::ssize_t N = uniforms.shape(1);
    py::array_t<std::uint8_t> out({P, N, M});

    const float *pp = static_cast<const float *>(probs.data());
    const float *up = static_cast<const float *>(uniforms.data());
    std::uint8_t *op = out.mutable_data();
    bool ok = true;
    {
        py::gil_scoped_release release;
        for (py::ssize_t p = 0; p < P; ++p) {
            const float *prow = pp + p * M * kLevels;
            const float *urow = up + p * N * M;
            std::uint8_t *orow = op + p * N * M;
            py::ssize_t m = 0;
            for (; m + 8 <= M; m += 8)
                ok &= sample_rows<8>(prow + m * kLevels, urow + m, orow + m, N, M);
            for (; m < M; ++m) ok &= sample_rows<1>(prow + m * kLevels, urow + m, orow + m, N, M);
        }
    }
    if (!ok)
        fail("probs must be non-negative with finite row sums, and uniforms must lie in [0, 1)");
    return out;
}

// Geometry shared by composite and restore, all in elements of the batch dtype.
struct Layout {
    py::ssize_t C, H, W;
    bool nchw;
    py::ssize_t item() const { return C * H * W; }
};

Layout layout_of(const py::array &batch, bool nchw) {
    if (nchw) return {batch.shape(1), batch.shape(2), batch.shape(3), true};
    return {batch.shape(3), batch.shape(1), batch.shape(2), false};
}

// Checks ys/xs (int64, 1-D, equal length, at most batch items); returns their length.
py::ssize_t check_corner_arrays(const py::array &ys, const py::array &xs, py::ssize_t items) {
    check_array<std::int64_t>(ys, "ys", "int64", 1);
    check_array<std::int64_t>(xs, "xs", "int64", 1);
    if (xs.shape(0) != ys.shape(0))
        fail("ys and xs must have the same length, got " + shape_str(ys) + " and " +
             shape_str(xs));
    if (ys.shape(0) > items)
        fail("ys has " + std::to_string(ys.shape(0)) + " items but batch only " +
             std::to_string(items));
    return ys.shape(0);
}

// Every write stays inside the image: 1 <= K <= min(H, W) and 0 <= y <= H-K, 0 <= x <= W-K.
void check_corner_bounds(const py::array &ys, const py::array &xs, py::ssize_t K,
                         const Layout &g) {
    if (K < 1 || K > g.H || K > g.W)
        fail("patch size K=" + std::to_string(K) + " must satisfy 1 <= K <= min(H, W) = " +
             std::to_string(std::min(g.H, g.W)));
    const auto *y = static_cast<const std::int64_t *>(ys.data());
    const auto *x = static_cast<const std::int64_t *>(xs.data());
    for (py::ssize_t b = 0; b < ys.shape(0); ++b)
        if (y[b] < 0 || y[b] > g.H - K || x[b] < 0 || x[b] > g.W - K)
            fail("patch corner (y, x) = (" + std::to_string(y[b]) + ", " +
                 std::to_string(x[b]) + ") of item " + std::to_string(b) +
                 " is outside 0 <= y <= H-K = " + std::to_string(g.H - K) +
                 ", 0 <= x <= W-K = " + std::to_string(g.W - K));
}

template <typename T>
void composite_loop(T *batch, const std::uint8_t *patches, const std::int64_t *ys,
                    const std::int64_t *xs, const T *lut, const std::int64_t *src,
                    py::ssize_t count, py::ssize_t K, const Layout &g) {
    const py::ssize_t C = g.C, H = g.H, W = g.W;
    for (py::ssize_t b = 0; b < count; ++b) {
        const std::uint8_t *patch = patches + b * K * K * 3;
        T *item = batch + b * g.item();
        for (py::ssize_t i = 0; i < K; ++i) {
            const std::uint8_t *prow = patch + i * K * 3;
            if (g.nchw) {
                for (py::ssize_t c = 0; c < C; ++c) {
                    const T *lc = lut + c * kLevels;
                    const std::int64_t s = src[c];
                    T *dst = item + (c * H + ys[b] + i) * W + xs[b];
                    for (py::ssize_t j = 0; j < K; ++j) dst[j] = lc[prow[j * 3 + s]];
                }
            } else {
                T *dst = item + ((ys[b] + i) * W + xs[b]) * C;
                for (py::ssize_t j = 0; j < K; ++j)
                    for (py::ssize_t c = 0; c < C; ++c)
                        dst[j * C + c] = lut[c * kLevels + prow[j * 3 + src[c]]];
            }
        }
    }
}

template <typename T>
void restore_loop(T *batch, const T *base, const std::int64_t *ys, const std::int64_t *xs,
                  py::ssize_t count, py::ssize_t K, const Layout &g) {
    for (py::ssize_t b = 0; b < count; ++b) {
        T *item = batch + b * g.item();
        if (g.nchw) {
            for (py::ssize_t c = 0; c < g.C; ++c)
                for (py::ssize_t i = 0; i < K; ++i) {
                    const py::ssize_t off = (c * g.H + ys[b] + i) * g.W + xs[b];
                    std::memcpy(item + off, base + off, K * sizeof(T));
                }
        } else {
            for (py::ssize_t i = 0; i < K; ++i) {
                const py::ssize_t off = ((ys[b] + i) * g.W + xs[b]) * g.C;
                std::memcpy(item + off, base + off, K * g.C * sizeof(T));
            }
        }
    }
}

// Validates the batch and returns whether it is float32 (else uint8).
bool check_batch(const py::array &batch) {
    const bool is_f32 = has_dtype<float>(batch);
    if (!is_f32 && !has_dtype<std::uint8_t>(batch))
        fail("batch must have dtype float32 or uint8, got " +
             py::str(batch.dtype()).cast<std::string>());
    check_layout(batch, "batch", 4, /*writeable=*/true);
    return is_f32;
}

// lut and base must share the batch dtype.
void check_like_batch(const py::array &a, const char *name, bool is_f32, int ndim) {
    if (is_f32)
        check_array<float>(a, name, "float32 (same as batch)", ndim);
    else
        check_array<std::uint8_t>(a, name, "uint8 (same as batch)", ndim);
}

void composite(const py::object &batch_obj, const py::object &patches_obj,
               const py::object &ys_obj, const py::object &xs_obj, const py::object &lut_obj,
               const py::object &src_obj, bool nchw) {
    py::array batch = as_array(batch_obj, "batch"), patches = as_array(patches_obj, "patches");
    py::array ys = as_array(ys_obj, "ys"), xs = as_array(xs_obj, "xs");
    py::array lut = as_array(lut_obj, "lut"), src = as_array(src_obj, "src");
    const bool is_f32 = check_batch(batch);
    const Layout g = layout_of(batch, nchw);
    check_array<std::uint8_t>(patches, "patches", "uint8", 4);
    const py::ssize_t K = patches.shape(1);
    if (patches.shape(2) != K || patches.shape(3) != 3)
        fail("patches must have shape [B, K, K, 3], got " + shape_str(patches));
    const py::ssize_t count = check_corner_arrays(ys, xs, batch.shape(0));
    if (patches.shape(0) != count)
        fail("patches has " + std::to_string(patches.shape(0)) + " items but ys has " +
             std::to_string(count));
    check_corner_bounds(ys, xs, K, g);
    check_like_batch(lut, "lut", is_f32, 2);
    if (lut.shape(0) != g.C || lut.shape(1) != kLevels)
        fail("lut must have shape [C, 256] = [" + std::to_string(g.C) + ", 256], got " +
             shape_str(lut));
    check_array<std::int64_t>(src, "src", "int64", 1);
    if (src.shape(0) != g.C)
        fail("src must have shape (" + std::to_string(g.C) + ",), got " + shape_str(src));
    const auto *sp = static_cast<const std::int64_t *>(src.data());
    for (py::ssize_t c = 0; c < g.C; ++c)
        if (sp[c] < 0 || sp[c] > 2)
            fail("src values must be patch channels 0, 1 or 2, got " + std::to_string(sp[c]));

    const auto *pp = static_cast<const std::uint8_t *>(patches.data());
    const auto *yp = static_cast<const std::int64_t *>(ys.data());
    const auto *xp = static_cast<const std::int64_t *>(xs.data());
    py::gil_scoped_release release;
    if (is_f32)
        composite_loop(static_cast<float *>(batch.mutable_data()), pp, yp, xp,
                       static_cast<const float *>(lut.data()), sp, count, K, g);
    else
        composite_loop(static_cast<std::uint8_t *>(batch.mutable_data()), pp, yp, xp,
                       static_cast<const std::uint8_t *>(lut.data()), sp, count, K, g);
}

void restore(const py::object &batch_obj, const py::object &base_obj, const py::object &ys_obj,
             const py::object &xs_obj, py::ssize_t K, bool nchw) {
    py::array batch = as_array(batch_obj, "batch"), base = as_array(base_obj, "base");
    py::array ys = as_array(ys_obj, "ys"), xs = as_array(xs_obj, "xs");
    const bool is_f32 = check_batch(batch);
    const Layout g = layout_of(batch, nchw);
    check_like_batch(base, "base", is_f32, 3);
    for (int d = 0; d < 3; ++d)
        if (base.shape(d) != batch.shape(d + 1))
            fail("base must have shape batch.shape[1:], got " + shape_str(base) +
                 " for batch " + shape_str(batch));
    const py::ssize_t count = check_corner_arrays(ys, xs, batch.shape(0));
    check_corner_bounds(ys, xs, K, g);

    const auto *yp = static_cast<const std::int64_t *>(ys.data());
    const auto *xp = static_cast<const std::int64_t *>(xs.data());
    py::gil_scoped_release release;
    if (is_f32)
        restore_loop(static_cast<float *>(batch.mutable_data()),
                     static_cast<const float *>(base.data()), yp, xp, count, K, g);
    else
        restore_loop(static_cast<std::uint8_t *>(batch.mutable_data()),
                     static_cast<const std::uint8_t *>(base.data()), yp, xp, count, K, g);
}

}  // namespace
PYBIND11_MODULE(_sampling, m) {
    m.doc() = "Sampling and compositing kernels of infolens (see runtime/kernels.py).";
    m.def("sample_categorical", &sample_categorical, py::arg("probs"), py::arg("uniforms"),
          "Inverse-CDF draws: probs float32 [P, M, 256], uniforms float32 [P, N, M] in [0, 1)"
          " -> uint8 [P, N, M].");
    m.def("composite", &composite, py::arg("batch"), py::arg("patches"), py::arg("ys"),
          py::arg("xs"), py::arg("lut"), py::arg("src"), py::arg("nchw"),
          "In place: batch[b] patch region := lut[c, patches[b, ..., src[c]]] for b < len(patches).");
    m.def("restore", &restore, py::arg("batch"), py::arg("base"), py::arg("ys"), py::arg("xs"),
          py::arg("K"), py::arg("nchw"),
          "In place: batch[b] patch region := the same region of base for b < len(ys).");
}
