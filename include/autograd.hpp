/*
 * autograd.hpp - a header-only C++17 wrapper over Autograd's C interface (autograd.h).
 *
 * Everything here calls the C API only; link with -lautograd as for C. Conventions:
 *   - Every failing C call throws autograd::Error (status() and the library's message).
 *   - autograd::Tensor owns one ag_tensor handle (RAII, move-only). An implicit copy is not
 *     offered because taking a second handle is a library call that can fail (and so throw);
 *     clone_handle() does it explicitly (a new handle to the same tensor, graph and gradient
 *     included); detach() gives a handle to the same values without history.
 *   - Destructors never throw; a moved-from object holds 0 and frees nothing.
 *   - No C++ exception ever crosses into the C library: callbacks (hooks, custom ops) catch
 *     everything, store the message with ag_set_error and return non-zero, so the C call that
 *     ran them fails with AG_ERR_CALLBACK, which is thrown here as autograd::Error.
 */
#ifndef AUTOGRAD_HPP
#define AUTOGRAD_HPP

#include "autograd.h"

#include <climits>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace autograd {

/* A failed C call: the status and the message ag_last_error() gave right after it. */
class Error : public std::runtime_error {
public:
    Error(ag_status status, const std::string &message)
        : std::runtime_error(std::string(ag_status_name(status)) + ": " + message), status_(status),
          message_(message) {}
    /* The C status code (AG_ERR_SHAPE, ...). */
    ag_status status() const noexcept { return status_; }
    /* The library's own message, without the status name. */
    const std::string &message() const noexcept { return message_; }

private:
    ag_status status_;
    std::string message_;
};

/* Throws Error when `status` is not AG_OK, reading ag_last_error() at once (it is per thread). */
inline void check(ag_status status) {
    if (status != AG_OK) throw Error(status, ag_last_error());
}

/* The number of live handles of every kind (for leak checks). */
inline int64_t live_handle_count() {
    int64_t n = 0;
    check(ag_live_handle_count(&n));
    return n;
}

/* The library's version string. */
inline std::string version() { return ag_version(); }

namespace detail {
/* The dtype matching a C++ element type (float, double, int64_t). */
template <class T> constexpr ag_dtype dtype_of() {
    static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value ||
                      std::is_same<T, int64_t>::value,
                  "autograd: element type must be float, double or int64_t");
    return std::is_same<T, float>::value ? AG_FLOAT32 : std::is_same<T, double>::value ? AG_FLOAT64 : AG_INT64;
}
/* A shape vector's data pointer, NULL for rank 0 (the C API allows it). */
inline const int64_t *shape_ptr(const std::vector<int64_t> &s) { return s.empty() ? nullptr : s.data(); }
} // namespace detail

using Shape = std::vector<int64_t>;

/* RAII owner of one ag_tensor handle. Move-only (see the top); frees its handle on destruction. */
class Tensor {
public:
    /* An empty Tensor holding no handle (0). */
    Tensor() noexcept = default;
    /* Takes over `handle` (a new handle the caller owns); it will be freed by this Tensor. */
    explicit Tensor(ag_tensor handle) noexcept : h_(handle) {}
    Tensor(const Tensor &) = delete;
    Tensor &operator=(const Tensor &) = delete;
    /* Moves the handle; `other` then holds 0. */
    Tensor(Tensor &&other) noexcept : h_(std::exchange(other.h_, AG_NULL_TENSOR)) {}
    Tensor &operator=(Tensor &&other) noexcept {
        if (this != &other) {
            reset();
            h_ = std::exchange(other.h_, AG_NULL_TENSOR);
        }
        return *this;
    }
    /* Frees the handle (freeing 0 is a no-op); never throws: a failure here is ignored. */
    ~Tensor() { reset(); }

