// test_autograd_hpp.cpp - tests of include/autograd.hpp, the C++ wrapper over autograd.h.
// Every expected value is derived by hand in the comments, never taken from the library.
// Prints "test_autograd_hpp: N checks, M failures" and exits 1 on any failure.
#include "autograd.hpp"

#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

namespace ag = autograd;

static int checks = 0, failures = 0;

static void expect(bool ok, const std::string &what) {
    checks++;
    if (!ok) {
        failures++;
        std::printf("FAIL: %s\n", what.c_str());
    }
}

static void expect_values(const std::vector<double> &got, const std::vector<double> &want, const std::string &what,
                          double tol = 1e-12) {
    bool ok = got.size() == want.size();
    for (size_t i = 0; ok && i < got.size(); i++) ok = std::fabs(got[i] - want[i]) <= tol * (1.0 + std::fabs(want[i]));
    expect(ok, what);
    if (!ok)
        for (size_t i = 0; i < got.size(); i++) std::printf("  %s[%zu] = %.17g\n", what.c_str(), i, got[i]);
}

// The acceptance graph of bindings/c/example.c: f(x, W) = sum(relu(x @ W) * 2).
//   x @ W = [[4, -2.5], [-3, 3.125]]  -> relu mask [[1, 0], [0, 1]], f = 2 * (4 + 3.125) = 14.25
//   G = df/d(xW) = 2 * mask; dx = G @ W^T = [[1, 3, -1], [-2, 0.5, 4]]; dW = x^T @ G = [[2, 1], [4, -3], [-2, 4]]
static void test_acceptance_graph() {
    ag::Tensor x = ag::Tensor::from<double>({1.0, 2.0, -1.0, 0.5, -1.5, 2.0}, {2, 3});
    ag::Tensor w = ag::Tensor::from<double>({0.5, -1.0, 1.5, 0.25, -0.5, 2.0}, {3, 2});
    x.requires_grad(true);
    w.requires_grad(true);
    ag::Tensor f = ag::sum(ag::relu(ag::matmul(x, w)) * 2.0);
    expect(f.ndim() == 0 && f.numel() == 1 && f.dtype() == AG_FLOAT64, "f is a float64 scalar");
    expect_values({f.item()}, {14.25}, "f");
    f.backward();
    expect_values(x.grad().values(), {1, 3, -1, -2, 0.5, 4}, "df/dx");
    expect_values(w.grad().values(), {2, 1, 4, -3, -2, 4}, "df/dW");
    expect(w.grad().shape() == ag::Shape({3, 2}), "df/dW shape (3, 2)");
    // The same graph through the tensor-tensor operator and a rank-0 constant.
    x.zero_grad();
    expect(!x.grad(), "zero_grad leaves no gradient");
    ag::Tensor f2 = ag::sum(ag::relu(ag::matmul(x, w)) * ag::Tensor::scalar(2.0));
    f2.backward();
    expect_values(x.grad().values(), {1, 3, -1, -2, 0.5, 4}, "df/dx again (tensor * tensor)");
    // float32 copy-out of a float64 tensor.
    std::vector<float> xf = x.values<float>();
    expect(xf.size() == 6 && xf[4] == -1.5f, "values<float>");
}

