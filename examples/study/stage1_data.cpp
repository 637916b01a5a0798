// Stage 1 of the study: the data. Prepares the study's data set (Fashion-MNIST by default,
// CIFAR-100 or the synthetic stand-in) once — split, statistics, cache — cuts the train split into IID shards for every worker count K of the
// scale, and writes the dataset card: sizes, per-channel statistics, class balance of each split,
// and the shards' sizes and class balance (an IID shard holds every class within one image of
// every other shard), and a grid of training images with their class names as the training
// runs see them (after augmentation).
//
//   stage1_data [--quick|--standard|--full] [--data DIR] [--results DIR] [--work DIR] [--seed N]
//
// Outputs under <results>/stage1_data/: table.md (the card), summary.csv (one row per split),
// shards.csv (one row per K and worker), samples.npz and samples.png (tools/plot_samples.py).
#include "stages.hpp"
#include "study_cli.hpp"

#include <distopt/core/error.hpp>
#include <distopt/core/archive.hpp>
#include <distopt/data/loader.hpp>
#include <distopt/data/shards.hpp>
#include "common/plots.hpp"
#include "common/study.hpp"
#include <distopt/train/metrics.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

namespace data = distopt::data;
namespace study = distopt::study;
using distopt::message;

/// Images per class of one split.
struct ClassBalance {
  std::size_t images = 0;
  std::size_t min = 0;
  std::size_t max = 0;
  std::size_t classes_present = 0;
};

const study::PlotScripts plots{DISTOPT_TOOLS_DIR, DISTOPT_PYTHON};

ClassBalance class_balance(const data::LabelledImages& set, std::size_t classes) {
  std::vector<std::size_t> counts(classes, 0);
  for (const std::uint8_t label : set.fine) {
    distopt::require(label < counts.size(), "fine label ", int{label}, " is out of range");
    ++counts[label];
  }
  ClassBalance b{.images = set.size()};
  b.min = *std::min_element(counts.begin(), counts.end());
  b.max = *std::max_element(counts.begin(), counts.end());
  b.classes_present = static_cast<std::size_t>(std::count_if(counts.begin(), counts.end(), [](std::size_t c) { return c > 0; }));
  return b;
}

std::string fixed(double v, int decimals) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(decimals) << v;
  return out.str();
}

/// What the IID shards for one K look like.
struct ShardCard {
  std::size_t workers = 0;
  std::size_t min_images = 0;
  std::size_t max_images = 0;
  std::size_t class_spread = 0;  ///< max over classes of (max - min count of that class across workers)
  std::size_t min_classes = 0;   ///< fewest classes any worker holds
  std::vector<std::vector<std::string>> csv_rows{};
};

ShardCard shard_card(const data::LabelledImages& train, std::size_t classes, std::size_t workers, std::uint64_t seed) {
  const data::Shards shards = data::iid_shards(train.fine, workers, seed);
  const auto counts = data::shard_class_counts(shards, train.fine, classes);
  ShardCard card{.workers = workers, .min_images = shards.front().size(), .max_images = shards.front().size()};
  card.min_classes = classes;
  std::size_t total = 0;
  for (std::size_t k = 0; k < shards.size(); ++k) {
    total += shards[k].size();
    card.min_images = std::min(card.min_images, shards[k].size());
    card.max_images = std::max(card.max_images, shards[k].size());
    const auto present = static_cast<std::size_t>(std::count_if(counts[k].begin(), counts[k].end(), [](std::size_t c) { return c > 0; }));
    card.min_classes = std::min(card.min_classes, present);
    card.csv_rows.push_back({message(workers), message(k), message(shards[k].size()), message(present)});
  }
  distopt::require<std::runtime_error>(total == train.size(), "iid_shards(K = ", workers, ") holds ", total, " samples, the train split ",
                                       train.size());
  for (std::size_t c = 0; c < classes; ++c) {
    std::size_t lo = counts[0][c], hi = counts[0][c];
    for (std::size_t k = 1; k < counts.size(); ++k) {
      lo = std::min(lo, counts[k][c]);
      hi = std::max(hi, counts[k][c]);
    }
    card.class_spread = std::max(card.class_spread, hi - lo);
  }
  return card;
}