    /* Frees the held handle now and holds 0. */
    void reset() noexcept {
        if (h_ != AG_NULL_TENSOR) (void)ag_tensor_free(h_);
        h_ = AG_NULL_TENSOR;
    }
    /* Gives up ownership: the caller must free the returned handle. */
    ag_tensor release() noexcept { return std::exchange(h_, AG_NULL_TENSOR); }
    /* The raw handle, still owned by this Tensor (for calling the C API directly). */
    ag_tensor handle() const noexcept { return h_; }
    /* Whether a handle is held. */
    explicit operator bool() const noexcept { return h_ != AG_NULL_TENSOR; }

    // ---- factories ----
    /* A leaf holding a copy of `data` (float, double or int64_t) with `shape`. */
    /* data.size() must equal the shape's element count (checked here: the C call cannot see the
     * vector's length and would read past its end): AG_ERR_SHAPE otherwise. */
    template <class T> static Tensor from(const std::vector<T> &data, const Shape &shape) {
        int64_t n = 1;
        bool known = true; // a negative extent or an overflow is left to the C call to report
        for (int64_t e : shape) {
            if (e < 0 || (e > 0 && n > INT64_MAX / e)) known = false;
            else n *= e;
        }
        if (known && (uint64_t)n != (uint64_t)data.size()) {
            std::string msg = "autograd::Tensor::from: " + std::to_string(data.size()) +
                              " values for a shape of " + std::to_string(n) + " elements";
            (void)ag_set_error(msg.c_str());
            throw Error(AG_ERR_SHAPE, msg);
        }
        ag_tensor t = 0;
        check(ag_tensor_from_data(&t, data.data(), detail::shape_ptr(shape), (int64_t)shape.size(),
                                  detail::dtype_of<T>()));
        return Tensor(t);
    }
    /* A rank-0 leaf holding `value`. */
    static Tensor scalar(double value, ag_dtype dtype = AG_FLOAT64) {
        ag_tensor t = 0;
        check(ag_tensor_full(&t, nullptr, 0, value, dtype));
        return Tensor(t);
    }
    /* A leaf of zeros. */
    static Tensor zeros(const Shape &shape, ag_dtype dtype = AG_FLOAT64) {
        ag_tensor t = 0;
        check(ag_tensor_zeros(&t, detail::shape_ptr(shape), (int64_t)shape.size(), dtype));
        return Tensor(t);
    }
    /* A leaf of ones. */
    static Tensor ones(const Shape &shape, ag_dtype dtype = AG_FLOAT64) {
        ag_tensor t = 0;
        check(ag_tensor_ones(&t, detail::shape_ptr(shape), (int64_t)shape.size(), dtype));
        return Tensor(t);
    }
    /* A leaf filled with `value`. */
    static Tensor full(const Shape &shape, double value, ag_dtype dtype = AG_FLOAT64) {
        ag_tensor t = 0;
        check(ag_tensor_full(&t, detail::shape_ptr(shape), (int64_t)shape.size(), value, dtype));
        return Tensor(t);
    }
    /* A leaf of normal(mean, std) values; the same seed gives the same numbers everywhere. */
    static Tensor randn(const Shape &shape, uint64_t seed, double mean = 0.0, double std = 1.0,
                        ag_dtype dtype = AG_FLOAT64) {
        ag_tensor t = 0;
        check(ag_tensor_rand_normal(&t, detail::shape_ptr(shape), (int64_t)shape.size(), mean, std, seed, dtype));
        return Tensor(t);
    }
    /* A leaf of uniform values in [low, high), seeded like randn. */
    static Tensor rand(const Shape &shape, uint64_t seed, double low = 0.0, double high = 1.0,
                       ag_dtype dtype = AG_FLOAT64) {
        ag_tensor t = 0;
        check(ag_tensor_rand_uniform(&t, detail::shape_ptr(shape), (int64_t)shape.size(), low, high, seed, dtype));
        return Tensor(t);
    }

