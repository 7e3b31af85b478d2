/*
 * mlp.cpp - a tiny multilayer perceptron learning XOR with Autograd's C++ header.
 *
 * Build (from the repository root, once the library is built):
 *   g++ -std=c++17 -I include examples/mlp.cpp -L .build/release -lautograd \
 *       -Wl,-rpath,$PWD/.build/release -o mlp && ./mlp
 * Prints the loss as it trains and the four predictions; exits 1 if XOR was not learned.
 */
#include "autograd.hpp"

#include <cstdio>
#include <exception>

namespace ag = autograd;

int main() {
    try {
        // The four XOR inputs (4, 2) and their targets (4, 1).
        ag::Tensor x = ag::Tensor::from<double>({0, 0, 0, 1, 1, 0, 1, 1}, {4, 2});
        ag::Tensor y = ag::Tensor::from<double>({0, 1, 1, 0}, {4, 1});

        // Parameters: 2 -> 8 (tanh) -> 1, seeded so every run is the same.
        ag::Tensor w1 = ag::Tensor::randn({8, 2}, 1, 0.0, 1.0), b1 = ag::Tensor::zeros({8});
        ag::Tensor w2 = ag::Tensor::randn({1, 8}, 2, 0.0, 0.5), b2 = ag::Tensor::zeros({1});
        for (ag::Tensor *p : {&w1, &b1, &w2, &b2}) p->requires_grad(true);
        ag::Adam opt({&w1, &b1, &w2, &b2}, 0.05);

        double loss_value = 0;
        for (int step = 0; step <= 500; step++) {
            opt.zero_grad();
            ag::Tensor hidden = ag::tanh(ag::linear(x, w1, b1));
            ag::Tensor pred = ag::linear(hidden, w2, b2);
            ag::Tensor loss = ag::mse_loss(pred, y);
            loss.backward();
            opt.step();
            loss_value = loss.item();
            if (step % 100 == 0) std::printf("step %3d  loss %.6f\n", step, loss_value);
        }

        ag::NoGradGuard no_grad; // inference: record no graph
        ag::Tensor pred = ag::linear(ag::tanh(ag::linear(x, w1, b1)), w2, b2);
        std::vector<double> p = pred.values();
        for (int i = 0; i < 4; i++) std::printf("xor(%d, %d) = %.3f\n", i >> 1, i & 1, p[i]);
        return loss_value < 1e-3 ? 0 : 1;
    } catch (const ag::Error &e) {
        std::fprintf(stderr, "autograd error: %s\n", e.what());
        return 1;
    }
}