/// The first `count` training images of one epoch as the training runs see them (shuffled and
/// augmented with the runs' augmentation, before normalisation), with their labels and the class
/// names, in samples.npz; tools/plot_samples.py draws the grid.
void write_samples(const data::PreparedData& prepared, std::uint64_t seed, const std::filesystem::path& file, std::size_t count) {
  data::Loader loader(prepared.train, data::Normalizer(prepared.info.shape.channels),
                      {.batch_size = std::min(count, prepared.train.size()), .shuffle = true, .seed = seed,
                       .augmentation = study::augmentation_for(prepared.info)});
  loader.start_epoch(0);
  const data::Batch* batch = loader.next();
  distopt::require<std::runtime_error>(batch != nullptr, "stage 1: the train split has no images");
  const auto images = batch->images();
  distopt::Archive archive;
  archive.put<float>("images", std::span<const float>(images.data, static_cast<std::size_t>(images.count * images.image_size())),
                     {images.count, images.channels, images.height, images.width});
  std::vector<std::int32_t> labels(batch->labels().begin(), batch->labels().end());
  archive.put<std::int32_t>("labels", std::span<const std::int32_t>(labels), {static_cast<std::ptrdiff_t>(labels.size())});
  std::string names;
  for (const auto& n : prepared.info.class_names) names += n + '\n';
  std::vector<std::uint8_t> name_bytes(names.begin(), names.end());
  archive.put<std::uint8_t>("class_names", std::span<const std::uint8_t>(name_bytes), {static_cast<std::ptrdiff_t>(name_bytes.size())});
  archive.save(file);
}