    // ---- accessors ----
    /* The rank (0 for a scalar). */
    int64_t ndim() const {
        int64_t n = 0;
        check(ag_tensor_ndim(&n, h_));
        return n;
    }
    /* The extents. */
    Shape shape() const {
        int64_t buf[AG_MAX_NDIM] = {0};
        int64_t n = ndim();
        check(ag_tensor_shape(buf, AG_MAX_NDIM, h_));
        return Shape(buf, buf + n);
    }
    /* The element count. */
    int64_t numel() const {
        int64_t n = 0;
        check(ag_tensor_numel(&n, h_));
        return n;
    }
    /* The element type. */
    ag_dtype dtype() const {
        ag_dtype d = 0;
        check(ag_tensor_dtype(&d, h_));
        return d;
    }
    /* The single element of a one-element tensor, as double. */
    double item() const {
        double v = 0;
        check(ag_tensor_item(&v, h_));
        return v;
    }
    /* A copy of the elements, row-major, converted to T (float, double or int64_t). */
    template <class T = double> std::vector<T> values() const {
        std::vector<T> out((size_t)numel());
        check(ag_tensor_copy_data(out.empty() ? nullptr : out.data(), (int64_t)out.size(), detail::dtype_of<T>(), h_));
        return out;
    }
    /* The accumulated gradient of a leaf (a snapshot); an empty Tensor when there is none. */
    Tensor grad() const {
        ag_tensor g = 0;
        check(ag_tensor_grad(&g, h_));
        return Tensor(g);
    }
    /* Whether this tensor requires grad. */
    bool requires_grad() const {
        bool b = false;
        check(ag_tensor_requires_grad(&b, h_));
        return b;
    }
    /* Marks a leaf as wanting (or not) a gradient; returns *this for chaining. */
    Tensor &requires_grad(bool on) {
        check(ag_tensor_set_requires_grad(h_, on));
        return *this;
    }
    /* Backpropagates from this tensor (scalar unless a seed is given). */
    void backward(bool retain_graph = false, bool create_graph = false) const {
        check(ag_backward(h_, AG_NULL_TENSOR, retain_graph, create_graph));
    }
    /* Backpropagates with an explicit seed of this tensor's shape. */
    void backward(const Tensor &seed, bool retain_graph = false, bool create_graph = false) const {
        check(ag_backward(h_, seed.h_, retain_graph, create_graph));
    }
    /* Clears the accumulated gradient. */
    void zero_grad() const { check(ag_tensor_zero_grad(h_)); }
    /* A new handle sharing the values, with no history and not requiring grad. */
    Tensor detach() const {
        ag_tensor t = 0;
        check(ag_detach(&t, h_));
        return Tensor(t);
    }
    /* A second owned handle to this very tensor (same values, graph, requires_grad and
     * gradient): the explicit copy. For float tensors it is ag_dropout in eval mode, which the C
     * header defines as "a new handle to a itself" (its generator is never drawn from); for int64
     * and bool tensors, which have no graph or gradient, ag_to_dtype to their own dtype (a new
     * handle sharing the values). An empty Tensor clones to an empty Tensor. */
    Tensor clone_handle() const {
        if (h_ == AG_NULL_TENSOR) return Tensor();
        ag_dtype d = dtype();
        ag_tensor t = 0;
        if (d == AG_FLOAT32 || d == AG_FLOAT64) {
            ag_generator g = 0;
            check(ag_generator_new(&g, 0));
            ag_status st = ag_dropout(&t, h_, 0.0, false, g);
            std::string msg = st == AG_OK ? std::string() : std::string(ag_last_error());
            (void)ag_generator_free(g);
            if (st != AG_OK) throw Error(st, msg);
        } else {
            check(ag_to_dtype(&t, h_, d));
        }
        return Tensor(t);
    }
    /* The values converted to `dtype` (differentiable between float32 and float64). */
    Tensor to(ag_dtype dtype) const {
        ag_tensor t = 0;
        check(ag_to_dtype(&t, h_, dtype));
        return Tensor(t);
    }
    /* Writes src's values into this tensor in place (ag_tensor_copy_; grad mode off for parameters). */
    void copy_(const Tensor &src) const { check(ag_tensor_copy_(h_, src.h_)); }