// Scalar operators both sides: with a = [1, 2, 4]: a+1, 1+a, a-1, 1-a, a*3, 3*a, a/2, 8/a, -a.
static void test_operators() {
    ag::Tensor a = ag::Tensor::from<double>({1, 2, 4}, {3});
    ag::Tensor b = ag::Tensor::full({3}, 2.0);
    expect_values((a + 1.0).values(), {2, 3, 5}, "a + 1");
    expect_values((1.0 + a).values(), {2, 3, 5}, "1 + a");
    expect_values((a - 1.0).values(), {0, 1, 3}, "a - 1");
    expect_values((1.0 - a).values(), {0, -1, -3}, "1 - a");
    expect_values((a * 3.0).values(), {3, 6, 12}, "a * 3");
    expect_values((3.0 * a).values(), {3, 6, 12}, "3 * a");
    expect_values((a / 2.0).values(), {0.5, 1, 2}, "a / 2");
    expect_values((8.0 / a).values(), {8, 4, 2}, "8 / a");
    expect_values((-a).values(), {-1, -2, -4}, "-a");
    expect_values((a + b).values(), {3, 4, 6}, "a + b");
    expect_values((a - b).values(), {-1, 0, 2}, "a - b");
    expect_values((a * b).values(), {2, 4, 8}, "a * b");
    expect_values((a / b).values(), {0.5, 1, 2}, "a / b");
    // reshape / transpose / mean over an axis: [[1, 2], [3, 4]]^T = [[1, 3], [2, 4]]; column means [2, 3].
    ag::Tensor m = ag::reshape(ag::Tensor::from<double>({1, 2, 3, 4}, {4}), {2, 2});
    expect_values(ag::transpose(m).values(), {1, 3, 2, 4}, "transpose");
    expect_values(ag::mean(m, {0}).values(), {2, 3}, "mean over axis 0");
    expect_values(ag::sum(m, {1}, true).values(), {3, 7}, "sum over axis 1");
    // softmax of [0, 0] is [0.5, 0.5]; mse of [1, 3] against [0, 0] is (1 + 9) / 2 = 5.
    expect_values(ag::softmax(ag::Tensor::zeros({2})).values(), {0.5, 0.5}, "softmax");
    expect_values({ag::mse_loss(ag::Tensor::from<double>({1, 3}, {2}), ag::Tensor::zeros({2})).item()}, {5}, "mse");
    // cross_entropy of zero logits over 4 classes: log(4).
    expect_values({ag::cross_entropy(ag::Tensor::zeros({2, 4}), {1, 3}).item()}, {std::log(4.0)}, "cross_entropy");
    expect_values(ag::exp(ag::Tensor::zeros({1})).values(), {1}, "exp(0)");
    expect_values(ag::tanh(ag::Tensor::zeros({1})).values(), {0}, "tanh(0)");
    expect(ag::Tensor::ones({2, 3}).numel() == 6, "ones numel");
    ag::Tensor r1 = ag::Tensor::randn({4}, 7), r2 = ag::Tensor::randn({4}, 7);
    expect(r1.values() == r2.values(), "randn with the same seed repeats");
    std::vector<double> u = ag::Tensor::rand({100}, 3, -1.0, 1.0).values();
    bool in = true;
    for (double v : u) in = in && v >= -1.0 && v < 1.0;
    expect(in, "rand in [low, high)");
}

static void test_errors() {
    ag::Tensor a = ag::Tensor::zeros({2, 3}), b = ag::Tensor::zeros({2, 3});
    try {
        ag::Tensor c = ag::matmul(a, b);
        expect(false, "matmul (2,3)@(2,3) throws");
    } catch (const ag::Error &e) {
        expect(e.status() == AG_ERR_SHAPE, "matmul shape error is AG_ERR_SHAPE");
        expect(!e.message().empty() && e.message() == ag_last_error(), "Error carries ag_last_error()");
        expect(std::string(e.what()).find("AG_ERR_SHAPE") != std::string::npos, "what() names the status");
    }
    try {
        (void)ag::Tensor::from<double>({1, 2, 3}, {2, 2});
        expect(false, "3 values for shape (2, 2) throws");
    } catch (const ag::Error &e) {
        expect(e.status() == AG_ERR_SHAPE && e.message().find("3 values") != std::string::npos, "data size mismatch is AG_ERR_SHAPE");
    }
    ag::Tensor empty;
    try {
        (void)empty.numel();
        expect(false, "numel of an empty Tensor throws");
    } catch (const ag::Error &e) {
        expect(e.status() == AG_ERR_INVALID_HANDLE, "an empty Tensor is AG_ERR_INVALID_HANDLE");
    }
    // After errors, the library still works.
    expect_values((a + 1.0).values(), {1, 1, 1, 1, 1, 1}, "works after errors");
}

static void test_moves() {
    int64_t before = ag::live_handle_count();
    ag::Tensor a = ag::Tensor::ones({2});
    ag_tensor h = a.handle();
    ag::Tensor b = std::move(a);
    expect(a.handle() == 0 && !a && b.handle() == h, "move construction moves the handle");
    ag::Tensor c;
    c = std::move(b);
    expect(b.handle() == 0 && c.handle() == h, "move assignment moves the handle");
    expect(ag::live_handle_count() == before + 1, "one live handle after moves");
    c = ag::Tensor::zeros({3}); // frees the old handle
    expect(ag::live_handle_count() == before + 1, "move assignment frees the old handle");
    std::vector<ag::Tensor> v;
    for (int i = 0; i < 10; i++) v.push_back(ag::Tensor::full({1}, i));
    expect(v[9].item() == 9.0, "Tensors in a vector survive reallocation");
    // clone_handle: a second handle to the same tensor; the gradient is seen through both,
    // requires_grad set through one is seen through the other, each handle is freed once.
    {
        ag::Tensor x = ag::Tensor::from<double>({1, 2}, {2});
        x.requires_grad(true);
        int64_t n0 = ag::live_handle_count();
        ag::Tensor x2 = x.clone_handle();
        expect(x2.handle() != x.handle() && ag::live_handle_count() == n0 + 1, "clone_handle takes a new handle");
        expect(x2.requires_grad(), "the clone requires grad as the original");
        ag::sum(x * 4.0).backward(); // d/dx sum(4x) = 4
        expect_values(x2.grad().values(), {4, 4}, "the clone sees the original's gradient");
        x2.zero_grad();
        expect(!x.grad(), "zero_grad through the clone clears the original's gradient");
        ag::Tensor i = ag::Tensor::from<int64_t>({5, 6}, {2});
        ag::Tensor i2 = i.clone_handle();
        expect(i2.values<int64_t>() == std::vector<int64_t>({5, 6}), "clone of an int64 tensor");
        expect(!ag::Tensor().clone_handle(), "clone of an empty Tensor is empty");
    }
    ag::Tensor d = c.detach();
    expect(d.handle() != c.handle() && !d.requires_grad(), "detach gives a new handle");
}

