// Metric sinks of the study: a stage trains many runs into one metrics.jsonl, so every record is
// labelled with its run, and long runs print one line per epoch so they show they are alive.
#pragma once

#include <cstdio>
#include <memory>
#include <string>
#include <utility>

#include "distopt/core/error.hpp"
#include "distopt/train/metrics.hpp"

namespace distopt::study {

/// Puts a `run` label first on every record before passing it on, so one metrics.jsonl holds
/// every run of a stage and tools/plot.py can tell them apart.
class RunLabel final : public train::MetricSink {
 public:
  RunLabel(std::string run, std::shared_ptr<train::MetricSink> next) : run_(std::move(run)), next_(std::move(next)) {
    require(next_ != nullptr, "RunLabel '", run_, "': no sink to pass records to");
  }
  void write(const train::Record& record) override {
    train::Record labelled = record;
    labelled.labels.insert(labelled.labels.begin(), {"run", run_});
    next_->write(labelled);
  }
  void flush() override { next_->flush(); }

 private:
  std::string run_;
  std::shared_ptr<train::MetricSink> next_;
};

/// One progress line per epoch record on stdout (step and round records stay in the files).
class EpochLines final : public train::MetricSink {
 public:
  EpochLines(std::string run, std::size_t epochs) : run_(std::move(run)), epochs_(epochs) {}
  void write(const train::Record& r) override {
    if (r.event != "epoch") return;
    std::printf("  %-14s epoch %llu/%zu  loss %.4f  train acc %.4f  val acc %.4f  %.1f s\n", run_.c_str(),
                static_cast<unsigned long long>(r.epoch), epochs_, r.get("loss"), r.get("accuracy"), r.get("validation_accuracy"),
                r.get("seconds"));
    std::fflush(stdout);
  }

 private:
  std::string run_;
  std::size_t epochs_;
};

}  // namespace distopt::study