    /* Registers a gradient hook: fn(grad) returns an empty Tensor to keep the gradient or a new
     * one to replace it. Returns an id for remove_hook. An exception thrown by fn makes the
     * backward fail with AG_ERR_CALLBACK quoting the exception's what(). */
    int64_t register_hook(std::function<Tensor(const Tensor &grad)> fn) const;
    /* Registers a gradient-ready hook on this leaf (ag_tensor_register_post_accumulate_grad_hook):
     * fn(leaf) runs in each backward right after the leaf's gradient was accumulated into its
     * .grad, as soon as it is complete (what data parallelism overlaps its all-reduce with).
     * Returns an id for remove_hook. An exception thrown by fn makes the backward fail with
     * AG_ERR_CALLBACK quoting the exception's what(). */
    int64_t register_post_accumulate_grad_hook(std::function<void(const Tensor &leaf)> fn) const;
    /* Removes a hook registered with register_hook or register_post_accumulate_grad_hook (its
     * std::function is destroyed). */
    void remove_hook(int64_t id) const { check(ag_tensor_remove_hook(h_, id)); }

private:
    ag_tensor h_ = AG_NULL_TENSOR;
};

namespace detail {
/* Wraps one C call of the form f(&out, args...) returning a new tensor. */
template <class F, class... A> Tensor make(F f, A... args) {
    ag_tensor out = 0;
    check(f(&out, args...));
    return Tensor(out);
}
/* A handle borrowed for the duration of a callback: a Tensor that never frees it. Sound because
 * the library guarantees the handle lives for the whole call and the Tensor is released before
 * the callback returns. */
class Borrowed {
public:
    explicit Borrowed(ag_tensor h) noexcept : t_(h) {}
    ~Borrowed() { (void)t_.release(); }
    Borrowed(const Borrowed &) = delete;
    Borrowed &operator=(const Borrowed &) = delete;
    const Tensor &get() const noexcept { return t_; }

private:
    Tensor t_;
};
/* The hook trampoline. user_data is a heap std::function owned by the library from a successful
 * ag_tensor_register_hook until hook_destroy runs (once), so it is valid whenever the hook runs. */
inline int32_t hook_trampoline(ag_tensor *replacement, ag_tensor grad, void *user_data) noexcept {
    try {
        auto &fn = *static_cast<std::function<Tensor(const Tensor &)> *>(user_data);
        Borrowed g(grad);
        Tensor r = fn(g.get());
        if (r && r.handle() == grad) return 0; // an identity: keep the gradient, never hand over a borrowed handle
        *replacement = r.release();          // the library takes this new handle over
        return 0;
    } catch (const std::exception &e) {
        (void)ag_set_error(e.what());
    } catch (...) {
        (void)ag_set_error("a C++ hook threw an exception that is not a std::exception");
    }
    return 1;
}
inline void hook_destroy(void *user_data) noexcept {
    delete static_cast<std::function<Tensor(const Tensor &)> *>(user_data);
}
/* The gradient-ready hook trampoline; user_data is owned as hook_trampoline's is. */
inline int32_t ready_trampoline(ag_tensor leaf, void *user_data) noexcept {
    try {
        auto &fn = *static_cast<std::function<void(const Tensor &)> *>(user_data);
        Borrowed t(leaf);
        fn(t.get());
        return 0;
    } catch (const std::exception &e) {
        (void)ag_set_error(e.what());
    } catch (...) {
        (void)ag_set_error("a C++ hook threw an exception that is not a std::exception");
    }
    return 1;
}
inline void ready_destroy(void *user_data) noexcept { delete static_cast<std::function<void(const Tensor &)> *>(user_data); }
/* Moves fn to the heap and registers it with register_fn(&id, data); on failure the caller keeps
 * user_data (the library never calls destroy), so it is deleted here before throwing. */
template <class Fn, class Register> int64_t register_callback(Fn fn, Register register_fn) {
    auto *data = new Fn(std::move(fn));
    int64_t id = 0;
    ag_status st = register_fn(&id, static_cast<void *>(data));
    if (st != AG_OK) {
        std::string msg = ag_last_error(); // read before anything else may call the library
        delete data;
        throw Error(st, msg);
    }
    return id;
}
} // namespace detail