static void test_no_grad() {
    ag::Tensor x = ag::Tensor::ones({2});
    x.requires_grad(true);
    {
        ag::NoGradGuard g;
        expect(!ag::is_grad_enabled(), "grad off inside NoGradGuard");
        expect(!(x * 2.0).requires_grad(), "no graph recorded inside NoGradGuard");
        {
            ag::NoGradGuard on(true);
            expect(ag::is_grad_enabled() && (x * 2.0).requires_grad(), "nested guard turns it on");
        }
        expect(!ag::is_grad_enabled(), "nested guard restores off");
    }
    expect(ag::is_grad_enabled() && (x * 2.0).requires_grad(), "grad on again after the guard");
}

// Gradient-ready hooks: w2's runs before the backward reaches h (nearer the input), and reads
// the accumulated gradient: d/dw2 sum(h * w2) = h = 2 x = [2, 4]; a throwing one fails backward.
static void test_grad_ready_hooks() {
    ag::Tensor x = ag::Tensor::from<double>({1, 2}, {2});
    ag::Tensor w1 = ag::Tensor::from<double>({2, 2}, {2}), w2 = ag::Tensor::from<double>({3, 3}, {2});
    w1.requires_grad(true);
    w2.requires_grad(true);
    std::string order;
    std::vector<double> seen;
    int64_t id = w2.register_post_accumulate_grad_hook([&](const ag::Tensor &leaf) {
        order += "w2 ";
        seen = leaf.grad().values();
    });
    w1.register_post_accumulate_grad_hook([&](const ag::Tensor &) { order += "w1 "; });
    ag::Tensor h = x * w1;
    h.register_hook([&](const ag::Tensor &) {
        order += "h ";
        return ag::Tensor();
    });
    ag::sum(h * w2).backward();
    expect(order == "w2 h w1 ", "w2 ready before the backward reaches h, w1 after");
    expect_values(seen, {2, 4}, "the hook read w2's accumulated gradient");
    w2.remove_hook(id);
    w1.register_post_accumulate_grad_hook([](const ag::Tensor &) { throw std::runtime_error("boom when ready"); });
    try {
        ag::sum(x * w1).backward();
        expect(false, "a throwing gradient-ready hook makes backward throw");
    } catch (const ag::Error &e) {
        expect(e.status() == AG_ERR_CALLBACK && e.message().find("boom when ready") != std::string::npos,
               "AG_ERR_CALLBACK quoting the exception");
    }
}

// d/dx sum(x * 5) = 5; a hook tripling it gives 15.
static void test_hooks() {
    ag::Tensor x = ag::Tensor::from<double>({1, 2}, {2});
    x.requires_grad(true);
    int calls = 0;
    int64_t id = x.register_hook([&calls](const ag::Tensor &g) {
        calls++;
        return g * 3.0;
    });
    ag::sum(x * 5.0).backward();
    expect(calls == 1, "hook called once");
    expect_values(x.grad().values(), {15, 15}, "hook replaced the gradient");
    x.remove_hook(id);
    x.zero_grad();
    // A hook keeping the gradient (empty Tensor).
    x.register_hook([&calls](const ag::Tensor &) {
        calls++;
        return ag::Tensor();
    });
    ag::sum(x * 5.0).backward();
    expect(calls == 2, "keeping hook called");
    expect_values(x.grad().values(), {5, 5}, "empty Tensor keeps the gradient");
    // A throwing hook: backward fails with AG_ERR_CALLBACK quoting the message; nothing crashes.
    ag::Tensor y = ag::Tensor::ones({2});
    y.requires_grad(true);
    y.register_hook([](const ag::Tensor &) -> ag::Tensor { throw std::runtime_error("boom from the hook"); });
    try {
        ag::sum(y * 2.0).backward();
        expect(false, "throwing hook makes backward throw");
    } catch (const ag::Error &e) {
        expect(e.status() == AG_ERR_CALLBACK, "throwing hook gives AG_ERR_CALLBACK");
        expect(e.message().find("boom from the hook") != std::string::npos, "message quotes the exception");
    }
    // A hook on a tensor that does not require grad: registration throws AG_ERR_STATE, nothing leaks.
    ag::Tensor z = ag::Tensor::ones({1});
    try {
        z.register_hook([](const ag::Tensor &) { return ag::Tensor(); });
        expect(false, "hook on a non-grad tensor throws");
    } catch (const ag::Error &e) {
        expect(e.status() == AG_ERR_STATE, "hook on a non-grad tensor is AG_ERR_STATE");
    }
}

