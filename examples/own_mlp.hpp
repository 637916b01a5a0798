// A model written as a user of the library writes one: a perceptron with one tanh hidden layer
// on Eigen, with its own forward and backward passes, that LocalTrainer and train::run accept
// because it meets nn::Model. examples/own_model.cpp trains it, docs/own_model.md walks through
// it, and the package test builds it against the installed library.
#pragma once

#include <cmath>
#include <cstdint>

#include <Eigen/Core>

#include <distopt/core/parameter_set.hpp>
#include <distopt/core/rng.hpp>
#include <distopt/core/samples.hpp>
#include <distopt/nn/loss.hpp>

/// y = W2 tanh(W1 x + b1) + b2 on samples of `inputs` floats; cross-entropy on class ids or mean
/// squared error on real values (nn::Loss). Weights as torch.nn.Linear initialises them.
class OwnMlp {
 public:
  using scalar_type = float;
  using params_type = distopt::ParameterSet;
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  OwnMlp(std::ptrdiff_t inputs, std::ptrdiff_t hidden, std::ptrdiff_t outputs, distopt::nn::Loss loss, std::uint64_t seed = 0)
      : inputs_(inputs), outputs_(outputs), loss_(loss) {
    const std::ptrdiff_t shapes[4][2] = {{hidden, inputs}, {hidden, 1}, {outputs, hidden}, {outputs, 1}};
    for (std::size_t b = 0; b < 4; ++b) {
      const bool bias = b % 2 == 1;
      params_.add(std::string(b < 2 ? "fc1." : "fc2.") + (bias ? "bias" : "weight"),
                  bias ? std::vector<std::ptrdiff_t>{shapes[b][0]} : std::vector<std::ptrdiff_t>{shapes[b][0], shapes[b][1]});
      const double bound = 1.0 / std::sqrt(static_cast<double>(b < 2 ? inputs : hidden));
      distopt::Rng rng = distopt::Rng(seed).split(b);
      for (float& w : params_.value(b)) w = static_cast<float>(rng.uniform_double() * 2 * bound - bound);
    }
  }

  params_type& parameters() { return params_; }
  const params_type& parameters() const { return params_; }
  std::ptrdiff_t input_size() const { return inputs_; }
  std::ptrdiff_t output_size() const { return outputs_; }

  void forward(const distopt::Samples<float>& x, float* out) {
    run(x);
    Eigen::Map<Matrix>(out, x.count, outputs_) = z_;
  }
  distopt::nn::LossStats evaluate(const distopt::Samples<float>& x, const distopt::Targets& y) { return pass(x, y, 0.0, false); }
  distopt::nn::LossStats loss_and_gradient(const distopt::Samples<float>& x, const distopt::Targets& y, double weight) {
    return pass(x, y, weight, true);
  }

 private:
  void run(const distopt::Samples<float>& x) {
    const Eigen::Map<const Matrix> in(x.data, x.count, inputs_);
    h_ = ((in * params_.value_matrix(0).transpose()).rowwise() + params_.value(1).transpose()).array().tanh();
    z_ = (h_ * params_.value_matrix(2).transpose()).rowwise() + params_.value(3).transpose();
  }

  distopt::nn::LossStats pass(const distopt::Samples<float>& x, const distopt::Targets& y, double weight, bool gradient) {
    loss_.check(y, x.count, outputs_, "OwnMlp");
    run(x);
    Matrix dz(x.count, outputs_);
    distopt::nn::LossStats stats{.count = x.count, .classified = loss_.classifies()};
    for (std::ptrdiff_t i = 0; i < x.count; ++i) {
      stats.loss += loss_.row(z_.row(i).data(), outputs_, y, i, dz.row(i).data(), weight / static_cast<double>(x.count));
      if (loss_.classifies()) stats.correct1 += distopt::nn::in_top_k(z_.row(i).data(), outputs_, y.classes[static_cast<std::size_t>(i)], 1);
    }
    stats.loss /= static_cast<double>(x.count);
    if (gradient) {
      const Eigen::Map<const Matrix> in(x.data, x.count, inputs_);
      const Matrix dh = ((dz * params_.value_matrix(2)).array() * (1.0f - h_.array().square())).matrix();
      params_.grad_matrix(2) += dz.transpose() * h_;
      params_.grad(3) += dz.colwise().sum().transpose();
      params_.grad_matrix(0) += dh.transpose() * in;
      params_.grad(1) += dh.colwise().sum().transpose();
    }
    return stats;
  }

  std::ptrdiff_t inputs_, outputs_;
  distopt::nn::Loss loss_;
  params_type params_;
  Matrix h_, z_;
};