inline int64_t Tensor::register_hook(std::function<Tensor(const Tensor &grad)> fn) const {
    return detail::register_callback(std::move(fn), [this](int64_t *id, void *data) {
        return ag_tensor_register_hook(id, h_, detail::hook_trampoline, data, detail::hook_destroy);
    });
}

inline int64_t Tensor::register_post_accumulate_grad_hook(std::function<void(const Tensor &leaf)> fn) const {
    return detail::register_callback(std::move(fn), [this](int64_t *id, void *data) {
        return ag_tensor_register_post_accumulate_grad_hook(id, h_, detail::ready_trampoline, data,
                                                            detail::ready_destroy);
    });
}

// ---- arithmetic (broadcasting, NumPy rules) ----
/* a + b */
inline Tensor operator+(const Tensor &a, const Tensor &b) { return detail::make(ag_add, a.handle(), b.handle()); }
/* a - b */
inline Tensor operator-(const Tensor &a, const Tensor &b) { return detail::make(ag_sub, a.handle(), b.handle()); }
/* a * b */
inline Tensor operator*(const Tensor &a, const Tensor &b) { return detail::make(ag_mul, a.handle(), b.handle()); }
/* a / b */
inline Tensor operator/(const Tensor &a, const Tensor &b) { return detail::make(ag_div, a.handle(), b.handle()); }
/* -a */
inline Tensor operator-(const Tensor &a) { return detail::make(ag_neg, a.handle()); }
/* a + s, s + a */
inline Tensor operator+(const Tensor &a, double s) { return detail::make(ag_add_scalar, a.handle(), s); }
inline Tensor operator+(double s, const Tensor &a) { return detail::make(ag_add_scalar, a.handle(), s); }
/* a - s, s - a */
inline Tensor operator-(const Tensor &a, double s) { return detail::make(ag_sub_scalar, a.handle(), s); }
inline Tensor operator-(double s, const Tensor &a) { return detail::make(ag_rsub_scalar, a.handle(), s); }
/* a * s, s * a */
inline Tensor operator*(const Tensor &a, double s) { return detail::make(ag_mul_scalar, a.handle(), s); }
inline Tensor operator*(double s, const Tensor &a) { return detail::make(ag_mul_scalar, a.handle(), s); }
/* a / s, s / a */
inline Tensor operator/(const Tensor &a, double s) { return detail::make(ag_div_scalar, a.handle(), s); }
inline Tensor operator/(double s, const Tensor &a) { return detail::make(ag_rdiv_scalar, a.handle(), s); }