void run(const study::Config& config) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const std::filesystem::path results = config.results / "stage1_data";

  bool cached = false;
  const data::PreparedData prepared = study::prepare_data(config, &cached);
  const double prepare_seconds = std::chrono::duration<double>(clock::now() - start).count();
  std::cout << "prepared data " << (cached ? "loaded from the cache" : "written to the cache") << " in " << fixed(prepare_seconds, 1)
            << " s\n";

  // Splits: sizes and class balance.
  const std::vector<std::pair<std::string, const data::LabelledImages*>> splits = {
      {"train", &prepared.train}, {"validation", &prepared.validation}, {"test", &prepared.test}};
  std::vector<std::vector<std::string>> split_rows, split_csv;
  for (const auto& [name, set] : splits) {
    const ClassBalance b = class_balance(*set, prepared.info.classes);
    split_rows.push_back({name, message(b.images), message(b.classes_present), message(b.min), message(b.max)});
    split_csv.push_back({name, message(b.images), message(b.classes_present), message(b.min), message(b.max)});
  }
  std::vector<std::vector<std::string>> stats_rows;
  const std::vector<std::string> channel_names =
      prepared.stats.channels() == 3 ? std::vector<std::string>{"red", "green", "blue"} : std::vector<std::string>{"grey"};
  for (std::size_t c = 0; c < prepared.stats.channels(); ++c)
    stats_rows.push_back({c < channel_names.size() ? channel_names[c] : message(c), fixed(prepared.stats.mean[c], 6),
                          fixed(prepared.stats.std[c], 6)});

  // IID shards of the train split for every K.
  std::vector<ShardCard> cards;
  std::vector<std::vector<std::string>> shard_rows, shard_csv;
  for (const std::size_t k : config.scale.workers) {
    ShardCard card = shard_card(prepared.train, prepared.info.classes, k, config.seed);
    shard_rows.push_back({message(k), message(card.min_images), message(card.max_images), message(card.min_classes),
                          message(card.class_spread)});
    shard_csv.insert(shard_csv.end(), card.csv_rows.begin(), card.csv_rows.end());
    cards.push_back(std::move(card));
  }

  distopt::io::write_csv(results / "summary.csv", {"split", "images", "classes_present", "min_per_class", "max_per_class"}, split_csv);
  distopt::io::write_csv(results / "shards.csv", {"K", "worker", "images", "classes_present"}, shard_csv);

  // Observations, from the numbers above.
  std::size_t worst_spread = 0, worst_size_gap = 0;
  for (const ShardCard& c : cards) {
    worst_spread = std::max(worst_spread, c.class_spread);
    worst_size_gap = std::max(worst_size_gap, c.max_images - c.min_images);
  }
  const ClassBalance train_balance = class_balance(prepared.train, prepared.info.classes);
  std::ostringstream notes;
  notes << "The train split holds " << train_balance.min << " to " << train_balance.max << " images per class ("
        << (train_balance.max - train_balance.min <= 1 ? "balanced" : "not exactly balanced") << "); ";
  if (cards.empty()) {
    notes << "no worker counts were asked for.";
  } else {
    notes << "across K in {";
    for (std::size_t i = 0; i < cards.size(); ++i) notes << (i ? ", " : "") << cards[i].workers;
    notes << "} the IID shards differ by at most " << worst_size_gap << " image(s) in size and any class's count differs by at most "
          << worst_spread << " between workers (" << (worst_spread <= 1 ? "IID: within 1" : "NOT IID: above 1") << ").";
  }

  write_samples(prepared, config.seed, results / "samples.npz", 32);
  const std::string augmentation = study::augmentation_label(study::augmentation_for(prepared.info));
  plots.draw("plot_samples.py",
             {(results / "samples.npz").string(), "-o", (results / "samples.png").string(), "--title",
              message(prepared.info.name, ": training images after augmentation (", augmentation, ")")},
             results / "samples.png");

  std::ostringstream md;
  md << "## Stage 1: Data\n\n"
     << "Data: " << config.data_label() << ", mode " << config.mode() << ". " << prepared.info.classes << " classes, "
     << prepared.info.shape.channels << " x " << prepared.info.shape.height << " x " << prepared.info.shape.width
     << " images; the training runs' augmentation: " << augmentation << " (samples.png).\n\n"
     << "### Splits (validation ratio " << distopt::io::format_number(config.scale.validation_ratio) << ", seed " << config.seed
     << ")\n\n"
     << study::markdown_table({"split", "images", "classes present", "min images/class", "max images/class"}, split_rows)
     << "\n### Per-channel statistics of the train split (pixel / 255)\n\n"
     << study::markdown_table({"channel", "mean", "std"}, stats_rows)
     << "\n### IID shards of the train split (data::iid_shards, seed " << config.seed << ")\n\n"
     << study::markdown_table({"K", "min images/worker", "max images/worker", "min classes/worker", "max class spread across workers"},
                              shard_rows)
     << '\n'
     << notes.str() << '\n';
  distopt::io::write_text(results / "table.md", md.str());
  std::cout << md.str();

  // The check the card exists for: a later stage's "IID" must really be IID.
  for (const ShardCard& c : cards)
    distopt::require<std::runtime_error>(c.class_spread <= 1, "iid_shards(K = ", c.workers, "): a class's count differs by ",
                                         c.class_spread, " between workers (an IID split allows 1)");
  std::cout << "stage1_data: wall time " << fixed(std::chrono::duration<double>(clock::now() - start).count(), 1) << " s\n";
}

}  // namespace

int study_stages::stage1_data(int argc, char** argv) {
  study_cli::Flags flags;
  CLI::App app{"Study stage 1: prepare the data (split, statistics, cache), cut IID shards for each worker count, "
               "and write the dataset card (<results>/stage1_data/table.md, summary.csv, shards.csv)"};
  flags.add(app);
  CLI11_PARSE(app, argc, argv);
  flags.finish();
  // The data card has no runs to spread: rank 0 writes it, the other ranks of a job wait.
  return study_cli::run_stage(flags, "stage1_data", [&](study::Work& work) {
    if (work.root()) run(flags.config);
  });
}