// Minimise (w - 3)^2: gradient 2(w - 3).
//   SGD lr 0.1 from 0: w <- w - 0.2(w - 3), so w_n = 3 - 3 * 0.8^n.
//   Adam lr 0.1 from 0, first step: m_hat = g, v_hat = g^2, step = lr * g / (|g| + eps) ~ -0.1 -> w = 0.1.
//   AdamW lr 0.1, wd 0.1 from 1: w *= 1 - 0.01 -> 0.99, then the Adam step +0.1 -> 1.09.
static void test_optimizers() {
    ag::Tensor w = ag::Tensor::zeros({1});
    w.requires_grad(true);
    ag::SGD sgd({&w}, 0.1);
    for (int i = 0; i < 50; i++) {
        sgd.zero_grad();
        ag::Tensor loss = ag::sum(ag::pow(w - 3.0, 2.0));
        loss.backward();
        sgd.step();
    }
    expect_values(w.values(), {3 - 3 * std::pow(0.8, 50)}, "SGD 50 steps", 1e-10);
    expect(sgd.lr() == 0.1, "SGD lr");
    sgd.set_lr(0.05);
    expect(sgd.lr() == 0.05, "SGD set_lr");

    ag::Tensor a = ag::Tensor::zeros({1});
    a.requires_grad(true);
    ag::Adam adam({&a}, 0.1);
    ag::sum(ag::pow(a - 3.0, 2.0)).backward();
    adam.step();
    expect_values(a.values(), {0.1}, "Adam first step", 1e-8);

    ag::Tensor b = ag::Tensor::ones({1});
    b.requires_grad(true);
    ag::AdamW adamw({&b}, 0.1, 0.9, 0.999, 1e-8, 0.1);
    ag::sum(ag::pow(b - 3.0, 2.0)).backward();
    adamw.step();
    expect_values(b.values(), {1.09}, "AdamW first step", 1e-7);
    ag::Optimizer moved = std::move(adamw);
    expect(adamw.handle() == 0 && moved.handle() != 0, "optimizer move");
    try {
        ag::SGD bad({&b}, -1.0);
        expect(false, "negative lr throws");
    } catch (const ag::Error &e) {
        expect(e.status() == AG_ERR_ARGUMENT, "negative lr is AG_ERR_ARGUMENT");
    }
}

// square(x) = x * x with backward 2 x g: d/dx sum(square(x)) = 2x = [2, 4, 6].
static void test_custom_op() {
    ag::CustomOp square(
        "cpp_square", 1, [](const std::vector<const ag::Tensor *> &in) { return *in[0] * *in[0]; },
        [](const std::vector<const ag::Tensor *> &in, const ag::Tensor &g) {
            std::vector<ag::Tensor> grads;
            grads.push_back(*in[0] * g * 2.0);
            return grads;
        });
    ag::Tensor x = ag::Tensor::from<double>({1, 2, 3}, {3});
    x.requires_grad(true);
    ag::Tensor y = square.apply({&x});
    expect_values(y.values(), {1, 4, 9}, "custom op forward");
    ag::sum(y).backward();
    expect_values(x.grad().values(), {2, 4, 6}, "custom op backward");

    ag::CustomOp bad(
        "cpp_throws", 1,
        [](const std::vector<const ag::Tensor *> &) -> ag::Tensor { throw std::runtime_error("forward failed here"); },
        nullptr);
    try {
        (void)bad.apply({&x});
        expect(false, "throwing custom forward throws");
    } catch (const ag::Error &e) {
        expect(e.status() == AG_ERR_CALLBACK, "throwing custom forward is AG_ERR_CALLBACK");
        expect(e.message().find("forward failed here") != std::string::npos, "custom op message quoted");
    }
}

int main() {
    int64_t start = ag::live_handle_count();
    expect(start == 0, "no live handles at start");
    try {
        test_acceptance_graph();
        test_operators();
        test_errors();
        test_moves();
        test_no_grad();
        test_hooks();
    test_grad_ready_hooks();
        test_optimizers();
        test_custom_op();
    } catch (const std::exception &e) {
        expect(false, std::string("unexpected exception: ") + e.what());
    }
    int64_t live = ag::live_handle_count();
    expect(live == 0, "no live handles at the end (got " + std::to_string(live) + ")");
    std::printf("test_autograd_hpp: %d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