// ---- common ops (each one C call; see autograd.h for semantics and errors) ----
/* Matrix product (batched, broadcasting). */
inline Tensor matmul(const Tensor &a, const Tensor &b) { return detail::make(ag_matmul, a.handle(), b.handle()); }
/* a ** b, and a ** s. */
inline Tensor pow(const Tensor &a, const Tensor &b) { return detail::make(ag_pow, a.handle(), b.handle()); }
inline Tensor pow(const Tensor &a, double s) { return detail::make(ag_pow_scalar, a.handle(), s); }
/* Elementwise maximum / minimum. */
inline Tensor maximum(const Tensor &a, const Tensor &b) { return detail::make(ag_maximum, a.handle(), b.handle()); }
inline Tensor minimum(const Tensor &a, const Tensor &b) { return detail::make(ag_minimum, a.handle(), b.handle()); }
/* Unary elementwise functions. */
inline Tensor relu(const Tensor &a) { return detail::make(ag_relu, a.handle()); }
inline Tensor tanh(const Tensor &a) { return detail::make(ag_tanh, a.handle()); }
inline Tensor sigmoid(const Tensor &a) { return detail::make(ag_sigmoid, a.handle()); }
inline Tensor gelu(const Tensor &a) { return detail::make(ag_gelu, a.handle()); }
inline Tensor exp(const Tensor &a) { return detail::make(ag_exp, a.handle()); }
inline Tensor log(const Tensor &a) { return detail::make(ag_log, a.handle()); }
inline Tensor sqrt(const Tensor &a) { return detail::make(ag_sqrt, a.handle()); }
inline Tensor abs(const Tensor &a) { return detail::make(ag_abs, a.handle()); }
inline Tensor sin(const Tensor &a) { return detail::make(ag_sin, a.handle()); }
inline Tensor cos(const Tensor &a) { return detail::make(ag_cos, a.handle()); }
/* Clamps to [lo, hi]. */
inline Tensor clamp(const Tensor &a, double lo, double hi) { return detail::make(ag_clamp, a.handle(), lo, hi); }
/* Sum / mean over `axes` (empty: every axis). */
inline Tensor sum(const Tensor &a, const Shape &axes = {}, bool keepdims = false) {
    return detail::make(ag_sum, a.handle(), detail::shape_ptr(axes), (int64_t)axes.size(), keepdims);
}
inline Tensor mean(const Tensor &a, const Shape &axes = {}, bool keepdims = false) {
    return detail::make(ag_mean, a.handle(), detail::shape_ptr(axes), (int64_t)axes.size(), keepdims);
}
/* Max over `axes` (empty: every axis). */
inline Tensor max(const Tensor &a, const Shape &axes = {}, bool keepdims = false) {
    return detail::make(ag_max, a.handle(), detail::shape_ptr(axes), (int64_t)axes.size(), keepdims);
}
/* The same values with a new shape. */
inline Tensor reshape(const Tensor &a, const Shape &shape) {
    return detail::make(ag_reshape, a.handle(), detail::shape_ptr(shape), (int64_t)shape.size());
}
/* Swaps two axes (default: the last two). */
inline Tensor transpose(const Tensor &a, int64_t dim0 = -2, int64_t dim1 = -1) {
    return detail::make(ag_transpose, a.handle(), dim0, dim1);
}
/* softmax / log_softmax along `axis`. */
inline Tensor softmax(const Tensor &a, int64_t axis = -1) { return detail::make(ag_softmax, a.handle(), axis); }
inline Tensor log_softmax(const Tensor &a, int64_t axis = -1) { return detail::make(ag_log_softmax, a.handle(), axis); }
/* Mean cross-entropy of (N, C) logits against N class labels. */
inline Tensor cross_entropy(const Tensor &logits, const std::vector<int64_t> &labels) {
    return detail::make(ag_cross_entropy, logits.handle(), labels.empty() ? nullptr : labels.data(),
                        (int64_t)labels.size());
}
/* mean((pred - target)^2). */
inline Tensor mse_loss(const Tensor &pred, const Tensor &target) {
    return detail::make(ag_mse_loss, pred.handle(), target.handle());
}
/* x @ weight^T + bias (bias may be an empty Tensor). */
inline Tensor linear(const Tensor &x, const Tensor &weight, const Tensor &bias) {
    return detail::make(ag_linear, x.handle(), weight.handle(), bias.handle());
}

/* RAII: turns gradient recording off (or to `enabled`) on this thread; the destructor restores
 * the previous state. Not copyable or movable (the restore must happen exactly once). */
class NoGradGuard {
public:
    explicit NoGradGuard(bool enabled = false) { check(ag_set_grad_enabled(&previous_, enabled)); }
    ~NoGradGuard() { (void)ag_set_grad_enabled(nullptr, previous_); }
    NoGradGuard(const NoGradGuard &) = delete;
    NoGradGuard &operator=(const NoGradGuard &) = delete;

private:
    bool previous_ = true;
};

/* Whether this thread records graphs. */
inline bool is_grad_enabled() {
    bool b = false;
    check(ag_is_grad_enabled(&b));
    return b;
}

/* RAII owner of an ag_optimizer handle (move-only); the base of SGD, Adam and AdamW. The
 * optimizer holds its parameters itself, so the Tensors passed in may be destroyed. */
