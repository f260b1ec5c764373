// A fixed key-transparency log for the transparency fuzz targets and their seed corpus
// (transparency_corpus.cpp): deterministic keys and openings, a few labels with several
// versions each and one label never logged, and what each label's proofs must say. Built once,
// on first use; read-only afterwards, so the targets may share it.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "transparency/audit.h"
#include "transparency/log.h"

namespace sotto::fuzz {

struct TransparencyFixture {
  transparency::LogPublicKeys keys;
  std::vector<std::string> labels;  // the last one is never logged
  // Every version of each logged label, oldest first.
  std::map<std::string, std::vector<transparency::AccountValue>> versions;
  std::vector<transparency::SignedTreeHead> heads;  // heads[k] is the head of size k + 1
  // consistency[k]: from heads[k] to the last head.
  std::vector<transparency::ConsistencyProof> consistency;
  std::vector<transparency::SearchProof> search;    // one per label
  std::vector<transparency::MonitorProof> monitor;  // one per label
  std::vector<transparency::Index> indices;         // each label's VRF index
  transparency::Hash prefix_root{};                 // at the last head
  transparency::VrfProof vrf_proof{};               // for labels[0]
  std::vector<transparency::AuditRecord> records;   // records[k]: entry k
};

const TransparencyFixture& transparency_fixture();

// The label an input's first byte picks.
inline std::size_t pick_label(std::uint8_t b) {
  return b % transparency_fixture().labels.size();
}

}  // namespace sotto::fuzz
