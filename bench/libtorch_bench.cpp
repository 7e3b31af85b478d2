// libtorch_bench.cpp - the libtorch (PyTorch's C++ API) peer for B1, B2 and B3, compiled
// against the headers and libraries inside the installed torch wheel.
//
//   libtorch_bench BENCH THREADS REPS
//
// The work mirrors autograd_bench.c exactly (bench/README.md defines it): same shapes, the
// same deterministic data (bench_common.h), raw parameter tensors with functional ops and
// torch::optim::SGD.
#include <torch/torch.h>

#include <cstdio>
#include <string>
#include <vector>

#include "bench_common.h"

namespace F = torch::nn::functional;

static const char *PEER = "libtorch";

// A tensor of `shape` holding the deterministic fill, as `dtype`.
static torch::Tensor filled(std::vector<int64_t> shape, torch::Dtype dtype, double phase, double scale,
                            bool requires_grad = false) {
    int64_t n = 1;
    for (int64_t e : shape) n *= e;
    std::vector<double> buf(static_cast<size_t>(n));
    bench_fill_f64(buf.data(), n, phase, scale);
    torch::Tensor t = torch::from_blob(buf.data(), shape, torch::kFloat64).to(dtype).clone();
    t.set_requires_grad(requires_grad);
    return t;
}

static std::string json_double(double v) {
    char s[40];
    snprintf(s, sizeof s, "%.17g", v);
    return s;
}

// ---- B1: 10,000-op scalar chain ----

static void bench_b1(int threads, int reps) {
    const int cycles = 2500, ops = 4 * cycles;
    const double init[4] = {0.5, -0.3, 0.8, 1.2};
    std::vector<torch::Tensor> x;
    for (double v : init)
        x.push_back(torch::tensor(v, torch::dtype(torch::kFloat64)).set_requires_grad(true));
    std::vector<double> samples(reps);
    double value = 0, grads[4] = {0, 0, 0, 0};
    for (int r = -1; r < reps; r++) {  // r = -1: untimed warm-up
        double t0 = bench_now();
        {
            torch::Tensor v = x[0];
            for (int i = 0; i < cycles; i++) {
                v = v + x[i % 4];
                v = v * x[(i + 1) % 4];
                v = torch::tanh(v);
                v = torch::relu(v);
            }
            v.backward();
            if (r < 0) value = v.item<double>();
        }  // v goes out of scope here: the graph is released inside the timed region
        double t1 = bench_now();
        if (r >= 0) samples[r] = (t1 - t0) / ops * 1e6;
        for (int k = 0; k < 4; k++) {  // read, then clear, the gradients (untimed)
            grads[k] = x[k].grad().defined() ? x[k].grad().item<double>() : 0.0;
            x[k].mutable_grad() = torch::Tensor();
        }
    }
    std::string info = "{\"value\": " + json_double(value) + ", \"grads\": [";
    for (int k = 0; k < 4; k++) info += (k ? ", " : "") + json_double(grads[k]);
    info += "]}";
    bench_result("B1", "chain10k", PEER, threads, "us_per_op", samples.data(), reps, info.c_str());
}

// ---- B2 / B3: MLP training steps with raw parameters and torch::optim::SGD ----

struct Mlp {
    std::vector<torch::Tensor> params;  // w0, b0, w1, b1, ...
    // Adds a layer (weight (out, in), bias (out)), scale 1/sqrt(in), phases as in the README.
    void layer(int64_t in, int64_t out, torch::Dtype dt, double w_phase, double b_phase) {
        double scale = 1.0 / std::sqrt(static_cast<double>(in));
        params.push_back(filled({out, in}, dt, w_phase, scale, true));
        params.push_back(filled({out}, dt, b_phase, scale, true));
    }
    // Linear layers with ReLU between them (none after the last).
    torch::Tensor forward(torch::Tensor h) const {
        size_t layers = params.size() / 2;
        for (size_t l = 0; l < layers; l++) {
            h = F::linear(h, params[2 * l], params[2 * l + 1]);
            if (l + 1 < layers) h = torch::relu(h);
        }
        return h;
    }
};

template <typename LossFn>
static void train_bench(const char *bench, const char *kase, const char *metric, double unit, Mlp &m,
                        LossFn loss_fn, int warmup, int steps, int threads, int reps) {
    torch::optim::SGD opt(m.params, torch::optim::SGDOptions(0.01));
    auto step = [&](bool want_loss) {
        torch::Tensor loss = loss_fn();
        loss.backward();
        opt.step();
        opt.zero_grad();
        return want_loss ? loss.item<double>() : 0.0;
    };
    double first_loss = 0;
    for (int s = 0; s < warmup; s++) {
        double l = step(s == 0);
        if (s == 0) first_loss = l;
    }
    std::vector<double> samples(reps);
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now();
        for (int s = 0; s < steps; s++) step(false);
        samples[r] = (bench_now() - t0) / steps * unit;
    }
    std::string info = "{\"first_loss\": " + json_double(first_loss) +
                       ", \"steps_per_rep\": " + std::to_string(steps) + "}";
    bench_result(bench, kase, PEER, threads, metric, samples.data(), reps, info.c_str());
}

static void bench_b2(int threads, int reps) {
    torch::Tensor x = filled({16, 64}, torch::kFloat64, 0.1, 1.0);
    torch::Tensor y = filled({16, 1}, torch::kFloat64, 0.2, 1.0);
    Mlp m;
    m.layer(64, 32, torch::kFloat64, 0.3, 0.4);
    m.layer(32, 1, torch::kFloat64, 0.5, 0.6);
    train_bench("B2", "mlp64", "us_per_step", 1e6, m, [&] { return F::mse_loss(m.forward(x), y); },
                20, 200, threads, reps);
}

static void bench_b3(int threads, int reps) {
    torch::Tensor x = filled({256, 784}, torch::kFloat32, 0.1, 1.0);
    torch::Tensor labels = torch::arange(256, torch::kInt64).remainder(10);
    Mlp m;
    m.layer(784, 512, torch::kFloat32, 0.3, 0.4);
    m.layer(512, 512, torch::kFloat32, 0.5, 0.6);
    m.layer(512, 10, torch::kFloat32, 0.7, 0.8);
    train_bench("B3", "mlp784", "ms_per_step", 1e3, m,
                [&] { return F::cross_entropy(m.forward(x), labels); }, 2, 5, threads, reps);
}

int main(int argc, char **argv) {
    const char *bench;
    int threads, reps;
    bench_parse_args(argc, argv, &bench, &threads, &reps);
    at::set_num_threads(threads);
    bench_settle();
    std::string b = bench;
    if (b == "B1") bench_b1(threads, reps);
    else if (b == "B2") bench_b2(threads, reps);
    else if (b == "B3") bench_b3(threads, reps);
    else {
        std::fprintf(stderr, "libtorch_bench: benchmark %s is not defined for this peer\n", bench);
        return 2;
    }
    return 0;
}