class Optimizer {
public:
    Optimizer(const Optimizer &) = delete;
    Optimizer &operator=(const Optimizer &) = delete;
    Optimizer(Optimizer &&o) noexcept : h_(std::exchange(o.h_, 0)) {}
    Optimizer &operator=(Optimizer &&o) noexcept {
        if (this != &o) {
            if (h_) (void)ag_optimizer_free(h_);
            h_ = std::exchange(o.h_, 0);
        }
        return *this;
    }
    /* Frees the optimizer; never throws. */
    ~Optimizer() {
        if (h_) (void)ag_optimizer_free(h_);
    }
    /* One update of every parameter that has a gradient. */
    void step() { check(ag_optimizer_step(h_)); }
    /* Clears every parameter's gradient. */
    void zero_grad() { check(ag_optimizer_zero_grad(h_)); }
    /* The learning rate. */
    double lr() const {
        double v = 0;
        check(ag_optimizer_lr(&v, h_));
        return v;
    }
    /* Changes the learning rate for later steps. */
    void set_lr(double lr) { check(ag_optimizer_set_lr(h_, lr)); }
    /* The raw handle (still owned). */
    ag_optimizer handle() const noexcept { return h_; }

protected:
    Optimizer() = default;
    /* The raw handles of `params`, for the C constructors. */
    static std::vector<ag_tensor> handles(const std::vector<const Tensor *> &params) {
        std::vector<ag_tensor> hs;
        hs.reserve(params.size());
        for (const Tensor *p : params) hs.push_back(p ? p->handle() : AG_NULL_TENSOR);
        return hs;
    }
    ag_optimizer h_ = 0;
};

/* Stochastic gradient descent with optional momentum, Nesterov and weight decay (torch.optim.SGD). */
class SGD : public Optimizer {
public:
    SGD(const std::vector<const Tensor *> &params, double lr, double momentum = 0.0, bool nesterov = false,
        double weight_decay = 0.0) {
        auto hs = handles(params);
        check(ag_optimizer_sgd(&h_, hs.data(), (int64_t)hs.size(), lr, momentum, nesterov, weight_decay));
    }
};

/* Adam (torch.optim.Adam). */
class Adam : public Optimizer {
public:
    Adam(const std::vector<const Tensor *> &params, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999,
         double eps = 1e-8, double weight_decay = 0.0) {
        auto hs = handles(params);
        check(ag_optimizer_adam(&h_, hs.data(), (int64_t)hs.size(), lr, beta1, beta2, eps, weight_decay));
    }
};

/* AdamW: decoupled weight decay (torch.optim.AdamW). */
class AdamW : public Optimizer {
public:
    AdamW(const std::vector<const Tensor *> &params, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999,
          double eps = 1e-8, double weight_decay = 1e-2) {
        auto hs = handles(params);
        check(ag_optimizer_adamw(&h_, hs.data(), (int64_t)hs.size(), lr, beta1, beta2, eps, weight_decay));
    }
};

/* A user-defined differentiable op of n inputs and one output (PyTorch's autograd.Function):
 * forward(inputs) computes the output with library ops (grad mode is off inside), backward(inputs,
 * grad_output) returns one gradient per input (an empty Tensor for none). Both lambdas are kept
 * by the op; exceptions from them become AG_ERR_CALLBACK, thrown as Error by apply / backward.
 * The inputs are saved for the backward. Move-only RAII over ag_custom_op. */
class CustomOp {
public:
    using Forward = std::function<Tensor(const std::vector<const Tensor *> &inputs)>;
    using Backward = std::function<std::vector<Tensor>(const std::vector<const Tensor *> &inputs,
                                                       const Tensor &grad_output)>;

    CustomOp(const std::string &name, int64_t ninputs, Forward forward, Backward backward) {
        auto *p = new Payload{std::move(forward), std::move(backward)};
        ag_status st = ag_custom_op_new(&h_, name.c_str(), ninputs, 1, &CustomOp::fwd, &CustomOp::bwd, nullptr, p,
                                        &CustomOp::destroy);
        if (st != AG_OK) {
            std::string msg = ag_last_error();
            delete p; // on failure the caller keeps the payload
            throw Error(st, msg);
        }
    }
    CustomOp(const CustomOp &) = delete;
    CustomOp &operator=(const CustomOp &) = delete;
    CustomOp(CustomOp &&o) noexcept : h_(std::exchange(o.h_, 0)) {}
    CustomOp &operator=(CustomOp &&o) noexcept {
        if (this != &o) {
            if (h_) (void)ag_custom_op_free(h_);
            h_ = std::exchange(o.h_, 0);
        }
        return *this;
    }
    /* Frees the handle; graphs using the op keep it (and the lambdas) until they go. Never throws. */
    ~CustomOp() {
        if (h_) (void)ag_custom_op_free(h_);
    }

    /* Applies the op to `inputs` and returns its output. */
    Tensor apply(const std::vector<const Tensor *> &inputs) const {
        std::vector<ag_tensor> hs;
        for (const Tensor *t : inputs) hs.push_back(t ? t->handle() : AG_NULL_TENSOR);
        ag_tensor out = 0;
        check(ag_custom_op_apply(&out, 1, h_, hs.data(), (int64_t)hs.size()));
        return Tensor(out);
    }

private:
    struct Payload {
        Forward forward;
        Backward backward;
    };
    /* Borrowed input handles as Tensors that never free them (sound: the library keeps them live
     * for the whole callback, and the Tensors are released before it returns). */
    struct BorrowedList {
        std::vector<Tensor> ts;
        std::vector<const Tensor *> ptrs;
        BorrowedList(const ag_tensor *hs, int64_t n) {
            ts.reserve((size_t)n);
            for (int64_t i = 0; i < n; i++) ts.emplace_back(hs[i]);
            for (auto &t : ts) ptrs.push_back(&t);
        }
        ~BorrowedList() {
            for (auto &t : ts) (void)t.release();
        }
    };
    /* payload is the Payload this op was made with; the library keeps it alive until destroy. */
    static int32_t fwd(ag_tensor *outputs, int64_t, const ag_tensor *inputs, int64_t ninputs, ag_custom_ctx ctx,
                       void *payload) noexcept {
        try {
            auto *p = static_cast<Payload *>(payload);
            BorrowedList in(inputs, ninputs);
            Tensor out = p->forward(in.ptrs);
            if (ninputs > 0) check(ag_custom_ctx_save(ctx, inputs, ninputs));
            outputs[0] = out.release(); // the library takes this new handle over
            return 0;
        } catch (const std::exception &e) {
            (void)ag_set_error(e.what());
        } catch (...) {
            (void)ag_set_error("a C++ custom-op forward threw a non-std exception");
        }
        return 1;
    }
    static int32_t bwd(ag_tensor *input_grads, int64_t ninputs, const ag_tensor *output_grads, int64_t,
                       ag_custom_ctx ctx, void *payload) noexcept {
        try {
            auto *p = static_cast<Payload *>(payload);
            std::vector<Tensor> saved;
            for (int64_t i = 0; i < ninputs; i++) {
                ag_tensor s = 0;
                check(ag_custom_ctx_saved(&s, ctx, i));
                saved.emplace_back(s); // owned: freed when `saved` goes
            }
            std::vector<const Tensor *> ptrs;
            for (auto &t : saved) ptrs.push_back(&t);
            detail::Borrowed g(output_grads[0]);
            std::vector<Tensor> grads = p->backward(ptrs, g.get());
            if ((int64_t)grads.size() != ninputs)
                throw std::runtime_error("custom op backward returned the wrong number of gradients");
            for (int64_t i = 0; i < ninputs; i++) input_grads[i] = grads[(size_t)i].release();
            return 0;
        } catch (const std::exception &e) {
            (void)ag_set_error(e.what());
        } catch (...) {
            (void)ag_set_error("a C++ custom-op backward threw a non-std exception");
        }
        return 1;
    }
    static void destroy(void *payload) noexcept { delete static_cast<Payload *>(payload); }

    ag_custom_op h_ = 0;
};

} // namespace autograd

#endif /* AUTOGRAD_HPP */
